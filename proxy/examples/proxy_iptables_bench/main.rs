//! `cargo xtask bench proxy-iptables`: skiff's iptables ruleset against a kube-proxy-shaped one,
//! and what a Pod's connection to a ClusterIP costs under each.
//!
//! In a scratch network namespace (the node) with two Pods wired into it as skiff-cni wires
//! them, for 0 Services and then 1k, 5k and 10k ClusterIP Services × 10 endpoints, each size
//! plus one target Service whose only endpoint is the server Pod (its ClusterIP the top of the
//! same 10.96.0.0/16, so it sits inside skiff's dispatch tree and last in kube-proxy's list):
//!
//! * **Sync** (not at 0): the time of a full sync and of one endpoint change, and the rule and
//!   chain counts. The subject is skiff's data plane as it runs (render + `iptables-restore`,
//!   partial after the first sync); the baseline the ruleset kube-proxy's iptables mode writes
//!   for the same Services (see `kube_shaped`), applied with the same `iptables-restore`. Both
//!   clocks include making the text. A baseline restore that runs longer than
//!   `SKIFF_BENCH_BASELINE_TIMEOUT_S` (default 300) is killed and reported as "did not finish
//!   within N s" (kube-proxy's ruleset at 10k Services takes far longer), so every size yields
//!   skiff's figures.
//! * **Connect latency**: `connect()` p50/p99 from the client Pod to the target ClusterIP under
//!   skiff's ruleset, against connects straight to the server Pod's IP interleaved with them
//!   (`skiff_tests::connect_latency`). The same again under the kube-proxy-shaped ruleset when
//!   its full sync finished, as separate figures. The direct connects cross the same nat hooks
//!   (under kube-proxy's layout they walk all of `KUBE-SERVICES` too), so each ratio is what
//!   the Service address adds on top of plain Pod traffic under that ruleset.
//! * **Agent memory**: heap bytes held by the `DesiredState` and the `IptablesDataplane` after
//!   the full sync (a counting global allocator, `skiff_tests::alloc_count`), and the process's
//!   VmRSS (VmHWM in the note). kube-proxy's memory is not measured here: no baseline.
//!
//! `SKIFF_BENCH_SIZES=1000,5000` replaces the sizes after 0. Prints the figures as one JSON
//! array on its last line.

#[path = "../bench_common/mod.rs"]
mod bench_common;
mod kube_shaped;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use bench_common::{
    ENDPOINTS, TARGET, connect, connect_figures, desired, mib, ms, pod_addrs, sizes,
};
use serde_json::{Value, json};
use skiff_proxy::Dataplane;
use skiff_proxy::conntrack::FakeConntrack;
use skiff_proxy::iptables::{IptablesDataplane, RealIptables, RenderOptions};
use skiff_tests::alloc_count::{self, CountingAlloc};
use skiff_tests::connect_latency::PodPair;
use skiff_tests::{Netns, Run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A baseline figure: its time, or why there is none.
fn baseline(time: Option<Duration>, limit: Duration, why: &str) -> (Value, String) {
    match time {
        Some(time) => (json!(ms(time)), String::new()),
        None => (Value::Null, format!("{why} within {} s", limit.as_secs())),
    }
}

fn baseline_limit() -> Result<Duration> {
    Ok(Duration::from_secs(
        match std::env::var("SKIFF_BENCH_BASELINE_TIMEOUT_S") {
            Ok(secs) => secs
                .parse()
                .context("SKIFF_BENCH_BASELINE_TIMEOUT_S is a number of seconds")?,
            Err(_) => 300,
        },
    ))
}

/// Every figure for `n` Services.
fn measure_size(pair: &PodPair, n: usize, limit: Duration) -> Result<Vec<Value>> {
    let iptables = RealIptables::new();
    let SocketAddr::V4(server) = pair.server_addr() else {
        anyhow::bail!("the server Pod has no IPv4 address");
    };
    let mut figures = Vec::new();

    // The baseline first, then removed whole: skiff's sync starts from clean tables.
    kube_shaped::remove_all(&iptables)?;
    // The baseline's clocks include generating its text, as skiff's include rendering.
    let started = Instant::now();
    let (kube_text, kube_rules) = kube_shaped::full(n, TARGET, server);
    let kube_full_time = kube_shaped::restore_within(kube_text, limit)
        .context("kube-proxy-shaped full sync")?
        .then(|| started.elapsed());
    let kube_connect = match kube_full_time {
        Some(_) => Some(connect(pair).context("through the kube-proxy-shaped ruleset")?),
        None => None,
    };
    let kube_change_time = match kube_full_time {
        Some(_) if n > 0 => {
            let started = Instant::now();
            kube_shaped::restore_within(kube_shaped::one_change(), limit)
                .context("kube-proxy-shaped partial sync")?
                .then(|| started.elapsed())
        }
        _ => None,
    };
    kube_shaped::remove_all(&iptables)?;
    let (kube_full_time, full_note) = baseline(kube_full_time, limit, "did not finish");
    let (kube_change_time, change_note) = baseline(
        kube_change_time,
        limit,
        "no full ruleset to change: it did not finish",
    );

    // Held after the full sync: what the agent keeps between syncs for these Services.
    let before = alloc_count::live_bytes();
    let state = desired(n, 0, server);
    let mut plane =
        IptablesDataplane::new(iptables, FakeConntrack::default(), RenderOptions::default());
    let started = Instant::now();
    let report = plane.sync(&state)?;
    let full_time = started.elapsed();
    let heap = alloc_count::live_bytes().saturating_sub(before);
    let rss = alloc_count::rss()?;
    ensure!(report.full, "the first sync was not full");
    if n > 0 {
        let changed = desired(n, 1, server);
        let started = Instant::now();
        let partial = plane.sync(&changed)?;
        let change_time = started.elapsed();
        ensure!(
            !partial.full && partial.written > 0,
            "the change was not a partial sync"
        );
        let rules: usize = report.rules.values().sum();
        figures.push(json!({"name": format!("full sync {n} svc"), "unit": "ms", "value": ms(full_time), "baseline": kube_full_time, "note": full_note}));
        figures.push(json!({"name": format!("one endpoint change {n} svc"), "unit": "ms", "value": ms(change_time), "baseline": kube_change_time, "note": change_note}));
        figures.push(json!({"name": format!("rules {n} svc"), "unit": "rules", "value": rules, "baseline": kube_rules}));
        figures.push(json!({"name": format!("chains written by one change {n} svc"), "unit": "chains", "value": partial.written, "baseline": 3}));
    }

    let skiff_connect = connect(pair).context("through skiff's ruleset")?;
    let kube_note = match kube_connect {
        Some(_) => String::new(),
        None => format!(
            "kube-proxy-shaped connect not measured: its full sync did not finish within {} s",
            limit.as_secs()
        ),
    };
    figures.extend(connect_figures("connect", n, &skiff_connect, &kube_note));
    if let Some(kube) = &kube_connect {
        figures.extend(connect_figures("kube-shaped connect", n, kube, "baseline: direct Pod IP under the same ruleset, whose new connections walk all of KUBE-SERVICES too"));
    }
    figures.push(json!({"name": format!("agent heap {n} svc"), "unit": "MiB", "value": mib(heap as u64), "baseline": null,
        "note": "DesiredState + IptablesDataplane after the full sync; kube-proxy not measured here"}));
    figures.push(json!({"name": format!("agent RSS {n} svc"), "unit": "MiB", "value": mib(rss.current), "baseline": null,
        "note": format!("VmRSS after the full sync; VmHWM {:.1} MiB (whole bench process); kube-proxy not measured here", mib(rss.peak))}));
    plane.cleanup()?;
    Ok(figures)
}

fn measure(pair: &PodPair) -> Result<Vec<Value>> {
    let limit = baseline_limit()?;
    let mut figures = Vec::new();
    for n in sizes()? {
        eprintln!("proxy-iptables: {n} Services x {ENDPOINTS} endpoints + the target Service");
        let these = measure_size(pair, n, limit)?;
        for figure in &these {
            eprintln!("  {figure}");
        }
        figures.extend(these);
    }
    kube_shaped::remove_all(&RealIptables::new())?;
    Ok(figures)
}

fn main() -> Result<()> {
    let run = Run::start("bench-proxy-iptables", &std::env::temp_dir())?;
    let netns = Netns::create(&run.id().object("bench"))?;
    let pair = PodPair::wire(&run, &netns, &pod_addrs())?;
    let figures = netns.run(move || measure(&pair))?;
    drop(run);
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
