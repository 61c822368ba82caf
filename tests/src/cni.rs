//! Running CNI plugins the way a container runtime does (libcni's job, cut to what tests need),
//! and Pods wired by them.
//!
//! A plugin runs inside the *node's* namespace (`ip netns exec`), never the host's, with the
//! `CNI_*` variables and the config on stdin; its stdout is the result or error object. One
//! plugin run is [`invoke`] (or [`spawn`] + [`finish`], for tests that kill it half way). A
//! [`Chain`] runs a conflist: each plugin gets the network's name and version, its share of
//! `runtimeConfig` (by `capabilities`), and the previous plugin's result as `prevResult`; DEL
//! runs the chain backwards, as the spec orders. [`add_pod`] makes a Pod: a namespace of the
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

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde_json::{Map, Value, json};

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
    /// skiff-cni alone (spec 1.1.0): routed /32 veths from `pod_cidr`, both ends at `mtu`,
    /// IPAM state under `data_dir`.
    pub fn skiff(plugin: &Path, pod_cidr: Ipv4Net, mtu: u32, data_dir: &Path) -> Self {
        Chain {
            name: "skiff".to_owned(),
            version: "1.1.0".to_owned(),
            plugins: vec![(
                plugin.to_owned(),
                json!({"type": "skiff-cni", "podCIDR": pod_cidr.to_string(), "mtu": mtu,
                       "dataDir": data_dir}),
            )],
        }
    }

    /// Debian's reference `bridge` (`cni0`, the Pods' gateway, no masquerade: the node network
    /// does that) with `host-local` IPAM over `pod_cidr`, its state in `data_dir`. Spec 1.0.0,
    /// the newest Debian's plugins (1.1.1) speak.
    pub fn reference_bridge(pod_cidr: Ipv4Net, mtu: u32, data_dir: &Path) -> Self {
        Chain {
            name: "skiff-reference".to_owned(),
            version: "1.0.0".to_owned(),
            plugins: vec![(
                Path::new(REFERENCE_PLUGINS).join("bridge"),
                json!({
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
                }),
            )],
        }
    }

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
    fn each_plugin_gets_the_network_its_capabilities_and_the_previous_result() {
        let chain = Chain {
            name: "net".into(),
            version: "1.0.0".into(),
            plugins: vec![],
        };
        let portmap =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}});
        let runtime =
            json!({"portMappings": [{"hostPort": 1}], "bandwidth": {"rate": 1}, "ips": []});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let config = chain.config(&portmap, &runtime, Some(&prev));
        assert_eq!(config["name"], "net");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(
            config["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1}]}),
            "only capabilities the plugin turned on"
        );
        assert_eq!(config["prevResult"], prev);
        let plain = chain.config(&json!({"type": "skiff-cni"}), &runtime, None);
        assert!(plain.get("runtimeConfig").is_none() && plain.get("prevResult").is_none());
    }

    #[test]
    fn the_ready_made_chains_keep_state_private_and_masquerade_to_the_node_network() {
        let cidr: Ipv4Net = "10.244.3.0/24".parse().unwrap();
        let dir = Path::new("/run/x/ipam");
        let skiff = Chain::skiff(Path::new("/bin/skiff-cni"), cidr, 1450, dir);
        let (binary, config) = &skiff.plugins[0];
        assert_eq!(binary, Path::new("/bin/skiff-cni"));
        assert_eq!(config["podCIDR"], "10.244.3.0/24");
        assert_eq!(config["mtu"], 1450);
        assert_eq!(config["dataDir"], "/run/x/ipam");

        let reference = Chain::reference_bridge(cidr, 1450, dir);
        let bridge = &reference.plugins[0].1;
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["dataDir"], "/run/x/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
