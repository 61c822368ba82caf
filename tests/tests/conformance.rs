//! The conformance suite: what Kubernetes' own `[sig-network]` tests check, done the way a user
//! does it — Deployments, Services and `kubectl` against skiff-control, node agents hosting
//! the Service proxy, real Pods of the test server — in all four combinations of data plane
//! (iptables, eBPF) and node network (VXLAN, host-gw) on the process runtime, and once more
//! with real containers (containerd over CRI, iptables over VXLAN). Each cluster runs the DNS
//! add-on, so name resolution is checked on every data plane too.
//!
//! Each combination is one test on its own 3-node cluster; its cases run one after another and
//! each names itself in the error when it fails. Every check asks *who answered* (each Pod
//! replies with its own name and the client address it saw), never whether a connect worked.
//! `proxy_conformance.rs` holds the proxy alone to finer checks (standalone proxies, slices
//! written by hand); this suite is the whole stack.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use skiff_tests::cluster::TEST_SERVER_IMAGE;
use skiff_tests::objects::has_condition;
use skiff_tests::{Client, Cluster, ClusterOptions, Runtime, UdpLoop, wait};

#[path = "conformance/dns.rs"]
mod dns;

const NODES: usize = 3;
const WAIT: Duration = Duration::from_secs(30);
/// The web Deployment's size once scaled up: more Pods than nodes, so some node has two.
const REPLICAS: usize = 4;
/// Seconds without a heartbeat before the control plane calls a Node not ready.
const NODE_GRACE: u64 = 6;
/// An external IP and a LoadBalancer ingress IP, routed to no one: only the proxy answers them.
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LB_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

#[test]
fn iptables_over_vxlan() -> Result<()> {
    suite("iptables", "vxlan", Runtime::Process)
}

#[test]
fn iptables_over_host_gw() -> Result<()> {
    suite("iptables", "host-gw", Runtime::Process)
}

#[test]
fn ebpf_over_vxlan() -> Result<()> {
    suite("ebpf", "vxlan", Runtime::Process)
}

#[test]
fn ebpf_over_host_gw() -> Result<()> {
    suite("ebpf", "host-gw", Runtime::Process)
}

#[test]
fn containerd_iptables_over_vxlan() -> Result<()> {
    suite("iptables", "vxlan", Runtime::Containerd)
}

/// One cluster, every case in turn.
fn suite(mode: &str, overlay: &str, runtime: Runtime) -> Result<()> {
    let short = if overlay == "vxlan" { "vx" } else { "gw" };
    let prefix = if runtime == Runtime::Containerd {
        "ctrd"
    } else {
        "conf"
    };
    let label = format!("{prefix}-{}-{short}", &mode[..2]);
    let mut world = World::start(mode, overlay, runtime, &label)?;
    let cases: [(&str, Case); 12] = [
        ("endpoints follow Pods 0 -> N -> 0", endpoints_follow_pods),
        (
            "ClusterIP from Pods and nodes, NodePort, externalIPs, LB IPs",
            every_frontend,
        ),
        ("session affinity on, off, on", session_affinity),
        ("the same port over TCP and UDP", tcp_and_udp_on_one_port),
        ("hairpin and the Pod source IP", hairpin_and_source_ip),
        ("traffic policies Local", local_traffic_policies),
        ("terminating endpoints serve last", terminating_endpoints),
        (
            "UDP follows a replaced backend Pod",
            udp_follows_replaced_pod,
        ),
        ("Service recreated, nodePort changed", service_churn),
        (
            "cluster DNS: Services, Pods, ExternalName, upstream, dnsPolicy None",
            dns::cluster_dns,
        ),
        ("node agent restarted under load", agent_restart),
        ("a Node killed", node_killed),
    ];
    for (name, case) in cases {
        let started = Instant::now();
        case(&mut world).with_context(|| format!("[{mode}, {overlay}] case: {name}"))?;
        eprintln!(
            "[{mode}, {overlay}] {name}: ok in {:.1}s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

type Case = fn(&mut World) -> Result<()>;

/// The cluster and the clients every case uses.
struct World {
    /// One client Pod per node (`client1`.. on `node1`..), itself a test server.
    pod_clients: Vec<Client>,
    /// A client on each node itself (in the node's namespace and cgroup).
    node_clients: Vec<Client>,
    /// A machine outside the cluster: the underlay's namespace.
    outside: Client,
    cluster: Cluster,
}

impl World {
    fn start(mode: &str, overlay: &str, runtime: Runtime, label: &str) -> Result<Self> {
        let cluster = Cluster::start(&ClusterOptions {
            overlay: overlay.to_owned(),
            runtime,
            // The Lease renewed every second, well inside the grace period.
            agent_args: vec![
                "--proxy-mode".into(),
                mode.into(),
                "--node-lease-duration-seconds".into(),
                "4".into(),
            ],
            control_args: vec!["--node-monitor-grace-period".into(), NODE_GRACE.to_string()],
            dns: true,
            ..ClusterOptions::nodes(NODES, label)
        })?;
        // Until a Node is Ready it is tainted, and the scheduler would crowd the rest.
        wait::retry(WAIT * 2, || {
            let nodes = cluster.get_json(&["nodes"])?;
            let ready = nodes["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|node| has_condition(node, "Ready"))
                .count();
            ensure!(ready == NODES, "{ready} of {NODES} nodes ready");
            Ok(())
        })?;
        for k in 1..=NODES {
            cluster.apply(&json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("client{k}"), "labels": {"app": "client"}},
                "spec": {"nodeName": format!("node{k}"),
                         "containers": [{"name": "c", "image": TEST_SERVER_IMAGE}]}
            }))?;
        }
        cluster.apply(&web_deployment(0))?;
        let mut pod_clients = Vec::new();
        let mut node_clients = Vec::new();
        for k in 1..=NODES {
            let name = format!("client{k}");
            wait::retry(WAIT * 2, || {
                let pod = cluster.get_json(&["pod", &name])?;
                ensure!(pod["status"]["phase"] == "Running", "{name} is not running");
                Ok(())
            })?;
            pod_clients.push(cluster.pod_client(&name)?);
            node_clients.push(Client {
                netns: cluster.topology().node(k).netns.clone(),
                cgroup: Some(cluster.node_cgroup(k)?),
                view: None,
            });
        }
        let outside = Client {
            netns: cluster.topology().control_plane_netns().clone(),
            cgroup: None,
            view: None,
        };
        Ok(World {
            pod_clients,
            node_clients,
            outside,
            cluster,
        })
    }

    fn node_ip(&self, k: usize) -> Ipv4Addr {
        self.cluster.topology().node(k).ip
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.cluster.kubectl(args)
    }

    /// `kubectl replace` of one object.
    fn replace(&self, object: &Value) -> Result<()> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let file = self
            .cluster
            .topology()
            .run()
            .log_dir()
            .join(format!("replace-{name}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&["replace", "-f", &file.to_string_lossy()])?;
        Ok(())
    }

    fn scale(&self, replicas: usize) -> Result<()> {
        self.kubectl(&[
            "scale",
            "deployment",
            "web",
            &format!("--replicas={replicas}"),
        ])?;
        wait::retry(WAIT * 2, || {
            let pods = self.web_pods()?;
            ensure!(
                pods.len() == replicas,
                "{} of {replicas} web Pods ready",
                pods.len()
            );
            Ok(())
        })
    }

    /// Ready web Pods: (name, node number).
    fn web_pods(&self) -> Result<Vec<(String, usize)>> {
        let list = self.cluster.get_json(&["pods", "-l", "app=web"])?;
        let mut pods = Vec::new();
        for pod in list["items"].as_array().into_iter().flatten() {
            if !has_condition(pod, "Ready") || !pod["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            let k = node.trim_start_matches("node").parse().unwrap_or(0);
            pods.push((
                pod["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                k,
            ));
        }
        Ok(pods)
    }

    /// A Service's spec as the apiserver has it.
    fn service(&self, name: &str) -> Result<Value> {
        self.cluster.get_json(&["service", name])
    }

    /// Ready endpoints of a Service's slices, per port name.
    fn ready_endpoints(&self, service: &str) -> Result<(usize, BTreeSet<String>)> {
        let label = format!("kubernetes.io/service-name={service}");
        let slices = self.cluster.get_json(&["endpointslices", "-l", &label])?;
        let mut ready = 0;
        let mut ports = BTreeSet::new();
        for slice in slices["items"].as_array().into_iter().flatten() {
            for port in slice["ports"].as_array().into_iter().flatten() {
                ports.insert(format!(
                    "{}={}/{}",
                    port["name"].as_str().unwrap_or_default(),
                    port["port"],
                    port["protocol"].as_str().unwrap_or_default()
                ));
            }
            ready += slice["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["conditions"]["ready"] == true)
                .count();
        }
        Ok((ready, ports))
    }
}

/// The web Deployment: the test server with named TCP and UDP ports.
fn web_deployment(replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "server", "image": TEST_SERVER_IMAGE,
                    "ports": [{"name": "http", "containerPort": 8080},
                              {"name": "dgram", "containerPort": 8081, "protocol": "UDP"}]
                }]}
            }
        }
    })
}

/// A Service selecting the web Pods on port 80, TCP to the named port `http`.
fn web_service(name: &str, spec: &Value) -> Value {
    let mut service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    });
    if let (Some(base), Some(extra)) = (service["spec"].as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    service
}

fn cluster_ip(service: &Value) -> Result<Ipv4Addr> {
    Ok(service["spec"]["clusterIP"]
        .as_str()
        .context("no clusterIP")?
        .parse()?)
}

fn node_port(service: &Value) -> Result<u16> {
    Ok(service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .context("no nodePort")? as u16)
}

/// Who answers `addr` from `client` over `tries` requests, asked again until `expect` holds of
/// them: the proxies may still be programming the change a case just made.
fn answered_until(
    client: &Client,
    addr: SocketAddr,
    tries: usize,
    expect: impl Fn(&BTreeSet<String>) -> Result<()>,
) -> Result<BTreeSet<String>> {
    wait::retry(WAIT, || {
        let seen = answerers(client, addr, tries)?;
        expect(&seen)?;
        Ok(seen)
    })
}

/// Who answers `addr` from `client` over `tries` requests, once it answers at all.
fn answerers(client: &Client, addr: SocketAddr, tries: usize) -> Result<BTreeSet<String>> {
    wait::retry(WAIT, || client.who(addr))?;
    let mut names = BTreeSet::new();
    for _ in 0..tries {
        names.insert(client.who(addr)?.0);
    }
    Ok(names)
}

fn web_names(pods: &[(String, usize)]) -> BTreeSet<String> {
    names_where(pods, |_| true)
}

/// The names of the Pods whose node number passes `keep`.
fn names_where(pods: &[(String, usize)], keep: impl Fn(usize) -> bool) -> BTreeSet<String> {
    pods.iter()
        .filter(|(_, node)| keep(*node))
        .map(|(name, _)| name.clone())
        .collect()
}

/// 0 ready endpoints and refused at once; scaled up, every Pod in the slice under both named
/// ports and answering; scaled to 0, refused again.
fn endpoints_follow_pods(world: &mut World) -> Result<()> {
    let ports = json!({"ports": [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "dgram", "port": 53, "targetPort": "dgram", "protocol": "UDP"}]});
    world.cluster.apply(&web_service("web", &ports))?;
    let web = SocketAddr::from((cluster_ip(&world.service("web")?)?, 80));
    let (ready, _) = world.ready_endpoints("web")?;
    ensure!(ready == 0, "{ready} ready endpoints with 0 replicas");
    let took = wait::retry(WAIT, || world.pod_clients[0].refused(web))?;
    ensure!(took < Duration::from_secs(1), "refused only after {took:?}");

    world.scale(REPLICAS)?;
    let (ready, ports) = wait::retry(WAIT, || {
        let (ready, ports) = world.ready_endpoints("web")?;
        ensure!(ready == REPLICAS, "{ready} of {REPLICAS} endpoints ready");
        Ok((ready, ports))
    })?;
    let want: BTreeSet<String> = ["dgram=8081/UDP", "http=8080/TCP"].map(String::from).into();
    ensure!(ports == want, "slice ports {ports:?}, {ready} ready");
    let pods = web_names(&world.web_pods()?);
    answered_until(&world.pod_clients[0], web, 24, |seen| {
        ensure!(
            seen.is_subset(&pods) && seen.len() > 1,
            "answered by {seen:?}; web Pods {pods:?}"
        );
        Ok(())
    })?;

    world.scale(0)?;
    wait::retry(WAIT, || {
        let (ready, _) = world.ready_endpoints("web")?;
        ensure!(ready == 0, "{ready} endpoints still ready");
        world.pod_clients[1].refused(web).map(drop)
    })?;
    world.scale(REPLICAS)
}

/// The ClusterIP from a Pod on every node and from every node, answered by Pods on other
/// nodes; the NodePort on every node IP from outside; an external IP and an LB ingress IP
/// (set in the Service's status by hand, as a cloud controller would) from Pods.
fn every_frontend(world: &mut World) -> Result<()> {
    world.cluster.apply(&web_service(
        "front",
        &json!({"type": "LoadBalancer", "externalIPs": [EXTERNAL_IP.to_string()]}),
    ))?;
    world.kubectl(&[
        "patch",
        "service",
        "front",
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"loadBalancer": {"ingress": [{"ip": LB_IP.to_string()}]}}}).to_string(),
    ])?;
    let front = world.service("front")?;
    let vip = SocketAddr::from((cluster_ip(&front)?, 80));
    let node_port = node_port(&front)?;
    let pods = world.web_pods()?;
    let all = web_names(&pods);
    for k in 1..=NODES {
        let remote = names_where(&pods, |node| node != k);
        for (who, client) in [
            ("Pod", &world.pod_clients[k - 1]),
            ("node", &world.node_clients[k - 1]),
        ] {
            answered_until(client, vip, 16, |seen| {
                ensure!(
                    seen.is_subset(&all) && !seen.is_disjoint(&remote),
                    "ClusterIP from the {who} on node{k}: answered by {seen:?}; web Pods {pods:?}"
                );
                Ok(())
            })?;
        }
        let at = SocketAddr::from((world.node_ip(k), node_port));
        answered_until(&world.outside, at, 8, |seen| {
            ensure!(seen.is_subset(&all), "NodePort {at}: answered by {seen:?}");
            Ok(())
        })?;
        for address in [EXTERNAL_IP, LB_IP] {
            let at = SocketAddr::from((address, 80));
            answered_until(&world.pod_clients[k - 1], at, 8, |seen| {
                ensure!(
                    seen.is_subset(&all),
                    "{at} from node{k}: answered by {seen:?}"
                );
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// ClientIP affinity keeps one client on one Pod; switched off it spreads again; back on, pins.
fn session_affinity(world: &mut World) -> Result<()> {
    world.cluster.apply(&web_service(
        "sticky",
        &json!({"sessionAffinity": "ClientIP"}),
    ))?;
    let vip = SocketAddr::from((cluster_ip(&world.service("sticky")?)?, 80));
    let client = &world.pod_clients[2];
    let pinned = answerers(client, vip, 12)?;
    ensure!(pinned.len() == 1, "with affinity, answered by {pinned:?}");
    world.kubectl(&[
        "patch",
        "service",
        "sticky",
        "-p",
        r#"{"spec":{"sessionAffinity":"None"}}"#,
    ])?;
    wait::retry(WAIT, || {
        let spread = answerers(client, vip, 12)?;
        ensure!(spread.len() > 1, "without affinity, only {spread:?}");
        Ok(())
    })?;
    world.kubectl(&[
        "patch",
        "service",
        "sticky",
        "-p",
        r#"{"spec":{"sessionAffinity":"ClientIP"}}"#,
    ])?;
    wait::retry(WAIT, || {
        let pinned = answerers(client, vip, 12)?;
        ensure!(
            pinned.len() == 1,
            "affinity on again, answered by {pinned:?}"
        );
        Ok(())
    })
}

/// Port 80 over TCP and UDP in one Service; each keeps working when the other is removed.
fn tcp_and_udp_on_one_port(world: &mut World) -> Result<()> {
    let both = json!({"ports": [
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "dgram", "port": 80, "targetPort": "dgram", "protocol": "UDP"}]});
    world.cluster.apply(&web_service("dual", &both))?;
    let vip = cluster_ip(&world.service("dual")?)?;
    let client = &world.pod_clients[0];
    let all = web_names(&world.web_pods()?);
    let udp_answer = || -> Result<String> {
        let name = udp_who(client, SocketAddr::from((vip, 80)))?;
        ensure!(all.contains(&name), "UDP answered by {name}");
        Ok(name)
    };
    wait::retry(WAIT, udp_answer)?;
    answerers(client, SocketAddr::from((vip, 80)), 4)?;
    // TCP removed: UDP still answers, TCP is refused.
    let udp_only = json!({"ports": [
        {"name": "dgram", "port": 80, "targetPort": "dgram", "protocol": "UDP"}]});
    // `kubectl apply` merges ports by port number alone (Kubernetes' own issue 39188), so
    // one protocol of a shared port is taken away by a replace, as users do.
    world.replace(&web_service("dual", &udp_only))?;
    // No rule for that port any more: as with kube-proxy, the address alone answers nothing.
    wait::retry(WAIT, || {
        ensure!(
            client.who(SocketAddr::from((vip, 80))).is_err(),
            "TCP still answers after its port was removed"
        );
        Ok(())
    })?;
    udp_answer()?;
    // And the other way round.
    let tcp_only = json!({"ports": [{"name": "http", "port": 80, "targetPort": "http"}]});
    world.replace(&web_service("dual", &tcp_only))?;
    wait::retry(WAIT, || {
        ensure!(udp_answer().is_err(), "UDP still answers");
        Ok(())
    })?;
    answerers(client, SocketAddr::from((vip, 80)), 4)?;
    world.kubectl(&["delete", "service", "dual"])?;
    Ok(())
}

/// One datagram to `addr` from `client`; the name in the answer.
fn udp_who(client: &Client, addr: SocketAddr) -> Result<String> {
    let script = "import socket,sys\n\
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
        s.settimeout(1)\n\
        s.connect((sys.argv[1],int(sys.argv[2])))\n\
        s.send(b'who')\n\
        print(s.recv(512).decode())\n";
    let out = skiff_tests::cmd::output(
        &mut client.command(&[
            "python3",
            "-c",
            script,
            &addr.ip().to_string(),
            &addr.port().to_string(),
        ])?,
        Duration::from_secs(5),
    )?;
    ensure!(
        out.status.success(),
        "no UDP answer from {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// A Pod reaches itself through its Service; a Pod on another node is seen with its own IP.
fn hairpin_and_source_ip(world: &mut World) -> Result<()> {
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "self1"},
        "spec": {"selector": {"app": "client"},
                 "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let vip = SocketAddr::from((cluster_ip(&world.service("self1")?)?, 80));
    let clients: BTreeSet<String> = (1..=NODES).map(|k| format!("client{k}")).collect();
    // Every client Pod is a backend: over enough tries, client1 meets itself.
    let seen = answered_until(&world.pod_clients[0], vip, 30, |seen| {
        ensure!(
            seen.contains("client1"),
            "client1 never reached itself: {seen:?}"
        );
        Ok(())
    })?;
    ensure!(seen.is_subset(&clients), "answered by {seen:?}");
    // The source IP a web Pod sees is the client Pod's own.
    let client_ip = world.cluster.get_json(&["pod", "client2"])?["status"]["podIP"]
        .as_str()
        .context("client2 has no podIP")?
        .to_owned();
    let web = SocketAddr::from((cluster_ip(&world.service("web")?)?, 80));
    for _ in 0..6 {
        let (name, seen) = world.pod_clients[1].who(web)?;
        let seen_ip = seen.rsplit_once(':').map_or(seen.as_str(), |(ip, _)| ip);
        ensure!(
            seen_ip == client_ip,
            "{name} saw {seen}, not client2's {client_ip}"
        );
    }
    world.kubectl(&["delete", "service", "self1"])?;
    Ok(())
}

/// internalTrafficPolicy Local: only the client node's Pods, none there → no answer;
/// externalTrafficPolicy Local: the outside client's IP kept, health check 200 / 503.
fn local_traffic_policies(world: &mut World) -> Result<()> {
    world.cluster.apply(&web_service(
        "itp",
        &json!({"internalTrafficPolicy": "Local"}),
    ))?;
    world.cluster.apply(&web_service(
        "etp",
        &json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
    ))?;
    let itp = SocketAddr::from((cluster_ip(&world.service("itp")?)?, 80));
    let etp = world.service("etp")?;
    let etp_port = node_port(&etp)?;
    let health_port = etp["spec"]["healthCheckNodePort"]
        .as_u64()
        .context("no healthCheckNodePort")? as u16;
    // Leave one node without web Pods, so both sides of each policy show.
    world.kubectl(&["cordon", "node3"])?;
    for (name, k) in world.web_pods()? {
        if k == 3 {
            world.kubectl(&["delete", "pod", &name, "--wait=false"])?;
        }
    }
    let pods = wait::retry(WAIT * 2, || {
        let pods = world.web_pods()?;
        ensure!(
            pods.len() == REPLICAS && pods.iter().all(|(_, k)| *k != 3),
            "web Pods {pods:?}"
        );
        Ok(pods)
    })?;
    let outside_ip = world.cluster.topology().control_plane_ip().to_string();
    for k in 1..=NODES {
        let local = names_where(&pods, |node| node == k);
        let client = &world.pod_clients[k - 1];
        let at = SocketAddr::from((world.node_ip(k), etp_port));
        let health = SocketAddr::from((world.node_ip(k), health_port));
        let expect = if local.is_empty() { 503 } else { 200 };
        world.outside.netns.run(move || {
            wait::retry(WAIT, || {
                let reply = wait::http_get(health, "/", Duration::from_secs(2))?;
                ensure!(reply.status == expect, "health {health}: {}", reply.status);
                Ok(())
            })
        })?;
        if local.is_empty() {
            wait::retry(WAIT, || {
                ensure!(client.who(itp).is_err(), "iTP Local answered on node{k}");
                ensure!(world.outside.who(at).is_err(), "eTP Local answered on {at}");
                Ok(())
            })?;
            continue;
        }
        answered_until(client, itp, 12, |seen| {
            ensure!(
                seen.is_subset(&local),
                "iTP Local from node{k}: {seen:?}, local {local:?}"
            );
            Ok(())
        })?;
        let (name, seen_client) = wait::retry(WAIT, || world.outside.who(at))?;
        ensure!(local.contains(&name), "eTP Local on {at}: {name}");
        let seen_ip = seen_client.rsplit_once(':').map_or("", |(ip, _)| ip);
        ensure!(seen_ip == outside_ip, "eTP Local: {name} saw {seen_client}");
    }
    world.kubectl(&["uncordon", "node3"])?;
    world.kubectl(&["delete", "service", "itp", "etp"])?;
    Ok(())
}

/// A Pod `name` of the test server on node `k`, labelled `app: drain`, that keeps serving for
/// a minute after it is told to stop.
fn draining_pod(name: &str, k: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "drain"}},
        "spec": {"nodeName": format!("node{k}"), "terminationGracePeriodSeconds": 60,
                 "containers": [{"name": "s", "image": TEST_SERVER_IMAGE,
                                 "args": ["--shutdown-delay", "60"]}]}
    })
}

/// A deleted Pod that still serves takes traffic only while no ready endpoint remains, and
/// then rather than the Service refusing.
fn terminating_endpoints(world: &mut World) -> Result<()> {
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "drain"},
        "spec": {"selector": {"app": "drain"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let vip = SocketAddr::from((cluster_ip(&world.service("drain")?)?, 80));
    let client = &world.pod_clients[0];
    let names =
        |list: &[&str]| -> BTreeSet<String> { list.iter().map(|n| n.to_string()).collect() };
    world.cluster.apply(&draining_pod("drain1", 2))?;
    world.cluster.apply(&draining_pod("drain2", 3))?;
    answered_until(client, vip, 16, |seen| {
        ensure!(
            *seen == names(&["drain1", "drain2"]),
            "answered by {seen:?}"
        );
        Ok(())
    })?;
    // drain1 terminates, drain2 is ready: only drain2.
    world.kubectl(&["delete", "pod", "drain1", "--wait=false"])?;
    answered_until(client, vip, 16, |seen| {
        ensure!(
            *seen == names(&["drain2"]),
            "with drain1 terminating, answered by {seen:?}"
        );
        Ok(())
    })?;
    // Both terminate: both still serve, so both answer.
    world.kubectl(&["delete", "pod", "drain2", "--wait=false"])?;
    answered_until(client, vip, 16, |seen| {
        ensure!(
            *seen == names(&["drain1", "drain2"]),
            "with both terminating, answered by {seen:?}"
        );
        Ok(())
    })?;
    world.kubectl(&[
        "delete",
        "pod",
        "drain1",
        "drain2",
        "--grace-period=0",
        "--force",
    ])?;
    world.kubectl(&["delete", "service", "drain"])?;
    Ok(())
}

/// A client keeping one UDP socket to a Service reaches the Pod that replaces its backend.
fn udp_follows_replaced_pod(world: &mut World) -> Result<()> {
    world.cluster.apply(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dns"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "dns"}},
                 "template": {"metadata": {"labels": {"app": "dns"}},
                              "spec": {"containers": [{"name": "s", "image": TEST_SERVER_IMAGE,
                                  "ports": [{"name": "dgram", "containerPort": 8081,
                                             "protocol": "UDP"}]}]}}}
    }))?;
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns"},
        "spec": {"selector": {"app": "dns"},
                 "ports": [{"port": 53, "targetPort": "dgram", "protocol": "UDP"}]}
    }))?;
    let dns_pod = || -> Result<String> {
        let pods = world.cluster.get_json(&["pods", "-l", "app=dns"])?;
        let ready: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| has_condition(p, "Ready") && p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        match ready.as_slice() {
            [one] => Ok(one.clone()),
            other => anyhow::bail!("ready dns Pods: {other:?}"),
        }
    };
    let first = wait::retry(WAIT * 2, dns_pod)?;
    let vip = SocketAddr::from((cluster_ip(&world.service("dns")?)?, 53));
    let udp = UdpLoop::start(&world.pod_clients[0], vip, 90)?;
    udp.until(&first, WAIT)
        .context("the UDP Service never answered")?;
    world.kubectl(&["delete", "pod", &first, "--wait=false"])?;
    let second = wait::retry(WAIT * 2, || {
        let name = dns_pod()?;
        ensure!(name != first, "{first} not replaced yet");
        Ok(name)
    })?;
    let ready = Instant::now();
    let reached = udp.until(&second, Duration::from_secs(10))?;
    eprintln!(
        "  UDP reached {second} {:?} after it was ready",
        reached.saturating_duration_since(ready)
    );
    drop(udp);
    world.kubectl(&["delete", "deployment", "dns"])?;
    world.kubectl(&["delete", "service", "dns"])?;
    Ok(())
}

/// A Service deleted and made again answers at its new address; a changed nodePort answers
/// on the new port and no longer on the old one.
fn service_churn(world: &mut World) -> Result<()> {
    let all = web_names(&world.web_pods()?);
    world
        .cluster
        .apply(&web_service("churn", &json!({"type": "NodePort"})))?;
    let first = world.service("churn")?;
    answerers(
        &world.pod_clients[0],
        SocketAddr::from((cluster_ip(&first)?, 80)),
        2,
    )?;
    world.kubectl(&["delete", "service", "churn"])?;
    world
        .cluster
        .apply(&web_service("churn", &json!({"type": "NodePort"})))?;
    let again = world.service("churn")?;
    let vip = SocketAddr::from((cluster_ip(&again)?, 80));
    answered_until(&world.pod_clients[0], vip, 4, |seen| {
        ensure!(seen.is_subset(&all), "recreated: {seen:?}");
        Ok(())
    })?;
    let old = node_port(&again)?;
    let new = if old == 32000 { 32001 } else { 32000 };
    let patch = json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http",
                                           "nodePort": new}]}});
    world.kubectl(&["patch", "service", "churn", "-p", &patch.to_string()])?;
    let at = |port: u16| SocketAddr::from((world.node_ip(2), port));
    answerers(&world.outside, at(new), 2)?;
    wait::retry(WAIT, || {
        ensure!(
            world.outside.who(at(old)).is_err(),
            "the old nodePort {old} answers"
        );
        Ok(())
    })?;
    world.kubectl(&["delete", "service", "churn"])?;
    Ok(())
}

/// Restarting node2's agent (and with it the proxy it hosts) under a request loop from a Pod
/// on node2 loses no request.
fn agent_restart(world: &mut World) -> Result<()> {
    let vip = SocketAddr::from((cluster_ip(&world.service("web")?)?, 80));
    let client = world.pod_clients[1].clone();
    answerers(&client, vip, 2)?;
    let cluster = &mut world.cluster;
    let (ok, failed) = client.ask_while(vip, || {
        cluster.kill_agent(2)?;
        cluster.start_agent(2)
    })?;
    ensure!(
        failed.is_empty() && ok > 20,
        "{ok} answered, {} failed: {:?}",
        failed.len(),
        failed.first()
    );
    Ok(())
}

/// node3's agent stops for good: its Pod's endpoint leaves the Service once the Node is no
/// longer ready, and the Service keeps answering from the Pod elsewhere.
fn node_killed(world: &mut World) -> Result<()> {
    for k in [2, 3] {
        world.cluster.apply(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("solo{k}"), "labels": {"app": "solo"}},
            "spec": {"nodeName": format!("node{k}"),
                     "containers": [{"name": "s", "image": TEST_SERVER_IMAGE}]}
        }))?;
    }
    world.cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "solo"},
        "spec": {"selector": {"app": "solo"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    let vip = SocketAddr::from((cluster_ip(&world.service("solo")?)?, 80));
    let both: BTreeSet<String> = ["solo2", "solo3"].map(String::from).into();
    answered_until(&world.pod_clients[0], vip, 12, |seen| {
        ensure!(*seen == both, "answered by {seen:?}");
        Ok(())
    })?;
    world.cluster.kill_agent(3)?;
    let killed = Instant::now();
    wait::retry(Duration::from_secs(NODE_GRACE * 4 + 20), || {
        let (ready, _) = world.ready_endpoints("solo")?;
        ensure!(ready == 1, "{ready} endpoints still ready");
        Ok(())
    })?;
    let took = killed.elapsed();
    ensure!(
        took < Duration::from_secs(NODE_GRACE * 3 + 10),
        "the endpoint left only after {took:?}"
    );
    answered_until(&world.pod_clients[0], vip, 12, |seen| {
        ensure!(
            seen.len() == 1 && seen.contains("solo2"),
            "answered by {seen:?} after node3 died"
        );
        Ok(())
    })?;
    Ok(())
}
