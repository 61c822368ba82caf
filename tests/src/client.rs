//! Clients that stand where a user's process would: inside a Pod, or outside the cluster.
//!
//! Every request is a `curl` process placed in the client's network namespace and, for a Pod,
//! its cgroup (as `kubectl exec` places one) — the eBPF proxy's socket programs only see
//! processes in their node's cgroup, so a client standing for a Pod must be one. Answers are
//! about *who* answered (the test server's body is "POD_NAME CLIENT_IP"), never a bare connect.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};

use crate::{Netns, cmd};

/// Where requests come from: a process inside a Pod (its namespace and cgroup, as
/// `kubectl exec` places one — the eBPF proxy only sees processes in its node's cgroup), or
/// one in a namespace outside the cluster. Every request is a `curl` process there.
#[derive(Clone, Debug)]
pub struct Client {
    /// The namespace.
    pub netns: Netns,
    /// The cgroup (a Pod's), if any.
    pub cgroup: Option<PathBuf>,
    /// How a Pod's own files are seen (its resolv.conf and /etc/hosts), if this is a Pod.
    pub view: Option<PodView>,
}

/// How a client in a Pod sees the Pod's files while running the node's programs (curl, dig,
/// getent), so that names resolve as they do for the Pod.
#[derive(Clone, Debug)]
pub enum PodView {
    /// The process runtime's Pod: its mount namespace (pinned), which covers the node's files.
    MountNamespace(PathBuf),
    /// A container: copies of its resolv.conf and hosts file (on the node, in the run's scratch
    /// folder), bound over the node's in a private mount namespace of the command's own (the
    /// container's filesystem lacks the node's programs, and a bind from a path inside another
    /// mount namespace, /proc/PID/root/..., does not show).
    Files {
        /// A copy of the container's resolv.conf.
        resolv_conf: PathBuf,
        /// A copy of the container's hosts file.
        hosts: PathBuf,
    },
}

impl Client {
    /// A command that runs `argv` where this client is.
    pub fn command(&self, argv: &[&str]) -> Result<std::process::Command> {
        let wrapped: Vec<String>;
        let argv = match &self.view {
            Some(PodView::Files { resolv_conf, hosts }) => {
                wrapped = [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-c",
                    r#"mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && shift 2 && exec "$@""#,
                    "sh",
                ]
                .into_iter()
                .map(str::to_owned)
                .chain([resolv_conf, hosts].map(|p| p.to_string_lossy().into_owned()))
                .chain(argv.iter().map(|a| (*a).to_owned()))
                .collect();
                wrapped.iter().map(String::as_str).collect()
            }
            _ => argv.to_vec(),
        };
        match (&self.cgroup, &self.view) {
            (cgroup, Some(PodView::MountNamespace(mntns))) => {
                let (program, rest) = argv.split_first().context("an empty command")?;
                let mut command = std::process::Command::new(program);
                command.args(rest);
                skiff_common::placement::start_placed(
                    &mut command,
                    &skiff_common::placement::Placement {
                        netns: Some(self.netns.path()),
                        mntns: Some(mntns),
                        cgroup: cgroup.as_deref(),
                        utsns: None,
                    },
                )?;
                Ok(command)
            }
            (Some(cgroup), _) => self.netns.command_in_cgroup(cgroup, &argv),
            (None, _) => Ok(self.netns.command_keeping_mounts(&argv)),
        }
    }

    /// `GET /` to `addr`: the name of the server that answered and the client address it saw
    /// (its body is "POD_NAME CLIENT_IP").
    pub fn who(&self, addr: SocketAddr) -> Result<(String, String)> {
        self.who_url(&format!("http://{addr}/"))
    }

    /// `GET url` (a Service's name, say): who answered and the client address it saw.
    pub fn who_url(&self, url: &str) -> Result<(String, String)> {
        let out = cmd::output(
            &mut self.command(&["curl", "-sS", "-m", "2", "-w", "\n%{http_code}", url])?,
            Duration::from_secs(5),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let (body, status) = text.rsplit_once('\n').context("no status line")?;
        ensure!(status.trim() == "200", "status {status} from {url}");
        let mut words = body.split_whitespace();
        let name = words.next().context("empty body")?.to_owned();
        let client = words.next().unwrap_or_default().to_owned();
        Ok((name, client))
    }

    /// Connects to `addr` over TCP; `Ok(took)` when it was refused, an error otherwise.
    pub fn refused(&self, addr: SocketAddr) -> Result<Duration> {
        let url = format!("http://{addr}/");
        let started = Instant::now();
        let out = cmd::output(
            &mut self.command(&["curl", "-sSv", "-m", "3", &url])?,
            Duration::from_secs(6),
        )?;
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(7) && stderr.contains("Connection refused"),
            "not refused: {:?} {}",
            out.status.code(),
            stderr.lines().last().unwrap_or_default()
        );
        Ok(took)
    }

    /// Asks `addr` every 20 ms from a thread of its own while `action` runs, from half a second
    /// before it until 3 s after (a restarted proxy's first sync included); returns how many
    /// requests were answered and the failures.
    pub fn ask_while(
        &self,
        addr: SocketAddr,
        action: impl FnOnce() -> Result<()>,
    ) -> Result<(usize, Vec<String>)> {
        let client = self.clone();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let requests = std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(120);
            while stop_rx.try_recv().is_err() && Instant::now() < deadline {
                match client.who(addr) {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:#}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed)
        });
        std::thread::sleep(Duration::from_millis(500));
        let acted = action();
        std::thread::sleep(Duration::from_secs(3));
        let _ = stop_tx.send(());
        let outcome = requests
            .join()
            .map_err(|_| anyhow::anyhow!("the request loop panicked"))?;
        acted?;
        Ok(outcome)
    }
}
