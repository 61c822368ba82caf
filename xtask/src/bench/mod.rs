//! `cargo xtask bench <name>`: one entry point for every benchmark.
//!
//! A benchmark measures its subject and a baseline in the same run, on the same machine, and
//! reports both with their ratio; absolute numbers from a 2-core sandbox mean little alone.
//! Figures are printed as a table and written to `target/bench/<name>.json`.

mod cni;
mod dns;
mod example;
mod pod_startup;
mod programming;
mod underlay_http;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::shell;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark.
    name: BenchName,
    /// How many requests (underlay-http, default 2000), Pods (cni, default 200; pod-startup,
    /// default 100) or Services (programming-latency, default 100; dns's created-to-answered,
    /// default 100) to measure.
    #[arg(long)]
    iterations: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchName {
    /// HTTP request latency across the netns underlay, against loopback in the same namespace.
    UnderlayHttp,
    /// apiserver creates/s against the bare store; watch fan-out with 100 and 1000 watchers.
    Apiserver,
    /// Pods scheduled/s with 100 and 1000 Nodes against binding them directly.
    Scheduler,
    /// CNI ADD/DEL p50/p99, skiff-cni against Debian's bridge + host-local; Pod-to-Pod TCP
    /// throughput over host-gw and VXLAN against the bare underlay.
    Cni,
    /// skiff's iptables sync at 1k/5k/10k Services against a kube-proxy-shaped ruleset; Pod to
    /// ClusterIP connect latency at 0/1k/5k/10k Services against direct Pod-IP connects; the
    /// agent's memory.
    ProxyIptables,
    /// skiff's eBPF data plane: full sync and one change at 1k/5k/10k Services against its
    /// iptables one; ClusterIP connect latency under each against direct Pod-IP connects.
    ProxyEbpf,
    /// From a Service written to the API to its first answer from a Pod on every node, eBPF
    /// against iptables, over `--iterations` Services (default 100).
    ProgrammingLatency,
    /// skiff-dns against NSD (and Unbound) on the same records: queries/s and latency p50/p99
    /// at 10 and 10,000 Services with dnsperf, its memory against CoreDNS's published figure,
    /// and from a Service created to its name answered against a plain watch's event.
    Dns,
    /// From a Pod created to Running with its image present, containerd against the process
    /// runtime, over `--iterations` Pods (default 100), and the share spent in CNI ADD.
    PodStartup,
}

/// One measured figure, with the baseline measured in the same run where there is one.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Its unit, e.g. `us` or `req/s`.
    pub unit: String,
    /// The measurement.
    pub value: f64,
    /// The baseline's measurement of the same thing, if any.
    pub baseline: Option<f64>,
    /// Why a figure or its baseline is not what it seems (e.g. the baseline did not finish).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
}

impl Figure {
    /// value / baseline, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.value / b)
    }
}

/// The `p`-th percentile (nearest rank) of `sorted`, which must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx]
}

#[derive(Serialize)]
struct Report<'a> {
    name: &'a str,
    baseline: &'a str,
    figures: &'a [Figure],
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let (name, baseline, figures) = match args.name {
        BenchName::UnderlayHttp => (
            "underlay-http",
            "loopback inside the server's own namespace",
            underlay_http::run(args.iterations.unwrap_or(2000))?,
        ),
        BenchName::Apiserver => (
            "apiserver",
            "creates: the bare store, same concurrency; fan-out: a single watcher",
            example::run("apiserver-bench")?,
        ),
        BenchName::Scheduler => (
            "scheduler",
            "the same Pods created and bound directly through the binding API",
            example::run("scheduler-bench")?,
        ),
        BenchName::Cni => (
            "cni",
            "ADD/DEL: Debian's reference bridge + host-local on the same Pods; TCP: the bare \
             underlay between the same two nodes",
            cni::run(args.iterations.unwrap_or(200))?,
        ),
        BenchName::ProxyIptables => (
            "proxy-iptables",
            "sync: kube-proxy's iptables ruleset for the same Services, same iptables-restore, same \
             netns; connect: direct Pod-IP connects interleaved with the Service's; memory: none",
            example::run_in("skiff-proxy", "proxy-iptables-bench")?,
        ),
        BenchName::ProxyEbpf => {
            crate::ebpf::build()?;
            (
                "proxy-ebpf",
                "sync: skiff's iptables data plane on the same Services, same netns; connect: \
                 direct Pod-IP connects interleaved with the Service's; memory: none",
                example::run_in("skiff-proxy", "proxy-ebpf-bench")?,
            )
        }
        BenchName::ProgrammingLatency => {
            crate::ebpf::build()?;
            shell::run(shell::cargo().args(["build", "--locked", "--workspace", "--bins"]))?;
            (
                "programming-latency",
                "the iptables data plane in the same kind of cluster",
                programming::run(args.iterations.unwrap_or(100))?,
            )
        }
        BenchName::PodStartup => {
            shell::run(shell::cargo().args(["build", "--locked", "--workspace", "--bins"]))?;
            (
                "pod-startup",
                "the process runtime on the same kind of cluster",
                pod_startup::run(args.iterations.unwrap_or(100))?,
            )
        }
        BenchName::Dns => (
            "dns",
            "NSD (Debian, one server process) serving the same A records from a zone file, same \
             namespace, same dnsperf; Unbound's figures in the notes; memory: CoreDNS's published \
             49 MB + 0.86 kB/Service and NSD; created-to-answered: the event from a plain watch",
            dns::run(args.iterations.unwrap_or(100))?,
        ),
    };
    print_table(name, baseline, &figures);
    let dir = shell::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.json"));
    let report = Report {
        name,
        baseline,
        figures: &figures,
    };
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("\nwritten to {}", path.display());
    Ok(())
}

fn print_table(name: &str, baseline: &str, figures: &[Figure]) {
    println!("\n{name} (baseline: {baseline})");
    println!(
        "{:<48} {:>12} {:>12} {:>8}",
        "figure", "value", "baseline", "ratio"
    );
    for f in figures {
        let base = f.baseline.map_or("-".to_owned(), |b| format!("{b:.1}"));
        let ratio = f.ratio().map_or("-".to_owned(), |r| format!("{r:.2}x"));
        println!(
            "{:<48} {:>12} {:>12} {:>8}",
            format!("{} ({})", f.name, f.unit),
            format!("{:.1}", f.value),
            base,
            ratio
        );
        if !f.note.is_empty() {
            println!("    ({})", f.note);
        }
    }
}
