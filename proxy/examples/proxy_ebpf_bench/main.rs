//! `cargo xtask bench proxy-ebpf`: skiff's eBPF data plane against its iptables one, and what a
//! Pod's connection to a ClusterIP costs under each against a direct Pod-IP connect.
//!
//! In a scratch network namespace (the node) with two Pods wired into it as skiff-cni wires
//! them, for 0 Services and then 1k, 5k and 10k ClusterIP Services × 10 endpoints plus one
//! target Service whose only endpoint is the server Pod (the same Services as `proxy-iptables`,
//! `bench_common`):
//!
//! * **Sync** (not at 0): a full sync into fresh maps, and one endpoint change, by the eBPF
//!   data plane as `skiff-node` opens it (`NodeDataplane`: programs loaded, maps pinned under the
//!   run's bpffs folder, socket programs attached to a cgroup of the run's); the baseline is the
//!   iptables data plane syncing the same state with `iptables-restore` in the same run.
//!   Targets: a full sync of 10k × 10 under 0.5 s, one change under 5 ms (the median of five
//!   changes, each moving one endpoint there or back).
//! * **Connect latency**: `connect()` p50/p99 from the client Pod to the target ClusterIP under
//!   each data plane, interleaved with connects straight to the server Pod
//!   (`skiff_tests::connect_latency`); target for eBPF: within 5% of direct. The socket programs
//!   only see processes in their cgroup, so this process moves into it while it measures
//!   (`kernelfs::enter_cgroup`) and back before the run is removed.
//! * **Agent memory**: heap bytes held by the `DesiredState` and the data plane after the full
//!   sync (counting allocator), and VmRSS. The maps themselves live in the kernel.
//!
//! `SKIFF_BENCH_SIZES=1000,5000` replaces the sizes after 0. Prints the figures as one JSON
//! array on its last line. Needs the object from `cargo xtask build-ebpf`.

#[path = "../bench_common/mod.rs"]
mod bench_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bench_common::{ENDPOINTS, connect, connect_figures, desired, mib, ms, pod_addrs, sizes};
use serde_json::{Value, json};
use skiff_proxy::conntrack::FakeConntrack;
use skiff_proxy::iptables::{IptablesDataplane, RealIptables, RenderOptions};
use skiff_proxy::model::DesiredState;
use skiff_proxy::{Dataplane, EbpfPaths, ModeConfig, NodeDataplane, ProxyMode, SyncReport};
use skiff_tests::alloc_count::{self, CountingAlloc};
use skiff_tests::connect_latency::PodPair;
use skiff_tests::{Netns, Run, binaries, kernelfs};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Where the eBPF data plane of the bench node lives.
struct Places {
    object: PathBuf,
    pins: PathBuf,
    cgroup: PathBuf,
}

fn ebpf_config(places: &Places) -> ModeConfig {
    ModeConfig {
        mode: ProxyMode::Ebpf,
        render: RenderOptions::default(),
        ebpf: EbpfPaths {
            object: Some(places.object.clone()),
            pin_dir: places.pins.clone(),
            cgroup: Some(places.cgroup.clone()),
            allow_root_cgroup: false,
            devices: Vec::new(),
        },
    }
}

/// Every figure for `n` Services.
fn measure_size(pair: &PodPair, places: &Places, n: usize) -> Result<Vec<Value>> {
    let SocketAddr::V4(server) = pair.server_addr() else {
        anyhow::bail!("the server Pod has no IPv4 address");
    };
    let mut figures = Vec::new();
    let config = ebpf_config(places);
    NodeDataplane::remove_all(&config)?;

    // eBPF: open as the agent does, full sync, one change, connects from inside the cgroup.
    let before = alloc_count::live_bytes();
    let state = desired(n, 0, server);
    let mut plane = NodeDataplane::open(config.clone())?;
    let started = Instant::now();
    let report = plane.sync(&state)?;
    let full_time = started.elapsed();
    let heap = alloc_count::live_bytes().saturating_sub(before);
    let rss = alloc_count::rss()?;
    let changed = desired(n, 1, server);
    let (ebpf_changes, partial) = change_times(&mut plane, &state, &changed)?;
    ensure!(!partial.full, "the change was not a partial sync");
    let ebpf_connect = {
        let _inside = kernelfs::enter_cgroup(&places.cgroup)?;
        connect(pair).context("through the eBPF data plane")?
    };
    drop(plane);
    NodeDataplane::remove_all(&config)?;

    // iptables, the same state, the same clocks.
    let mut iptables = IptablesDataplane::new(
        RealIptables::new(),
        FakeConntrack::default(),
        RenderOptions::default(),
    );
    let started = Instant::now();
    iptables.sync(&state)?;
    let iptables_full = started.elapsed();
    let (iptables_changes, _) = change_times(&mut iptables, &state, &changed)?;
    let iptables_connect = connect(pair).context("through the iptables data plane")?;
    iptables.cleanup()?;

    if n > 0 {
        let entries: usize = report.map_entries.values().sum();
        figures.push(json!({"name": format!("full sync {n} svc"), "unit": "ms", "value": ms(full_time), "baseline": ms(iptables_full),
            "note": format!("{} map entries written; target < 500 ms at 10k", report.written)}));
        let median = |times: &[Duration]| ms(times[times.len() / 2]);
        let slowest = ebpf_changes.last().copied().unwrap_or_default();
        figures.push(json!({"name": format!("one endpoint change {n} svc"), "unit": "ms", "value": median(&ebpf_changes), "baseline": median(&iptables_changes),
            "note": format!("median of {CHANGES}, slowest {:.1} ms; {} map entries written; target < 5 ms", ms(slowest), partial.written)}));
        figures.push(json!({"name": format!("map entries {n} svc"), "unit": "entries", "value": entries, "baseline": null}));
    }
    figures.extend(connect_figures(
        "ebpf connect",
        n,
        &ebpf_connect,
        "baseline: direct Pod IP; target within 5%",
    ));
    figures.extend(connect_figures(
        "iptables connect",
        n,
        &iptables_connect,
        "baseline: direct Pod IP",
    ));
    figures.push(json!({"name": format!("agent heap {n} svc"), "unit": "MiB", "value": mib(heap as u64), "baseline": null,
        "note": "DesiredState + the eBPF data plane after the full sync (the maps are kernel memory)"}));
    figures.push(json!({"name": format!("agent RSS {n} svc"), "unit": "MiB", "value": mib(rss.current), "baseline": null,
        "note": format!("VmRSS after the full sync; VmHWM {:.1} MiB (whole bench process)", mib(rss.peak))}));
    Ok(figures)
}

/// How many endpoint changes [`change_times`] times.
const CHANGES: usize = 5;

/// Times [`CHANGES`] syncs that each move one endpoint (to `changed`, back to `state`, ...),
/// sorted, with the report of the first; a single change is at the mercy of one timer tick.
fn change_times(
    plane: &mut dyn Dataplane,
    state: &DesiredState,
    changed: &DesiredState,
) -> Result<(Vec<Duration>, SyncReport)> {
    let mut times = Vec::with_capacity(CHANGES);
    let mut first = None;
    for round in 0..CHANGES {
        let target = if round % 2 == 0 { changed } else { state };
        let started = Instant::now();
        let report = plane.sync(target)?;
        times.push(started.elapsed());
        first.get_or_insert(report);
    }
    times.sort();
    Ok((times, first.unwrap_or_default()))
}

fn measure(pair: &PodPair, places: &Places) -> Result<Vec<Value>> {
    let mut figures = Vec::new();
    for n in sizes()? {
        eprintln!("proxy-ebpf: {n} Services x {ENDPOINTS} endpoints + the target Service");
        let these = measure_size(pair, places, n)?;
        for figure in &these {
            eprintln!("  {figure}");
        }
        figures.extend(these);
    }
    Ok(figures)
}

fn main() -> Result<()> {
    let object = binaries::target_dir().join("ebpf/bpfel-unknown-none/release/skiff");
    ensure!(
        object.exists(),
        "{} is missing: run `cargo xtask build-ebpf`",
        object.display()
    );
    let run = Run::start("bench-proxy-ebpf", &std::env::temp_dir())?;
    let netns = Netns::create(&run.id().object("bench"))?;
    let cgroup = run.cgroup_dir()?.join("node");
    std::fs::create_dir_all(&cgroup)?;
    let places = Places {
        object,
        pins: run.bpf_pin_dir()?.join("node"),
        cgroup,
    };
    let pair = PodPair::wire(&run, &netns, &pod_addrs())?;
    let figures = netns.run(move || measure(&pair, &places))?;
    drop(run);
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
