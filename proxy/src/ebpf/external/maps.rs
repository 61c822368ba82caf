//! The external-traffic maps as a [`MapState`], and the real door to them.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData};
use ipnet::Ipv4Net;
use skiff_ebpf_common::nodeport::{
    EXT_SERVICES_MAP, EXT_SLOTS_MAP, EXT_SOURCES_MAP, ExtSlot, SourceRange,
};
use skiff_ebpf_common::{ServiceKey, ServiceValue, SlotKey};

use super::plan::{ExternalState, ExternalWrite};
use crate::ebpf::door::{MapDoor, MapDoorError, dump_map};
use crate::ebpf::fake::FakeMaps;
use crate::ebpf::incremental::{ServiceEntries, frontends_of, replace_entries, slots_of};
use crate::ebpf::plane::MapState;

impl MapState for ExternalState {
    type Write = ExternalWrite;

    fn apply(&mut self, write: ExternalWrite) {
        match write {
            ExternalWrite::PutService(k, v) => _ = self.services.insert(k, v),
            ExternalWrite::DeleteService(k) => _ = self.services.remove(&k),
            ExternalWrite::PutSlot(k, v) => _ = self.slots.insert(k, v),
            ExternalWrite::DeleteSlot(k) => _ = self.slots.remove(&k),
            ExternalWrite::PutSource(id, range) => _ = self.sources.insert((id, range)),
            ExternalWrite::DeleteSource(id, range) => _ = self.sources.remove(&(id, range)),
        }
    }

    fn entries(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("ext_services", self.services.len()),
            ("ext_slots", self.slots.len()),
        ])
    }
}

impl ServiceEntries for ExternalState {
    fn frontends(&self) -> &BTreeMap<ServiceKey, ServiceValue> {
        &self.services
    }

    fn owned_by(&self, ids: &BTreeSet<u32>) -> Self {
        ExternalState {
            services: frontends_of(&self.services, ids),
            slots: slots_of(&self.slots, ids),
            sources: ids
                .iter()
                .flat_map(|id| {
                    self.sources
                        .range((*id, Ipv4Net::default())..)
                        .take_while(move |(owner, _)| owner == id)
                        .copied()
                })
                .collect(),
        }
    }

    fn replace(&mut self, before: &Self, after: &Self) {
        replace_entries(&mut self.services, &before.services, &after.services);
        replace_entries(&mut self.slots, &before.slots, &after.slots);
        for source in &before.sources {
            self.sources.remove(source);
        }
        self.sources.extend(&after.sources);
    }
}

/// In-memory external maps, for tests.
pub type FakeExternalMaps = FakeMaps<ExternalState>;

/// The kernel's maps, through aya.
#[derive(Debug)]
pub struct AyaExternalMaps {
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, ExtSlot>,
    sources: LpmTrie<MapData, SourceRange, u32>,
}

impl AyaExternalMaps {
    /// Wraps the three maps (taken from a loaded object, or opened from their pins).
    pub fn new(
        services: HashMap<MapData, ServiceKey, ServiceValue>,
        slots: HashMap<MapData, SlotKey, ExtSlot>,
        sources: LpmTrie<MapData, SourceRange, u32>,
    ) -> Self {
        AyaExternalMaps {
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

impl MapDoor<ExternalState> for AyaExternalMaps {
    fn dump(&self) -> Result<ExternalState, MapDoorError> {
        let mut sources = BTreeSet::new();
        for key in self.sources.keys() {
            let key = key.map_err(|source| MapDoorError::Map {
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
        Ok(ExternalState {
            services: dump_map(&self.services, EXT_SERVICES_MAP)?,
            slots: dump_map(&self.slots, EXT_SLOTS_MAP)?,
            sources,
        })
    }

    fn apply(&mut self, write: ExternalWrite) -> Result<(), MapDoorError> {
        let (result, op, map) = match write {
            ExternalWrite::PutService(k, v) => {
                (self.services.insert(k, v, 0), "write", EXT_SERVICES_MAP)
            }
            ExternalWrite::DeleteService(k) => {
                (self.services.remove(&k), "delete", EXT_SERVICES_MAP)
            }
            ExternalWrite::PutSlot(k, v) => (self.slots.insert(k, v, 0), "write", EXT_SLOTS_MAP),
            ExternalWrite::DeleteSlot(k) => (self.slots.remove(&k), "delete", EXT_SLOTS_MAP),
            ExternalWrite::PutSource(id, range) => (
                self.sources.insert(&source_key(id, range), 1, 0),
                "write",
                EXT_SOURCES_MAP,
            ),
            ExternalWrite::DeleteSource(id, range) => (
                self.sources.remove(&source_key(id, range)),
                "delete",
                EXT_SOURCES_MAP,
            ),
        };
        result.map_err(|source| MapDoorError::Map { op, map, source })
    }
}
