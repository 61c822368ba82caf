use k8s_openapi::api::core::v1::Service;
use serde_json::json;

use super::*;

fn svc(value: &serde_json::Value) -> Service {
    serde_json::from_value(value.clone()).unwrap()
}

fn web(spec: &serde_json::Value) -> Service {
    let mut base = json!({
        "metadata": {"namespace": "ns", "name": "web"},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    });
    for (k, v) in spec.as_object().unwrap() {
        base["spec"][k] = v.clone();
    }
    svc(&base)
}

fn key(port: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName::new("ns", "web", port, protocol)
}

#[test]
fn a_cluster_ip_service_has_one_entry_per_port_and_protocol() {
    let ports = service_ports(&web(&json!({"ports": [
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "sctp", "port": 9, "protocol": "SCTP"},
    ]})))
    .unwrap();
    assert_eq!(ports.len(), 3);
    let dns = &ports[&key("dns", Protocol::Udp)];
    assert_eq!(dns.cluster_ips, vec![Ipv4Addr::new(10, 96, 0, 10)]);
    assert_eq!((dns.port, dns.node_port), (53, None));
    assert!(ports.contains_key(&key("sctp", Protocol::Sctp)));
}

#[test]
fn headless_external_name_and_other_proxies_services_are_skipped() {
    assert!(service_ports(&web(&json!({"clusterIP": "None"}))).is_none());
    assert!(
        service_ports(&web(
            &json!({"type": "ExternalName", "externalName": "x.org"})
        ))
        .is_none()
    );
    let mut other = web(&json!({}));
    other.metadata.labels = Some([(SERVICE_PROXY_NAME_LABEL.to_owned(), "x".to_owned())].into());
    assert!(service_ports(&other).is_none());
    assert!(service_ports(&web(&json!({"clusterIP": "fd00::1"}))).is_none());
}

#[test]
fn load_balancer_fields_are_read_and_proxy_mode_ips_left_out() {
    let mut lb = web(&json!({
        "type": "LoadBalancer",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
        "externalIPs": ["192.0.2.7"],
        "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 32000,
        "loadBalancerSourceRanges": [" 203.0.113.0/24", "bogus"],
        "sessionAffinity": "ClientIP",
    }));
    lb.status = Some(
        serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "198.51.100.1"}, {"ip": "198.51.100.2", "ipMode": "Proxy"}, {"hostname": "x"}
        ]}}))
        .unwrap(),
    );
    let ports = service_ports(&lb).unwrap();
    let p = &ports[&key("http", Protocol::Tcp)];
    assert_eq!(p.node_port, Some(30080));
    assert_eq!(p.external_ips, vec![Ipv4Addr::new(192, 0, 2, 7)]);
    assert_eq!(p.load_balancer_ips, vec![Ipv4Addr::new(198, 51, 100, 1)]);
    assert_eq!(
        p.load_balancer_source_ranges,
        vec!["203.0.113.0/24".parse().unwrap()]
    );
    assert!(p.external_policy_local);
    assert_eq!(p.health_check_node_port, Some(32000));
    assert_eq!(p.affinity_seconds, Some(DEFAULT_AFFINITY_SECONDS));
}

#[test]
fn external_traffic_policy_means_nothing_on_a_cluster_ip_service() {
    let ports = service_ports(&web(&json!({
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Local",
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}},
    })))
    .unwrap();
    let p = &ports[&key("http", Protocol::Tcp)];
    assert!(!p.external_policy_local && p.internal_policy_local);
    assert_eq!(p.affinity_seconds, Some(30));
}

#[test]
fn the_tracker_folds_changes_and_forgets_undone_ones() {
    let mut tracker = ServiceChangeTracker::new();
    let mut map = ServiceMap::new();
    assert!(tracker.update(&web(&json!({}))));
    assert!(
        !tracker.update(&web(&json!({}))),
        "the same object again is no change"
    );
    let changed = map.apply(&mut tracker);
    assert_eq!(changed.len(), 1);
    assert_eq!(map.len(), 1);

    // Changed and changed back before the next sync: nothing to do.
    assert!(tracker.update(&web(&json!({"ports": [{"name": "http", "port": 81}]}))));
    assert!(tracker.update(&web(&json!({}))));
    assert_eq!(tracker.pending(), 0);
    assert!(map.apply(&mut tracker).is_empty());

    // A renamed port replaces the old one.
    tracker.update(&web(&json!({"ports": [{"name": "web", "port": 80}]})));
    map.apply(&mut tracker);
    assert!(map.get(&key("http", Protocol::Tcp)).is_none());
    assert!(map.get(&key("web", Protocol::Tcp)).is_some());

    assert!(tracker.delete("ns", "web"));
    map.apply(&mut tracker);
    assert!(map.is_empty());
}

#[test]
fn a_relist_deletes_what_it_no_longer_names() {
    let mut tracker = ServiceChangeTracker::new();
    let mut map = ServiceMap::new();
    tracker.update(&web(&json!({})));
    let mut other = web(&json!({"clusterIP": "10.96.0.11"}));
    other.metadata.name = Some("other".into());
    tracker.update(&other);
    map.apply(&mut tracker);
    assert!(tracker.relist(&[other]));
    let changed = map.apply(&mut tracker);
    assert_eq!(
        changed.into_iter().collect::<Vec<_>>(),
        vec![NamespacedName::new("ns", "web")]
    );
    assert_eq!(map.len(), 1);
}
