//! Our own recent writes, laid over a reflector's store.
//!
//! A reflector learns of a Pod this controller created only when the watch event comes back.
//! A reconcile that runs before that (triggered by, say, its own status write) would see too
//! few Pods and create more: Kubernetes guards with "expectations". We keep the objects our
//! writes returned (and the uids we deleted) for a while and let them win over the store until
//! the store has caught up (its resourceVersion reaches ours, or the deleted uid is gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Resource;

/// How long a write is trusted over the store at most (Kubernetes' expectations TTL is 5 min).
const TTL: Duration = Duration::from_secs(60);

enum Written<K> {
    Object(Arc<K>),
    Deleted,
}

struct Entry<K> {
    written: Written<K>,
    at: Instant,
}

/// Writes not yet seen in the store, by uid.
pub struct Overlay<K> {
    entries: Mutex<HashMap<String, Entry<K>>>,
}

impl<K> std::fmt::Debug for Overlay<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.entries.lock().map_or(0, |e| e.len());
        f.debug_struct("Overlay")
            .field("pending", &pending)
            .finish()
    }
}

impl<K> Default for Overlay<K> {
    fn default() -> Self {
        Overlay {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

fn revision<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

impl<K: Resource> Overlay<K> {
    /// Remembers an object a create or update returned.
    pub fn wrote(&self, object: K) {
        if let Some(uid) = object.meta().uid.clone() {
            self.lock().insert(
                uid,
                Entry {
                    written: Written::Object(Arc::new(object)),
                    at: Instant::now(),
                },
            );
        }
    }

    /// Remembers that the object with `uid` was deleted.
    pub fn deleted(&self, uid: &str) {
        self.lock().insert(
            uid.to_owned(),
            Entry {
                written: Written::Deleted,
                at: Instant::now(),
            },
        );
    }

    /// The store's `objects` with our newer writes in place of theirs.
    pub fn view(&self, objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
        let mut entries = self.lock();
        entries.retain(|_, e| e.at.elapsed() < TTL);
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(objects.len());
        for object in objects {
            let Some(uid) = object.meta().uid.clone() else {
                out.push(object);
                continue;
            };
            seen.insert(uid.clone());
            match entries.get(&uid).map(|e| &e.written) {
                None => out.push(object),
                Some(Written::Deleted) => {}
                Some(Written::Object(ours)) => match (revision(&*object), revision(&**ours)) {
                    (Some(theirs), Some(mine)) if theirs < mine => out.push(Arc::clone(ours)),
                    _ => {
                        entries.remove(&uid);
                        out.push(object);
                    }
                },
            }
        }
        entries.retain(|uid, e| match &e.written {
            // The store no longer has it: the deletion has been seen.
            Written::Deleted => seen.contains(uid),
            Written::Object(_) => true,
        });
        for (uid, entry) in entries.iter() {
            if let Written::Object(ours) = &entry.written
                && !seen.contains(uid)
            {
                out.push(Arc::clone(ours));
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry<K>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(uid: &str, rv: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.into());
        pod.metadata.resource_version = Some(rv.into());
        pod
    }

    fn rvs(view: &[Arc<Pod>]) -> Vec<String> {
        let mut out: Vec<String> = view
            .iter()
            .map(|p| {
                format!(
                    "{}@{}",
                    p.metadata.uid.as_deref().unwrap(),
                    p.metadata.resource_version.as_deref().unwrap()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn created_objects_show_until_the_store_has_them() {
        let overlay = Overlay::default();
        overlay.wrote(pod("a", "5"));
        assert_eq!(rvs(&overlay.view(vec![])), ["a@5"]);
        assert_eq!(rvs(&overlay.view(vec![Arc::new(pod("a", "7"))])), ["a@7"]);
        // Caught up: the entry is gone, so a later store state is taken as is.
        assert_eq!(rvs(&overlay.view(vec![])), Vec::<String>::new());
    }

    #[test]
    fn newer_writes_win_over_an_older_store() {
        let overlay = Overlay::default();
        overlay.wrote(pod("a", "9"));
        assert_eq!(rvs(&overlay.view(vec![Arc::new(pod("a", "3"))])), ["a@9"]);
    }

    #[test]
    fn deleted_objects_hide_until_the_store_drops_them() {
        let overlay = Overlay::default();
        overlay.deleted("a");
        let store = vec![Arc::new(pod("a", "3")), Arc::new(pod("b", "4"))];
        assert_eq!(rvs(&overlay.view(store)), ["b@4"]);
        assert_eq!(rvs(&overlay.view(vec![])), Vec::<String>::new());
        // A uid seen again after the store dropped it is not hidden any more.
        assert_eq!(rvs(&overlay.view(vec![Arc::new(pod("a", "3"))])), ["a@3"]);
    }
}
