//! `skiff-proxy`: the service proxy on its own, a drop-in for kube-proxy against any apiserver.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ipnet::Ipv4Net;
use skiff_common::cli::{init_logging, kube_config, node_name, optional_address};
use skiff_proxy::iptables::{Iptables, RealIptables, RenderOptions};
use skiff_proxy::runner::Intervals;
use skiff_proxy::{EbpfPaths, ModeConfig, NodeDataplane, Proxy, ProxyConfig, ProxyMode};

#[derive(Parser, Debug)]
#[command(
    name = "skiff-proxy",
    about = "skiff's service proxy (kube-proxy replacement)"
)]
struct Args {
    /// kubeconfig to reach the apiserver (default: in-cluster or ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// This node's name (default: the hostname; lower-cased, as kubelet registers it).
    #[arg(long)]
    hostname_override: Option<String>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// The cluster's Pod CIDR: traffic to Services from outside it is masqueraded.
    #[arg(long)]
    cluster_cidr: Option<Ipv4Net>,
    /// Which data plane.
    #[arg(long, value_enum, default_value = "iptables")]
    proxy_mode: ProxyMode,
    /// eBPF mode: the compiled BPF object (default: beside this binary, the build output,
    /// or /usr/lib/skiff/skiff-lb.bpf.o).
    #[arg(long)]
    bpf_object: Option<PathBuf>,
    /// eBPF mode: the bpffs folder for pinned maps and program links.
    #[arg(long, default_value = skiff_proxy::mode::DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// eBPF mode: the cgroup (v2) whose processes are load-balanced — the one Pods run under
    /// (default: skiff-pods under the cgroup2 mount, where skiff-node puts them).
    #[arg(long)]
    bpf_cgroup: Option<PathBuf>,
    /// eBPF mode: interfaces NodePort/external traffic arrives on, comma-separated (default:
    /// every interface with a global IPv4 address but Pod veths and the overlay).
    #[arg(long, value_delimiter = ',')]
    bpf_nodeport_devices: Vec<String>,
    /// Where to serve /metrics (empty: nowhere).
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_bind_address: String,
    /// Where to serve /healthz (empty: nowhere).
    #[arg(long, default_value = "0.0.0.0:10256")]
    healthz_bind_address: String,
    /// Longest wait between syncs, to batch a burst; cheap syncs wait less (three times as
    /// long as the last one took, at least 10 ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    min_sync_period: Duration,
    /// Most time between syncs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sync_period: Duration,
    /// Do not answer NodePorts on 127.0.0.1 (and leave route_localnet alone).
    #[arg(long)]
    no_localhost_nodeports: bool,
    /// Remove every rule, chain, program and pinned map skiff-proxy made (both modes), then exit.
    #[arg(long)]
    cleanup: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Explain what this node does with a connection to ip:port/proto (from its live rules,
    /// or with --proxy-mode ebpf from its pinned maps).
    Explain {
        /// e.g. 10.96.0.10:53/udp.
        target: String,
        /// The client's address (default: an off-cluster client).
        #[arg(long, default_value = "192.0.2.1")]
        source: Ipv4Addr,
        /// The connection starts on the node itself (nat OUTPUT) instead of arriving.
        #[arg(long)]
        from_node: bool,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn local_addresses() -> Vec<Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
            words.next()?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    if let Some(Command::Explain {
        target,
        source,
        from_node,
    }) = &args.command
    {
        let (target, protocol) = skiff_proxy::explain::parse_target(target)?;
        if args.proxy_mode == ProxyMode::Ebpf {
            use skiff_proxy::ebpf::explain;
            let (lb, ext) = explain::read_pinned(&args.bpf_pin_dir)?;
            print!("{}", explain::explain(&lb, &ext, target, protocol));
            return Ok(());
        }
        let iptables = RealIptables::new();
        let mut save = String::new();
        for table in skiff_proxy::iptables::TABLES {
            save.push_str(&iptables.save(table)?);
        }
        let text = skiff_proxy::explain::explain(
            &save,
            &local_addresses(),
            *source,
            *from_node,
            target,
            protocol,
        )?;
        print!("{text}");
        return Ok(());
    }
    let render = RenderOptions {
        localhost_nodeports: !args.no_localhost_nodeports,
    };
    let mode = ModeConfig {
        mode: args.proxy_mode,
        render: render.clone(),
        ebpf: EbpfPaths {
            object: args.bpf_object.clone(),
            pin_dir: args.bpf_pin_dir.clone(),
            cgroup: args.bpf_cgroup.clone(),
            // Named on the command line: the operator means it, even the cgroup2 root.
            allow_root_cgroup: args.bpf_cgroup.is_some(),
            devices: args.bpf_nodeport_devices.clone(),
        },
    };
    if args.cleanup {
        NodeDataplane::remove_all(&mode).context("cleanup failed")?;
        println!("removed skiff-proxy's chains, rules, programs and pinned maps");
        return Ok(());
    }
    let dataplane = NodeDataplane::open(mode).context("cannot open the data plane")?;
    let node_name = node_name(args.hostname_override.as_deref())?;
    let config = kube_config(args.kubeconfig.as_deref()).await?;
    let client = kube::Client::try_from(config)?;
    let proxy_config = ProxyConfig {
        node_name,
        cluster_cidr: args.cluster_cidr,
        intervals: Intervals {
            min: args.min_sync_period,
            max: args.sync_period,
            ..Intervals::default()
        },
        render,
        metrics_bind: optional_address(&args.metrics_bind_address)?,
        healthz_bind: optional_address(&args.healthz_bind_address)?,
    };
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    Proxy::run(client, proxy_config, dataplane, shutdown).await?;
    Ok(())
}
