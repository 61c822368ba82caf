//! `skiff-proxy explain` in eBPF mode: what this node's maps do with a connection.
//!
//! Like the iptables explanation it reads the kernel's state, not the proxy's memory: the maps
//! pinned under the pin folder, opened read-side by path, so it works while the proxy is down.
//! Two paths are explained: a connect from a Pod or the node (the socket programs, through
//! [`trace`]), and a packet from another machine (the TC programs).

use std::fmt::Write;
use std::net::SocketAddrV4;
use std::path::Path;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, Map, MapData};
use skiff_ebpf_common::nodeport::{
    EXT_FLAG_SNAT, EXT_SERVICES_MAP, EXT_SLOT_LOCAL, EXT_SLOTS_MAP, EXT_SOURCES_MAP,
};
use skiff_ebpf_common::{
    AFFINITY_MAP, AFFINITY_MATCH_MAP, BACKENDS_MAP, SERVICES_MAP, SLOTS_MAP, ServiceKey, SlotKey,
};

use super::external::{AyaExternalMaps, ExternalState};
use super::socket_lb::plan::ip_protocol;
use super::socket_lb::trace::{Outcome, socket_addr, trace};
use super::socket_lb::{AyaSocketLbMaps, SocketLbState};
use super::{MapDoor, MapDoorError};
use crate::model::Protocol;

/// Why the pinned maps could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MapsExplainError {
    /// A pin is missing or not the map expected.
    #[error(
        "cannot open the pinned map {path}: {source} (is the eBPF proxy running here, with this --bpf-pin-dir?)"
    )]
    Open {
        /// The pin.
        path: String,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// Reading a map failed.
    #[error(transparent)]
    Read(#[from] MapDoorError),
}

fn pinned<K: aya::Pod, V: aya::Pod>(
    pin_dir: &Path,
    name: &str,
) -> Result<HashMap<MapData, K, V>, MapsExplainError> {
    let path = pin_dir.join(name);
    let open = || -> Result<HashMap<MapData, K, V>, aya::maps::MapError> {
        HashMap::try_from(Map::from_map_data(MapData::from_pin(&path)?)?)
    };
    open().map_err(|source| MapsExplainError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// Reads both map sets from their pins under `pin_dir`.
pub fn read_pinned(pin_dir: &Path) -> Result<(SocketLbState, ExternalState), MapsExplainError> {
    let lb = AyaSocketLbMaps::new(
        pinned(pin_dir, SERVICES_MAP)?,
        pinned(pin_dir, SLOTS_MAP)?,
        pinned(pin_dir, BACKENDS_MAP)?,
        pinned(pin_dir, AFFINITY_MATCH_MAP)?,
        pinned(pin_dir, AFFINITY_MAP)?,
    );
    let sources_path = pin_dir.join(EXT_SOURCES_MAP);
    let open_sources = || -> Result<_, aya::maps::MapError> {
        LpmTrie::try_from(Map::from_map_data(MapData::from_pin(&sources_path)?)?)
    };
    let sources = open_sources().map_err(|source| MapsExplainError::Open {
        path: sources_path.display().to_string(),
        source,
    })?;
    let ext = AyaExternalMaps::new(
        pinned(pin_dir, EXT_SERVICES_MAP)?,
        pinned(pin_dir, EXT_SLOTS_MAP)?,
        sources,
    );
    Ok((lb.dump()?, ext.dump()?))
}

/// Explains a connection to `target` over `protocol` with the maps holding `lb` and `ext`.
pub fn explain(
    lb: &SocketLbState,
    ext: &ExternalState,
    target: SocketAddrV4,
    protocol: Protocol,
) -> String {
    let mut out = String::new();
    let proto = protocol.to_string().to_lowercase();
    let _ = writeln!(out, "{proto} {target} (eBPF data plane)");
    let _ = writeln!(out, "from a Pod or this node (socket programs):");
    match trace(lb, target, protocol) {
        Outcome::Untouched => {
            let _ = writeln!(
                out,
                "  not a Service frontend: the connect goes on untranslated"
            );
            let _ = writeln!(out, "  verdict: untouched");
        }
        Outcome::Refused => {
            let _ = writeln!(
                out,
                "  a Service without endpoints: connect fails (ECONNREFUSED)"
            );
            let _ = writeln!(out, "  verdict: rejected");
        }
        Outcome::Dropped => {
            let _ = writeln!(out, "  endpoints exist, none for this traffic here: EPERM");
            let _ = writeln!(out, "  verdict: dropped");
        }
        Outcome::Balanced {
            backends,
            affinity_seconds,
        } => {
            for backend in &backends {
                let _ = writeln!(out, "  endpoint: {backend}");
            }
            if let Some(seconds) = affinity_seconds {
                let _ = writeln!(out, "  sessionAffinity: ClientIP for {seconds}s");
            }
            let _ = writeln!(out, "  verdict: accepted");
        }
    }
    let _ = writeln!(
        out,
        "from another machine (TC programs on the node's interfaces):"
    );
    let key = ip_protocol(protocol)
        .map(|p| ServiceKey::new(target.ip().octets(), target.port(), p))
        .and_then(|key| ext.services.get(&key));
    match key {
        None => {
            let _ = writeln!(out, "  not an external frontend here: passed on untouched");
        }
        Some(value) if value.backend_count == 0 => {
            let _ = writeln!(out, "  no endpoint for external traffic here: dropped");
        }
        Some(value) => {
            if value.flags & skiff_ebpf_common::SERVICE_FLAG_AFFINITY != 0 {
                let seconds = value.affinity_seconds;
                let _ = writeln!(out, "  sessionAffinity: ClientIP for {seconds}s");
            }
            for slot in 0..value.backend_count {
                let key = SlotKey {
                    service_id: value.service_id,
                    slot,
                };
                if let Some(slot) = ext.slots.get(&key) {
                    let nat = if slot.flags & EXT_SLOT_LOCAL != 0 {
                        "local, client address kept"
                    } else if value.flags & EXT_FLAG_SNAT != 0 {
                        "remote, source NATed to this node"
                    } else {
                        "remote, client address kept"
                    };
                    let _ = writeln!(out, "  endpoint: {} ({nat})", socket_addr(&slot.backend));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::ebpf::external::ExternalPlanner;
    use crate::ebpf::plane::Planner;
    use crate::ebpf::socket_lb::SocketLbPlanner;
    use crate::model::{
        DesiredService, DesiredState, EndpointAddr, NodeFacts, ServicePort, ServicePortName,
    };

    #[test]
    fn both_paths_are_explained_from_map_contents() {
        let endpoint = |last, local| EndpointAddr {
            ip: Ipv4Addr::new(10, 244, 1, last),
            port: 8080,
            local,
        };
        let mut desired = DesiredState {
            node: NodeFacts {
                ips: vec![Ipv4Addr::new(192, 0, 2, 11)],
                ..NodeFacts::default()
            },
            ..DesiredState::default()
        };
        desired.services.insert(
            ServicePortName::new("ns", "web", "", Protocol::Tcp),
            DesiredService {
                port: ServicePort {
                    cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
                    port: 80,
                    node_port: Some(30080),
                    ..ServicePort::default()
                },
                internal_endpoints: vec![endpoint(1, true), endpoint(2, false)],
                external_endpoints: vec![endpoint(1, true), endpoint(2, false)],
                has_endpoints: true,
                local_ready: 1,
            },
        );
        let lb = SocketLbPlanner::plan(&desired, &SocketLbState::default());
        let ext = ExternalPlanner::plan(&desired, &ExternalState::default());
        let cluster_ip = explain(&lb, &ext, "10.96.0.10:80".parse().unwrap(), Protocol::Tcp);
        assert!(
            cluster_ip.contains("  endpoint: 10.244.1.1:8080\n"),
            "{cluster_ip}"
        );
        assert!(cluster_ip.contains("verdict: accepted"), "{cluster_ip}");
        assert!(
            cluster_ip.contains("not an external frontend"),
            "{cluster_ip}"
        );
        let node_port = explain(
            &lb,
            &ext,
            "192.0.2.11:30080".parse().unwrap(),
            Protocol::Tcp,
        );
        assert!(
            node_port.contains("endpoint: 10.244.1.1:8080 (local, client address kept)"),
            "{node_port}"
        );
        assert!(
            node_port.contains("endpoint: 10.244.1.2:8080 (remote, source NATed to this node)"),
            "{node_port}"
        );
        let nothing = explain(&lb, &ext, "10.96.0.99:80".parse().unwrap(), Protocol::Tcp);
        assert!(nothing.contains("verdict: untouched"), "{nothing}");
    }
}
