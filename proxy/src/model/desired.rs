//! `desired_state`: the pure step from the maps to what the node's data plane must do.
//!
//! Endpoint selection follows kube-proxy's `CategorizeEndpoints`, because users rely on its
//! exact behaviour: ready endpoints serve; when a policy's set has no ready endpoint, its
//! serving-and-terminating ones do (so a rolling update of the last replicas drains instead of
//! black-holing); `Local` policies narrow to this node's endpoints; zone hints narrow cluster
//! traffic only when every ready endpoint carries hints and one of them names this node's zone.
//! A Service with no usable endpoint at all is *rejected* (the client hears at once); one that
//! has endpoints, just none here for a `Local` policy, is *dropped* — the data planes read that
//! difference from `has_endpoints`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{Endpoint, EndpointsMap, ServiceMap, ServicePort, ServicePortName};

/// What the proxy knows about the node it runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The Node's name (matches `endpoint.nodeName`).
    pub name: String,
    /// The Node's IPv4 addresses.
    pub ips: Vec<Ipv4Addr>,
    /// Its `topology.kubernetes.io/zone`, if labelled.
    pub zone: Option<String>,
    /// The cluster's Pod CIDR: sources outside it are masqueraded. `None`: no masquerade.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// An endpoint a data plane may send traffic to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EndpointAddr {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port.
    pub port: u16,
    /// Does it run on this node?
    pub local: bool,
}

/// One Service port, with the endpoints each kind of traffic may reach from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    /// What the Service asks (addresses, ports, policies).
    pub port: ServicePort,
    /// Where traffic from inside the cluster goes (ClusterIP; iTP applied). Sorted.
    pub internal_endpoints: Vec<EndpointAddr>,
    /// Where traffic from outside goes (NodePort, externalIPs, LB IPs; eTP applied). Sorted.
    pub external_endpoints: Vec<EndpointAddr>,
    /// Does the Service have any usable endpoint anywhere? No: reject. Yes but none here: drop.
    pub has_endpoints: bool,
    /// Ready endpoints on this node, as the health check reports them.
    pub local_ready: usize,
}

/// Everything the data plane must make true, for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// The node.
    pub node: NodeFacts,
    /// Every Service port, in key order.
    pub services: BTreeMap<ServicePortName, DesiredService>,
}

impl DesiredState {
    /// Total endpoints referenced, for logs and metrics.
    pub fn endpoint_count(&self) -> usize {
        self.services
            .values()
            .map(|s| s.internal_endpoints.len())
            .sum()
    }
}

/// Computes the node's desired state from the maps.
pub fn desired_state(
    services: &ServiceMap,
    endpoints: &EndpointsMap,
    node: &NodeFacts,
) -> DesiredState {
    let services = services
        .iter()
        .map(|(key, port)| (key.clone(), desired_service(port, endpoints.get(key), node)))
        .collect();
    DesiredState {
        node: node.clone(),
        services,
    }
}

fn desired_service(port: &ServicePort, all: &[Endpoint], node: &NodeFacts) -> DesiredService {
    let is_local = |ep: &Endpoint| ep.node_name.as_deref() == Some(node.name.as_str());
    let usable = |ep: &&Endpoint| ep.ready || (ep.serving && ep.terminating);
    let has_endpoints = all.iter().any(|ep| usable(&ep));
    let topology = use_topology(all, node);
    let cluster = select(all, |ep| {
        topology.is_none_or(|zone| ep.zone_hints.as_ref().is_some_and(|z| z.contains(zone)))
    });
    let local = select(all, is_local);
    let to_addrs = |eps: &[&Endpoint]| -> Vec<EndpointAddr> {
        let mut addrs: Vec<EndpointAddr> = eps
            .iter()
            .map(|ep| EndpointAddr {
                ip: ep.ip,
                port: ep.port,
                local: is_local(ep),
            })
            .collect();
        addrs.sort();
        addrs
    };
    let internal = if port.internal_policy_local {
        &local
    } else {
        &cluster
    };
    let external: &[&Endpoint] = if !port.has_external() {
        &[]
    } else if port.external_policy_local {
        &local
    } else {
        &cluster
    };
    DesiredService {
        port: port.clone(),
        internal_endpoints: to_addrs(internal),
        external_endpoints: to_addrs(external),
        has_endpoints,
        local_ready: all.iter().filter(|ep| ep.ready && is_local(ep)).count(),
    }
}

/// Ready endpoints passing `keep`; when none, serving-and-terminating ones passing it.
fn select(all: &[Endpoint], keep: impl Fn(&Endpoint) -> bool) -> Vec<&Endpoint> {
    let ready: Vec<&Endpoint> = all.iter().filter(|ep| ep.ready && keep(ep)).collect();
    if !ready.is_empty() {
        return ready;
    }
    all.iter()
        .filter(|ep| ep.serving && ep.terminating && keep(ep))
        .collect()
}

/// The zone to narrow cluster traffic to, when hints apply (kube-proxy's `canUseTopology`).
fn use_topology<'a>(all: &[Endpoint], node: &'a NodeFacts) -> Option<&'a str> {
    let zone = node.zone.as_deref().filter(|z| !z.is_empty())?;
    let mut any_for_zone = false;
    for ep in all.iter().filter(|ep| ep.ready) {
        let hints = ep.zone_hints.as_ref().filter(|h| !h.is_empty())?;
        any_for_zone |= hints.contains(zone);
    }
    any_for_zone.then_some(zone)
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
