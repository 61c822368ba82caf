//! Pod-to-Pod TCP throughput across two nodes, for `cargo xtask bench cni`.
//!
//! Each measurement builds its own two-node [`PodNetwork`]: one Pod per node wired by the given
//! plugin (skiff-cni in the benchmark), the node network in the asked backend, and iperf3 from
//! the Pod on node1 to the Pod on node2. The bare underlay (node1 to node2, no Pods, no node
//! network) is the baseline the other two are divided by. A number, not a verdict: the bench
//! prints ratios, no test asserts on speed.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use skiff_cni::network::{Backend, VxlanConfig};

use crate::podnet::{PodNetwork, PodPlugin};
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

/// Measures TCP throughput over `path` for `duration`, in Gbit/s (received side), with Pods
/// wired by `plugin`.
pub fn pod_to_pod_gbits(
    path: ThroughputPath,
    plugin: &PodPlugin,
    duration: Duration,
) -> Result<f64> {
    let backend = match path {
        ThroughputPath::Underlay => {
            let topology = Topology::build(&TopologyOptions::nodes(2, "throughput-underlay"))?;
            let (node1, node2) = (topology.node(1), topology.node(2));
            return iperf(&topology, &node1.netns, &node2.netns, node2.ip, duration);
        }
        ThroughputPath::HostGw => Backend::HostGw,
        ThroughputPath::Vxlan => Backend::Vxlan(VxlanConfig::default()),
    };
    let network = PodNetwork::build(backend, 2, plugin, "throughput")?;
    let (client, server) = (network.pod(1), network.pod(2));
    iperf(
        &network.topology,
        &client.netns,
        &server.netns,
        server.ip,
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
