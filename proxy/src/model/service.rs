//! Services: what each port of a Service asks of the proxy, and the tracker that records changes.
//!
//! A watch event carries only the new object, so the tracker remembers the last value it folded
//! per Service and records `{previous, current}` pairs itself; a change that ends where it began
//! (an update undone before the next sync) vanishes, exactly as in kube-proxy's tracker. Only the
//! fields the data plane uses survive conversion, so a status-only or annotation-only update
//! compares equal and costs no sync.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;

use super::{NamespacedName, Protocol, SERVICE_PROXY_NAME_LABEL, ServicePortName};

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// What one Service port asks of the proxy (IPv4 only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service's cluster IPs (IPv4 ones).
    pub cluster_ips: Vec<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// `spec.externalIPs` (IPv4 ones).
    pub external_ips: Vec<Ipv4Addr>,
    /// `status.loadBalancer.ingress[].ip`, except those with `ipMode: Proxy`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`; empty means everyone.
    pub load_balancer_source_ranges: Vec<Ipv4Net>,
    /// ClientIP session affinity timeout, when affinity is on.
    pub affinity_seconds: Option<u32>,
    /// `externalTrafficPolicy: Local` (NodePort and LoadBalancer Services only).
    pub external_policy_local: bool,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// `spec.healthCheckNodePort`, for eTP Local LoadBalancers.
    pub health_check_node_port: Option<u16>,
}

impl ServicePort {
    /// Does this port take traffic from outside the cluster (NodePort, externalIPs, LB IPs)?
    pub fn has_external(&self) -> bool {
        self.node_port.is_some()
            || !self.external_ips.is_empty()
            || !self.load_balancer_ips.is_empty()
    }
}

/// Every port of one Service.
pub type ServicePorts = BTreeMap<ServicePortName, ServicePort>;

/// Converts a Service into its ports; `None` when this proxy ignores it (headless, ExternalName,
/// another proxy's, or no IPv4 cluster IP).
pub fn service_ports(service: &Service) -> Option<ServicePorts> {
    let meta = &service.metadata;
    let labels = meta.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL)) {
        return None;
    }
    let spec = service.spec.as_ref()?;
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return None;
    }
    let cluster_ips = cluster_ips(spec)?;
    let external = matches!(kind, "NodePort" | "LoadBalancer");
    let external_policy_local =
        external && spec.external_traffic_policy.as_deref() == Some("Local");
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let load_balancer_ips = if kind == "LoadBalancer" {
        load_balancer_ips(service)
    } else {
        Vec::new()
    };
    let base = ServicePort {
        cluster_ips,
        external_ips: parse_all(spec.external_ips.iter().flatten()),
        load_balancer_source_ranges: if kind == "LoadBalancer" {
            parse_all(spec.load_balancer_source_ranges.iter().flatten())
        } else {
            Vec::new()
        },
        load_balancer_ips,
        affinity_seconds,
        external_policy_local,
        internal_policy_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
        health_check_node_port: spec
            .health_check_node_port
            .filter(|_| external_policy_local && kind == "LoadBalancer")
            .and_then(|p| u16::try_from(p).ok()),
        ..ServicePort::default()
    };
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let name = meta.name.as_deref()?;
    let mut ports = ServicePorts::new();
    for port in spec.ports.iter().flatten() {
        let (Some(protocol), Ok(number)) = (
            Protocol::from_api(port.protocol.as_deref()),
            u16::try_from(port.port),
        ) else {
            continue;
        };
        let key = ServicePortName::new(
            namespace,
            name,
            port.name.as_deref().unwrap_or(""),
            protocol,
        );
        let node_port = port
            .node_port
            .filter(|_| external)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0);
        ports.insert(
            key,
            ServicePort {
                port: number,
                node_port,
                ..base.clone()
            },
        );
    }
    Some(ports)
}

/// The Service's IPv4 cluster IPs; `None` for a headless Service or one without any.
fn cluster_ips(spec: &k8s_openapi::api::core::v1::ServiceSpec) -> Option<Vec<Ipv4Addr>> {
    let mut words: Vec<&str> = spec
        .cluster_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if words.is_empty() {
        words.extend(spec.cluster_ip.as_deref());
    }
    if words.contains(&"None") {
        return None;
    }
    let ips: Vec<Ipv4Addr> = words.iter().filter_map(|ip| ip.parse().ok()).collect();
    (!ips.is_empty()).then_some(ips)
}

/// The load balancer's ingress IPs that traffic reaches directly (not `ipMode: Proxy`).
fn load_balancer_ips(service: &Service) -> Vec<Ipv4Addr> {
    let status = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref());
    status
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|ing| ing.ip_mode.as_deref() != Some("Proxy"))
        .filter_map(|ing| ing.ip.as_deref()?.parse().ok())
        .collect()
}

fn parse_all<'a, T: std::str::FromStr>(words: impl Iterator<Item = &'a String>) -> Vec<T> {
    words.filter_map(|w| w.trim().parse().ok()).collect()
}

/// A recorded change: the value at the last fold, and the value now.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Change {
    previous: Option<ServicePorts>,
    current: Option<ServicePorts>,
}

/// Records Service events between syncs (watch handlers call it; it does no IO).
#[derive(Debug, Default)]
pub struct ServiceChangeTracker {
    known: BTreeMap<NamespacedName, ServicePorts>,
    pending: BTreeMap<NamespacedName, Change>,
}

fn service_key(service: &Service) -> Option<NamespacedName> {
    let name = service.metadata.name.as_deref()?;
    let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
    Some(NamespacedName::new(namespace, name))
}

impl ServiceChangeTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a created or updated Service; returns whether that changes anything pending.
    pub fn update(&mut self, service: &Service) -> bool {
        let Some(key) = service_key(service) else {
            return false;
        };
        self.record(key, service_ports(service))
    }

    /// Records a deleted Service.
    pub fn delete(&mut self, namespace: &str, name: &str) -> bool {
        self.record(NamespacedName::new(namespace, name), None)
    }

    /// Records a complete list: these Services, and no others, exist.
    pub fn relist(&mut self, services: &[Service]) -> bool {
        let mut changed = false;
        let mut seen = BTreeSet::new();
        for service in services {
            if let Some(key) = service_key(service) {
                seen.insert(key.clone());
                changed |= self.record(key, service_ports(service));
            }
        }
        let gone: Vec<NamespacedName> = self
            .known
            .keys()
            .chain(self.pending.keys())
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            changed |= self.record(key, None);
        }
        changed
    }

    /// How many Services have a change waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn record(&mut self, key: NamespacedName, current: Option<ServicePorts>) -> bool {
        let current = current.filter(|ports| !ports.is_empty());
        let previous = match self.pending.get(&key) {
            Some(change) if change.current == current => return false,
            Some(change) => change.previous.clone(),
            None if self.known.get(&key) == current.as_ref() => return false,
            None => self.known.get(&key).cloned(),
        };
        if previous == current {
            self.pending.remove(&key);
        } else {
            self.pending.insert(
                key.clone(),
                Change {
                    previous,
                    current: current.clone(),
                },
            );
        }
        match current {
            Some(ports) => self.known.insert(key, ports),
            None => self.known.remove(&key),
        };
        true
    }

    fn take(&mut self) -> BTreeMap<NamespacedName, Change> {
        std::mem::take(&mut self.pending)
    }
}

/// Every Service port this proxy serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceMap {
    ports: BTreeMap<ServicePortName, ServicePort>,
}

impl ServiceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the tracker's pending changes in; returns the Services that changed.
    pub fn apply(&mut self, tracker: &mut ServiceChangeTracker) -> BTreeSet<NamespacedName> {
        let mut changed = BTreeSet::new();
        for (name, change) in tracker.take() {
            for key in change.previous.iter().flat_map(BTreeMap::keys) {
                self.ports.remove(key);
            }
            self.ports.extend(change.current.into_iter().flatten());
            changed.insert(name);
        }
        changed
    }

    /// The port `key`, if served.
    pub fn get(&self, key: &ServicePortName) -> Option<&ServicePort> {
        self.ports.get(key)
    }

    /// Every served port, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&ServicePortName, &ServicePort)> {
        self.ports.iter()
    }

    /// How many Service ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// No Service ports at all?
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
