//! The node network's door onto the one fake kernel ([`crate::fake_kernel`]): [`NodeNetOps`] on
//! the node's namespace, for the node network's unit tests.
//!
//! Like [`NetlinkOps`](super::NetlinkOps) it lists only skiff's routes (protocol
//! [`SKIFF_ROUTE_PROTOCOL`]) and reads "already gone" answers to deletes as success. Failures are
//! injected and calls read back on the kernel ([`FakeNetOps::kernel`]).

use std::collections::BTreeSet;
use std::io;

use ipnet::Ipv4Net;

use super::ops::{
    ALREADY_GONE, FdbEntry, IfIndex, Link, Neighbour, NetOpsError, NodeNetOps, Route,
    SKIFF_ROUTE_PROTOCOL, SyscallError, VxlanSpec,
};
use crate::fake_kernel::{FakeKernel, FakeLink, FakeRoute, KernelState, LinkKind, NODE, Refused};
use crate::netns::NetnsError;

/// [`NodeNetOps`] on the fake kernel's node namespace; clones share the kernel.
#[derive(Clone, Debug, Default)]
pub struct FakeNetOps {
    kernel: FakeKernel,
}

impl FakeNetOps {
    /// A fresh kernel whose node namespace holds only `lo` (index 1, as in every namespace).
    pub fn new() -> Self {
        Self::on(FakeKernel::new())
    }

    /// The door onto `kernel` (which others may share).
    pub fn on(kernel: FakeKernel) -> Self {
        FakeNetOps { kernel }
    }

    /// The kernel behind the door: to inject failures, read calls back, look or meddle.
    pub fn kernel(&self) -> &FakeKernel {
        &self.kernel
    }

    /// Adds an up Ethernet link with `addresses` (e.g. the underlay `eth0`); returns its index.
    pub fn add_ethernet(&self, name: &str, mtu: u32, addresses: &[Ipv4Net]) -> IfIndex {
        self.kernel
            .with(|k| k.add_ethernet(NODE, name, mtu, addresses))
            .expect("a fresh link name in the node's namespace")
    }

    /// skiff's routes, as the kernel holds them now.
    pub fn current_routes(&self) -> BTreeSet<Route> {
        self.kernel.with(skiff_routes).into_iter().collect()
    }

    /// FDB entries now.
    pub fn current_fdb(&self) -> BTreeSet<FdbEntry> {
        self.kernel.with(|k| k.fdb(NODE)).into_iter().collect()
    }

    /// Permanent neighbours now.
    pub fn current_neighbours(&self) -> BTreeSet<Neighbour> {
        self.kernel
            .with(|k| k.neighbours(NODE))
            .into_iter()
            .collect()
    }

    /// The link named `name` now.
    pub fn current_link(&self, name: &str) -> Option<Link> {
        self.kernel.with(|k| k.link(NODE, name)).map(link)
    }

    /// Addresses on `index` now.
    pub fn current_addresses(&self, index: IfIndex) -> BTreeSet<Ipv4Net> {
        let link = self.kernel.with(|k| k.link_at(NODE, index));
        link.map(|l| l.addresses.into_iter().collect())
            .unwrap_or_default()
    }

    /// Is forwarding on?
    pub fn ip_forward(&self) -> bool {
        self.kernel.with(|k| k.ip_forward(NODE))
    }

    /// Records `record` and runs `op` in the node's namespace; a refusal becomes request
    /// `call`'s error.
    fn call<T>(
        &self,
        call: &'static str,
        record: String,
        op: impl FnOnce(&mut KernelState) -> Result<T, Refused>,
    ) -> Result<T, NetOpsError> {
        self.kernel.call(record, op).map_err(net_ops_error(call))
    }

    /// A delete: like the real door, an answer that the entry is already gone is success.
    fn delete(
        &self,
        call: &'static str,
        record: String,
        op: impl FnOnce(&mut KernelState) -> Result<(), Refused>,
    ) -> Result<(), NetOpsError> {
        match self.kernel.call(record, op) {
            Err(Refused::Errno(errno)) if ALREADY_GONE.contains(&errno) => Ok(()),
            other => other.map_err(net_ops_error(call)),
        }
    }
}

/// A refusal as the real door reports it.
fn net_ops_error(call: &'static str) -> impl FnOnce(Refused) -> NetOpsError {
    move |refused| match refused {
        Refused::Errno(errno) => SyscallError {
            call,
            source: io::Error::from(errno),
        }
        .into(),
        Refused::NoNamespace(path) => NetOpsError::Netns(NetnsError::Open {
            path: path.into(),
            source: io::Error::from(nix::errno::Errno::ENOENT),
        }),
    }
}

fn link(link: FakeLink) -> Link {
    Link {
        index: link.index,
        name: link.name,
        mtu: link.mtu,
        mac: Some(link.mac),
        up: link.up,
        vxlan: match link.kind {
            LinkKind::Vxlan(attrs) => Some(attrs),
            _ => None,
        },
    }
}

impl From<&Route> for FakeRoute {
    fn from(route: &Route) -> Self {
        FakeRoute {
            dst: route.dst,
            gateway: Some(route.gateway),
            oif: route.oif,
            scope_link: false,
            onlink: route.onlink,
            protocol: SKIFF_ROUTE_PROTOCOL,
        }
    }
}

/// The node's routes that are skiff's, as [`NodeNetOps::routes`] lists them.
fn skiff_routes(kernel: &mut KernelState) -> Vec<Route> {
    let routes = kernel.routes(NODE).into_iter();
    let ours = routes.filter(|r| r.protocol == SKIFF_ROUTE_PROTOCOL);
    ours.filter_map(|r| {
        Some(Route {
            dst: r.dst,
            gateway: r.gateway?,
            oif: r.oif,
            onlink: r.onlink,
        })
    })
    .collect()
}

impl NodeNetOps for FakeNetOps {
    fn link(&self, name: &str) -> Result<Option<Link>, NetOpsError> {
        self.call("RTM_GETLINK", format!("get link {name}"), |k| {
            Ok(k.link(NODE, name).map(link))
        })
    }

    fn add_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetOpsError> {
        self.call("RTM_NEWLINK", format!("add vxlan {}", spec.name), |k| {
            k.add_vxlan(NODE, spec)
        })
    }

    fn delete_link(&self, index: IfIndex) -> Result<(), NetOpsError> {
        self.call("RTM_DELLINK", format!("del link {index}"), |k| {
            k.delete_link(NODE, index)
        })
    }

    fn set_mtu(&self, index: IfIndex, mtu: u32) -> Result<(), NetOpsError> {
        self.call("RTM_SETLINK", format!("set mtu {mtu} if {index}"), |k| {
            k.set_mtu(NODE, index, mtu)
        })
    }

    fn set_up(&self, index: IfIndex) -> Result<(), NetOpsError> {
        self.call("RTM_SETLINK", format!("set up if {index}"), |k| {
            k.set_up(NODE, index)
        })
    }

    fn addresses(&self, index: IfIndex) -> Result<Vec<Ipv4Net>, NetOpsError> {
        self.call("RTM_GETADDR", format!("list addresses if {index}"), |k| {
            Ok(k.link_at(NODE, index)
                .map(|l| l.addresses)
                .unwrap_or_default())
        })
    }

    fn add_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        self.call(
            "RTM_NEWADDR",
            format!("add address {addr} if {index}"),
            |k| k.add_address(NODE, index, addr),
        )
    }

    fn del_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        self.delete(
            "RTM_DELADDR",
            format!("del address {addr} if {index}"),
            |k| k.del_address(NODE, index, addr),
        )
    }

    fn routes(&self) -> Result<Vec<Route>, NetOpsError> {
        self.call("RTM_GETROUTE", "list routes".to_owned(), |k| {
            Ok(skiff_routes(k))
        })
    }

    fn add_route(&self, route: &Route) -> Result<(), NetOpsError> {
        let route = FakeRoute::from(route);
        self.call("RTM_NEWROUTE", format!("add {route}"), |k| {
            k.add_route(NODE, route)
        })
    }

    fn del_route(&self, route: &Route) -> Result<(), NetOpsError> {
        let route = FakeRoute::from(route);
        self.delete("RTM_DELROUTE", format!("del {route}"), |k| {
            k.del_route(NODE, route)
        })
    }

    fn fdb(&self, link: IfIndex) -> Result<Vec<FdbEntry>, NetOpsError> {
        self.call("RTM_GETNEIGH", format!("list fdb if {link}"), |k| {
            Ok(k.fdb(NODE).into_iter().filter(|f| f.link == link).collect())
        })
    }

    fn add_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        self.call("RTM_NEWNEIGH(bridge)", format!("add {entry}"), |k| {
            k.add_fdb(NODE, *entry)
        })
    }

    fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        self.delete("RTM_DELNEIGH(bridge)", format!("del {entry}"), |k| {
            k.del_fdb(NODE, *entry)
        })
    }

    fn neighbours(&self, link: IfIndex) -> Result<Vec<Neighbour>, NetOpsError> {
        self.call("RTM_GETNEIGH", format!("list neighbours if {link}"), |k| {
            let all = k.neighbours(NODE).into_iter();
            Ok(all.filter(|n| n.link == link).collect())
        })
    }

    fn add_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        self.call("RTM_NEWNEIGH", format!("add {neighbour}"), |k| {
            k.add_neighbour(NODE, *neighbour)
        })
    }

    fn del_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        self.delete("RTM_DELNEIGH", format!("del {neighbour}"), |k| {
            k.del_neighbour(NODE, *neighbour)
        })
    }

    fn enable_ip_forward(&self) -> Result<(), NetOpsError> {
        self.call(
            "write(/proc/sys/net/ipv4/ip_forward)",
            "enable ip_forward".to_owned(),
            |k| k.enable_ip_forward(NODE),
        )
    }
}
