//! skiff-proxy's iptables data plane in a 3-node netns cluster, checked with real traffic.
//!
//! skiff-control runs in the underlay namespace; Services and EndpointSlices are written straight
//! to its apiserver (Services without selectors, slices managed by the test), so what is under
//! test is the proxy alone: one standalone `skiff-proxy` per node namespace (the node agents run
//! Pods but host no proxy), each with its own rules. Every node has a Pod running
//! skiff-test-server, placed by its agent, and every assertion is about *who answered* and
//! *which client address they saw*, never a bare connect. Needs root; all iptables calls happen inside node namespaces.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use skiff_tests::{Cluster, ClusterOptions, Node, Process, binaries, wait};

const WAIT: Duration = Duration::from_secs(20);
const NODES: usize = 3;

/// A test server Pod placed on a node by the node agent.
#[derive(Debug)]
struct TestPod {
    name: String,
    netns: skiff_tests::Netns,
    ip: Ipv4Addr,
}

/// A cluster with a server Pod and a standalone skiff-proxy per node (the agents host none, so
/// the proxy can be restarted and cleaned up alone). Fields drop in order: proxies stop before
/// the cluster's namespaces go.
struct World {
    proxies: Vec<Option<Process>>,
    pods: Vec<TestPod>,
    manifests: PathBuf,
    cluster: Cluster,
}

impl World {
    fn build(label: &str) -> Result<Self> {
        let cluster = Cluster::start(&ClusterOptions {
            agent_args: vec!["--proxy-mode".into(), "none".into()],
            ..ClusterOptions::nodes(NODES, label)
        })?;
        let run = cluster.topology().run();
        let manifests = run.scratch_dir("manifests")?;
        let mut world = World {
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
            world.pods.push(TestPod { name, netns, ip });
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
        let argv = [
            bin.to_string_lossy().into_owned(),
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
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
        let proxy = self.cluster.topology().spawn(
            &node.netns,
            &format!("skiff-proxy-{}", node.name),
            &argv,
            &[("RUST_LOG", "info")],
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

/// The name of the server that answered `GET /` (its body is "POD_NAME CLIENT_IP").
fn who(addr: SocketAddr) -> Result<(String, String)> {
    let reply = wait::http_get(addr, "/", Duration::from_secs(2))?;
    ensure!(reply.status == 200, "status {}", reply.status);
    let mut words = reply.body.split_whitespace();
    let name = words.next().context("empty body")?.to_owned();
    let client = words.next().unwrap_or_default().to_owned();
    Ok((name, client))
}

/// Sends up to `tries` requests from `from`'s namespace to `addr`; returns every server seen
/// once all of `want` were seen (or all tries are used).
fn servers_seen(
    from: &skiff_tests::Netns,
    addr: SocketAddr,
    want: usize,
    tries: usize,
) -> Result<BTreeSet<String>> {
    from.run(move || {
        // The Service may take a sync to appear: wait for the first answer, bounded.
        wait::retry(WAIT, || who(addr))?;
        let mut seen = BTreeSet::new();
        for _ in 0..tries {
            seen.insert(who(addr)?.0);
            if seen.len() >= want {
                break;
            }
        }
        Ok(seen)
    })
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
fn cluster_ip_node_port_reject_affinity_and_local_policy() -> Result<()> {
    let world = World::build("proxy-iptables")?;
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
            &world.pod(k).netns,
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

    // A Pod keeps its own address through the ClusterIP, unless it lands on itself (hairpin):
    // then it is masqueraded, or its own reply would not come back through the NAT.
    for k in 1..=NODES {
        let me = world.pod(k);
        let (own, ip) = (me.name.clone(), me.ip.to_string());
        let addr = SocketAddr::from((web_ip, 80));
        let answers = me.netns.run(move || {
            let mut answers = Vec::new();
            for _ in 0..30 {
                answers.push(who(addr)?);
            }
            Ok(answers)
        })?;
        for (name, client) in &answers {
            let client_ip = client
                .rsplit_once(':')
                .map_or(client.as_str(), |(ip, _)| ip);
            if *name == own {
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
    let outside = world.cluster.topology().control_plane_netns().clone();
    for k in 1..=NODES {
        let addr = SocketAddr::from((world.node(k).ip, web_np));
        let seen = servers_seen(&outside, addr, NODES, 60)?;
        assert_eq!(
            seen,
            pods_set(NODES),
            "NodePort on node{k} reaches every backend"
        );
    }

    // No endpoints: refused at once, not a timeout.
    world.apply("empty", &service_yaml("empty", "", 80, "TCP"))?;
    let (empty_ip, _, _) = world.service("empty")?;
    let target = SocketAddr::from((empty_ip, 80));
    let refused = world.pod(1).netns.run(move || {
        let attempt = || {
            let started = Instant::now();
            match TcpStream::connect_timeout(&target, Duration::from_secs(3)) {
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(started.elapsed()),
                other => bail!("not refused yet: {other:?}"),
            }
        };
        // Until the proxy has synced the new Service a SYN may wait for its retransmit; once
        // its rules are in, a connect is refused at once.
        wait::retry(WAIT, attempt)?;
        attempt()
    })?;
    assert!(
        refused < Duration::from_millis(500),
        "refused after {refused:?}"
    );

    // Session affinity pins a client to one backend.
    world.apply(
        "sticky",
        &service_yaml("sticky", "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n", 80, "TCP"),
    )?;
    world.apply(
        "sticky-slice",
        &slice_yaml("sticky", 8080, "TCP", &refs(&everyone)),
    )?;
    let (sticky_ip, _, _) = world.service("sticky")?;
    for k in 1..=NODES {
        let seen = servers_seen(
            &world.pod(k).netns,
            SocketAddr::from((sticky_ip, 80)),
            NODES,
            20,
        )?;
        assert_eq!(seen.len(), 1, "p{k} was not pinned: {seen:?}");
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
    let (name, seen_client) = outside.run(move || wait::retry(WAIT, || who(node2)))?;
    assert_eq!(name, "pod2");
    assert_eq!(
        seen_client.rsplit_once(':').map(|(ip, _)| ip),
        Some(client_ip.to_string().as_str()),
        "client IP kept"
    );
    let hc = |k: usize| -> Result<wait::HttpReply> {
        let addr = SocketAddr::from((world.node(k).ip, hc_port));
        let expect = if k == 2 { 200 } else { 503 };
        outside.run(move || {
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
    let dropped = outside.run(move || Ok(who(node1)))?;
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
    for name in [
        "kubeproxy_sync_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"}",
        "kubeproxy_network_programming_duration_seconds",
    ] {
        assert!(
            metrics.body.contains(name),
            "/metrics lacks {name}:\n{}",
            metrics.body
        );
    }
    assert_eq!(healthz.status, 200, "{}", healthz.body);
    let bin = binaries::binary("skiff-proxy")?;
    let bin = bin.to_string_lossy();
    let source = world.pod(1).ip.to_string();
    let explained = node1_ns.exec(
        &[
            &bin,
            "explain",
            &format!("{web_ip}:80/tcp"),
            "--source",
            &source,
        ],
        Duration::from_secs(10),
    )?;
    assert!(
        explained.contains("default/web:p/tcp cluster IP"),
        "{explained}"
    );
    assert_eq!(
        explained.matches("endpoint: ").count(),
        NODES,
        "{explained}"
    );
    assert!(explained.contains("verdict: accepted"), "{explained}");
    let explained = node1_ns.exec(
        &[
            &bin,
            "explain",
            &format!("{empty_ip}:80/tcp"),
            "--source",
            &source,
        ],
        Duration::from_secs(10),
    )?;
    assert!(explained.contains("verdict: rejected"), "{explained}");
    Ok(())
}

/// Sends "hostname" over one UDP socket every 50 ms until `until` answers or `limit` passes;
/// returns how long that took.
fn udp_until(socket: &UdpSocket, until: &str, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let mut last = String::new();
    while started.elapsed() < limit {
        let _ = socket.send(b"hostname");
        if let Ok(n) = socket.recv(&mut buf) {
            last = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
            if last == until {
                return Ok(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("no answer from {until} within {limit:?} (last: {last:?})")
}

#[test]
fn udp_survives_backend_replacement_restart_loses_nothing_and_cleanup_removes_all() -> Result<()> {
    let mut world = World::build("proxy-iptables-udp")?;

    // A UDP Service served by pod1 only; a client in p3 keeps one socket (one conntrack entry).
    world.apply("dns", &service_yaml("dns", "", 53, "UDP"))?;
    world.apply(
        "dns-slice",
        &slice_yaml("dns", 8081, "UDP", &[(world.pod(1).ip, "node1")]),
    )?;
    let (dns_ip, _, _) = world.service("dns")?;
    let target = SocketAddr::from((dns_ip, 53));
    let socket = world.pod(3).netns.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        socket.connect(target)?;
        Ok(socket)
    })?;
    udp_until(&socket, "pod1", WAIT).context("the UDP Service never answered")?;
    // The backend goes away for good and pod2 replaces it: the same socket must reach pod2.
    world
        .cluster
        .kubectl(&["delete", "pod", "pod1", "--grace-period=0", "--wait=false"])?;
    world.apply(
        "dns-slice",
        &slice_yaml("dns", 8081, "UDP", &[(world.pod(2).ip, "node2")]),
    )?;
    let took = udp_until(&socket, "pod2", Duration::from_secs(5))?;
    assert!(
        took < Duration::from_secs(1),
        "the UDP client waited {took:?} for the new backend"
    );

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
    world
        .pod(3)
        .netns
        .run(move || wait::retry(WAIT, || who(web)).map(drop))?;
    let netns = world.pod(3).netns.clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let requests = std::thread::spawn(move || {
        netns.run(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            while stop_rx.try_recv().is_err() && Instant::now() < deadline {
                match who(web) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok((ok, failed))
        })
    });
    std::thread::sleep(Duration::from_millis(500));
    world.proxies[2].take();
    std::thread::sleep(Duration::from_millis(500));
    world.start_proxy(3)?;
    std::thread::sleep(Duration::from_secs(3));
    let _ = stop_tx.send(());
    let (ok, failed) = requests
        .join()
        .map_err(|_| anyhow::anyhow!("request loop panicked"))??;
    assert!(ok > 50, "only {ok} requests went through");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across a restart: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(3)]
    );

    // --cleanup removes every chain and hook rule of ours, and only ours.
    world.proxies[2].take();
    let node3 = world.node(3).netns.clone();
    node3.exec(
        &["iptables", "-t", "nat", "-N", "ADMIN-OWN"],
        Duration::from_secs(10),
    )?;
    let bin = binaries::binary("skiff-proxy")?;
    node3.exec(
        &[&bin.to_string_lossy(), "--cleanup"],
        Duration::from_secs(20),
    )?;
    let save = node3.exec(&["iptables-save"], Duration::from_secs(10))?;
    assert!(!save.contains("SKIFF-"), "left behind:\n{save}");
    assert!(
        save.contains("ADMIN-OWN"),
        "cleanup removed a chain that was not ours"
    );
    Ok(())
}
