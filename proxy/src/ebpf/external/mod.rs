//! The external-traffic plane: NodePorts, externalIPs and LoadBalancer IPs reached from other
//! machines.
//!
//! The socket programs cover every connection made *on* the node; a client elsewhere reaches
//! a NodePort, an externalIP or a LoadBalancer IP as packets, which TC programs translate
//! (`ebpf/programs/src/nodeport.rs`). This side keeps their maps true through the same
//! [`MapPlane`] as the socket maps: [`ExternalPlanner`] says what the maps must hold, diffed against what
//! the plane last wrote (reading the pinned maps back after a restart or a failure), planning
//! only the Services that changed when it can. Simpler than the socket side there: a slot
//! holds its backend's address (no shared backend ids), so a Service's entries are its
//! frontends, its slots and its source ranges, all found by its id.

pub mod dump;
pub mod maps;
pub mod plan;

pub use dump::dump_external;
pub use maps::{AyaExternalMaps, FakeExternalMaps};
pub use plan::{ExternalPlanner, ExternalState, ExternalWrite};

use crate::ebpf::door::MapDoor;
use crate::ebpf::plane::MapPlane;

/// The external-traffic maps' data plane.
pub type ExternalPlane<M> = MapPlane<ExternalPlanner, M>;

impl<M: MapDoor<ExternalState>> ExternalPlane<M> {
    /// A plane whose first sync reads the maps back (and so adopts pinned ones).
    pub fn new(maps: M) -> Self {
        MapPlane::with_follow_up(maps, ())
    }
}

#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
mod tests;
