//! The scheduler benchmark behind `cargo xtask bench scheduler` (run it in release).
//!
//! With 100 and then 1000 fake Nodes, 1000 Pods are created (16 at a time) and the clock runs
//! from the first create to the moment a watch has seen the last one bound. The baseline, in
//! the same server and run: 1000 Pods that name another scheduler, created and bound by the
//! benchmark itself through the same binding API (round robin over the Nodes), so the ratio is
//! what deciding costs on top of creating and binding.
//!
//! Prints one JSON array of figures (name, unit, value, baseline) on its last line.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use skiff_control::server::{self, Config};

const PODS: usize = 1000;
const CONCURRENCY: usize = 16;

fn figure(name: &str, unit: &str, value: f64, baseline: Option<f64>) -> Value {
    json!({"name": name, "unit": unit, "value": value, "baseline": baseline})
}

fn node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "Bench"}],
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
        }
    }))
    .expect("a valid node")
}

fn pod(name: &str, scheduler: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "c", "image": "bench",
                 "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))
    .expect("a valid pod")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for nodes in [100usize, 1000] {
        let (scheduled, direct) = scenario(nodes).await?;
        eprintln!(
            "{nodes} nodes: scheduler {scheduled:.0} pods/s, direct binding {direct:.0} pods/s"
        );
        figures.push(figure(
            &format!("pods scheduled, {nodes} nodes"),
            "pods/s",
            scheduled,
            Some(direct),
        ));
    }
    println!("{}", Value::Array(figures));
    Ok(())
}

/// A fresh server with controllers and `nodes` Nodes; (scheduler's rate, direct binding rate).
async fn scenario(nodes: usize) -> anyhow::Result<(f64, f64)> {
    let dir =
        std::env::temp_dir().join(format!("skiff-sched-bench-{}-{nodes}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let config = Config {
        data_dir: dir.clone(),
        bind: [127, 0, 0, 1].into(),
        port,
        advertise: None,
        tls_sans: Vec::new(),
        watch_cache_size: 10_000,
        keep_revisions: 1_000_000,
        compaction_interval: Duration::from_secs(3600),
        controllers: Some(skiff_control::controllers::Settings::default()),
        services: skiff_control::allocator::ServiceRanges::default(),
    };
    let prepared = server::prepare(&config).await?;
    let kubeconfig = prepared.admin_kubeconfig.clone();
    let serving = tokio::spawn(server::serve(prepared, listener));
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(client_config)?;

    let node_api: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..nodes).map(|i| format!("node-{i:04}")).collect();
    in_parallel(names.clone(), |name| {
        let node_api = node_api.clone();
        async move {
            node_api
                .create(&PostParams::default(), &node(&name))
                .await?;
            anyhow::Ok(())
        }
    })
    .await?;
    // Let the scheduler's watch take in the Nodes before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let scheduled = timed_scheduling(&pods).await?;

    let started = Instant::now();
    let work: Vec<(usize, String)> = (0..PODS).map(|i| (i, format!("direct-{i}"))).collect();
    in_parallel(work, |(i, name)| {
        let pods = pods.clone();
        let target = names[i % names.len()].clone();
        async move {
            let created = pods
                .create(&PostParams::default(), &pod(&name, "bench-none"))
                .await?;
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": "default", "uid": created.metadata.uid},
                "target": {"apiVersion": "v1", "kind": "Node", "name": target},
            });
            pods.create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
                .await?;
            anyhow::Ok(())
        }
    })
    .await?;
    let direct = PODS as f64 / started.elapsed().as_secs_f64();
    serving.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok((scheduled, direct))
}

/// Creates the Pods for the scheduler and waits, on a watch, until every one is bound.
async fn timed_scheduling(pods: &Api<Pod>) -> anyhow::Result<f64> {
    let rv = pods
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let params = WatchParams::default()
        .fields("spec.schedulerName=default-scheduler")
        .timeout(290);
    let mut stream = pods.watch(&params, &rv).await?.boxed();
    let started = Instant::now();
    let creating = {
        let pods = pods.clone();
        tokio::spawn(async move {
            in_parallel((0..PODS).collect(), |i| {
                let pods = pods.clone();
                async move {
                    pods.create(
                        &PostParams::default(),
                        &pod(&format!("s-{i}"), "default-scheduler"),
                    )
                    .await?;
                    anyhow::Ok(())
                }
            })
            .await
        })
    };
    let mut bound = HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(280);
    while bound.len() < PODS {
        let event = tokio::time::timeout_at(deadline, stream.next()).await;
        let Ok(Some(event)) = event else {
            anyhow::bail!("only {} of {PODS} pods were bound", bound.len());
        };
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event?
            && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
        {
            bound.insert(p.metadata.name.unwrap_or_default());
        }
    }
    let elapsed = started.elapsed();
    creating.await??;
    Ok(PODS as f64 / elapsed.as_secs_f64())
}

/// Runs `work` over `items` with [`CONCURRENCY`] at a time.
async fn in_parallel<T, F, Fut>(items: Vec<T>, work: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut results =
        futures::stream::iter(items.into_iter().map(work)).buffer_unordered(CONCURRENCY);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}
