//! pod-startup: from a Pod created in the API to the node agent reporting it Running, with its
//! image already on the node — containerd (real containers over CRI) against the process
//! runtime, each on a one-node netns cluster of its own, in the same run.
//!
//! Pods are created one at a time through `kubectl proxy` on the node; a sample is the time
//! from just before the POST to the watch event that first shows the Pod `Running` (a watch
//! held open the whole run, so no polling interval hides in the figure). The image is pulled by
//! a warm-up Pod first and the Pods say `IfNotPresent`, so no pull is timed (the Kubernetes
//! SLO, 5 s p99, excludes pulls too). The share spent in CNI ADD comes from a wrapper the
//! nodes run in place of skiff-cni that stamps each call's start and end (two `date`
//! processes, about a millisecond, are inside the figures). Target: p99 under 1 s with
//! containerd.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::images::TEST_SERVER_IMAGE;
use skiff_tests::objects::has_condition;
use skiff_tests::{Cluster, ClusterOptions, Runtime, wait};

use super::programming::{kubectl_proxy, send};
use super::{Figure, percentile};
use crate::shell;

const WAIT: Duration = Duration::from_secs(60);
const PROXY_PORT: u16 = 8002;
const LABEL: &str = "bench=startup";

/// One runtime's samples, in ms, sorted.
struct Samples {
    startup: Vec<f64>,
    cni_add: Vec<f64>,
}

pub fn run(pods: usize) -> Result<Vec<Figure>> {
    if !shell::is_root() {
        bail!("this benchmark builds network namespaces and needs root");
    }
    let containerd = measure(Runtime::Containerd, pods)?;
    let process = measure(Runtime::Process, pods)?;
    let mut figures = Vec::new();
    for p in [50.0, 90.0, 99.0] {
        figures.push(Figure {
            name: format!("Pod created to Running p{p:.0}"),
            unit: "ms".into(),
            value: percentile(&containerd.startup, p),
            baseline: Some(percentile(&process.startup, p)),
            note: if p == 99.0 {
                "containerd; baseline: the process runtime; target p99 < 1000 ms".into()
            } else {
                String::new()
            },
        });
    }
    for p in [50.0, 99.0] {
        figures.push(Figure {
            name: format!("CNI ADD p{p:.0}"),
            unit: "ms".into(),
            value: percentile(&containerd.cni_add, p),
            baseline: Some(percentile(&process.cni_add, p)),
            note: String::new(),
        });
    }
    let share = |s: &Samples| {
        100.0 * s.cni_add.iter().sum::<f64>() / s.startup.iter().sum::<f64>().max(f64::EPSILON)
    };
    figures.push(Figure {
        name: "share of startup spent in CNI ADD".into(),
        unit: "%".into(),
        value: share(&containerd),
        baseline: Some(share(&process)),
        note: format!("{pods} Pods per runtime, one at a time"),
    });
    Ok(figures)
}

/// A wrapper in `dir` named skiff-cni that runs `real` and appends
/// `<command> <start ns> <end ns> <CNI_ARGS>` to `dir/timings`.
fn timing_wrapper(dir: &Path, real: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let script = format!(
        "#!/bin/sh\nstart=$(date +%s%N)\n{real} \"$@\"\nrc=$?\n\
         echo \"$CNI_COMMAND $start $(date +%s%N) $CNI_ARGS\" >> {timings}\nexit $rc\n",
        real = real.display(),
        timings = dir.join("timings").display(),
    );
    let path = dir.join("skiff-cni");
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// ADD durations (ms) by Pod name, from the wrapper's timings.
fn cni_adds(timings: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(timings)
        .with_context(|| format!("cannot read {}", timings.display()))?;
    let mut adds = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.splitn(4, ' ');
        let (Some("ADD"), Some(start), Some(end), Some(args)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (start, end): (f64, f64) = (start.parse()?, end.parse()?);
        if let Some(pod) = args
            .split(';')
            .find_map(|kv| kv.strip_prefix("K8S_POD_NAME="))
        {
            adds.insert(pod.to_owned(), (end - start) / 1e6);
        }
    }
    Ok(adds)
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"bench": "startup"}},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [
               {"name": "c", "image": TEST_SERVER_IMAGE, "imagePullPolicy": "IfNotPresent"}]}})
}

/// Opens a watch of the bench's Pods from inside `node1` and reports, once per Pod, when a
/// watch event first showed it Running.
fn watch_running(
    node1: &skiff_tests::Netns,
    api: SocketAddr,
) -> Result<mpsc::Receiver<(String, SystemTime)>> {
    let mut stream = node1.run(move || Ok(TcpStream::connect(api)?))?;
    let request = format!(
        "GET /api/v1/namespaces/default/pods?watch=true&labelSelector=bench%3Dstartup \
         HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        // Chunked: event lines are JSON objects; chunk sizes and headers are skipped.
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let now = SystemTime::now();
            let Ok(event) = serde_json::from_str::<Value>(line.trim()) else {
                continue;
            };
            let object = &event["object"];
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            if object["status"]["phase"] == "Running"
                && seen.insert(name.to_owned())
                && tx.send((name.to_owned(), now)).is_err()
            {
                return;
            }
        }
    });
    Ok(rx)
}

fn measure(runtime: Runtime, pods: usize) -> Result<Samples> {
    let label = match runtime {
        Runtime::Containerd => "bench-start-ctrd",
        Runtime::Process => "bench-start-proc",
    };
    eprintln!("pod-startup: {label}, {pods} Pods");
    let wrapper = shell::root().join("target/bench").join(label);
    let _ = std::fs::remove_dir_all(&wrapper);
    timing_wrapper(&wrapper, &skiff_tests::binaries::skiff_cni()?)?;
    let cluster = Cluster::start(&ClusterOptions {
        runtime,
        skiff_cni_dir: Some(wrapper.clone()),
        ..ClusterOptions::nodes(1, label)
    })?;
    let node1 = cluster.topology().node(1).netns.clone();
    let (_proxy, api) = kubectl_proxy(&cluster, PROXY_PORT)?;
    wait::retry(WAIT, || {
        let nodes = cluster.get_json(&["nodes"])?;
        let ready = has_condition(&nodes["items"][0], "Ready");
        ensure!(ready, "the node is not ready");
        Ok(())
    })?;
    let running = watch_running(&node1, api)?;
    // Warm-up: the image (and containerd's sandbox image) is pulled here, not timed.
    let create = |name: &str| -> Result<SystemTime> {
        let body = pod(name).to_string();
        node1.run(move || {
            send(
                api,
                "POST",
                "/api/v1/namespaces/default/pods",
                "application/json",
                &body,
            )
        })
    };
    create("warm-up")?;
    running
        .recv_timeout(WAIT)
        .context("the warm-up Pod did not run")?;
    let mut startup = Vec::with_capacity(pods);
    for i in 0..pods {
        let name = format!("startup-{i}");
        let created = create(&name)?;
        let (seen, at) = running
            .recv_timeout(WAIT)
            .with_context(|| format!("{name} did not run"))?;
        ensure!(seen == name, "{seen} ran, waiting for {name}");
        startup.push(at.duration_since(created).unwrap_or_default().as_secs_f64() * 1e3);
    }
    let adds = cni_adds(&wrapper.join("timings"))?;
    let mut cni_add: Vec<f64> = (0..pods)
        .filter_map(|i| adds.get(&format!("startup-{i}")).copied())
        .collect();
    ensure!(
        cni_add.len() == pods,
        "CNI ADD timed for {} of {pods} Pods",
        cni_add.len()
    );
    cluster.kubectl(&["delete", "pods", "-l", LABEL, "--wait=false"])?;
    startup.sort_by(f64::total_cmp);
    cni_add.sort_by(f64::total_cmp);
    eprintln!(
        "  {label}: p50 {:.1} ms, p99 {:.1} ms; CNI ADD p50 {:.1} ms",
        percentile(&startup, 50.0),
        percentile(&startup, 99.0),
        percentile(&cni_add, 50.0)
    );
    Ok(Samples { startup, cni_add })
}
