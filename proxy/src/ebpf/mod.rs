//! The eBPF data plane: a socket-level load balancer for ClusterIPs.
//!
//! iptables matches a Service by walking rules; here the kernel programs (`ebpf/programs`) look
//! the address up in a hash map at `connect()`/`sendmsg()` and rewrite it to a backend once per
//! connection. This side only has to keep the maps true: [`plan`] turns a [`DesiredState`] into
//! map contents (with stable ids), [`diff`] into the few writes that change what the maps hold,
//! and the [`LbMaps`] door applies them. A sync compares with what it last wrote; the first sync,
//! and any after a failure, reads the maps back first — which is how a restarted agent adopts
//! the maps its predecessor pinned and writes nothing when nothing changed.
//!
//! [`loader`] loads the object, pins the maps and attaches the programs to the node's cgroup.
//!
//! Phase 1 covers ClusterIP (TCP, UDP), random backend choice, reject without endpoints and
//! internal traffic policy. NodePort, external/LB IPs, affinity and Maglev are not here yet.

pub mod loader;
pub mod maps;
pub mod mounts;
pub mod nodeport;
pub mod plan;

use std::collections::BTreeMap;

pub use loader::{LoaderError, SocketLb, SocketLbConfig};
pub use maps::{AyaLbMaps, FakeLbMaps, LbMaps, LbMapsError, LbState, MapWrite};
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
}

impl<M: LbMaps> EbpfDataplane<M> {
    /// A data plane whose first sync reads the maps back (and so adopts pinned ones).
    pub fn new(maps: M) -> Self {
        EbpfDataplane { maps, held: None }
    }

    /// The map door, for tests and `explain`.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    fn write(&mut self, want: Option<&DesiredState>) -> Result<SyncReport, EbpfError> {
        let full = self.held.is_none();
        let held = match self.held.take() {
            Some(held) => held,
            None => self.maps.dump()?,
        };
        let want = match want {
            Some(desired) => plan(desired, &held),
            None => LbState::default(),
        };
        let writes = diff(&held, &want);
        for write in &writes {
            self.maps.apply(*write)?;
        }
        let report = SyncReport {
            full,
            map_entries: BTreeMap::from([
                ("services", want.services.len()),
                ("slots", want.slots.len()),
                ("backends", want.backends.len()),
            ]),
            written: writes.len(),
            ..SyncReport::default()
        };
        self.held = Some(want);
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
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        self.held = None;
        self.write(None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
