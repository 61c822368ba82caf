//! The node IPAM and node lifecycle controllers as a user sees them through the API: podCIDRs
//! handed out, kept, freed and stable across restarts; silent Nodes marked unreachable, their
//! Pods made not ready (and so their Service endpoints) and evicted, and the taints lifted when
//! the Lease is renewed again.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use common::TestServer;
use ipnet::Ipv4Net;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use skiff_control::controllers::Settings;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// Polls `check` every 100 ms until it gives a value; panics after `limit`.
async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node(name: &str, cidr: Option<&str>) -> Node {
    let spec = cidr.map_or(json!({}), |c| json!({"podCIDR": c}));
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn create_node(nodes: &Api<Node>, name: &str, cidr: Option<&str>) {
    nodes
        .create(&PostParams::default(), &node(name, cidr))
        .await
        .unwrap();
}

/// The Node's podCIDR once it has one, checked to be in step with podCIDRs.
async fn cidr_of(nodes: &Api<Node>, name: &str) -> Ipv4Net {
    wait_for(
        &format!("a podCIDR on {name}"),
        Duration::from_secs(10),
        || async {
            let spec = nodes.get(name).await.unwrap().spec?;
            let cidr = spec.pod_cidr?;
            assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
            Some(cidr.parse().unwrap())
        },
    )
    .await
}

fn settings(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = Settings::default();
    f(&mut settings);
    settings
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_get_distinct_blocks_of_the_cluster_range() {
    let server = TestServer::start().await;
    let nodes: Api<Node> = Api::all(server.client().await);
    let cluster: Ipv4Net = "10.244.0.0/16".parse().unwrap();
    let mut seen = HashSet::new();
    for name in ["n1", "n2", "n3"] {
        create_node(&nodes, name, None).await;
    }
    for name in ["n1", "n2", "n3"] {
        let cidr = cidr_of(&nodes, name).await;
        assert_eq!(cidr.prefix_len(), 24, "{cidr}");
        assert!(cluster.contains(&cidr), "{cidr}");
        assert!(seen.insert(cidr), "{cidr} given twice");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_keeps_its_own_cidr_and_no_other_node_gets_it() {
    let server = TestServer::start().await;
    let nodes: Api<Node> = Api::all(server.client().await);
    // The first block, which the allocator would otherwise hand out first.
    create_node(&nodes, "own", Some("10.244.0.0/24")).await;
    create_node(&nodes, "far", Some("192.168.7.0/24")).await;
    create_node(&nodes, "next", None).await;
    let next = cidr_of(&nodes, "next").await;
    assert_ne!(next.to_string(), "10.244.0.0/24");
    assert_eq!(cidr_of(&nodes, "own").await.to_string(), "10.244.0.0/24");
    assert_eq!(cidr_of(&nodes, "far").await.to_string(), "192.168.7.0/24");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_range_is_an_event_and_a_deleted_node_frees_its_block() {
    let two_blocks = settings(|s| s.cluster_cidr = "10.244.0.0/23".parse().unwrap());
    let server = TestServer::start_with(two_blocks).await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&nodes, "a", None).await;
    create_node(&nodes, "b", None).await;
    let a = cidr_of(&nodes, "a").await;
    assert_ne!(a, cidr_of(&nodes, "b").await);

    create_node(&nodes, "c", None).await;
    let events: Api<Event> = Api::namespaced(client, "default");
    let event = wait_for("CIDRNotAvailable", Duration::from_secs(10), || async {
        let listed = events.list(&ListParams::default()).await.unwrap();
        listed.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("CIDRNotAvailable")
                && e.involved_object.name.as_deref() == Some("c")
        })
    })
    .await;
    assert_eq!(event.involved_object.kind.as_deref(), Some("Node"));
    let c = nodes.get("c").await.unwrap();
    assert_eq!(c.spec.and_then(|s| s.pod_cidr), None);

    nodes.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(cidr_of(&nodes, "c").await, a);
}

#[tokio::test(flavor = "multi_thread")]
async fn allocations_survive_a_restart() {
    let server = TestServer::start().await;
    let nodes: Api<Node> = Api::all(server.client().await);
    create_node(&nodes, "a", None).await;
    create_node(&nodes, "b", None).await;
    let a = cidr_of(&nodes, "a").await;
    let b = cidr_of(&nodes, "b").await;
    let dir = server.stop_keeping_state().await;

    let server = TestServer::start_in(&dir, 0).await;
    let nodes: Api<Node> = Api::all(server.client().await);
    create_node(&nodes, "c", None).await;
    let c = cidr_of(&nodes, "c").await;
    assert_eq!(cidr_of(&nodes, "a").await, a);
    assert_eq!(cidr_of(&nodes, "b").await, b);
    assert!(c != a && c != b, "{c} given again after the restart");
}

/// A node agent: a Ready Node and a Lease renewed every 300 ms until aborted.
async fn live_node(client: &kube::Client, name: &str) -> tokio::task::JoinHandle<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&nodes, name, None).await;
    let now = Timestamp::now().to_string();
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True",
        "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40}}))
    .unwrap();
    leases.create(&PostParams::default(), &lease).await.unwrap();
    renewing(leases, name)
}

fn renewing(leases: Api<Lease>, name: &str) -> tokio::task::JoinHandle<()> {
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let renew = json!({"spec": {"renewTime": MicroTime(Timestamp::now())}});
            leases
                .patch(&name, &PatchParams::default(), &Patch::Merge(&renew))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
}

async fn ready_pod(client: &kube::Client, name: &str, node: &str, extra: Value) -> Api<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut spec = json!({"nodeName": node, "containers": [{"name": "c", "image": "x"}]});
    json_patch::merge(&mut spec, &extra);
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": name}},
            "spec": spec}))
        .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ready = json!({"status": {"phase": "Running", "podIP": "10.244.0.5",
        "podIPs": [{"ip": "10.244.0.5"}], "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    pods
}

fn ready_status(node: &Node) -> Option<(String, String)> {
    let c = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .clone();
    Some((c.status, c.reason.unwrap_or_default()))
}

fn unreachable_effects(node: &Node) -> Vec<String> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone());
    let mut effects: Vec<String> = taints
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.key == UNREACHABLE)
        .map(|t| t.effect)
        .collect();
    effects.sort();
    effects
}

/// Creates a Service selecting `app: <name>`.
async fn service_for(client: &kube::Client, name: &str) {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
}

/// The `ready` condition of every endpoint of Service `name`.
async fn endpoints_ready(client: &kube::Client, name: &str) -> Vec<Option<bool>> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let selector = format!("kubernetes.io/service-name={name}");
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    list.items
        .iter()
        .flat_map(|s| &s.endpoints)
        .map(|e| e.conditions.as_ref().and_then(|c| c.ready))
        .collect()
}

fn pod_ready(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    Some(
        conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .status
            .clone(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_node_is_marked_unreachable_until_its_lease_is_renewed() {
    let grace = Duration::from_secs(3);
    let server = TestServer::start_with(settings(|s| s.node_monitor_grace = grace)).await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let agent = live_node(&client, "n1").await;
    let pods = ready_pod(&client, "web", "n1", json!({})).await;
    service_for(&client, "web").await;
    wait_for("a ready endpoint", Duration::from_secs(5), || async {
        (endpoints_ready(&client, "web").await == [Some(true)]).then_some(())
    })
    .await;

    // Alive past the grace: left alone.
    tokio::time::sleep(grace + Duration::from_secs(2)).await;
    let n1 = nodes.get("n1").await.unwrap();
    assert_eq!(ready_status(&n1).unwrap().0, "True");
    assert!(unreachable_effects(&n1).is_empty());
    assert_eq!(
        pod_ready(&pods.get("web").await.unwrap()).as_deref(),
        Some("True")
    );

    agent.abort();
    let stopped = Instant::now();
    let n1 = wait_for("n1 unreachable", grace + Duration::from_secs(5), || async {
        let n1 = nodes.get("n1").await.unwrap();
        (unreachable_effects(&n1).len() == 2).then_some(n1)
    })
    .await;
    assert!(stopped.elapsed() >= grace - Duration::from_millis(500));
    assert_eq!(unreachable_effects(&n1), ["NoExecute", "NoSchedule"]);
    assert_eq!(
        ready_status(&n1),
        Some(("Unknown".to_owned(), "NodeStatusUnknown".to_owned()))
    );
    wait_for("web not ready", Duration::from_secs(5), || async {
        let web = pods.get("web").await.unwrap();
        (pod_ready(&web).as_deref() == Some("False")).then_some(())
    })
    .await;
    wait_for("its endpoint not ready", Duration::from_secs(2), || async {
        (endpoints_ready(&client, "web").await == [Some(false)]).then_some(())
    })
    .await;
    assert!(
        stopped.elapsed() < grace + Duration::from_secs(5),
        "endpoint still ready {:?} after the lease stopped",
        stopped.elapsed()
    );

    let agent = renewing(Api::namespaced(client.clone(), "kube-node-lease"), "n1");
    wait_for("taints lifted", Duration::from_secs(5), || async {
        let n1 = nodes.get("n1").await.unwrap();
        unreachable_effects(&n1).is_empty().then_some(())
    })
    .await;
    // Not evicted: the default eviction timeout is minutes away.
    assert!(
        pods.get("web")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    agent.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_an_unreachable_node_are_evicted_after_the_timeout() {
    let eviction = Duration::from_secs(2);
    let server = TestServer::start_with(settings(|s| {
        s.node_monitor_grace = Duration::from_secs(2);
        s.pod_eviction_timeout = eviction;
    }))
    .await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    live_node(&client, "n1").await.abort();
    let pods = ready_pod(&client, "victim", "n1", json!({})).await;
    let tolerate = json!({"tolerations": [{"key": UNREACHABLE, "operator": "Exists",
                                           "effect": "NoExecute"}]});
    ready_pod(&client, "stays", "n1", tolerate).await;

    let victim = wait_for("victim evicted", Duration::from_secs(15), || async {
        let victim = pods.get_opt("victim").await.unwrap();
        victim.filter(|p| p.metadata.deletion_timestamp.is_some())
    })
    .await;
    let tainted = nodes.get("n1").await.unwrap().spec.unwrap().taints.unwrap();
    let added = tainted
        .iter()
        .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")
        .and_then(|t| t.time_added.clone())
        .expect("the NoExecute taint has a timeAdded")
        .0;
    // A graceful delete: deletionTimestamp is the deletion time plus the 30 s grace period.
    let deleted = victim.metadata.deletion_timestamp.unwrap().0 - Duration::from_secs(30);
    let waited = deleted.duration_since(added);
    assert!(
        waited.as_secs() >= eviction.as_secs() as i64 - 1,
        "evicted {waited} after the taint"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stays = pods.get("stays").await.unwrap();
    assert!(stays.metadata.deletion_timestamp.is_none());
    assert_eq!(pod_ready(&stays).as_deref(), Some("False"));
}
