//! The proxy as a whole: watches feed the trackers, the runner syncs the data plane.
//!
//! This is what `skiff-node` hosts in-process and what the `skiff-proxy` binary runs alone.
//! Watch handlers only record into the trackers under a short lock and poke the runner; the
//! runner thread folds the trackers into its maps, computes the desired state (pure), hands it
//! to the data plane, then updates health check ports and metrics. The first sync waits until
//! both Services and EndpointSlices have been listed once, so a restarted proxy never programs
//! a half-known cluster over the complete rules its predecessor left (which would drop traffic).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use prometheus_client::registry::Registry;
use skiff_common::relist::{Change, changes};
use tokio::runtime::Handle;
use tracing::{debug, info, warn};

use crate::dataplane::Dataplane;
use crate::healthcheck::{HealthServers, ProxyHealth};
use crate::iptables::RenderOptions;
use crate::metrics::Metrics;
use crate::model::{
    EndpointSliceTracker, EndpointsMap, NodeFacts, ServiceChangeTracker, ServiceMap, ZONE_LABEL,
    desired_state,
};
use crate::runner::{self, Intervals, Poke};
use crate::server;

/// The label selector kube-proxy watches EndpointSlices with.
pub const SLICE_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// How the proxy runs.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// This node's name (endpoint locality, the Node to watch).
    pub node_name: String,
    /// The cluster's Pod CIDR; sources outside it are masqueraded. `None`: no masquerade.
    pub cluster_cidr: Option<Ipv4Net>,
    /// Sync intervals.
    pub intervals: Intervals,
    /// Ruleset options.
    pub render: RenderOptions,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_bind: Option<SocketAddr>,
    /// Where `/healthz` is served, if anywhere.
    pub healthz_bind: Option<SocketAddr>,
}

/// Why the proxy stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An HTTP server could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runner thread could not start or panicked.
    #[error("the sync runner failed: {0}")]
    Runner(String),
}

#[derive(Debug, Default)]
struct Recorded {
    services: ServiceChangeTracker,
    slices: EndpointSliceTracker,
    node: NodeFacts,
    services_listed: bool,
    slices_listed: bool,
}

#[derive(Debug)]
struct Shared {
    recorded: Mutex<Recorded>,
    poke: Arc<Poke>,
    health: ProxyHealth,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, edit: impl FnOnce(&mut Recorded) -> bool) {
        if edit(&mut self.lock()) {
            self.health.queued();
            self.poke.poke();
        }
    }
}

/// The service proxy.
#[derive(Debug)]
pub struct Proxy;

impl Proxy {
    /// Runs the proxy with `dataplane` until `shutdown` completes.
    pub async fn run<D: Dataplane + 'static>(
        client: kube::Client,
        config: ProxyConfig,
        dataplane: D,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ProxyError> {
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Recorded {
                node: NodeFacts {
                    name: config.node_name.clone(),
                    cluster_cidr: config.cluster_cidr,
                    ..NodeFacts::default()
                },
                ..Recorded::default()
            }),
            poke: Poke::new(),
            health: ProxyHealth::new(config.intervals.max * 2 + Duration::from_secs(30)),
        });
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let registry = Arc::new(registry);
        let mut tasks = Vec::new();
        for (addr, router) in [
            (
                config.metrics_bind,
                skiff_common::metrics::metrics_router(Arc::clone(&registry)),
            ),
            (
                config.healthz_bind,
                server::healthz_router(Arc::clone(&shared)),
            ),
        ] {
            if let Some(addr) = addr {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| ProxyError::Listen { addr, source })?;
                tasks.push(tokio::spawn(async move {
                    let _ = axum::serve(listener, router).await;
                }));
            }
        }
        tasks.push(tokio::spawn(watch_services(
            client.clone(),
            Arc::clone(&shared),
        )));
        tasks.push(tokio::spawn(watch_slices(
            client.clone(),
            Arc::clone(&shared),
        )));
        tasks.push(tokio::spawn(watch_node(
            client,
            config.node_name.clone(),
            Arc::clone(&shared),
        )));

        let runner = {
            let shared = Arc::clone(&shared);
            let handle = Handle::current();
            let intervals = config.intervals;
            std::thread::Builder::new()
                .name("proxy-sync".into())
                .spawn(move || sync_loop(&shared, dataplane, &metrics, handle, intervals))
                .map_err(|e| ProxyError::Runner(e.to_string()))?
        };
        shutdown.await;
        info!("proxy shutting down; rules stay in place for the next start");
        shared.poke.stop();
        for task in &tasks {
            task.abort();
        }
        tokio::task::spawn_blocking(move || runner.join())
            .await
            .map_err(|e| ProxyError::Runner(e.to_string()))?
            .map_err(|_| ProxyError::Runner("the sync thread panicked".into()))
    }
}

impl server::Health for Shared {
    fn check(&self) -> (bool, Option<std::time::SystemTime>) {
        self.health.check()
    }
}

fn sync_loop<D: Dataplane>(
    shared: &Shared,
    mut dataplane: D,
    metrics: &Metrics,
    handle: Handle,
    intervals: Intervals,
) {
    let mut services = ServiceMap::new();
    let mut endpoints = EndpointsMap::new();
    let mut health_servers = HealthServers::new(handle);
    runner::run(intervals, &shared.poke, |full| {
        let (desired, trigger_times) = {
            let mut recorded = shared.lock();
            if !(recorded.services_listed && recorded.slices_listed) {
                debug!("waiting for the first lists before the first sync");
                return true;
            }
            let recorded = &mut *recorded;
            services.apply(&mut recorded.services);
            let update = endpoints.apply(&mut recorded.slices);
            (
                desired_state(&services, &endpoints, &recorded.node),
                update.trigger_times,
            )
        };
        if full {
            dataplane.force_full_sync();
        }
        let started = Instant::now();
        match dataplane.sync(&desired) {
            Ok(report) => {
                let took = started.elapsed();
                metrics.synced(took, &report, &trigger_times);
                shared.health.updated();
                health_servers.sync(&desired);
                info!(
                    services = desired.services.len(),
                    endpoints = desired.endpoint_count(),
                    full = report.full,
                    written = report.written,
                    flows_cleared = report.flows_cleared,
                    took_ms = took.as_millis() as u64,
                    "synced"
                );
                true
            }
            Err(err) => {
                warn!(error = %err, "sync failed; the next one is full");
                false
            }
        }
    });
}

async fn watch_services(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<Service> = Api::all(client);
    let events = watcher(api, watcher::Config::default()).default_backoff();
    let mut changes = std::pin::pin!(changes(events));
    while let Some(change) = changes.next().await {
        match change {
            Ok(Change::Applied(s)) => shared.record(|r| r.services.update(&s)),
            Ok(Change::Deleted(s)) => shared.record(|r| {
                let ns = s.metadata.namespace.as_deref().unwrap_or("default");
                r.services
                    .delete(ns, s.metadata.name.as_deref().unwrap_or_default())
            }),
            Ok(Change::Relisted(listed)) => shared.record(|r| {
                let first = !r.services_listed;
                r.services_listed = true;
                r.services.relist(&listed) || first
            }),
            // Until the list completes the trackers hold the last known state, as kube-proxy's.
            Ok(Change::Listing) => {}
            Err(err) => warn!(error = %err, "Service watch failed; retrying"),
        }
    }
}

async fn watch_slices(client: kube::Client, shared: Arc<Shared>) {
    let api: Api<EndpointSlice> = Api::all(client);
    let config = watcher::Config::default().labels(SLICE_SELECTOR);
    let mut changes = std::pin::pin!(changes(watcher(api, config).default_backoff()));
    while let Some(change) = changes.next().await {
        match change {
            Ok(Change::Applied(s)) => shared.record(|r| r.slices.update(&s)),
            Ok(Change::Deleted(s)) => shared.record(|r| r.slices.delete(&s)),
            Ok(Change::Relisted(listed)) => shared.record(|r| {
                let first = !r.slices_listed;
                r.slices_listed = true;
                r.slices.relist(&listed) || first
            }),
            Ok(Change::Listing) => {}
            Err(err) => warn!(error = %err, "EndpointSlice watch failed; retrying"),
        }
    }
}

/// This node's addresses and zone, as its Node object says.
pub fn node_facts_from(node: &Node, facts: &NodeFacts) -> NodeFacts {
    let ips: Vec<Ipv4Addr> = node
        .status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned();
    NodeFacts {
        ips,
        zone,
        ..facts.clone()
    }
}

async fn watch_node(client: kube::Client, name: String, shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(client);
    let events = watcher::watch_object(api, &name).default_backoff();
    let mut events = std::pin::pin!(events.into_stream());
    while let Some(event) = events.next().await {
        match event {
            Ok(Some(node)) => shared.record(|r| {
                let facts = node_facts_from(&node, &r.node);
                let changed = facts != r.node;
                r.node = facts;
                changed
            }),
            Ok(None) => debug!(node = %name, "own Node not found (yet)"),
            Err(err) => warn!(error = %err, "Node watch failed; retrying"),
        }
    }
}
