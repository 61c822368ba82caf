//! From a Service created to its name answered by skiff-dns, against the same Service's event
//! arriving on a plain watch.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use skiff_tests::{Netns, Run, wait};

use super::wire::ask;
use super::{NAMESPACE, SKIFF_DNS, WAIT, addresses, fqdn, headless, name, objects};
use crate::bench::percentile;
use crate::bench::programming::send;

/// Over `count` Services after the first `made`, one at a time: ms from the POST to
/// skiff-dns's first answer, and to the event's arrival on a plain watch (both sorted).
pub(super) fn measure(
    run: &Run,
    node: &Netns,
    api: SocketAddr,
    admin: &Path,
    made: usize,
    count: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let watch = Watch::start(run, node, api, admin)?;
    // Freshness is measured on ClusterIP Services only; the first is a warm-up that shows the
    // watch is open.
    let mut indices = (made..).filter(|&i| !headless(i));
    let warm_up = indices.next().context("no index")?;
    node.run(move || create_service(api, warm_up))?;
    watch.seen(&name(warm_up))?;
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

/// A watch of the namespace's Services from the current revision on: `curl -N` over HTTP/1.1
/// and TLS, as skiff-dns's own client watches, printing each event line as it arrives.
/// (`kubectl get --watch` is no baseline: it prints one event in ten some 40 ms late.)
struct Watch {
    child: Child,
    events: mpsc::Receiver<(String, SystemTime)>,
}

impl Watch {
    fn start(run: &Run, node: &Netns, api: SocketAddr, kubeconfig: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(kubeconfig)?;
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key))
                .with_context(|| format!("no {key:?} in {}", kubeconfig.display()))
        };
        // The token goes in a file, not on a command line.
        let header = run.scratch_dir("dns-bench")?.join("watch-header");
        std::fs::write(
            &header,
            format!("Authorization: Bearer {}", field("token: ")?),
        )?;
        let list = node.run(move || {
            wait::http_get(
                api,
                &format!("/api/v1/namespaces/{NAMESPACE}/services?limit=1"),
                Duration::from_secs(10),
            )
        })?;
        let list: Value = serde_json::from_str(&list.body).context("the Service list")?;
        let revision = list["metadata"]["resourceVersion"]
            .as_str()
            .context("a list without resourceVersion")?;
        let url = format!(
            "{}/api/v1/namespaces/{NAMESPACE}/services?watch=true&resourceVersion={revision}",
            field("server: ")?
        );
        let mut child = node
            .command(&[
                "curl",
                "--silent",
                "--no-buffer",
                "--http1.1",
                "--cacert",
                &kubeconfig.with_file_name("ca.crt").to_string_lossy(),
                "--header",
                &format!("@{}", header.display()),
                &url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start curl")?;
        // Recorded, so the run's cleanup stops it even if this handle is lost.
        run.record_pid(child.id())?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let at = SystemTime::now();
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let name = event["object"]["metadata"]["name"].as_str();
                if event["type"] == "ADDED"
                    && let Some(name) = name
                    && tx.send((name.to_owned(), at)).is_err()
                {
                    return;
                }
            }
        });
        Ok(Watch { child, events })
    }

    /// When the watch delivered Service `name`'s creation.
    fn seen(&self, name: &str) -> Result<SystemTime> {
        let (seen, at) = self
            .events
            .recv_timeout(WAIT)
            .with_context(|| format!("the watch did not deliver {name}"))?;
        ensure!(
            seen == name,
            "the watch delivered {seen}, waiting for {name}"
        );
        Ok(at)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
