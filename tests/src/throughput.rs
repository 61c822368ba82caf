//! Pod-to-Pod TCP throughput across two nodes, for `cargo xtask bench cni`.
//!
//! Each measurement builds its own two-node topology, wires one Pod per node with Debian's
//! reference `bridge` + `host-local`, programs the node network in the asked backend, and runs
//! iperf3 from the Pod on node1 to the Pod on node2. The bare underlay (node1 to node2, no Pods,
//! no node network) is the baseline the other two are divided by. A number, not a verdict: the
//! bench prints ratios, no test asserts on speed.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use skiff_cni::network::{Backend, NodeNetwork, NodeNetworkConfig, RemoteNode, VxlanConfig};

use crate::pods::{self, CniChain};
use crate::{Netns, Topology, TopologyOptions, cmd, wait};

/// What carries the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThroughputPath {
    /// Node to node on the underlay, no Pods: the baseline.
    Underlay,
    /// Pod to Pod over host-gw routes.
    HostGw,
    /// Pod to Pod over the VXLAN overlay.
    Vxlan,
}

const IPERF_PORT: u16 = 5201;

/// Measures TCP throughput over `path` for `duration`, in Gbit/s (received side).
pub fn pod_to_pod_gbits(path: ThroughputPath, duration: Duration) -> Result<f64> {
    let topology = Topology::build(&TopologyOptions::nodes(2, "throughput"))?;
    let (node1, node2) = (topology.node(1), topology.node(2));
    let backend = match path {
        ThroughputPath::Underlay => None,
        ThroughputPath::HostGw => Some(Backend::HostGw),
        ThroughputPath::Vxlan => Some(Backend::Vxlan(VxlanConfig::default())),
    };
    let Some(backend) = backend else {
        return iperf(&topology, &node1.netns, &node2.netns, node2.ip, duration);
    };
    let mtu = match backend {
        Backend::HostGw => 1500,
        Backend::Vxlan(_) => 1500 - skiff_cni::network::VXLAN_OVERHEAD,
    };
    let cidr = |k: usize| -> Ipv4Net { format!("10.244.{k}.0/24").parse().unwrap() };
    let mut pods = Vec::new();
    let mut nets = Vec::new();
    let remotes: Vec<RemoteNode> = topology
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| RemoteNode {
            name: n.name.clone(),
            node_ip: n.ip,
            pod_cidr: cidr(i + 1),
        })
        .collect();
    for (i, node) in topology.nodes().iter().enumerate() {
        let k = i + 1;
        let ipam = topology.run().scratch_dir(&format!("ipam{k}"))?;
        let chain = CniChain::reference_bridge(cidr(k), mtu, &ipam);
        pods.push(pods::add_pod(
            topology.run(),
            node,
            &format!("p{k}"),
            &chain,
        )?);
        let config = NodeNetworkConfig {
            node_ip: node.ip,
            underlay: "eth0".into(),
            cluster_cidr: "10.244.0.0/16".parse()?,
            pod_cidr: cidr(k),
            backend: backend.clone(),
        };
        let netns = PathBuf::from(format!("/run/netns/{}", node.netns.name()));
        let mut net = NodeNetwork::open(config, Some(&netns))?;
        net.sync(&remotes)?;
        nets.push(net);
    }
    iperf(
        &topology,
        &pods[0].netns,
        &pods[1].netns,
        pods[1].ip,
        duration,
    )
}

/// iperf3 from `client` to a server in `server` listening on `server_ip`.
fn iperf(
    topology: &Topology,
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    duration: Duration,
) -> Result<f64> {
    let ip = server_ip.to_string();
    let _server = topology.spawn(
        server,
        "iperf3-server",
        &["iperf3", "-s", "-B", &ip, "-p", &IPERF_PORT.to_string()],
        &[],
    )?;
    wait::wait_for_tcp(
        Some(client),
        SocketAddr::from((server_ip, IPERF_PORT)),
        Duration::from_secs(10),
    )?;
    let seconds = duration.as_secs().max(1).to_string();
    let timeout = duration + Duration::from_secs(20);
    let mut last = None;
    // The server may still be closing the readiness probe's session: a few bounded attempts.
    for _ in 0..3 {
        let out = client.output(
            &[
                "iperf3",
                "-c",
                &ip,
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &seconds,
                "-J",
            ],
            timeout,
        )?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("iperf3 said {}", String::from_utf8_lossy(&out.stdout)))?;
        if let Some(bits) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bits / 1e9);
        }
        last = Some(report["error"].to_string());
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("iperf3 gave no result: {}", last.unwrap_or_default())
}

/// Is iperf3 installed (`cargo xtask setup` installs it)?
pub fn iperf3_available() -> bool {
    cmd::output(
        std::process::Command::new("iperf3").arg("--version"),
        Duration::from_secs(5),
    )
    .is_ok_and(|o| o.status.success())
}
