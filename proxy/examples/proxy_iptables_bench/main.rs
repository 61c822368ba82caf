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

mod kube_shaped;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use skiff_proxy::Dataplane;
use skiff_proxy::conntrack::FakeConntrack;
use skiff_proxy::iptables::{IptablesDataplane, RealIptables, RenderOptions};
use skiff_proxy::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};
use skiff_tests::alloc_count::{self, CountingAlloc};
use skiff_tests::connect_latency::{Budget, Latency, PodPair, PodPairAddrs, Target};
use skiff_tests::{Netns, Run};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Service counts measured after 0; `SKIFF_BENCH_SIZES=1000,5000` overrides.
const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
const ENDPOINTS: usize = 10;
/// The address that replaces Service 0's first endpoint.
const CHANGED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// The target Service's ClusterIP: above every [`service_ip`], inside the same /16.
const TARGET: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 254);
const SERVICE_PORT: u16 = 80;
const POD_PORT: u16 = 8080;

fn service_ip(i: usize) -> Ipv4Addr {
    // Spread over 10.96.0.0/16 the way an allocator's random picks would be.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + ((i * 7919) % 65_521) as u32 + 1)
}

fn endpoint_ip(i: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (i * ENDPOINTS + e) as u32 + 2)
}

/// The two Pods on this node (podCIDR 10.244.0.0/24, gateway .1). Like any Pod they may share
/// an address with a listed endpoint of some other Service; nothing here sends to those.
fn pod_addrs() -> PodPairAddrs {
    PodPairAddrs {
        pod_cidr: "10.244.0.0/24".parse().expect("a valid CIDR"),
        client: Ipv4Addr::new(10, 244, 0, 250),
        server: Ipv4Addr::new(10, 244, 0, 251),
        port: POD_PORT,
        direct_port: POD_PORT + 1,
    }
}

fn service(ip: Ipv4Addr, endpoints: Vec<EndpointAddr>) -> DesiredService {
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![ip],
            port: SERVICE_PORT,
            ..ServicePort::default()
        },
        local_ready: endpoints.iter().filter(|e| e.local).count(),
        internal_endpoints: endpoints,
        external_endpoints: Vec::new(),
        has_endpoints: true,
    }
}

/// `n` Services plus the target (endpoint `server`); `shift` replaces Service 0's first endpoint.
fn desired(n: usize, shift: usize, server: SocketAddrV4) -> DesiredState {
    let mut state = DesiredState {
        node: NodeFacts {
            name: "bench".into(),
            ips: vec![Ipv4Addr::new(192, 0, 2, 1)],
            zone: None,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        },
        ..DesiredState::default()
    };
    for i in 0..n {
        let endpoints = (0..ENDPOINTS)
            .map(|e| EndpointAddr {
                ip: if i == 0 && e == 0 && shift > 0 {
                    CHANGED
                } else {
                    endpoint_ip(i, e)
                },
                port: POD_PORT,
                local: false,
            })
            .collect();
        state.services.insert(
            ServicePortName::new("bench", &format!("svc{i}"), "http", Protocol::Tcp),
            service(service_ip(i), endpoints),
        );
    }
    let to_server = EndpointAddr {
        ip: *server.ip(),
        port: server.port(),
        local: true,
    };
    state.services.insert(
        ServicePortName::new("bench", "target", "http", Protocol::Tcp),
        service(TARGET, vec![to_server]),
    );
    state
}

/// A baseline figure: its time, or why there is none.
fn baseline(time: Option<Duration>, limit: Duration, why: &str) -> (Value, String) {
    match time {
        Some(time) => (json!(ms(time)), String::new()),
        None => (Value::Null, format!("{why} within {} s", limit.as_secs())),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Connect latency to (the server Pod directly, the target Service) from the client Pod.
fn connect(pair: &PodPair) -> Result<(Latency, Latency)> {
    let service = Target::new("target Service", SocketAddr::from((TARGET, SERVICE_PORT)));
    let mut latencies = pair.measure(&[pair.direct(), service], &Budget::default())?;
    let service = latencies.pop().context("no Service latency")?;
    let direct = latencies.pop().context("no direct latency")?;
    Ok((direct, service))
}

/// p50 and p99 figures for `name`, the Service's latency against the direct one.
fn connect_figures(
    name: &str,
    n: usize,
    (direct, service): &(Latency, Latency),
    note: &str,
) -> [Value; 2] {
    let rounds = Budget::default().rounds;
    let mut note = note.to_owned();
    if service.samples < rounds {
        note = format!(
            "only {} connects each within the time bound; {note}",
            service.samples
        );
    }
    [
        json!({"name": format!("{name} p50 {n} svc"), "unit": "us", "value": service.p50_us, "baseline": direct.p50_us, "note": note}),
        json!({"name": format!("{name} p99 {n} svc"), "unit": "us", "value": service.p99_us, "baseline": direct.p99_us}),
    ]
}

fn sizes() -> Result<Vec<usize>> {
    let rest = match std::env::var("SKIFF_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("SKIFF_BENCH_SIZES is a list of counts")
            })
            .collect::<Result<Vec<usize>>>()?,
        Err(_) => SIZES.to_vec(),
    };
    Ok([0]
        .into_iter()
        .chain(rest.into_iter().filter(|&n| n > 0))
        .collect())
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
