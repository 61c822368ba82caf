//! The controllers and the scheduler, run inside skiff-control on its own API.
//!
//! They are ordinary API clients — kube-rs reflectors, watchers and `Controller`s over a
//! loopback HTTPS client with a token of their own — exactly as kube-controller-manager and
//! kube-scheduler are clients of kube-apiserver. So each one is tested through the API, and
//! any of them could run against a real cluster. Only the leader (a Lease in kube-system) runs
//! them when several skiff-control share one store.

pub mod deployment;
pub mod endpointslice;
pub mod failures;
pub mod gc;
pub mod leader;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod scheduler;

use std::sync::Arc;
use std::time::Duration;

use ipnet::Ipv4Net;

/// What the controllers are configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Pod addresses of the whole cluster (`--cluster-cidr`, default 10.244.0.0/16).
    pub cluster_cidr: Ipv4Net,
    /// Prefix length of each node's podCIDR (default 24).
    pub node_cidr_prefix: u8,
    /// A Node whose Lease is older than this becomes `Ready=Unknown` (default 40 s).
    pub node_monitor_grace: Duration,
    /// Pods on an unreachable Node are evicted after this (default 5 min).
    pub pod_eviction_timeout: Duration,
    /// This instance's candidacy for leading the controllers.
    pub election: leader::Election,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidr: "10.244.0.0/16".parse().expect("a valid CIDR"),
            node_cidr_prefix: 24,
            node_monitor_grace: Duration::from_secs(40),
            pod_eviction_timeout: Duration::from_secs(300),
            election: leader::Election::new(),
        }
    }
}

/// Runs every controller while this instance leads; returns only if leadership cannot be sought.
pub async fn run(client: kube::Client, settings: Settings) {
    let settings = Arc::new(settings);
    leader::lead(client.clone(), settings.election.clone(), move || {
        let client = client.clone();
        let settings = Arc::clone(&settings);
        async move { run_all(client, settings).await }
    })
    .await;
}

/// All controllers at once; ends when any of them ends (they run forever unless broken).
async fn run_all(client: kube::Client, settings: Arc<Settings>) {
    tokio::select! {
        () = deployment::run(client.clone(), Arc::clone(&settings)) => tracing::error!("deployment controller ended"),
        () = replicaset::run(client.clone(), Arc::clone(&settings)) => tracing::error!("replicaset controller ended"),
        () = endpointslice::run(client.clone(), Arc::clone(&settings)) => tracing::error!("endpointslice controller ended"),
        () = gc::run(client.clone(), Arc::clone(&settings)) => tracing::error!("garbage collector ended"),
        () = nodeipam::run(client.clone(), Arc::clone(&settings)) => tracing::error!("node IPAM controller ended"),
        () = nodelifecycle::run(client.clone(), Arc::clone(&settings)) => tracing::error!("node lifecycle controller ended"),
        () = scheduler::run(client.clone(), Arc::clone(&settings)) => tracing::error!("scheduler ended"),
    }
}

/// A store of every `K` in the cluster and the stream that fills it, yielding each object
/// the watch touched — the shape every controller here starts from.
pub fn reflect_all<K>(
    client: &kube::Client,
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, kube::runtime::watcher::Error>> + Send + use<K>,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::reflector::{self, reflector};
    use kube::runtime::{WatchStreamExt, watcher};
    let (store, writer) = reflector::store::<K>();
    let events = reflector(
        writer,
        watcher(
            kube::Api::<K>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();
    (store, events)
}

/// A client of an apiserver that is not there, for unit tests of reconcile plumbing.
#[cfg(test)]
pub(crate) fn offline_client() -> kube::Client {
    let url = "http://127.0.0.1:9".parse().expect("a valid URL");
    kube::Client::try_from(kube::Config::new(url)).expect("a client")
}

/// The backoff a failed reconcile is retried with: 1 s doubling to 60 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}
