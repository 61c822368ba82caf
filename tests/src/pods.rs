//! Pods for network tests: a namespace wired by a CNI plugin chain, the way a runtime does it.
//!
//! A test says which chain (a conflist) and gets back the Pod's namespace and address. Node
//! network tests use Debian's reference `bridge` + `host-local` plugins today, so they test the
//! node network and nothing else of ours; skiff's own plugin slots in by passing another chain.
//! Plugins run inside the node's namespace (that is where they build the bridge and veth), with
//! `CNI_*` variables and the config on stdin, and each `prevResult` handed to the next plugin.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use serde_json::{Value, json};

use crate::{Netns, Node, Run, cmd};

/// Where `cargo xtask setup` (Debian's containernetworking-plugins) puts the reference plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// How long one plugin run may take.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A plugin chain: a conflist, and the folder its plugins are found in (`CNI_PATH`).
#[derive(Clone, Debug)]
pub struct CniChain {
    /// Folder of plugin binaries.
    pub plugin_dir: PathBuf,
    /// `{"cniVersion", "name", "plugins": [...]}`.
    pub conflist: Value,
}

impl CniChain {
    /// Debian's reference `bridge` (`cni0`, the Pods' gateway, no masquerade: the node network
    /// does that) with `host-local` IPAM over `pod_cidr`, its state in `data_dir`.
    pub fn reference_bridge(pod_cidr: Ipv4Net, mtu: u32, data_dir: &Path) -> Self {
        CniChain {
            plugin_dir: PathBuf::from(REFERENCE_PLUGINS),
            conflist: json!({
                "cniVersion": "1.0.0",
                "name": "skiff-test",
                "plugins": [{
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
                }],
            }),
        }
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

/// Creates Pod `name` on `node`: a namespace of `run`'s, wired by `chain` (CNI ADD).
pub fn add_pod(run: &Run, node: &Node, name: &str, chain: &CniChain) -> Result<Pod> {
    let netns = Netns::create(&run.id().object(name))?;
    let result = run_chain(node, &netns, name, chain)
        .with_context(|| format!("CNI ADD of Pod {name} on {}", node.name))?;
    let ip = first_ipv4(&result).with_context(|| format!("no IPv4 in the result {result}"))?;
    Ok(Pod {
        name: name.to_owned(),
        netns,
        ip,
        result,
    })
}

fn run_chain(node: &Node, pod: &Netns, name: &str, chain: &CniChain) -> Result<Value> {
    let plugins = chain.conflist["plugins"]
        .as_array()
        .context("the conflist has no plugins")?;
    let netns_path = format!("/run/netns/{}", pod.name());
    let cni_path = chain.plugin_dir.to_string_lossy().into_owned();
    let mut previous: Option<Value> = None;
    for plugin in plugins {
        let mut config = plugin.clone();
        config["name"] = chain.conflist["name"].clone();
        config["cniVersion"] = chain.conflist["cniVersion"].clone();
        if let Some(prev) = previous.take() {
            config["prevResult"] = prev;
        }
        let kind = config["type"].as_str().context("a plugin without a type")?;
        let binary = chain.plugin_dir.join(kind);
        let mut command = node.netns.command(&[&binary.to_string_lossy()]);
        command.envs([
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", name),
            ("CNI_NETNS", netns_path.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path.as_str()),
        ]);
        let out =
            cmd::output_with_input(&mut command, config.to_string().as_bytes(), PLUGIN_TIMEOUT)?;
        // Plugins answer on stdout, errors included (as a CNI error object).
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{kind} failed ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        previous = Some(
            serde_json::from_str(&stdout).with_context(|| format!("{kind} answered {stdout:?}"))?,
        );
    }
    previous.context("the chain ran no plugin")
}

fn first_ipv4(result: &Value) -> Option<Ipv4Addr> {
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
    fn the_reference_chain_keeps_masquerade_off_and_state_private() {
        let chain = CniChain::reference_bridge(
            "10.244.3.0/24".parse().unwrap(),
            1450,
            Path::new("/run/x/ipam"),
        );
        let bridge = &chain.conflist["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["mtu"], 1450);
        assert_eq!(bridge["ipam"]["dataDir"], "/run/x/ipam");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
    }
}
