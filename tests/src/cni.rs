//! Running CNI plugins the way a container runtime does (libcni's job, cut to what tests need).
//!
//! A plugin runs inside the *node's* namespace (`ip netns exec`), never the host's, with the
//! `CNI_*` variables and the config on stdin; its stdout is the result or error object. A
//! [`Chain`] runs a conflist: each plugin gets the network's name and version, its share of
//! `runtimeConfig` (by `capabilities`), and the previous plugin's result as `prevResult`; DEL
//! runs the chain backwards, as the spec orders.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::{Netns, cmd};

/// How long one plugin run may take.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// The `CNI_*` variables of one call.
#[derive(Clone, Debug)]
pub struct CniArgs {
    /// `CNI_COMMAND`.
    pub command: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (a path), if any.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
}

impl CniArgs {
    /// `command` for `container_id`'s `eth0` in `pod`.
    pub fn new(command: &str, container_id: &str, pod: Option<&Netns>) -> Self {
        CniArgs {
            command: command.to_owned(),
            container_id: container_id.to_owned(),
            netns: pod.map(netns_path),
            ifname: "eth0".to_owned(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CNI_COMMAND", self.command.clone()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_PATH", "/usr/lib/cni:/opt/cni/bin".to_owned()),
        ];
        if let Some(netns) = &self.netns {
            env.push(("CNI_NETNS", netns.to_string_lossy().into_owned()));
        }
        env
    }
}

/// The path runtimes pass as `CNI_NETNS` for a named namespace.
pub fn netns_path(ns: &Netns) -> PathBuf {
    Path::new("/run/netns").join(ns.name())
}

/// What one plugin run printed and how it ended.
#[derive(Clone, Debug)]
pub struct PluginOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout as JSON (`Null` when it printed nothing).
    pub stdout: Value,
    /// Its stderr.
    pub stderr: String,
}

impl PluginOutput {
    /// The result, or an error naming what the plugin said.
    pub fn success(self) -> Result<Value> {
        if !self.status.success() {
            bail!(
                "plugin failed ({}): {} {}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self.stdout)
    }

    /// The error code of a failed run; fails if the run succeeded.
    pub fn error_code(&self) -> Result<u64> {
        if self.status.success() {
            bail!("expected the plugin to fail; it printed {}", self.stdout);
        }
        self.stdout["code"]
            .as_u64()
            .with_context(|| format!("no error code in {} ({})", self.stdout, self.stderr))
    }
}

/// Starts `plugin` in `node` with `args` and `config` on stdin; the caller waits or kills.
pub fn spawn(plugin: &Path, node: &Netns, args: &CniArgs, config: &Value) -> Result<Child> {
    let mut command = plugin_command(plugin, node, args);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    // A plugin killed before reading its stdin closes the pipe; that is the caller's experiment.
    let _ = stdin.write_all(config.to_string().as_bytes());
    Ok(child)
}

fn plugin_command(plugin: &Path, node: &Netns, args: &CniArgs) -> Command {
    let mut command = node.command(&[&plugin.to_string_lossy()]);
    command
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    command.envs(args.env());
    command
}

/// Runs `plugin` in `node` to completion (bounded) and returns what it printed.
pub fn invoke(plugin: &Path, node: &Netns, args: &CniArgs, config: &Value) -> Result<PluginOutput> {
    let mut command = plugin_command(plugin, node, args);
    let line = cmd::describe(&command);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    child
        .stdin
        .take()
        .context("no stdin pipe")?
        .write_all(config.to_string().as_bytes())?;
    finish(child, PLUGIN_TIMEOUT).with_context(|| format!("`{line}` ({})", args.command))
}

/// Waits (bounded) for a spawned plugin and collects its output.
pub fn finish(mut child: Child, timeout: Duration) -> Result<PluginOutput> {
    use std::io::Read;
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(pipe) = stdout_pipe.as_mut() {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = String::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_string(&mut buf);
        }
        buf
    });
    let status = cmd::wait_bounded(&mut child, timeout)?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let stdout = if stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&stdout).with_context(|| {
            format!(
                "plugin stdout is not JSON: {}",
                String::from_utf8_lossy(&stdout)
            )
        })?
    };
    Ok(PluginOutput {
        status,
        stdout,
        stderr,
    })
}

/// A conflist: plugins run in order, each config completed as libcni completes it.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The network's name.
    pub name: String,
    /// The conflist's `cniVersion`.
    pub version: String,
    /// (binary, that plugin's config) in order.
    pub plugins: Vec<(PathBuf, Value)>,
}

impl Chain {
    fn config(&self, plugin: &Value, runtime_config: &Value, prev: Option<&Value>) -> Value {
        let mut config = plugin.clone();
        config["name"] = json!(self.name);
        config["cniVersion"] = json!(self.version);
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let wanted: Map<String, Value> = caps
                .iter()
                .filter(|(_, on)| on.as_bool() == Some(true))
                .filter_map(|(cap, _)| Some((cap.clone(), runtime_config.get(cap)?.clone())))
                .collect();
            config["runtimeConfig"] = Value::Object(wanted);
        }
        if let Some(prev) = prev {
            config["prevResult"] = prev.clone();
        }
        config
    }

    /// ADD through the chain; returns the last plugin's result.
    pub fn add(&self, node: &Netns, args: &CniArgs, runtime_config: &Value) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for (binary, plugin) in &self.plugins {
            let config = self.config(plugin, runtime_config, prev.as_ref());
            let result = invoke(binary, node, args, &config)?
                .success()
                .with_context(|| format!("ADD by {}", binary.display()))?;
            prev = Some(result);
        }
        prev.context("an empty chain")
    }

    /// DEL through the chain, last plugin first, each given the ADD's final result.
    pub fn del(
        &self,
        node: &Netns,
        args: &CniArgs,
        runtime_config: &Value,
        result: &Value,
    ) -> Result<()> {
        for (binary, plugin) in self.plugins.iter().rev() {
            let config = self.config(plugin, runtime_config, Some(result));
            invoke(binary, node, args, &config)?
                .success()
                .with_context(|| format!("DEL by {}", binary.display()))?;
        }
        Ok(())
    }
}
