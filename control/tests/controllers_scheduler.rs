//! The scheduler through the API: fake Nodes are created with their status (Ready, allocatable)
//! and Pods are watched until bound. Each case is built so that a scheduler lacking the rule
//! under test would place at least one Pod elsewhere.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

/// A Node with its status: Ready or not, and what it can hold.
fn node(name: &str, ready: bool, cpu: &str, memory: &str) -> Node {
    let status = if ready { "True" } else { "False" };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "conditions": [{"type": "Ready", "status": status, "reason": "Test"}],
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
        }
    }))
    .unwrap()
}

fn pod(name: &str, cpu: &str, extra_spec: Value) -> Pod {
    let mut pod = json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "skiff/test-server",
                 "resources": {"requests": {"cpu": cpu, "memory": "128Mi"}}}]}
    });
    if let Value::Object(extra) = extra_spec {
        for (k, v) in extra {
            pod["spec"][k] = v;
        }
    }
    serde_json::from_value(pod).unwrap()
}

async fn create_nodes(client: &kube::Client, list: Vec<Node>) {
    let nodes: Api<Node> = Api::all(client.clone());
    for n in list {
        nodes.create(&PostParams::default(), &n).await.unwrap();
    }
}

async fn create_pods(pods: &Api<Pod>, list: Vec<Pod>) {
    for p in list {
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
}

/// Waits until `check` holds for the Pods; returns them.
async fn wait_pods(pods: &Api<Pod>, what: &str, check: impl Fn(&[Pod]) -> bool) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        if check(&list) {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:#?}",
            placements(&list)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn placements(pods: &[Pod]) -> BTreeMap<String, Option<String>> {
    pods.iter()
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                node_of(p).map(str::to_owned),
            )
        })
        .collect()
}

fn all_bound(pods: &[Pod], count: usize) -> bool {
    pods.len() == count && pods.iter().all(|p| node_of(p).is_some())
}

async fn bound_pods(pods: &Api<Pod>, count: usize) -> BTreeMap<String, Option<String>> {
    placements(&wait_pods(pods, "pods to be bound", |l| all_bound(l, count)).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replicasets_pods_spread_over_nodes_even_when_one_node_is_bigger() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // By free resources alone every Pod would go to `big`; spreading sends one to each.
    create_nodes(
        &client,
        vec![
            node("big", true, "64", "256Gi"),
            node("small-a", true, "4", "8Gi"),
            node("small-b", true, "4", "8Gi"),
        ],
    )
    .await;
    // The ReplicaSet controller makes the three Pods; the scheduler sees them as siblings.
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "image": "skiff/test-server",
                     "resources": {"requests": {"cpu": "100m"}}}]}}}
    }))
    .unwrap();
    let rs = replicasets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = wait_pods(&pods, "the ReplicaSet's Pods bound", |l| all_bound(l, 3)).await;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &list {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, rs.metadata.uid.clone().unwrap());
        *per_node.entry(node_of(p).unwrap()).or_default() += 1;
    }
    let (most, fewest) = (per_node.values().max(), per_node.values().min());
    assert!(
        per_node.len() == 3 && most.zip(fewest).is_some_and(|(m, f)| m - f <= 1),
        "{:?}",
        placements(&list)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_selector_picks_the_matching_node() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut ssd = node("ssd", true, "4", "8Gi");
    ssd.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("disk".into(), "ssd".into());
    create_nodes(
        &client,
        vec![
            node("hdd-a", true, "32", "64Gi"),
            ssd,
            node("hdd-b", true, "32", "64Gi"),
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = json!({"nodeSelector": {"disk": "ssd"}});
    create_pods(
        &pods,
        (0..3)
            .map(|i| pod(&format!("ssd-{i}"), "100m", selector.clone()))
            .collect(),
    )
    .await;
    let placed = bound_pods(&pods, 3).await;
    assert!(
        placed.values().all(|n| n.as_deref() == Some("ssd")),
        "{placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tainted_node_takes_only_pods_that_tolerate_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    // The tainted Node is by far the emptiest: without taints every Pod would go there.
    let mut gpu = node("gpu", true, "64", "256Gi");
    gpu.spec = Some(
        serde_json::from_value(json!({"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}))
        .unwrap(),
    );
    create_nodes(&client, vec![gpu, node("plain", true, "4", "8Gi")]).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let tolerate = json!({"tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]});
    let mut list: Vec<Pod> = (0..3)
        .map(|i| pod(&format!("plain-{i}"), "100m", json!({})))
        .collect();
    list.push(pod("tolerant", "100m", tolerate));
    create_pods(&pods, list).await;
    let placed = bound_pods(&pods, 4).await;
    for i in 0..3 {
        assert_eq!(
            placed[&format!("plain-{i}")].as_deref(),
            Some("plain"),
            "{placed:?}"
        );
    }
    assert_eq!(placed["tolerant"].as_deref(), Some("gpu"), "{placed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_and_cordoned_nodes_are_skipped() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut cordoned = node("cordoned", true, "64", "256Gi");
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    create_nodes(
        &client,
        vec![
            node("not-ready", false, "64", "256Gi"),
            cordoned,
            node("ready", true, "4", "8Gi"),
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_pods(
        &pods,
        (0..4)
            .map(|i| pod(&format!("p-{i}"), "100m", json!({})))
            .collect(),
    )
    .await;
    let placed = bound_pods(&pods, 4).await;
    assert!(
        placed.values().all(|n| n.as_deref() == Some("ready")),
        "{placed:?}"
    );
}

fn scheduled_condition(pod: &Pod) -> Option<(String, String, String)> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled")?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_too_big_waits_reported_until_a_big_enough_node_comes() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut cordoned = node("cordoned", true, "64", "256Gi");
    cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
    create_nodes(
        &client,
        vec![
            node("small-a", true, "2", "8Gi"),
            node("small-b", true, "2", "8Gi"),
            cordoned,
        ],
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Two Pods that each fit a small Node alone fill both; the third must wait.
    create_pods(
        &pods,
        vec![
            pod("fill-a", "1500m", json!({})),
            pod("fill-b", "1500m", json!({})),
        ],
    )
    .await;
    bound_pods(&pods, 2).await;
    create_pods(&pods, vec![pod("big", "1500m", json!({}))]).await;

    let list = wait_pods(&pods, "PodScheduled=False on big", |l| {
        l.iter().any(|p| {
            p.metadata.name.as_deref() == Some("big")
                && scheduled_condition(p).is_some_and(|c| c.0 == "False")
        })
    })
    .await;
    let big = list
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("big"))
        .unwrap();
    assert_eq!(node_of(big), None);
    let (_, reason, message) = scheduled_condition(big).unwrap();
    assert_eq!(reason, "Unschedulable");
    assert_eq!(
        message,
        "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
    );

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let deadline = tokio::time::Instant::now() + WAIT;
    let event = loop {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        if let Some(e) = list.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("big")
                && e.reason.as_deref() == Some("FailedScheduling")
        }) {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no FailedScheduling event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(event.involved_object.uid, big.metadata.uid);
    assert_eq!(event.message.as_deref(), Some(message.as_str()));

    create_nodes(&client, vec![node("roomy", true, "8", "32Gi")]).await;
    let started = tokio::time::Instant::now();
    let placed = bound_pods(&pods, 3).await;
    assert_eq!(placed["big"].as_deref(), Some("roomy"), "{placed:?}");
    // A new Node wakes the Pod at once, not at the end of its backoff.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let list = wait_pods(&pods, "PodScheduled=True on big", |l| {
        l.iter().any(|p| {
            p.metadata.name.as_deref() == Some("big")
                && scheduled_condition(p).is_some_and(|c| c.0 == "True")
        })
    })
    .await;
    assert_eq!(list.len(), 3);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        let scheduled = list.iter().find(|e| {
            e.involved_object.name.as_deref() == Some("big")
                && e.reason.as_deref() == Some("Scheduled")
        });
        if let Some(e) = scheduled {
            assert_eq!(e.type_.as_deref(), Some("Normal"));
            assert_eq!(
                e.message.as_deref(),
                Some("Successfully assigned default/big to roomy")
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no Scheduled event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
