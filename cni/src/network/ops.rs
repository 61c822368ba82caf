//! The one door to the kernel for the node network: routes, the VXLAN device, its address, its
//! forwarding database and neighbours, links' MTU and state, and `ip_forward`.
//!
//! The door is narrow and speaks in plain values ([`Route`], [`FdbEntry`], [`Neighbour`]) so the
//! diff logic above it is tested against [`FakeNetOps`](super::FakeNetOps) without root, and the
//! real [`NetlinkOps`](super::NetlinkOps) is tested in network namespaces. Listing methods return
//! only what skiff owns (routes with [`SKIFF_ROUTE_PROTOCOL`], permanent entries on our device),
//! so a restarted agent adopts its own state and never touches anybody else's. Deleting an entry
//! that is already gone succeeds: the caller's goal, "not there", is met.

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::errno::Errno;

pub use crate::netlink::{MacAddr, SyscallError};
use crate::netns::NetnsError;

/// The route protocol number (`ip route ... proto 83`) that marks routes as skiff's.
///
/// Unassigned in iproute2's `rt_protos`; it lets a restarted agent find exactly its own routes.
pub const SKIFF_ROUTE_PROTOCOL: u8 = 83;

/// The kernel's answers to a delete that mean "already gone": the caller's goal is met.
pub(crate) const ALREADY_GONE: [Errno; 3] = [Errno::ENOENT, Errno::ESRCH, Errno::EADDRNOTAVAIL];

/// Why a [`NodeNetOps`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum NetOpsError {
    /// The kernel refused.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// The netlink conversation itself failed (socket gone, unexpected message).
    #[error("netlink {call}: {detail}")]
    Netlink {
        /// The request, e.g. `RTM_GETLINK`.
        call: &'static str,
        /// What went wrong.
        detail: String,
    },
    /// The thread inside the node's network namespace is gone.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// A link's kernel index.
pub type IfIndex = u32;

/// One IPv4 route in the main table, tagged [`SKIFF_ROUTE_PROTOCOL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Destination prefix (a remote node's podCIDR).
    pub dst: Ipv4Net,
    /// Next hop.
    pub gateway: Ipv4Addr,
    /// Outgoing link.
    pub oif: IfIndex,
    /// The next hop is reachable on `oif` even though no local prefix covers it.
    pub onlink: bool,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {} via {} if {}", self.dst, self.gateway, self.oif)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        Ok(())
    }
}

/// A permanent forwarding-database entry on a VXLAN device: frames for `mac` go to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    /// The VXLAN device.
    pub link: IfIndex,
    /// A remote VTEP's MAC.
    pub mac: MacAddr,
    /// The remote VTEP's underlay address.
    pub dst: Ipv4Addr,
}

impl fmt::Display for FdbEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fdb {} dst {} if {}", self.mac, self.dst, self.link)
    }
}

/// A permanent IPv4 neighbour (ARP) entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    /// The link it lives on.
    pub link: IfIndex,
    /// The IP address.
    pub ip: Ipv4Addr,
    /// Its link-layer address.
    pub mac: MacAddr,
}

impl fmt::Display for Neighbour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "neigh {} lladdr {} if {}", self.ip, self.mac, self.link)
    }
}

/// What a VXLAN device is made of; two devices with equal specs are interchangeable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name, e.g. `skiff.vxlan`.
    pub name: String,
    /// VXLAN network identifier.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Source address of encapsulated packets (the node IP).
    pub local: Ipv4Addr,
    /// The underlay link the tunnel rides on.
    pub underlay: IfIndex,
    /// The device's own MAC (our VTEP MAC).
    pub mac: MacAddr,
    /// Device MTU.
    pub mtu: u32,
}

/// The VXLAN attributes of an existing link, as the kernel reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VxlanAttrs {
    /// VNI.
    pub vni: Option<u32>,
    /// UDP destination port.
    pub port: Option<u16>,
    /// Local address.
    pub local: Option<Ipv4Addr>,
    /// Underlay link.
    pub underlay: Option<IfIndex>,
    /// Source-MAC learning on.
    pub learning: bool,
}

/// An existing link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Kernel index.
    pub index: IfIndex,
    /// Name.
    pub name: String,
    /// MTU.
    pub mtu: u32,
    /// MAC, for Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administratively up.
    pub up: bool,
    /// Present when the link is a VXLAN device.
    pub vxlan: Option<VxlanAttrs>,
}

impl Link {
    /// Does this link already match `spec` in everything that can't be changed in place?
    pub fn is_vxlan_like(&self, spec: &VxlanSpec) -> bool {
        self.mac == Some(spec.mac)
            && self.vxlan.as_ref().is_some_and(|v| {
                v.vni == Some(spec.vni)
                    && v.port == Some(spec.port)
                    && v.local == Some(spec.local)
                    && v.underlay == Some(spec.underlay)
                    && !v.learning
            })
    }
}

/// Kernel work the node network needs. Listing calls return only skiff's own entries.
pub trait NodeNetOps {
    /// The link named `name`, if it exists.
    fn link(&self, name: &str) -> Result<Option<Link>, NetOpsError>;
    /// Creates a VXLAN device (no learning, no group) as `spec` says, down.
    fn add_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetOpsError>;
    /// Deletes a link (and with it every entry on it).
    fn delete_link(&self, index: IfIndex) -> Result<(), NetOpsError>;
    /// Sets a link's MTU.
    fn set_mtu(&self, index: IfIndex, mtu: u32) -> Result<(), NetOpsError>;
    /// Sets a link administratively up.
    fn set_up(&self, index: IfIndex) -> Result<(), NetOpsError>;
    /// IPv4 addresses on a link.
    fn addresses(&self, index: IfIndex) -> Result<Vec<Ipv4Net>, NetOpsError>;
    /// Adds an IPv4 address.
    fn add_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError>;
    /// Removes an IPv4 address.
    fn del_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError>;
    /// skiff's routes: main table, IPv4, protocol [`SKIFF_ROUTE_PROTOCOL`].
    fn routes(&self) -> Result<Vec<Route>, NetOpsError>;
    /// Adds a route (fails if one for the same prefix exists).
    fn add_route(&self, route: &Route) -> Result<(), NetOpsError>;
    /// Deletes a route; a missing one is not an error.
    fn del_route(&self, route: &Route) -> Result<(), NetOpsError>;
    /// Permanent unicast FDB entries with a remote on VXLAN device `link`.
    fn fdb(&self, link: IfIndex) -> Result<Vec<FdbEntry>, NetOpsError>;
    /// Adds (or replaces) an FDB entry (`self permanent`).
    fn add_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError>;
    /// Deletes an FDB entry; a missing one is not an error.
    fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError>;
    /// Permanent IPv4 neighbours on `link`.
    fn neighbours(&self, link: IfIndex) -> Result<Vec<Neighbour>, NetOpsError>;
    /// Adds (or replaces) a permanent neighbour.
    fn add_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError>;
    /// Deletes a neighbour; a missing one is not an error.
    fn del_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError>;
    /// Sets `net.ipv4.ip_forward = 1` in the node's namespace.
    fn enable_ip_forward(&self) -> Result<(), NetOpsError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vxlan_link_matches_a_spec_only_when_every_fixed_attribute_agrees() {
        let spec = VxlanSpec {
            name: "skiff.vxlan".into(),
            vni: 1,
            port: 8472,
            local: Ipv4Addr::new(172, 31, 4, 11),
            underlay: 2,
            mac: MacAddr([0x0e, 0x5f, 172, 31, 4, 11]),
            mtu: 1450,
        };
        let mut link = Link {
            index: 7,
            name: spec.name.clone(),
            mtu: 1500, // MTU and state are fixed in place, not by recreating
            mac: Some(spec.mac),
            up: false,
            vxlan: Some(VxlanAttrs {
                vni: Some(1),
                port: Some(8472),
                local: Some(spec.local),
                underlay: Some(2),
                learning: false,
            }),
        };
        assert!(link.is_vxlan_like(&spec));
        link.vxlan.as_mut().unwrap().learning = true;
        assert!(!link.is_vxlan_like(&spec));
        link.vxlan.as_mut().unwrap().learning = false;
        link.vxlan.as_mut().unwrap().port = Some(4789);
        assert!(!link.is_vxlan_like(&spec));
        link.vxlan = None;
        assert!(!link.is_vxlan_like(&spec));
    }
}
