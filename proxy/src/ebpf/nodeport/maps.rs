//! The `ExtMaps` seam: the NodePort data path's door to its two kernel maps, real or fake.

use aya::maps::{HashMap, MapData};
use skiff_ebpf_common::nodeport::{EXT_SERVICES_MAP, EXT_SLOTS_MAP, ExtSlot};
use skiff_ebpf_common::{ServiceKey, ServiceValue, SlotKey};

use super::plan::{ExtState, ExtWrite};
use crate::ebpf::LbMapsError;
use crate::ebpf::maps::dump_map;

/// Reads and writes the NodePort maps.
pub trait ExtMaps: Send {
    /// Everything the maps hold now.
    fn dump(&self) -> Result<ExtState, LbMapsError>;
    /// Writes or deletes one entry.
    fn apply(&mut self, write: ExtWrite) -> Result<(), LbMapsError>;
}

/// In-memory maps that log every write; optionally fail from the Nth write on.
#[derive(Clone, Debug, Default)]
pub struct FakeExtMaps {
    /// What the maps hold.
    pub state: ExtState,
    /// Every write applied, in order.
    pub writes: Vec<ExtWrite>,
    /// Fail every write once this many have succeeded.
    pub fail_after: Option<usize>,
}

impl ExtMaps for FakeExtMaps {
    fn dump(&self) -> Result<ExtState, LbMapsError> {
        Ok(self.state.clone())
    }

    fn apply(&mut self, write: ExtWrite) -> Result<(), LbMapsError> {
        if self.fail_after.is_some_and(|n| self.writes.len() >= n) {
            return Err(LbMapsError::Injected(self.writes.len()));
        }
        let state = &mut self.state;
        match write {
            ExtWrite::PutService(k, v) => _ = state.services.insert(k, v),
            ExtWrite::DeleteService(k) => _ = state.services.remove(&k),
            ExtWrite::PutSlot(k, v) => _ = state.slots.insert(k, v),
            ExtWrite::DeleteSlot(k) => _ = state.slots.remove(&k),
        }
        self.writes.push(write);
        Ok(())
    }
}

/// The kernel's maps, through aya.
#[derive(Debug)]
pub struct AyaExtMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, ExtSlot>,
}

impl AyaExtMaps {
    /// Wraps the two maps (taken from a loaded object).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, ExtSlot>,
    ) -> Self {
        AyaExtMaps { services, slots }
    }
}

impl ExtMaps for AyaExtMaps {
    fn dump(&self) -> Result<ExtState, LbMapsError> {
        Ok(ExtState {
            services: dump_map(&self.services, EXT_SERVICES_MAP)?,
            slots: dump_map(&self.slots, EXT_SLOTS_MAP)?,
        })
    }

    fn apply(&mut self, write: ExtWrite) -> Result<(), LbMapsError> {
        let (result, op, map) = match write {
            ExtWrite::PutService(k, v) => {
                (self.services.insert(k, v, 0), "write", EXT_SERVICES_MAP)
            }
            ExtWrite::DeleteService(k) => (self.services.remove(&k), "delete", EXT_SERVICES_MAP),
            ExtWrite::PutSlot(k, v) => (self.slots.insert(k, v, 0), "write", EXT_SLOTS_MAP),
            ExtWrite::DeleteSlot(k) => (self.slots.remove(&k), "delete", EXT_SLOTS_MAP),
        };
        result.map_err(|source| LbMapsError::Map { op, map, source })
    }
}
