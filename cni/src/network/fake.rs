//! An in-memory kernel for the node network's unit tests (and the node agent's).
//!
//! It keeps links, addresses, skiff's routes, FDB and neighbour entries the way the kernel does
//! where the logic above depends on it: a second route to the same prefix is refused, deleting a
//! link takes its entries along, adds of FDB and neighbour entries replace. Clones share one
//! kernel, so a test can drop an agent and start another on the same state, like a restart.
//! Every call is recorded, reads included, so tests can assert that nothing was asked at all.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::Ipv4Net;
use nix::errno::Errno;

use super::ops::{
    FdbEntry, IfIndex, Link, MacAddr, Neighbour, NetOpsError, NodeNetOps, Route, SyscallError,
    VxlanAttrs, VxlanSpec,
};

/// A fake kernel; clones share state.
#[derive(Clone, Debug, Default)]
pub struct FakeNetOps {
    kernel: Arc<Mutex<FakeKernel>>,
}

#[derive(Debug, Default)]
struct FakeKernel {
    links: BTreeMap<IfIndex, Link>,
    addresses: BTreeMap<IfIndex, BTreeSet<Ipv4Net>>,
    routes: BTreeSet<Route>,
    fdb: BTreeSet<FdbEntry>,
    neighbours: BTreeSet<Neighbour>,
    ip_forward: bool,
    last_index: IfIndex,
    calls: Vec<String>,
    fail_on: Option<String>,
}

impl FakeNetOps {
    /// An empty kernel (just no links at all).
    pub fn new() -> Self {
        Self::default()
    }

    fn kernel(&self) -> MutexGuard<'_, FakeKernel> {
        // A test that panicked while holding the lock has failed already; keep the state.
        self.kernel.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds an up Ethernet link with `addresses` (e.g. the underlay `eth0`); returns its index.
    pub fn add_ethernet(&self, name: &str, mtu: u32, addresses: &[Ipv4Net]) -> IfIndex {
        let mut kernel = self.kernel();
        let index = kernel.next_index();
        kernel.links.insert(
            index,
            Link {
                index,
                name: name.to_owned(),
                mtu,
                mac: Some(MacAddr([0x02, 0, 0, 0, 0, index as u8])),
                up: true,
                vxlan: None,
            },
        );
        kernel
            .addresses
            .insert(index, addresses.iter().copied().collect());
        index
    }

    /// Makes the next call whose record starts with `call` fail with EIO (once).
    pub fn fail_next(&self, call: &str) {
        self.kernel().fail_on = Some(call.to_owned());
    }

    /// Every call since the last `take_calls`, oldest first.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.kernel().calls)
    }

    /// skiff's routes, as the kernel holds them now.
    pub fn current_routes(&self) -> BTreeSet<Route> {
        self.kernel().routes.clone()
    }

    /// FDB entries now.
    pub fn current_fdb(&self) -> BTreeSet<FdbEntry> {
        self.kernel().fdb.clone()
    }

    /// Permanent neighbours now.
    pub fn current_neighbours(&self) -> BTreeSet<Neighbour> {
        self.kernel().neighbours.clone()
    }

    /// The link named `name` now.
    pub fn current_link(&self, name: &str) -> Option<Link> {
        self.kernel().by_name(name).cloned()
    }

    /// Addresses on `index` now.
    pub fn current_addresses(&self, index: IfIndex) -> BTreeSet<Ipv4Net> {
        self.kernel()
            .addresses
            .get(&index)
            .cloned()
            .unwrap_or_default()
    }

    /// Is forwarding on?
    pub fn ip_forward(&self) -> bool {
        self.kernel().ip_forward
    }

    /// Records `call`, failing it if asked to; then runs `op` on the kernel.
    fn act<T>(
        &self,
        call: String,
        op: impl FnOnce(&mut FakeKernel) -> Result<T, Errno>,
    ) -> Result<T, NetOpsError> {
        let mut kernel = self.kernel();
        let fail = kernel
            .fail_on
            .as_deref()
            .is_some_and(|prefix| call.starts_with(prefix));
        kernel.calls.push(call);
        if fail {
            kernel.fail_on = None;
            return Err(errno("fake", Errno::EIO));
        }
        op(&mut kernel).map_err(|e| errno("fake", e))
    }
}

fn errno(call: &'static str, errno: Errno) -> NetOpsError {
    SyscallError {
        call,
        source: io::Error::from_raw_os_error(errno as i32),
    }
    .into()
}

impl FakeKernel {
    /// Like the kernel, never reuses an index.
    fn next_index(&mut self) -> IfIndex {
        self.last_index += 1;
        self.last_index
    }

    fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    fn link_mut(&mut self, index: IfIndex) -> Result<&mut Link, Errno> {
        self.links.get_mut(&index).ok_or(Errno::ENODEV)
    }
}

impl NodeNetOps for FakeNetOps {
    fn link(&self, name: &str) -> Result<Option<Link>, NetOpsError> {
        self.act(format!("get link {name}"), |k| Ok(k.by_name(name).cloned()))
    }

    fn add_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetOpsError> {
        self.act(format!("add vxlan {}", spec.name), |k| {
            if k.by_name(&spec.name).is_some() {
                return Err(Errno::EEXIST);
            }
            let index = k.next_index();
            let vxlan = VxlanAttrs {
                vni: Some(spec.vni),
                port: Some(spec.port),
                local: Some(spec.local),
                underlay: Some(spec.underlay),
                learning: false,
            };
            k.links.insert(
                index,
                Link {
                    index,
                    name: spec.name.clone(),
                    mtu: spec.mtu,
                    mac: Some(spec.mac),
                    up: false,
                    vxlan: Some(vxlan),
                },
            );
            Ok(())
        })
    }

    fn delete_link(&self, index: IfIndex) -> Result<(), NetOpsError> {
        self.act(format!("del link {index}"), |k| {
            k.links.remove(&index).ok_or(Errno::ENODEV)?;
            k.addresses.remove(&index);
            k.routes.retain(|r| r.oif != index);
            k.fdb.retain(|f| f.link != index);
            k.neighbours.retain(|n| n.link != index);
            Ok(())
        })
    }

    fn set_mtu(&self, index: IfIndex, mtu: u32) -> Result<(), NetOpsError> {
        self.act(format!("set mtu {mtu} if {index}"), |k| {
            k.link_mut(index)?.mtu = mtu;
            Ok(())
        })
    }

    fn set_up(&self, index: IfIndex) -> Result<(), NetOpsError> {
        self.act(format!("set up if {index}"), |k| {
            k.link_mut(index)?.up = true;
            Ok(())
        })
    }

    fn addresses(&self, index: IfIndex) -> Result<Vec<Ipv4Net>, NetOpsError> {
        self.act(format!("list addresses if {index}"), |k| {
            Ok(k.addresses
                .get(&index)
                .map(|a| a.iter().copied().collect())
                .unwrap_or_default())
        })
    }

    fn add_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        self.act(format!("add address {addr} if {index}"), |k| {
            k.link_mut(index)?;
            if k.addresses.entry(index).or_default().insert(addr) {
                Ok(())
            } else {
                Err(Errno::EEXIST)
            }
        })
    }

    fn del_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        self.act(format!("del address {addr} if {index}"), |k| {
            k.addresses.entry(index).or_default().remove(&addr);
            Ok(())
        })
    }

    fn routes(&self) -> Result<Vec<Route>, NetOpsError> {
        self.act("list routes".to_owned(), |k| {
            Ok(k.routes.iter().copied().collect())
        })
    }

    fn add_route(&self, route: &Route) -> Result<(), NetOpsError> {
        self.act(format!("add {route}"), |k| {
            k.link_mut(route.oif)?;
            if k.routes.iter().any(|r| r.dst == route.dst) {
                return Err(Errno::EEXIST);
            }
            k.routes.insert(*route);
            Ok(())
        })
    }

    fn del_route(&self, route: &Route) -> Result<(), NetOpsError> {
        self.act(format!("del {route}"), |k| {
            k.routes.remove(route);
            Ok(())
        })
    }

    fn fdb(&self, link: IfIndex) -> Result<Vec<FdbEntry>, NetOpsError> {
        self.act(format!("list fdb if {link}"), |k| {
            Ok(k.fdb.iter().filter(|f| f.link == link).copied().collect())
        })
    }

    fn add_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        self.act(format!("add {entry}"), |k| {
            k.link_mut(entry.link)?;
            k.fdb.retain(|f| (f.link, f.mac) != (entry.link, entry.mac));
            k.fdb.insert(*entry);
            Ok(())
        })
    }

    fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        self.act(format!("del {entry}"), |k| {
            k.fdb.remove(entry);
            Ok(())
        })
    }

    fn neighbours(&self, link: IfIndex) -> Result<Vec<Neighbour>, NetOpsError> {
        self.act(format!("list neighbours if {link}"), |k| {
            Ok(k.neighbours
                .iter()
                .filter(|n| n.link == link)
                .copied()
                .collect())
        })
    }

    fn add_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        self.act(format!("add {neighbour}"), |k| {
            k.link_mut(neighbour.link)?;
            k.neighbours
                .retain(|n| (n.link, n.ip) != (neighbour.link, neighbour.ip));
            k.neighbours.insert(*neighbour);
            Ok(())
        })
    }

    fn del_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        self.act(format!("del {neighbour}"), |k| {
            k.neighbours
                .retain(|n| (n.link, n.ip) != (neighbour.link, neighbour.ip));
            Ok(())
        })
    }

    fn enable_ip_forward(&self) -> Result<(), NetOpsError> {
        self.act("enable ip_forward".to_owned(), |k| {
            k.ip_forward = true;
            Ok(())
        })
    }
}
