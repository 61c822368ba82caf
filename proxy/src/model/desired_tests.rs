use std::collections::BTreeSet;

use super::*;
use crate::model::Protocol;

fn node() -> NodeFacts {
    NodeFacts {
        name: "n1".into(),
        ips: vec![Ipv4Addr::new(172, 31, 0, 11)],
        zone: Some("z1".into()),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
    }
}

fn ep(last: u8, node: &str) -> Endpoint {
    Endpoint {
        ip: Ipv4Addr::new(10, 244, 0, last),
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        node_name: Some(node.into()),
        zone_hints: None,
    }
}

fn terminating(mut e: Endpoint, serving: bool) -> Endpoint {
    e.ready = false;
    e.serving = serving;
    e.terminating = true;
    e
}

fn hinted(mut e: Endpoint, zone: &str) -> Endpoint {
    e.zone_hints = Some(BTreeSet::from([zone.to_owned()]));
    e
}

fn port() -> ServicePort {
    ServicePort {
        cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
        port: 80,
        ..ServicePort::default()
    }
}

fn ips(addrs: &[EndpointAddr]) -> Vec<u8> {
    addrs.iter().map(|a| a.ip.octets()[3]).collect()
}

fn one(port: &ServicePort, endpoints: &[Endpoint]) -> DesiredService {
    desired_service(port, endpoints, &node())
}

#[test]
fn ready_endpoints_serve_and_not_ready_ones_do_not() {
    let mut down = ep(3, "n2");
    down.ready = false;
    down.serving = false;
    let s = one(&port(), &[ep(1, "n1"), ep(2, "n2"), down]);
    assert_eq!(ips(&s.internal_endpoints), [1, 2]);
    assert!(s.internal_endpoints[0].local && !s.internal_endpoints[1].local);
    assert!(
        s.external_endpoints.is_empty(),
        "a ClusterIP Service has no external traffic"
    );
    assert!(s.has_endpoints);
    assert_eq!(s.local_ready, 1);
}

#[test]
fn serving_terminating_endpoints_serve_only_when_none_is_ready() {
    let s = one(&port(), &[ep(1, "n1"), terminating(ep(2, "n2"), true)]);
    assert_eq!(ips(&s.internal_endpoints), [1]);
    let s = one(
        &port(),
        &[
            terminating(ep(1, "n1"), false),
            terminating(ep(2, "n2"), true),
        ],
    );
    assert_eq!(ips(&s.internal_endpoints), [2]);
    assert!(s.has_endpoints);
    let s = one(&port(), &[terminating(ep(1, "n1"), false)]);
    assert!(s.internal_endpoints.is_empty());
    assert!(
        !s.has_endpoints,
        "a terminating, non-serving endpoint is not usable"
    );
}

#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
    let mut p = port();
    p.internal_policy_local = true;
    let s = one(&p, &[ep(1, "n1"), ep(2, "n2")]);
    assert_eq!(ips(&s.internal_endpoints), [1]);
    let s = one(&p, &[ep(2, "n2")]);
    assert!(s.internal_endpoints.is_empty());
    assert!(s.has_endpoints, "endpoints elsewhere: drop, not reject");
}

#[test]
fn external_traffic_policy_local_keeps_local_endpoints_for_external_traffic_only() {
    let mut p = port();
    p.node_port = Some(30080);
    p.external_policy_local = true;
    let s = one(
        &p,
        &[ep(1, "n1"), ep(2, "n2"), terminating(ep(3, "n1"), true)],
    );
    assert_eq!(ips(&s.internal_endpoints), [1, 2]);
    assert_eq!(ips(&s.external_endpoints), [1]);
    // Local fallback to serving-terminating is per policy set.
    let s = one(&p, &[ep(2, "n2"), terminating(ep(3, "n1"), true)]);
    assert_eq!(ips(&s.external_endpoints), [3]);
    assert_eq!(s.local_ready, 0);
    p.external_policy_local = false;
    let s = one(&p, &[ep(1, "n1"), ep(2, "n2")]);
    assert_eq!(s.external_endpoints, s.internal_endpoints);
}

#[test]
fn zone_hints_apply_only_when_every_ready_endpoint_has_them_and_one_is_for_us() {
    let all_hinted = vec![hinted(ep(1, "n1"), "z1"), hinted(ep(2, "n2"), "z2")];
    assert_eq!(ips(&one(&port(), &all_hinted).internal_endpoints), [1]);
    let one_unhinted = vec![hinted(ep(1, "n1"), "z1"), ep(2, "n2")];
    assert_eq!(ips(&one(&port(), &one_unhinted).internal_endpoints), [1, 2]);
    let none_for_us = vec![hinted(ep(1, "n1"), "z3"), hinted(ep(2, "n2"), "z2")];
    assert_eq!(ips(&one(&port(), &none_for_us).internal_endpoints), [1, 2]);
    let mut no_zone = node();
    no_zone.zone = None;
    let s = desired_service(
        &port(),
        &[hinted(ep(1, "n1"), "z1"), hinted(ep(2, "n2"), "z2")],
        &no_zone,
    );
    assert_eq!(ips(&s.internal_endpoints), [1, 2]);
}

#[test]
fn desired_state_covers_every_service_port_with_or_without_endpoints() {
    use crate::model::ServiceChangeTracker;
    let mut services = ServiceMap::new();
    let mut tracker = ServiceChangeTracker::new();
    tracker.update(
        &serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "web"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        }))
        .unwrap(),
    );
    services.apply(&mut tracker);
    let endpoints = EndpointsMap::new();
    let state = desired_state(&services, &endpoints, &node());
    let key = ServicePortName::new("ns", "web", "", Protocol::Tcp);
    let s = &state.services[&key];
    assert!(s.internal_endpoints.is_empty() && !s.has_endpoints);
    assert_eq!(state.node, node());
}
