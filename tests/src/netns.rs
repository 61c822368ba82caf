//! Named network namespaces: make them, run commands in them, run Rust code in them.
//!
//! Code that must act from inside a namespace (a TCP connect, a UDP exchange) runs on a thread
//! of its own that `setns()`es into it and then ends, so no shared thread — and no tokio worker —
//! is ever left in the wrong namespace.

use std::fs::File;
use std::process::{Command, Output};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use nix::sched::{CloneFlags, setns};

use crate::cmd;
use skiff_common::placement::start_inside;

/// A network namespace: a named one (`/run/netns/<name>`), or one known only by a path (a
/// containerd Pod's, `/proc/<pid>/ns/net`), which `ip -n` cannot address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
    path: std::path::PathBuf,
    named: bool,
}

impl Netns {
    /// Creates the namespace with `lo` up.
    pub fn create(name: &str) -> Result<Self> {
        cmd::ip(&["netns", "add", name])?;
        let ns = Netns::existing(name);
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A handle on a namespace someone else made (e.g. a Pod's, made by the node agent); this
    /// handle does not own it.
    pub fn existing(name: &str) -> Self {
        Netns {
            name: name.to_owned(),
            path: std::path::Path::new("/run/netns").join(name),
            named: true,
        }
    }

    /// A namespace known by a path only (e.g. `/proc/<pid>/ns/net` of a Pod's process).
    pub fn at_path(path: &std::path::Path) -> Self {
        Netns {
            name: path.display().to_string(),
            path: path.to_path_buf(),
            named: false,
        }
    }

    /// The namespace's file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        if !self.named {
            let mut argv = vec!["ip"];
            argv.extend_from_slice(args);
            return cmd::run(&mut self.command_keeping_mounts(&argv), cmd::CONFIG_TIMEOUT);
        }
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        cmd::ip(&full)
    }

    /// Sets a sysctl inside the namespace (`net.*` keys are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec(
            &["sysctl", "-qw", &format!("{key}={value}")],
            cmd::CONFIG_TIMEOUT,
        )
        .map(drop)
    }

    /// A `Command` that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        if !self.named {
            return self.command_keeping_mounts(argv);
        }
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).args(argv);
        command
    }

    /// A `Command` that runs `argv` inside the namespace but, unlike `ip netns exec`, in the
    /// host's mount namespace: what it mounts (a Pod's named netns under /run/netns) is seen by
    /// everyone, as on a real node.
    pub fn command_keeping_mounts(&self, argv: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.path.display()))
            .arg("--")
            .args(argv);
        command
    }

    /// A `Command` that runs `argv` inside the namespace *and* inside `cgroup` (v2), in the
    /// host's mount namespace — how `kubectl exec` places a process in a Pod. The eBPF proxy's
    /// socket programs see only processes in a node's cgroup, so a client standing for a Pod
    /// must be one.
    pub fn command_in_cgroup(&self, cgroup: &std::path::Path, argv: &[&str]) -> Result<Command> {
        let (program, rest) = argv.split_first().context("an empty command")?;
        let mut command = Command::new(program);
        command.args(rest);
        start_inside(&mut command, Some(&self.path), Some(cgroup))?;
        Ok(command)
    }

    /// Runs `argv` inside the namespace within `timeout`; fails unless it exits 0.
    pub fn exec(&self, argv: &[&str], timeout: Duration) -> Result<String> {
        cmd::run(&mut self.command(argv), timeout)
    }

    /// Runs `argv` inside the namespace within `timeout`, whatever its exit status.
    pub fn output(&self, argv: &[&str], timeout: Duration) -> Result<Output> {
        cmd::output(&mut self.command(argv), timeout)
    }

    /// Runs `f` on a fresh thread that has entered this namespace; returns what `f` returns.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T> + Send + 'static,
    {
        let path = self.path.clone();
        thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                let file =
                    File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
                setns(&file, CloneFlags::CLONE_NEWNET).with_context(|| {
                    format!("cannot enter network namespace {}", path.display())
                })?;
                f()
            })
            .context("cannot start a namespace thread")?
            .join()
            .map_err(|_| anyhow!("the thread in namespace {} panicked", self.name))?
    }
}
