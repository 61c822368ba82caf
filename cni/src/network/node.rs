//! [`NodeNetwork`]: set up once, then keep the kernel's per-node entries equal to the node list.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::NodeNetworkError;
use super::config::{
    Backend, NodeNetworkConfig, RemoteNode, VXLAN_OVERHEAD, VxlanConfig, vtep_mac,
};
use super::desired::{Entries, Entry, Links, desired, remote_nodes};
use super::masquerade;
use super::netlink::NetlinkOps;
use super::ops::{IfIndex, Link, NetOpsError, NodeNetOps, VxlanSpec};
use crate::netns::NetnsThread;
use skiff_iptables::{Iptables, RealIptables};

/// What one sync changed, in the order it changed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries deleted (no longer wanted, or left over from before a restart).
    pub removed: Vec<Entry>,
    /// Entries created.
    pub added: Vec<Entry>,
}

impl SyncReport {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
}

/// This node's cross-node networking: host-gw routes or a VXLAN overlay, and egress masquerade.
#[derive(Debug)]
pub struct NodeNetwork<O: NodeNetOps, I: Iptables> {
    config: NodeNetworkConfig,
    ops: O,
    iptables: I,
    /// What we know the kernel holds; `None` until set up, and again after any failure.
    programmed: Option<Programmed>,
}

#[derive(Debug)]
struct Programmed {
    links: Links,
    entries: Entries,
}

/// The iptables door of the node's namespace thread.
pub type NodeIptables = RealIptables<Arc<NetnsThread>>;

/// The node network on the real kernel.
pub type RealNodeNetwork = NodeNetwork<NetlinkOps, NodeIptables>;

impl RealNodeNetwork {
    /// The real thing, working inside the network namespace at `netns` (`None`: this process's).
    /// Nothing is changed until the first [`sync`](Self::sync).
    pub fn open(config: NodeNetworkConfig, netns: Option<&Path>) -> Result<Self, NodeNetworkError> {
        config.validate()?;
        let thread = Arc::new(NetnsThread::spawn(netns)?);
        let ops = NetlinkOps::open(Arc::clone(&thread)).map_err(kernel("opening netlink"))?;
        Self::new(config, ops, RealIptables::in_namespace(thread))
    }
}

impl<O: NodeNetOps, I: Iptables> NodeNetwork<O, I> {
    /// A node network over the given kernel doors; checks `config`, changes nothing yet.
    pub fn new(config: NodeNetworkConfig, ops: O, iptables: I) -> Result<Self, NodeNetworkError> {
        config.validate()?;
        Ok(NodeNetwork {
            config,
            ops,
            iptables,
            programmed: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NodeNetworkConfig {
        &self.config
    }

    /// The kernel door (tests inspect the fake through it).
    pub fn ops(&self) -> &O {
        &self.ops
    }

    /// Makes the kernel hold exactly the entries `remotes` need. The first sync (and the first
    /// after a failure or [`invalidate`](Self::invalidate)) also sets up the device, forwarding
    /// and masquerade and reads back what the kernel already holds, adopting a previous run's
    /// state; later syncs diff against memory and touch only entries that changed. `remotes` may
    /// include this node. A bad list is refused whole, before anything changes. Blocks for the
    /// netlink round trips: call it from a blocking context, not a tokio task.
    pub fn sync(&mut self, remotes: &[RemoteNode]) -> Result<SyncReport, NodeNetworkError> {
        let remotes = remote_nodes(&self.config, remotes)?;
        let mut state = match self.programmed.take() {
            Some(state) => state,
            None => self.prepare()?,
        };
        let want = match desired(&state.links, &remotes) {
            Ok(want) => want,
            Err(err) => {
                self.programmed = Some(state);
                return Err(err);
            }
        };
        let mut report = SyncReport::default();
        apply(&self.ops, &mut state.entries, &want, &mut report)?;
        // Only a fully applied sync is trusted as a baseline; after an error `programmed` stays
        // empty and the next sync reads the kernel again.
        self.programmed = Some(state);
        Ok(report)
    }

    /// Forgets what was programmed, so the next sync re-reads the kernel and repairs drift.
    pub fn invalidate(&mut self) {
        self.programmed = None;
    }

    /// Removes everything the node network made: its routes, the VXLAN device (and with it every
    /// FDB and neighbour entry), and the masquerade rules. Leaves `ip_forward` on, since Pods on
    /// this node still need it. Safe to call twice.
    pub fn teardown(&mut self) -> Result<(), NodeNetworkError> {
        self.programmed = None;
        for route in self.ops.routes().map_err(kernel("listing routes"))? {
            self.ops
                .del_route(&route)
                .map_err(kernel(format!("deleting {route}")))?;
        }
        if let Backend::Vxlan(vxlan) = &self.config.backend
            && let Some(link) = self
                .ops
                .link(&vxlan.device)
                .map_err(kernel("reading link"))?
            && link.vxlan.is_some()
        {
            self.ops
                .delete_link(link.index)
                .map_err(kernel(format!("deleting {}", vxlan.device)))?;
        }
        masquerade::remove(&self.iptables)?;
        Ok(())
    }

    /// One-time setup, then the kernel's current entries as the baseline.
    fn prepare(&self) -> Result<Programmed, NodeNetworkError> {
        let config = &self.config;
        let underlay = self
            .ops
            .link(&config.underlay)
            .map_err(kernel("reading the underlay"))?
            .ok_or_else(|| NodeNetworkError::NoUnderlay(config.underlay.clone()))?;
        let on_link = self
            .ops
            .addresses(underlay.index)
            .map_err(kernel("reading underlay addresses"))?;
        if !on_link.iter().any(|net| net.addr() == config.node_ip) {
            return Err(NodeNetworkError::NodeIpNotOnUnderlay {
                ip: config.node_ip,
                underlay: config.underlay.clone(),
            });
        }
        self.ops
            .enable_ip_forward()
            .map_err(kernel("enabling ip_forward"))?;
        let links = match &config.backend {
            Backend::HostGw => Links::HostGw {
                underlay: underlay.index,
                on_link,
            },
            Backend::Vxlan(vxlan) => Links::Vxlan {
                device: self.ensure_vxlan(vxlan, &underlay)?,
            },
        };
        masquerade::ensure(&self.iptables, config.cluster_cidr)?;
        let mut entries = Entries {
            routes: collect(self.ops.routes(), "listing routes")?,
            ..Entries::default()
        };
        if let Links::Vxlan { device } = links {
            entries.fdb = collect(self.ops.fdb(device), "listing fdb")?;
            entries.neighbours = collect(self.ops.neighbours(device), "listing neighbours")?;
        }
        Ok(Programmed { links, entries })
    }

    /// Makes the VXLAN device exist as configured (recreating one that differs), with its MTU,
    /// its single `<podCIDR network>/32` address, and up. Returns its index.
    fn ensure_vxlan(
        &self,
        vxlan: &VxlanConfig,
        underlay: &Link,
    ) -> Result<IfIndex, NodeNetworkError> {
        let config = &self.config;
        let mtu = underlay
            .mtu
            .checked_sub(VXLAN_OVERHEAD)
            .filter(|mtu| *mtu >= 576)
            .ok_or_else(|| {
                NodeNetworkError::Config(format!(
                    "underlay MTU {} is too small for VXLAN",
                    underlay.mtu
                ))
            })?;
        let spec = VxlanSpec {
            name: vxlan.device.clone(),
            vni: vxlan.vni,
            port: vxlan.port,
            local: config.node_ip,
            underlay: underlay.index,
            mac: vtep_mac(config.node_ip),
            mtu,
        };
        let existing = self.ops.link(&spec.name).map_err(kernel("reading link"))?;
        let device = match existing {
            Some(link) if link.is_vxlan_like(&spec) => link,
            other => {
                if let Some(stale) = other {
                    self.ops
                        .delete_link(stale.index)
                        .map_err(kernel(format!("deleting mismatched {}", spec.name)))?;
                }
                self.ops
                    .add_vxlan(&spec)
                    .map_err(kernel(format!("creating {}", spec.name)))?;
                self.ops
                    .link(&spec.name)
                    .map_err(kernel("reading link"))?
                    .ok_or_else(|| NodeNetworkError::Vanished(spec.name.clone()))?
            }
        };
        if device.mtu != mtu {
            self.ops
                .set_mtu(device.index, mtu)
                .map_err(kernel(format!("setting MTU of {}", spec.name)))?;
        }
        let want = config.vxlan_address();
        let have = self
            .ops
            .addresses(device.index)
            .map_err(kernel("reading addresses"))?;
        for addr in have.iter().filter(|a| **a != want) {
            self.ops
                .del_address(device.index, *addr)
                .map_err(kernel(format!("removing {addr} from {}", spec.name)))?;
        }
        if !have.contains(&want) {
            self.ops
                .add_address(device.index, want)
                .map_err(kernel(format!("adding {want} to {}", spec.name)))?;
        }
        if !device.up {
            self.ops
                .set_up(device.index)
                .map_err(kernel(format!("setting {} up", spec.name)))?;
        }
        Ok(device.index)
    }
}

/// Deletes what is no longer wanted, then adds what is missing; `have` follows every success.
/// Deletes go route → neighbour → FDB and adds the other way round, so a route never points at
/// a neighbour or VTEP that is not there.
fn apply(
    ops: &impl NodeNetOps,
    have: &mut Entries,
    want: &Entries,
    report: &mut SyncReport,
) -> Result<(), NodeNetworkError> {
    for route in stale(&have.routes, &want.routes) {
        ops.del_route(&route)
            .map_err(kernel(format!("deleting {route}")))?;
        have.routes.remove(&route);
        report.removed.push(Entry::Route(route));
    }
    for neighbour in stale(&have.neighbours, &want.neighbours) {
        ops.del_neighbour(&neighbour)
            .map_err(kernel(format!("deleting {neighbour}")))?;
        have.neighbours.remove(&neighbour);
        report.removed.push(Entry::Neighbour(neighbour));
    }
    for fdb in stale(&have.fdb, &want.fdb) {
        ops.del_fdb(&fdb)
            .map_err(kernel(format!("deleting {fdb}")))?;
        have.fdb.remove(&fdb);
        report.removed.push(Entry::Fdb(fdb));
    }
    for fdb in stale(&want.fdb, &have.fdb) {
        ops.add_fdb(&fdb).map_err(kernel(format!("adding {fdb}")))?;
        have.fdb.insert(fdb);
        report.added.push(Entry::Fdb(fdb));
    }
    for neighbour in stale(&want.neighbours, &have.neighbours) {
        ops.add_neighbour(&neighbour)
            .map_err(kernel(format!("adding {neighbour}")))?;
        have.neighbours.insert(neighbour);
        report.added.push(Entry::Neighbour(neighbour));
    }
    for route in stale(&want.routes, &have.routes) {
        ops.add_route(&route)
            .map_err(kernel(format!("adding {route}")))?;
        have.routes.insert(route);
        report.added.push(Entry::Route(route));
    }
    Ok(())
}

/// Members of `a` missing from `b`.
fn stale<T: Ord + Copy>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> Vec<T> {
    a.difference(b).copied().collect()
}

fn collect<T: Ord>(
    listed: Result<Vec<T>, NetOpsError>,
    action: &str,
) -> Result<BTreeSet<T>, NodeNetworkError> {
    Ok(listed.map_err(kernel(action))?.into_iter().collect())
}

/// Wraps a kernel failure with what we were doing.
fn kernel(action: impl Into<String>) -> impl FnOnce(NetOpsError) -> NodeNetworkError {
    let action = action.into();
    move |source| NodeNetworkError::Kernel { action, source }
}
