//! The `Dataplane` seam: one call that makes the kernel match a [`DesiredState`].
//!
//! The runner knows nothing of iptables or BPF maps; it hands every data plane the same value
//! and learns only whether the sync worked and what it cost. A data plane keeps its own memory of
//! what it last applied (that is how it syncs partially) and forgets it when a sync fails, so the
//! next sync is a full one.

use std::collections::BTreeMap;

use crate::model::DesiredState;

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Was everything rewritten (first sync, after a failure, or forced)?
    pub full: bool,
    /// iptables rules the data plane holds now, per table.
    pub rules: BTreeMap<&'static str, usize>,
    /// BPF map entries the data plane holds now, per map.
    pub map_entries: BTreeMap<&'static str, usize>,
    /// Chains (or entries) written in this sync.
    pub written: usize,
    /// Stale UDP flows ended: conntrack entries deleted (iptables), connected sockets ended
    /// (eBPF).
    pub flows_cleared: usize,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// iptables refused or could not run.
    #[error(transparent)]
    Iptables(#[from] crate::iptables::IptablesError),
    /// The eBPF maps refused a write.
    #[error(transparent)]
    Ebpf(#[from] crate::ebpf::MapDoorError),
}

/// Makes the kernel match a desired state.
pub trait Dataplane: Send {
    /// Applies `desired`: partially when the last sync worked, fully otherwise.
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError>;
    /// Makes the next sync a full one.
    fn force_full_sync(&mut self);
    /// Removes everything this data plane ever installed.
    fn cleanup(&mut self) -> Result<(), DataplaneError>;
}
