//! The node network: how a Pod on this node reaches a Pod on another, and the world.
//!
//! The CNI plugin gives every Pod an address from its node's podCIDR and a route to the node.
//! What is left is between nodes, and it is the node agent's job, through this library:
//!
//! * **host-gw**: one route per remote node, `<its podCIDR> via <its node IP>` on the underlay.
//!   No encapsulation, full MTU, the fastest option — but the next hop must be on-link, so every
//!   node has to share one L2 segment. We refuse a remote node that is not, by name, instead of
//!   letting the kernel answer "Network is unreachable".
//! * **VXLAN**, flannel's design: one `vxlan` device per node (`local` = node IP, `dev` = the
//!   underlay, `nolearning`, no group — the kernel never floods or multicasts, every entry is
//!   static), MTU = underlay MTU − 50. The device carries `<podCIDR network>/32` — flannel's
//!   trick: the podCIDR's `.0` is never a Pod, so it can name "the node's overlay end" without
//!   spending an address, and it becomes the source of node-originated overlay traffic. For each
//!   remote node three entries, all derived from its Node object alone:
//!     - FDB `<remote VTEP MAC> dst <remote node IP>` (self, permanent): where to tunnel;
//!     - neighbour `<remote podCIDR .0> lladdr <remote VTEP MAC>` (permanent): no ARP across the
//!       overlay;
//!     - route `<remote podCIDR> via <remote podCIDR .0> dev skiff.vxlan onlink`.
//!
//!   The VTEP MAC is computed from the node IP ([`vtep_mac`]) rather than published, so a new
//!   node is reachable the moment its Node object has an address and a podCIDR.
//!
//! Both backends add **egress masquerade** ([`masquerade`]) and turn on `ip_forward`.
//!
//! **Incremental**: [`NodeNetwork::sync`] turns the node list into the exact set of entries it
//! needs (`desired`) and diffs that set against what it programmed. A node added or removed
//! changes exactly its own entries; an unchanged list makes no kernel calls at all. The first
//! sync reads what the kernel already holds — routes are tagged with our own protocol number,
//! FDB and neighbour entries live on our own device — so a restarted agent adopts its previous
//! state, keeps what is still right, and removes what belongs to nodes deleted while it was down.
//! After any failure the next sync re-reads the kernel instead of trusting memory.
//!
//! Kernel work goes through two small doors, [`NodeNetOps`] (netlink) and [`Iptables`] (the
//! `skiff-iptables` door the service proxy uses too), each with a real implementation and a
//! fake; the real ones run on a [`NetnsThread`](crate::netns::NetnsThread) that has entered the
//! node's network namespace.

mod config;
mod desired;
mod fake;
pub mod masquerade;
mod netlink;
mod node;
mod ops;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

pub use config::{Backend, NodeNetworkConfig, RemoteNode, VXLAN_OVERHEAD, VxlanConfig, vtep_mac};
pub use desired::Entry;
pub use fake::FakeNetOps;
pub use netlink::NetlinkOps;
pub use node::{NodeIptables, NodeNetwork, RealNodeNetwork, SyncReport};
pub use ops::{
    FdbEntry, IfIndex, Link, MacAddr, Neighbour, NetOpsError, NodeNetOps, Route,
    SKIFF_ROUTE_PROTOCOL, SyscallError, VxlanAttrs, VxlanSpec,
};
pub use skiff_iptables::{FakeIptables, Iptables, IptablesError};

/// Why the node network could not be configured or synced.
#[derive(Debug, thiserror::Error)]
pub enum NodeNetworkError {
    /// The configuration is unusable; nothing was changed.
    #[error("invalid node network config: {0}")]
    Config(String),
    /// A remote node's facts are unusable; nothing was changed.
    #[error("remote node {name:?}: {reason}")]
    Remote {
        /// The Node's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The underlay interface does not exist.
    #[error("underlay interface {0:?} does not exist")]
    NoUnderlay(String),
    /// The node IP is not an address of the underlay interface.
    #[error("node IP {ip} is not an address of underlay interface {underlay:?}")]
    NodeIpNotOnUnderlay {
        /// The configured node IP.
        ip: Ipv4Addr,
        /// The underlay interface.
        underlay: String,
    },
    /// A link we just created is not there.
    #[error("link {0:?} vanished right after it was created")]
    Vanished(String),
    /// A kernel call failed.
    #[error("{action}: {source}")]
    Kernel {
        /// What we were doing.
        action: String,
        /// The failed call.
        #[source]
        source: NetOpsError,
    },
    /// The masquerade rules could not be written.
    #[error("egress masquerade: {0}")]
    Masquerade(#[from] IptablesError),
    /// The namespace thread could not start.
    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),
}
