//! `skiff-control`: the control plane binary.
//!
//! `skiff-control --data-dir D` serves the Kubernetes API over HTTPS and writes
//! `D/admin.kubeconfig`; `skiff-control mint-token` adds credentials (e.g. for a node).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_common::cli::init_logging;
use skiff_control::allocator::ServiceRanges;
use skiff_control::auth::{kubeconfig, tokens};
use skiff_control::controllers::Settings;
use skiff_control::controllers::leader::Election;
use skiff_control::server::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "skiff-control",
    version,
    about = "skiff's Kubernetes-compatible control plane"
)]
struct Cli {
    /// Where state, certificates and credentials live.
    #[arg(long, global = true, default_value = "/var/lib/skiff/control")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, global = true, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// HTTPS port.
    #[arg(long, global = true, default_value_t = 6443)]
    secure_port: u16,
    /// The address clients reach this server at (kubeconfig, certificate).
    #[arg(long, global = true)]
    advertise_address: Option<IpAddr>,
    /// Extra names or IPs for the serving certificate.
    #[arg(long = "tls-san", global = true)]
    tls_sans: Vec<String>,
    /// Changes kept in memory per resource for resuming watches.
    #[arg(long, default_value_t = 10_000)]
    watch_cache_size: usize,
    /// Revisions of history kept for watches resuming from the store.
    #[arg(long, default_value_t = 100_000)]
    keep_revisions: i64,
    /// Pod addresses of the cluster; each node gets a slice of it.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: ipnet::Ipv4Net,
    /// Prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Seconds without a Lease renewal before a Node is Ready=Unknown.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period: u64,
    /// Seconds before Pods on an unreachable Node are evicted.
    #[arg(long, default_value_t = 300)]
    pod_eviction_timeout: u64,
    /// Seconds a controller-manager leader's Lease lasts unrenewed before another instance
    /// takes over.
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration: u64,
    /// ClusterIPs come from here; the first address is the `kubernetes` Service's.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: ipnet::Ipv4Net,
    /// nodePorts come from here.
    #[arg(long, default_value = "30000-32767", value_parser = ServiceRanges::parse_ports)]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// Serve the API only: no scheduler, no controllers.
    #[arg(long)]
    no_controllers: bool,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Make the CA, the serving certificate, the admin token and admin.kubeconfig, then stop,
    /// so an installer can mint node credentials before the first start.
    Init,
    /// Add a bearer token (e.g. for a node) and optionally write a kubeconfig with it.
    MintToken {
        /// User name, e.g. system:node:node1.
        #[arg(long)]
        user: String,
        /// Groups, e.g. system:nodes.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Write a kubeconfig here (needs --server).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The server URL for the kubeconfig.
        #[arg(long)]
        server: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    if let Some(Command::MintToken {
        user,
        groups,
        kubeconfig: out,
        server,
    }) = &cli.command
    {
        let token = tokens::mint(&cli.data_dir, user, groups)?;
        match out {
            Some(path) => {
                let server = server.as_deref().context("--kubeconfig needs --server")?;
                kubeconfig::write(path, server, &cli.data_dir.join("ca.crt"), user, &token)?;
                println!("{}", path.display());
            }
            None => println!("{token}"),
        }
        return Ok(());
    }
    let config = Config {
        data_dir: cli.data_dir,
        bind: cli.bind_address,
        port: cli.secure_port,
        advertise: cli.advertise_address,
        tls_sans: cli.tls_sans,
        watch_cache_size: cli.watch_cache_size,
        keep_revisions: cli.keep_revisions,
        compaction_interval: Duration::from_secs(300),
        controllers: (!cli.no_controllers).then(|| Settings {
            cluster_cidr: cli.cluster_cidr,
            node_cidr_prefix: cli.node_cidr_mask_size,
            node_monitor_grace: Duration::from_secs(cli.node_monitor_grace_period),
            pod_eviction_timeout: Duration::from_secs(cli.pod_eviction_timeout),
            election: Election {
                duration: Duration::from_secs(cli.leader_elect_lease_duration.max(1)),
                ..Election::new()
            },
        }),
        services: ServiceRanges {
            cluster_ip: cli.service_cluster_ip_range,
            node_ports: cli.service_node_port_range,
        },
    };
    if let Some(Command::Init) = &cli.command {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let made = server::credentials(&config)?;
        println!("{}", made.admin_kubeconfig.display());
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(async move {
        let prepared = server::prepare(&config).await?;
        let listener = tokio::net::TcpListener::bind((config.bind, config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.bind, config.port))?;
        tracing::info!(url = %prepared.url, kubeconfig = %prepared.admin_kubeconfig.display(), "serving");
        server::serve(prepared, listener).await
    })
}
