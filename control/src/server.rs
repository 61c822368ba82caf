//! Starting the apiserver: data dir, store, built-in namespaces, watch cache, certificates,
//! credentials, then HTTPS (HTTP/2 and HTTP/1.1) until asked to stop.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::allocator::ServiceAllocator;
use crate::apiserver::query::Query;
use crate::apiserver::{ApiServer, Call, write};
use crate::auth::tokens::{self, ADMIN, TokenAuth, User};
use crate::auth::{kubeconfig, tls};
use crate::controllers::leader::Election;
use crate::data_dir::DataDir;
use crate::metrics::Metrics;
use crate::resources;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use crate::watch_cache::WatchCache;

/// How the apiserver runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where state, certificates and credentials live.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub bind: IpAddr,
    /// Port to listen on.
    pub port: u16,
    /// The address clients use (kubeconfig, certificate); defaults to the bind address or 127.0.0.1.
    pub advertise: Option<IpAddr>,
    /// Extra names for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Changes kept in memory per resource for resuming watches.
    pub watch_cache_size: usize,
    /// Revisions of history kept by periodic compaction.
    pub keep_revisions: i64,
    /// How often compaction runs.
    pub compaction_interval: Duration,
    /// Run the scheduler and controllers (with these settings) in this process.
    pub controllers: Option<crate::controllers::Settings>,
    /// Where ClusterIPs and nodePorts come from.
    pub services: crate::allocator::ServiceRanges,
}

/// The user the in-process controllers authenticate as.
const CONTROLLER_USER: &str = "system:skiff-controller-manager";

/// Namespaces every cluster has.
const BUILTIN_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What `prepare` made: the server, ready to serve, and where the admin kubeconfig is.
#[derive(Debug)]
pub struct Prepared {
    /// The request handler.
    pub api: Arc<ApiServer<SqliteStore>>,
    /// TLS settings.
    pub tls: Arc<rustls::ServerConfig>,
    /// `<data-dir>/admin.kubeconfig`.
    pub admin_kubeconfig: PathBuf,
    /// The `https://...` URL clients use.
    pub url: String,
    /// The controllers' own kubeconfig, and their settings, when they run here.
    pub controllers: Option<(PathBuf, crate::controllers::Settings)>,
    /// The claim on the data directory, held while serving.
    pub data_dir: DataDir,
}

/// Opens everything; nothing listens yet.
pub async fn prepare(config: &Config) -> Result<Prepared> {
    let data_dir = DataDir::claim(&config.data_dir)?;
    let store = Arc::new(
        SqliteStore::open(&config.data_dir.join("state.db")).context("cannot open the store")?,
    );
    let Credentials {
        certs,
        auth,
        admin_kubeconfig,
        url,
        advertise,
    } = credentials(config)?;
    let tls = tls::server_config(&certs)?;
    let controllers = match &config.controllers {
        Some(settings) => {
            // The controllers are clients like any other, with a token of their own, and
            // talk to this server where it listens.
            let token = match auth.token_of(CONTROLLER_USER) {
                Some(token) => token,
                None => {
                    let token = tokens::mint(
                        &config.data_dir,
                        CONTROLLER_USER,
                        &["system:masters".to_owned()],
                    )?;
                    auth.reload()?;
                    token
                }
            };
            let local = if config.bind.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                config.bind
            };
            let path = config.data_dir.join("controllers.kubeconfig");
            let local_url = format!("https://{}", SocketAddr::new(local, config.port));
            kubeconfig::write(&path, &local_url, &certs.ca_cert, CONTROLLER_USER, &token)?;
            let mut settings = settings.clone();
            settings.election = Election {
                duration: settings.election.duration,
                ..Election::for_instance(data_dir.instance_id())
            };
            Some((path, settings))
        }
        None => None,
    };
    let services = ServiceAllocator::new(config.services.clone());
    load_allocations(&*store, &services).await?;
    let cache = WatchCache::start(Arc::clone(&store), config.watch_cache_size).await?;
    let api = Arc::new(ApiServer {
        store: Arc::clone(&store),
        cache,
        auth,
        metrics: Arc::new(Metrics::new()),
        advertise: SocketAddr::new(advertise, config.port).to_string(),
        services,
    });
    create_builtin_namespaces(&api).await?;
    crate::kubernetes_service::ensure(&api, advertise, config.port).await?;
    spawn_compaction(store, config.keep_revisions, config.compaction_interval);
    Ok(Prepared {
        api,
        tls,
        admin_kubeconfig,
        url,
        controllers,
        data_dir,
    })
}

/// What clients need from the data dir: the CA and serving certificate, the tokens, the admin
/// kubeconfig, and the URL it names.
#[derive(Debug)]
pub struct Credentials {
    /// The CA and the serving certificate.
    pub certs: tls::Certificates,
    /// The token file.
    pub auth: Arc<TokenAuth>,
    /// `<data-dir>/admin.kubeconfig`.
    pub admin_kubeconfig: PathBuf,
    /// The `https://...` URL clients use.
    pub url: String,
    /// The address in it.
    pub advertise: IpAddr,
}

/// Makes (or reuses) the CA, the serving certificate, the admin token and the admin kubeconfig.
/// `skiff-control init` stops here, so an installer can mint node credentials before the
/// server first starts.
pub fn credentials(config: &Config) -> Result<Credentials> {
    let advertise = config.advertise.unwrap_or(if config.bind.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        config.bind
    });
    let url = format!("https://{}", SocketAddr::new(advertise, config.port));
    let mut names: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
        advertise.to_string(),
    ];
    if !config.bind.is_unspecified() {
        names.push(config.bind.to_string());
    }
    names.extend(config.tls_sans.iter().cloned());
    names.sort();
    names.dedup();
    let certs = tls::ensure_certificates(&config.data_dir, &names)?;
    let auth = Arc::new(TokenAuth::open(&config.data_dir)?);
    let admin_token = auth
        .token_of(ADMIN.0)
        .context("the token file has no admin token")?;
    let admin_kubeconfig = config.data_dir.join("admin.kubeconfig");
    kubeconfig::write(
        &admin_kubeconfig,
        &url,
        &certs.ca_cert,
        ADMIN.0,
        &admin_token,
    )?;

    Ok(Credentials {
        certs,
        auth,
        admin_kubeconfig,
        url,
        advertise,
    })
}

/// Marks every stored Service's addresses as used.
async fn load_allocations<S: Store>(store: &S, services: &ServiceAllocator) -> Result<()> {
    let resource = resources::find("", "v1", "services").expect("served");
    let listed = store.list(&resource.prefix(), 0).await?;
    let stored: Vec<serde_json::Value> = listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
        .collect();
    services.load(&stored);
    Ok(())
}

async fn create_builtin_namespaces<S: Store>(api: &ApiServer<S>) -> Result<()> {
    let namespaces = resources::find("", "v1", "namespaces").expect("served");
    for name in BUILTIN_NAMESPACES {
        if api.store.get(&namespaces.key(None, name)).await?.is_some() {
            continue;
        }
        let call = Call {
            resource: namespaces,
            namespace: None,
            query: Query::default(),
            headers: HeaderMap::new(),
            user: User {
                name: "system:apiserver".into(),
                groups: vec!["system:masters".into()],
            },
        };
        let object = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        write::create_object(api, &call, object)
            .await
            .map_err(|e| anyhow::anyhow!("creating namespace {name}: {e}"))?;
    }
    Ok(())
}

/// Keeps the last `keep` revisions of history, compacting every `interval`.
fn spawn_compaction<S: Store>(store: Arc<S>, keep: i64, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let (Ok(current), Ok(compacted)) = (
                store.current_revision().await,
                store.compacted_revision().await,
            ) else {
                continue;
            };
            let target = current - keep;
            if target > compacted {
                match store.compact(target).await {
                    Ok(()) => tracing::info!(revision = target, "compacted"),
                    Err(err) => tracing::warn!(error = %err, "compaction failed"),
                }
            }
        }
    });
}

/// Serves HTTPS on `listener` until the process is told to stop.
pub async fn serve(prepared: Prepared, listener: TcpListener) -> Result<()> {
    let acceptor = TlsAcceptor::from(prepared.tls);
    let api = prepared.api;
    let _claim = prepared.data_dir;
    // Aborted with this function (the server stops, its controllers too).
    let _controllers = prepared.controllers.map(|(kubeconfig, settings)| {
        AbortOnDrop(tokio::spawn(async move {
            match controller_client(&kubeconfig).await {
                Ok(client) => crate::controllers::run(client, settings).await,
                Err(err) => tracing::error!(error = %err, "controllers not started"),
            }
        }))
    });
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted.context("accept failed")?,
            () = shutdown_signal() => {
                tracing::info!("stopping");
                return Ok(());
            }
        };
        let acceptor = acceptor.clone();
        let api = Arc::clone(&api);
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let api = Arc::clone(&api);
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            api.handle(request.map(axum::body::Body::new)).await,
                        )
                    }
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn controller_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
