//! The map door: the only way from a map plane to its kernel maps.
//!
//! A plane decides *what* its maps must hold; its door only reads them whole ([`MapDoor::dump`],
//! used to adopt what a previous agent left pinned) and writes or deletes single entries. The
//! real doors (`AyaSocketLbMaps`, `AyaExternalMaps`) speak bpf syscalls through aya; the fakes
//! ([`super::fake`]) keep the entries in memory, log every write, and can fail on purpose.

use std::collections::BTreeMap;

use aya::maps::{HashMap, MapData, MapError};

use super::plane::MapState;

/// Why a map operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MapDoorError {
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

/// Reads and writes one plane's maps, whose contents are an `S`.
pub trait MapDoor<S: MapState>: Send {
    /// Everything the maps hold now.
    fn dump(&self) -> Result<S, MapDoorError>;
    /// Writes or deletes one entry.
    fn apply(&mut self, write: S::Write) -> Result<(), MapDoorError>;
}

/// Every entry of the hash map `name`.
pub(crate) fn dump_map<K: aya::Pod + Ord, V: aya::Pod>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, MapDoorError> {
    map.iter()
        .map(|entry| {
            entry.map_err(|source| MapDoorError::Map {
                op: "read",
                map: name,
                source,
            })
        })
        .collect()
}
