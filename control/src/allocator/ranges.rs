//! The ranges Services are allocated from.

use std::ops::RangeInclusive;

use ipnet::Ipv4Net;

/// `--service-cluster-ip-range` and `--service-node-port-range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    /// ClusterIPs (default 10.96.0.0/12).
    pub cluster_ip: Ipv4Net,
    /// nodePorts (default 30000-32767).
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            cluster_ip: "10.96.0.0/12".parse().expect("a valid CIDR"),
            node_ports: 30000..=32767,
        }
    }
}

impl ServiceRanges {
    /// Parses `30000-32767`.
    pub fn parse_ports(text: &str) -> Result<RangeInclusive<u16>, String> {
        let (a, b) = text
            .split_once('-')
            .ok_or_else(|| format!("{text:?} is not a range like 30000-32767"))?;
        let a: u16 = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not a port"))?;
        let b: u16 = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not a port"))?;
        if a == 0 || a > b {
            return Err(format!("{text:?} is not a range of ports"));
        }
        Ok(a..=b)
    }
}
