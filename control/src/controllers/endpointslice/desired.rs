//! What a Service's endpoints should be, computed from its Pods alone (pure, no API calls).
//!
//! This follows Kubernetes' `podToEndpoint` / `getEndpointPorts` and the endpoints
//! controller's `addEndpointSubset`: a Pod counts once it has an IPv4 address and has not
//! finished; a named `targetPort` is looked up in that Pod's container ports, so Pods may
//! resolve a Service's ports differently. Endpoints are grouped by the ports they resolved to,
//! because an EndpointSlice (and an Endpoints subset) carries one port list for all its
//! endpoints.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    self as core, EndpointAddress, EndpointSubset, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A resolved port list in canonical order; the key that groups endpoints into slices.
pub type PortKey = Vec<(String, i32, String, Option<String>)>;

/// Endpoints sharing one resolved port list, in Pod-name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The ports as an EndpointSlice carries them.
    pub ports: Vec<EndpointPort>,
    /// One endpoint per Pod.
    pub endpoints: Vec<Endpoint>,
}

/// The Service's selector, if it has one that selects Pods (ExternalName never does).
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether `pod` is one the Service selects: same namespace, labels matching.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = selector(service) else {
        return false;
    };
    if pod.metadata.namespace != service.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// Whether the Service is headless (`clusterIP: None`).
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The Pod's IPv4 address, from `podIPs` or `podIP`.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let listed = status.pod_ips.iter().flatten().map(|p| p.ip.as_str());
    status
        .pod_ip
        .as_deref()
        .into_iter()
        .chain(listed)
        .find(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .map(str::to_owned)
}

/// `podutil.IsPodReady`: the Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// `ShouldPodBeInEndpoints`: has an address and has not finished.
fn counts(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod_ipv4(pod).is_some() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// `podutil.FindPort`: the container port a Service port targets on this Pod, if any.
fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let spec = pod.spec.as_ref()?;
            // Restartable init containers (sidecars) serve too, as in Kubernetes.
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The Service's ports as `pod` resolves them, in canonical order (unresolvable ones left out).
fn resolve_ports(service: &Service, pod: &Pod) -> PortKey {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    let mut key: PortKey = ports
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let number = find_port(pod, p)?;
            Some((
                p.name.clone().unwrap_or_default(),
                number,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            ))
        })
        .collect();
    key.sort();
    key
}

/// The slice form of a port key (names and protocols spelled out, as the apiserver defaults).
pub fn slice_ports(key: &PortKey) -> Vec<EndpointPort> {
    key.iter()
        .map(|(name, port, protocol, app)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app.clone(),
        })
        .collect()
}

/// The port key of an existing slice's ports.
pub fn key_of_slice_ports(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or_default(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect();
    key.sort();
    key
}

fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// `ShouldSetHostname`: the Pod names this Service as its subdomain.
fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace)
        .then(|| host.clone())
}

fn endpoint(service: &Service, pod: &Pod, ip: String, zone: Option<String>) -> Endpoint {
    let serving = is_ready(pod);
    let terminating = is_terminating(pod);
    let ready = publish_not_ready(service) || (serving && !terminating);
    Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        hostname: hostname(service, pod),
        node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        target_ref: Some(target_ref(pod)),
        zone,
        ..Endpoint::default()
    }
}

fn by_name<'a>(pods: &[&'a Pod]) -> Vec<&'a Pod> {
    let mut sorted = pods.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    sorted
}

/// The EndpointSlice contents for `pods` (already selected), grouped by resolved ports.
/// `zone_of` maps a node name to its `topology.kubernetes.io/zone`.
pub fn slice_groups(
    service: &Service,
    pods: &[&Pod],
    zone_of: impl Fn(&str) -> Option<String>,
) -> BTreeMap<PortKey, Group> {
    let mut groups: BTreeMap<PortKey, Group> = BTreeMap::new();
    for pod in by_name(pods) {
        let Some(ip) = pod_ipv4(pod).filter(|_| counts(pod)) else {
            continue;
        };
        let key = resolve_ports(service, pod);
        let zone = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .and_then(&zone_of);
        let group = groups.entry(key.clone()).or_insert_with(|| Group {
            ports: slice_ports(&key),
            endpoints: Vec::new(),
        });
        group.endpoints.push(endpoint(service, pod, ip, zone));
    }
    groups
}

/// The v1 Endpoints subsets for `pods` (already selected), as the endpoints controller makes
/// them: terminating Pods are left out unless `publishNotReadyAddresses`; Pods resolving
/// no port are left out unless the Service is headless without ports.
pub fn subsets(service: &Service, pods: &[&Pod]) -> Vec<EndpointSubset> {
    let tolerate = publish_not_ready(service);
    let no_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(Vec::is_empty);
    let mut groups: BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in by_name(pods) {
        let Some(ip) = pod_ipv4(pod).filter(|_| counts(pod)) else {
            continue;
        };
        if is_terminating(pod) && !tolerate {
            continue;
        }
        let key = resolve_ports(service, pod);
        if key.is_empty() && !(no_ports && is_headless(service)) {
            continue;
        }
        let address = EndpointAddress {
            ip,
            hostname: hostname(service, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(target_ref(pod)),
        };
        let (ready, not_ready) = groups.entry(key).or_default();
        if tolerate || is_ready(pod) {
            ready.push(address);
        } else {
            not_ready.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(key, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            let ports: Vec<core::EndpointPort> = key
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| core::EndpointPort {
                    name: Some(name).filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(protocol),
                    app_protocol,
                })
                .collect();
            EndpointSubset {
                addresses: Some(ready).filter(|a| !a.is_empty()),
                not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                ports: Some(ports).filter(|p| !p.is_empty()),
            }
        })
        .collect()
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
