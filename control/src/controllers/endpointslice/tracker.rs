//! Remembers what this controller wrote, so a reconcile never acts on a store that has not yet
//! seen its own last writes.
//!
//! The reflector stores trail the API: right after creating a slice, the next reconcile could
//! still find the slice missing and create another (Kubernetes' `endpointSliceTracker` and
//! `StaleInformerCache` exist for this). Each write is recorded with the resourceVersion the
//! API answered; until the store shows at least that version (or no longer shows a deleted
//! object), the Service's store view is stale and its reconcile waits. resourceVersions are
//! compared as numbers, which holds for skiff-control and etcd-backed apiservers; an entry
//! also expires after [`EXPIRY`], so a write undone by someone else cannot block forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a recorded write may keep a Service's view stale.
pub const EXPIRY: Duration = Duration::from_secs(10);

/// Which kind of object a write touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A discovery.k8s.io/v1 EndpointSlice.
    Slice,
    /// A v1 Endpoints.
    Endpoints,
}

/// A Service, by namespace and name.
pub type ServiceKey = (String, String);

/// What the store must show for a written object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// At least this resourceVersion.
    AtLeast(u64),
    /// Gone.
    Deleted,
}

/// One Service's writes not yet seen, by object, with when they were made.
type Writes = HashMap<(Kind, String), (Expect, Instant)>;

/// The writes per Service not yet seen in the stores.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: Mutex<HashMap<ServiceKey, Writes>>,
}

/// Reads a resourceVersion as the number it is in skiff-control.
fn version(rv: Option<&str>) -> Option<u64> {
    rv.and_then(|rv| rv.parse().ok())
}

impl Tracker {
    /// Records a create or update that answered with `resource_version`.
    pub fn wrote(
        &self,
        service: &ServiceKey,
        kind: Kind,
        name: &str,
        resource_version: Option<&str>,
    ) {
        if let Some(rv) = version(resource_version) {
            self.record(service, kind, name, Expect::AtLeast(rv));
        }
    }

    /// Records a delete.
    pub fn deleted(&self, service: &ServiceKey, kind: Kind, name: &str) {
        self.record(service, kind, name, Expect::Deleted);
    }

    fn record(&self, service: &ServiceKey, kind: Kind, name: &str, expect: Expect) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending
            .entry(service.clone())
            .or_default()
            .insert((kind, name.to_owned()), (expect, Instant::now()));
    }

    /// Whether the stores still miss a write for `service`; `seen(kind, name)` gives the
    /// resourceVersion the store holds (None: not in the store). Satisfied entries are dropped.
    pub fn is_stale(
        &self,
        service: &ServiceKey,
        seen: impl Fn(Kind, &str) -> Option<String>,
    ) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(writes) = pending.get_mut(service) else {
            return false;
        };
        writes.retain(|(kind, name), (expect, at)| {
            if at.elapsed() > EXPIRY {
                tracing::debug!(?kind, %name, "a write never seen in the store: given up");
                return false;
            }
            let held = seen(*kind, name);
            match expect {
                Expect::Deleted => held.is_some(),
                Expect::AtLeast(rv) => match held {
                    None => true,
                    // A version we cannot read as a number: trust the store.
                    Some(held) => version(Some(&held)).is_some_and(|held| held < *rv),
                },
            }
        });
        let stale = !writes.is_empty();
        if !stale {
            pending.remove(service);
        }
        stale
    }

    /// Forgets a Service (it was deleted).
    pub fn forget(&self, service: &ServiceKey) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.remove(service);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceKey {
        ("default".into(), "web".into())
    }

    #[test]
    fn a_write_is_stale_until_the_store_shows_its_version() {
        let tracker = Tracker::default();
        assert!(!tracker.is_stale(&svc(), |_, _| None));
        tracker.wrote(&svc(), Kind::Slice, "web-abcde", Some("7"));
        assert!(tracker.is_stale(&svc(), |_, _| None));
        assert!(tracker.is_stale(&svc(), |_, _| Some("6".into())));
        assert!(!tracker.is_stale(&svc(), |_, _| Some("7".into())));
        // Satisfied entries are gone: an older store view no longer counts as stale.
        assert!(!tracker.is_stale(&svc(), |_, _| None));
    }

    #[test]
    fn a_delete_is_stale_until_the_object_leaves_the_store() {
        let tracker = Tracker::default();
        tracker.deleted(&svc(), Kind::Endpoints, "web");
        assert!(tracker.is_stale(&svc(), |_, _| Some("3".into())));
        assert!(!tracker.is_stale(&svc(), |kind, name| {
            (kind == Kind::Slice && name == "web").then(|| "3".into())
        }));
    }

    #[test]
    fn services_are_tracked_apart_and_can_be_forgotten() {
        let tracker = Tracker::default();
        let other = ("default".to_owned(), "db".to_owned());
        tracker.wrote(&svc(), Kind::Slice, "web-abcde", Some("7"));
        assert!(!tracker.is_stale(&other, |_, _| None));
        tracker.forget(&svc());
        assert!(!tracker.is_stale(&svc(), |_, _| None));
    }
}
