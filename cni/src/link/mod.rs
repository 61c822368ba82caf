//! The kernel seam: links, addresses, routes and neighbours, in the node's or a Pod's namespace.
//!
//! [`LinkOps`] is everything the plugin asks of netlink inside *one* network namespace;
//! [`Namespaces`] hands out a `LinkOps` for the node's namespace or for a Pod's. The real pair
//! ([`RealNamespaces`], in `netlink.rs`) runs each batch on a dedicated short-lived thread:
//! for a Pod, that thread `setns()`es into the Pod's namespace first, and its netlink socket
//! (made after the switch) belongs to that namespace; for the node it simply stays where the
//! process is. A thread in a foreign namespace is never reused, and no tokio worker that
//! others share ever changes namespace — each batch drives its own current-thread runtime.
//! The fake ([`FakeNamespaces`]) is this door onto the one fake kernel
//! ([`crate::fake_kernel`]) the node network's fake uses too, so the plugin's logic and
//! rollback are tested without root against the same rules.
//!
//! Veths are created with the Pod end placed straight into the Pod's namespace under its final
//! name (`IFLA_NET_NS_FD` on the peer), instead of create-in-host, move, rename: one netlink
//! request, so a process killed mid-ADD never leaves a temporary name behind in the node's
//! namespace and never collides with the node's own `eth0`.

mod fake;
mod netlink;

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

pub use fake::{FakeLinkOps, FakeNamespaces};
pub use netlink::{RealLinkOps, RealNamespaces};

pub use crate::netlink::{MacAddr, SyscallError};
use crate::netns::NetnsError;

/// Failures of the kernel seam.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused a request.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// A network namespace could not be opened or entered, or its thread failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl LinkError {
    /// Wraps a kernel error for `call`.
    pub fn syscall(call: &'static str, source: io::Error) -> Self {
        LinkError::Syscall(SyscallError { call, source })
    }

    fn errno(&self) -> Option<i32> {
        match self {
            LinkError::Syscall(err) => err.source.raw_os_error(),
            _ => None,
        }
    }

    /// The object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(nix::libc::EEXIST)
    }

    /// The object does not exist (`ENODEV`, `ENOENT`, `ESRCH`).
    pub fn is_missing(&self) -> bool {
        matches!(
            self.errno(),
            Some(nix::libc::ENODEV | nix::libc::ENOENT | nix::libc::ESRCH)
        )
    }
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its index in its namespace.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Its hardware address.
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
}

/// An IPv4 route in the main table out of one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteSpec {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop, if not on-link.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: u32,
    /// `scope link` (directly reachable) rather than `scope global`.
    pub scope_link: bool,
}

/// A veth pair to create: one end here, the other straight in another namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VethPair {
    /// This end's name.
    pub name: String,
    /// This end's MAC address.
    pub mac: MacAddr,
    /// The other end's name, in its namespace.
    pub peer: String,
    /// The namespace of the other end.
    pub peer_netns: PathBuf,
    /// MTU of both ends.
    pub mtu: u32,
}

/// What the plugin asks of netlink inside one network namespace.
pub trait LinkOps {
    /// The link named `name`, if it exists.
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError>;
    /// Every link of the namespace.
    fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError>;
    /// A veth pair: `veth.name` here, its peer created directly in `veth.peer_netns`.
    fn add_veth(&mut self, veth: &VethPair) -> Result<(), LinkError>;
    /// Sets a link up.
    fn set_up(&mut self, index: u32) -> Result<(), LinkError>;
    /// Adds an address to a link.
    fn add_address(&mut self, index: u32, address: Ipv4Net) -> Result<(), LinkError>;
    /// The IPv4 addresses of a link.
    fn addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, LinkError>;
    /// Adds a route to the main table.
    fn add_route(&mut self, route: &RouteSpec) -> Result<(), LinkError>;
    /// The main table's IPv4 routes out of link `oif`.
    fn routes(&mut self, oif: u32) -> Result<Vec<RouteSpec>, LinkError>;
    /// A permanent neighbour entry `ip` → `mac` on a link (replacing any existing one).
    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<(), LinkError>;
    /// Deletes a link (a veth takes its peer with it).
    fn delete_link(&mut self, index: u32) -> Result<(), LinkError>;
}

/// Runs batches of [`LinkOps`] in the node's namespace or in a Pod's.
pub trait Namespaces {
    /// The ops handed to each batch.
    type Ops: LinkOps;

    /// Runs `batch` in the node's namespace (the one the plugin was started in).
    fn node<R, F>(&self, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut Self::Ops) -> Result<R, LinkError> + Send;

    /// Runs `batch` inside the network namespace at `netns`.
    fn pod<R, F>(&self, netns: &Path, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut Self::Ops) -> Result<R, LinkError> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification_names_exists_and_missing() {
        let exists = LinkError::syscall("x", io::Error::from_raw_os_error(nix::libc::EEXIST));
        let missing = LinkError::syscall("x", io::Error::from_raw_os_error(nix::libc::ENODEV));
        assert!(exists.is_exists() && !exists.is_missing());
        assert!(missing.is_missing() && !missing.is_exists());
        assert!(!LinkError::Netns(NetnsError::Gone).is_missing());
    }
}
