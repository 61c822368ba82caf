//! HTTP servers for `healthCheckNodePort`s and the proxy's own `/healthz`.
//!
//! A cloud load balancer in front of an `externalTrafficPolicy: Local` Service probes every
//! node's health check node port and sends traffic only to nodes that answer 200, i.e. nodes
//! with a local endpoint; that is what keeps the client IP without black-holing. Each port gets
//! a listener of its own, opened and closed as Services come and go; the answer is kube-proxy's
//! JSON (`{"service":{"namespace","name"},"localEndpoints":N}`), 200 when N > 0, else 503.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::model::{DesiredState, NamespacedName};

/// What one health check port reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEntry {
    /// The Service.
    pub service: NamespacedName,
    /// Ready endpoints on this node.
    pub local_endpoints: usize,
}

/// The health check ports `desired` asks for, with their reports.
pub fn health_entries(desired: &DesiredState) -> BTreeMap<u16, HealthEntry> {
    let mut entries: BTreeMap<u16, HealthEntry> = BTreeMap::new();
    for (name, service) in &desired.services {
        let Some(port) = service.port.health_check_node_port else {
            continue;
        };
        let entry = entries.entry(port).or_insert_with(|| HealthEntry {
            service: name.service.clone(),
            local_endpoints: 0,
        });
        entry.local_endpoints = entry.local_endpoints.max(service.local_ready);
    }
    entries
}

/// The body and status a health check port answers with.
pub fn answer(entry: &HealthEntry) -> (StatusCode, serde_json::Value) {
    let status = if entry.local_endpoints > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "service": {"namespace": entry.service.namespace, "name": entry.service.name},
        "localEndpoints": entry.local_endpoints,
    });
    (status, body)
}

type Shared = Arc<Mutex<Option<HealthEntry>>>;

/// The listeners of every health check node port.
#[derive(Debug)]
pub struct HealthServers {
    runtime: Handle,
    servers: BTreeMap<u16, (Shared, JoinHandle<()>)>,
}

impl HealthServers {
    /// Servers spawned on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        HealthServers {
            runtime,
            servers: BTreeMap::new(),
        }
    }

    /// Opens, updates and closes listeners to match `desired`.
    pub fn sync(&mut self, desired: &DesiredState) {
        let entries = health_entries(desired);
        self.servers.retain(|port, (_, task)| {
            let keep = entries.contains_key(port);
            if !keep {
                task.abort();
                info!(port, "closed health check node port");
            }
            keep
        });
        for (port, entry) in entries {
            if let Some((shared, task)) = self.servers.get(&port)
                && !task.is_finished()
            {
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = Some(entry);
                continue;
            }
            let shared: Shared = Arc::new(Mutex::new(Some(entry)));
            let app = Router::new()
                .fallback(get(serve_entry))
                .with_state(Arc::clone(&shared));
            let task = self.runtime.spawn(async move {
                let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
                match tokio::net::TcpListener::bind(addr).await {
                    Ok(listener) => {
                        info!(port, "serving health check node port");
                        if let Err(err) = axum::serve(listener, app).await {
                            warn!(port, error = %err, "health check server ended");
                        }
                    }
                    Err(err) => {
                        warn!(port, error = %err, "cannot listen on health check node port")
                    }
                }
            });
            self.servers.insert(port, (shared, task));
        }
    }
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        for (_, task) in self.servers.values() {
            task.abort();
        }
    }
}

async fn serve_entry(State(shared): State<Shared>) -> impl IntoResponse {
    let entry = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match entry {
        Some(entry) => {
            let (status, body) = answer(&entry);
            (status, axum::Json(body)).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The proxy's own health: unhealthy when a change has waited too long for a sync.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<(Option<Instant>, Option<SystemTime>)>,
}

impl ProxyHealth {
    /// Unhealthy once a queued change is older than `timeout`.
    pub fn new(timeout: Duration) -> Self {
        ProxyHealth {
            timeout,
            state: Mutex::new((None, None)),
        }
    }

    /// A change was queued.
    pub fn queued(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0.get_or_insert_with(Instant::now);
    }

    /// A sync succeeded: everything queued so far is done.
    pub fn updated(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *state = (None, Some(SystemTime::now()));
    }

    /// (healthy, last successful sync).
    pub fn check(&self) -> (bool, Option<SystemTime>) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let healthy = state.0.is_none_or(|queued| queued.elapsed() < self.timeout);
        (healthy, state.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredService, Protocol, ServicePort, ServicePortName};

    #[test]
    fn the_answer_is_200_with_local_endpoints_and_503_without() {
        let mut entry = HealthEntry {
            service: NamespacedName::new("ns", "lb"),
            local_endpoints: 2,
        };
        let (status, body) = answer(&entry);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"service": {"namespace": "ns", "name": "lb"}, "localEndpoints": 2})
        );
        entry.local_endpoints = 0;
        assert_eq!(answer(&entry).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn entries_come_from_services_with_a_health_check_port() {
        let mut state = DesiredState::default();
        for (port, local, hc) in [("a", 0, Some(32000)), ("b", 3, Some(32000)), ("c", 1, None)] {
            state.services.insert(
                ServicePortName::new("ns", "lb", port, Protocol::Tcp),
                DesiredService {
                    port: ServicePort {
                        health_check_node_port: hc,
                        ..ServicePort::default()
                    },
                    internal_endpoints: Vec::new(),
                    external_endpoints: Vec::new(),
                    has_endpoints: true,
                    local_ready: local,
                },
            );
        }
        let entries = health_entries(&state);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[&32000].local_endpoints, 3);
    }

    #[test]
    fn the_proxy_is_unhealthy_only_while_a_change_waits_too_long() {
        let health = ProxyHealth::new(Duration::from_millis(20));
        assert!(health.check().0);
        health.queued();
        assert!(health.check().0);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!health.check().0);
        health.updated();
        assert!(health.check().0 && health.check().1.is_some());
    }
}
