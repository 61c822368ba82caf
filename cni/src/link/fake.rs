//! The fake kernel: namespaces holding links, addresses, routes and neighbours, with the rules
//! the plugin relies on (veth ends die together, a namespace takes its links with it, names are
//! unique per namespace, a route needs its device up and its gateway on-link).
//!
//! Any operation can be made to fail once ([`FakeNamespaces::fail_next`]) to drive the plugin's
//! rollback paths.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use ipnet::Ipv4Net;
use nix::libc;

use super::{LinkError, LinkInfo, LinkOps, MacAddr, Namespaces, RouteSpec};
use crate::netns::NetnsError;

/// The name of the node's namespace inside the fake.
pub const NODE: &str = "node";

/// Everything the fake kernel holds.
#[derive(Debug, Default)]
pub struct FakeKernel {
    namespaces: BTreeMap<String, FakeNs>,
    next_index: u32,
    /// (operation, calls to let succeed before failing one).
    failures: Vec<(&'static str, usize)>,
}

#[derive(Debug, Default)]
struct FakeNs {
    links: BTreeMap<u32, FakeLink>,
    addresses: Vec<(u32, Ipv4Net)>,
    routes: Vec<RouteSpec>,
    neighbours: Vec<(u32, Ipv4Addr, MacAddr)>,
}

#[derive(Debug)]
struct FakeLink {
    info: LinkInfo,
    /// The other end of a veth: (namespace, index).
    peer: Option<(String, u32)>,
}

fn errno(call: &'static str, code: i32) -> LinkError {
    LinkError::syscall(call, io::Error::from_raw_os_error(code))
}

impl FakeKernel {
    fn ns(&mut self, ns: &str) -> &mut FakeNs {
        self.namespaces.entry(ns.to_owned()).or_default()
    }

    fn new_link(&mut self, ns: &str, name: &str, mtu: u32) -> u32 {
        self.next_index += 1;
        let index = self.next_index;
        let [_, _, a, b] = index.to_be_bytes();
        let info = LinkInfo {
            index,
            name: name.to_owned(),
            mac: MacAddr([0x02, 0, 0, 0, a, b]),
            mtu,
            up: false,
        };
        self.ns(ns)
            .links
            .insert(index, FakeLink { info, peer: None });
        index
    }

    fn find(&self, ns: &str, name: &str) -> Option<&LinkInfo> {
        let ns = self.namespaces.get(ns)?;
        ns.links.values().map(|l| &l.info).find(|l| l.name == name)
    }

    /// The link `name` in namespace `ns` (`"node"` or a netns path).
    pub fn link(&self, ns: &str, name: &str) -> Option<LinkInfo> {
        self.find(ns, name).cloned()
    }

    /// Names of the links in `ns`.
    pub fn link_names(&self, ns: &str) -> Vec<String> {
        self.namespaces
            .get(ns)
            .map(|n| n.links.values().map(|l| l.info.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Addresses on link `name` in `ns`.
    pub fn addresses(&self, ns: &str, name: &str) -> Vec<Ipv4Net> {
        let Some(index) = self.find(ns, name).map(|l| l.index) else {
            return Vec::new();
        };
        self.namespaces[ns]
            .addresses
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, a)| *a)
            .collect()
    }

    /// Every route in `ns`.
    pub fn routes(&self, ns: &str) -> Vec<RouteSpec> {
        self.namespaces
            .get(ns)
            .map(|n| n.routes.clone())
            .unwrap_or_default()
    }

    /// Neighbour entries in `ns`: (link index, ip, mac).
    pub fn neighbours(&self, ns: &str) -> Vec<(u32, Ipv4Addr, MacAddr)> {
        self.namespaces
            .get(ns)
            .map(|n| n.neighbours.clone())
            .unwrap_or_default()
    }

    /// Deletes link `name` in `ns` as `ip link del` would (its veth peer goes too).
    pub fn delete_by_name(&mut self, ns: &str, name: &str) -> bool {
        let index = self.find(ns, name).map(|l| l.index);
        index.is_some_and(|index| self.remove_link(ns, index))
    }

    fn remove_link(&mut self, ns: &str, index: u32) -> bool {
        let Some(state) = self.namespaces.get_mut(ns) else {
            return false;
        };
        let Some(link) = state.links.remove(&index) else {
            return false;
        };
        state.addresses.retain(|(i, _)| *i != index);
        state.routes.retain(|r| r.oif != index);
        state.neighbours.retain(|(i, _, _)| *i != index);
        if let Some((peer_ns, peer)) = link.peer {
            self.remove_link(&peer_ns, peer);
        }
        true
    }
}

/// The fake [`Namespaces`]: the node's namespace plus Pod namespaces registered by path.
#[derive(Clone, Debug, Default)]
pub struct FakeNamespaces {
    kernel: Arc<Mutex<FakeKernel>>,
}

impl FakeNamespaces {
    /// A node namespace holding only `lo`.
    pub fn new() -> Self {
        let fake = FakeNamespaces::default();
        fake.with(|k| k.new_link(NODE, "lo", 65536));
        fake
    }

    /// Creates a Pod namespace at `path` (with `lo`, down, as the kernel makes it).
    pub fn add_netns(&self, path: &str) {
        self.with(|k| k.new_link(path, "lo", 65536));
    }

    /// Deletes the namespace at `path`; its veths' peers elsewhere die with it.
    pub fn remove_netns(&self, path: &str) {
        self.with(|k| {
            let indexes: Vec<u32> = k
                .namespaces
                .get(path)
                .map(|n| n.links.keys().copied().collect())
                .unwrap_or_default();
            for index in indexes {
                k.remove_link(path, index);
            }
            k.namespaces.remove(path);
        });
    }

    /// Makes the next call of operation `op` (a [`LinkOps`] method name) fail with `EIO`.
    pub fn fail_next(&self, op: &'static str) {
        self.fail_after(op, 0);
    }

    /// Lets `skip` calls of `op` succeed, then fails the next one with `EIO`.
    pub fn fail_after(&self, op: &'static str, skip: usize) {
        self.with(|k| k.failures.push((op, skip)));
    }

    /// Runs `f` on the fake kernel (to look or to meddle).
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeKernel) -> R) -> R {
        f(&mut self.kernel.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn ops(&self, ns: &str) -> FakeLinkOps {
        FakeLinkOps {
            kernel: Arc::clone(&self.kernel),
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
        let key = netns.to_string_lossy();
        if !self.with(|k| k.namespaces.contains_key(key.as_ref())) {
            return Err(LinkError::Netns(NetnsError::Open {
                path: netns.to_owned(),
                source: io::Error::from_raw_os_error(libc::ENOENT),
            }));
        }
        batch(&mut self.ops(&key))
    }
}

/// [`LinkOps`] on one namespace of the fake kernel.
#[derive(Debug)]
pub struct FakeLinkOps {
    kernel: Arc<Mutex<FakeKernel>>,
    ns: String,
}

impl FakeLinkOps {
    /// Runs `f` as operation `op`, failing instead when a failure was queued for it.
    fn op<R>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut FakeKernel, &str) -> Result<R, LinkError>,
    ) -> Result<R, LinkError> {
        let mut kernel = self.kernel.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = kernel.failures.iter().position(|(f, _)| *f == op) {
            if kernel.failures[at].1 == 0 {
                kernel.failures.remove(at);
                return Err(errno(op, libc::EIO));
            }
            kernel.failures[at].1 -= 1;
        }
        f(&mut kernel, &self.ns)
    }
}

fn link_mut<'a>(
    k: &'a mut FakeKernel,
    ns: &str,
    index: u32,
    call: &'static str,
) -> Result<&'a mut FakeLink, LinkError> {
    k.ns(ns)
        .links
        .get_mut(&index)
        .ok_or_else(|| errno(call, libc::ENODEV))
}

impl LinkOps for FakeLinkOps {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        self.op("link", |k, ns| Ok(k.link(ns, name)))
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        self.op("links", |k, ns| {
            Ok(k.ns(ns).links.values().map(|l| l.info.clone()).collect())
        })
    }

    fn add_veth(
        &mut self,
        name: &str,
        mac: MacAddr,
        peer: &str,
        peer_netns: &Path,
        mtu: u32,
    ) -> Result<(), LinkError> {
        self.op("add_veth", |k, ns| {
            let peer_ns = peer_netns.to_string_lossy().into_owned();
            if !k.namespaces.contains_key(&peer_ns) {
                return Err(LinkError::Netns(NetnsError::Open {
                    path: peer_netns.to_owned(),
                    source: io::Error::from_raw_os_error(libc::ENOENT),
                }));
            }
            if k.find(ns, name).is_some() || k.find(&peer_ns, peer).is_some() {
                return Err(errno("add_veth", libc::EEXIST));
            }
            let here = k.new_link(ns, name, mtu);
            link_mut(k, ns, here, "add_veth")?.info.mac = mac;
            let there = k.new_link(&peer_ns, peer, mtu);
            link_mut(k, ns, here, "add_veth")?.peer = Some((peer_ns.clone(), there));
            link_mut(k, &peer_ns, there, "add_veth")?.peer = Some((ns.to_owned(), here));
            Ok(())
        })
    }

    fn set_up(&mut self, index: u32) -> Result<(), LinkError> {
        self.op("set_up", |k, ns| {
            link_mut(k, ns, index, "set_up")?.info.up = true;
            Ok(())
        })
    }

    fn add_address(&mut self, index: u32, address: Ipv4Net) -> Result<(), LinkError> {
        self.op("add_address", |k, ns| {
            link_mut(k, ns, index, "add_address")?;
            let state = k.ns(ns);
            if state.addresses.contains(&(index, address)) {
                return Err(errno("add_address", libc::EEXIST));
            }
            state.addresses.push((index, address));
            Ok(())
        })
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, LinkError> {
        self.op("addresses", |k, ns| {
            let state = k.ns(ns);
            Ok(state
                .addresses
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, a)| *a)
                .collect())
        })
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<(), LinkError> {
        self.op("add_route", |k, ns| {
            if !link_mut(k, ns, route.oif, "add_route")?.info.up {
                return Err(errno("add_route", libc::ENETDOWN));
            }
            let state = k.ns(ns);
            if state.routes.iter().any(|r| r.dst == route.dst) {
                return Err(errno("add_route", libc::EEXIST));
            }
            let on_link = |gw: Ipv4Addr| {
                state
                    .routes
                    .iter()
                    .any(|r| r.oif == route.oif && r.scope_link && r.dst.contains(&gw))
            };
            if route.gateway.is_some_and(|gw| !on_link(gw)) {
                return Err(errno("add_route", libc::ENETUNREACH));
            }
            state.routes.push(route.clone());
            Ok(())
        })
    }

    fn routes(&mut self, oif: u32) -> Result<Vec<RouteSpec>, LinkError> {
        self.op("routes", |k, ns| {
            Ok(k.ns(ns)
                .routes
                .iter()
                .filter(|r| r.oif == oif)
                .cloned()
                .collect())
        })
    }

    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<(), LinkError> {
        self.op("add_neighbour", |k, ns| {
            link_mut(k, ns, index, "add_neighbour")?;
            let state = k.ns(ns);
            state
                .neighbours
                .retain(|(i, n, _)| !(*i == index && *n == ip));
            state.neighbours.push((index, ip, mac));
            Ok(())
        })
    }

    fn delete_link(&mut self, index: u32) -> Result<(), LinkError> {
        self.op("delete_link", |k, ns| {
            if k.remove_link(ns, index) {
                Ok(())
            } else {
                Err(errno("delete_link", libc::ENODEV))
            }
        })
    }
}
