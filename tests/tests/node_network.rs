//! The node network in real namespaces, in both backends, with Pods wired by skiff-cni (routed
//! /32 veths, no bridge) — the plugin and the node network together, as a node runs them. Pods
//! on different nodes reach each other over TCP and UDP and see each other's real addresses; a
//! Pod reaching outside the cluster CIDR shows up as its node; a node dropped from the sync
//! loses exactly its entries and becomes unreachable while the others keep talking; a restarted
//! agent changes nothing; teardown leaves nothing of ours. One more test wires the Pods with
//! Debian's reference `bridge` + `host-local` instead, so the node network is shown not to
//! depend on our plugin. Needs root and `cargo build -p skiff-cni`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use skiff_cni::network::{Backend, Entry, RemoteNode, SyncReport, VxlanConfig, vtep_mac};
use skiff_tests::podnet::{PodNetwork, PodPlugin, open_net, pod_cidr, pod_mtu};
use skiff_tests::{Node, Pod, Process, Topology, binaries, wait};

const SERVER: &str = env!("CARGO_BIN_EXE_skiff-test-server");
const WAIT: Duration = Duration::from_secs(10);
/// One attempt at something that must fail.
const REFUSED: Duration = Duration::from_secs(2);

/// A [`PodNetwork`] whose Pods run skiff-test-server, and a server outside the cluster.
/// Fields drop in order: servers, then the Pod network and everything of its run.
struct Cluster {
    servers: Vec<Process>,
    outside: Ipv4Addr,
    net: PodNetwork,
}

fn vxlan() -> Backend {
    Backend::Vxlan(VxlanConfig::default())
}

fn skiff() -> Result<PodPlugin> {
    Ok(PodPlugin::Skiff(binaries::skiff_cni()?))
}

impl Cluster {
    fn build(backend: Backend, nodes: usize, plugin: &PodPlugin, label: &str) -> Result<Self> {
        let net = PodNetwork::build(backend, nodes, plugin, label)?;
        let mut cluster = Cluster {
            servers: Vec::new(),
            outside: outside_ip(&net.topology),
            net,
        };
        for (i, pod) in cluster.net.pods.iter().enumerate() {
            let name = format!("pod{}", i + 1);
            cluster.servers.push(cluster.net.topology.spawn(
                &pod.netns,
                &name,
                &[SERVER],
                &[("POD_NAME", &name)],
            )?);
        }
        cluster.start_outside_server()?;
        for pod in &cluster.net.pods {
            let addr = SocketAddr::from((pod.ip, 8080));
            wait::wait_for_http(Some(&pod.netns), addr, "/healthz", WAIT)?;
        }
        Ok(cluster)
    }

    fn all_remotes(&self) -> Vec<RemoteNode> {
        self.net.remotes()
    }

    /// A server on an extra underlay address: outside the cluster CIDR, with no route back to it.
    fn start_outside_server(&mut self) -> Result<()> {
        let topology = &self.net.topology;
        let underlay = topology.control_plane_netns();
        let ip = self.outside.to_string();
        underlay.ip(&["addr", "add", &format!("{ip}/24"), "dev", "br0"])?;
        let server = topology.spawn(
            underlay,
            "outside",
            &[SERVER, "--bind", &ip],
            &[("POD_NAME", "outside")],
        )?;
        let addr = SocketAddr::from((self.outside, 8080));
        wait::wait_for_http(Some(&topology.node(1).netns), addr, "/healthz", WAIT)?;
        self.servers.push(server);
        Ok(())
    }

    fn node(&self, k: usize) -> &Node {
        self.net.node(k)
    }

    fn pod(&self, k: usize) -> &Pod {
        self.net.pod(k)
    }
}

fn outside_ip(topology: &Topology) -> Ipv4Addr {
    let [a, b, c, _] = topology.control_plane_ip().octets();
    Ipv4Addr::new(a, b, c, 200)
}

/// The client address `to` saw for an HTTP request from `from`.
fn seen_over_tcp(from: &Pod, to: Ipv4Addr) -> Result<IpAddr> {
    let reply = wait::wait_for_http(
        Some(&from.netns),
        SocketAddr::from((to, 8080)),
        "/clientip",
        WAIT,
    )
    .with_context(|| format!("TCP {} -> {to}", from.name))?;
    Ok(reply.body.trim().parse::<SocketAddr>()?.ip())
}

/// The client address `to` saw for a UDP datagram from `from`.
fn seen_over_udp(from: &Pod, to: Ipv4Addr) -> Result<IpAddr> {
    let target = SocketAddr::from((to, 8081));
    let answer = from
        .netns
        .run(move || wait::retry(WAIT, || wait::udp_exchange(target, "clientip", REFUSED)))
        .with_context(|| format!("UDP {} -> {to}", from.name))?;
    Ok(answer.trim().parse::<SocketAddr>()?.ip())
}

/// Every ordered pair of `pods` talks over TCP and UDP, and the receiver sees the sender's own IP.
fn assert_pods_talk_without_nat(cluster: &Cluster, pods: &[usize]) -> Result<()> {
    for &a in pods {
        for &b in pods.iter().filter(|&&b| b != a) {
            let (from, to) = (cluster.pod(a), cluster.pod(b));
            let tcp = seen_over_tcp(from, to.ip)?;
            let udp = seen_over_udp(from, to.ip)?;
            assert_eq!(tcp, IpAddr::V4(from.ip), "TCP {} -> {}", from.name, to.name);
            assert_eq!(udp, IpAddr::V4(from.ip), "UDP {} -> {}", from.name, to.name);
        }
    }
    Ok(())
}

/// Each Pod reaches the outside server, which sees the Pod's node.
fn assert_egress_is_masqueraded(cluster: &Cluster) -> Result<()> {
    for (i, pod) in cluster.net.pods.iter().enumerate() {
        let node_ip = IpAddr::V4(cluster.node(i + 1).ip);
        assert_eq!(
            seen_over_tcp(pod, cluster.outside)?,
            node_ip,
            "TCP from {}",
            pod.name
        );
        assert_eq!(
            seen_over_udp(pod, cluster.outside)?,
            node_ip,
            "UDP from {}",
            pod.name
        );
    }
    Ok(())
}

/// Neither TCP nor UDP from `from` gets an answer from `to` (one bounded attempt each).
fn assert_unreachable(from: &Pod, to: Ipv4Addr) -> Result<()> {
    let (tcp, udp) = from.netns.run(move || {
        Ok((
            wait::http_get(SocketAddr::from((to, 8080)), "/clientip", REFUSED),
            wait::udp_exchange(SocketAddr::from((to, 8081)), "clientip", REFUSED),
        ))
    })?;
    assert!(
        tcp.is_err(),
        "{} still reaches {to} over TCP: {tcp:?}",
        from.name
    );
    assert!(
        udp.is_err(),
        "{} still reaches {to} over UDP: {udp:?}",
        from.name
    );
    Ok(())
}

/// skiff's routes on `node`, as `ip route` prints them.
fn skiff_routes(node: &Node) -> Result<Vec<String>> {
    let out = node.netns.ip(&["-4", "route", "show", "proto", "83"])?;
    Ok(out.lines().map(|l| l.trim().to_owned()).collect())
}

/// The entries of remote node `k` in a report, checked against what its facts demand.
fn is_entry_of(entry: &Entry, cluster: &Cluster, k: usize) -> bool {
    let (ip, cidr) = (cluster.node(k).ip, pod_cidr(k));
    match entry {
        Entry::Route(r) => r.dst == cidr,
        Entry::Fdb(f) => f.dst == ip && f.mac == vtep_mac(ip),
        Entry::Neighbour(n) => n.ip == cidr.network() && n.mac == vtep_mac(ip),
    }
}

fn entries_per_node(backend: &Backend) -> usize {
    match backend {
        Backend::HostGw => 1,
        Backend::Vxlan(_) => 3,
    }
}

fn check_kernel_state(cluster: &Cluster) -> Result<()> {
    let (node1, node2) = (cluster.node(1), cluster.node(2));
    let routes = skiff_routes(node1)?;
    match cluster.net.backend {
        Backend::HostGw => {
            assert_eq!(
                routes,
                [format!("10.244.2.0/24 via {} dev eth0", node2.ip)],
                "node1's routes"
            );
        }
        Backend::Vxlan(_) => {
            assert_eq!(
                routes,
                ["10.244.2.0/24 via 10.244.2.0 dev skiff.vxlan onlink".to_owned()]
            );
            let link = node1.netns.ip(&["-d", "link", "show", "skiff.vxlan"])?;
            for want in [
                "mtu 1450".to_owned(),
                format!("link/ether {}", vtep_mac(node1.ip)),
                format!("vxlan id 1 local {} dev eth0", node1.ip),
                "dstport 8472".to_owned(),
                "nolearning".to_owned(),
            ] {
                assert!(link.contains(&want), "no {want:?} in {link}");
            }
            let fdb = node1
                .netns
                .exec(&["bridge", "fdb", "show", "dev", "skiff.vxlan"], WAIT)?;
            let want = format!("{} dst {} self permanent", vtep_mac(node2.ip), node2.ip);
            assert!(fdb.contains(&want), "no {want:?} in {fdb}");
            let neigh = node1.netns.ip(&["neigh", "show", "dev", "skiff.vxlan"])?;
            let want = format!("10.244.2.0 lladdr {} PERMANENT", vtep_mac(node2.ip));
            assert!(neigh.contains(&want), "no {want:?} in {neigh}");
            let addr = node1
                .netns
                .ip(&["-4", "-o", "addr", "show", "dev", "skiff.vxlan"])?;
            assert!(addr.contains("inet 10.244.1.0/32"), "{addr}");
        }
    }
    // Both veth ends carry the MTU skiff-cni's config gave: 1450 under VXLAN.
    let pod = cluster.pod(1);
    let host_veth = pod.result["interfaces"][0]["name"]
        .as_str()
        .context("no host veth in the result")?;
    let mtu = format!("mtu {} ", pod_mtu(&cluster.net.backend));
    for link in [
        pod.netns.ip(&["-o", "link", "show", "eth0"])?,
        node1.netns.ip(&["-o", "link", "show", host_veth])?,
    ] {
        assert!(link.contains(&mtu), "no {mtu:?} in {link}");
    }
    let nat = node1.netns.exec(&["iptables", "-t", "nat", "-S"], WAIT)?;
    let jumps = nat
        .lines()
        .filter(|l| l.contains("-j SKIFFNET-MASQ"))
        .count();
    assert_eq!(jumps, 1, "{nat}");
    let forward = node1
        .netns
        .exec(&["sysctl", "-n", "net.ipv4.ip_forward"], WAIT)?;
    assert_eq!(forward.trim(), "1");
    Ok(())
}

/// Two nodes: traffic, kernel state, restart adoption, teardown.
fn two_nodes(backend: &Backend, label: &str) -> Result<()> {
    let mut cluster = Cluster::build(backend.clone(), 2, &skiff()?, label)?;
    assert_pods_talk_without_nat(&cluster, &[1, 2])?;
    assert_egress_is_masqueraded(&cluster)?;
    check_kernel_state(&cluster)?;

    // A restarted agent on node1 finds everything in place and changes nothing.
    let all = cluster.all_remotes();
    drop(cluster.net.nets.remove(0));
    let mut restarted = open_net(cluster.node(1), 1, backend)?;
    assert_eq!(restarted.sync(&all)?, SyncReport::default());
    check_kernel_state(&cluster)?;
    assert_eq!(
        seen_over_tcp(cluster.pod(2), cluster.pod(1).ip)?,
        IpAddr::V4(cluster.pod(2).ip)
    );

    // Teardown on node1 leaves nothing of ours there, and node2's Pod can no longer reach node1's.
    restarted.teardown()?;
    restarted.teardown()?;
    let node1 = cluster.node(1);
    assert_eq!(skiff_routes(node1)?, Vec::<String>::new());
    assert!(
        node1.netns.ip(&["link", "show", "skiff.vxlan"]).is_err(),
        "device left"
    );
    let nat = node1.netns.exec(&["iptables", "-t", "nat", "-S"], WAIT)?;
    assert!(!nat.contains("SKIFF"), "{nat}");
    assert_unreachable(cluster.pod(2), cluster.pod(1).ip)?;
    Ok(())
}

/// Three nodes: all pairs talk; node3 leaves the others' syncs and only its entries go.
fn three_nodes(backend: Backend, label: &str) -> Result<()> {
    let mut cluster = Cluster::build(backend, 3, &skiff()?, label)?;
    assert_pods_talk_without_nat(&cluster, &[1, 2, 3])?;
    assert_egress_is_masqueraded(&cluster)?;

    let without_node3: Vec<RemoteNode> = cluster.all_remotes().into_iter().take(2).collect();
    let per_node = entries_per_node(&cluster.net.backend);
    for k in [1, 2] {
        let report = cluster.net.nets[k - 1].sync(&without_node3)?;
        assert!(report.added.is_empty(), "node{k}: {report:?}");
        assert_eq!(report.removed.len(), per_node, "node{k}: {report:?}");
        assert!(
            report.removed.iter().all(|e| is_entry_of(e, &cluster, 3)),
            "node{k} removed more than node3's entries: {report:?}"
        );
        let routes = skiff_routes(cluster.node(k))?;
        assert_eq!(routes.len(), 1, "node{k}: {routes:?}");
        assert!(!routes[0].contains("10.244.3.0"), "node{k}: {routes:?}");
    }
    assert_eq!(
        skiff_routes(cluster.node(3))?.len(),
        2,
        "node3 was not touched"
    );
    assert_pods_talk_without_nat(&cluster, &[1, 2])?;
    assert_unreachable(cluster.pod(1), cluster.pod(3).ip)?;
    assert_unreachable(cluster.pod(2), cluster.pod(3).ip)?;

    // node3 comes back: reachable again.
    let all = cluster.all_remotes();
    for k in [1, 2] {
        let report = cluster.net.nets[k - 1].sync(&all)?;
        assert_eq!(report.added.len(), per_node, "node{k}: {report:?}");
    }
    assert_pods_talk_without_nat(&cluster, &[1, 3])?;
    Ok(())
}

#[test]
fn host_gw_two_nodes() -> Result<()> {
    two_nodes(&Backend::HostGw, "nodenet-hostgw2")
}

#[test]
fn vxlan_two_nodes() -> Result<()> {
    two_nodes(&vxlan(), "nodenet-vxlan2")
}

#[test]
fn host_gw_three_nodes_and_one_leaves() -> Result<()> {
    three_nodes(Backend::HostGw, "nodenet-hostgw3")
}

#[test]
fn vxlan_three_nodes_and_one_leaves() -> Result<()> {
    three_nodes(vxlan(), "nodenet-vxlan3")
}

#[test]
fn vxlan_two_nodes_under_the_reference_bridge() -> Result<()> {
    let plugin = PodPlugin::ReferenceBridge;
    let cluster = Cluster::build(vxlan(), 2, &plugin, "nodenet-refbridge")?;
    assert_pods_talk_without_nat(&cluster, &[1, 2])?;
    assert_egress_is_masqueraded(&cluster)
}

#[test]
#[ignore = "a measurement, not a test: cargo xtask bench cni reports it; try it with --ignored"]
fn throughput_helper_measures_every_path() -> Result<()> {
    use skiff_tests::throughput::{ThroughputPath, iperf3_available, pod_to_pod_gbits};
    ensure!(
        iperf3_available(),
        "iperf3 is missing: run `cargo xtask setup`"
    );
    let plugin = skiff()?;
    let base = pod_to_pod_gbits(ThroughputPath::Underlay, &plugin, Duration::from_secs(2))?;
    for path in [ThroughputPath::HostGw, ThroughputPath::Vxlan] {
        let gbits = pod_to_pod_gbits(path, &plugin, Duration::from_secs(2))?;
        eprintln!(
            "{path:?}: {gbits:.2} Gbit/s, {:.2} of the underlay's {base:.2}",
            gbits / base
        );
        ensure!(gbits > 0.0, "{path:?} carried nothing");
    }
    Ok(())
}
