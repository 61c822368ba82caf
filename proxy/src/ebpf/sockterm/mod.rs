//! Ending connected UDP sockets whose backend left the Service they were translated through.
//!
//! The socket load balancer rewrites a connected UDP socket's peer once, at `connect()`. When
//! that backend leaves the Service (its Pod deleted, the slice now listing another), the socket
//! keeps sending to it: there is no conntrack entry for the proxy to delete, as iptables mode
//! does. So after a sync the data plane ends those sockets, as Cilium does; the application
//! gets `ECONNABORTED` on its next call and reconnects — DNS resolvers and real clients do —
//! through the Service again, to a live backend. TCP is left alone, as in Cilium's default: a
//! TCP connection to a dead Pod fails by itself (reset, or a timeout the application owns),
//! and ending healthy connections to a Pod that is merely not ready any more would hurt.
//!
//! How, and where:
//! - Which: [`departed()`] compares the maps before and after a sync; the kernel side ends a
//!   socket only if its `SKIFF_REVNAT` entry shows it reached that backend through that
//!   frontend (`skiff_ebpf_common::sockterm::ends_socket`), so sockets connected to a Pod
//!   address directly are never touched. Sockets connected to a frontend's own address before
//!   the proxy wrote it (a client that started first) went out untranslated; they end when
//!   the frontend gets backends, like the conntrack entries kube-proxy clears then.
//! - With what: a BPF `iter/udp` program calling the `bpf_sock_destroy` kfunc (Linux 6.5+)
//!   ends each socket under the socket's own lock, with no netlink dump to parse and no race
//!   between finding a socket and ending it. aya cannot declare kfuncs, so the call is written
//!   by hand and its BTF id filled in at load ([`crate::ebpf::loader`]); [`iter`] runs it.
//!   Without the kfunc (older kernels) the data plane runs without this, and says so once.
//! - In which namespaces: a UDP iterator walks the table of the namespace it is opened in, and
//!   Pods' sockets live in the Pods' namespaces. Nothing that iterates sockets across
//!   namespaces may end them: the kfunc wants a trusted socket its caller holds locked, which
//!   only the TCP and UDP iterators hand over (a socket-storage map iterator reaches every
//!   namespace, but its sockets are neither), so the proxy enters each namespace.
//!   Which ones comes from the node's cgroup ([`netns`]): both the standalone `skiff-proxy`
//!   and the one in `skiff-node` know it, and its processes are exactly the ones the socket
//!   programs translate, whereas only the agent knows its Pods.
//!
//! Ending sockets is best effort, like deleting conntrack entries: a failure is logged and
//! does not fail the sync, whose map writes stand. Pairs from a sync cut short before its
//! writes were done are kept and ended after the next successful one, unless the backend is
//! back by then.

pub mod departed;
pub mod fake;
pub mod iter;
pub mod netns;

use std::collections::BTreeSet;

use skiff_ebpf_common::sockterm::SockTermKey;
use tracing::warn;

use crate::ebpf::plane::SyncFollowUp;
use crate::ebpf::socket_lb::SocketLbState;

pub use departed::{departed, still_due};
pub use fake::{FakeSocket, FakeSockets};
pub use iter::AyaSockTerm;

/// Why sockets could not be ended.
#[derive(Debug, thiserror::Error)]
pub enum SockTermError {
    /// The namespaces to look in could not be listed.
    #[error(transparent)]
    List(#[from] netns::ListError),
    /// The departed pairs could not be handed to the kernel.
    #[error("cannot {op} map {}", skiff_ebpf_common::sockterm::SOCK_TERM_MAP)]
    Map {
        /// What was tried.
        op: &'static str,
        /// The kernel's answer.
        #[source]
        source: aya::maps::MapError,
    },
    /// The iterator program is not in the loaded object (cannot happen after a load).
    #[error(
        "the iterator program {} is not loaded",
        skiff_ebpf_common::sockterm::SOCK_TERM_PROGRAM
    )]
    NotLoaded,
    /// A fake failed on purpose.
    #[error("injected failure")]
    Injected,
}

/// Ends the connected UDP sockets that reached a departed backend through a frontend.
pub trait SocketTerminator: Send {
    /// Ends every socket that reached one of `departed`'s backends through its frontend;
    /// returns how many ended.
    fn end_sockets(&mut self, departed: &BTreeSet<SockTermKey>) -> Result<usize, SockTermError>;
}

/// A data plane that ends no sockets (tests of map contents, kernels without the kfunc).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTermination;

impl SocketTerminator for NoTermination {
    fn end_sockets(&mut self, _: &BTreeSet<SockTermKey>) -> Result<usize, SockTermError> {
        Ok(0)
    }
}

/// A terminator that may be missing (the kernel lacks the kfunc): then nothing ends.
impl<T: SocketTerminator> SocketTerminator for Option<T> {
    fn end_sockets(&mut self, departed: &BTreeSet<SockTermKey>) -> Result<usize, SockTermError> {
        match self {
            Some(terminator) => terminator.end_sockets(departed),
            None => Ok(0),
        }
    }
}

/// The socket plane's follow-up: after each sync, ends the sockets of the (frontend, backend)
/// pairs that left the maps, through `T`.
#[derive(Debug, Default)]
pub struct EndDepartedSockets<T> {
    terminator: T,
    /// Pairs whose sockets are still to be ended: a sync that failed midway may already have
    /// written them out of the maps, where the next one cannot see.
    due: BTreeSet<SockTermKey>,
}

impl<T> EndDepartedSockets<T> {
    /// Ends sockets through `terminator`.
    pub fn new(terminator: T) -> Self {
        EndDepartedSockets {
            terminator,
            due: BTreeSet::new(),
        }
    }

    /// The terminator.
    pub fn terminator(&self) -> &T {
        &self.terminator
    }
}

impl<T: SocketTerminator> SyncFollowUp<SocketLbState> for EndDepartedSockets<T> {
    fn changing(&mut self, before: &SocketLbState, after: &SocketLbState) {
        self.due.extend(departed(before, after));
    }

    fn clearing(&mut self) {
        self.due.clear();
    }

    /// Ends the sockets of the pairs still due in `now`; best effort, like conntrack deletes
    /// in iptables mode. Returns how many ended.
    fn synced(&mut self, now: &SocketLbState) -> usize {
        self.due.retain(|key| still_due(now, key));
        let due = std::mem::take(&mut self.due);
        if due.is_empty() {
            return 0;
        }
        match self.terminator.end_sockets(&due) {
            Ok(ended) => ended,
            Err(err) => {
                warn!(
                    error = &err as &dyn std::error::Error,
                    pairs = due.len(),
                    "cannot end UDP sockets connected to departed backends"
                );
                0
            }
        }
    }
}

#[cfg(test)]
mod tests;
