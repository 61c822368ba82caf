//! skiff-proxy's data planes in a 3-node netns cluster, checked with real traffic.
//!
//! The same checks run once per data plane (`--proxy-mode iptables` and `ebpf`), so the two
//! are held to one behaviour; where they differ by design (see [`Mode`]) the check says how.
//! skiff-control runs in the underlay namespace; Services and EndpointSlices are written straight
//! to its apiserver (Services without selectors, slices managed by the test), so what is under
//! test is the proxy alone: one standalone `skiff-proxy` per node namespace (the node agents run
//! Pods but host no proxy), each with its own rules. Every node has a Pod running
//! skiff-test-server, placed by its agent, and every assertion is about *who answered* and
//! *which client address they saw*, never a bare connect. Needs root; all iptables calls happen inside node namespaces.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use skiff_tests::{Client, Cluster, ClusterOptions, Node, Process, UdpLoop, binaries, wait};

const WAIT: Duration = Duration::from_secs(20);
const NODES: usize = 3;

/// The data plane under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Iptables,
    Ebpf,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Ebpf => "ebpf",
        }
    }

    /// Is a Pod that its Service sends back to itself masqueraded? iptables must (its own
    /// reply would skip the reverse NAT); the socket load balancer connects the Pod straight to
    /// itself, so it keeps its address like every other client.
    fn hairpin_masquerades(self) -> bool {
        self == Mode::Iptables
    }
}

/// A test server Pod placed on a node by the node agent.
#[derive(Debug)]
struct TestPod {
    name: String,
    netns: skiff_tests::Netns,
    ip: Ipv4Addr,
    /// A client inside this Pod (its namespace and cgroup).
    client: Client,
}

/// A cluster with a server Pod and a standalone skiff-proxy per node (the agents host none, so
/// the proxy can be restarted and cleaned up alone). Fields drop in order: proxies stop before
/// the cluster's namespaces go.
struct World {
    mode: Mode,
    proxies: Vec<Option<Process>>,
    pods: Vec<TestPod>,
    manifests: PathBuf,
    cluster: Cluster,
}

impl World {
    fn build(label: &str, mode: Mode) -> Result<Self> {
        let cluster = Cluster::start(&ClusterOptions {
            agent_args: vec!["--proxy-mode".into(), "none".into()],
            ..ClusterOptions::nodes(NODES, label)
        })?;
        let run = cluster.topology().run();
        let manifests = run.scratch_dir("manifests")?;
        let mut world = World {
            mode,
            proxies: Vec::new(),
            pods: Vec::new(),
            manifests,
            cluster,
        };
        // One test server Pod per node (named podK: that is the name it answers with).
        for k in 1..=NODES {
            world.cluster.apply(&serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("pod{k}"), "namespace": "default"},
                "spec": {"nodeName": format!("node{k}"),
                         "containers": [{"name": "server", "image": "skiff/test-server"}]}
            }))?;
        }
        for k in 1..=NODES {
            let name = format!("pod{k}");
            let pod = wait::retry(WAIT * 3, || {
                let pod = world.cluster.get_json(&["pod", &name])?;
                ensure!(
                    pod["status"]["phase"] == "Running",
                    "{name}: {}",
                    pod["status"]
                );
                Ok(pod)
            })?;
            let ip = pod["status"]["podIP"]
                .as_str()
                .context("no podIP")?
                .parse()?;
            let uid = pod["metadata"]["uid"].as_str().context("no uid")?;
            let netns = world.cluster.pod_netns(&format!("node{k}"), uid);
            let client = Client {
                netns: netns.clone(),
                cgroup: Some(world.cluster.node_cgroup(k)?.join(format!("pod-{uid}"))),
                view: None,
            };
            world.pods.push(TestPod {
                name,
                netns,
                ip,
                client,
            });
        }
        for k in 1..=NODES {
            world.start_proxy(k)?;
        }
        for pod in &world.pods {
            wait::wait_for_http(
                Some(&world.pods[0].netns),
                SocketAddr::from((pod.ip, 8080)),
                "/healthz",
                WAIT,
            )
            .with_context(|| format!("{} is not reachable from pod1", pod.name))?;
        }
        Ok(world)
    }

    fn node(&self, k: usize) -> &Node {
        self.cluster.topology().node(k)
    }

    fn pod(&self, k: usize) -> &TestPod {
        &self.pods[k - 1]
    }

    fn start_proxy(&mut self, k: usize) -> Result<()> {
        let node = self.node(k).clone();
        let bin = binaries::binary("skiff-proxy")?;
        let kubeconfig = self.cluster.admin_kubeconfig();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let argv = [
            path(bin),
            "--proxy-mode".into(),
            self.mode.flag().into(),
            "--bpf-cgroup".into(),
            path(self.cluster.node_cgroup(k)?),
            "--bpf-pin-dir".into(),
            path(self.cluster.node_pin_dir(k)?),
            "--kubeconfig".into(),
            path(kubeconfig),
            "--hostname-override".into(),
            node.name.clone(),
            "--cluster-cidr".into(),
            "10.244.0.0/16".into(),
            "--min-sync-period".into(),
            "100ms".into(),
            "--metrics-bind-address".into(),
            "127.0.0.1:10249".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // In the host's mount namespace (as the agents run): its pins go on the real bpffs.
        let mut command = node.netns.command_keeping_mounts(&argv);
        command.env("RUST_LOG", "info");
        let proxy = Process::spawn_command(
            self.cluster.topology().run(),
            &format!("skiff-proxy-{}", node.name),
            command,
        )?;
        if self.proxies.len() < k {
            self.proxies.resize_with(k, || None);
        }
        self.proxies[k - 1] = Some(proxy);
        Ok(())
    }

    fn apply(&self, name: &str, yaml: &str) -> Result<()> {
        let path = self.manifests.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml)?;
        self.cluster
            .kubectl(&["apply", "-f", &path.to_string_lossy()])?;
        Ok(())
    }

    /// The Service's cluster IP and its first port's node port (if any).
    fn service(&self, name: &str) -> Result<(Ipv4Addr, Option<u16>, Value)> {
        let svc: Value = serde_json::from_str(
            &self
                .cluster
                .kubectl(&["get", "service", name, "-o", "json"])?,
        )?;
        let ip = svc["spec"]["clusterIP"]
            .as_str()
            .context("no clusterIP")?
            .parse()?;
        let node_port = svc["spec"]["ports"][0]["nodePort"]
            .as_u64()
            .map(|p| p as u16);
        Ok((ip, node_port, svc))
    }
}

fn service_yaml(name: &str, extra: &str, port: u16, protocol: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n{extra}  ports: [{{name: p, port: {port}, protocol: {protocol}}}]\n"
    )
}

/// An EndpointSlice for `service` listing `(pod ip, node)` as ready endpoints on `target`.
fn slice_yaml(
    service: &str,
    target: u16,
    protocol: &str,
    endpoints: &[(Ipv4Addr, &str)],
) -> String {
    let mut yaml = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-1\n  namespace: default\n  \
         labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: skiff-tests}}\n\
         addressType: IPv4\nports: [{{name: p, port: {target}, protocol: {protocol}}}]\nendpoints:\n"
    );
    if endpoints.is_empty() {
        yaml.push_str("  []\n");
    }
    for (ip, node) in endpoints {
        yaml.push_str(&format!(
            "  - {{addresses: [\"{ip}\"], nodeName: {node}, conditions: {{ready: true}}}}\n"
        ));
    }
    yaml
}

/// Sends up to `tries` requests from `from` to `addr`; returns every server seen once all of
/// `want` were seen (or all tries are used).
fn servers_seen(
    from: &Client,
    addr: SocketAddr,
    want: usize,
    tries: usize,
) -> Result<BTreeSet<String>> {
    // The Service may take a sync to appear: wait for the first answer, bounded.
    wait::retry(WAIT, || from.who(addr))?;
    let mut seen = BTreeSet::new();
    for _ in 0..tries {
        seen.insert(from.who(addr)?.0);
        if seen.len() >= want {
            break;
        }
    }
    Ok(seen)
}

fn pods_set(n: usize) -> BTreeSet<String> {
    (1..=n).map(|k| format!("pod{k}")).collect()
}

fn all_endpoints(world: &World) -> Vec<(Ipv4Addr, String)> {
    (1..=NODES)
        .map(|k| (world.pod(k).ip, world.node(k).name.clone()))
        .collect()
}

fn refs(endpoints: &[(Ipv4Addr, String)]) -> Vec<(Ipv4Addr, &str)> {
    endpoints.iter().map(|(ip, n)| (*ip, n.as_str())).collect()
}

#[test]
fn iptables_cluster_ip_node_port_reject_affinity_and_local_policy() -> Result<()> {
    cluster_ip_node_port_reject_affinity_and_local_policy(Mode::Iptables)
}

#[test]
fn ebpf_cluster_ip_node_port_reject_affinity_and_local_policy() -> Result<()> {
    cluster_ip_node_port_reject_affinity_and_local_policy(Mode::Ebpf)
}

fn cluster_ip_node_port_reject_affinity_and_local_policy(mode: Mode) -> Result<()> {
    let world = World::build(&format!("proxy-{}", mode.flag()), mode)?;
    let everyone = all_endpoints(&world);

    // ClusterIP + NodePort with every Pod behind it.
    world.apply("web", &service_yaml("web", "  type: NodePort\n", 80, "TCP"))?;
    world.apply(
        "web-slice",
        &slice_yaml("web", 8080, "TCP", &refs(&everyone)),
    )?;
    let (web_ip, web_np, _) = world.service("web")?;
    let web_np = web_np.context("web has no nodePort")?;
    for k in 1..=NODES {
        let seen = servers_seen(
            &world.pod(k).client,
            SocketAddr::from((web_ip, 80)),
            NODES,
            60,
        )?;
        assert_eq!(
            seen,
            pods_set(NODES),
            "ClusterIP from p{k} reaches every backend"
        );
    }

    // A Pod keeps its own address through the ClusterIP. When it lands on itself (hairpin)
    // iptables masquerades it, or its own reply would not come back through the NAT.
    for k in 1..=NODES {
        let me = world.pod(k);
        let (own, ip) = (me.name.clone(), me.ip.to_string());
        let addr = SocketAddr::from((web_ip, 80));
        let answers = (0..30)
            .map(|_| me.client.who(addr))
            .collect::<Result<Vec<_>>>()?;
        for (name, client) in &answers {
            let client_ip = client
                .rsplit_once(':')
                .map_or(client.as_str(), |(ip, _)| ip);
            if *name == own && mode.hairpin_masquerades() {
                assert_ne!(client_ip, ip, "pod{k} served by itself must be masqueraded");
            } else {
                assert_eq!(
                    client_ip, ip,
                    "pod{k}'s address is kept when {name} serves it"
                );
            }
        }
        ensure!(
            answers.iter().any(|(name, _)| *name == own),
            "pod{k} never landed on itself in 30 tries"
        );
    }

    // NodePort on every node's address, from outside the cluster (the underlay namespace).
    let outside = Client {
        netns: world.cluster.topology().control_plane_netns().clone(),
        cgroup: None,
        view: None,
    };
    for k in 1..=NODES {
        let addr = SocketAddr::from((world.node(k).ip, web_np));
        let seen = servers_seen(&outside, addr, NODES, 60)?;
        assert_eq!(
            seen,
            pods_set(NODES),
            "NodePort on node{k} reaches every backend"
        );
    }

    // No endpoints: refused at once, not a timeout — from a Pod, and from outside through a
    // node port.
    world.apply(
        "empty",
        &service_yaml("empty", "  type: NodePort\n", 80, "TCP"),
    )?;
    let (empty_ip, empty_np, _) = world.service("empty")?;
    let empty_np = empty_np.context("empty has no nodePort")?;
    for (client, target) in [
        (&world.pod(1).client, SocketAddr::from((empty_ip, 80))),
        (&outside, SocketAddr::from((world.node(2).ip, empty_np))),
    ] {
        // Until the proxy has synced the new Service a SYN may wait for its retransmit; once
        // its rules are in, a connect is refused at once.
        wait::retry(WAIT, || client.refused(target))?;
        let refused = client.refused(target)?;
        assert!(
            refused < Duration::from_millis(500),
            "{target} refused after {refused:?}"
        );
    }

    // Session affinity pins a client to one backend, from a Pod and from outside.
    world.apply(
        "sticky",
        &service_yaml("sticky", "  type: NodePort\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n", 80, "TCP"),
    )?;
    world.apply(
        "sticky-slice",
        &slice_yaml("sticky", 8080, "TCP", &refs(&everyone)),
    )?;
    let (sticky_ip, sticky_np, _) = world.service("sticky")?;
    let sticky_np = sticky_np.context("sticky has no nodePort")?;
    for k in 1..=NODES {
        let seen = servers_seen(
            &world.pod(k).client,
            SocketAddr::from((sticky_ip, 80)),
            NODES,
            20,
        )?;
        assert_eq!(seen.len(), 1, "p{k} was not pinned: {seen:?}");
        let through_node = SocketAddr::from((world.node(k).ip, sticky_np));
        let seen = servers_seen(&outside, through_node, NODES, 20)?;
        assert_eq!(
            seen.len(),
            1,
            "outside via node{k} was not pinned: {seen:?}"
        );
    }

    // externalTrafficPolicy: Local with the only endpoint on node2.
    world.apply(
        "local",
        &service_yaml(
            "local",
            "  type: LoadBalancer\n  externalTrafficPolicy: Local\n",
            80,
            "TCP",
        ),
    )?;
    world.apply(
        "local-slice",
        &slice_yaml("local", 8080, "TCP", &[(world.pod(2).ip, "node2")]),
    )?;
    let (_, local_np, svc) = world.service("local")?;
    let local_np = local_np.context("local has no nodePort")?;
    let hc_port = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .context("no healthCheckNodePort")? as u16;
    let client_ip = world.cluster.topology().control_plane_ip();
    let node2 = SocketAddr::from((world.node(2).ip, local_np));
    let (name, seen_client) = wait::retry(WAIT, || outside.who(node2))?;
    assert_eq!(name, "pod2");
    assert_eq!(
        seen_client.rsplit_once(':').map(|(ip, _)| ip),
        Some(client_ip.to_string().as_str()),
        "client IP kept"
    );
    let hc = |k: usize| -> Result<wait::HttpReply> {
        let addr = SocketAddr::from((world.node(k).ip, hc_port));
        let expect = if k == 2 { 200 } else { 503 };
        outside.netns.run(move || {
            wait::retry(WAIT, || {
                let reply = wait::http_get(addr, "/", Duration::from_secs(2))?;
                ensure!(reply.status == expect, "status {} on {addr}", reply.status);
                Ok(reply)
            })
        })
    };
    let healthy: Value = serde_json::from_str(&hc(2)?.body)?;
    assert_eq!(healthy["localEndpoints"], 1);
    assert_eq!(healthy["service"]["name"], "local");
    let unhealthy: Value = serde_json::from_str(&hc(1)?.body)?;
    assert_eq!(unhealthy["localEndpoints"], 0);
    // Node1 has no local endpoint: outside traffic to its node port goes nowhere.
    let node1 = SocketAddr::from((world.node(1).ip, local_np));
    let dropped = outside.who(node1);
    assert!(
        dropped.is_err(),
        "node1 answered for an eTP Local Service without a local endpoint: {dropped:?}"
    );

    // What the node's own tools say: metrics, health, explain.
    let node1_ns = world.node(1).netns.clone();
    let (metrics, healthz) = node1_ns.run(|| {
        let metrics = wait::http_get(
            "127.0.0.1:10249".parse()?,
            "/metrics",
            Duration::from_secs(2),
        )?;
        let healthz = wait::http_get(
            "127.0.0.1:10256".parse()?,
            "/healthz",
            Duration::from_secs(2),
        )?;
        Ok((metrics, healthz))
    })?;
    assert_eq!(metrics.status, 200);
    let holdings = match mode {
        Mode::Iptables => "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"}",
        Mode::Ebpf => "skiff_proxy_bpf_map_entries{map=\"services\"}",
    };
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        holdings,
        "kubeproxy_network_programming_duration_seconds",
    ] {
        assert!(
            metrics.body.contains(name),
            "/metrics lacks {name}:\n{}",
            metrics.body
        );
    }
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    // `explain` reads what the kernel holds: iptables rules, or the pinned maps.
    let bin = binaries::binary("skiff-proxy")?;
    let bin = bin.to_string_lossy().into_owned();
    let source = world.pod(1).ip.to_string();
    let pins = world.cluster.node_pin_dir(1)?;
    let pins = pins.to_string_lossy().into_owned();
    let explain = |target: String| -> Result<String> {
        let mut argv = vec![bin.as_str()];
        if mode == Mode::Ebpf {
            argv.extend(["--proxy-mode", "ebpf", "--bpf-pin-dir", &pins]);
        }
        argv.extend(["explain", &target, "--source", &source]);
        skiff_tests::cmd::run(
            &mut node1_ns.command_keeping_mounts(&argv),
            Duration::from_secs(10),
        )
    };
    let explained = explain(format!("{web_ip}:80/tcp"))?;
    if mode == Mode::Iptables {
        assert!(
            explained.contains("default/web:p/tcp cluster IP"),
            "{explained}"
        );
    }
    assert_eq!(
        explained.matches("endpoint: ").count(),
        NODES,
        "{explained}"
    );
    assert!(explained.contains("verdict: accepted"), "{explained}");
    let explained = explain(format!("{empty_ip}:80/tcp"))?;
    assert!(explained.contains("verdict: rejected"), "{explained}");
    Ok(())
}

#[test]
fn iptables_udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all()
-> Result<()> {
    udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all(Mode::Iptables)
}

#[test]
fn ebpf_udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all()
-> Result<()> {
    udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all(Mode::Ebpf)
}

fn udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all(
    mode: Mode,
) -> Result<()> {
    let mut world = World::build(&format!("proxy-{}-udp", mode.flag()), mode)?;

    // A UDP Service served by pod1 only; a client in p3 keeps one socket (one conntrack entry).
    world.apply("dns", &service_yaml("dns", "", 53, "UDP"))?;
    world.apply(
        "dns-slice",
        &slice_yaml("dns", 8081, "UDP", &[(world.pod(1).ip, "node1")]),
    )?;
    let (dns_ip, _, _) = world.service("dns")?;
    let target = SocketAddr::from((dns_ip, 53));
    let udp = UdpLoop::start(&world.pod(3).client, target, 60)?;
    udp.until("pod1", WAIT)
        .context("the UDP Service never answered")?;
    // The backend goes away for good and pod2 replaces it: the client must reach pod2.
    world
        .cluster
        .kubectl(&["delete", "pod", "pod1", "--grace-period=0", "--wait=false"])?;
    let replaced = Instant::now();
    world.apply(
        "dns-slice",
        &slice_yaml("dns", 8081, "UDP", &[(world.pod(2).ip, "node2")]),
    )?;
    // iptables deletes the stale conntrack entry and the same socket gets through; the eBPF
    // proxy ends the socket (its peer was fixed at `connect()`) and the client's new one is
    // translated anew. Either way within a second.
    let took = udp.until("pod2", Duration::from_secs(5))? - replaced;
    assert!(
        took < Duration::from_secs(1),
        "the UDP client waited {took:?} for the new backend"
    );
    drop(udp);

    // Restart node3's proxy under a steady request loop from p3: no request may fail.
    world.apply("web", &service_yaml("web", "", 80, "TCP"))?;
    let backends = vec![
        (world.pod(2).ip, "node2".to_owned()),
        (world.pod(3).ip, "node3".to_owned()),
    ];
    world.apply(
        "web-slice",
        &slice_yaml("web", 8080, "TCP", &refs(&backends)),
    )?;
    let (web_ip, _, _) = world.service("web")?;
    let web = SocketAddr::from((web_ip, 80));
    let client = world.pod(3).client.clone();
    wait::retry(WAIT, || client.who(web))?;
    let (ok, failed) = client.ask_while(web, || {
        world.proxies[2].take();
        std::thread::sleep(Duration::from_millis(500));
        world.start_proxy(3)
    })?;
    assert!(ok > 50, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across a restart: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );

    // --cleanup removes every chain and hook rule of ours, and only ours; and every program
    // and pinned map.
    world.proxies[2].take();
    let node3 = world.node(3).netns.clone();
    node3.exec(
        &["iptables", "-t", "nat", "-N", "ADMIN-OWN"],
        Duration::from_secs(10),
    )?;
    let bin = binaries::binary("skiff-proxy")?;
    let pins = world.cluster.node_pin_dir(3)?;
    skiff_tests::cmd::run(
        &mut node3.command_keeping_mounts(&[
            &bin.to_string_lossy(),
            "--cleanup",
            "--bpf-pin-dir",
            &pins.to_string_lossy(),
        ]),
        Duration::from_secs(20),
    )?;
    let save = node3.exec(&["iptables-save"], Duration::from_secs(10))?;
    assert!(!save.contains("SKIFF-"), "left behind:\n{save}");
    assert!(
        save.contains("ADMIN-OWN"),
        "cleanup removed a chain that was not ours"
    );
    let left: Vec<_> = std::fs::read_dir(&pins)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !pins.exists(),
        "{} is still there with {left:?}",
        pins.display()
    );
    let cgroup = world.cluster.node_cgroup(3)?;
    let attached = skiff_tests::cmd::run(
        &mut node3.command_keeping_mounts(&[
            "bpftool",
            "cgroup",
            "show",
            &cgroup.to_string_lossy(),
        ]),
        Duration::from_secs(10),
    )?;
    assert!(
        !attached.contains("inet4"),
        "programs still attached to node3's cgroup:\n{attached}"
    );
    Ok(())
}
