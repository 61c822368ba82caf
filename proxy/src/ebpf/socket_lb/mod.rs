//! The socket load balancer plane: Service addresses translated at `connect()`/`sendmsg()` for
//! the node's own processes (its Pods and the node).
//!
//! iptables matches a Service by walking rules; here the kernel programs (`ebpf/programs`) look
//! the address up in a hash map and rewrite it to a backend once per connection. This side only
//! keeps the maps true, through the shared [`MapPlane`]: [`SocketLbPlanner`] turns a desired
//! state into map contents (with stable ids), and two of those into the few writes that change
//! what the maps hold.
//! [`dump`] and [`trace`] read map contents back as text and as behaviour, for golden tests.
//! After a sync that took backends away from UDP frontends, the plane ends the connected
//! sockets still sending to them ([`crate::ebpf::sockterm`]), which the programs can no longer
//! redirect.
//!
//! Covered: ClusterIP, and NodePort (node IPs and 127.0.0.1), external IPs and LB IPs for
//! traffic from the node's own processes, over TCP and UDP; random choice or ClientIP affinity
//! (keyed by the client's netns); reject without endpoints, drop (`EPERM`) without usable ones
//! here; traffic policies and terminating fallback as the model selects them; LB source ranges
//! as far as they let all local sources in or none. Not here: traffic from outside the node
//! (the external-traffic plane, [`crate::ebpf::external`]), SCTP, ranges that split local
//! sources (left to the packet path), Maglev.

pub mod dump;
pub mod incremental;
pub mod maps;
pub mod plan;
pub mod trace;

pub use incremental::SocketLbApplied;
pub use maps::{AffinityPins, AyaSocketLbMaps, FakeSocketLbMaps, SocketLbState, SocketLbWrite};
pub use plan::SocketLbPlanner;

use crate::ebpf::door::MapDoor;
use crate::ebpf::plane::MapPlane;
use crate::ebpf::sockterm::{EndDepartedSockets, NoTermination, SocketTerminator};

/// The socket load balancer's data plane over door `M`, ending stale UDP sockets through `T`.
pub type SocketLbPlane<M, T = NoTermination> = MapPlane<SocketLbPlanner, M, EndDepartedSockets<T>>;

impl<M: MapDoor<SocketLbState>> SocketLbPlane<M> {
    /// A plane whose first sync reads the maps back (and so adopts pinned ones), and which
    /// ends no sockets.
    pub fn new(maps: M) -> Self {
        SocketLbPlane::with_terminator(maps, NoTermination)
    }
}

impl<M: MapDoor<SocketLbState>, T: SocketTerminator> SocketLbPlane<M, T> {
    /// A plane that also ends connected UDP sockets whose backend left their Service.
    pub fn with_terminator(maps: M, sockets: T) -> Self {
        MapPlane::with_follow_up(maps, EndDepartedSockets::new(sockets))
    }

    /// The socket terminator, for tests.
    pub fn sockets(&self) -> &T {
        self.follow_up().terminator()
    }
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod frontend_tests;
#[cfg(test)]
mod incremental_tests;
#[cfg(test)]
pub(crate) mod tests;
