use std::collections::HashSet;

use serde_json::json;

use super::*;

fn svc(kind: &str, cluster_ip: &str, node_ports: &[u64]) -> Value {
    let ports: Vec<Value> = node_ports
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"name": format!("p{i}"), "port": 80 + i, "nodePort": p}))
        .collect();
    json!({"spec": {"type": kind, "clusterIP": cluster_ip, "ports": ports}})
}

#[test]
fn clusterips_are_unique_in_range_and_come_back_when_released() {
    let alloc = ServiceAllocator::new(ServiceRanges::default());
    let mut seen = HashSet::new();
    let mut services = Vec::new();
    for _ in 0..10_000 {
        let mut s = svc("ClusterIP", "", &[]);
        alloc.allocate(&mut s, None).unwrap().commit();
        let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(alloc.ranges().cluster_ip.contains(&ip) && ip != alloc.kubernetes_service_ip());
        assert!(seen.insert(ip), "{ip} handed out twice");
        services.push(s);
    }
    for s in &services {
        alloc.release_all(s);
    }
    assert!(
        seen.iter().all(|ip| !alloc.is_used(Item::Ip(*ip))),
        "every address freed"
    );
}

#[test]
fn requested_values_are_checked_and_a_failed_write_leaks_nothing() {
    let alloc = ServiceAllocator::new(ServiceRanges::default());
    let mut first = svc("NodePort", "10.96.0.50", &[30080]);
    alloc.allocate(&mut first, None).unwrap().commit();
    let mut clash = svc("NodePort", "", &[30080]);
    let errors = alloc.allocate(&mut clash, None).unwrap_err();
    assert_eq!(errors[0].field, "spec.ports[0].nodePort");
    assert!(errors[0].detail.contains("already allocated"));
    let mut outside = svc("NodePort", "192.168.0.1", &[80]);
    let errors = alloc.allocate(&mut outside, None).unwrap_err();
    assert_eq!(errors.len(), 2, "{errors:?}");
    // A reservation dropped (the store write failed) gives its addresses back.
    let mut dropped = svc("NodePort", "10.96.0.60", &[30090]);
    drop(alloc.allocate(&mut dropped, None).unwrap());
    assert!(!alloc.is_used(Item::Ip("10.96.0.60".parse().unwrap())));
    assert!(!alloc.is_used(Item::Port(30090)));
}

#[test]
fn type_changes_free_what_the_new_type_does_not_hold() {
    let alloc = ServiceAllocator::new(ServiceRanges::default());
    let mut old = svc("NodePort", "", &[0]);
    alloc.allocate(&mut old, None).unwrap().commit();
    let port = old["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let ip: Ipv4Addr = old["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    // Same object again: keeps its own.
    let mut same = old.clone();
    alloc.allocate(&mut same, Some(&old)).unwrap().commit();
    assert_eq!(same, old);
    let mut external = json!({"spec": {"type": "ExternalName", "externalName": "x.example", "clusterIP": ip.to_string(), "ports": old["spec"]["ports"].clone()}});
    alloc.allocate(&mut external, Some(&old)).unwrap().commit();
    assert!(
        external["spec"].get("clusterIP").is_none()
            && external["spec"]["ports"][0].get("nodePort").is_none()
    );
    assert!(!alloc.is_used(Item::Ip(ip)) && !alloc.is_used(Item::Port(port)));
}

#[test]
fn local_load_balancers_get_a_health_check_port() {
    let alloc = ServiceAllocator::new(ServiceRanges::default());
    let mut lb = svc("LoadBalancer", "", &[0]);
    lb["spec"]["externalTrafficPolicy"] = json!("Local");
    alloc.allocate(&mut lb, None).unwrap().commit();
    let hc = lb["spec"]["healthCheckNodePort"].as_u64().unwrap();
    assert!((30000..=32767).contains(&hc));
    assert_ne!(Some(hc), lb["spec"]["ports"][0]["nodePort"].as_u64());
}
