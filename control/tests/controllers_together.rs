//! The controllers together, as the first check puts it: a Deployment of 3 replicas over
//! 3 ready nodes becomes 3 Pods spread 1/1/1, and a Service selecting them gets a ClusterIP in
//! range and one EndpointSlice with 3 ready endpoints once the Pods report Ready; a deleted Pod
//! is terminating (its endpoint too) while a replacement is scheduled, and is gone once its
//! node lets it go. The test plays kubelet for the Pods' status, as no node agent runs here.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_spreads_over_nodes_and_its_service_gets_ready_endpoints() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    for name in ["node1", "node2", "node3"] {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "skiff/test-server",
                                       "ports": [{"name": "http", "containerPort": 8080}],
                                       "resources": {"requests": {"cpu": "100m"}}}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}
    }))
    .unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let ip: std::net::Ipv4Addr = service.spec.unwrap().cluster_ip.unwrap().parse().unwrap();
    assert!(
        "10.96.0.0/12"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&ip),
        "{ip}"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let placed = eventually("3 Pods bound to nodes", async || {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        let nodes: Vec<String> = list
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        (list.len() == 3 && nodes.len() == 3).then_some(list)
    })
    .await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for pod in &placed {
        *per_node
            .entry(pod.spec.as_ref().unwrap().node_name.clone().unwrap())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [1, 1, 1],
        "{per_node:?}"
    );

    // Kubelet's part: each Pod runs, gets an IP and reports Ready.
    for (i, pod) in placed.iter().enumerate() {
        let status = json!({"status": {"phase": "Running", "podIP": format!("10.244.{i}.10"),
                            "podIPs": [{"ip": format!("10.244.{i}.10")}],
                            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(
            pod.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice = eventually("one EndpointSlice with 3 ready endpoints", async || {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?
            .items;
        let slice = list.into_iter().next()?;
        let ready = slice
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .count();
        (ready == 3).then_some(slice)
    })
    .await;
    assert_eq!(
        slice.ports.unwrap()[0].port,
        Some(8080),
        "the named targetPort resolved"
    );
    let all = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap()
        .items;
    assert_eq!(all.len(), 1);

    // Deleting a bound Pod starts a graceful deletion: it stays, terminating, until its node
    // confirms; its endpoint turns terminating and a replacement is created and scheduled.
    let victim = placed[0].metadata.name.clone().unwrap();
    let victim_ip = "10.244.0.10";
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    let terminating = pods.get(&victim).await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    eventually("the victim's endpoint terminating", async || {
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?
            .items;
        let endpoint = list
            .iter()
            .flat_map(|s| &s.endpoints)
            .find(|e| e.addresses == [victim_ip])?;
        let c = endpoint.conditions.clone()?;
        (c.ready == Some(false) && c.serving == Some(true) && c.terminating == Some(true))
            .then_some(())
    })
    .await;
    let replacement = eventually("a replacement Pod bound to a node", async || {
        let list = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?
            .items;
        list.into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !placed
                    .iter()
                    .any(|old| old.metadata.name == p.metadata.name)
                && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        })
    })
    .await;
    assert_eq!(
        replacement.spec.unwrap().node_name,
        terminating.spec.unwrap().node_name,
        "the replacement goes where the spread is short"
    );
    // The node agent's last word: the Pod's containers stopped, delete it for good.
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    eventually("the victim gone with its endpoint", async || {
        let gone = pods.get_opt(&victim).await.ok()?.is_none();
        let list = slices
            .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
            .await
            .ok()?
            .items;
        let listed = list
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.addresses == [victim_ip]);
        (gone && !listed).then_some(())
    })
    .await;
}
