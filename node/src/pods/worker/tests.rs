//! The worker against the fake runtime and a fake apiserver.
use super::launch::port_mappings;
use super::*;
use crate::runtime::PortMapping;
use crate::runtime::fake::FakeRuntime;
use std::sync::Mutex;

/// What the fake apiserver was sent: method, path, body.
type Requests = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose apiserver records every request and answers a status patch with the Pod
/// it made, anything else with what it was sent.
fn fake_api() -> (kube::Client, Requests) {
    let requests: Requests = Arc::default();
    let log = Arc::clone(&requests);
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let log = Arc::clone(&log);
        async move {
            use http_body_util::BodyExt;
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let sent: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let path = parts.uri.path().to_owned();
            log.lock()
                .unwrap()
                .push((parts.method.to_string(), path.clone(), sent.clone()));
            let reply = if path.ends_with("/status") {
                json!({"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "web-1", "namespace": "default"},
                       "status": sent["status"]})
            } else {
                sent
            };
            let body = http_body_util::Full::new(bytes::Bytes::from(reply.to_string()));
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http::Response::new(body))
        }
    });
    (kube::Client::new(service, "default"), requests)
}

fn worker(runtime: Arc<FakeRuntime>) -> (Worker, Requests) {
    let (client, requests) = fake_api();
    let (services, mut writer) = kube::runtime::reflector::store::<Service>();
    let web: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.2", "ports": [{"port": 80}]}}))
    .unwrap();
    writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(web));
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), "node1"),
        client,
        runtime,
        dns: DnsSettings::default(),
        services,
        node: "node1".into(),
        node_ip: Ipv4Addr::new(172, 31, 0, 11),
    });
    let worker = Worker::new(ctx);
    (worker, requests)
}

fn pod(container: &Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default", "uid": "u1"},
        "spec": {"nodeName": "node1", "containers": [container]}}))
    .unwrap()
}

/// The status last patched, and the reasons of the events recorded so far (events go out
/// in the background: waits until `event` is among them).
async fn posted(requests: &Requests, event: &str) -> (Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = requests.lock().unwrap().clone();
        let status = seen
            .iter()
            .rev()
            .find(|(_, path, _)| path.ends_with("/status"))
            .map(|(_, _, body)| body["status"].clone())
            .unwrap_or(Value::Null);
        let reasons: Vec<String> = seen
            .iter()
            .filter(|(_, path, _)| path.contains("/events"))
            .filter_map(|(_, _, body)| body["reason"].as_str().map(str::to_owned))
            .collect();
        if reasons.iter().any(|r| r == event) || Instant::now() >= deadline {
            return (status, reasons);
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_status_already_posted_is_not_posted_again() {
    let posted = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
        "lastTransitionTime": "T1", "lastProbeTime": null}], "qosClass": "BestEffort"});
    let same = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True",
        "lastTransitionTime": "T1", "lastProbeTime": null}]});
    assert!(subset_of(&same, &posted));
    let changed = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False",
        "lastTransitionTime": "T2", "lastProbeTime": null}]});
    assert!(!subset_of(&changed, &posted));
}

#[test]
fn host_ports_become_port_mappings() {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]}
    ]}}))
    .unwrap();
    assert_eq!(
        port_mappings(&pod),
        [PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: None
        }]
    );
}

#[tokio::test]
async fn a_pod_runs_with_its_image_command_and_service_variables() {
    let runtime = Arc::new(FakeRuntime::default());
    let (mut worker, requests) = worker(Arc::clone(&runtime));
    let pod = pod(
        &json!({"name": "app", "image": "localhost:5000/skiff/test-server",
        "args": ["--name", "$(GREETING)"], "env": [{"name": "GREETING", "value": "hi"}],
        "resources": {"limits": {"memory": "64Mi"}}}),
    );
    worker.sync(&pod).await;
    let runs = runtime.runs("u1", "app");
    assert_eq!(runs.len(), 1);
    let config = &runs[0].config;
    assert_eq!(config.image, "localhost:5000/skiff/test-server");
    assert!(
        config.command.is_empty(),
        "the image's entrypoint is the runtime's to apply"
    );
    assert_eq!(
        config.args.as_deref(),
        Some(&["--name".to_owned(), "hi".to_owned()][..])
    );
    let env = |k: &str| {
        config
            .env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(env("WEB_SERVICE_HOST").as_deref(), Some("10.96.0.2"));
    assert_eq!(env("GREETING").as_deref(), Some("hi"));
    assert_eq!(config.resources.memory_limit, Some(64 << 20));
    assert_eq!(runtime.pulls(), 1, ":latest is pulled (policy Always)");
    let (status, reasons) = posted(&requests, "Started").await;
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["podIP"], "10.244.0.1");
    assert_eq!(
        status["containerStatuses"][0]["imageID"],
        "sha256:localhost:5000/skiff/test-server"
    );
    assert!(reasons.contains(&"Pulled".to_owned()), "{reasons:?}");
}

#[tokio::test]
async fn a_missing_image_waits_in_err_image_pull_then_backs_off() {
    let mut fake = FakeRuntime::default();
    fake.missing_images.insert("localhost:5000/nope:v1".into());
    let runtime = Arc::new(fake);
    let (mut worker, requests) = worker(Arc::clone(&runtime));
    let pod = pod(&json!({"name": "app", "image": "localhost:5000/nope:v1"}));
    worker.sync(&pod).await;
    let (status, reasons) = posted(&requests, "BackOff").await;
    let waiting = &status["containerStatuses"][0]["state"]["waiting"];
    assert_eq!(waiting["reason"], "ErrImagePull");
    assert!(
        waiting["message"].as_str().unwrap().contains("not found"),
        "{waiting}"
    );
    assert!(reasons.contains(&"Failed".to_owned()), "{reasons:?}");
    worker.sync(&pod).await;
    let (status, _) = posted(&requests, "BackOff").await;
    assert_eq!(
        status["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ImagePullBackOff"
    );
    assert_eq!(runtime.pulls(), 1, "no pull while backing off");
    assert!(runtime.runs("u1", "app").is_empty());
}

#[tokio::test]
async fn never_pull_without_the_image_says_so() {
    let runtime = Arc::new(FakeRuntime::default());
    let (mut worker, requests) = worker(Arc::clone(&runtime));
    let pod = pod(&json!({"name": "app", "image": "web:v1", "imagePullPolicy": "Never"}));
    worker.sync(&pod).await;
    let (status, _) = posted(&requests, "Failed").await;
    assert_eq!(
        status["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ErrImageNeverPull"
    );
    assert_eq!(runtime.pulls(), 0);
}

#[tokio::test]
async fn a_crashing_container_restarts_at_once_then_waits_in_crash_loop_back_off() {
    let runtime = Arc::new(FakeRuntime::default());
    let (mut worker, requests) = worker(Arc::clone(&runtime));
    let pod = pod(&json!({"name": "app", "image": "web:v1"}));
    worker.sync(&pod).await;
    runtime.exit("u1", "app", 1);
    worker.sync(&pod).await;
    assert_eq!(
        runtime.runs("u1", "app").len(),
        2,
        "the first restart is immediate"
    );
    runtime.exit("u1", "app", 1);
    worker.sync(&pod).await;
    assert_eq!(
        runtime.runs("u1", "app").len(),
        2,
        "the second waits out the back-off"
    );
    let (status, _) = posted(&requests, "Started").await;
    let container = &status["containerStatuses"][0];
    assert_eq!(container["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(container["restartCount"], 1);
    assert_eq!(container["lastState"]["terminated"]["exitCode"], 1);
}

#[tokio::test]
async fn a_deleted_pod_is_stopped_removed_and_then_deleted_for_good() {
    let runtime = Arc::new(FakeRuntime::default());
    let (mut worker, requests) = worker(Arc::clone(&runtime));
    let mut pod = pod(&json!({"name": "app", "image": "web:v1"}));
    worker.sync(&pod).await;
    assert_eq!(runtime.sandboxes().unwrap().len(), 1);
    pod.metadata.deletion_timestamp =
        serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
    pod.metadata.deletion_grace_period_seconds = Some(7);
    worker.tear_down("u1", Some(&pod)).await;
    assert_eq!(
        runtime.calls(),
        ["stop_container u1/app 7s", "remove_sandbox u1"],
        "containers stop before the sandbox goes"
    );
    assert!(runtime.sandboxes().unwrap().is_empty());
    let seen = requests.lock().unwrap().clone();
    let (method, path, body) = seen.last().unwrap();
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("DELETE", "/api/v1/namespaces/default/pods/web-1")
    );
    assert_eq!(
        body["preconditions"]["uid"], "u1",
        "the uid guards against a namesake"
    );
}
