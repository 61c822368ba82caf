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
//! millisecond), against the time a plain watch (`kubectl get services --watch`, over TLS as
//! skiff-dns's own) prints it: the event delivered, which no DNS server fed by a watch can beat.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::dns::{Nsd, zone_file};
use skiff_tests::{Netns, Process, Run, Topology, TopologyOptions, binaries, wait};

use super::programming::send;
use super::{Figure, percentile};
use crate::shell;

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

/// What dnsperf measured against one server.
#[derive(Clone, Copy, Debug, Default)]
struct Load {
    qps: f64,
    /// Mean latency of the throughput run (ms).
    saturated_ms: f64,
    /// Queries lost in the throughput run.
    lost: u64,
    p50_us: f64,
    p99_us: f64,
}

/// One size's figures: skiff-dns, NSD, Unbound; memory in MB.
struct SizeResult {
    services: usize,
    loads: [Load; 3],
    memory_mb: [f64; 3],
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
    let (_proxy, api) = kubectl_proxy(run, &node, &admin)?;

    create(&node, api, 0..SIZES[0])?;
    let dns_bin = binaries::release_binary("skiff-dns")?;
    let skiff_dns = Process::spawn(
        run,
        &node,
        "skiff-dns",
        &[
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
        ],
        &[],
    )?;
    wait::wait_for_http(Some(&node), HEALTH.parse()?, "/ready", WAIT)
        .context("skiff-dns did not become ready")?;
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", skiff_dns.pid()))?;
    ensure!(comm.trim() == "skiff-dns", "pid {} is {comm:?}", skiff_dns.pid());

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
    let (answered, delivered) = freshness(run, &node, api, &admin, made, fresh)?;
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
    for (load, ip) in loads.iter_mut().zip([SKIFF_DNS, NSD, UNBOUND]) {
        *load = dnsperf(node, ip, &queries)?;
        eprintln!(
            "dns: {services} Services, {ip}: {:.0} q/s ({:.2} ms mean, {} lost); at {LATENCY_QPS} \
             q/s p50 {:.0} us, p99 {:.0} us",
            load.qps, load.saturated_ms, load.lost, load.p50_us, load.p99_us
        );
    }
    let memory_mb = [
        vm_rss_kb(skiff_pid)? / 1024.0,
        group_pss_kb(nsd.pid())? / 1024.0,
        vm_rss_kb(unbound.pid())? / 1024.0,
    ];
    Ok(SizeResult {
        services,
        loads,
        memory_mb,
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
                "; lost: skiff-dns {}, NSD {}, Unbound {}",
                skiff.lost, nsd.lost, unbound.lost
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
    let coredns = |services: usize| COREDNS_BASE_MB + COREDNS_PER_SERVICE_KB * services as f64 / 1e3;
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
            "skiff-dns VmRSS; NSD: PSS summed over its 3 processes; Unbound VmRSS {:.1}",
            large.memory_mb[2]
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
                    "baseline: its event printed by `kubectl get services --watch`; {} Services \
                     after {}",
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
    i % HEADLESS_EVERY == 0
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
            workers
                .into_iter()
                .try_for_each(|w| w.join().map_err(|_| anyhow::anyhow!("a creator panicked"))?)
        })
    })
}

/// `kubectl proxy` in `node` at `127.0.0.1:PROXY_PORT` (plain HTTP to the API).
fn kubectl_proxy(run: &Run, node: &Netns, kubeconfig: &Path) -> Result<(Process, SocketAddr)> {
    let proxy = Process::spawn_command(
        run,
        "kubectl-proxy",
        node.command_keeping_mounts(&[
            "kubectl",
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "proxy",
            &format!("--port={PROXY_PORT}"),
        ]),
    )?;
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, PROXY_PORT));
    wait::wait_for_http(Some(node), api, "/version", Duration::from_secs(20))?;
    Ok((proxy, api))
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

/// Asks `server` for every Service in `services` once; fails at the first answer that is not
/// exactly the Service's addresses.
fn check_answers(node: &Netns, server: SocketAddr, services: &[usize]) -> Result<()> {
    let services = services.to_vec();
    node.run(move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        for (n, &i) in services.iter().enumerate() {
            let (rcode, mut got) = ask(&socket, server, &fqdn(i), n as u16)?;
            got.sort();
            ensure!(
                rcode == 0 && got == addresses(i),
                "{} answered rcode {rcode} {got:?}, want {:?}",
                fqdn(i),
                addresses(i)
            );
        }
        Ok(())
    })
}

/// One A question for `name` to `server` and its answer's rcode and addresses; fails when no
/// answer with this `id` comes within the socket's read timeout.
fn ask(socket: &UdpSocket, server: SocketAddr, name: &str, id: u16) -> Result<(u8, Vec<Ipv4Addr>)> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend(label.as_bytes());
    }
    query.extend([0, 0, 1, 0, 1]);
    socket.send_to(&query, server)?;
    let mut buf = [0u8; 1500];
    loop {
        let len = socket
            .recv(&mut buf)
            .with_context(|| format!("no answer from {server} for {name}"))?;
        // A late answer to an earlier question is skipped.
        if len >= 2 && buf[..2] == id.to_be_bytes() {
            return parse_answer(&buf[..len]);
        }
    }
}

/// The rcode and A records of a DNS answer.
fn parse_answer(packet: &[u8]) -> Result<(u8, Vec<Ipv4Addr>)> {
    let u16_at = |pos: usize| -> Result<u16> {
        let b = packet.get(pos..pos + 2).context("a short answer")?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    };
    let rcode = packet.get(3).context("a short answer")? & 0x0f;
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(packet, pos)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        pos = skip_name(packet, pos)?;
        let (rtype, len) = (u16_at(pos)?, usize::from(u16_at(pos + 8)?));
        pos += 10;
        let data = packet.get(pos..pos + len).context("a short record")?;
        if rtype == 1 && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        pos += len;
    }
    Ok((rcode, addresses))
}

/// Where the name at `pos` ends.
fn skip_name(packet: &[u8], mut pos: usize) -> Result<usize> {
    loop {
        let len = *packet.get(pos).context("a short name")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => return Ok(pos + 2),
            l => pos += 1 + usize::from(l),
        }
    }
}

/// Throughput (no `-v`), then latency at [`LATENCY_QPS`] (`-v`) of the server at `ip`.
fn dnsperf(node: &Netns, ip: Ipv4Addr, queries: &Path) -> Result<Load> {
    let ip = ip.to_string();
    let queries = queries.to_string_lossy();
    let base = ["dnsperf", "-s", &ip, "-d", &queries];
    let mut argv = base.to_vec();
    argv.extend(["-l", THROUGHPUT_SECS]);
    argv.extend(SATURATING);
    let summary = run_dnsperf(node, &argv)?;
    let mut load = Load {
        qps: stat(&summary, "Queries per second:")?,
        saturated_ms: stat(&summary, "Average Latency (s):")? * 1e3,
        lost: stat(&summary, "Queries lost:")? as u64,
        ..Load::default()
    };
    let rate = LATENCY_QPS.to_string();
    let mut argv = base.to_vec();
    argv.extend(["-l", LATENCY_SECS, "-Q", &rate, "-v"]);
    let out = run_dnsperf(node, &argv)?;
    let mut latencies = Vec::new();
    for line in out.lines().filter_map(|l| l.strip_prefix("> ")) {
        let mut words = line.split_whitespace();
        let rcode = words.next().unwrap_or_default();
        ensure!(rcode == "NOERROR", "{ip} answered {line:?}");
        let seconds: f64 = words.last().context("a latency")?.parse()?;
        latencies.push(seconds * 1e6);
    }
    ensure!(!latencies.is_empty(), "no latencies from {ip}");
    latencies.sort_by(f64::total_cmp);
    load.p50_us = percentile(&latencies, 50.0);
    load.p99_us = percentile(&latencies, 99.0);
    Ok(load)
}

/// Runs dnsperf; its stdout, after checking that every answer was NOERROR.
fn run_dnsperf(node: &Netns, argv: &[&str]) -> Result<String> {
    let out = node.output(argv, Duration::from_secs(60))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{} failed: {}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    let codes = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .context("dnsperf printed no response codes")?;
    ensure!(
        codes.split(',').all(|c| c.trim().starts_with("NOERROR")),
        "{}: response codes {codes}",
        argv.join(" ")
    );
    Ok(text)
}

/// The first number after `label` in dnsperf's summary.
fn stat(summary: &str, label: &str) -> Result<f64> {
    let line = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .with_context(|| format!("dnsperf printed no {label:?}"))?;
    let first = line.split_whitespace().next().unwrap_or_default();
    first
        .parse()
        .with_context(|| format!("{label} {line:?} is not a number"))
}

/// A process's VmRSS (kB).
fn vm_rss_kb(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_kb(&status, "VmRSS:").with_context(|| format!("no VmRSS for pid {pid}"))
}

/// The PSS (kB) summed over every process of group `pgid`: shared pages counted once.
fn group_pss_kb(pgid: u32) -> Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, ppid, pgrp.
        let group = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<u32>().ok());
        if group == Some(pgid) {
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
            total += status_kb(&rollup, "Pss:").context("no Pss")?;
        }
    }
    ensure!(total > 0.0, "no process in group {pgid}");
    Ok(total)
}

/// The kB figure on the line starting with `label`.
fn status_kb(text: &str, label: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// Over `count` Services after the first `made`, one at a time: ms from the POST to
/// skiff-dns's first answer, and to the event printed by a plain watch (both sorted).
fn freshness(
    run: &Run,
    node: &Netns,
    api: SocketAddr,
    admin: &Path,
    made: usize,
    count: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let watch = Watch::start(run, node, admin)?;
    // Freshness is measured on ClusterIP Services only.
    let mut indices = (made..).filter(|&i| !headless(i));
    // Warm-up Services until the watch prints one: it is open (kubectl lists first).
    for attempt in 0.. {
        ensure!(attempt < 30, "the watch prints nothing");
        let i = indices.next().context("indices run out")?;
        node.run(move || create_service(api, i))?;
        if watch.events.recv_timeout(Duration::from_secs(1)).is_ok() {
            break;
        }
    }
    let (mut answered, mut delivered) = (Vec::new(), Vec::new());
    for i in indices.take(count) {
        let poll_node = node.clone();
        let poller = std::thread::spawn(move || poll_node.run(move || poll(i)));
        let written = node.run(move || create_service(api, i))?;
        let seen = watch.seen(&name(i))?;
        let answer = poller
            .join()
            .map_err(|_| anyhow::anyhow!("the poller panicked"))??;
        let ms = |t: SystemTime| t.duration_since(written).unwrap_or_default().as_secs_f64() * 1e3;
        answered.push(ms(answer));
        delivered.push(ms(seen));
    }
    drop(watch);
    answered.sort_by(f64::total_cmp);
    delivered.sort_by(f64::total_cmp);
    eprintln!(
        "dns: created to answered p50 {:.1} ms (watch {:.1} ms), p99 {:.1} ms (watch {:.1} ms)",
        percentile(&answered, 50.0),
        percentile(&delivered, 50.0),
        percentile(&answered, 99.0),
        percentile(&delivered, 99.0)
    );
    Ok((answered, delivered))
}

/// POSTs Service `i` (not its slice: freshness uses ClusterIP Services); when it went out.
fn create_service(api: SocketAddr, i: usize) -> Result<SystemTime> {
    let (path, object) = objects(i).swap_remove(0);
    send(api, "POST", &path, "application/json", &object.to_string())
}

/// Asks skiff-dns for Service `i` once a millisecond until it answers with its address.
fn poll(i: usize) -> Result<SystemTime> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(5)))?;
    let server = SocketAddr::from((SKIFF_DNS, 53));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut id = 0u16;
    while Instant::now() < deadline {
        let sent = Instant::now();
        id = id.wrapping_add(1);
        if let Ok((0, got)) = ask(&socket, server, &fqdn(i), id)
            && got == addresses(i)
        {
            return Ok(SystemTime::now());
        }
        std::thread::sleep(Duration::from_millis(1).saturating_sub(sent.elapsed()));
    }
    bail!("skiff-dns did not answer for {} within 20 s", fqdn(i))
}

/// `kubectl get services --watch-only -o name` in a node: when each name was first printed.
struct Watch {
    child: Child,
    events: mpsc::Receiver<(String, SystemTime)>,
}

impl Watch {
    fn start(run: &Run, node: &Netns, kubeconfig: &Path) -> Result<Self> {
        let mut child = node
            .command(&[
                "kubectl",
                "--kubeconfig",
                &kubeconfig.to_string_lossy(),
                "get",
                "services",
                "-n",
                NAMESPACE,
                "--watch-only",
                "-o",
                "name",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start kubectl get --watch")?;
        // Recorded, so the run's cleanup stops it even if this handle is lost.
        run.record_pid(child.id())?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let at = SystemTime::now();
                let name = line.trim().trim_start_matches("service/").to_owned();
                if seen.insert(name.clone()) && tx.send((name, at)).is_err() {
                    return;
                }
            }
        });
        Ok(Watch { child, events })
    }

    /// When the watch printed Service `name` (warm-ups it printed late are skipped).
    fn seen(&self, name: &str) -> Result<SystemTime> {
        loop {
            let (seen, at) = self
                .events
                .recv_timeout(WAIT)
                .with_context(|| format!("the watch did not print {name}"))?;
            if seen == name {
                return Ok(at);
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
