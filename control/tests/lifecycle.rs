//! Object lifecycles as Kubernetes defines them: finalizers, graceful Pod deletion, collections,
//! namespaces taking their contents along, subresources, dry runs, and watch selector transitions.

mod common;

use std::time::Duration;

use common::{TestServer, raw};
use serde_json::{Value, json};

const JSON: &str = "application/json";
const MERGE: &str = "application/merge-patch+json";

async fn call(client: &kube::Client, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    let content_type = if method == "PATCH" { MERGE } else { JSON };
    raw(client, method, path, content_type, bytes).await
}

fn pod(name: &str, node: Option<&str>, labels: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                         "spec": {"containers": [{"name": "c", "image": "skiff/test-server"}]}});
    pod["metadata"]["labels"] = labels;
    // These tests are about the API's lifecycle rules: no scheduler of this server acts on them
    // (its PodScheduled=False updates would be extra watch events).
    pod["spec"]["schedulerName"] = json!("lifecycle-tests");
    if let Some(node) = node {
        pod["spec"]["nodeName"] = json!(node);
    }
    pod
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test(flavor = "multi_thread")]
async fn finalizers_hold_an_object_until_cleared() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let mut p = pod("held", None, json!({}));
    p["metadata"]["finalizers"] = json!(["example.com/hold"]);
    assert_eq!(call(&client, "POST", PODS, &p).await.0, 201);
    let (code, deleted) = call(&client, "DELETE", &format!("{PODS}/held"), &Value::Null).await;
    assert_eq!(code, 200);
    assert!(
        deleted["metadata"]["deletionTimestamp"].is_string(),
        "{deleted}"
    );
    let (code, still) = call(&client, "GET", &format!("{PODS}/held"), &Value::Null).await;
    assert_eq!(
        (code, still["metadata"]["finalizers"][0].as_str()),
        (200, Some("example.com/hold"))
    );
    let (code, _) = call(
        &client,
        "PATCH",
        &format!("{PODS}/held"),
        &json!({"metadata": {"finalizers": null}}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        call(&client, "GET", &format!("{PODS}/held"), &Value::Null)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_a_node_are_deleted_gracefully_and_unscheduled_ones_at_once() {
    let server = TestServer::start().await;
    let client = server.client().await;
    assert_eq!(
        call(
            &client,
            "POST",
            PODS,
            &pod("running", Some("node1"), json!({}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(&client, "POST", PODS, &pod("pending", None, json!({})))
            .await
            .0,
        201
    );
    let (_, marked) = call(&client, "DELETE", &format!("{PODS}/running"), &Value::Null).await;
    assert_eq!(
        marked["metadata"]["deletionGracePeriodSeconds"], 30,
        "{marked}"
    );
    assert_eq!(
        call(&client, "GET", &format!("{PODS}/running"), &Value::Null)
            .await
            .0,
        200
    );
    // The node agent's final delete: grace 0.
    let (code, _) = call(
        &client,
        "DELETE",
        &format!("{PODS}/running"),
        &json!({"gracePeriodSeconds": 0}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        call(&client, "GET", &format!("{PODS}/running"), &Value::Null)
            .await
            .0,
        404
    );
    assert_eq!(
        call(&client, "DELETE", &format!("{PODS}/pending"), &Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&client, "GET", &format!("{PODS}/pending"), &Value::Null)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deletecollection_takes_only_what_the_selector_matches() {
    let server = TestServer::start().await;
    let client = server.client().await;
    for (name, app) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        assert_eq!(
            call(&client, "POST", PODS, &pod(name, None, json!({"app": app})))
                .await
                .0,
            201
        );
    }
    let (code, _) = call(
        &client,
        "DELETE",
        &format!("{PODS}?labelSelector=app%3Da"),
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    let (_, left) = call(&client, "GET", PODS, &Value::Null).await;
    let names: Vec<&str> = left["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_namespace_takes_its_contents_and_protected_ones_stay() {
    let server = TestServer::start().await;
    let client = server.client().await;
    assert_eq!(
        call(
            &client,
            "POST",
            "/api/v1/namespaces",
            &json!({"metadata": {"name": "gone"}})
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &client,
            "POST",
            "/api/v1/namespaces/gone/pods",
            &pod("p", None, json!({}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(&client, "DELETE", "/api/v1/namespaces/gone", &Value::Null)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &client,
            "GET",
            "/api/v1/namespaces/gone/pods/p",
            &Value::Null
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(&client, "GET", "/api/v1/namespaces/gone", &Value::Null)
            .await
            .0,
        404
    );
    let (code, status) = call(
        &client,
        "DELETE",
        "/api/v1/namespaces/default",
        &Value::Null,
    )
    .await;
    assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")));
}

#[tokio::test(flavor = "multi_thread")]
async fn binding_status_and_scale_each_change_only_their_part() {
    let server = TestServer::start().await;
    let client = server.client().await;
    assert_eq!(
        call(&client, "POST", PODS, &pod("p", None, json!({})))
            .await
            .0,
        201
    );
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "node2"}});
    assert_eq!(
        call(&client, "POST", &format!("{PODS}/p/binding"), &binding)
            .await
            .0,
        201
    );
    let (code, status) = call(&client, "POST", &format!("{PODS}/p/binding"), &binding).await;
    assert_eq!(code, 409, "bound once only: {status}");
    // Status through the main door is ignored; through /status it sticks, alone.
    let (_, current) = call(&client, "GET", &format!("{PODS}/p"), &Value::Null).await;
    assert_eq!(current["spec"]["nodeName"], "node2");
    let conditions = current["status"]["conditions"].as_array().cloned();
    let scheduled: Vec<_> = conditions
        .iter()
        .flatten()
        .filter(|c| c["type"] == "PodScheduled")
        .map(|c| c["status"].clone())
        .collect();
    assert_eq!(
        scheduled,
        vec![json!("True")],
        "the binding marks the Pod scheduled"
    );
    let mut update = current.clone();
    update["status"]["phase"] = json!("Running");
    update["metadata"]["labels"] = json!({"x": "y"});
    let (_, after_main) = call(&client, "PUT", &format!("{PODS}/p"), &update).await;
    assert_eq!(
        (
            after_main["status"]["phase"].as_str(),
            after_main["metadata"]["labels"]["x"].as_str()
        ),
        (Some("Pending"), Some("y"))
    );
    let (_, after_status) = call(
        &client,
        "PATCH",
        &format!("{PODS}/p/status"),
        &json!({"status": {"phase": "Running"}, "metadata": {"labels": {"x": "z"}}}),
    )
    .await;
    assert_eq!(
        (
            after_status["status"]["phase"].as_str(),
            after_status["metadata"]["labels"]["x"].as_str()
        ),
        (Some("Running"), Some("y"))
    );

    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    assert_eq!(call(&client, "POST", deployments, &deploy).await.0, 201);
    let (code, scale) = call(
        &client,
        "GET",
        &format!("{deployments}/d/scale"),
        &Value::Null,
    )
    .await;
    assert_eq!(
        (
            code,
            scale["kind"].as_str(),
            scale["spec"]["replicas"].as_i64()
        ),
        (200, Some("Scale"), Some(1))
    );
    assert_eq!(scale["status"]["selector"], "app=d");
    let mut scale = scale;
    scale["spec"]["replicas"] = json!(4);
    assert_eq!(
        call(&client, "PUT", &format!("{deployments}/d/scale"), &scale)
            .await
            .0,
        200
    );
    let (_, d) = call(&client, "GET", &format!("{deployments}/d"), &Value::Null).await;
    assert_eq!(
        (
            d["spec"]["replicas"].as_i64(),
            d["metadata"]["generation"].as_i64()
        ),
        (Some(4), Some(2))
    );
    let (code, _) = call(
        &client,
        "PATCH",
        &format!("{deployments}/d/scale"),
        &json!({"spec": {"replicas": -1}}),
    )
    .await;
    assert_eq!(code, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_answers_but_stores_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (code, answered) = call(
        &client,
        "POST",
        &format!("{PODS}?dryRun=All"),
        &pod("dry", None, json!({})),
    )
    .await;
    assert_eq!(code, 201);
    assert_eq!(
        answered["spec"]["restartPolicy"], "Always",
        "defaults applied: {answered}"
    );
    assert_eq!(
        call(&client, "GET", &format!("{PODS}/dry"), &Value::Null)
            .await
            .0,
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_with_a_selector_sees_objects_enter_and_leave_it() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (_, list) = call(&client, "GET", PODS, &Value::Null).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let watch_path =
        format!("{PODS}?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}&timeoutSeconds=2");
    let watcher = {
        let client = client.clone();
        tokio::spawn(async move {
            let request = http::Request::builder()
                .uri(watch_path)
                .body(Vec::new())
                .unwrap();
            client.request_text(request).await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    call(
        &client,
        "POST",
        PODS,
        &pod("other", None, json!({"app": "db"})),
    )
    .await;
    call(
        &client,
        "POST",
        PODS,
        &pod("w", None, json!({"app": "web"})),
    )
    .await;
    call(
        &client,
        "PATCH",
        &format!("{PODS}/w"),
        &json!({"metadata": {"annotations": {"a": "b"}}}),
    )
    .await;
    call(
        &client,
        "PATCH",
        &format!("{PODS}/w"),
        &json!({"metadata": {"labels": {"app": "api"}}}),
    )
    .await;
    call(
        &client,
        "PATCH",
        &format!("{PODS}/other"),
        &json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await;
    let text = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .unwrap()
        .unwrap();
    let events: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("ADDED", "w"),
        ("MODIFIED", "w"),
        ("DELETED", "w"),
        ("ADDED", "other"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    assert_eq!(events, expected);
}
