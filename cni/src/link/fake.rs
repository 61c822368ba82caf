//! The plugin's door onto the one fake kernel ([`crate::fake_kernel`]): [`Namespaces`] over its
//! namespaces, [`LinkOps`] over one of them, speaking in [`LinkInfo`] and [`RouteSpec`].
//!
//! Failures are injected and calls read back on the kernel ([`FakeNamespaces::kernel`]), with the
//! words its records use, e.g. `fail_after("add route", 1)`.

use std::io;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use nix::libc;

use super::{LinkError, LinkInfo, LinkOps, MacAddr, Namespaces, RouteSpec, VethPair};
use crate::fake_kernel::{
    FakeKernel, FakeLink, FakeRoute, KernelState, NODE, ROUTE_PROTOCOL_STATIC, Refused,
};
use crate::netns::NetnsError;
use crate::network::Neighbour;

/// The fake [`Namespaces`]: the node's namespace plus Pod namespaces named by their path.
#[derive(Clone, Debug, Default)]
pub struct FakeNamespaces {
    kernel: FakeKernel,
}

impl FakeNamespaces {
    /// A fresh kernel whose node namespace holds only `lo`.
    pub fn new() -> Self {
        Self::on(FakeKernel::new())
    }

    /// The door onto `kernel` (which others may share).
    pub fn on(kernel: FakeKernel) -> Self {
        FakeNamespaces { kernel }
    }

    /// The kernel behind the door: to add Pod namespaces, inject failures, look or meddle.
    pub fn kernel(&self) -> &FakeKernel {
        &self.kernel
    }

    fn ops(&self, ns: &str) -> FakeLinkOps {
        FakeLinkOps {
            kernel: self.kernel.clone(),
            ns: ns.to_owned(),
        }
    }
}

impl Namespaces for FakeNamespaces {
    type Ops = FakeLinkOps;

    fn node<R, F>(&self, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut FakeLinkOps) -> Result<R, LinkError> + Send,
    {
        batch(&mut self.ops(NODE))
    }

    fn pod<R, F>(&self, netns: &Path, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut FakeLinkOps) -> Result<R, LinkError> + Send,
    {
        let ns = netns.to_string_lossy();
        if !self.kernel.with(|k| k.has_netns(&ns)) {
            return Err(link_error("open netns")(Refused::NoNamespace(ns.into())));
        }
        batch(&mut self.ops(&ns))
    }
}

/// [`LinkOps`] on one namespace of the fake kernel.
#[derive(Debug)]
pub struct FakeLinkOps {
    kernel: FakeKernel,
    ns: String,
}

impl FakeLinkOps {
    /// Records `record` and runs `op` in this namespace; a refusal becomes request `call`'s error.
    fn call<R>(
        &self,
        call: &'static str,
        record: String,
        op: impl FnOnce(&mut KernelState, &str) -> Result<R, Refused>,
    ) -> Result<R, LinkError> {
        self.kernel
            .call(record, |k| op(k, &self.ns))
            .map_err(link_error(call))
    }
}

/// A refusal as the real door reports it: a missing namespace fails to open, the rest is errno.
fn link_error(call: &'static str) -> impl FnOnce(Refused) -> LinkError {
    move |refused| match refused {
        Refused::Errno(errno) => LinkError::syscall(call, io::Error::from(errno)),
        Refused::NoNamespace(path) => LinkError::Netns(NetnsError::Open {
            path: path.into(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        }),
    }
}

fn link_info(link: FakeLink) -> LinkInfo {
    LinkInfo {
        index: link.index,
        name: link.name,
        mac: link.mac,
        mtu: link.mtu,
        up: link.up,
    }
}

impl From<&RouteSpec> for FakeRoute {
    fn from(route: &RouteSpec) -> Self {
        FakeRoute {
            dst: route.dst,
            gateway: route.gateway,
            oif: route.oif,
            scope_link: route.scope_link,
            onlink: false,
            protocol: ROUTE_PROTOCOL_STATIC,
        }
    }
}

fn route_spec(route: FakeRoute) -> RouteSpec {
    RouteSpec {
        dst: route.dst,
        gateway: route.gateway,
        oif: route.oif,
        scope_link: route.scope_link,
    }
}

impl LinkOps for FakeLinkOps {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        self.call("RTM_GETLINK", format!("get link {name}"), |k, ns| {
            Ok(k.link(ns, name).map(link_info))
        })
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        self.call("RTM_GETLINK dump", "list links".to_owned(), |k, ns| {
            Ok(k.links(ns).into_iter().map(link_info).collect())
        })
    }

    fn add_veth(&mut self, veth: &VethPair) -> Result<(), LinkError> {
        let record = format!(
            "add veth {} peer {} netns {}",
            veth.name,
            veth.peer,
            veth.peer_netns.display()
        );
        self.call("RTM_NEWLINK veth", record, |k, ns| k.add_veth(ns, veth))
    }

    fn set_up(&mut self, index: u32) -> Result<(), LinkError> {
        self.call("RTM_SETLINK up", format!("set up if {index}"), |k, ns| {
            k.set_up(ns, index)
        })
    }

    fn add_address(&mut self, index: u32, address: Ipv4Net) -> Result<(), LinkError> {
        let record = format!("add address {address} if {index}");
        self.call("RTM_NEWADDR", record, |k, ns| {
            k.add_address(ns, index, address)
        })
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, LinkError> {
        let record = format!("list addresses if {index}");
        self.call("RTM_GETADDR dump", record, |k, ns| {
            Ok(k.link_at(ns, index)
                .map(|l| l.addresses)
                .unwrap_or_default())
        })
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<(), LinkError> {
        let route = FakeRoute::from(route);
        self.call("RTM_NEWROUTE", format!("add {route}"), |k, ns| {
            k.add_route(ns, route)
        })
    }

    fn routes(&mut self, oif: u32) -> Result<Vec<RouteSpec>, LinkError> {
        self.call(
            "RTM_GETROUTE dump",
            format!("list routes if {oif}"),
            |k, ns| {
                let routes = k.routes(ns).into_iter().filter(|r| r.oif == oif);
                Ok(routes.map(route_spec).collect())
            },
        )
    }

    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<(), LinkError> {
        let neighbour = Neighbour {
            link: index,
            ip,
            mac,
        };
        self.call("RTM_NEWNEIGH", format!("add {neighbour}"), |k, ns| {
            k.add_neighbour(ns, neighbour)
        })
    }

    fn delete_link(&mut self, index: u32) -> Result<(), LinkError> {
        self.call("RTM_DELLINK", format!("del link {index}"), |k, ns| {
            k.delete_link(ns, index)
        })
    }
}
