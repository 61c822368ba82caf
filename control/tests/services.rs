//! Service address allocation through the API: ClusterIPs and nodePorts, requested and
//! automatic, unique under load, released on delete; and the `kubernetes` Service.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{TestServer, raw};
use serde_json::{Value, json};

const SERVICES: &str = "/api/v1/namespaces/default/services";

async fn post(client: &kube::Client, body: &Value) -> (u16, Value) {
    raw(
        client,
        "POST",
        SERVICES,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

fn node_port_service(name: &str, node_port: u16) -> Value {
    json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "selector": {"app": name},
           "ports": [{"port": 80, "nodePort": node_port}]}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_service_asking_for_a_taken_node_port_is_refused() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (code, first) = post(&client, &node_port_service("a", 30080)).await;
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["spec"]["ports"][0]["nodePort"], 30080);
    let (code, status) = post(&client, &node_port_service("b", 30080)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.ports[0].nodePort"
    );
    let (code, status) = post(&client, &node_port_service("c", 8080)).await;
    assert_eq!(code, 422, "out of range: {status}");
    // Deleting the first frees its port for the next.
    raw(
        &client,
        "DELETE",
        &format!("{SERVICES}/a"),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(post(&client, &node_port_service("b", 30080)).await.0, 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_service_points_at_the_apiserver() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (code, svc) = raw(
        &client,
        "GET",
        &format!("{SERVICES}/kubernetes"),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], server.addr.port());
    // Served on loopback here: Kubernetes allows no loopback endpoints, so there are none.
    let (code, _) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/default/endpoints/kubernetes",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_services_get_distinct_cluster_ips_and_give_them_all_back() {
    const COUNT: usize = 10_000;
    const WORKERS: usize = 16;
    let server = TestServer::start().await;
    let client = server.client().await;
    let ips = Arc::new(std::sync::Mutex::new(Vec::with_capacity(COUNT)));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (client, ips) = (client.clone(), Arc::clone(&ips));
        tasks.push(tokio::spawn(async move {
            for i in (worker..COUNT).step_by(WORKERS) {
                let body = json!({"metadata": {"name": format!("s{i}")}, "spec": {"ports": [{"port": 80}]}});
                let (code, svc) = post(&client, &body).await;
                assert_eq!(code, 201, "{svc}");
                ips.lock().unwrap().push(svc["spec"]["clusterIP"].as_str().unwrap().to_owned());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let ips = ips.lock().unwrap().clone();
    let unique: HashSet<&String> = ips.iter().collect();
    assert_eq!(unique.len(), COUNT, "a ClusterIP was handed out twice");
    assert!(
        ips.iter()
            .all(|ip| ip.starts_with("10.9") || ip.starts_with("10.10") || ip.starts_with("10.11"))
    );
    // Delete them all; then every address must be free again: asking for each one explicitly works.
    let (code, _) = raw(
        &client,
        "DELETE",
        &format!("{SERVICES}?labelSelector="),
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    for (i, ip) in ips.iter().enumerate().step_by(97) {
        let body = json!({"metadata": {"name": format!("again{i}")}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        let (code, svc) = post(&client, &body).await;
        assert_eq!(code, 201, "{ip} was not freed: {svc}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_load_balancer_ingress_set_through_the_status_door_sticks_and_the_main_door_keeps_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
                    "selector": {"app": "lb"}, "ports": [{"port": 80}]}});
    assert_eq!(post(&client, &lb).await.0, 201);
    let ingress = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.10"}]}});
    let (code, patched) = raw(
        &client,
        "PATCH",
        &format!("{SERVICES}/lb/status"),
        "application/merge-patch+json",
        json!({"status": ingress, "spec": {"type": "ClusterIP"}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    // Defaulted as Kubernetes does (1.30+): the address is a VIP, not a proxy's.
    let stored = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.10", "ipMode": "VIP"}]}});
    assert_eq!(patched["status"], stored);
    assert_eq!(
        patched["spec"]["type"], "LoadBalancer",
        "the status door changes status alone"
    );
    // A spec change through the main door leaves the status as it is.
    let (code, updated) = raw(
        &client,
        "PATCH",
        &format!("{SERVICES}/lb"),
        "application/merge-patch+json",
        json!({"spec": {"sessionAffinity": "ClientIP"}, "status": {"loadBalancer": {}}})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    assert_eq!(updated["status"], stored);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replace_without_the_allocated_addresses_keeps_them() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (code, created) = post(&client, &node_port_service("r", 30090)).await;
    assert_eq!(code, 201, "{created}");
    // What `kubectl replace -f` sends for a manifest that never named the addresses.
    let manifest = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "r"},
        "spec": {"type": "NodePort", "selector": {"app": "r"},
                 "ports": [{"port": 80, "protocol": "TCP"}]}});
    let (code, replaced) = raw(
        &client,
        "PUT",
        &format!("{SERVICES}/r"),
        "application/json",
        manifest.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{replaced}");
    assert_eq!(replaced["spec"]["clusterIP"], created["spec"]["clusterIP"]);
    assert_eq!(
        replaced["spec"]["clusterIPs"],
        created["spec"]["clusterIPs"]
    );
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], 30090);
}
