//! From a [`DesiredState`] to what the NodePort maps must hold, and the writes that get there.
//!
//! Frontends are every node address × nodePort, and every externalIP and LoadBalancer ingress
//! IP × port, each leading to the Service's *external* endpoints (only local ones under
//! `externalTrafficPolicy: Local`, which also turns source NAT off). Ids are kept from what
//! the maps hold, as in [`crate::ebpf::plan`], so a restarted agent writes nothing and an
//! endpoint change rewrites only its slots; writes are ordered so the kernel never reaches a
//! slot that is not there yet.

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::nodeport::{EXT_FLAG_SNAT, EXT_SLOT_LOCAL, ExtSlot};
use skiff_ebpf_common::{
    IPPROTO_TCP, IPPROTO_UDP, L4Addr, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey, ServiceValue, SlotKey,
};

use crate::model::{DesiredState, Protocol};

/// Everything the NodePort maps hold (the NAT table aside: the kernel fills it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExtState {
    /// `SKIFF_EXT_SERVICES`.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `SKIFF_EXT_SLOTS`.
    pub slots: BTreeMap<SlotKey, ExtSlot>,
}

/// One entry written or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtWrite {
    /// A frontend written.
    PutService(ServiceKey, ServiceValue),
    /// A frontend deleted.
    DeleteService(ServiceKey),
    /// A slot written.
    PutSlot(SlotKey, ExtSlot),
    /// A slot deleted.
    DeleteSlot(SlotKey),
}

/// The NodePort map contents `desired` needs, reusing the ids `held` gives.
pub fn plan_external(desired: &DesiredState, held: &ExtState) -> ExtState {
    let mut want = ExtState::default();
    let mut taken = BTreeSet::new();
    let held_ids: BTreeSet<u32> = held.services.values().map(|v| v.service_id).collect();
    let mut next = 1;
    for (name, service) in &desired.services {
        let protocol = match name.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => continue,
        };
        let port = &service.port;
        let mut keys = Vec::new();
        if let Some(node_port) = port.node_port {
            keys.extend(
                desired
                    .node
                    .ips
                    .iter()
                    .map(|ip| ServiceKey::new(ip.octets(), node_port, protocol)),
            );
        }
        keys.extend(
            port.external_ips
                .iter()
                .chain(&port.load_balancer_ips)
                .map(|ip| ServiceKey::new(ip.octets(), port.port, protocol)),
        );
        if keys.is_empty() {
            continue;
        }
        let reuse = keys
            .iter()
            .filter_map(|k| held.services.get(k))
            .map(|v| v.service_id)
            .find(|id| !taken.contains(id));
        let service_id = reuse.unwrap_or_else(|| {
            while held_ids.contains(&next) || taken.contains(&next) {
                next += 1;
            }
            next
        });
        taken.insert(service_id);
        let mut flags = 0;
        if service.has_endpoints {
            flags |= SERVICE_FLAG_HAS_ENDPOINTS;
        }
        if !port.external_policy_local {
            flags |= EXT_FLAG_SNAT;
        }
        let value = ServiceValue {
            service_id,
            backend_count: service.external_endpoints.len() as u32,
            flags,
            // Affinity for clients on other machines is not kept here yet.
            affinity_seconds: 0,
        };
        for key in keys {
            want.services.insert(key, value);
        }
        for (slot, ep) in service.external_endpoints.iter().enumerate() {
            want.slots.insert(
                SlotKey {
                    service_id,
                    slot: slot as u32,
                },
                ExtSlot {
                    backend: L4Addr::new(ep.ip.octets(), ep.port),
                    flags: if ep.local { EXT_SLOT_LOCAL } else { 0 },
                    pad: 0,
                },
            );
        }
    }
    want
}

/// The writes that turn `held` into `want`: slots before the counts that reach them, counts
/// that shrink before the slots beyond them go.
pub fn diff_external(held: &ExtState, want: &ExtState) -> Vec<ExtWrite> {
    let mut writes = Vec::new();
    for (key, slot) in &want.slots {
        if held.slots.get(key) != Some(slot) {
            writes.push(ExtWrite::PutSlot(*key, *slot));
        }
    }
    for (key, value) in &want.services {
        if held.services.get(key) != Some(value) {
            writes.push(ExtWrite::PutService(*key, *value));
        }
    }
    for key in held.services.keys() {
        if !want.services.contains_key(key) {
            writes.push(ExtWrite::DeleteService(*key));
        }
    }
    for key in held.slots.keys() {
        if !want.slots.contains_key(key) {
            writes.push(ExtWrite::DeleteSlot(*key));
        }
    }
    writes
}
