//! The index fed from the API: one watch of Services and one of EndpointSlices (every slice,
//! headless ones included — unlike the proxy, DNS names exactly those), each change written
//! into the index as it arrives, so a new Service is a name as soon as its event is read.
//!
//! Until both first lists are in, the server is not ready (`/ready` says 503): answering
//! NXDOMAIN for a Service that exists but was not listed yet would be cached by clients.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use skiff_common::relist::{Change, changes};

use crate::index::Index;
use crate::metrics::Metrics;

/// Whether each watch has delivered its first complete list.
#[derive(Debug, Default)]
pub struct Synced {
    services: AtomicBool,
    slices: AtomicBool,
}

impl Synced {
    /// Both lists are in.
    pub fn ready(&self) -> bool {
        self.services.load(Ordering::Acquire) && self.slices.load(Ordering::Acquire)
    }
}

/// Keeps `index` up to date with the cluster until the client is gone.
pub async fn run(
    client: kube::Client,
    index: Arc<RwLock<Index>>,
    synced: Arc<Synced>,
    metrics: Arc<Metrics>,
) {
    tokio::join!(
        watch_services(client.clone(), &index, &synced, &metrics),
        watch_slices(client, &index, &synced),
    );
}

fn write(index: &RwLock<Index>) -> RwLockWriteGuard<'_, Index> {
    index.write().unwrap_or_else(|e| e.into_inner())
}

async fn watch_services(
    client: kube::Client,
    index: &RwLock<Index>,
    synced: &Synced,
    metrics: &Metrics,
) {
    let events = watcher(Api::<Service>::all(client), watcher::Config::default()).default_backoff();
    let mut changes = std::pin::pin!(changes(events));
    while let Some(change) = changes.next().await {
        let mut index = write(index);
        match change {
            Ok(Change::Applied(s)) => index.apply_service(&s),
            Ok(Change::Deleted(s)) => index.delete_service(&s),
            Ok(Change::Relisted(listed)) => {
                index.relist_services(&listed);
                synced.services.store(true, Ordering::Release);
            }
            // Until the list completes the index keeps answering from what it knew.
            Ok(Change::Listing) => {}
            Err(err) => tracing::warn!(error = %err, "Service watch failed; retrying"),
        }
        metrics.services.set(index.service_count() as i64);
    }
}

async fn watch_slices(client: kube::Client, index: &RwLock<Index>, synced: &Synced) {
    let api = Api::<EndpointSlice>::all(client);
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut changes = std::pin::pin!(changes(events));
    while let Some(change) = changes.next().await {
        match change {
            Ok(Change::Applied(s)) => write(index).apply_slice(&s),
            Ok(Change::Deleted(s)) => write(index).delete_slice(&s),
            Ok(Change::Relisted(listed)) => {
                write(index).relist_slices(&listed);
                synced.slices.store(true, Ordering::Release);
            }
            Ok(Change::Listing) => {}
            Err(err) => tracing::warn!(error = %err, "EndpointSlice watch failed; retrying"),
        }
    }
}
