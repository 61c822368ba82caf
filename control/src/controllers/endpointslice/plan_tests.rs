use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::json;

use super::*;

fn service() -> Service {
    serde_json::from_value(
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid",
        "labels": {"team": "blue"}}, "spec": {"selector": {"app": "web"}}}),
    )
    .unwrap()
}

fn endpoint(pod: &str, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![format!("10.0.0.{}", pod.trim_start_matches('p'))],
        conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
            ready: Some(ready),
            serving: Some(ready),
            terminating: Some(false),
        }),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some(pod.into()),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    }
}

fn group(pods: impl IntoIterator<Item = u32>) -> BTreeMap<PortKey, Group> {
    let key: PortKey = vec![(String::new(), 8080, "TCP".into(), None)];
    let g = Group {
        ports: desired::slice_ports(&key),
        endpoints: pods
            .into_iter()
            .map(|i| endpoint(&format!("p{i}"), true))
            .collect(),
    };
    BTreeMap::from([(key, g)])
}

/// Applies a plan the way the API would: named creations, replaced updates, deletions.
fn apply(existing: Vec<EndpointSlice>, plan: Plan, next: &mut u32) -> Vec<EndpointSlice> {
    let mut out: Vec<EndpointSlice> = existing
        .into_iter()
        .filter(|s| !plan.delete.contains(s.metadata.name.as_ref().unwrap()))
        .map(|s| {
            plan.update
                .iter()
                .find(|u| u.metadata.name == s.metadata.name)
                .cloned()
                .unwrap_or(s)
        })
        .collect();
    for mut slice in plan.create {
        *next += 1;
        slice.metadata.name = Some(format!("web-{next:05}"));
        out.push(slice);
    }
    out
}

fn plan_for(existing: &[EndpointSlice], groups: &BTreeMap<PortKey, Group>) -> Plan {
    let refs: Vec<&EndpointSlice> = existing.iter().collect();
    plan(&service(), &refs, groups, 100)
}

#[test]
fn new_endpoints_fill_slices_of_at_most_max() {
    let p = plan_for(&[], &group(1..=250));
    let sizes: Vec<usize> = p.create.iter().map(|s| s.endpoints.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let slice = &p.create[0];
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    let labels = slice.metadata.labels.as_ref().unwrap();
    assert_eq!(
        labels.get(SERVICE_NAME_LABEL).map(String::as_str),
        Some("web")
    );
    assert_eq!(
        labels.get(MANAGED_BY_LABEL).map(String::as_str),
        Some(MANAGED_BY)
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("blue"));
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        ("svc-uid", Some(true))
    );
}

#[test]
fn an_unchanged_state_plans_nothing() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=150)), &mut n);
    assert!(plan_for(&slices, &group(1..=150)).is_empty());
}

#[test]
fn a_changed_endpoint_rewrites_only_its_slice() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=150)), &mut n);
    let mut groups = group(1..=150);
    let eps = &mut groups.values_mut().next().unwrap().endpoints;
    eps[120] = endpoint("p121", false);
    let p = plan_for(&slices, &groups);
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].metadata.name, slices[1].metadata.name);
    assert!(p.update[0].endpoints.contains(&endpoint("p121", false)));
}

#[test]
fn removed_endpoints_free_room_that_new_ones_take() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=100)), &mut n);
    // p1 leaves, p101 arrives: the one slice is rewritten, nothing created.
    let p = plan_for(&slices, &group(2..=101));
    assert!(p.create.is_empty() && p.delete.is_empty(), "{p:?}");
    let names: Vec<String> = p.update[0]
        .endpoints
        .iter()
        .map(|e| e.target_ref.clone().unwrap().name.unwrap())
        .collect();
    assert_eq!(names.len(), 100);
    assert_eq!(names.first().map(String::as_str), Some("p2"));
    assert_eq!(names.last().map(String::as_str), Some("p101"));
}

#[test]
fn emptied_slices_are_deleted_and_an_empty_service_keeps_one_placeholder() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=150)), &mut n);
    let p = plan_for(&slices, &group(1..=40));
    assert_eq!(p.delete, [slices[1].metadata.name.clone().unwrap()]);
    let p = plan_for(&slices, &BTreeMap::new());
    assert_eq!(p.update.len(), 1, "the first slice becomes the placeholder");
    assert!(p.update[0].endpoints.is_empty() && p.update[0].ports.is_none());
    assert_eq!(p.delete.len(), 1);
    let placeholder = apply(slices, p, &mut n);
    assert!(plan_for(&placeholder, &BTreeMap::new()).is_empty());
    let fresh = plan_for(&[], &BTreeMap::new());
    assert_eq!(fresh.create.len(), 1);
    assert!(fresh.create[0].endpoints.is_empty());
}

#[test]
fn slices_of_a_port_list_no_longer_wanted_are_replaced() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=3)), &mut n);
    let key: PortKey = vec![(String::new(), 9090, "TCP".into(), None)];
    let moved = BTreeMap::from([(
        key.clone(),
        Group {
            ports: desired::slice_ports(&key),
            endpoints: (1..=3).map(|i| endpoint(&format!("p{i}"), true)).collect(),
        },
    )]);
    let p = plan_for(&slices, &moved);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.delete.len(), 1);
}

#[test]
fn changed_service_labels_rewrite_the_slices() {
    let mut n = 0;
    let slices = apply(Vec::new(), plan_for(&[], &group(1..=3)), &mut n);
    let mut svc = service();
    svc.metadata.labels = Some(BTreeMap::from([("team".into(), "red".into())]));
    let refs: Vec<&EndpointSlice> = slices.iter().collect();
    let p = plan(&svc, &refs, &group(1..=3), 100);
    assert_eq!(p.update.len(), 1);
    let labels = p.update[0].metadata.labels.as_ref().unwrap();
    assert_eq!(labels.get("team").map(String::as_str), Some("red"));
}
