use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;

fn slice(name: &str, endpoints: &Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "ns", "name": name,
            "labels": {SERVICE_NAME_LABEL: "web"},
            "annotations": {TRIGGER_TIME_ANNOTATION: "2026-01-02T03:04:05Z"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn key() -> ServicePortName {
    ServicePortName::new("ns", "web", "http", Protocol::Tcp)
}

#[test]
fn endpoints_carry_their_conditions_node_and_hints() {
    let mut tracker = EndpointSliceTracker::new();
    let mut map = EndpointsMap::new();
    tracker.update(&slice("a", &json!([
        {"addresses": ["10.244.1.5"], "nodeName": "n1", "hints": {"forZones": [{"name": "z1"}]}},
        {"addresses": ["10.244.2.5"], "conditions": {"ready": false, "serving": true, "terminating": true}},
    ])));
    let update = map.apply(&mut tracker);
    assert_eq!(update.changed.len(), 1);
    assert_eq!(update.trigger_times.len(), 1);
    let eps = map.get(&key());
    assert_eq!(eps.len(), 2);
    assert!(eps[0].ready && eps[0].serving && !eps[0].terminating);
    assert_eq!(eps[0].node_name.as_deref(), Some("n1"));
    assert_eq!(eps[0].zone_hints, Some(["z1".to_owned()].into()));
    assert!(!eps[1].ready && eps[1].serving && eps[1].terminating);
    assert_eq!(eps[1].zone_hints, None);
}

#[test]
fn slices_of_one_service_merge_and_duplicates_prefer_ready() {
    let mut tracker = EndpointSliceTracker::new();
    let mut map = EndpointsMap::new();
    tracker.update(&slice(
        "a",
        &json!([{"addresses": ["10.244.1.5"], "conditions": {"ready": false}}]),
    ));
    tracker.update(&slice(
        "b",
        &json!([{"addresses": ["10.244.1.5"]}, {"addresses": ["10.244.1.6"]}]),
    ));
    map.apply(&mut tracker);
    let eps = map.get(&key());
    assert_eq!(eps.len(), 2);
    assert!(eps.iter().all(|e| e.ready));

    // Deleting one slice leaves the other's endpoints.
    tracker.delete(&slice("b", &json!([])));
    map.apply(&mut tracker);
    let eps = map.get(&key());
    assert_eq!(eps.len(), 1);
    assert!(!eps[0].ready);

    tracker.delete(&slice("a", &json!([])));
    map.apply(&mut tracker);
    assert!(map.get(&key()).is_empty());
    assert_eq!(map.iter().count(), 0);
}

#[test]
fn unchanged_and_foreign_slices_record_nothing() {
    let mut tracker = EndpointSliceTracker::new();
    let mut map = EndpointsMap::new();
    let a = slice("a", &json!([{"addresses": ["10.244.1.5"]}]));
    assert!(tracker.update(&a));
    map.apply(&mut tracker);
    assert!(!tracker.update(&a));
    let mut foreign = a.clone();
    foreign
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert(SERVICE_PROXY_NAME_LABEL.into(), "x".into());
    assert!(!tracker.update(&foreign));
    let mut v6 = a.clone();
    v6.address_type = "IPv6".into();
    v6.metadata.name = Some("v6".into());
    assert!(!tracker.update(&v6), "an IPv6 slice adds no IPv4 endpoints");
    assert_eq!(tracker.pending(), 0);
}

#[test]
fn a_relist_drops_slices_it_does_not_name() {
    let mut tracker = EndpointSliceTracker::new();
    let mut map = EndpointsMap::new();
    tracker.update(&slice("a", &json!([{"addresses": ["10.244.1.5"]}])));
    tracker.update(&slice("b", &json!([{"addresses": ["10.244.1.6"]}])));
    map.apply(&mut tracker);
    assert!(tracker.relist(&[slice("b", &json!([{"addresses": ["10.244.1.6"]}]))]));
    map.apply(&mut tracker);
    let ips: Vec<_> = map.get(&key()).iter().map(|e| e.ip.to_string()).collect();
    assert_eq!(ips, ["10.244.1.6"]);
}
