//! The eBPF data plane: a socket-level load balancer for the traffic of the node's processes.
//!
//! iptables matches a Service by walking rules; here the kernel programs (`ebpf/programs`) look
//! the address up in a hash map at `connect()`/`sendmsg()` and rewrite it to a backend once per
//! connection. This side only has to keep the maps true: [`plan`] turns a [`DesiredState`] into
//! map contents (with stable ids), [`diff`] into the few writes that change what the maps hold,
//! and the [`LbMaps`] door applies them. A sync compares with what it last wrote; the first sync,
//! and any after a failure, reads the maps back first — which is how a restarted agent adopts
//! the maps its predecessor pinned and writes nothing when nothing changed.
//!
//! [`loader`] loads the object, pins the maps and attaches the programs to the node's cgroup;
//! [`dump`] and [`trace`] read map contents back as text and as behaviour, for golden tests.
//!
//! Covered: ClusterIP, and NodePort (node IPs and 127.0.0.1), external IPs and LB IPs for
//! traffic from the node's own processes, over TCP and UDP; random choice or ClientIP affinity
//! (keyed by the client's netns); reject without endpoints, drop (`EPERM`) without usable ones
//! here; traffic policies and terminating fallback as the model selects them; LB source ranges
//! as far as they let all local sources in or none. Not here: traffic from outside the node
//! (that needs tc/XDP programs), SCTP, ranges that split local sources (left to the packet
//! path), Maglev.

pub mod dump;
pub mod explain;
pub mod fake;
pub mod incremental;
pub mod loader;
pub mod maps;
pub mod mounts;
pub mod nodeport;
pub mod plan;
pub mod trace;

use std::collections::BTreeMap;

pub use fake::{FakeLbMaps, FaultyLbMaps};
pub use incremental::{Applied, plan_changes};
pub use loader::{LoaderError, SocketLb, SocketLbConfig};
pub use maps::{AyaLbMaps, LbMaps, LbMapsError, LbState, MapWrite};
pub use plan::{diff, plan};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::DesiredState;

/// Why an eBPF sync failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// A map read or write failed.
    #[error(transparent)]
    Maps(#[from] LbMapsError),
}

/// The eBPF data plane over an [`LbMaps`] door.
#[derive(Debug)]
pub struct EbpfDataplane<M: LbMaps> {
    maps: M,
    /// What the maps hold, as far as we know; `None`: read them back before the next sync.
    held: Option<LbState>,
    /// What the last sync applied (with `held`): the next one plans only what changed.
    applied: Option<Applied>,
}

impl<M: LbMaps> EbpfDataplane<M> {
    /// A data plane whose first sync reads the maps back (and so adopts pinned ones).
    pub fn new(maps: M) -> Self {
        EbpfDataplane {
            maps,
            held: None,
            applied: None,
        }
    }

    /// The map door, for tests and `explain`.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    fn write(&mut self, want: Option<&DesiredState>) -> Result<SyncReport, EbpfError> {
        let full = self.held.is_none();
        let mut held = match self.held.take() {
            Some(held) => held,
            None => self.maps.dump()?,
        };
        let mut applied = self.applied.take();
        let incremental = match (want, applied.as_mut()) {
            (Some(desired), Some(applied)) if !full => plan_changes(applied, desired, &mut held),
            _ => None,
        };
        let (writes, now) = match incremental {
            Some(change) => (diff(&change.before, &change.after), held),
            None => {
                let now = match want {
                    Some(desired) => plan(desired, &held),
                    None => LbState::default(),
                };
                applied = want.map(|desired| Applied::after_full(desired, &now));
                (diff(&held, &now), now)
            }
        };
        // On error `held` and `applied` stay `None`: the next sync reads the maps back.
        for write in &writes {
            self.maps.apply(*write)?;
        }
        let report = SyncReport {
            full,
            map_entries: BTreeMap::from([
                ("services", now.services.len()),
                ("slots", now.slots.len()),
                ("backends", now.backends.len()),
                ("affinity_matches", now.affinity_match.len()),
            ]),
            written: writes.len(),
            ..SyncReport::default()
        };
        self.held = Some(now);
        self.applied = applied;
        Ok(report)
    }
}

impl<M: LbMaps> Dataplane for EbpfDataplane<M> {
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        // On error `held` stays `None` (taken above), so the next sync reads the maps back.
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
mod fault_tests;
#[cfg(test)]
mod frontend_tests;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
