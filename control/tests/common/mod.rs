//! An apiserver on loopback for tests: a fresh data dir, a random port, stopped on drop.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skiff_control::server::{self, Config};

/// A running apiserver.
pub struct TestServer {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    keep_dir: bool,
}

pub fn config(dir: &Path, port: u16) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        bind: [127, 0, 0, 1].into(),
        port,
        advertise: None,
        tls_sans: Vec::new(),
        watch_cache_size: 100,
        keep_revisions: 1_000_000,
        compaction_interval: Duration::from_secs(3600),
        controllers: Some(skiff_control::controllers::Settings::default()),
        services: skiff_control::allocator::ServiceRanges::default(),
    }
}

impl TestServer {
    /// Starts on a fresh data dir.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("skiff-api-{}", uuid()));
        Self::start_in(&dir, 0).await
    }

    /// Starts on a fresh data dir with controllers configured by `settings`.
    pub async fn start_with(settings: skiff_control::controllers::Settings) -> Self {
        Self::start_configured(Some(settings)).await
    }

    /// Starts on a fresh data dir with no controllers: the test runs its own.
    pub async fn start_without_controllers() -> Self {
        Self::start_configured(None).await
    }

    async fn start_configured(controllers: Option<skiff_control::controllers::Settings>) -> Self {
        let dir = std::env::temp_dir().join(format!("skiff-api-{}", uuid()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Config {
            controllers,
            ..config(&dir, addr.port())
        };
        let prepared = server::prepare(&config).await.unwrap();
        let task = tokio::spawn(server::serve(prepared, listener));
        TestServer {
            dir,
            addr,
            task,
            keep_dir: false,
        }
    }

    /// Starts on `dir` (which may hold an earlier server's state) and `port` (0: any).
    pub async fn start_in(dir: &Path, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let prepared = server::prepare(&config(dir, addr.port())).await.unwrap();
        let task = tokio::spawn(server::serve(prepared, listener));
        TestServer {
            dir: dir.to_path_buf(),
            addr,
            task,
            keep_dir: false,
        }
    }

    /// Stops it, keeping the data dir for a restart.
    pub async fn stop_keeping_state(mut self) -> PathBuf {
        self.keep_dir = true;
        self.task.abort();
        let _ = (&mut self.task).await;
        // Let the store's connection close before a new server opens the same file.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.dir.clone()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A kube-rs client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    /// A kube-rs client with no credentials at all.
    pub async fn anonymous_client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig()).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        config.auth_info = Default::default();
        kube::Client::try_from(config).unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn uuid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Sends a raw request; returns the status code and the body as JSON (Null if not JSON).
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(body)
        .unwrap();
    let response = client
        .send(request.map(kube::client::Body::from))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Polls `check` every 100 ms until it gives a value; panics naming `what` after `limit`.
pub async fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
