//! What the node network is told: this node's facts, the backend, and the other nodes.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::NodeNetworkError;
use super::ops::MacAddr;

/// Bytes a VXLAN packet adds on an IPv4 underlay: outer IP 20 + UDP 8 + VXLAN 8 + inner Ethernet 14.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// This node's side of the node network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetworkConfig {
    /// The node's InternalIP, an address on `underlay`.
    pub node_ip: Ipv4Addr,
    /// The interface that carries node-to-node traffic, e.g. `eth0`.
    pub underlay: String,
    /// Every Pod address in the cluster, e.g. `10.244.0.0/16`.
    pub cluster_cidr: Ipv4Net,
    /// This node's Pod addresses, inside `cluster_cidr`, e.g. `10.244.1.0/24`.
    pub pod_cidr: Ipv4Net,
    /// How Pod traffic crosses to other nodes.
    pub backend: Backend,
}

/// How Pod traffic crosses between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Backend {
    /// A plain route per remote node via its node IP; every node must share one L2 segment.
    HostGw,
    /// A VXLAN overlay: works across routed underlays, costs [`VXLAN_OVERHEAD`] bytes of MTU.
    Vxlan(VxlanConfig),
}

/// The VXLAN device's settings; every node of a cluster must agree on VNI and port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VxlanConfig {
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// The device's name.
    pub device: String,
}

impl Default for VxlanConfig {
    /// VNI 1 and port 8472, like flannel, so the two can be compared on the wire; `skiff.vxlan`.
    fn default() -> Self {
        VxlanConfig {
            vni: 1,
            port: 8472,
            device: "skiff.vxlan".to_owned(),
        }
    }
}

/// Another node, as the node agent learns it from its Node object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteNode {
    /// The Node's name.
    pub name: String,
    /// Its InternalIP.
    pub node_ip: Ipv4Addr,
    /// Its `spec.podCIDR`.
    pub pod_cidr: Ipv4Net,
}

/// The VTEP MAC of the node at `node_ip`: `0e:5f:` followed by the four address bytes.
///
/// Every node computes every other node's VTEP MAC from the InternalIP it already knows, so
/// nothing extra has to be published on the Node object (flannel writes its MAC into an
/// annotation, which costs a write per node and opens a window where a route exists before its
/// MAC is known). `0e` has the locally-administered bit set and the multicast bit clear, so it
/// never collides with a vendor MAC; node IPs are unique, so the MACs are too.
pub fn vtep_mac(node_ip: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = node_ip.octets();
    MacAddr([0x0e, 0x5f, a, b, c, d])
}

impl NodeNetworkConfig {
    /// Checks everything that can be checked without the kernel.
    pub fn validate(&self) -> Result<(), NodeNetworkError> {
        let bad = |reason: String| Err(NodeNetworkError::Config(reason));
        for (what, net) in [
            ("clusterCidr", self.cluster_cidr),
            ("podCidr", self.pod_cidr),
        ] {
            if net.trunc() != net {
                return bad(format!("{what} {net} has host bits set"));
            }
        }
        if !self.cluster_cidr.contains(&self.pod_cidr) {
            return bad(format!(
                "podCidr {} is not inside clusterCidr {}",
                self.pod_cidr, self.cluster_cidr
            ));
        }
        if self.pod_cidr.prefix_len() > 30 {
            return bad(format!("podCidr {} is too small for Pods", self.pod_cidr));
        }
        if self.cluster_cidr.contains(&self.node_ip) {
            return bad(format!(
                "nodeIp {} is inside clusterCidr {}",
                self.node_ip, self.cluster_cidr
            ));
        }
        check_ifname("underlay", &self.underlay)?;
        if let Backend::Vxlan(vxlan) = &self.backend {
            check_ifname("vxlan device", &vxlan.device)?;
            if vxlan.vni >= 1 << 24 {
                return bad(format!("vni {} does not fit in 24 bits", vxlan.vni));
            }
            if vxlan.port == 0 {
                return bad("vxlan port 0".to_owned());
            }
        }
        Ok(())
    }

    /// The address the VXLAN device carries: the podCIDR's network address, as a /32.
    pub fn vxlan_address(&self) -> Ipv4Net {
        Ipv4Net::from(self.pod_cidr.network())
    }
}

fn check_ifname(what: &str, name: &str) -> Result<(), NodeNetworkError> {
    let fine = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if fine {
        Ok(())
    } else {
        Err(NodeNetworkError::Config(format!(
            "{what} {name:?} is not a valid interface name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backend: Backend) -> NodeNetworkConfig {
        NodeNetworkConfig {
            node_ip: Ipv4Addr::new(172, 31, 4, 11),
            underlay: "eth0".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            backend,
        }
    }

    fn refusal(config: &NodeNetworkConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn vtep_macs_are_local_unicast_and_carry_the_node_ip() {
        let mac = vtep_mac(Ipv4Addr::new(172, 31, 4, 12));
        assert_eq!(mac.to_string(), "0e:5f:ac:1f:04:0c");
        assert_eq!(mac.0[0] & 0b01, 0, "unicast");
        assert_eq!(mac.0[0] & 0b10, 0b10, "locally administered");
        assert_ne!(mac, vtep_mac(Ipv4Addr::new(172, 31, 4, 13)));
    }

    #[test]
    fn a_sound_config_passes_and_vxlan_defaults_follow_flannel() {
        let vxlan = VxlanConfig::default();
        assert_eq!(
            (vxlan.vni, vxlan.port, vxlan.device.as_str()),
            (1, 8472, "skiff.vxlan")
        );
        config(Backend::Vxlan(vxlan)).validate().unwrap();
        config(Backend::HostGw).validate().unwrap();
        assert_eq!(
            config(Backend::HostGw).vxlan_address().to_string(),
            "10.244.1.0/32"
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_field_at_fault() {
        let mut c = config(Backend::HostGw);
        c.pod_cidr = "10.245.1.0/24".parse().unwrap();
        assert!(refusal(&c).contains("not inside clusterCidr"));
        c.pod_cidr = "10.244.1.7/24".parse().unwrap();
        assert!(refusal(&c).contains("host bits"));
        c = config(Backend::HostGw);
        c.node_ip = Ipv4Addr::new(10, 244, 9, 9);
        assert!(refusal(&c).contains("nodeIp"));
        c = config(Backend::HostGw);
        c.underlay = "a-very-long-interface".into();
        assert!(refusal(&c).contains("underlay"));
        c = config(Backend::Vxlan(VxlanConfig {
            vni: 1 << 24,
            ..VxlanConfig::default()
        }));
        assert!(refusal(&c).contains("24 bits"));
        c.backend = Backend::Vxlan(VxlanConfig {
            device: "bad name".into(),
            ..VxlanConfig::default()
        });
        assert!(refusal(&c).contains("vxlan device"));
    }

    #[test]
    fn the_config_reads_from_json_with_vxlan_defaults_filled_in() {
        let c: NodeNetworkConfig = serde_json::from_str(
            r#"{"nodeIp":"172.31.4.11","underlay":"eth0","clusterCidr":"10.244.0.0/16",
                "podCidr":"10.244.1.0/24","backend":{"type":"vxlan","vni":7}}"#,
        )
        .unwrap();
        assert_eq!(
            c.backend,
            Backend::Vxlan(VxlanConfig {
                vni: 7,
                ..VxlanConfig::default()
            })
        );
        let c: NodeNetworkConfig = serde_json::from_str(
            r#"{"nodeIp":"172.31.4.11","underlay":"eth0","clusterCidr":"10.244.0.0/16",
                "podCidr":"10.244.1.0/24","backend":{"type":"host-gw"}}"#,
        )
        .unwrap();
        assert_eq!(c.backend, Backend::HostGw);
    }
}
