//! programming-latency: from a Service written to the API to its first answer, on every node.
//!
//! For each data plane, a 3-node netns cluster as `cargo xtask up` makes it (agents hosting the
//! proxy, the test server as a 3-replica Deployment, one client Pod pinned to each node). Each
//! change creates a Service over the Deployment at a ClusterIP chosen ahead, so a poller in
//! every client Pod (a Python loop in the Pod's namespace and cgroup, connecting every
//! millisecond with a 5 ms timeout) can already be knocking when the write goes out; a sample
//! is the time from just before the POST (through `kubectl proxy` on node1) to the poller's
//! first HTTP 200, one per node per change. Changes are spaced past the proxies' 1 s minimum
//! sync interval, as sparse changes in a real cluster are. The eBPF figures are the subject,
//! the iptables ones the baseline. Target: p99 under 100 ms.
//!
//! Scaling is measured too, apart: a Deployment scaled from 0 to 1 replica, from the scale
//! write to the first answer through its Service on every node (one change in five). That
//! figure includes the new Pod's own start — scheduling, the CNI, the process — so the target
//! is not for it; it is what a user waits for after `kubectl scale`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use skiff_tests::{Cluster, ClusterOptions, Netns, Process, Run, wait};

use super::{Figure, percentile};
use crate::shell;

const NODES: usize = 3;
const WAIT: Duration = Duration::from_secs(60);
/// Past the proxies' minimum interval between syncs, so each change is programmed on its own.
const SPACING: Duration = Duration::from_millis(1100);
const PROXY_PORT: u16 = 8001;

/// Connects until an HTTP 200 comes back, for each `ip port` line; prints `polling`, then
/// `ok <unix seconds>` or `timeout`.
const POLLER: &str = r#"
import socket, sys, time
for line in sys.stdin:
    ip, port = line.split()
    print("polling", flush=True)
    deadline = time.time() + 20
    answered = None
    while answered is None and time.time() < deadline:
        s = socket.socket()
        s.settimeout(0.005)
        try:
            s.connect((ip, int(port)))
            s.settimeout(2)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                answered = time.time()
        except OSError:
            time.sleep(0.001)
        finally:
            s.close()
    print("ok %.6f" % answered if answered else "timeout", flush=True)
"#;

/// The samples (ms, sorted) of one data plane.
struct Samples {
    created: Vec<f64>,
    scaled: Vec<f64>,
}

pub fn run(changes: usize) -> Result<Vec<Figure>> {
    if !shell::is_root() {
        bail!("this benchmark builds network namespaces and needs root");
    }
    let iptables = measure("iptables", changes)?;
    let ebpf = measure("ebpf", changes)?;
    let mut figures = Vec::new();
    let kinds = [
        (
            "Service created to answered",
            &ebpf.created,
            &iptables.created,
            "eBPF; baseline: iptables; target p99 < 100 ms",
        ),
        (
            "Deployment scaled 0->1 to answered",
            &ebpf.scaled,
            &iptables.scaled,
            "includes the new Pod's start",
        ),
    ];
    for (what, subject, baseline, note) in kinds {
        for p in [50.0, 90.0, 99.0] {
            figures.push(Figure {
                name: format!("{what} p{p:.0}"),
                unit: "ms".into(),
                value: percentile(subject, p),
                baseline: Some(percentile(baseline, p)),
                note: if p == 99.0 {
                    note.into()
                } else {
                    String::new()
                },
            });
        }
    }
    figures.push(Figure {
        name: "samples per data plane".into(),
        unit: "count".into(),
        value: (ebpf.created.len() + ebpf.scaled.len()) as f64,
        baseline: Some((iptables.created.len() + iptables.scaled.len()) as f64),
        note: format!(
            "{changes} Services and {} scalings x {NODES} nodes",
            scalings(changes)
        ),
    });
    Ok(figures)
}

/// How many scalings go with `changes` Service creations.
fn scalings(changes: usize) -> usize {
    changes.div_ceil(5)
}

/// Every sample for one data plane.
fn measure(mode: &str, changes: usize) -> Result<Samples> {
    eprintln!("programming-latency: {mode}, {changes} Services");
    let cluster = Cluster::start(&ClusterOptions {
        agent_args: vec!["--proxy-mode".into(), mode.into()],
        ..ClusterOptions::nodes(NODES, &format!("bench-prog-{mode}"))
    })?;
    cluster.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=skiff/test-server",
        "--replicas=3",
    ])?;
    cluster.kubectl(&[
        "create",
        "deployment",
        "grow",
        "--image=skiff/test-server",
        "--replicas=0",
    ])?;
    let grow_vip = Ipv4Addr::new(10, 96, 199, 1);
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "grow"},
        "spec": {"clusterIP": grow_vip.to_string(), "selector": {"app": "grow"},
                 "ports": [{"port": 80, "targetPort": 8080}]}
    }))?;
    for k in 1..=NODES {
        cluster.apply(&json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("client{k}")},
            "spec": {"nodeName": format!("node{k}"),
                     "containers": [{"name": "c", "image": "skiff/test-server"}]}
        }))?;
    }
    wait::retry(WAIT, || {
        let pods = cluster.get_json(&["pods"])?;
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .count();
        ensure!(running == 3 + NODES, "{running} Pods running");
        Ok(())
    })?;
    let node1 = cluster.topology().node(1).netns.clone();
    let (_proxy, api) = kubectl_proxy(&cluster, PROXY_PORT)?;
    let mut pollers = (1..=NODES)
        .map(|k| Poller::start(&cluster, &format!("client{k}")))
        .collect::<Result<Vec<_>>>()?;

    let mut samples = Vec::with_capacity(changes * NODES);
    let mut scaled = Vec::new();
    for i in 0..changes {
        let vip = Ipv4Addr::new(10, 96, 200 + (i / 250) as u8, 1 + (i % 250) as u8);
        for poller in &mut pollers {
            poller.aim(vip, 80)?;
        }
        let body = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("prog-{i}")},
            "spec": {"clusterIP": vip.to_string(), "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080}]}
        })
        .to_string();
        let written = node1.run(move || {
            send(
                api,
                "POST",
                "/api/v1/namespaces/default/services",
                "application/json",
                &body,
            )
        })?;
        for (k, poller) in pollers.iter_mut().enumerate() {
            let answered = poller.answered().with_context(|| {
                format!("Service prog-{i} ({vip}) from the client on node{}", k + 1)
            })?;
            let took = answered.duration_since(written).unwrap_or(Duration::ZERO);
            samples.push(took.as_secs_f64() * 1e3);
        }
        std::thread::sleep(SPACING);
        if i % 5 == 4 {
            scaled.extend(scale_up_and_back(&node1, api, &mut pollers, grow_vip)?);
        }
    }
    samples.sort_by(f64::total_cmp);
    scaled.sort_by(f64::total_cmp);
    eprintln!(
        "  {mode}: created p50 {:.1} ms, p99 {:.1} ms over {} samples; scaled p50 {:.1} ms",
        percentile(&samples, 50.0),
        percentile(&samples, 99.0),
        samples.len(),
        percentile(&scaled, 50.0),
    );
    Ok(Samples {
        created: samples,
        scaled,
    })
}

/// Scales `grow` from 0 to 1 and times the first answer on every node; then back to 0, and
/// waits until its slice has no ready endpoint left.
fn scale_up_and_back(
    node1: &Netns,
    api: SocketAddr,
    pollers: &mut [Poller],
    vip: Ipv4Addr,
) -> Result<Vec<f64>> {
    const SCALE: &str = "/apis/apps/v1/namespaces/default/deployments/grow/scale";
    const PATCH: &str = "application/merge-patch+json";
    for poller in pollers.iter_mut() {
        poller.aim(vip, 80)?;
    }
    let written =
        node1.run(move || send(api, "PATCH", SCALE, PATCH, r#"{"spec":{"replicas":1}}"#))?;
    let mut samples = Vec::new();
    for poller in pollers.iter_mut() {
        let answered = poller.answered().context("the scaled Deployment")?;
        let took = answered.duration_since(written).unwrap_or(Duration::ZERO);
        samples.push(took.as_secs_f64() * 1e3);
    }
    node1.run(move || send(api, "PATCH", SCALE, PATCH, r#"{"spec":{"replicas":0}}"#))?;
    wait::retry(WAIT, || {
        let reply = node1.run(move || {
            wait::http_get(
                api,
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices\
                 ?labelSelector=kubernetes.io%2Fservice-name%3Dgrow",
                Duration::from_secs(5),
            )
        })?;
        let ready = reply.body.matches(r#""ready":true"#).count();
        ensure!(ready == 0, "{ready} grow endpoints still ready");
        Ok(())
    })?;
    std::thread::sleep(SPACING);
    Ok(samples)
}

/// `kubectl proxy` on node 1 at `127.0.0.1:<port>` there (plain HTTP to the API, so a bench can
/// time its own requests); its address once it answers.
pub(super) fn kubectl_proxy(cluster: &Cluster, port: u16) -> Result<(Process, SocketAddr)> {
    kubectl_proxy_in(
        cluster.topology().run(),
        &cluster.topology().node(1).netns,
        &cluster.admin_kubeconfig(),
        port,
    )
}

/// `kubectl proxy` with `kubeconfig` in `netns` at `127.0.0.1:<port>` there; its address once
/// it answers.
pub(super) fn kubectl_proxy_in(
    run: &Run,
    netns: &Netns,
    kubeconfig: &Path,
    port: u16,
) -> Result<(Process, SocketAddr)> {
    let proxy = Process::spawn_command(
        run,
        "kubectl-proxy",
        netns.command_keeping_mounts(&[
            "kubectl",
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "proxy",
            &format!("--port={port}"),
        ]),
    )?;
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait::wait_for_http(Some(netns), api, "/version", Duration::from_secs(20))?;
    Ok((proxy, api))
}

/// Sends `body` to `path` at `api`; returns the time just before the request went out.
pub(super) fn send(
    api: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<SystemTime> {
    let mut stream = TcpStream::connect(api)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let written = SystemTime::now();
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let status = reply.lines().next().unwrap_or_default();
    ensure!(
        status.contains(" 200") || status.contains(" 201"),
        "{method} {path}: {status}"
    );
    Ok(written)
}

/// The polling loop in one client Pod.
struct Poller {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Poller {
    fn start(cluster: &Cluster, pod: &str) -> Result<Self> {
        let mut command = cluster
            .pod_client(pod)?
            .command(&["python3", "-u", "-c", POLLER])?;
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the poller")?;
        let input = child.stdin.take().context("no stdin")?;
        let output = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Poller {
            child,
            input,
            output,
        })
    }

    /// Starts knocking at `ip:port`; returns once the loop runs.
    fn aim(&mut self, ip: Ipv4Addr, port: u16) -> Result<()> {
        writeln!(self.input, "{ip} {port}")?;
        ensure!(self.line()? == "polling", "the poller did not start");
        Ok(())
    }

    /// When the target first answered.
    fn answered(&mut self) -> Result<SystemTime> {
        let line = self.line()?;
        let secs: f64 = line
            .strip_prefix("ok ")
            .with_context(|| format!("no answer within 20 s ({line})"))?
            .parse()?;
        Ok(UNIX_EPOCH + Duration::from_secs_f64(secs))
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        ensure!(!line.is_empty(), "the poller ended");
        Ok(line.trim().to_owned())
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
