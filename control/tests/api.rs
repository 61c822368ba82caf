//! The apiserver as clients see it, over HTTPS on loopback: conflicts, validation, bad input,
//! authentication, pagination, restarts and watch resumption, and kube-rs' watcher.

mod common;

use std::time::Duration;

use common::{TestServer, raw};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

fn service(name: &str, port: i64) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": {"app": name}, "ports": [{"port": port, "targetPort": 8080}]}})
}

async fn create(client: &kube::Client, ns: &str, body: &Value) -> (u16, Value) {
    raw(
        client,
        "POST",
        &format!("/api/v1/namespaces/{ns}/services"),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_update_is_a_conflict_and_a_fresh_one_succeeds() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (code, created) = create(&client, "default", &service("web", 80)).await;
    assert_eq!(code, 201, "{created}");
    let mut first = created.clone();
    first["metadata"]["labels"] = json!({"v": "1"});
    let path = "/api/v1/namespaces/default/services/web";
    let (code, updated) = raw(
        &client,
        "PUT",
        path,
        "application/json",
        first.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    // The same old resourceVersion again: someone else's write came in between.
    let mut stale = created.clone();
    stale["metadata"]["labels"] = json!({"v": "2"});
    let (code, status) = raw(
        &client,
        "PUT",
        path,
        "application/json",
        stale.to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (409, Some("Conflict")),
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let path = "/api/v1/namespaces/default/services";
    let (code, status) = raw(
        &client,
        "POST",
        path,
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (400, Some("BadRequest")),
        "{status}"
    );
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (code, _) = raw(&client, "POST", path, "application/json", huge).await;
    assert_eq!(code, 413);
    let (code, status) = create(&client, "default", &service("web", 70000)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (422, Some("Invalid")),
        "{status}"
    );
    let causes = status["details"]["causes"].as_array().unwrap();
    assert!(
        causes.iter().any(|c| c["field"] == "spec.ports[0].port"),
        "{status}"
    );
    let (code, status) = create(&client, "nowhere", &service("web", 80)).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (404, Some("NotFound")),
        "{status}"
    );
    let unknown = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"portz": []}});
    let (code, status) = raw(
        &client,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        "application/json",
        unknown.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("spec.portz"),
        "{status}"
    );
    let services: Api<Service> = Api::namespaced(client, "default");
    let names: Vec<String> = services
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    assert_eq!(names, ["kubernetes"], "nothing but the built-in Service");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_credentials_are_refused() {
    let server = TestServer::start().await;
    let anonymous = server.anonymous_client().await;
    let (code, status) = raw(
        &anonymous,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (401, Some("Unauthorized"))
    );
    let (code, _) = raw(&anonymous, "GET", "/readyz", "application/json", Vec::new()).await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_a_list_show_one_moment() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let ns = json!({"metadata": {"name": "pages"}})
        .to_string()
        .into_bytes();
    let (code, _) = raw(
        &client,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        ns,
    )
    .await;
    assert_eq!(code, 201);
    for i in 0..5 {
        assert_eq!(
            create(&client, "pages", &service(&format!("s{i}"), 80))
                .await
                .0,
            201
        );
    }
    let (code, page1) = raw(
        &client,
        "GET",
        "/api/v1/namespaces/pages/services?limit=2",
        "application/json",
        Vec::new(),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(page1["items"].as_array().unwrap().len(), 2);
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    // A write between pages does not show up in the rest of the list.
    assert_eq!(create(&client, "pages", &service("s9", 80)).await.0, 201);
    let token = page1["metadata"]["continue"].as_str().unwrap();
    let (_, page2) = raw(
        &client,
        "GET",
        &format!("/api/v1/namespaces/pages/services?limit=10&continue={token}"),
        "application/json",
        Vec::new(),
    )
    .await;
    let names: Vec<&str> = page2["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s2", "s3", "s4"]);
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page1["metadata"]["resourceVersion"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_objects_revisions_and_watch_history() {
    let server = TestServer::start().await;
    let client = server.client().await;
    let (_, a) = create(&client, "default", &service("a", 80)).await;
    let rv_a: i64 = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let (_, b) = create(&client, "default", &service("b", 80)).await;
    let dir = server.stop_keeping_state().await;

    let server = TestServer::start_in(&dir, 0).await;
    let client = server.client().await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let got = services.get("b").await.unwrap();
    assert_eq!(
        got.metadata.resource_version.as_deref(),
        b["metadata"]["resourceVersion"].as_str()
    );
    assert_eq!(got.metadata.uid.as_deref(), b["metadata"]["uid"].as_str());
    // The counter goes on from where it was.
    let (_, c) = create(&client, "default", &service("c", 80)).await;
    let rv_c: i64 = c["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv_c > rv_a + 1, "{rv_c} after {rv_a}");
    // A watch resumed from before the restart gets what it missed.
    let path = format!(
        "/api/v1/namespaces/default/services?watch=true&resourceVersion={rv_a}&timeoutSeconds=1"
    );
    let (code, _) = raw(&client, "GET", &path, "application/json", Vec::new()).await;
    assert_eq!(code, 200);
    let events = watch_lines(&client, &path).await;
    let names: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ADDED".to_owned(), "b".to_owned()),
            ("ADDED".to_owned(), "c".to_owned())
        ]
    );
    let dir = server.stop_keeping_state().await;

    // Compacted history: a watch from before it gets 410 Expired.
    {
        use skiff_control::store::Store;
        let store = skiff_control::store::sqlite::SqliteStore::open(&dir.join("state.db")).unwrap();
        store.compact(rv_c).await.unwrap();
    }
    let server = TestServer::start_in(&dir, 0).await;
    let client = server.client().await;
    let events = watch_lines(&client, &path).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn watch_lines(client: &kube::Client, path: &str) -> Vec<Value> {
    let request = http::Request::builder().uri(path).body(Vec::new()).unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), client.request_text(request))
        .await
        .expect("the watch ends at its timeout")
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_watchers_get_init_done_and_live_events() {
    let server = TestServer::start().await;
    let client = server.client().await;
    create(&client, "default", &service("before", 80)).await;
    for streaming in [false, true] {
        let services: Api<Service> = Api::namespaced(client.clone(), "default");
        let config = if streaming {
            watcher::Config::default().streaming_lists()
        } else {
            watcher::Config::default()
        };
        let mut stream = watcher(services.clone(), config).boxed();
        let mut seen = Vec::new();
        let name = format!("live-{streaming}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            match event {
                watcher::Event::Init => seen.push("Init".to_owned()),
                watcher::Event::InitApply(s) => {
                    seen.push(format!("InitApply {}", s.metadata.name.unwrap()))
                }
                watcher::Event::InitDone => {
                    seen.push("InitDone".to_owned());
                    let s: Service = serde_json::from_value(service(&name, 80)).unwrap();
                    services.create(&PostParams::default(), &s).await.unwrap();
                }
                watcher::Event::Apply(s) => {
                    seen.push(format!("Apply {}", s.metadata.name.unwrap()));
                    break;
                }
                watcher::Event::Delete(s) => {
                    seen.push(format!("Delete {}", s.metadata.name.unwrap()))
                }
            }
        }
        // The second watcher starts after the first one's object exists.
        let mut expected = vec![
            "Init".to_owned(),
            "InitApply before".to_owned(),
            "InitApply kubernetes".to_owned(),
        ];
        if streaming {
            expected.push("InitApply live-false".to_owned());
        }
        expected.extend(["InitDone".to_owned(), format!("Apply {name}")]);
        assert_eq!(seen, expected, "streaming={streaming}");
    }
    let namespaces: Api<Namespace> = Api::all(client);
    assert!(namespaces.get("kube-system").await.is_ok());
}
