//! skiff-node: registers this machine as a Node and keeps it alive.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_node::facts::MachineFacts;
use skiff_node::heartbeat;
use skiff_node::register::{self, NodeIdentity};

/// The per-node agent.
#[derive(Parser, Debug)]
#[command(name = "skiff-node", version)]
struct Cli {
    /// Credentials for the apiserver (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Node's name (default: the hostname).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The Node's InternalIP (default: the address this machine reaches the apiserver from).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// How long the node's Lease lasts unrenewed; it is renewed every quarter of this.
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let name = match cli.hostname_override {
        Some(name) => name,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("cannot read the hostname")?
            .trim()
            .to_lowercase(),
    };
    let ip = match cli.node_ip {
        Some(ip) => ip,
        None => route_source_to(&config.cluster_url)?,
    };
    let client = kube::Client::try_from(config)?;
    let identity = NodeIdentity { name, ip };
    let facts = MachineFacts::read();
    let nodes: Api<Node> = Api::all(client.clone());
    register::register(&nodes, &identity, &facts).await?;
    let lease = Duration::from_secs(cli.node_lease_duration_seconds.max(1));
    let heartbeat = tokio::spawn(heartbeat::run(
        client.clone(),
        identity.clone(),
        facts,
        lease,
    ));
    let cidr = register::wait_for_pod_cidr(&nodes, &identity.name, Duration::from_secs(10)).await?;
    tracing::info!(node = %identity.name, ip = %identity.ip, pod_cidr = %cidr, "node ready for pods");
    tokio::select! {
        _ = heartbeat => bail!("the heartbeat stopped"),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The local address the kernel picks to reach the apiserver: kubelet's default node IP on a
/// machine with several interfaces is the one its control plane sees.
fn route_source_to(url: &http::Uri) -> Result<Ipv4Addr> {
    let host = url.host().context("the kubeconfig's server has no host")?;
    let port = url.port_u16().unwrap_or(443);
    let target: IpAddr = host
        .trim_matches(['[', ']'])
        .parse()
        .with_context(|| format!("give --node-ip: the server {host} is not an IP address"))?;
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket
        .connect((target, port))
        .with_context(|| format!("no route to the apiserver {target}"))?;
    match socket.local_addr()?.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(ip) => bail!("the route to the apiserver leaves from {ip}: give --node-ip"),
    }
}
