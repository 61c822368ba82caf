//! cni: what a Pod's network costs, against Debian's reference plugins and the bare underlay.
//!
//! Part one times CNI ADD and DEL one Pod at a time, as a kubelet issues them, for skiff-cni
//! (release build) and for the reference `bridge` + `host-local` (the baseline), each in a node
//! namespace of its own in one topology, over the same Pod namespaces. Both run as the harness
//! runs every plugin, through `ip netns exec` into the node, so both pay that launcher; its own
//! cost (`ip netns exec <node> true`) is printed as the floor under either figure. A few
//! unmeasured ADD/DEL pairs first let each plugin make its one-off state (the bridge, the IPAM
//! folder).
//!
//! Part two is Pod-to-Pod TCP throughput across two nodes with iperf3, Pods wired by skiff-cni,
//! over host-gw and over VXLAN, against node-to-node over the bare underlay.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::cni::{Chain, CniArgs};
use skiff_tests::podnet::PodPlugin;
use skiff_tests::throughput::{ThroughputPath, iperf3_available, pod_to_pod_gbits};
use skiff_tests::{Netns, Topology, TopologyOptions, cmd};

use super::{Figure, percentile};
use crate::shell;

/// Unmeasured ADD/DEL pairs before each plugin's timed run.
const WARMUP: usize = 5;
/// How long each iperf3 run lasts.
const IPERF_TIME: Duration = Duration::from_secs(5);

pub fn run(pods: usize) -> Result<Vec<Figure>> {
    if !shell::is_root() {
        bail!("this benchmark builds network namespaces and needs root");
    }
    ensure!(
        (1..=250).contains(&pods),
        "{pods} Pods do not fit one /24 podCIDR: ask for 1 to 250"
    );
    if !iperf3_available() {
        bail!("iperf3 is missing: run `cargo xtask setup`");
    }
    shell::run(shell::cargo().args(["build", "--locked", "--release", "-p", "skiff-cni"]))?;
    let plugin = shell::root().join("target/release/skiff-cni");

    let mut figures = add_del(&plugin, pods)?;
    let skiff = PodPlugin::Skiff(plugin);
    println!("iperf3, {}s per path", IPERF_TIME.as_secs());
    let underlay = pod_to_pod_gbits(ThroughputPath::Underlay, &skiff, IPERF_TIME)?;
    for (name, path) in [
        ("TCP Pod to Pod, host-gw", ThroughputPath::HostGw),
        ("TCP Pod to Pod, VXLAN", ThroughputPath::Vxlan),
    ] {
        figures.push(Figure {
            name: name.to_owned(),
            unit: "Gbit/s".to_owned(),
            value: pod_to_pod_gbits(path, &skiff, IPERF_TIME)?,
            baseline: Some(underlay),
            note: String::new(),
        });
    }
    Ok(figures)
}

/// ADD then DEL of `pods` Pods by skiff-cni on node1 and by the reference chain on node2.
fn add_del(plugin: &Path, pods: usize) -> Result<Vec<Figure>> {
    let mut options = TopologyOptions::nodes(2, "bench-cni");
    options.log_root = shell::root().join("target/bench/logs");
    let topology = Topology::build(&options)?;
    let run = topology.run();
    let sandboxes: Vec<Netns> = (0..pods)
        .map(|i| Netns::create(&run.id().object(&format!("p{i}"))))
        .collect::<Result<_>>()?;
    let cidr = "10.244.1.0/24".parse()?;
    let skiff = Chain::skiff(plugin, cidr, 1500, &run.scratch_dir("skiff-ipam")?);
    let reference = Chain::reference_bridge(cidr, 1500, &run.scratch_dir("host-local")?);

    println!("ADD and DEL of {pods} Pods, one at a time, per plugin");
    let ours = time_chain(&topology.node(1).netns, &skiff, &sandboxes)?;
    let theirs = time_chain(&topology.node(2).netns, &reference, &sandboxes)?;
    let floor = time_launcher(&topology.node(1).netns, pods)?;

    let figure = |name: &str, ours: &[f64], theirs: &[f64], p: f64| Figure {
        name: format!("{name} p{p}"),
        unit: "ms".to_owned(),
        value: percentile(ours, p),
        baseline: Some(percentile(theirs, p)),
        note: String::new(),
    };
    Ok(vec![
        figure("ADD", &ours.add, &theirs.add, 50.0),
        figure("ADD", &ours.add, &theirs.add, 99.0),
        figure("DEL", &ours.del, &theirs.del, 50.0),
        figure("DEL", &ours.del, &theirs.del, 99.0),
        Figure {
            name: "netns exec floor p50".to_owned(),
            unit: "ms".to_owned(),
            value: percentile(&floor, 50.0),
            baseline: None,
            note: String::new(),
        },
    ])
}

/// Milliseconds per call, sorted.
struct Timings {
    add: Vec<f64>,
    del: Vec<f64>,
}

fn time_chain(node: &Netns, chain: &Chain, sandboxes: &[Netns]) -> Result<Timings> {
    let none = json!({});
    let add = |id: &str, pod: &Netns| chain.add(node, &CniArgs::new("ADD", id, Some(pod)), &none);
    let del = |id: &str, pod: &Netns, result: &Value| {
        chain.del(node, &CniArgs::new("DEL", id, Some(pod)), &none, result)
    };
    for i in 0..WARMUP {
        let id = format!("warmup-{i}");
        let result = add(&id, &sandboxes[0])?;
        del(&id, &sandboxes[0], &result)?;
    }
    let mut timings = Timings {
        add: Vec::with_capacity(sandboxes.len()),
        del: Vec::with_capacity(sandboxes.len()),
    };
    let mut results = Vec::with_capacity(sandboxes.len());
    for (i, pod) in sandboxes.iter().enumerate() {
        let started = Instant::now();
        let result = add(&format!("pod-{i}"), pod).with_context(|| format!("ADD pod-{i}"))?;
        timings.add.push(millis(started));
        results.push(result);
    }
    for (i, (pod, result)) in sandboxes.iter().zip(&results).enumerate() {
        let started = Instant::now();
        del(&format!("pod-{i}"), pod, result).with_context(|| format!("DEL pod-{i}"))?;
        timings.del.push(millis(started));
    }
    timings.add.sort_by(f64::total_cmp);
    timings.del.sort_by(f64::total_cmp);
    Ok(timings)
}

/// What starting a do-nothing program in `node` costs, `count` times, sorted.
fn time_launcher(node: &Netns, count: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        cmd::run(&mut node.command(&["true"]), cmd::CONFIG_TIMEOUT)?;
        times.push(millis(started));
    }
    times.sort_by(f64::total_cmp);
    Ok(times)
}

fn millis(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}
