//! skiff-node: registers this machine as a Node, keeps it alive, runs its Pods and hosts its
//! share of the cluster network.

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use skiff_cni::network::{Backend, RealNodeNetwork, VxlanConfig};
use skiff_common::cli::{init_logging, kube_config, node_name, optional_address};
use skiff_node::cni::Cni;
use skiff_node::facts::MachineFacts;
use skiff_node::images::Catalog;
use skiff_node::pods::dns::{DnsSettings, parse_resolv_conf};
use skiff_node::pods::events::Recorder;
use skiff_node::pods::worker::Context as PodContext;
use skiff_node::register::{self, NodeIdentity};
use skiff_node::runtime::PodRuntime;
use skiff_node::runtime::cri::{CriRuntime, CriSettings};
use skiff_node::runtime::process::ProcessRuntime;
use skiff_node::{heartbeat, network, pods, sandbox, shim};
use skiff_proxy::iptables::RenderOptions;
use skiff_proxy::runner::Intervals;
use skiff_proxy::{EbpfPaths, ModeConfig, NodeDataplane, Proxy, ProxyConfig, ProxyMode};

/// The per-node agent.
#[derive(Parser, Debug)]
#[command(name = "skiff-node", version)]
struct Cli {
    /// Credentials for the apiserver (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The Node's name (default: the hostname; lower-cased, as kubelet registers it).
    #[arg(long)]
    hostname_override: Option<String>,
    /// The Node's InternalIP (default: the address this machine reaches the apiserver from).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// How long the node's Lease lasts unrenewed; it is renewed every quarter of this.
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: u64,
    /// State: Pod sandboxes, container logs, IPAM, CNI results.
    #[arg(long, default_value = "/var/lib/skiff-node")]
    root_dir: PathBuf,
    /// Where CNI plugins are (comma-separated, searched in order).
    #[arg(long, default_value = "/opt/cni/bin", value_delimiter = ',')]
    cni_bin_dir: Vec<PathBuf>,
    /// Where the CNI configuration is; the agent writes `10-skiff.conflist` here.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// The node's cgroup (v2); each Pod gets `pod-<uid>` below it. Default:
    /// `<cgroup2 mount>/skiff-pods`.
    #[arg(long)]
    cgroup_root: Option<PathBuf>,
    /// Pod network namespaces are `/run/netns/<prefix><pod uid>`.
    #[arg(long, default_value = "skiff-")]
    netns_prefix: String,
    /// The container runtime's CRI socket (`unix:///run/containerd/containerd.sock`): Pods run
    /// as containers there, and the runtime calls the CNI plugins. Without it, the process
    /// runtime runs Pods as host processes.
    #[arg(long)]
    container_runtime_endpoint: Option<String>,
    /// The process runtime's image catalog (see `images`): `<dir>/<repository>.json` per image.
    #[arg(long, default_value = "/var/lib/skiff/images")]
    image_catalog: PathBuf,
    /// Containers' logs (CRI runtime): `<dir>/<namespace>_<pod>_<uid>/<container>/<n>.log`.
    #[arg(long, default_value = "/var/log/pods")]
    pod_logs_dir: PathBuf,
    /// A container's log is rotated past this size (CRI runtime), e.g. `10Mi`.
    #[arg(long, default_value = "10Mi")]
    container_log_max_size: String,
    /// Log files kept per container, the live one included (CRI runtime).
    #[arg(long, default_value_t = 5)]
    container_log_max_files: usize,
    /// How often container logs are checked for rotation, in seconds.
    #[arg(long, default_value_t = 10)]
    container_log_monitor_interval: u64,
    /// The sandbox ("pause") image the CRI runtime is configured with: image GC keeps it.
    #[arg(long, default_value = "localhost:5000/skiff/pause:latest")]
    pod_infra_container_image: String,
    /// Image GC starts when the image filesystem is fuller than this percentage...
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// ...and removes unused images until it is under this one.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
    /// How often image GC looks, in seconds (kubelet's is 5 minutes).
    #[arg(long, default_value_t = 300)]
    image_gc_period: u64,
    /// The cluster DNS Service's addresses, the first nameserver of `ClusterFirst` Pods
    /// (comma-separated; none: Pods use the node's resolv.conf).
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<Ipv4Addr>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The node's resolver configuration, the base of `Default` Pods' resolv.conf.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Every Pod address in the cluster (egress to elsewhere is masqueraded).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Net,
    /// How Pod traffic crosses between nodes.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    overlay: String,
    /// The VXLAN network identifier (every node must agree).
    #[arg(long, default_value_t = 1)]
    vxlan_vni: u32,
    /// The VXLAN UDP port (every node must agree).
    #[arg(long, default_value_t = 8472)]
    vxlan_port: u16,
    /// The Service proxy this agent hosts: `iptables`, `ebpf` (socket programs on the node's
    /// cgroup, `--cgroup-root`), or `none` when another proxy (kube-proxy, a standalone
    /// skiff-proxy) does the job.
    #[arg(long, default_value = "iptables", value_parser = ["iptables", "ebpf", "none"])]
    proxy_mode: String,
    /// eBPF mode: the compiled BPF object (default: beside this binary, the build output, or
    /// /usr/lib/skiff/skiff-lb.bpf.o).
    #[arg(long)]
    bpf_object: Option<PathBuf>,
    /// eBPF mode: the cgroup the socket programs attach to; every process below it gets Service
    /// translation. Default: the Pods' parent (`--cgroup-root`), so only Pods do; give the
    /// cgroup2 root (e.g. `/sys/fs/cgroup`) for the node's own processes too.
    #[arg(long)]
    bpf_cgroup: Option<PathBuf>,
    /// eBPF mode: the bpffs folder for pinned maps and program links (one per node).
    #[arg(long, default_value = skiff_proxy::mode::DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// Where the proxy serves /metrics (empty: nowhere).
    #[arg(long, default_value = "127.0.0.1:10249")]
    proxy_metrics_bind_address: String,
    /// Where the proxy serves /healthz (empty: nowhere).
    #[arg(long, default_value = "0.0.0.0:10256")]
    proxy_healthz_bind_address: String,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Supervise one container (started by the agent itself; not for people).
    #[command(hide = true)]
    Shim(shim::ShimArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Shim(args)) = &cli.command {
        shim::run(args);
    }
    init_logging(cli.log_json);
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let config = kube_config(cli.kubeconfig.as_deref()).await?;
    let name = node_name(cli.hostname_override.as_deref())?;
    let ip = match cli.node_ip {
        Some(ip) => ip,
        None => route_source_to(&config.cluster_url)?,
    };
    let client = kube::Client::try_from(config)?;
    let identity = NodeIdentity { name, ip };
    let cgroup_mount = skiff_proxy::ebpf::mounts::ensure_cgroup2();
    let cgroup_root = match (cli.cgroup_root.clone(), &cgroup_mount) {
        (Some(dir), _) => dir,
        (None, Ok(mount)) => mount.join("skiff-pods"),
        (None, Err(err)) => bail!("no cgroup v2 hierarchy ({err}): give --cgroup-root"),
    };
    sandbox::create_cgroup(&cgroup_root)?;
    let runtime = open_runtime(&cli, &cgroup_root, &cgroup_mount)?;
    let mut facts = MachineFacts::read();
    facts.runtime_version = runtime_version(&runtime).await?;
    tracing::info!(runtime = %facts.runtime_version, "container runtime");
    let nodes: Api<Node> = Api::all(client.clone());
    // Ready only once the runtime is (containerd's network is not until the conflist below
    // exists), so nothing is scheduled here before Pods can run.
    let problem = heartbeat::runtime_problem(&runtime).await;
    let observed = register::Observed {
        images: Vec::new(),
        runtime_problem: problem.clone(),
    };
    register::register(&nodes, &identity, &facts, &observed).await?;
    let lease = Duration::from_secs(cli.node_lease_duration_seconds.max(1));
    let heartbeat = tokio::spawn(heartbeat::run(
        client.clone(),
        identity.clone(),
        facts,
        lease,
        Arc::clone(&runtime),
        problem,
    ));
    let cidr = register::wait_for_pod_cidr(&nodes, &identity.name, Duration::from_secs(10)).await?;
    tracing::info!(node = %identity.name, ip = %identity.ip, pod_cidr = %cidr, "got a podCIDR");

    let net_task = tokio::spawn(network::follow_nodes(
        client.clone(),
        open_network(&cli, identity.ip, cidr)?,
    ));

    let host_resolv = std::fs::read_to_string(&cli.resolv_conf).unwrap_or_else(|err| {
        tracing::warn!(file = %cli.resolv_conf.display(), error = %err, "no resolver configuration");
        String::new()
    });
    let (services, services_writer) = kube::runtime::reflector::store();
    let services_task = tokio::spawn(pods::follow_services(client.clone(), services_writer));
    let ctx = Arc::new(PodContext {
        client: client.clone(),
        runtime,
        services,
        dns: DnsSettings {
            cluster_dns: cli.cluster_dns.iter().map(ToString::to_string).collect(),
            cluster_domain: cli.cluster_domain.clone(),
            host: parse_resolv_conf(&host_resolv),
        },
        node: identity.name.clone(),
        node_ip: identity.ip,
        recorder: Recorder::new(client.clone(), &identity.name),
    });
    let (log_task, image_gc_task) = spawn_runtime_chores(&cli, &ctx.runtime)?;
    let pod_task = tokio::spawn(pods::run(ctx));
    tracing::info!(node = %identity.name, "running pods");
    let proxy_task = spawn_proxy(&cli, &identity, cgroup_root, client)?;
    tokio::select! {
        _ = heartbeat => bail!("the heartbeat stopped"),
        _ = net_task => bail!("the node network task stopped"),
        _ = pod_task => bail!("the pod manager stopped"),
        _ = services_task => bail!("the Service watch stopped"),
        _ = log_task => bail!("the container log rotation stopped"),
        _ = image_gc_task => bail!("image garbage collection stopped"),
        result = proxy_task => match result {
            Ok(Err(err)) => Err(err).context("the service proxy stopped"),
            _ => bail!("the service proxy stopped"),
        },
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The Pods' runtime: containerd over CRI when an endpoint is given, else host processes.
fn open_runtime(
    cli: &Cli,
    cgroup_root: &std::path::Path,
    cgroup_mount: &Result<PathBuf, skiff_proxy::ebpf::mounts::MountError>,
) -> Result<Arc<dyn PodRuntime>> {
    let cni = Cni {
        conf_dir: cli.cni_conf_dir.clone(),
        bin_dirs: cli.cni_bin_dir.clone(),
        cache_dir: cli.root_dir.join("cni-results"),
    };
    Ok(match &cli.container_runtime_endpoint {
        Some(endpoint) => Arc::new(CriRuntime::new(CriSettings {
            endpoint: endpoint.clone(),
            cgroup_root: cgroup_root.to_path_buf(),
            cgroup_mount: cgroup_mount
                .as_ref()
                .map_err(|e| anyhow::anyhow!("the CRI runtime needs cgroup v2: {e}"))?
                .clone(),
            log_root: cli.pod_logs_dir.clone(),
            cni,
            pinned_images: vec![cli.pod_infra_container_image.clone()],
            state_dir: cli.root_dir.join("pods"),
        })?),
        None => Arc::new(ProcessRuntime {
            state_dir: cli.root_dir.join("pods"),
            cgroup_root: cgroup_root.to_path_buf(),
            netns_prefix: cli.netns_prefix.clone(),
            cni,
            shim_exe: std::env::current_exe().context("cannot find this binary for the shim")?,
            catalog: Catalog::new(&cli.image_catalog),
        }),
    })
}

/// The node network (routes or the VXLAN overlay, masquerade) and the CNI configuration
/// that wires Pods into it.
fn open_network(cli: &Cli, ip: Ipv4Addr, cidr: Ipv4Net) -> Result<RealNodeNetwork> {
    let backend = match cli.overlay.as_str() {
        "host-gw" => Backend::HostGw,
        _ => Backend::Vxlan(VxlanConfig {
            vni: cli.vxlan_vni,
            port: cli.vxlan_port,
            ..VxlanConfig::default()
        }),
    };
    let (node_network, pod_mtu) =
        network::open(ip, cli.cluster_cidr, cidr, backend).context("node network")?;
    let conflist = network::write_conflist(
        &cli.cni_conf_dir,
        &cli.cni_bin_dir,
        cidr,
        pod_mtu,
        &cli.root_dir.join("ipam"),
    )?;
    tracing::info!(conflist = %conflist.display(), mtu = pod_mtu, "CNI configuration written");
    Ok(node_network)
}

/// Container log rotation and image garbage collection, each on its own period.
fn spawn_runtime_chores(
    cli: &Cli,
    runtime: &Arc<dyn PodRuntime>,
) -> Result<(JoinHandle<()>, JoinHandle<()>)> {
    let log_max_bytes = skiff_common::quantity::parse_millis(&cli.container_log_max_size)
        .ok()
        .and_then(|millis| u64::try_from(millis / 1000).ok())
        .filter(|bytes| *bytes > 0)
        .with_context(|| {
            format!(
                "--container-log-max-size {:?} is not a size",
                cli.container_log_max_size
            )
        })?;
    let log_task = tokio::spawn(pods::rotate_logs(
        Arc::clone(runtime),
        log_max_bytes,
        cli.container_log_max_files.max(1),
        Duration::from_secs(cli.container_log_monitor_interval.max(1)),
    ));
    if cli.image_gc_low_threshold > cli.image_gc_high_threshold {
        bail!("--image-gc-low-threshold must not be above --image-gc-high-threshold");
    }
    let image_gc_task = tokio::spawn(pods::collect_images(
        Arc::clone(runtime),
        cli.image_gc_high_threshold,
        cli.image_gc_low_threshold,
        Duration::from_secs(cli.image_gc_period.max(1)),
    ));
    Ok((log_task, image_gc_task))
}

/// The service proxy, in-process, in the mode `--proxy-mode` names (none: a task that never
/// ends).
fn spawn_proxy(
    cli: &Cli,
    identity: &NodeIdentity,
    cgroup_root: PathBuf,
    client: kube::Client,
) -> Result<JoinHandle<Result<(), skiff_proxy::ProxyError>>> {
    let proxy_mode = match cli.proxy_mode.as_str() {
        "iptables" => Some(ProxyMode::Iptables),
        "ebpf" => Some(ProxyMode::Ebpf),
        _ => None,
    };
    Ok(match proxy_mode {
        None => tokio::spawn(std::future::pending()),
        Some(mode) => {
            let config = ProxyConfig {
                node_name: identity.name.clone(),
                cluster_cidr: Some(cli.cluster_cidr),
                intervals: Intervals::default(),
                render: RenderOptions::default(),
                metrics_bind: optional_address(&cli.proxy_metrics_bind_address)?,
                healthz_bind: optional_address(&cli.proxy_healthz_bind_address)?,
            };
            // The Pods' parent by default: the socket programs see every Pod.
            let dataplane = NodeDataplane::open(ModeConfig {
                mode,
                render: config.render.clone(),
                ebpf: EbpfPaths {
                    object: cli.bpf_object.clone(),
                    pin_dir: cli.bpf_pin_dir.clone(),
                    cgroup: Some(cli.bpf_cgroup.clone().unwrap_or(cgroup_root)),
                    // Named on the command line: the operator means it, even the cgroup2 root.
                    allow_root_cgroup: cli.bpf_cgroup.is_some(),
                    // External traffic arrives where the node's address is.
                    devices: skiff_proxy::mode::devices_with_address(identity.ip),
                },
            })
            .context("cannot open the service proxy's data plane")?;
            tokio::spawn(async move {
                Proxy::run(client, config, dataplane, std::future::pending()).await
            })
        }
    })
}

/// The runtime's version, waiting a while for a runtime that is still starting (containerd
/// started alongside the agent).
async fn runtime_version(runtime: &Arc<dyn PodRuntime>) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let asked = Arc::clone(runtime);
        match tokio::task::spawn_blocking(move || asked.version()).await? {
            Ok(version) => return Ok(version),
            Err(err) if tokio::time::Instant::now() >= deadline => {
                return Err(err).context("the container runtime does not answer");
            }
            Err(err) => {
                tracing::info!(error = %err, "waiting for the container runtime");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
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
