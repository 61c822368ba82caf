//! `cargo xtask bench proxy-iptables`: skiff's iptables ruleset against a kube-proxy-shaped one.
//!
//! In a scratch network namespace, for 1k, 5k and 10k ClusterIP Services × 10 endpoints:
//! the time of a full sync and of one endpoint change, and the rule and chain counts. The
//! subject is skiff's data plane as it runs (render + `iptables-restore`, partial after the
//! first sync). The baseline is the ruleset kube-proxy's iptables mode writes for the same
//! Services (`KUBE-SERVICES` → `KUBE-SVC-*` → one `KUBE-SEP-*` chain per endpoint, statistic
//! random), applied with the same `iptables-restore`. Both clocks include making the text:
//! skiff's render and diff, the baseline's generation of its restore text. A baseline restore
//! that runs longer than `SKIFF_BENCH_BASELINE_TIMEOUT_S` (default 300) is killed and reported
//! as "did not finish within N s" (kube-proxy's ruleset at 10k Services takes far longer), so
//! every size yields skiff's figures. Prints the figures as one JSON array on its last line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::json;
use skiff_proxy::Dataplane;
use skiff_proxy::conntrack::FakeConntrack;
use skiff_proxy::iptables::{Iptables, IptablesDataplane, RealIptables, RenderOptions, Table};
use skiff_proxy::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};
use skiff_tests::{Netns, Run};

/// Service counts measured; `SKIFF_BENCH_SIZES=1000,5000` overrides.
const SIZES: [usize; 3] = [1_000, 5_000, 10_000];
const ENDPOINTS: usize = 10;
/// The address that replaces Service 0's first endpoint.
const CHANGED: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);

fn service_ip(i: usize) -> Ipv4Addr {
    // Spread over 10.96.0.0/16 the way an allocator's random picks would be.
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + ((i * 7919) % 65_521) as u32 + 1)
}

fn endpoint_ip(i: usize, e: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + (i * ENDPOINTS + e) as u32 + 2)
}

fn desired(n: usize, shift: usize) -> DesiredState {
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
        // `shift` replaces the first endpoint of Service 0: one endpoint change.
        let endpoints = (0..ENDPOINTS)
            .map(|e| EndpointAddr {
                ip: if i == 0 && e == 0 && shift > 0 {
                    CHANGED
                } else {
                    endpoint_ip(i, e)
                },
                port: 8080,
                local: false,
            })
            .collect::<Vec<_>>();
        state.services.insert(
            ServicePortName::new("bench", &format!("svc{i}"), "http", Protocol::Tcp),
            DesiredService {
                port: ServicePort {
                    cluster_ips: vec![service_ip(i)],
                    port: 80,
                    ..ServicePort::default()
                },
                internal_endpoints: endpoints,
                external_endpoints: Vec::new(),
                has_endpoints: true,
                local_ready: 0,
            },
        );
    }
    state
}

fn sep(i: usize, e: usize, shift: usize) -> String {
    format!("KUBE-SEP-{i:07}{e:02}{shift:03}")
}

fn kube_svc_chain(out: &mut String, i: usize, shift: usize) {
    let svc = format!("KUBE-SVC-{i:09}");
    let ip = service_ip(i);
    let _ = writeln!(
        out,
        "-A {svc} ! -s 10.244.0.0/16 -d {ip}/32 -p tcp -m comment --comment \"bench/svc{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ"
    );
    for e in 0..ENDPOINTS {
        let s = if i == 0 && e == 0 { shift } else { 0 };
        let stat = if e + 1 < ENDPOINTS {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (ENDPOINTS - e) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "-A {svc} -m comment --comment \"bench/svc{i}:http -> endpoint\"{stat} -j {}",
            sep(i, e, s)
        );
    }
}

fn kube_sep_chain(out: &mut String, i: usize, e: usize, shift: usize) {
    let name = sep(i, e, shift);
    let ip = if i == 0 && e == 0 && shift > 0 {
        CHANGED
    } else {
        endpoint_ip(i, e)
    };
    let _ = writeln!(
        out,
        "-A {name} -s {ip}/32 -m comment --comment \"bench/svc{i}:http\" -j KUBE-MARK-MASQ"
    );
    let _ = writeln!(
        out,
        "-A {name} -p tcp -m comment --comment \"bench/svc{i}:http\" -m tcp -j DNAT --to-destination {ip}:8080"
    );
}

/// kube-proxy's full nat ruleset for `n` Services.
fn kube_full(n: usize) -> (String, usize) {
    let mut decl = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::from(
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n-A KUBE-POSTROUTING -j MASQUERADE --random-fully\n",
    );
    for i in 0..n {
        let _ = writeln!(decl, ":KUBE-SVC-{i:09} - [0:0]");
        for e in 0..ENDPOINTS {
            let _ = writeln!(decl, ":{} - [0:0]", sep(i, e, 0));
        }
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"bench/svc{i}:http cluster IP\" -m tcp --dport 80 -j KUBE-SVC-{i:09}",
            service_ip(i)
        );
        kube_svc_chain(&mut rules, i, 0);
        for e in 0..ENDPOINTS {
            kube_sep_chain(&mut rules, i, e, 0);
        }
    }
    let count = rules.lines().count();
    (decl + &rules + "COMMIT\n", count)
}

/// kube-proxy's partial sync for one replaced endpoint of Service 0.
fn kube_one_change() -> String {
    let mut out = String::from("*nat\n:KUBE-SVC-000000000 - [0:0]\n");
    let _ = writeln!(out, ":{} - [0:0]", sep(0, 0, 1));
    let _ = writeln!(out, ":{} - [0:0]", sep(0, 0, 0));
    kube_svc_chain(&mut out, 0, 1);
    kube_sep_chain(&mut out, 0, 0, 1);
    let _ = writeln!(out, "-X {}", sep(0, 0, 0));
    out.push_str("COMMIT\n");
    out
}

fn flush_all(iptables: &RealIptables) -> Result<()> {
    for table in Table::ALL {
        let save = iptables.save(table)?;
        let mut text = format!("*{}\n", table.as_str());
        for line in save.lines().filter(|l| l.starts_with(':')) {
            let name = line[1..].split_whitespace().next().unwrap_or_default();
            if name.starts_with("KUBE-") || name.starts_with("SKIFF-") {
                let _ = writeln!(text, ":{name} - [0:0]");
            }
        }
        for line in save.lines().filter(|l| l.starts_with(':')) {
            let name = line[1..].split_whitespace().next().unwrap_or_default();
            if name.starts_with("KUBE-") || name.starts_with("SKIFF-") {
                let _ = writeln!(text, "-X {name}");
            }
        }
        text.push_str("COMMIT\n");
        iptables.restore(table, &text)?;
    }
    Ok(())
}

/// Applies `text` to nat with `iptables-restore --noflush`, killing it after `limit`;
/// `false` when it did not finish.
fn restore_within(text: String, limit: Duration) -> Result<bool> {
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    // The text is larger than a pipe: write it while the clock watches.
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = writer.join();
    let Some(status) = status else {
        return Ok(false);
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
        }
        anyhow::bail!("iptables-restore failed ({status}): {stderr}");
    }
    Ok(true)
}

/// A baseline figure: its time, or why there is none.
fn baseline(time: Option<Duration>, limit: Duration, why: &str) -> (serde_json::Value, String) {
    match time {
        Some(time) => (json!(ms(time)), String::new()),
        None => (
            serde_json::Value::Null,
            format!("{why} within {} s", limit.as_secs()),
        ),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure() -> Result<Vec<serde_json::Value>> {
    let iptables = RealIptables::new();
    let mut figures = Vec::new();
    let sizes: Vec<usize> = match std::env::var("SKIFF_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .context("SKIFF_BENCH_SIZES is a list of counts")
            })
            .collect::<Result<_>>()?,
        Err(_) => SIZES.to_vec(),
    };
    let limit = Duration::from_secs(match std::env::var("SKIFF_BENCH_BASELINE_TIMEOUT_S") {
        Ok(secs) => secs
            .parse()
            .context("SKIFF_BENCH_BASELINE_TIMEOUT_S is a number of seconds")?,
        Err(_) => 300,
    });
    for n in sizes {
        eprintln!("proxy-iptables: {n} Services x {ENDPOINTS} endpoints");
        flush_all(&iptables)?;
        // The baseline's clocks include generating its text, as skiff's include rendering.
        let started = Instant::now();
        let (kube_text, kube_rules) = kube_full(n);
        let kube_full_time = restore_within(kube_text, limit)
            .context("kube-proxy-shaped full sync")?
            .then(|| started.elapsed());
        let kube_change_time = match kube_full_time {
            Some(_) => {
                let started = Instant::now();
                let change = kube_one_change();
                restore_within(change, limit)
                    .context("kube-proxy-shaped partial sync")?
                    .then(|| started.elapsed())
            }
            None => None,
        };
        flush_all(&iptables)?;
        let (kube_full_time, full_note) = baseline(kube_full_time, limit, "did not finish");
        let (kube_change_time, change_note) = baseline(
            kube_change_time,
            limit,
            "no full ruleset to change: it did not finish",
        );

        let mut plane = IptablesDataplane::new(
            iptables.clone(),
            FakeConntrack::default(),
            RenderOptions::default(),
        );
        let state = desired(n, 0);
        let started = Instant::now();
        let report = plane.sync(&state)?;
        let full_time = started.elapsed();
        ensure!(report.full, "the first sync was not full");
        let changed = desired(n, 1);
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
        for figure in &figures[figures.len() - 4..] {
            eprintln!("  {figure}");
        }
        plane.cleanup()?;
    }
    flush_all(&iptables)?;
    Ok(figures)
}

fn main() -> Result<()> {
    let run = Run::start("bench-proxy-iptables", &std::env::temp_dir())?;
    let netns = Netns::create(&run.id().object("bench"))?;
    let figures = netns.run(measure)?;
    drop(run);
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
