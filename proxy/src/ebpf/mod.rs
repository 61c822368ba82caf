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
//! After a sync that took backends away from UDP frontends, [`sockterm`] ends the connected
//! sockets still sending to them, which the socket programs can no longer redirect.
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
pub mod sockterm;
pub mod trace;

use std::collections::{BTreeMap, BTreeSet};

use skiff_ebpf_common::sockterm::SockTermKey;
use tracing::warn;

pub use fake::{FakeLbMaps, FaultyLbMaps};
pub use incremental::{Applied, plan_changes};
pub use loader::{LoaderError, SocketLb, SocketLbConfig};
pub use maps::{AyaLbMaps, LbMaps, LbMapsError, LbState, MapWrite};
pub use plan::{diff, plan};
pub use sockterm::{NoTermination, SocketTerminator};

use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::model::DesiredState;

/// Why an eBPF sync failed.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// A map read or write failed.
    #[error(transparent)]
    Maps(#[from] LbMapsError),
}

/// The eBPF data plane over an [`LbMaps`] door, ending stale UDP sockets through `S`.
#[derive(Debug)]
pub struct EbpfDataplane<M: LbMaps, S: SocketTerminator = NoTermination> {
    maps: M,
    sockets: S,
    /// What the maps hold, as far as we know; `None`: read them back before the next sync.
    held: Option<LbState>,
    /// What the last sync applied (with `held`): the next one plans only what changed.
    applied: Option<Applied>,
    /// (frontend, backend) pairs whose sockets are still to be ended: a sync that failed
    /// midway may already have written them out of the maps, where the next one cannot see.
    departed: BTreeSet<SockTermKey>,
}

impl<M: LbMaps> EbpfDataplane<M> {
    /// A data plane whose first sync reads the maps back (and so adopts pinned ones), and
    /// which ends no sockets.
    pub fn new(maps: M) -> Self {
        EbpfDataplane::with_terminator(maps, NoTermination)
    }
}

impl<M: LbMaps, S: SocketTerminator> EbpfDataplane<M, S> {
    /// A data plane that also ends connected UDP sockets whose backend left their Service.
    pub fn with_terminator(maps: M, sockets: S) -> Self {
        EbpfDataplane {
            maps,
            sockets,
            held: None,
            applied: None,
            departed: BTreeSet::new(),
        }
    }

    /// The map door, for tests and `explain`.
    pub fn maps(&self) -> &M {
        &self.maps
    }

    /// The socket terminator, for tests.
    pub fn sockets(&self) -> &S {
        &self.sockets
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
            Some(change) => {
                self.departed
                    .extend(sockterm::departed(&change.before, &change.after));
                (diff(&change.before, &change.after), held)
            }
            None => {
                let now = match want {
                    Some(desired) => plan(desired, &held),
                    None => LbState::default(),
                };
                applied = want.map(|desired| Applied::after_full(desired, &now));
                if want.is_some() {
                    self.departed.extend(sockterm::departed(&held, &now));
                } else {
                    self.departed.clear();
                }
                (diff(&held, &now), now)
            }
        };
        // On error `held` and `applied` stay `None`: the next sync reads the maps back.
        for write in &writes {
            self.maps.apply(*write)?;
        }
        let flows_cleared = self.end_departed(&now);
        let report = SyncReport {
            full,
            map_entries: BTreeMap::from([
                ("services", now.services.len()),
                ("slots", now.slots.len()),
                ("backends", now.backends.len()),
                ("affinity_matches", now.affinity_match.len()),
            ]),
            written: writes.len(),
            flows_cleared,
            ..SyncReport::default()
        };
        self.held = Some(now);
        self.applied = applied;
        Ok(report)
    }

    /// Ends the sockets of the pairs still due in `want`; best effort, like conntrack deletes
    /// in iptables mode. Returns how many ended.
    fn end_departed(&mut self, want: &LbState) -> usize {
        self.departed.retain(|key| sockterm::still_due(want, key));
        let departed = std::mem::take(&mut self.departed);
        if departed.is_empty() {
            return 0;
        }
        match self.sockets.end_sockets(&departed) {
            Ok(ended) => ended,
            Err(err) => {
                warn!(
                    error = &err as &dyn std::error::Error,
                    pairs = departed.len(),
                    "cannot end UDP sockets connected to departed backends"
                );
                0
            }
        }
    }
}

impl<M: LbMaps, S: SocketTerminator> Dataplane for EbpfDataplane<M, S> {
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
