//! The watch cache: one store watch for the whole registry, fanned out to every HTTP watcher.
//!
//! kube-apiserver's lesson: a thousand watchers must not mean a thousand store watches or a
//! thousand decodes of each change. One task follows the store from the revision it started at,
//! decodes each change once (JSON text included), keeps the last `capacity` changes of every
//! resource in a ring, and broadcasts them. A watcher that resumes from a revision still in its
//! resource's ring is served from memory; an older one is sent to the store's own history (which
//! survives restarts) and gets 410 only when that history was compacted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::broadcast;

use crate::apiserver::objects;
use crate::resources::{self, Resource};
use crate::store::{EventKind, Revision, Store, WatchEvent};

/// One change, decoded once for every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    /// Put or Delete.
    pub kind: EventKind,
    /// The store key (says namespace and name).
    pub key: String,
    /// The change's revision.
    pub revision: Revision,
    /// The object after the change (for a delete: its last state, at the delete's revision).
    pub object: Value,
    /// `object` as JSON text.
    pub object_json: String,
    /// The object before the change, if it existed.
    pub prev: Option<Value>,
}

impl CachedEvent {
    /// Decodes a store event of `resource`.
    pub fn decode(resource: &Resource, event: &WatchEvent) -> Option<Self> {
        let object = objects::decode(resource, &event.kv).ok()?;
        let prev = event
            .prev
            .as_ref()
            .and_then(|kv| objects::decode(resource, kv).ok());
        let object_json = serde_json::to_string(&object).ok()?;
        Some(CachedEvent {
            kind: event.kind,
            key: event.kv.key.clone(),
            revision: event.kv.mod_revision,
            object,
            object_json,
            prev,
        })
    }
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every change of this resource with a revision above this is in `events` (or still coming).
    complete_after: Revision,
    sender: broadcast::Sender<Arc<CachedEvent>>,
}

/// What a watcher gets from the cache: the backlog after its revision, then live changes.
#[derive(Debug)]
pub struct Subscription {
    /// Changes already cached, oldest first.
    pub backlog: Vec<Arc<CachedEvent>>,
    /// Live changes; may repeat revisions at or below the asked one, which the watcher skips.
    pub live: broadcast::Receiver<Arc<CachedEvent>>,
}

/// The cache; cheap to share.
pub struct WatchCache {
    rings: Mutex<HashMap<&'static str, Ring>>,
    latest: Mutex<Revision>,
    capacity: usize,
}

impl std::fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchCache")
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// Live events a slow watcher may fall behind by before it is cut off (it then re-watches).
const LIVE_BUFFER: usize = 4096;

impl WatchCache {
    /// Starts following `store` from its current revision; keeps `capacity` changes per resource.
    pub async fn start<S: Store>(
        store: Arc<S>,
        capacity: usize,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        let start = store.current_revision().await?;
        let rings = resources::RESOURCES
            .iter()
            .map(|r| {
                (
                    r.plural,
                    Ring {
                        events: VecDeque::new(),
                        complete_after: start,
                        sender: broadcast::channel(LIVE_BUFFER).0,
                    },
                )
            })
            .collect();
        let cache = Arc::new(WatchCache {
            rings: Mutex::new(rings),
            latest: Mutex::new(start),
            capacity: capacity.max(1),
        });
        let mut changes = store.watch("/registry/", start).await?;
        let feeder = Arc::clone(&cache);
        tokio::spawn(async move {
            while let Some(event) = changes.recv().await {
                feeder.push(&event);
            }
            tracing::error!("the store's watch ended: the watch cache no longer follows changes");
        });
        Ok(cache)
    }

    fn push(&self, event: &WatchEvent) {
        let revision = event.kv.mod_revision;
        *self.latest.lock().expect("latest lock") = revision;
        let Some(resource) = resources::for_key(&event.kv.key) else {
            return;
        };
        let Some(cached) = CachedEvent::decode(resource, event) else {
            tracing::warn!(key = %event.kv.key, "undecodable change left out of the watch cache");
            return;
        };
        let cached = Arc::new(cached);
        let mut rings = self.rings.lock().expect("rings lock");
        let Some(ring) = rings.get_mut(resource.plural) else {
            return;
        };
        if ring.events.len() == self.capacity
            && let Some(evicted) = ring.events.pop_front()
        {
            ring.complete_after = evicted.revision;
        }
        ring.events.push_back(Arc::clone(&cached));
        // No receivers is fine: nobody watches this resource now.
        let _ = ring.sender.send(cached);
    }

    /// The newest revision the cache has seen.
    pub fn latest_revision(&self) -> Revision {
        *self.latest.lock().expect("latest lock")
    }

    /// Changes of `resource` after `after`, if the cache still has all of them.
    pub fn subscribe(&self, resource: &Resource, after: Revision) -> Option<Subscription> {
        let rings = self.rings.lock().expect("rings lock");
        let ring = rings.get(resource.plural)?;
        if after < ring.complete_after {
            return None;
        }
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Some(Subscription {
            backlog,
            live: ring.sender.subscribe(),
        })
    }

    /// How many watchers follow `resource` now.
    pub fn watchers(&self, resource: &Resource) -> usize {
        self.rings
            .lock()
            .expect("rings lock")
            .get(resource.plural)
            .map_or(0, |r| r.sender.receiver_count())
    }
}
