//! This node's share of the cluster network, hosted by the agent: the node network from
//! skiff-cni (host-gw routes or the VXLAN overlay, egress masquerade, forwarding) kept in step
//! with the Node objects, and the CNI configuration the plugins read, written once the podCIDR
//! is known (flannel writes `subnet.env` for the same reason: the plugin then needs no API
//! access and works under any runtime).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use skiff_cni::network::{
    Backend, NodeNetOps, NodeNetworkConfig, RealNodeNetwork, RemoteNode, VXLAN_OVERHEAD,
};
use skiff_common::relist::{Change, changes};

/// The interface that holds `ip`, found in this network namespace.
pub fn interface_with(ip: Ipv4Addr) -> anyhow::Result<String> {
    let addrs = nix::ifaddrs::getifaddrs()?;
    for addr in addrs {
        let v4 = addr
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|s| s.ip());
        if v4 == Some(ip) {
            return Ok(addr.interface_name);
        }
    }
    anyhow::bail!("no interface in this network namespace has the node IP {ip}")
}

/// Opens the node network for this node (changes nothing yet).
pub fn open(
    node_ip: Ipv4Addr,
    cluster_cidr: Ipv4Net,
    pod_cidr: Ipv4Net,
    backend: Backend,
) -> anyhow::Result<(RealNodeNetwork, u32)> {
    let underlay = interface_with(node_ip)?;
    let config = NodeNetworkConfig {
        node_ip,
        underlay: underlay.clone(),
        cluster_cidr,
        pod_cidr,
        backend,
    };
    let network = RealNodeNetwork::open(config, None)?;
    let link = network
        .ops()
        .link(&underlay)?
        .ok_or_else(|| anyhow::anyhow!("the underlay {underlay} vanished"))?;
    let pod_mtu = match network.config().backend {
        Backend::HostGw => link.mtu,
        Backend::Vxlan(_) => link.mtu - VXLAN_OVERHEAD,
    };
    Ok((network, pod_mtu))
}

/// The Nodes that can be reached: those with an InternalIP and an IPv4 podCIDR.
pub fn remote_nodes<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> Vec<RemoteNode> {
    let mut list: Vec<RemoteNode> = nodes
        .into_iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            let pod_cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
            let node_ip = node
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .parse()
                .ok()?;
            Some(RemoteNode {
                name,
                node_ip,
                pod_cidr,
            })
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// The Nodes as the watch last said them, and whether that is a whole list.
#[derive(Debug, Default)]
struct KnownNodes {
    nodes: BTreeMap<String, Node>,
    /// A complete list has come, and no relist is under way.
    complete: bool,
}

impl KnownNodes {
    fn apply(&mut self, change: Change<Node>) {
        match change {
            Change::Listing => self.complete = false,
            Change::Relisted(listed) => {
                self.nodes = listed.into_iter().map(|n| (n.name_any(), n)).collect();
                self.complete = true;
            }
            Change::Applied(node) => {
                self.nodes.insert(node.name_any(), node);
            }
            Change::Deleted(node) => {
                self.nodes.remove(&node.name_any());
            }
        }
    }

    /// The remote nodes to program, only from a complete list: programming from none or half
    /// a list would remove the routes to every node not seen yet (a restarted agent's first
    /// sync would cut the node off from the others until the list arrived).
    fn remotes(&self) -> Option<Vec<RemoteNode>> {
        self.complete.then(|| remote_nodes(self.nodes.values()))
    }
}

/// Keeps the node network in step with the Nodes, forever. A failed sync is retried every
/// 10 s, and a periodic one repairs what someone else changed.
pub async fn follow_nodes(client: kube::Client, network: RealNodeNetwork) {
    let network = Arc::new(Mutex::new(network));
    let events = watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(changes(events));
    let mut known = KnownNodes::default();
    let mut last: Option<Vec<RemoteNode>> = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(err)) => tracing::warn!(error = %err, "node watch failed"),
                Some(Ok(change)) => known.apply(change),
            },
            _ = tick.tick() => {
                let shared = Arc::clone(&network);
                // Re-read the kernel now and then: repairs entries someone else removed.
                let _ = tokio::task::spawn_blocking(move || shared.lock().expect("not poisoned").invalidate()).await;
                last = None;
            }
        }
        let Some(remotes) = known.remotes() else {
            continue;
        };
        if last.as_ref() == Some(&remotes) {
            continue;
        }
        let shared = Arc::clone(&network);
        let list = remotes.clone();
        let sync =
            tokio::task::spawn_blocking(move || shared.lock().expect("not poisoned").sync(&list));
        let result = match sync.await {
            Ok(result) => result,
            // The runtime is going away (the agent is exiting): nothing left to keep in step.
            Err(err) if err.is_cancelled() => return,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        match result {
            Ok(report) => {
                if !report.is_empty() {
                    tracing::info!(nodes = remotes.len(), ?report, "node network synced");
                }
                last = Some(remotes);
            }
            Err(err) => tracing::warn!(error = %err, "node network sync failed; retrying"),
        }
    }
}

/// Where the agent's conflist goes in the conf dir.
pub const CONFLIST_NAME: &str = "10-skiff.conflist";

/// Writes the CNI configuration: skiff-cni, then `portmap` for hostPorts when a bin dir has it.
/// Debian's portmap speaks CNI up to 1.0.0, so the list says 1.0.0 when it is in.
pub fn write_conflist(
    conf_dir: &Path,
    bin_dirs: &[PathBuf],
    pod_cidr: Ipv4Net,
    mtu: u32,
    ipam_dir: &Path,
) -> anyhow::Result<PathBuf> {
    let mut plugins = vec![json!({
        "type": "skiff-cni", "podCIDR": pod_cidr.to_string(), "mtu": mtu, "dataDir": ipam_dir,
    })];
    let portmap = bin_dirs.iter().any(|d| d.join("portmap").is_file());
    if portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
    }
    let version = if portmap { "1.0.0" } else { "1.1.0" };
    let list = json!({"cniVersion": version, "name": "skiff", "plugins": plugins});
    std::fs::create_dir_all(conf_dir)?;
    let path = conf_dir.join(CONFLIST_NAME);
    let tmp = conf_dir.join(format!(".{CONFLIST_NAME}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(&list)?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nodes_with_an_address_and_a_cidr_are_reachable() {
        let nodes: Vec<Node> = serde_json::from_value(json!([
            {"metadata": {"name": "b"}, "spec": {"podCIDR": "10.244.2.0/24"},
             "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.12"}]}},
            {"metadata": {"name": "a"}, "spec": {"podCIDR": "10.244.1.0/24"},
             "status": {"addresses": [{"type": "Hostname", "address": "a"},
                                      {"type": "InternalIP", "address": "172.31.0.11"}]}},
            {"metadata": {"name": "new"}, "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.13"}]}}
        ]))
        .unwrap();
        let remotes = remote_nodes(&nodes);
        let names: Vec<&str> = remotes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(remotes[0].node_ip, Ipv4Addr::new(172, 31, 0, 11));
    }

    #[test]
    fn nothing_is_programmed_before_a_whole_list_nor_during_a_relist() {
        let node = |name: &str, k: u8| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name},
                "spec": {"podCIDR": format!("10.244.{k}.0/24")},
                "status": {"addresses": [{"type": "InternalIP", "address": format!("172.31.0.{k}")}]}}))
            .unwrap()
        };
        let mut known = KnownNodes::default();
        assert_eq!(
            known.remotes(),
            None,
            "nothing listed yet: keep what the kernel has"
        );
        known.apply(Change::Applied(node("a", 1)));
        assert_eq!(known.remotes(), None, "one node is not the list");
        known.apply(Change::Listing);
        assert_eq!(known.remotes(), None);
        known.apply(Change::Relisted(vec![node("a", 1), node("b", 2)]));
        assert_eq!(known.remotes().map(|r| r.len()), Some(2));
        known.apply(Change::Deleted(node("a", 1)));
        assert_eq!(known.remotes().map(|r| r.len()), Some(1));
        known.apply(Change::Listing);
        assert_eq!(
            known.remotes(),
            None,
            "a relist under way holds the last programming"
        );
        known.apply(Change::Relisted(vec![node("c", 3)]));
        let names: Vec<String> = known
            .remotes()
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["c"]);
    }

    #[test]
    fn the_conflist_adds_portmap_only_when_installed() {
        let dir = std::env::temp_dir().join(format!("skiff-conflist-{}", std::process::id()));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let cidr: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let path = write_conflist(
            &dir.join("net.d"),
            std::slice::from_ref(&bin),
            cidr,
            1450,
            Path::new("/x"),
        )
        .unwrap();
        let list = crate::cni::load_network(path.parent().unwrap()).unwrap();
        assert_eq!((list.version.as_str(), list.plugins.len()), ("1.1.0", 1));
        assert_eq!(list.plugins[0]["mtu"], 1450);
        std::fs::write(bin.join("portmap"), "").unwrap();
        write_conflist(&dir.join("net.d"), &[bin], cidr, 1450, Path::new("/x")).unwrap();
        let list = crate::cni::load_network(&dir.join("net.d")).unwrap();
        assert_eq!((list.version.as_str(), list.plugins.len()), ("1.0.0", 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
