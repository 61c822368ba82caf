use serde_json::{Value, json};

use super::*;

fn service(spec: Value) -> Service {
    let mut service = json!({"metadata": {"name": "web", "namespace": "default"}});
    service["spec"] = spec;
    serde_json::from_value(service).unwrap()
}

fn pod(name: &str, ip: Option<&str>, ready: bool, ports: Value) -> Pod {
    let mut pod = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
            "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pod["spec"]["containers"][0]["ports"] = ports;
    if let Some(ip) = ip {
        pod["status"]["podIP"] = json!(ip);
    }
    serde_json::from_value(pod).unwrap()
}

fn conditions(e: &Endpoint) -> (bool, bool, bool) {
    let c = e.conditions.clone().unwrap();
    (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
}

#[test]
fn selection_needs_a_selector_the_namespace_and_matching_labels() {
    let p = pod("a", Some("10.0.0.1"), true, json!([]));
    assert!(selects(&service(json!({"selector": {"app": "web"}})), &p));
    assert!(!selects(&service(json!({"selector": {"app": "db"}})), &p));
    assert!(
        !selects(&service(json!({})), &p),
        "no selector selects nothing"
    );
    assert!(
        !selects(&service(json!({"selector": {}})), &p),
        "an empty selector neither"
    );
    let external =
        json!({"type": "ExternalName", "externalName": "x.example", "selector": {"app": "web"}});
    assert!(!selects(&service(external), &p));
    let mut elsewhere = p;
    elsewhere.metadata.namespace = Some("other".into());
    assert!(!selects(
        &service(json!({"selector": {"app": "web"}})),
        &elsewhere
    ));
}

#[test]
fn pods_without_an_ipv4_address_or_finished_are_left_out() {
    let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
    let no_ip = pod("a", None, true, json!([]));
    let v6 = pod("b", Some("fd00::1"), true, json!([]));
    let mut done = pod("c", Some("10.0.0.3"), true, json!([]));
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let ok = pod("d", Some("10.0.0.4"), true, json!([]));
    let groups = slice_groups(&svc, &[&no_ip, &v6, &done, &ok], |_| None);
    let names: Vec<_> = groups
        .values()
        .flat_map(|g| &g.endpoints)
        .map(|e| e.target_ref.clone().unwrap().name.unwrap())
        .collect();
    assert_eq!(names, ["d"]);
}

#[test]
fn conditions_follow_readiness_termination_and_publish_not_ready() {
    let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
    let ready = pod("a", Some("10.0.0.1"), true, json!([]));
    let unready = pod("b", Some("10.0.0.2"), false, json!([]));
    let mut leaving = pod("c", Some("10.0.0.3"), true, json!([]));
    leaving.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let groups = slice_groups(&svc, &[&ready, &unready, &leaving], |n| {
        Some(format!("zone-of-{n}"))
    });
    let eps = &groups.values().next().unwrap().endpoints;
    let got: Vec<_> = eps.iter().map(conditions).collect();
    assert_eq!(
        got,
        [
            (true, true, false),
            (false, false, false),
            (false, true, true)
        ]
    );
    assert_eq!(eps[0].zone.as_deref(), Some("zone-of-node-1"));
    assert_eq!(eps[0].node_name.as_deref(), Some("node-1"));
    assert_eq!(
        eps[0].target_ref.as_ref().unwrap().uid.as_deref(),
        Some("uid-a")
    );

    let tolerant = service(
        json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true,
               "ports": [{"port": 80}]}),
    );
    let groups = slice_groups(&tolerant, &[&unready], |_| None);
    assert_eq!(
        conditions(&groups.values().next().unwrap().endpoints[0]),
        (true, false, false)
    );
}

#[test]
fn named_target_ports_resolve_per_pod_and_group_apart() {
    let svc = service(json!({"selector": {"app": "web"},
        "ports": [{"name": "web", "port": 80, "targetPort": "http"},
                  {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": "dns"}]}));
    let a = pod(
        "a",
        Some("10.0.0.1"),
        true,
        json!([{"name": "http", "containerPort": 8080},
        {"name": "dns", "containerPort": 5353, "protocol": "UDP"}]),
    );
    let b = pod(
        "b",
        Some("10.0.0.2"),
        true,
        json!([{"name": "http", "containerPort": 9090},
        {"name": "dns", "containerPort": 5353, "protocol": "TCP"}]),
    );
    let groups = slice_groups(&svc, &[&a, &b], |_| None);
    let keys: Vec<&PortKey> = groups.keys().collect();
    assert_eq!(
        keys,
        [
            &vec![
                ("dns".to_owned(), 5353, "UDP".to_owned(), None),
                ("web".to_owned(), 8080, "TCP".to_owned(), None)
            ],
            // b's dns port is TCP, so the UDP Service port does not resolve on it.
            &vec![("web".to_owned(), 9090, "TCP".to_owned(), None)],
        ]
    );
}

#[test]
fn subsets_split_ready_from_not_ready_and_drop_terminating() {
    let svc =
        service(json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}));
    let ready = pod("a", Some("10.0.0.9"), true, json!([]));
    let unready = pod("b", Some("10.0.0.2"), false, json!([]));
    let mut leaving = pod("c", Some("10.0.0.3"), true, json!([]));
    leaving.metadata.deletion_timestamp =
        unready.metadata.creation_timestamp.clone().or_else(|| {
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ))
        });
    let subsets = subsets(&svc, &[&ready, &unready, &leaving]);
    assert_eq!(subsets.len(), 1);
    let ips = |list: &Option<Vec<EndpointAddress>>| -> Vec<String> {
        list.iter().flatten().map(|a| a.ip.clone()).collect()
    };
    assert_eq!(ips(&subsets[0].addresses), ["10.0.0.9"]);
    assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.0.0.2"]);
    let port = &subsets[0].ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.name.as_deref(), port.port, port.protocol.as_deref()),
        (None, 8080, Some("TCP"))
    );
}

#[test]
fn a_headless_service_without_ports_still_lists_addresses() {
    let svc = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
    let a = pod("a", Some("10.0.0.1"), true, json!([]));
    let subsets = subsets(&svc, &[&a]);
    assert_eq!(subsets.len(), 1);
    assert!(subsets[0].ports.is_none());
    let not_headless = service(json!({"selector": {"app": "web"}}));
    assert!(super::subsets(&not_headless, &[&a]).is_empty());
}
