//! The socket load balancer's maps: what they hold ([`SocketLbState`]), the writes that change
//! them, and the real door to them ([`AyaSocketLbMaps`]).
//!
//! The affinity LRU is the kernel's to fill, so it is not part of [`SocketLbState`]; the one thing
//! the proxy does to it is [`SocketLbWrite::ClearAffinity`]: forget a Service's clients when its
//! affinity is switched off or it goes, so that an id handed to another Service later starts
//! with no pins.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{HashMap, MapData, MapError};
use skiff_ebpf_common::{
    AFFINITY_MAP, AFFINITY_MATCH_MAP, AffinityKey, AffinityMatchKey, AffinityValue, BACKENDS_MAP,
    L4Addr, SERVICES_MAP, SLOTS_MAP, ServiceKey, ServiceValue, SlotKey,
};

use crate::ebpf::door::{MapDoor, MapDoorError, dump_map};
use crate::ebpf::fake::{FakeMaps, KernelFilled};
use crate::ebpf::incremental::{ServiceEntries, frontends_of, replace_entries, slots_of};
use crate::ebpf::plane::MapState;

/// Everything the socket load balancer's maps hold that the proxy writes (the reverse-NAT and
/// affinity LRUs aside: the kernel fills them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SocketLbState {
    /// `SKIFF_SERVICES`.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `SKIFF_SLOTS`.
    pub slots: BTreeMap<SlotKey, u32>,
    /// `SKIFF_BACKENDS`.
    pub backends: BTreeMap<u32, L4Addr>,
    /// `SKIFF_AFFINITY_MATCH`.
    pub affinity_match: BTreeMap<AffinityMatchKey, u32>,
}

impl SocketLbState {
    /// Entries in all four maps.
    pub fn len(&self) -> usize {
        self.services.len() + self.slots.len() + self.backends.len() + self.affinity_match.len()
    }

    /// Are all four maps empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry written or deleted (or one Service's affinity entries forgotten).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketLbWrite {
    /// A Service frontend written.
    PutService(ServiceKey, ServiceValue),
    /// A Service frontend deleted.
    DeleteService(ServiceKey),
    /// A slot written.
    PutSlot(SlotKey, u32),
    /// A slot deleted.
    DeleteSlot(SlotKey),
    /// A backend written.
    PutBackend(u32, L4Addr),
    /// A backend deleted.
    DeleteBackend(u32),
    /// Which slot lists of a Service hold a backend, written.
    PutAffinityMatch(AffinityMatchKey, u32),
    /// A backend no longer in any slot list of a Service with affinity.
    DeleteAffinityMatch(AffinityMatchKey),
    /// Every client pin of this service id deleted.
    ClearAffinity(u32),
}

impl MapState for SocketLbState {
    type Write = SocketLbWrite;

    fn apply(&mut self, write: SocketLbWrite) {
        match write {
            SocketLbWrite::PutService(k, v) => _ = self.services.insert(k, v),
            SocketLbWrite::DeleteService(k) => _ = self.services.remove(&k),
            SocketLbWrite::PutSlot(k, v) => _ = self.slots.insert(k, v),
            SocketLbWrite::DeleteSlot(k) => _ = self.slots.remove(&k),
            SocketLbWrite::PutBackend(k, v) => _ = self.backends.insert(k, v),
            SocketLbWrite::DeleteBackend(k) => _ = self.backends.remove(&k),
            SocketLbWrite::PutAffinityMatch(k, v) => _ = self.affinity_match.insert(k, v),
            SocketLbWrite::DeleteAffinityMatch(k) => _ = self.affinity_match.remove(&k),
            SocketLbWrite::ClearAffinity(_) => {}
        }
    }

    fn entries(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("services", self.services.len()),
            ("slots", self.slots.len()),
            ("backends", self.backends.len()),
            ("affinity_matches", self.affinity_match.len()),
        ])
    }
}

impl ServiceEntries for SocketLbState {
    fn frontends(&self) -> &BTreeMap<ServiceKey, ServiceValue> {
        &self.services
    }

    /// Frontends, slots and affinity matches; backends are shared, so not among them.
    fn owned_by(&self, ids: &BTreeSet<u32>) -> Self {
        SocketLbState {
            services: frontends_of(&self.services, ids),
            slots: slots_of(&self.slots, ids),
            backends: BTreeMap::new(),
            affinity_match: self
                .affinity_match
                .iter()
                .filter(|(k, _)| ids.contains(&k.service_id))
                .map(|(k, v)| (*k, *v))
                .collect(),
        }
    }

    fn replace(&mut self, before: &Self, after: &Self) {
        replace_entries(&mut self.services, &before.services, &after.services);
        replace_entries(&mut self.slots, &before.slots, &after.slots);
        replace_entries(
            &mut self.affinity_match,
            &before.affinity_match,
            &after.affinity_match,
        );
        replace_entries(&mut self.backends, &before.backends, &after.backends);
    }
}

/// The affinity LRU as a fake keeps it: the kernel fills it; tests put pins here to see them
/// cleared.
pub type AffinityPins = BTreeMap<AffinityKey, AffinityValue>;

impl KernelFilled<SocketLbWrite> for AffinityPins {
    fn saw(&mut self, write: SocketLbWrite) {
        if let SocketLbWrite::ClearAffinity(id) = write {
            self.retain(|k, _| k.service_id != id);
        }
    }
}

/// In-memory socket maps, for tests.
pub type FakeSocketLbMaps = FakeMaps<SocketLbState, AffinityPins>;

/// The kernel's maps, through aya.
#[derive(Debug)]
pub struct AyaSocketLbMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, L4Addr>,
    affinity_match: HashMap<MapData, AffinityMatchKey, u32>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
}

impl AyaSocketLbMaps {
    /// Wraps the maps (taken from a loaded object, or opened from their pins).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, u32>,
        backends: HashMap<MapData, u32, L4Addr>,
        affinity_match: HashMap<MapData, AffinityMatchKey, u32>,
        affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    ) -> Self {
        AyaSocketLbMaps {
            services,
            slots,
            backends,
            affinity_match,
            affinity,
        }
    }

    /// Deletes every affinity entry of `service_id`; entries the LRU evicts meanwhile are fine.
    fn clear_affinity(&mut self, service_id: u32) -> Result<(), MapError> {
        let mut keys = Vec::new();
        for key in self.affinity.keys() {
            let key = key?;
            if key.service_id == service_id {
                keys.push(key);
            }
        }
        for key in keys {
            match self.affinity.remove(&key) {
                Err(MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }
}

impl MapDoor<SocketLbState> for AyaSocketLbMaps {
    fn dump(&self) -> Result<SocketLbState, MapDoorError> {
        Ok(SocketLbState {
            services: dump_map(&self.services, SERVICES_MAP)?,
            slots: dump_map(&self.slots, SLOTS_MAP)?,
            backends: dump_map(&self.backends, BACKENDS_MAP)?,
            affinity_match: dump_map(&self.affinity_match, AFFINITY_MATCH_MAP)?,
        })
    }

    fn apply(&mut self, write: SocketLbWrite) -> Result<(), MapDoorError> {
        let (result, op, map) = match write {
            SocketLbWrite::PutService(k, v) => {
                (self.services.insert(k, v, 0), "write", SERVICES_MAP)
            }
            SocketLbWrite::DeleteService(k) => (self.services.remove(&k), "delete", SERVICES_MAP),
            SocketLbWrite::PutSlot(k, v) => (self.slots.insert(k, v, 0), "write", SLOTS_MAP),
            SocketLbWrite::DeleteSlot(k) => (self.slots.remove(&k), "delete", SLOTS_MAP),
            SocketLbWrite::PutBackend(k, v) => {
                (self.backends.insert(k, v, 0), "write", BACKENDS_MAP)
            }
            SocketLbWrite::DeleteBackend(k) => (self.backends.remove(&k), "delete", BACKENDS_MAP),
            SocketLbWrite::PutAffinityMatch(k, v) => (
                self.affinity_match.insert(k, v, 0),
                "write",
                AFFINITY_MATCH_MAP,
            ),
            SocketLbWrite::DeleteAffinityMatch(k) => {
                (self.affinity_match.remove(&k), "delete", AFFINITY_MATCH_MAP)
            }
            SocketLbWrite::ClearAffinity(id) => (self.clear_affinity(id), "clear", AFFINITY_MAP),
        };
        result.map_err(|source| MapDoorError::Map { op, map, source })
    }
}
