//! The `LbMaps` seam: the only door between the eBPF data plane and its kernel maps.
//!
//! The data plane decides *what* the maps must hold; this door only reads them whole
//! ([`LbMaps::dump`], used to adopt what a previous agent left pinned) and writes or deletes
//! single entries. The real door ([`AyaLbMaps`]) speaks bpf syscalls through aya; the fakes
//! (`super::fake`) keep the entries in memory, log every write, and can fail on purpose.
//!
//! The affinity LRU is the kernel's to fill, so it is not part of [`LbState`]; the one thing
//! the proxy does to it is [`MapWrite::ClearAffinity`]: forget a Service's clients when its
//! affinity is switched off or it goes, so that an id handed to another Service later starts
//! with no pins.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use skiff_ebpf_common::{
    AFFINITY_MAP, AFFINITY_MATCH_MAP, AffinityKey, AffinityMatchKey, AffinityValue, BACKENDS_MAP,
    L4Addr, SERVICES_MAP, SLOTS_MAP, ServiceKey, ServiceValue, SlotKey,
};

/// Everything the socket load balancer's maps hold that the proxy writes (the reverse-NAT and
/// affinity LRUs aside: the kernel fills them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    /// `SKIFF_SERVICES`.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `SKIFF_SLOTS`.
    pub slots: BTreeMap<SlotKey, u32>,
    /// `SKIFF_BACKENDS`.
    pub backends: BTreeMap<u32, L4Addr>,
    /// `SKIFF_AFFINITY_MATCH`.
    pub affinity_match: BTreeMap<AffinityMatchKey, u32>,
}

impl LbState {
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
pub enum MapWrite {
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

/// Why a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LbMapsError {
    /// The kernel refused a map operation.
    #[error("cannot {op} in map {map}")]
    Map {
        /// What was tried.
        op: &'static str,
        /// The map's name.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// A faulty fake map failed on purpose.
    #[error("injected failure on write {0}")]
    Injected(usize),
}

/// Reads and writes the socket load balancer's maps.
pub trait LbMaps: Send {
    /// Everything the maps hold now.
    fn dump(&self) -> Result<LbState, LbMapsError>;
    /// Writes or deletes one entry.
    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError>;
}

/// The kernel's maps, through aya.
#[derive(Debug)]
pub struct AyaLbMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, L4Addr>,
    affinity_match: HashMap<MapData, AffinityMatchKey, u32>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
}

impl AyaLbMaps {
    /// Wraps the maps (taken from a loaded object, or opened from their pins).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, u32>,
        backends: HashMap<MapData, u32, L4Addr>,
        affinity_match: HashMap<MapData, AffinityMatchKey, u32>,
        affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    ) -> Self {
        AyaLbMaps {
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

pub(crate) fn dump_map<K: aya::Pod + Ord, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, LbMapsError> {
    map.iter()
        .map(|entry| {
            entry.map_err(|source| LbMapsError::Map {
                op: "read",
                map: name,
                source,
            })
        })
        .collect()
}

impl LbMaps for AyaLbMaps {
    fn dump(&self) -> Result<LbState, LbMapsError> {
        Ok(LbState {
            services: dump_map(&self.services, SERVICES_MAP)?,
            slots: dump_map(&self.slots, SLOTS_MAP)?,
            backends: dump_map(&self.backends, BACKENDS_MAP)?,
            affinity_match: dump_map(&self.affinity_match, AFFINITY_MATCH_MAP)?,
        })
    }

    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError> {
        let (result, op, map) = match write {
            MapWrite::PutService(k, v) => (self.services.insert(k, v, 0), "write", SERVICES_MAP),
            MapWrite::DeleteService(k) => (self.services.remove(&k), "delete", SERVICES_MAP),
            MapWrite::PutSlot(k, v) => (self.slots.insert(k, v, 0), "write", SLOTS_MAP),
            MapWrite::DeleteSlot(k) => (self.slots.remove(&k), "delete", SLOTS_MAP),
            MapWrite::PutBackend(k, v) => (self.backends.insert(k, v, 0), "write", BACKENDS_MAP),
            MapWrite::DeleteBackend(k) => (self.backends.remove(&k), "delete", BACKENDS_MAP),
            MapWrite::PutAffinityMatch(k, v) => (
                self.affinity_match.insert(k, v, 0),
                "write",
                AFFINITY_MATCH_MAP,
            ),
            MapWrite::DeleteAffinityMatch(k) => {
                (self.affinity_match.remove(&k), "delete", AFFINITY_MATCH_MAP)
            }
            MapWrite::ClearAffinity(id) => (self.clear_affinity(id), "clear", AFFINITY_MAP),
        };
        result.map_err(|source| LbMapsError::Map { op, map, source })
    }
}
