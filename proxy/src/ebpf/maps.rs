//! The `LbMaps` seam: the only door between the eBPF data plane and its kernel maps.
//!
//! The data plane decides *what* the maps must hold; this door only reads them whole ([`LbMaps::dump`],
//! used to adopt what a previous agent left pinned) and writes or deletes single entries. The
//! real door ([`AyaLbMaps`]) speaks bpf syscalls through aya; the fake ([`FakeLbMaps`]) keeps
//! the entries in memory and logs every write, so tests can assert that a sync touched only
//! what changed, and can be told to fail after N writes, like Cilium's faulty maps.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};
use skiff_ebpf_common::{L4Addr, ServiceKey, ServiceValue, SlotKey};

/// Everything the socket load balancer's maps hold (the reverse-NAT LRU aside: the kernel
/// fills it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbState {
    /// `SKIFF_SERVICES`.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `SKIFF_SLOTS`.
    pub slots: BTreeMap<SlotKey, u32>,
    /// `SKIFF_BACKENDS`.
    pub backends: BTreeMap<u32, L4Addr>,
}

impl LbState {
    /// Entries in all three maps.
    pub fn len(&self) -> usize {
        self.services.len() + self.slots.len() + self.backends.len()
    }

    /// Are all three maps empty?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One entry written or deleted.
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

/// In-memory maps that log every write; optionally fail from the Nth write on.
#[derive(Clone, Debug, Default)]
pub struct FakeLbMaps {
    /// What the maps hold.
    pub state: LbState,
    /// Every write applied, in order.
    pub writes: Vec<MapWrite>,
    /// Fail every write once this many have succeeded (a faulty map).
    pub fail_after: Option<usize>,
}

impl LbMaps for FakeLbMaps {
    fn dump(&self) -> Result<LbState, LbMapsError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError> {
        if self.fail_after.is_some_and(|n| self.writes.len() >= n) {
            return Err(LbMapsError::Injected(self.writes.len()));
        }
        let state = &mut self.state;
        match write {
            MapWrite::PutService(k, v) => _ = state.services.insert(k, v),
            MapWrite::DeleteService(k) => _ = state.services.remove(&k),
            MapWrite::PutSlot(k, v) => _ = state.slots.insert(k, v),
            MapWrite::DeleteSlot(k) => _ = state.slots.remove(&k),
            MapWrite::PutBackend(k, v) => _ = state.backends.insert(k, v),
            MapWrite::DeleteBackend(k) => _ = state.backends.remove(&k),
        }
        self.writes.push(write);
        Ok(())
    }
}

/// The kernel's maps, through aya.
#[derive(Debug)]
pub struct AyaLbMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, L4Addr>,
}

impl AyaLbMaps {
    /// Wraps the three maps (taken from a loaded object, or opened from their pins).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, u32>,
        backends: HashMap<MapData, u32, L4Addr>,
    ) -> Self {
        AyaLbMaps {
            services,
            slots,
            backends,
        }
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
        use skiff_ebpf_common::{BACKENDS_MAP, SERVICES_MAP, SLOTS_MAP};
        Ok(LbState {
            services: dump_map(&self.services, SERVICES_MAP)?,
            slots: dump_map(&self.slots, SLOTS_MAP)?,
            backends: dump_map(&self.backends, BACKENDS_MAP)?,
        })
    }

    fn apply(&mut self, write: MapWrite) -> Result<(), LbMapsError> {
        use skiff_ebpf_common::{BACKENDS_MAP, SERVICES_MAP, SLOTS_MAP};
        let (result, op, map) = match write {
            MapWrite::PutService(k, v) => (self.services.insert(k, v, 0), "write", SERVICES_MAP),
            MapWrite::DeleteService(k) => (self.services.remove(&k), "delete", SERVICES_MAP),
            MapWrite::PutSlot(k, v) => (self.slots.insert(k, v, 0), "write", SLOTS_MAP),
            MapWrite::DeleteSlot(k) => (self.slots.remove(&k), "delete", SLOTS_MAP),
            MapWrite::PutBackend(k, v) => (self.backends.insert(k, v, 0), "write", BACKENDS_MAP),
            MapWrite::DeleteBackend(k) => (self.backends.remove(&k), "delete", BACKENDS_MAP),
        };
        result.map_err(|source| LbMapsError::Map { op, map, source })
    }
}
