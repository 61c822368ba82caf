//! Running CNI plugins the way a container runtime does (libcni's job, cut to what tests need),
//! and Pods wired by them.
//!
//! A plugin runs inside the *node's* namespace (`ip netns exec`), never the host's, with the
//! `CNI_*` variables and the config on stdin; its stdout is the result or error object. One
//! plugin run is [`invoke`] (or [`spawn`] + [`finish`], for tests that kill it half way). A
//! [`Chain`] runs a conflist, each plugin's configuration completed and the chain ordered as
//! skiff-node completes and orders it ([`skiff_cni::conflist`]). [`add_pod`] makes a Pod: a namespace of the
//! run's, wired by a chain, with its address read from the result.
//!
//! Two chains are ready-made: [`Chain::skiff`] (our plugin alone, routed /32 veths) and
//! [`Chain::reference_bridge`] (Debian's reference `bridge` + `host-local`), the yardstick the
//! benchmark measures skiff-cni against and a second witness that the node network does not
//! depend on our plugin.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ipnet::Ipv4Net;
use serde_json::{Value, json};
use skiff_cni::conflist::NetworkList;

use crate::{Netns, Node, Run, cmd};

/// Where `cargo xtask setup` (Debian's containernetworking-plugins) puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

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
            ("CNI_PATH", format!("{REFERENCE_PLUGINS}:/opt/cni/bin")),
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
    let child = spawn(plugin, node, args, config)?;
    finish(child, PLUGIN_TIMEOUT)
        .with_context(|| format!("{} ({})", plugin.display(), args.command))
}

/// Waits (bounded) for a spawned plugin and collects its output.
pub fn finish(child: Child, timeout: Duration) -> Result<PluginOutput> {
    let out = cmd::collect(child, timeout)?;
    let stdout = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "plugin stdout is not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?
    };
    Ok(PluginOutput {
        status: out.status,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A conflist and where each of its plugins' binary is.
#[derive(Clone, Debug)]
pub struct Chain {
    /// The list.
    pub list: NetworkList,
    /// The binary of each plugin of the list, in the same order.
    pub binaries: Vec<PathBuf>,
}

impl Chain {
    /// A list `name` at `version` of (binary, that plugin's config).
    pub fn new(name: &str, version: &str, plugins: Vec<(PathBuf, Value)>) -> Self {
        let (binaries, plugins) = plugins.into_iter().unzip();
        Chain {
            list: NetworkList {
                name: name.to_owned(),
                version: version.to_owned(),
                plugins,
            },
            binaries,
        }
    }

    /// skiff-cni alone (spec 1.1.0): routed /32 veths from `pod_cidr`, both ends at `mtu`,
    /// IPAM state under `data_dir`.
    pub fn skiff(plugin: &Path, pod_cidr: Ipv4Net, mtu: u32, data_dir: &Path) -> Self {
        let config = json!({"type": "skiff-cni", "podCIDR": pod_cidr.to_string(), "mtu": mtu,
                            "dataDir": data_dir});
        Chain::new("skiff", "1.1.0", vec![(plugin.to_owned(), config)])
    }

    /// Debian's reference `bridge` (`cni0`, the Pods' gateway, no masquerade: the node network
    /// does that) with `host-local` IPAM over `pod_cidr`, its state in `data_dir`. Spec 1.0.0,
    /// the newest Debian's plugins (1.1.1) speak.
    pub fn reference_bridge(pod_cidr: Ipv4Net, mtu: u32, data_dir: &Path) -> Self {
        let bridge = json!({
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "mtu": mtu,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": pod_cidr.to_string() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": data_dir,
            },
        });
        let binary = Path::new(REFERENCE_PLUGINS).join("bridge");
        Chain::new("skiff-reference", "1.0.0", vec![(binary, bridge)])
    }

    /// Runs `command` through the chain in the spec's order, each plugin handed `prev` (for
    /// ADD, the previous plugin's result); returns the last result.
    fn run(
        &self,
        node: &Netns,
        args: &CniArgs,
        runtime_config: &Value,
        mut prev: Option<Value>,
    ) -> Result<Value> {
        let adding = args.command == "ADD";
        let mut last = Value::Null;
        for i in self.list.order(&args.command) {
            let (binary, plugin) = (&self.binaries[i], &self.list.plugins[i]);
            let config = self
                .list
                .plugin_config(plugin, prev.as_ref(), runtime_config);
            last = invoke(binary, node, args, &config)?
                .success()
                .with_context(|| format!("{} by {}", args.command, binary.display()))?;
            if adding {
                prev = Some(last.clone());
            }
        }
        Ok(last)
    }

    /// ADD through the chain; returns the last plugin's result.
    pub fn add(&self, node: &Netns, args: &CniArgs, runtime_config: &Value) -> Result<Value> {
        ensure!(!self.binaries.is_empty(), "an empty chain");
        self.run(node, args, runtime_config, None)
    }

    /// DEL through the chain, last plugin first, each given the ADD's final result.
    pub fn del(
        &self,
        node: &Netns,
        args: &CniArgs,
        runtime_config: &Value,
        result: &Value,
    ) -> Result<()> {
        self.run(node, args, runtime_config, Some(result.clone()))
            .map(drop)
    }
}

/// A Pod: its namespace, its `eth0` address, and the chain's final result.
#[derive(Debug)]
pub struct Pod {
    /// The Pod's name (also its container ID).
    pub name: String,
    /// Its network namespace.
    pub netns: Netns,
    /// Its IPv4 address.
    pub ip: Ipv4Addr,
    /// The CNI result of the last plugin.
    pub result: Value,
}

impl Pod {
    /// The `CNI_*` variables of `command` for this Pod's `eth0`.
    pub fn args(&self, command: &str) -> CniArgs {
        CniArgs::new(command, &self.name, Some(&self.netns))
    }
}

/// Creates Pod `name` on `node`: a namespace of `run`'s, wired by `chain` (CNI ADD).
pub fn add_pod(run: &Run, node: &Node, name: &str, chain: &Chain) -> Result<Pod> {
    let netns = Netns::create(&run.id().object(name))?;
    let args = CniArgs::new("ADD", name, Some(&netns));
    let result = chain
        .add(&node.netns, &args, &json!({}))
        .with_context(|| format!("CNI ADD of Pod {name} on {}", node.name))?;
    let ip = first_ipv4(&result).with_context(|| format!("no IPv4 in the result {result}"))?;
    Ok(Pod {
        name: name.to_owned(),
        netns,
        ip,
        result,
    })
}

/// The first IPv4 address of a CNI result.
pub fn first_ipv4(result: &Value) -> Option<Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let net: Ipv4Net = ip["address"].as_str()?.parse().ok()?;
        Some(net.addr())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_address_comes_from_the_results_first_ipv4() {
        let result = json!({"ips": [
            {"address": "fd00::2/64"},
            {"address": "10.244.1.2/24", "gateway": "10.244.1.1"},
        ]});
        assert_eq!(first_ipv4(&result), Some(Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(first_ipv4(&json!({"ips": []})), None);
    }

    #[test]
    fn the_ready_made_chains_keep_state_private_and_masquerade_to_the_node_network() {
        let cidr: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        let dir = Path::new("/run/x/ipam");
        let skiff = Chain::skiff(Path::new("/bin/skiff-cni"), cidr, 1450, dir);
        let (binary, config) = (&skiff.binaries[0], &skiff.list.plugins[0]);
        assert_eq!(binary, Path::new("/bin/skiff-cni"));
        assert_eq!(config["podCIDR"], "10.244.3.0/24");
        assert_eq!(config["mtu"], 1450);
        assert_eq!(config["dataDir"], "/run/x/ipam");

        let reference = Chain::reference_bridge(cidr, 1450, dir);
        let bridge = &reference.list.plugins[0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["dataDir"], "/run/x/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
