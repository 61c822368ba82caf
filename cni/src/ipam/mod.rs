//! IPAM: one address per (container ID, ifname) from the node's podCIDR, never two owners.
//!
//! The split follows host-local's allocator / store: [`Ipam`] decides (pure rules over an
//! [`Allocations`] value), an [`IpamStore`] keeps that value consistent between processes
//! ([`DiskStore`]: one JSON file under an exclusive `flock`; [`MemoryStore`] for tests). Every
//! decision is one read-modify-write under the store's lock, so 100 concurrent ADD processes
//! serialize on the lock and never hand out one address twice.
//!
//! Rules:
//! - The network address, the gateway (first address) and the broadcast address are never
//!   handed out.
//! - Allocation is round-robin from the last address handed out, as host-local does, so an
//!   address freed by a DEL is not reused at once (conntrack entries and peers' caches of the old
//!   Pod age out first).
//! - A reservation is keyed by container ID **and** ifname: a Pod with two interfaces on the
//!   network gets two addresses, and asking again with the same pair returns the same address.
//! - [`Reservation`] is a Drop guard: an ADD that fails half way releases the address it took
//!   unless it called [`Reservation::commit`]. It releases only an address it *newly* took: a
//!   repeated ADD for a live attachment must not free the address the running Pod still uses.
//! - A process killed mid-ADD runs no destructor; what it reserved stays until the runtime's DEL
//!   or a GC whose valid list lacks it.

pub mod store;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use store::{Allocations, DiskStore, IpamStore, MemoryStore};

use crate::spec::PodCidr;
use crate::spec::error::{CniError, ErrorCode};

/// Who holds an address: the spec's (container ID, ifname) pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl Attachment {
    /// The pair (`container_id`, `ifname`).
    pub fn new(container_id: &str, ifname: &str) -> Self {
        Attachment {
            container_id: container_id.to_owned(),
            ifname: ifname.to_owned(),
        }
    }
}

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Reading, writing or locking the state failed.
    #[error("cannot {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not what we write.
    #[error("ipam state {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Every address of the podCIDR is taken.
    #[error("no free address left in {cidr}")]
    Exhausted {
        /// The podCIDR.
        cidr: PodCidr,
    },
}

impl IpamError {
    /// The CNI error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            IpamError::Io { .. } => ErrorCode::Io,
            IpamError::Corrupt { .. } => ErrorCode::CorruptState,
            IpamError::Exhausted { .. } => ErrorCode::NoFreeAddress,
        }
    }
}

impl From<IpamError> for CniError {
    fn from(err: IpamError) -> Self {
        CniError::new(err.code(), err.to_string(), crate::error_chain(&err))
    }
}

/// The allocator over one podCIDR and one store.
#[derive(Debug)]
pub struct Ipam<S> {
    store: S,
    cidr: PodCidr,
}

impl<S: IpamStore> Ipam<S> {
    /// Allocates from `cidr`, keeping state in `store`.
    pub fn new(store: S, cidr: PodCidr) -> Self {
        Ipam { store, cidr }
    }

    /// The address of `who`: the one it already holds, else the next free one.
    pub fn reserve(&self, who: &Attachment) -> Result<Reservation<'_, S>, IpamError> {
        let cidr = self.cidr;
        let taken = self.store.update(|state| match state.find(who) {
            Some(ip) => Some((ip, false)),
            None => state.allocate(cidr, who).map(|ip| (ip, true)),
        })?;
        let (ip, fresh) = taken.ok_or(IpamError::Exhausted { cidr })?;
        Ok(Reservation {
            ipam: self,
            who: who.clone(),
            ip,
            armed: fresh,
        })
    }

    /// The address `who` holds, if any.
    pub fn lookup(&self, who: &Attachment) -> Result<Option<Ipv4Addr>, IpamError> {
        self.store.update(|state| state.find(who))
    }

    /// Frees every address `who` holds; returns the first, if any. Idempotent.
    pub fn release(&self, who: &Attachment) -> Result<Option<Ipv4Addr>, IpamError> {
        self.store.update(|state| {
            let held: Vec<Ipv4Addr> = state
                .reservations
                .iter()
                .filter(|(_, owner)| *owner == who)
                .map(|(ip, _)| *ip)
                .collect();
            held.iter().for_each(|ip| {
                state.reservations.remove(ip);
            });
            held.first().copied()
        })
    }

    /// Frees `ip` if `who` still holds it (a check-and-free in one lock hold).
    pub fn release_exact(&self, ip: Ipv4Addr, who: &Attachment) -> Result<bool, IpamError> {
        self.store.update(|state| {
            let owned = state.reservations.get(&ip) == Some(who);
            if owned {
                state.reservations.remove(&ip);
            }
            owned
        })
    }

    /// Reservations whose holder is not in `valid` (GC's candidates).
    pub fn stale(&self, valid: &[Attachment]) -> Result<Vec<(Ipv4Addr, Attachment)>, IpamError> {
        self.store.update(|state| {
            state
                .reservations
                .iter()
                .filter(|(_, owner)| !valid.contains(owner))
                .map(|(ip, owner)| (*ip, owner.clone()))
                .collect()
        })
    }

    /// How many addresses of the podCIDR are still free.
    pub fn free(&self) -> Result<usize, IpamError> {
        let cidr = self.cidr;
        self.store.update(|state| {
            let used = state
                .reservations
                .keys()
                .filter(|ip| is_usable(cidr, **ip))
                .count();
            usable_count(cidr).saturating_sub(used)
        })
    }
}

/// An address taken for an ADD in progress; released on drop unless committed.
#[derive(Debug)]
#[must_use = "dropping a reservation releases it"]
pub struct Reservation<'a, S: IpamStore> {
    ipam: &'a Ipam<S>,
    who: Attachment,
    ip: Ipv4Addr,
    /// True when this ADD took the address (so a failure must give it back).
    armed: bool,
}

impl<S: IpamStore> Reservation<'_, S> {
    /// The reserved address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Keeps the address: the ADD succeeded.
    pub fn commit(mut self) -> Ipv4Addr {
        self.armed = false;
        self.ip
    }
}

impl<S: IpamStore> Drop for Reservation<'_, S> {
    fn drop(&mut self) {
        if self.armed
            && let Err(err) = self.ipam.release_exact(self.ip, &self.who)
        {
            // Nothing else to do from a destructor; DEL or GC will release it.
            eprintln!(
                "skiff-cni: could not release {} after a failed ADD: {err}",
                self.ip
            );
        }
    }
}

/// The first and last address handed out: past the gateway, before the broadcast address.
fn usable_range(cidr: PodCidr) -> (u32, u32) {
    let net = cidr.net();
    (u32::from(net.network()) + 2, u32::from(net.broadcast()) - 1)
}

fn usable_count(cidr: PodCidr) -> usize {
    let (first, last) = usable_range(cidr);
    (last - first + 1) as usize
}

fn is_usable(cidr: PodCidr, ip: Ipv4Addr) -> bool {
    let (first, last) = usable_range(cidr);
    (first..=last).contains(&u32::from(ip))
}

impl Allocations {
    /// The address `who` holds, if any.
    pub fn find(&self, who: &Attachment) -> Option<Ipv4Addr> {
        self.reservations
            .iter()
            .find(|(_, owner)| *owner == who)
            .map(|(ip, _)| *ip)
    }

    /// Takes the next free address after the last one handed out (wrapping), for `who`.
    fn allocate(&mut self, cidr: PodCidr, who: &Attachment) -> Option<Ipv4Addr> {
        let (first, last) = usable_range(cidr);
        let size = last - first + 1;
        let start = self
            .last_reserved
            .filter(|ip| is_usable(cidr, *ip))
            .map_or(0, |ip| u32::from(ip) - first + 1);
        let ip = (0..size)
            .map(|step| Ipv4Addr::from(first + (start + step) % size))
            .find(|ip| !self.reservations.contains_key(ip))?;
        self.reservations.insert(ip, who.clone());
        self.last_reserved = Some(ip);
        Some(ip)
    }
}

#[cfg(test)]
mod tests;
