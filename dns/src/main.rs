//! skiff-dns: the cluster DNS server. Flags follow CoreDNS's Corefile for a cluster
//! (`kubernetes cluster.local in-addr.arpa ip6.arpa`, `forward . /etc/resolv.conf`, `cache`,
//! `health`, `ready`, `prometheus :9153`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use prometheus_client::registry::Registry;
use skiff_common::cli::{init_logging_with, kube_config, optional_address};
use skiff_dns::cache::CacheLimits;
use skiff_dns::forward::{ForwardConfig, Forwarder, resolv_conf_servers};
use skiff_dns::handler::DnsHandler;
use skiff_dns::index::Index;
use skiff_dns::metrics::Metrics;
use skiff_dns::serve::Serving;
use skiff_dns::watch::{self, Synced};
use skiff_dns::zone::ClusterZone;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(name = "skiff-dns", version, about = "skiff's cluster DNS server")]
struct Cli {
    /// The kubeconfig to reach the API with (default: in-cluster, then `$KUBECONFIG`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Where to answer DNS, over UDP and TCP.
    #[arg(long, default_value = "0.0.0.0:53")]
    listen: SocketAddr,
    /// Upstream resolvers for names outside the cluster, `IP` or `IP:port`, comma-separated
    /// (default: the nameservers of `--resolv-conf`).
    #[arg(long, value_delimiter = ',', value_parser = parse_upstream)]
    upstream: Vec<SocketAddr>,
    /// The resolver configuration whose nameservers are the default upstreams.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// The TTL of the cluster zone's records, in seconds (CoreDNS's default: 5).
    #[arg(long, default_value_t = 5)]
    ttl: u32,
    /// At most this many forwarded answers are cached.
    #[arg(long, default_value_t = 10_000)]
    cache_size: usize,
    /// A cached answer lives at most this long, in seconds.
    #[arg(long, default_value_t = 3600)]
    cache_max_ttl: u32,
    /// A cached NXDOMAIN or NODATA lives at most this long, in seconds.
    #[arg(long, default_value_t = 1800)]
    cache_max_negative_ttl: u32,
    /// How long one upstream gets to answer, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    forward_timeout_ms: u64,
    /// At most this many forwarded questions at once; more are REFUSED.
    #[arg(long, default_value_t = 1000)]
    max_concurrent_forwards: usize,
    /// Where to serve /metrics (empty: nowhere).
    #[arg(long, default_value = "0.0.0.0:9153")]
    metrics_address: String,
    /// Where to serve /health (alive) and /ready (both watches listed) (empty: nowhere).
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_address: String,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// `IP` (port 53) or `IP:port`.
fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{text:?} is not IP or IP:port"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // hickory logs every request at info: a line per query would cost more than the answer.
    init_logging_with(cli.log_json, "info,hickory_server=warn");
    let upstreams = if cli.upstream.is_empty() {
        let text = std::fs::read_to_string(&cli.resolv_conf)
            .with_context(|| format!("cannot read {}", cli.resolv_conf.display()))?;
        // A loopback resolver (systemd-resolved's 127.0.0.53) is the node's own: in a Pod it
        // would be the Pod itself.
        let (loopback, servers): (Vec<SocketAddr>, Vec<SocketAddr>) = resolv_conf_servers(&text)
            .into_iter()
            .partition(|s| s.ip().is_loopback());
        if !loopback.is_empty() {
            tracing::warn!(?loopback, "loopback nameservers of the node left out");
        }
        servers
    } else {
        cli.upstream.clone()
    };
    if upstreams.is_empty() {
        // The cluster zone still works; names outside it get SERVFAIL.
        tracing::warn!(
            resolv_conf = %cli.resolv_conf.display(),
            "no upstream resolvers (--upstream, or nameservers in the resolv.conf): names outside \
             the cluster will not resolve"
        );
    }
    let zone = ClusterZone::new(&cli.cluster_domain, cli.ttl)?;
    let metrics_address = optional_address(&cli.metrics_address)?;
    let health_address = optional_address(&cli.health_address)?;
    let client = kube::Client::try_from(kube_config(cli.kubeconfig.as_deref()).await?)
        .context("cannot make an API client")?;

    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let index = Arc::new(RwLock::new(Index::new()));
    let synced = Arc::new(Synced::default());
    let forwarder = Forwarder::new(
        ForwardConfig {
            upstreams: upstreams.clone(),
            timeout: Duration::from_millis(cli.forward_timeout_ms),
            max_concurrent: cli.max_concurrent_forwards,
            cache: CacheLimits {
                capacity: cli.cache_size,
                max_ttl: cli.cache_max_ttl,
                max_negative_ttl: cli.cache_max_negative_ttl,
            },
        },
        Arc::clone(&metrics),
    );
    let handler = DnsHandler::new(zone, Arc::clone(&index), forwarder, Arc::clone(&metrics));

    let loops = std::thread::available_parallelism().map_or(1, usize::from);
    let mut server = Serving::start(cli.listen, Arc::new(handler), loops)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    if let Some(addr) = metrics_address {
        serve_http(
            addr,
            skiff_common::metrics::metrics_router(Arc::new(registry)),
        )
        .await?;
    }
    if let Some(addr) = health_address {
        let ready = Arc::clone(&synced);
        let router = Router::new()
            .route("/health", get(|| async { "OK" }))
            .route(
                "/ready",
                get(move || async move {
                    if ready.ready() {
                        (StatusCode::OK, "OK")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the first lists are not in yet",
                        )
                    }
                }),
            );
        serve_http(addr, router).await?;
    }
    tracing::info!(
        listen = %cli.listen,
        zone = %cli.cluster_domain,
        upstreams = ?upstreams,
        "serving DNS"
    );
    tokio::spawn(watch::run(client, index, synced, metrics));
    tokio::select! {
        result = server.block_until_done() => result.context("the DNS server stopped")?,
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

async fn serve_http(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(%addr, error = %err, "HTTP server stopped");
        }
    });
    Ok(())
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
