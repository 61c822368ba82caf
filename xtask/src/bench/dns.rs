//! dns: skiff-dns against stock authoritative servers serving the same records, in one run.
//!
//! One node namespace holds the servers and the load generator, each server on a loopback
//! address of its own: skiff-dns (release build) fed over the underlay by skiff-control, and
//! Debian's NSD (the baseline) and Unbound serving the same A records from a zone file and
//! `local-data`, each with its default single worker. Services are made through the API — one
//! in a hundred headless, its three ready endpoints in an EndpointSlice the bench writes, the
//! rest ClusterIP — first 10, then 10,000. Before a size is measured every name is asked of
//! every server once, and each answer must be exactly the addresses that were created.
//!
//! Throughput is dnsperf without `-v` (10 s, enough clients and outstanding queries to keep
//! the server busy) over a query file of every Service's name (A; all exist, so all NOERROR);
//! its mean latency there is a latency at saturation. p50/p99 come from a second run at a
//! fixed moderate rate (`-Q`) with `-v`, one line per query. Nothing is pinned: the machine's
//! cores are shared by the server and dnsperf. Memory: skiff-dns's VmRSS after the load, next to
//! CoreDNS's published 49 MB + 0.86 kB per Service, and NSD's (the sum of PSS over its
//! processes, which share the zone).
//!
//! Freshness: over `--iterations` more Services (default 100), made one at a time, the time
//! from just before the POST to skiff-dns's first answer for the name (a poller asking once a
//! millisecond), against the time its event reaches a plain watch (curl over HTTP/1.1 and TLS,
//! as skiff-dns's own client): the event delivered, which a server fed by a watch cannot beat.

mod dnsperf;
mod freshness;
mod procfs;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::dns::{Nsd, zone_file};
use skiff_tests::{Netns, Process, Run, Topology, TopologyOptions, binaries, wait};

use super::programming::{kubectl_proxy_in, send};
use super::{Figure, percentile};
use crate::shell;
use dnsperf::{Load, dnsperf};
use procfs::{group_pss_kb, vm_rss_kb};
use wire::check_answers;

/// How many Services each measurement runs at.
const SIZES: [usize; 2] = [10, 10_000];
const DOMAIN: &str = "cluster.local";
const NAMESPACE: &str = "default";
/// One Service in this many is headless.
const HEADLESS_EVERY: usize = 100;
/// Ready endpoints per headless Service.
const ENDPOINTS: usize = 3;
/// skiff-dns's default record TTL; the zone file says the same.
const TTL: u32 = 5;
const SKIFF_DNS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 53);
const NSD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 54);
const UNBOUND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 55);
const HEALTH: &str = "127.0.0.1:8053";
const PROXY_PORT: u16 = 8003;
const THROUGHPUT_SECS: &str = "10";
/// dnsperf's clients, threads and queries outstanding for the throughput runs.
const SATURATING: [&str; 6] = ["-c", "8", "-T", "2", "-q", "200"];
const LATENCY_SECS: &str = "4";
/// The moderate rate p50/p99 are measured at.
const LATENCY_QPS: u32 = 5_000;
/// Threads writing Services through `kubectl proxy`.
const CREATORS: usize = 8;
const WAIT: Duration = Duration::from_secs(60);
/// CoreDNS's published memory: a base and a per-Service increment.
const COREDNS_BASE_MB: f64 = 49.0;
const COREDNS_PER_SERVICE_KB: f64 = 0.86;

/// One size's figures: skiff-dns, NSD, Unbound; memory in MB.
struct SizeResult {
    services: usize,
    loads: [Load; 3],
    memory_mb: [f64; 3],
    nsd_processes: usize,
}

pub fn run(fresh: usize) -> Result<Vec<Figure>> {
    if !shell::is_root() {
        bail!("this benchmark builds network namespaces and needs root");
    }
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "skiff-control",
        "-p",
        "skiff-dns",
    ]))?;
    let started = Instant::now();
    let mut options = TopologyOptions::nodes(1, "bench-dns");
    options.log_root = shell::root().join("target/bench/logs");
    let topology = Topology::build(&options)?;
    let run = topology.run();
    let node = topology.node(1).netns.clone();
    eprintln!("dns: logs in {}", run.log_dir().display());

    // No controllers: these Services have no selector (the bench writes the headless ones'
    // slices), so none has work to do, and the two cores stay with what is measured.
    let data_dir = run.log_dir().join("control");
    let control_bin = binaries::release_binary("skiff-control")?;
    let cp_ip = topology.control_plane_ip().to_string();
    let _control = topology.spawn(
        topology.control_plane_netns(),
        "skiff-control",
        &[
            &control_bin.to_string_lossy(),
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--bind-address",
            &cp_ip,
            "--advertise-address",
            &cp_ip,
            "--no-controllers",
        ],
        &[],
    )?;
    let server = SocketAddr::from((topology.control_plane_ip(), 6443));
    wait::wait_for_tcp(Some(topology.control_plane_netns()), server, WAIT)
        .context("skiff-control did not start listening")?;
    let dns_kubeconfig = data_dir.join("skiff-dns.kubeconfig");
    skiff_tests::cmd::run(
        std::process::Command::new(&control_bin).args([
            "mint-token",
            "--data-dir",
            &data_dir.to_string_lossy(),
            "--user",
            skiff_tests::dns::DNS_USER,
            "--kubeconfig",
            &dns_kubeconfig.to_string_lossy(),
            "--server",
            &format!("https://{server}"),
        ]),
        Duration::from_secs(10),
    )?;
    let admin = data_dir.join("admin.kubeconfig");
    let (_proxy, api) = kubectl_proxy_in(run, &node, &admin, PROXY_PORT)?;

    create(&node, api, 0..SIZES[0])?;
    let dns_bin = binaries::release_binary("skiff-dns")?;
    let mut command = node.command(&[
        &dns_bin.to_string_lossy(),
        "--kubeconfig",
        &dns_kubeconfig.to_string_lossy(),
        "--listen",
        &format!("{SKIFF_DNS}:53"),
        "--upstream",
        &format!("{NSD}:53"),
        "--metrics-address",
        "127.0.0.1:9153",
        "--health-address",
        HEALTH,
    ]);
    // Its own log filter, as the add-on runs it, whatever the caller's environment says.
    command.env_remove("RUST_LOG");
    let skiff_dns = Process::spawn_command(run, "skiff-dns", command)?;
    wait::wait_for_http(Some(&node), HEALTH.parse()?, "/ready", WAIT)
        .context("skiff-dns did not become ready")?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", skiff_dns.pid()))?;
    ensure!(
        comm.trim() == "skiff-dns",
        "pid {} is {comm:?}",
        skiff_dns.pid()
    );

    let mut results = Vec::new();
    let mut made = SIZES[0];
    for services in SIZES {
        let took = Instant::now();
        create(&node, api, made..services)?;
        made = services;
        eprintln!(
            "dns: {services} Services made in {:.1} s",
            took.elapsed().as_secs_f64()
        );
        results.push(measure_size(run, &node, services, skiff_dns.pid())?);
    }
    let (answered, delivered) = freshness::measure(run, &node, api, &admin, made, fresh)?;
    eprintln!("dns: done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(figures(&results, &answered, &delivered))
}

/// Waits until every server answers every name right, then loads each in turn.
fn measure_size(run: &Run, node: &Netns, services: usize, skiff_pid: u32) -> Result<SizeResult> {
    let all: Vec<usize> = (0..services).collect();
    let skiff = SocketAddr::from((SKIFF_DNS, 53));
    wait::retry(WAIT, || check_answers(node, skiff, &all))
        .context("skiff-dns does not answer every Service")?;
    let records: Vec<String> = all.iter().flat_map(|&i| zone_records(i)).collect();
    let nsd = Nsd::start(
        run,
        node,
        &format!("nsd-{services}"),
        SocketAddr::from((NSD, 53)),
        &[(DOMAIN, zone_file(DOMAIN, &records))],
    )?;
    let unbound = start_unbound(run, node, services, &records)?;
    for server in [nsd.addr(), SocketAddr::from((UNBOUND, 53))] {
        check_answers(node, server, &all).with_context(|| format!("the server at {server}"))?;
    }
    let dir = run.scratch_dir("dns-bench")?;
    let queries = dir.join(format!("queries-{services}"));
    let text: String = all.iter().map(|&i| format!("{} A\n", fqdn(i))).collect();
    std::fs::write(&queries, text)?;
    let mut loads = [Load::default(); 3];
    let groups = [skiff_pid, nsd.pid(), unbound.pid()];
    for ((load, ip), pgid) in loads.iter_mut().zip([SKIFF_DNS, NSD, UNBOUND]).zip(groups) {
        *load = dnsperf(node, ip, &queries, pgid)?;
        eprintln!(
            "dns: {services} Services, {ip}: {:.0} q/s ({:.2} ms mean, {} lost, {:.1} us CPU per \
             query); at {LATENCY_QPS} q/s p50 {:.0} us, p99 {:.0} us",
            load.qps, load.saturated_ms, load.lost, load.cpu_us, load.p50_us, load.p99_us
        );
    }
    let (nsd_pss, nsd_processes) = group_pss_kb(nsd.pid())?;
    let memory_mb = [
        vm_rss_kb(skiff_pid)? / 1024.0,
        nsd_pss / 1024.0,
        vm_rss_kb(unbound.pid())? / 1024.0,
    ];
    Ok(SizeResult {
        services,
        loads,
        memory_mb,
        nsd_processes,
    })
}

fn figures(results: &[SizeResult], answered: &[f64], delivered: &[f64]) -> Vec<Figure> {
    let mut figures = Vec::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    figures.push(Figure {
        name: "CPU cores, shared by the server and dnsperf".into(),
        unit: "count".into(),
        value: cores as f64,
        baseline: None,
        note: "nothing pinned; NSD and Unbound run one worker (their default), skiff-dns a \
               tokio worker per core"
            .into(),
    });
    for r in results {
        let n = r.services;
        let [skiff, nsd, unbound] = r.loads;
        let row = |name: String, unit: &str, f: fn(&Load) -> f64, extra: String| Figure {
            name,
            unit: unit.into(),
            value: f(&skiff),
            baseline: Some(f(&nsd)),
            note: format!("Unbound {:.1}{extra}", f(&unbound)),
        };
        let lost = if skiff.lost + nsd.lost + unbound.lost > 0 {
            format!(
                "; lost (receive-buffer overflows): skiff-dns {} ({}), NSD {} ({}), Unbound {} ({})",
                skiff.lost,
                skiff.overflows,
                nsd.lost,
                nsd.overflows,
                unbound.lost,
                unbound.overflows
            )
        } else {
            String::new()
        };
        figures.push(row(
            format!("queries/s, {n} Services"),
            "q/s",
            |l| l.qps,
            format!("; CoreDNS's published ~33k on 2 vCPU{lost}"),
        ));
        figures.push(row(
            format!("server CPU per query at saturation, {n} Services"),
            "us",
            |l| l.cpu_us,
            String::new(),
        ));
        figures.push(row(
            format!("mean latency at saturation, {n} Services"),
            "ms",
            |l| l.saturated_ms,
            "; CoreDNS's published 2.6 ms".into(),
        ));
        figures.push(row(
            format!("latency p50 at {LATENCY_QPS} q/s, {n} Services"),
            "us",
            |l| l.p50_us,
            String::new(),
        ));
        figures.push(row(
            format!("latency p99 at {LATENCY_QPS} q/s, {n} Services"),
            "us",
            |l| l.p99_us,
            String::new(),
        ));
    }
    let coredns =
        |services: usize| COREDNS_BASE_MB + COREDNS_PER_SERVICE_KB * services as f64 / 1e3;
    let (small, large) = (&results[0], &results[results.len() - 1]);
    for r in [small, large] {
        figures.push(Figure {
            name: format!("skiff-dns RSS, {} Services", r.services),
            unit: "MB".into(),
            value: r.memory_mb[0],
            baseline: Some(coredns(r.services)),
            note: "baseline: CoreDNS's published 49 MB + 0.86 kB per Service, not measured here"
                .into(),
        });
    }
    figures.push(Figure {
        name: "skiff-dns RSS growth per Service".into(),
        unit: "kB".into(),
        value: (large.memory_mb[0] - small.memory_mb[0]) * 1024.0
            / (large.services - small.services) as f64,
        baseline: Some(COREDNS_PER_SERVICE_KB),
        note: "baseline: CoreDNS's published figure".into(),
    });
    figures.push(Figure {
        name: format!("memory against NSD, {} Services", large.services),
        unit: "MB".into(),
        value: large.memory_mb[0],
        baseline: Some(large.memory_mb[1]),
        note: format!(
            "skiff-dns VmRSS; NSD: PSS summed over its {} processes; Unbound VmRSS {:.1}",
            large.nsd_processes, large.memory_mb[2]
        ),
    });
    for p in [50.0, 90.0, 99.0] {
        figures.push(Figure {
            name: format!("Service created to answered p{p:.0}"),
            unit: "ms".into(),
            value: percentile(answered, p),
            baseline: Some(percentile(delivered, p)),
            note: if p == 99.0 {
                format!(
                    "baseline: its event's arrival on a plain watch (curl, HTTP/1.1); {} \
                     Services after {}",
                    answered.len(),
                    large.services
                )
            } else {
                String::new()
            },
        });
    }
    figures
}

/// The name of Service `i`.
fn name(i: usize) -> String {
    format!("svc-{i}")
}

fn fqdn(i: usize) -> String {
    format!("{}.{NAMESPACE}.svc.{DOMAIN}", name(i))
}

fn headless(i: usize) -> bool {
    i.is_multiple_of(HEADLESS_EVERY)
}

/// `base` + `n`.
fn offset(base: Ipv4Addr, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + n as u32)
}

/// The addresses Service `i`'s name must resolve to: its ClusterIP, or its endpoints.
fn addresses(i: usize) -> Vec<Ipv4Addr> {
    if headless(i) {
        (0..ENDPOINTS)
            .map(|k| offset(Ipv4Addr::new(10, 244, 0, 0), i * ENDPOINTS + k + 1))
            .collect()
    } else {
        vec![offset(Ipv4Addr::new(10, 97, 0, 0), i + 1)]
    }
}

/// Service `i`'s A records as zone file lines (relative to the zone).
fn zone_records(i: usize) -> Vec<String> {
    addresses(i)
        .into_iter()
        .map(|ip| format!("{}.{NAMESPACE}.svc {TTL} IN A {ip}", name(i)))
        .collect()
}

/// The API objects of Service `i`: where each is POSTed, and the object.
fn objects(i: usize) -> Vec<(String, Value)> {
    let port = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let cluster_ip = if headless(i) {
        "None".to_owned()
    } else {
        addresses(i)[0].to_string()
    };
    let mut objects = vec![(
        format!("/api/v1/namespaces/{NAMESPACE}/services"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name(i)},
               "spec": {"clusterIP": cluster_ip, "ports": port}}),
    )];
    if headless(i) {
        let endpoints: Vec<Value> = addresses(i)
            .iter()
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
            .collect();
        objects.push((
            format!("/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("{}-bench", name(i)),
                                "labels": {"kubernetes.io/service-name": name(i)}},
                   "addressType": "IPv4", "endpoints": endpoints,
                   "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        ));
    }
    objects
}

/// Makes Services `range` through the API from [`CREATORS`] threads in `node`.
fn create(node: &Netns, api: SocketAddr, range: std::ops::Range<usize>) -> Result<()> {
    node.run(move || {
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..CREATORS)
                .map(|t| {
                    let range = range.clone();
                    scope.spawn(move || -> Result<()> {
                        for i in range.skip(t).step_by(CREATORS) {
                            for (path, object) in objects(i) {
                                send(api, "POST", &path, "application/json", &object.to_string())?;
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|w| {
                w.join()
                    .map_err(|_| anyhow::anyhow!("a creator panicked"))?
            })
        })
    })
}

/// Unbound in `node` on [`UNBOUND`]:53 answering `records` (zone file lines below the zone)
/// from `local-data`.
fn start_unbound(run: &Run, node: &Netns, services: usize, records: &[String]) -> Result<Process> {
    let name = format!("unbound-{services}");
    let dir = run.scratch_dir(&name)?;
    let mut config = format!(
        "server:\n    interface: {UNBOUND}\n    port: 53\n    do-ip6: no\n    username: \"\"\n    \
         chroot: \"\"\n    directory: \"{dir}\"\n    pidfile: \"{dir}/unbound.pid\"\n    \
         do-daemonize: no\n    use-syslog: no\n    logfile: \"\"\n    verbosity: 0\n    \
         module-config: \"iterator\"\n    local-zone: \"{DOMAIN}.\" static\n",
        dir = dir.display()
    );
    for record in records {
        let (owner, rest) = record.split_once(' ').context("a record line")?;
        config.push_str(&format!("    local-data: \"{owner}.{DOMAIN}. {rest}\"\n"));
    }
    config.push_str("remote-control:\n    control-enable: no\n");
    let conf = dir.join("unbound.conf");
    std::fs::write(&conf, config)?;
    let process = Process::spawn(
        run,
        node,
        &name,
        &["unbound", "-d", "-c", &conf.to_string_lossy()],
        &[],
    )?;
    wait::wait_for_tcp(Some(node), SocketAddr::from((UNBOUND, 53)), WAIT)
        .context("Unbound did not start listening")?;
    Ok(process)
}
