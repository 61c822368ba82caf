//! One in-memory kernel behind both fake doors: the plugin's ([`FakeNamespaces`]) and the node
//! network's ([`FakeNetOps`]).
//!
//! The plugin and the node network ask the same kernel for different things, so their fakes
//! must not disagree on what that kernel does. This is the one model both are built on:
//! network namespaces (the node's, [`NODE`], and Pods' by netns path), each holding links
//! (loopback, Ethernet, veth pairs, VXLAN devices), addresses, routes, neighbours, FDB entries and
//! `ip_forward`. It keeps the rules the code above relies on, as the kernel does:
//! - every namespace starts with `lo` (down) at index 1; indexes count per namespace and are
//!   never reused; link names are unique per namespace;
//! - veth ends die together, and a namespace takes its links (and so their peers) with it;
//!   deleting a link takes its addresses, routes, neighbours and FDB entries along;
//! - a second route to the same prefix is refused (`EEXIST`); a route needs its device up
//!   (`ENETDOWN`) and, unless `onlink`, its gateway on-link: covered by a `scope link` route or
//!   by an address's subnet on that device (`ENETUNREACH`);
//! - adds of neighbours and FDB entries replace; deleting what is not there is an error
//!   (`ENOENT`, `ESRCH`, `EADDRNOTAVAIL`) that each door reads as its real twin does.
//!
//! Each door call goes through [`FakeKernel::call`]: it is recorded, reads included (so a test
//! can assert that nothing was asked at all), and it fails with `EIO` when a failure was queued
//! for it ([`FakeKernel::fail_next`], [`FakeKernel::fail_after`]). Records read like `ip`
//! commands, the same words from both doors: `get link eth0`, `set up if 2`,
//! `add route 10.244.2.0/24 via 10.244.2.0 if 3 onlink`, `add neigh …`, `list routes`.
//! Clones share one kernel, so a test can restart an agent on the same state, or hand one
//! kernel to the plugin and the node network at once.
//!
//! [`FakeNamespaces`]: crate::link::FakeNamespaces
//! [`FakeNetOps`]: crate::network::FakeNetOps

mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use nix::errno::Errno;

pub use state::{FakeLink, FakeRoute, KernelState, LinkKind, ROUTE_PROTOCOL_STATIC};

/// The name of the node's namespace inside the fake (Pods' are named by their netns path).
pub const NODE: &str = "node";

/// Why the fake kernel refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The kernel's answer.
    #[error("{0}")]
    Errno(#[from] Errno),
    /// There is no network namespace at this path.
    #[error("no network namespace at {0}")]
    NoNamespace(String),
}

/// The fake kernel; clones share it.
#[derive(Clone, Debug)]
pub struct FakeKernel {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Debug, Default)]
struct Shared {
    state: KernelState,
    /// Every door call, oldest first.
    calls: Vec<String>,
    /// Queued failures, matched against call records.
    failures: Vec<QueuedFailure>,
}

#[derive(Debug)]
struct QueuedFailure {
    /// The first words of the calls it applies to, e.g. `add route`.
    call: String,
    /// How many matching calls succeed before one fails.
    skip: usize,
}

impl QueuedFailure {
    fn matches(&self, record: &str) -> bool {
        record
            .strip_prefix(self.call.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
    }
}

impl Default for FakeKernel {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeKernel {
    /// A kernel with only the node's namespace, holding only `lo`.
    pub fn new() -> Self {
        let kernel = FakeKernel {
            shared: Arc::default(),
        };
        kernel.add_netns(NODE);
        kernel
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding the lock has failed already; keep the state.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a namespace `ns` (with `lo`, down, as the kernel makes it); one that exists stays.
    pub fn add_netns(&self, ns: &str) {
        self.lock().state.add_netns(ns);
    }

    /// Deletes namespace `ns`: its links go, and with them their veth peers elsewhere.
    pub fn remove_netns(&self, ns: &str) {
        self.lock().state.remove_netns(ns);
    }

    /// Makes the next call whose record begins with the words `call` fail with `EIO`.
    pub fn fail_next(&self, call: &str) {
        self.fail_after(call, 0);
    }

    /// Lets `skip` calls whose record begins with the words `call` succeed, then fails the next.
    pub fn fail_after(&self, call: &str, skip: usize) {
        self.lock().failures.push(QueuedFailure {
            call: call.to_owned(),
            skip,
        });
    }

    /// Every call since the last `take_calls`, oldest first.
    pub fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().calls)
    }

    /// Runs `f` on the kernel's state, to look or to meddle, without recording a call.
    pub fn with<R>(&self, f: impl FnOnce(&mut KernelState) -> R) -> R {
        f(&mut self.lock().state)
    }

    /// One door call: records `record`, fails it if a failure is queued for it, else runs `op`.
    pub fn call<R>(
        &self,
        record: String,
        op: impl FnOnce(&mut KernelState) -> Result<R, Refused>,
    ) -> Result<R, Refused> {
        let mut shared = self.lock();
        let queued = shared.failures.iter().position(|f| f.matches(&record));
        shared.calls.push(record);
        if let Some(at) = queued {
            if shared.failures[at].skip == 0 {
                shared.failures.remove(at);
                return Err(Refused::Errno(Errno::EIO));
            }
            shared.failures[at].skip -= 1;
        }
        op(&mut shared.state)
    }
}
