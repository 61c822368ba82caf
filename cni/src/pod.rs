//! How one Pod is wired to the node: routed point-to-point, no bridge.
//!
//! ```text
//!  Pod netns                              node netns
//!  eth0 10.244.1.7/32  ═══ veth ═══  skf3f2a9c01b7d 10.244.1.1/32  ← the gateway
//!   route 10.244.1.1/32 scope link        route 10.244.1.7/32 dev skf3f2a9c01b7d scope link
//!   default via 10.244.1.1
//!   neigh 10.244.1.1 → skf…'s MAC (permanent)
//! ```
//!
//! Why routed and not a bridge (the Calico/Cilium choice): every Pod packet crosses the node's
//! IP layer, so iptables sees same-node Pod-to-Pod replies without `br_netfilter`, and a Pod
//! reaching itself through a Service (hairpin) is plain routing — no hairpin mode on bridge
//! ports. The Pod's gateway is the podCIDR's first address. Every host veth holds it as a /32
//! (the reference `ptp` plugin's way): the Pod can ping it, the node's replies and its own
//! packets to Pods leave with it as source, and it needs no `dummy` device — a module minimal
//! kernels (this project's CI VMs among them) do not build. The kernel keeps the local address
//! while any veth still holds it. The Pod learns the gateway's MAC from a permanent neighbour
//! entry, so the node needs neither proxy ARP nor any per-veth sysctl. Forwarding (`ip_forward`) and rp_filter are
//! node-wide settings left to the node agent: the plugin touches only what it creates.
//!
//! The host end's name is derived from (container ID, ifname) — `skf` + 11 hex digits of a
//! 64-bit FNV-1a hash — so DEL and GC find it with no state of their own. FNV rather than std's
//! `DefaultHasher`: the name must not change when the plugin is rebuilt with another Rust.
//!
//! Rollback: the veth pair is removed by a Drop guard unless ADD completes; the address guard
//! lives in [`crate::ipam`]. Deleting the host end takes the Pod end (and every route through
//! either) with it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::ipam::Attachment;
use crate::link::{LinkError, LinkInfo, LinkOps, MacAddr, Namespaces, RouteSpec, VethPair};
use crate::netns::NetnsError;
use crate::spec::PodCidr;
use crate::spec::error::{CniError, ErrorCode};

const HOST_VETH_PREFIX: &str = "skf";
const HASH_DIGITS: usize = 11;

/// Pod wiring failures.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A kernel step failed.
    #[error("cannot {step}")]
    Link {
        /// What was being done.
        step: String,
        /// The cause.
        #[source]
        source: LinkError,
    },
    /// `CNI_IFNAME` is taken in the Pod's namespace.
    #[error("interface {ifname} already exists in {}", netns.display())]
    InterfaceExists {
        /// The name.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// CHECK found differences.
    #[error("attachment differs from what ADD made: {0}")]
    CheckFailed(String),
}

impl PodError {
    /// The CNI error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            PodError::Link {
                source: LinkError::Netns(NetnsError::Open { .. } | NetnsError::Enter { .. }),
                ..
            } => ErrorCode::NetnsUnavailable,
            PodError::Link {
                source: LinkError::Netns(NetnsError::Start(_) | NetnsError::Gone),
                ..
            } => ErrorCode::Internal,
            PodError::Link { .. } => ErrorCode::Netlink,
            PodError::InterfaceExists { .. } => ErrorCode::InterfaceExists,
            PodError::CheckFailed(_) => ErrorCode::CheckFailed,
        }
    }
}

impl From<PodError> for CniError {
    fn from(err: PodError) -> Self {
        CniError::new(err.code(), err.to_string(), crate::error_chain(&err))
    }
}

fn step(step: impl Into<String>) -> impl FnOnce(LinkError) -> PodError {
    let step = step.into();
    move |source| PodError::Link { step, source }
}

/// The node's Pod network as the plugin sees it.
#[derive(Clone, Copy, Debug)]
pub struct PodNetwork {
    /// The podCIDR; its first address is the gateway.
    pub cidr: PodCidr,
    /// MTU of both veth ends.
    pub mtu: u32,
}

/// Both ends of a wired Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wired {
    /// The node's end.
    pub host: LinkInfo,
    /// The Pod's end.
    pub pod: LinkInfo,
}

/// The node-side veth name of `who`: `skf` + 11 hex digits, 14 bytes.
pub fn host_veth_name(who: &Attachment) -> String {
    let hex = format!("{:016x}", attachment_hash(who));
    format!("{HOST_VETH_PREFIX}{}", &hex[..HASH_DIGITS])
}

/// The host end's MAC address: locally administered, from the same hash as its name. Set when
/// the veth is made, so systemd-udevd's `MACAddressPolicy=persistent` leaves it alone (it
/// rewrites only kernel-chosen random addresses, some time after creation) and the Pod's
/// permanent neighbour entry for its gateway keeps naming the right address.
pub fn host_veth_mac(who: &Attachment) -> MacAddr {
    let [_, _, a, b, c, d, e, f] = attachment_hash(who).to_be_bytes();
    MacAddr([(a & 0xfe) | 0x02, b, c, d, e, f])
}

fn attachment_hash(who: &Attachment) -> u64 {
    // FNV-1a, 64 bit; a 0 byte separates the fields so ("ab","c") differs from ("a","bc").
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = who
        .container_id
        .bytes()
        .chain([0])
        .chain(who.ifname.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Is `name` shaped like a host veth name this plugin makes?
pub fn is_host_veth_name(name: &str) -> bool {
    name.strip_prefix(HOST_VETH_PREFIX).is_some_and(|rest| {
        rest.len() == HASH_DIGITS
            && rest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

fn host_route(ip: Ipv4Addr, oif: u32) -> RouteSpec {
    RouteSpec {
        dst: Ipv4Net::from(ip),
        gateway: None,
        oif,
        scope_link: true,
    }
}

fn gateway_route(gateway: Ipv4Addr, oif: u32) -> RouteSpec {
    host_route(gateway, oif)
}

fn default_route(gateway: Ipv4Addr, oif: u32) -> RouteSpec {
    RouteSpec {
        dst: Ipv4Net::default(),
        gateway: Some(gateway),
        oif,
        scope_link: false,
    }
}

fn missing(call: &'static str) -> LinkError {
    LinkError::syscall(call, std::io::Error::from_raw_os_error(nix::libc::ENODEV))
}

/// Removes the veth pair unless disarmed: an ADD that fails after creating it leaves nothing.
struct VethGuard<'a, N: Namespaces> {
    namespaces: &'a N,
    name: &'a str,
    armed: bool,
}

impl<N: Namespaces> Drop for VethGuard<'_, N> {
    fn drop(&mut self) {
        if self.armed
            && let Err(err) = delete_host_veth(self.namespaces, self.name)
        {
            eprintln!(
                "skiff-cni: could not remove {} after a failed ADD: {err}",
                self.name
            );
        }
    }
}

fn delete_host_veth<N: Namespaces>(namespaces: &N, name: &str) -> Result<bool, LinkError> {
    namespaces.node(|ops| match ops.link(name)? {
        None => Ok(false),
        Some(link) => match ops.delete_link(link.index) {
            Err(err) if err.is_missing() => Ok(false),
            other => other.map(|()| true),
        },
    })
}

/// Wires `who` into the namespace at `netns` with address `ip`.
pub fn attach<N: Namespaces>(
    namespaces: &N,
    net: PodNetwork,
    who: &Attachment,
    netns: &Path,
    ip: Ipv4Addr,
) -> Result<Wired, PodError> {
    let gateway = net.cidr.gateway();
    let ifname = who.ifname.as_str();
    let taken = namespaces
        .pod(netns, |ops| {
            if let Some(lo) = ops.link("lo")?.filter(|lo| !lo.up) {
                ops.set_up(lo.index)?;
            }
            Ok(ops.link(ifname)?.is_some())
        })
        .map_err(step("prepare the Pod's namespace"))?;
    if taken {
        return Err(PodError::InterfaceExists {
            ifname: ifname.to_owned(),
            netns: netns.to_owned(),
        });
    }

    let host_name = host_veth_name(who);
    namespaces
        .node(|ops| {
            // Same attachment, Pod end not in this netns: a leftover of an earlier attempt.
            if let Some(stale) = ops.link(&host_name)? {
                ops.delete_link(stale.index)?;
            }
            ops.add_veth(&VethPair {
                name: host_name.clone(),
                mac: host_veth_mac(who),
                peer: ifname.to_owned(),
                peer_netns: netns.to_owned(),
                mtu: net.mtu,
            })
        })
        .map_err(step(format!("create veth {host_name} / {ifname}")))?;
    let mut guard = VethGuard {
        namespaces,
        name: &host_name,
        armed: true,
    };

    let host = namespaces
        .node(|ops| {
            let host = ops
                .link(&host_name)?
                .ok_or_else(|| missing("RTM_GETLINK host veth"))?;
            ops.set_up(host.index)?;
            ops.add_address(host.index, Ipv4Net::from(gateway))?;
            ops.add_route(&host_route(ip, host.index))?;
            ops.link(&host_name)?
                .ok_or_else(|| missing("RTM_GETLINK host veth"))
        })
        .map_err(step(format!(
            "set up {host_name}, the gateway and the route to {ip}"
        )))?;

    let host_mac = host.mac;
    let pod = namespaces
        .pod(netns, |ops| {
            let pod = ops
                .link(ifname)?
                .ok_or_else(|| missing("RTM_GETLINK pod veth"))?;
            ops.set_up(pod.index)?;
            ops.add_address(pod.index, Ipv4Net::from(ip))?;
            ops.add_route(&gateway_route(gateway, pod.index))?;
            ops.add_route(&default_route(gateway, pod.index))?;
            ops.add_neighbour(pod.index, gateway, host_mac)?;
            ops.link(ifname)?
                .ok_or_else(|| missing("RTM_GETLINK pod veth"))
        })
        .map_err(step(format!("configure {ifname} in the Pod")))?;

    guard.armed = false;
    Ok(Wired { host, pod })
}

/// Removes `who`'s veth pair if it exists; true when something was removed. Idempotent.
pub fn detach<N: Namespaces>(namespaces: &N, who: &Attachment) -> Result<bool, PodError> {
    let name = host_veth_name(who);
    delete_host_veth(namespaces, &name).map_err(step(format!("delete {name}")))
}

/// Removes every host veth of ours that belongs to none of `keep`; returns their names.
pub fn sweep<N: Namespaces>(namespaces: &N, keep: &[Attachment]) -> Result<Vec<String>, PodError> {
    let wanted: Vec<String> = keep.iter().map(host_veth_name).collect();
    namespaces
        .node(|ops| {
            let mut removed = Vec::new();
            for link in ops.links()? {
                if is_host_veth_name(&link.name) && !wanted.contains(&link.name) {
                    match ops.delete_link(link.index) {
                        Err(err) if err.is_missing() => {}
                        other => other?,
                    }
                    removed.push(link.name);
                }
            }
            Ok(removed)
        })
        .map_err(step("sweep stale host veths"))
}

/// Verifies `who` is wired as [`attach`] left it; lists every difference found.
pub fn check<N: Namespaces>(
    namespaces: &N,
    net: PodNetwork,
    who: &Attachment,
    netns: &Path,
    ip: Ipv4Addr,
) -> Result<Wired, PodError> {
    let gateway = net.cidr.gateway();
    let host_name = host_veth_name(who);
    let host = namespaces
        .node(|ops| {
            let wanted = LinkWiring {
                label: format!("host veth {host_name}"),
                name: &host_name,
                address: Ipv4Net::from(gateway),
                routes: &|index| vec![host_route(ip, index)],
            };
            wanted.inspect(ops)
        })
        .map_err(step("inspect the node's namespace"))?;
    let pod = namespaces
        .pod(netns, |ops| {
            let wanted = LinkWiring {
                label: format!("{} in the Pod", who.ifname),
                name: &who.ifname,
                address: Ipv4Net::from(ip),
                routes: &|index| vec![gateway_route(gateway, index), default_route(gateway, index)],
            };
            wanted.inspect(ops)
        })
        .map_err(step("inspect the Pod's namespace"))?;
    match (host, pod) {
        ((Some(host), host_problems), (Some(pod), pod_problems))
            if host_problems.is_empty() && pod_problems.is_empty() =>
        {
            Ok(Wired { host, pod })
        }
        ((_, mut problems), (_, pod_problems)) => {
            problems.extend(pod_problems);
            Err(PodError::CheckFailed(problems.join("; ")))
        }
    }
}

/// How one end of the veth should look: up, holding `address`, with `routes` out of it.
struct LinkWiring<'a> {
    /// How to name it in a problem, e.g. `eth0 in the Pod`.
    label: String,
    name: &'a str,
    address: Ipv4Net,
    /// The routes it should carry, given its index.
    routes: &'a dyn Fn(u32) -> Vec<RouteSpec>,
}

impl LinkWiring<'_> {
    /// The link, if it exists, and every way it differs from what is wanted.
    fn inspect(
        &self,
        ops: &mut impl LinkOps,
    ) -> Result<(Option<LinkInfo>, Vec<String>), LinkError> {
        let label = &self.label;
        let Some(link) = ops.link(self.name)? else {
            return Ok((None, vec![format!("{label} is missing")]));
        };
        let mut problems = Vec::new();
        if !link.up {
            problems.push(format!("{label} is down"));
        }
        if !ops.addresses(link.index)?.contains(&self.address) {
            problems.push(format!("{label} lacks {}", self.address));
        }
        let routes = ops.routes(link.index)?;
        for wanted in (self.routes)(link.index) {
            if !routes.contains(&wanted) {
                problems.push(format!("{label} lacks the route to {}", wanted.dst));
            }
        }
        Ok((Some(link), problems))
    }
}

#[cfg(test)]
mod tests;
