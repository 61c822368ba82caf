//! From a [`DesiredState`] to the map contents it needs, and from two map contents to the
//! ordered writes that turn one into the other.
//!
//! Ids are the subtle part. A Service port keeps its id for as long as any of its frontends is
//! in the maps, and a backend (address, port) keeps its id for as long as it is in the backends
//! map, so a restarted agent that adopts pinned maps computes the *same* entries and writes
//! nothing, and an endpoint change rewrites only its slots. New ids take the lowest free number.
//!
//! Order matters because the kernel reads the maps while we write them: new backends and slots
//! go in before a Service's count grows to reach them, and a count shrinks before the slots
//! and backends beyond it are deleted. A connect in between sees either the old or the new
//! Service, never a slot without a backend.

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::{
    IPPROTO_TCP, IPPROTO_UDP, L4Addr, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey, ServiceValue, SlotKey,
};

use super::maps::{LbState, MapWrite};
use crate::model::{DesiredState, Protocol};

/// The map contents `desired` needs, reusing the ids `held` already gives.
pub fn plan(desired: &DesiredState, held: &LbState) -> LbState {
    let mut ids = Ids::new(held);
    let mut want = LbState::default();
    for (name, service) in &desired.services {
        let port = &service.port;
        let Some(protocol) = ip_protocol(name.protocol) else {
            continue;
        };
        let keys: Vec<ServiceKey> = port
            .cluster_ips
            .iter()
            .map(|ip| ServiceKey::new(ip.octets(), port.port, protocol))
            .collect();
        if keys.is_empty() {
            continue;
        }
        let service_id = ids.service(&keys);
        let flags = if service.has_endpoints {
            SERVICE_FLAG_HAS_ENDPOINTS
        } else {
            0
        };
        let value = ServiceValue {
            service_id,
            backend_count: service.internal_endpoints.len() as u32,
            flags,
        };
        for key in keys {
            want.services.insert(key, value);
        }
        for (slot, ep) in service.internal_endpoints.iter().enumerate() {
            let addr = L4Addr::new(ep.ip.octets(), ep.port);
            let backend_id = ids.backend(addr);
            want.backends.insert(backend_id, addr);
            want.slots.insert(
                SlotKey {
                    service_id,
                    slot: slot as u32,
                },
                backend_id,
            );
        }
    }
    want
}

/// The socket hooks see TCP and UDP; SCTP Services are left to the kernel (not translated).
fn ip_protocol(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Sctp => None,
    }
}

/// Id allocation that prefers what the maps already hold.
struct Ids<'a> {
    held: &'a LbState,
    backend_by_addr: BTreeMap<L4Addr, u32>,
    services_taken: BTreeSet<u32>,
    backends_taken: BTreeSet<u32>,
    next_service: u32,
    next_backend: u32,
}

impl<'a> Ids<'a> {
    fn new(held: &'a LbState) -> Self {
        Ids {
            held,
            backend_by_addr: held.backends.iter().map(|(id, a)| (*a, *id)).collect(),
            services_taken: BTreeSet::new(),
            backends_taken: BTreeSet::new(),
            next_service: 1,
            next_backend: 1,
        }
    }

    fn service(&mut self, keys: &[ServiceKey]) -> u32 {
        let reuse = keys
            .iter()
            .filter_map(|k| self.held.services.get(k))
            .map(|v| v.service_id)
            .find(|id| !self.services_taken.contains(id));
        let id = reuse.unwrap_or_else(|| {
            let held_ids: BTreeSet<u32> =
                self.held.services.values().map(|v| v.service_id).collect();
            while held_ids.contains(&self.next_service)
                || self.services_taken.contains(&self.next_service)
            {
                self.next_service += 1;
            }
            self.next_service
        });
        self.services_taken.insert(id);
        id
    }

    fn backend(&mut self, addr: L4Addr) -> u32 {
        if let Some(id) = self.backend_by_addr.get(&addr) {
            self.backends_taken.insert(*id);
            return *id;
        }
        while self.held.backends.contains_key(&self.next_backend)
            || self.backends_taken.contains(&self.next_backend)
        {
            self.next_backend += 1;
        }
        let id = self.next_backend;
        self.backends_taken.insert(id);
        self.backend_by_addr.insert(addr, id);
        id
    }
}

/// The writes that turn `held` into `want`, in an order the kernel may read at any point of.
pub fn diff(held: &LbState, want: &LbState) -> Vec<MapWrite> {
    let mut writes = Vec::new();
    for (id, addr) in &want.backends {
        if held.backends.get(id) != Some(addr) {
            writes.push(MapWrite::PutBackend(*id, *addr));
        }
    }
    for (key, backend) in &want.slots {
        if held.slots.get(key) != Some(backend) {
            writes.push(MapWrite::PutSlot(*key, *backend));
        }
    }
    for (key, value) in &want.services {
        if held.services.get(key) != Some(value) {
            writes.push(MapWrite::PutService(*key, *value));
        }
    }
    for key in held.services.keys() {
        if !want.services.contains_key(key) {
            writes.push(MapWrite::DeleteService(*key));
        }
    }
    for key in held.slots.keys() {
        if !want.slots.contains_key(key) {
            writes.push(MapWrite::DeleteSlot(*key));
        }
    }
    for id in held.backends.keys() {
        if !want.backends.contains_key(id) {
            writes.push(MapWrite::DeleteBackend(*id));
        }
    }
    writes
}
