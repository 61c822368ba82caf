//! A readable text form of the socket load balancer's maps, for golden files and for people.
//!
//! Map entries are keyed by ids and hold addresses in network byte order, which no reviewer
//! can check by eye; this groups them by Service instead — each Service's frontends, then its
//! slots with the backend each names, then its affinity matches — and lists the backends last.
//! One line per entry, so a diff of two dumps is a diff of map writes.
//!
//! ```text
//! svc 1 default/web:http/tcp
//!   tcp 10.96.0.10:80 -> svc 1 count 2 flags has-endpoints,affinity(10800s)
//!   slot 0 -> backend 1 10.244.1.10:8080
//!   slot 1 -> backend 2 10.244.2.10:8080
//!   match backend 1 10.244.1.10:8080 internal
//!   match backend 2 10.244.2.10:8080 internal
//! backends
//!   1 10.244.1.10:8080
//!   2 10.244.2.10:8080
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use skiff_ebpf_common::{
    AFFINITY_MATCH_EXTERNAL, AFFINITY_MATCH_INTERNAL, EXTERNAL_SLOT_BASE, SERVICE_FLAG_AFFINITY,
    SERVICE_FLAG_EXTERNAL_SLOTS, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey, ServiceValue,
};

use super::maps::SocketLbState;
use super::plan::ip_protocol;
use super::trace::{show_key, socket_addr};
use crate::model::DesiredState;

/// The name of each service id in `state`, found through the cluster IPs `desired` gives.
pub fn service_names(desired: &DesiredState, state: &SocketLbState) -> BTreeMap<u32, String> {
    let mut names = BTreeMap::new();
    for (name, service) in &desired.services {
        let Some(protocol) = ip_protocol(name.protocol) else {
            continue;
        };
        for ip in &service.port.cluster_ips {
            let key = ServiceKey::new(ip.octets(), service.port.port, protocol);
            if let Some(value) = state.services.get(&key) {
                names.insert(value.service_id, name.to_string());
            }
        }
    }
    names
}

/// The dump of `state`, naming services from `names` (see [`service_names`]).
pub fn dump(state: &SocketLbState, names: &BTreeMap<u32, String>) -> String {
    let ids: BTreeSet<u32> = state
        .services
        .values()
        .map(|v| v.service_id)
        .chain(state.slots.keys().map(|k| k.service_id))
        .chain(state.affinity_match.keys().map(|k| k.service_id))
        .collect();
    let mut out = String::new();
    for id in ids {
        let name = names.get(&id).map_or("(unnamed)", String::as_str);
        _ = writeln!(out, "svc {id} {name}");
        let mut frontends: Vec<(&ServiceKey, &ServiceValue)> = state
            .services
            .iter()
            .filter(|(_, v)| v.service_id == id)
            .collect();
        frontends.sort_by_key(|(k, _)| (k.addr.to_ne_bytes(), u16::from_be(k.port), k.protocol));
        for (key, value) in frontends {
            _ = writeln!(
                out,
                "  {} -> svc {} count {} flags {}",
                show_key(key),
                value.service_id,
                value.backend_count,
                flags(value)
            );
        }
        for (key, backend) in state.slots.iter().filter(|(k, _)| k.service_id == id) {
            let slot = if key.slot >= EXTERNAL_SLOT_BASE {
                format!("ext-slot {}", key.slot - EXTERNAL_SLOT_BASE)
            } else {
                format!("slot {}", key.slot)
            };
            _ = writeln!(
                out,
                "  {slot} -> backend {backend} {}",
                backend_addr(state, *backend)
            );
        }
        for (key, lists) in state
            .affinity_match
            .iter()
            .filter(|(k, _)| k.service_id == id)
        {
            let mut names = Vec::new();
            if lists & AFFINITY_MATCH_INTERNAL != 0 {
                names.push("internal");
            }
            if lists & AFFINITY_MATCH_EXTERNAL != 0 {
                names.push("external");
            }
            _ = writeln!(
                out,
                "  match backend {} {} {}",
                key.backend_id,
                backend_addr(state, key.backend_id),
                names.join(",")
            );
        }
    }
    out.push_str("backends\n");
    for (id, addr) in &state.backends {
        _ = writeln!(out, "  {id} {}", socket_addr(addr));
    }
    out
}

fn backend_addr(state: &SocketLbState, id: u32) -> String {
    state
        .backends
        .get(&id)
        .map_or_else(|| "(missing)".to_owned(), |a| socket_addr(a).to_string())
}

fn flags(value: &ServiceValue) -> String {
    let mut names = Vec::new();
    if value.flags & SERVICE_FLAG_HAS_ENDPOINTS != 0 {
        names.push("has-endpoints".to_owned());
    }
    if value.flags & SERVICE_FLAG_AFFINITY != 0 {
        names.push(format!("affinity({}s)", value.affinity_seconds));
    }
    if value.flags & SERVICE_FLAG_EXTERNAL_SLOTS != 0 {
        names.push("external-slots".to_owned());
    }
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(",")
    }
}
