//! The apiserver benchmark behind `cargo xtask bench apiserver` (run it in release).
//!
//! Two questions, each against a baseline measured in the same run:
//! - creates/s through the API (HTTPS, decoding, defaulting, validation, the store's fsync'd
//!   transaction) against creates/s on the bare store with the same concurrency;
//! - watch fan-out: the time from an update's write to its arrival at every watcher, with 100
//!   and 1000 concurrent watchers, against a single watcher.
//!
//! Prints one JSON array of figures (name, unit, value, baseline) on its last line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::{Value, json};
use skiff_control::server::{self, Config};
use skiff_control::store::Store;
use skiff_control::store::sqlite::SqliteStore;

const CREATES: usize = 2000;
const CONCURRENCY: usize = 16;
const UPDATES: usize = 30;

fn lease(name: &str) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"holderIdentity": "bench", "leaseDurationSeconds": 40}
    }))
    .expect("a valid lease")
}

fn figure(name: &str, unit: &str, value: f64, baseline: Option<f64>) -> Value {
    json!({"name": name, "unit": unit, "value": value, "baseline": baseline})
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((p / 100.0) * (sorted.len() - 1) as f64).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    raise_fd_limit();
    let dir = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
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
        controllers: None,
        services: skiff_control::allocator::ServiceRanges::default(),
    };
    let prepared = server::prepare(&config).await?;
    let kubeconfig = prepared.admin_kubeconfig.clone();
    let serving = tokio::spawn(server::serve(prepared, listener));
    let kubeconfig = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client_config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(client_config)?;
    let leases: Api<Lease> = Api::namespaced(client, "default");

    let mut figures = Vec::new();
    let api_rate = api_creates(&leases).await?;
    let store_rate = store_creates(&dir).await?;
    eprintln!("creates/s: api {api_rate:.0}, bare store {store_rate:.0}");
    figures.push(figure(
        "creates via the API",
        "creates/s",
        api_rate,
        Some(store_rate),
    ));

    let single = fan_out(&leases, 1, "fan-1").await?;
    for watchers in [100usize, 1000] {
        let latencies = fan_out(&leases, watchers, &format!("fan-{watchers}")).await?;
        for (label, p) in [("p50", 50.0), ("p99", 99.0)] {
            figures.push(figure(
                &format!("fan-out {watchers} watchers {label}"),
                "ms",
                percentile(&latencies, p),
                Some(percentile(&single, p)),
            ));
        }
    }
    serving.abort();
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", Value::Array(figures));
    Ok(())
}

async fn api_creates(leases: &Api<Lease>) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let leases = leases.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..CREATES).step_by(CONCURRENCY) {
                leases
                    .create(&PostParams::default(), &lease(&format!("c-{i}")))
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(CREATES as f64 / started.elapsed().as_secs_f64())
}

async fn store_creates(dir: &std::path::Path) -> anyhow::Result<f64> {
    let store = Arc::new(SqliteStore::open(&dir.join("baseline.db"))?);
    let value = serde_json::to_vec(&lease("x"))?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let store = Arc::clone(&store);
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..CREATES).step_by(CONCURRENCY) {
                store
                    .create(
                        &format!("/registry/coordination.k8s.io/leases/default/c-{i}"),
                        value.clone(),
                    )
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(CREATES as f64 / started.elapsed().as_secs_f64())
}

/// `watchers` watchers on one Lease; the write-to-arrival time of each update at each watcher.
async fn fan_out(leases: &Api<Lease>, watchers: usize, name: &str) -> anyhow::Result<Vec<f64>> {
    let created = leases.create(&PostParams::default(), &lease(name)).await?;
    let rv = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let leases = leases.clone();
        let (tx, ready_tx, rv) = (tx.clone(), ready_tx.clone(), rv.clone());
        let name = name.to_owned();
        tasks.push(tokio::spawn(async move {
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(120);
            let mut stream = leases.watch(&params, &rv).await?.boxed();
            let _ = ready_tx.send(());
            let mut seen = 0;
            while let Some(event) = stream.next().await {
                if let WatchEvent::Modified(l) = event? {
                    let _ = tx.send((
                        l.metadata.resource_version.unwrap_or_default(),
                        Instant::now(),
                    ));
                    seen += 1;
                    if seen == UPDATES {
                        break;
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    drop(tx);
    for _ in 0..watchers {
        ready_rx.recv().await;
    }
    // The response headers came back; give the server a moment to subscribe every stream.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut written = std::collections::HashMap::new();
    let mut current = created;
    for i in 0..UPDATES {
        current.spec.as_mut().expect("spec").lease_duration_seconds = Some(41 + i as i32);
        let t0 = Instant::now();
        current = leases
            .replace(name, &PostParams::default(), &current)
            .await?;
        written.insert(
            current
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default(),
            t0,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::with_capacity(watchers * UPDATES);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while latencies.len() < watchers * UPDATES {
        let Ok(Some((rv, at))) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if let Some(t0) = written.get(&rv) {
            latencies.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    for task in tasks {
        task.abort();
    }
    anyhow::ensure!(
        latencies.len() == watchers * UPDATES,
        "{watchers} watchers: only {} of {} events arrived",
        latencies.len(),
        watchers * UPDATES
    );
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "{watchers} watchers: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0)
    );
    Ok(latencies)
}

/// 1000 watchers are 2000 sockets in this one process.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}
