//! A Pod network across nodes: the topology, skiff's node network on every node, and one Pod
//! per node wired by a CNI chain — what the node-network tests and the throughput benchmark
//! both stand on.
//!
//! Node k owns podCIDR `10.244.k.0/24` of cluster CIDR `10.244.0.0/16`. Pods are wired first
//! and the node network programmed second, the order a node agent that starts after its Pods
//! would meet. The Pods' MTU is the one the node agent would write into skiff-cni's config:
//! the underlay's, minus the VXLAN header in VXLAN mode.

use std::path::PathBuf;

use anyhow::{Result, ensure};
use ipnet::Ipv4Net;
use skiff_cni::network::{Backend, NodeNetworkConfig, RealNodeNetwork, RemoteNode, VXLAN_OVERHEAD};

use crate::cni::{self, Chain, Pod};
use crate::{Node, Topology, TopologyOptions};

/// The underlay's MTU (the harness's veths keep the kernel default).
pub const UNDERLAY_MTU: u32 = 1500;

/// The cluster CIDR every podCIDR is cut from.
pub fn cluster_cidr() -> Ipv4Net {
    "10.244.0.0/16".parse().expect("a valid CIDR")
}

/// Node `k`'s podCIDR, `10.244.k.0/24`.
pub fn pod_cidr(k: usize) -> Ipv4Net {
    format!("10.244.{k}.0/24").parse().expect("k < 256")
}

/// The Pods' MTU under `backend`.
pub fn pod_mtu(backend: &Backend) -> u32 {
    match backend {
        Backend::HostGw => UNDERLAY_MTU,
        Backend::Vxlan(_) => UNDERLAY_MTU - VXLAN_OVERHEAD,
    }
}

/// Which plugin wires the Pods.
#[derive(Clone, Debug)]
pub enum PodPlugin {
    /// skiff-cni, this binary.
    Skiff(PathBuf),
    /// Debian's reference `bridge` + `host-local`.
    ReferenceBridge,
}

impl PodPlugin {
    /// The chain for a node with `pod_cidr`, Pods at `mtu`, IPAM state in `data_dir`.
    pub fn chain(&self, pod_cidr: Ipv4Net, mtu: u32, data_dir: &std::path::Path) -> Chain {
        match self {
            PodPlugin::Skiff(binary) => Chain::skiff(binary, pod_cidr, mtu, data_dir),
            PodPlugin::ReferenceBridge => Chain::reference_bridge(pod_cidr, mtu, data_dir),
        }
    }
}

/// Node `node` (the k-th) as the others see it.
pub fn remote(node: &Node, k: usize) -> RemoteNode {
    RemoteNode {
        name: node.name.clone(),
        node_ip: node.ip,
        pod_cidr: pod_cidr(k),
    }
}

/// Opens (changes nothing yet) the node network of `node`, the k-th, in `backend`.
pub fn open_net(node: &Node, k: usize, backend: &Backend) -> Result<RealNodeNetwork> {
    let config = NodeNetworkConfig {
        node_ip: node.ip,
        underlay: "eth0".into(),
        cluster_cidr: cluster_cidr(),
        pod_cidr: pod_cidr(k),
        backend: backend.clone(),
    };
    Ok(RealNodeNetwork::open(
        config,
        Some(&cni::netns_path(&node.netns)),
    )?)
}

/// Nodes with one Pod each (`p1`, `p2`, ...) and the node network synced on all of them.
/// Fields drop in order: node networks, Pods, then the topology and everything of its run.
#[derive(Debug)]
pub struct PodNetwork {
    /// Node k's node network at index k-1.
    pub nets: Vec<RealNodeNetwork>,
    /// Node k's Pod at index k-1.
    pub pods: Vec<Pod>,
    /// The backend every node runs.
    pub backend: Backend,
    /// The nodes.
    pub topology: Topology,
}

impl PodNetwork {
    /// Builds `nodes` nodes, wires a Pod on each with `plugin`, and syncs every node network.
    pub fn build(backend: Backend, nodes: usize, plugin: &PodPlugin, label: &str) -> Result<Self> {
        let topology = Topology::build(&TopologyOptions::nodes(nodes, label))?;
        let mtu = pod_mtu(&backend);
        let mut pods = Vec::new();
        for (i, node) in topology.nodes().iter().enumerate() {
            let k = i + 1;
            let data_dir = topology.run().scratch_dir(&format!("ipam{k}"))?;
            let chain = plugin.chain(pod_cidr(k), mtu, &data_dir);
            let pod = cni::add_pod(topology.run(), node, &format!("p{k}"), &chain)?;
            ensure!(pod_cidr(k).contains(&pod.ip), "{} got {}", pod.name, pod.ip);
            pods.push(pod);
        }
        let mut network = PodNetwork {
            nets: Vec::new(),
            pods,
            backend,
            topology,
        };
        let all = network.remotes();
        for (i, node) in network.topology.nodes().iter().enumerate() {
            let mut net = open_net(node, i + 1, &network.backend)?;
            let report = net.sync(&all)?;
            ensure!(
                !report.added.is_empty(),
                "{}: nothing programmed",
                node.name
            );
            network.nets.push(net);
        }
        Ok(network)
    }

    /// Every node, as a sync sees them.
    pub fn remotes(&self) -> Vec<RemoteNode> {
        let nodes = self.topology.nodes().iter().enumerate();
        nodes.map(|(i, n)| remote(n, i + 1)).collect()
    }

    /// Node k (from 1).
    pub fn node(&self, k: usize) -> &Node {
        self.topology.node(k)
    }

    /// Node k's Pod (from 1).
    pub fn pod(&self, k: usize) -> &Pod {
        &self.pods[k - 1]
    }
}

#[cfg(test)]
mod tests {
    use skiff_cni::network::VxlanConfig;

    use super::*;

    #[test]
    fn vxlan_pods_get_the_underlay_mtu_less_the_vxlan_header() {
        assert_eq!(pod_mtu(&Backend::HostGw), 1500);
        assert_eq!(pod_mtu(&Backend::Vxlan(VxlanConfig::default())), 1450);
    }

    #[test]
    fn every_node_gets_its_own_slice_of_the_cluster_cidr() {
        let cidrs: Vec<Ipv4Net> = (1..=3).map(pod_cidr).collect();
        assert!(cidrs.iter().all(|c| cluster_cidr().contains(c)));
        assert_eq!(cidrs[1].to_string(), "10.244.2.0/24");
    }
}
