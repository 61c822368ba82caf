//! The eBPF data plane: Service translation by kernel programs reading maps the proxy writes.
//!
//! Two sets of maps, one per kind of traffic, each kept true by a [`MapPlane`] over the same
//! loop ([`plane`]): plan what the maps must hold (only the Services that changed, when it can:
//! [`incremental`]), diff against what the plane last wrote, apply the few writes through a
//! [`MapDoor`]; the first sync, and any after a failure, reads the maps back first — which is
//! how a restarted agent adopts the maps its predecessor pinned and writes nothing when nothing
//! changed.
//! - [`socket_lb`]: the node's own processes (Pods and the node), translated at `connect()` /
//!   `sendmsg()` by cgroup programs; after a sync, [`sockterm`] ends connected UDP sockets
//!   whose backend left.
//! - [`external`]: NodePorts, externalIPs and LoadBalancer IPs reached from other machines,
//!   translated per packet by TC programs on the node's interfaces.
//!
//! [`loader`] loads the one BPF object and hands out its programs and maps; [`fake`] holds the
//! in-memory and faulty map doors the tests use; [`explain`] reads the pinned maps back for
//! `skiff-proxy explain`.

pub mod door;
pub mod explain;
pub mod external;
pub mod fake;
pub mod incremental;
pub mod loader;
pub mod mounts;
pub mod plane;
pub mod socket_lb;
pub mod sockterm;

pub use door::{MapDoor, MapDoorError};
pub use external::{AyaExternalMaps, ExternalPlane, ExternalState, FakeExternalMaps};
pub use fake::{FakeMaps, FaultyMaps};
pub use loader::{BpfObject, LoadConfig, LoaderError};
pub use plane::{MapPlane, MapState, Planner};
pub use socket_lb::{AyaSocketLbMaps, FakeSocketLbMaps, SocketLbPlane, SocketLbState};
pub use sockterm::{NoTermination, SocketTerminator};

#[cfg(test)]
mod churn_tests;
