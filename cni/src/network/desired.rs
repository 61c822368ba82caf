//! From the list of remote nodes to the exact set of kernel entries that should exist — pure.
//!
//! Each remote node maps to its own entries and to nothing else: host-gw gives one route, VXLAN
//! gives one FDB entry, one neighbour and one route. The sync diffs these sets against what it
//! programmed, so adding or removing a node touches only that node's entries, and an unchanged
//! list touches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ipnet::Ipv4Net;

use super::NodeNetworkError;
use super::config::{NodeNetworkConfig, RemoteNode, vtep_mac};
use super::ops::{FdbEntry, IfIndex, Neighbour, Route};

/// The links the entries hang off, learned when the node network is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Links {
    /// Routes go out of the underlay to next hops on these prefixes.
    HostGw {
        underlay: IfIndex,
        on_link: Vec<Ipv4Net>,
    },
    /// Everything goes out of the VXLAN device.
    Vxlan { device: IfIndex },
}

/// A set of entries of each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Entries {
    pub routes: BTreeSet<Route>,
    pub fdb: BTreeSet<FdbEntry>,
    pub neighbours: BTreeSet<Neighbour>,
}

/// One kernel entry, as a sync reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entry {
    /// A route.
    Route(Route),
    /// A VXLAN FDB entry.
    Fdb(FdbEntry),
    /// A permanent neighbour.
    Neighbour(Neighbour),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Route(r) => r.fmt(f),
            Entry::Fdb(e) => e.fmt(f),
            Entry::Neighbour(n) => n.fmt(f),
        }
    }
}

/// The remote nodes that need entries, after checking the list as a whole.
///
/// A node with this node's IP is this node (callers may pass every Node); it is skipped. Any
/// other problem refuses the whole list, so bad input never half-applies.
pub(crate) fn remote_nodes<'a>(
    config: &NodeNetworkConfig,
    remotes: &'a [RemoteNode],
) -> Result<Vec<&'a RemoteNode>, NodeNetworkError> {
    let mut by_ip = BTreeMap::new();
    let mut names = BTreeSet::new();
    let mut kept: Vec<&RemoteNode> = Vec::new();
    for remote in remotes {
        let bad = |reason: String| NodeNetworkError::Remote {
            name: remote.name.clone(),
            reason,
        };
        if remote.name.is_empty() {
            return Err(bad("no name".to_owned()));
        }
        if !names.insert(remote.name.as_str()) {
            return Err(bad("listed twice".to_owned()));
        }
        if let Some(other) = by_ip.insert(remote.node_ip, remote.name.as_str()) {
            return Err(bad(format!(
                "node IP {} is also {other:?}'s",
                remote.node_ip
            )));
        }
        if remote.node_ip == config.node_ip {
            continue;
        }
        let cidr = remote.pod_cidr;
        if cidr.trunc() != cidr || !config.cluster_cidr.contains(&cidr) || cidr.prefix_len() > 30 {
            return Err(bad(format!(
                "podCIDR {cidr} is not a Pod range inside {}",
                config.cluster_cidr
            )));
        }
        if config.cluster_cidr.contains(&remote.node_ip) {
            return Err(bad(format!(
                "node IP {} is inside the cluster CIDR",
                remote.node_ip
            )));
        }
        if overlaps(cidr, config.pod_cidr) {
            return Err(bad(format!(
                "podCIDR {cidr} overlaps this node's {}",
                config.pod_cidr
            )));
        }
        if let Some(other) = kept.iter().find(|k| overlaps(k.pod_cidr, cidr)) {
            return Err(bad(format!(
                "podCIDR {cidr} overlaps {:?}'s {}",
                other.name, other.pod_cidr
            )));
        }
        kept.push(remote);
    }
    Ok(kept)
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Everything that should exist for `remotes` (already checked by [`remote_nodes`]).
pub(crate) fn desired(links: &Links, remotes: &[&RemoteNode]) -> Result<Entries, NodeNetworkError> {
    let mut entries = Entries::default();
    for remote in remotes {
        match links {
            Links::HostGw { underlay, on_link } => {
                // The kernel would refuse a gateway that is not on-link; say why, by name.
                if !on_link.iter().any(|net| net.contains(&remote.node_ip)) {
                    return Err(NodeNetworkError::Remote {
                        name: remote.name.clone(),
                        reason: format!(
                            "node IP {} is not on-link on the underlay; host-gw needs every \
                             node on one L2 segment (use VXLAN otherwise)",
                            remote.node_ip
                        ),
                    });
                }
                entries.routes.insert(Route {
                    dst: remote.pod_cidr,
                    gateway: remote.node_ip,
                    oif: *underlay,
                    onlink: false,
                });
            }
            Links::Vxlan { device } => {
                let mac = vtep_mac(remote.node_ip);
                let gateway = remote.pod_cidr.network();
                entries.fdb.insert(FdbEntry {
                    link: *device,
                    mac,
                    dst: remote.node_ip,
                });
                entries.neighbours.insert(Neighbour {
                    link: *device,
                    ip: gateway,
                    mac,
                });
                entries.routes.insert(Route {
                    dst: remote.pod_cidr,
                    gateway,
                    oif: *device,
                    onlink: true,
                });
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::network::Backend;
    use crate::network::ops::MacAddr;

    fn config() -> NodeNetworkConfig {
        NodeNetworkConfig {
            node_ip: Ipv4Addr::new(172, 31, 4, 11),
            underlay: "eth0".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            backend: Backend::HostGw,
        }
    }

    fn node(name: &str, host: u8, cidr: &str) -> RemoteNode {
        RemoteNode {
            name: name.into(),
            node_ip: Ipv4Addr::new(172, 31, 4, host),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    fn refusal(remotes: &[RemoteNode]) -> String {
        remote_nodes(&config(), remotes).unwrap_err().to_string()
    }

    #[test]
    fn this_node_in_the_list_is_skipped() {
        let list = [
            node("node1", 11, "10.244.1.0/24"),
            node("node2", 12, "10.244.2.0/24"),
        ];
        let kept = remote_nodes(&config(), &list).unwrap();
        assert_eq!(kept, vec![&list[1]]);
    }

    #[test]
    fn bad_lists_are_refused_naming_the_node() {
        let two = node("node2", 12, "10.244.2.0/24");
        assert!(refusal(&[two.clone(), two.clone()]).contains("listed twice"));
        let msg = refusal(&[two.clone(), node("node3", 12, "10.244.3.0/24")]);
        assert!(
            msg.contains("node3") && msg.contains("also \"node2\""),
            "{msg}"
        );
        let msg = refusal(&[node("node3", 13, "10.245.3.0/24")]);
        assert!(
            msg.contains("node3") && msg.contains("inside 10.244.0.0/16"),
            "{msg}"
        );
        assert!(refusal(&[node("node3", 13, "10.244.1.0/25")]).contains("this node's"));
        let msg = refusal(&[two, node("node3", 13, "10.244.2.128/25")]);
        assert!(msg.contains("overlaps \"node2\"'s"), "{msg}");
    }

    #[test]
    fn host_gw_wants_one_route_per_node_via_its_ip() {
        let links = Links::HostGw {
            underlay: 2,
            on_link: vec!["172.31.4.0/24".parse().unwrap()],
        };
        let two = node("node2", 12, "10.244.2.0/24");
        let entries = desired(&links, &[&two]).unwrap();
        assert_eq!(
            entries.routes.into_iter().collect::<Vec<_>>(),
            vec![Route {
                dst: two.pod_cidr,
                gateway: two.node_ip,
                oif: 2,
                onlink: false
            }]
        );
        assert!(entries.fdb.is_empty() && entries.neighbours.is_empty());
        let far = RemoteNode {
            node_ip: Ipv4Addr::new(192, 0, 2, 7),
            ..node("far", 0, "10.244.9.0/24")
        };
        let msg = desired(&links, &[&far]).unwrap_err().to_string();
        assert!(
            msg.contains("\"far\"") && msg.contains("not on-link"),
            "{msg}"
        );
    }

    #[test]
    fn vxlan_wants_fdb_neighbour_and_onlink_route_per_node() {
        let links = Links::Vxlan { device: 9 };
        let two = node("node2", 12, "10.244.2.0/24");
        let entries = desired(&links, &[&two]).unwrap();
        let mac = MacAddr([0x0e, 0x5f, 172, 31, 4, 12]);
        let gateway = Ipv4Addr::new(10, 244, 2, 0);
        assert_eq!(
            entries.fdb.into_iter().collect::<Vec<_>>(),
            vec![FdbEntry {
                link: 9,
                mac,
                dst: two.node_ip
            }]
        );
        assert_eq!(
            entries.neighbours.into_iter().collect::<Vec<_>>(),
            vec![Neighbour {
                link: 9,
                ip: gateway,
                mac
            }]
        );
        assert_eq!(
            entries.routes.into_iter().collect::<Vec<_>>(),
            vec![Route {
                dst: two.pod_cidr,
                gateway,
                oif: 9,
                onlink: true
            }]
        );
    }
}
