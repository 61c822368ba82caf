//! The `ExtMaps` seam: the NodePort data path's door to its two kernel maps, real or fake.

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData};
use ipnet::Ipv4Net;
use skiff_ebpf_common::nodeport::{
    EXT_SERVICES_MAP, EXT_SLOTS_MAP, EXT_SOURCES_MAP, ExtSlot, SourceRange,
};
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
            ExtWrite::PutSource(id, range) => _ = state.sources.insert((id, range)),
            ExtWrite::DeleteSource(id, range) => _ = state.sources.remove(&(id, range)),
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
    sources: LpmTrie<MapData, SourceRange, u32>,
}

impl AyaExtMaps {
    /// Wraps the three maps (taken from a loaded object, or opened from their pins).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, ExtSlot>,
        sources: LpmTrie<MapData, SourceRange, u32>,
    ) -> Self {
        AyaExtMaps {
            services,
            slots,
            sources,
        }
    }
}

/// The trie key of `range` for external Service `id`.
fn source_key(id: u32, range: Ipv4Net) -> Key<SourceRange> {
    Key::new(
        32 + u32::from(range.prefix_len()),
        SourceRange::new(id, range.network().octets()),
    )
}

impl ExtMaps for AyaExtMaps {
    fn dump(&self) -> Result<ExtState, LbMapsError> {
        let mut sources = std::collections::BTreeSet::new();
        for key in self.sources.keys() {
            let key = key.map_err(|source| LbMapsError::Map {
                op: "read",
                map: EXT_SOURCES_MAP,
                source,
            })?;
            let data = key.data();
            let len = key.prefix_len().saturating_sub(32).min(32) as u8;
            let addr = std::net::Ipv4Addr::from(data.addr.to_ne_bytes());
            let range = Ipv4Net::new(addr, len).expect("a length of at most 32");
            sources.insert((u32::from_be(data.service_id_be), range));
        }
        Ok(ExtState {
            services: dump_map(&self.services, EXT_SERVICES_MAP)?,
            slots: dump_map(&self.slots, EXT_SLOTS_MAP)?,
            sources,
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
            ExtWrite::PutSource(id, range) => (
                self.sources.insert(&source_key(id, range), 1, 0),
                "write",
                EXT_SOURCES_MAP,
            ),
            ExtWrite::DeleteSource(id, range) => (
                self.sources.remove(&source_key(id, range)),
                "delete",
                EXT_SOURCES_MAP,
            ),
        };
        result.map_err(|source| LbMapsError::Map { op, map, source })
    }
}
