//! The NodePort data path: external traffic arriving on the node's interfaces.
//!
//! The socket programs cover every connection made *on* the node; a client elsewhere reaches
//! a NodePort, an externalIP or a LoadBalancer IP as packets, which TC programs translate
//! (`ebpf/programs/src/nodeport.rs`). This side keeps their two maps true the way
//! [`EbpfDataplane`](crate::ebpf::EbpfDataplane) keeps the socket maps: [`plan`] and diff
//! against what it last wrote (reading the pinned maps back after a restart or a failure),
//! planning only the Services that changed when it can ([`incremental`]).

pub mod dump;
pub mod incremental;
pub mod loader;
pub mod maps;
pub mod plan;

use std::collections::BTreeMap;

pub use dump::dump_external;
pub use incremental::{ExtApplied, plan_external_changes};
pub use loader::{NodePortConfig, NodePortLb};
pub use maps::{AyaExtMaps, ExtMaps, FakeExtMaps};
pub use plan::{ExtState, ExtWrite, diff_external, plan_external};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::ebpf::EbpfError;
use crate::model::DesiredState;

/// The NodePort maps' data plane.
#[derive(Debug)]
pub struct NodePortPlane<M: ExtMaps> {
    maps: M,
    /// What the maps hold, as far as we know; `None`: read them back first.
    held: Option<ExtState>,
    /// What the last sync applied (with `held`): the next one plans only what changed.
    applied: Option<ExtApplied>,
}

impl<M: ExtMaps> NodePortPlane<M> {
    /// A plane whose first sync reads the maps back (and so adopts pinned ones).
    pub fn new(maps: M) -> Self {
        NodePortPlane {
            maps,
            held: None,
            applied: None,
        }
    }

    /// The map door.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    fn write(&mut self, desired: Option<&DesiredState>) -> Result<SyncReport, EbpfError> {
        let full = self.held.is_none();
        let mut held = match self.held.take() {
            Some(held) => held,
            None => self.maps.dump()?,
        };
        let mut applied = self.applied.take();
        let change = match (desired, applied.as_mut()) {
            (Some(desired), Some(applied)) if !full => {
                plan_external_changes(applied, desired, &mut held)
            }
            _ => None,
        };
        let (writes, now) = match change {
            Some(change) => (diff_external(&change.before, &change.after), held),
            None => {
                let want = match desired {
                    Some(desired) => plan_external(desired, &held),
                    None => ExtState::default(),
                };
                applied = desired.map(|desired| ExtApplied::after_full(desired, &want));
                (diff_external(&held, &want), want)
            }
        };
        // On error `held` and `applied` stay `None`: the next sync reads the maps back.
        for write in &writes {
            self.maps.apply(*write)?;
        }
        let report = SyncReport {
            full,
            written: writes.len(),
            map_entries: BTreeMap::from([
                ("ext_services", now.services.len()),
                ("ext_slots", now.slots.len()),
            ]),
            ..SyncReport::default()
        };
        self.held = Some(now);
        self.applied = applied;
        Ok(report)
    }
}

impl<M: ExtMaps> Dataplane for NodePortPlane<M> {
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        Ok(self.write(Some(desired))?)
    }

    fn force_full_sync(&mut self) {
        self.held = None;
        self.applied = None;
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.held = None;
        self.applied = None;
        self.write(None)?;
        Ok(())
    }
}

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
