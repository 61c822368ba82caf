//! underlay-http: what the netns underlay costs a request.
//!
//! The test server runs on node1. The subject is a client on node2 sending sequential HTTP
//! requests (a new connection each, as a Service client would) across veth → bridge → veth; the
//! baseline is the same client on node1 talking to the server over loopback. Their ratio is the
//! price of the underlay itself, against which later data-plane benchmarks can be read.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use skiff_tests::{Netns, Topology, TopologyOptions, wait};

use super::Figure;
use crate::shell;

const PORT: u16 = 8080;
/// No measurement runs longer than this, whatever the count.
const TIME_BOUND: Duration = Duration::from_secs(60);

pub fn run(requests: usize) -> Result<Vec<Figure>> {
    if !shell::is_root() {
        bail!("this benchmark builds network namespaces and needs root");
    }
    shell::run(shell::cargo().args([
        "build",
        "--locked",
        "--release",
        "-p",
        "skiff-tests",
        "--bins",
    ]))?;
    let server = shell::root().join("target/release/skiff-test-server");
    let mut options = TopologyOptions::nodes(2, "bench-underlay-http");
    options.log_root = shell::root().join("target/bench/logs");
    let topology = Topology::build(&options)?;
    let node1 = topology.node(1);
    let _server = topology.spawn(
        &node1.netns,
        "server",
        &[&server.to_string_lossy(), "--http-port", &PORT.to_string()],
        &[("POD_NAME", "bench-server")],
    )?;
    let target = SocketAddr::from((node1.ip, PORT));
    wait::wait_for_http(
        Some(&node1.netns),
        target,
        "/healthz",
        Duration::from_secs(10),
    )?;

    let warmup = requests / 10;
    let subject = measure(&topology.node(2).netns, target, requests, warmup)?;
    let baseline = measure(
        &node1.netns,
        SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)),
        requests,
        warmup,
    )?;
    let figure = |name: &str, unit: &str, f: fn(&Stats) -> f64| Figure {
        name: name.to_owned(),
        unit: unit.to_owned(),
        value: f(&subject),
        baseline: Some(f(&baseline)),
        note: String::new(),
    };
    Ok(vec![
        figure("latency p50", "us", |s| s.percentile(50.0)),
        figure("latency p99", "us", |s| s.percentile(99.0)),
        figure("throughput", "req/s", |s| s.rate),
        figure("requests", "count", |s| s.latencies_us.len() as f64),
    ])
}

struct Stats {
    latencies_us: Vec<f64>,
    rate: f64,
}

impl Stats {
    fn percentile(&self, p: f64) -> f64 {
        super::percentile(&self.latencies_us, p)
    }
}

/// Sequential GETs from inside `from`; every reply must come from the benchmark server.
fn measure(from: &Netns, target: SocketAddr, requests: usize, warmup: usize) -> Result<Stats> {
    from.run(move || {
        for _ in 0..warmup {
            wait::http_get(target, "/hostname", Duration::from_secs(2))?;
        }
        let mut latencies_us = Vec::with_capacity(requests);
        let started = Instant::now();
        while latencies_us.len() < requests && started.elapsed() < TIME_BOUND {
            let t = Instant::now();
            let reply = wait::http_get(target, "/hostname", Duration::from_secs(2))?;
            latencies_us.push(t.elapsed().as_secs_f64() * 1e6);
            ensure!(
                reply.body.trim() == "bench-server",
                "unexpected answer {:?}",
                reply.body
            );
        }
        ensure!(!latencies_us.is_empty(), "no request completed");
        let rate = latencies_us.len() as f64 / started.elapsed().as_secs_f64();
        latencies_us.sort_by(f64::total_cmp);
        Ok(Stats { latencies_us, rate })
    })
}
