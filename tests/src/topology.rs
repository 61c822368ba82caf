//! The cluster's wiring: an underlay bridge in a namespace of its own, and one namespace per node.
//!
//! ```text
//!   host (optional)            underlay netns sk-<id>-ul                 node netns sk-<id>-nK
//!   sk-<id>-h  .254 ──veth── [host]─┐
//!                                    br0  .1 (control plane) ──[nK]──veth── eth0  .10+K
//! ```
//!
//! The control plane listens on the bridge's own address inside the underlay namespace, so every
//! node reaches it in one hop and the host reaches it through the host link. Nodes route
//! everything else via the bridge address too, like a node's default gateway.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::{Netns, Process, Run, RunId, cmd};

/// What to build.
#[derive(Clone, Debug)]
pub struct TopologyOptions {
    /// How many nodes (1..=200).
    pub nodes: usize,
    /// Add a veth from the host's namespace so host tools (kubectl) reach the underlay.
    pub host_link: bool,
    /// Names the run's log folder: `<log_root>/<label>-<run id>`.
    pub label: String,
    /// Where log folders go.
    pub log_root: PathBuf,
}

impl TopologyOptions {
    /// `nodes` nodes, no host link, logs under the workspace's `target/e2e-logs`.
    pub fn nodes(nodes: usize, label: &str) -> Self {
        TopologyOptions {
            nodes,
            host_link: false,
            label: label.to_owned(),
            log_root: default_log_root(),
        }
    }
}

/// `target/e2e-logs` of this workspace, or `$SKIFF_E2E_LOGS`.
pub fn default_log_root() -> PathBuf {
    std::env::var_os("SKIFF_E2E_LOGS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs"),
        PathBuf::from,
    )
}

/// One node: its namespace and its underlay address.
#[derive(Clone, Debug)]
pub struct Node {
    /// `node1`, `node2`, ...
    pub name: String,
    /// The node's network namespace.
    pub netns: Netns,
    /// The node's InternalIP on the underlay.
    pub ip: Ipv4Addr,
}

/// A built topology; dropping it removes everything its run made.
#[derive(Debug)]
pub struct Topology {
    nodes: Vec<Node>,
    underlay: Netns,
    subnet: Ipv4Addr,
    host_ip: Option<Ipv4Addr>,
    // Last: dropped after everything above, and its Drop does the cleanup.
    run: Run,
}

/// The underlay prefix length.
pub const UNDERLAY_PREFIX: u8 = 24;

impl Topology {
    /// Builds the underlay, the nodes and (optionally) the host link.
    pub fn build(options: &TopologyOptions) -> Result<Self> {
        if !(1..=200).contains(&options.nodes) {
            bail!("a topology has 1 to 200 nodes, not {}", options.nodes);
        }
        let run = Run::start(&options.label, &options.log_root)?;
        let subnet = pick_subnet(run.id(), options.host_link)?;
        let underlay = Netns::create(&run.id().object("ul"))?;
        let gateway = host_in(subnet, 1);
        underlay.ip(&["link", "add", "br0", "type", "bridge"])?;
        underlay.ip(&["addr", "add", &cidr(gateway), "dev", "br0"])?;
        underlay.ip(&["link", "set", "br0", "up"])?;
        underlay.sysctl("net.ipv4.ip_forward", "1")?;

        let mut topology = Topology {
            nodes: Vec::with_capacity(options.nodes),
            underlay,
            subnet,
            host_ip: None,
            run,
        };
        for index in 1..=options.nodes {
            topology.add_node(index)?;
        }
        if options.host_link {
            topology.add_host_link()?;
        }
        Ok(topology)
    }

    fn add_node(&mut self, index: usize) -> Result<()> {
        let name = format!("node{index}");
        let netns = Netns::create(&self.run.id().object(&format!("n{index}")))?;
        let ip = host_in(self.subnet, 10 + index as u8);
        let port = format!("n{index}");
        cmd::ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            netns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.underlay.name(),
        ])
        .with_context(|| format!("wiring {name} to the underlay"))?;
        self.underlay
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        netns.ip(&["addr", "add", &cidr(ip), "dev", "eth0"])?;
        netns.ip(&["link", "set", "eth0", "up"])?;
        netns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &self.control_plane_ip().to_string(),
        ])?;
        netns.sysctl("net.ipv4.ip_forward", "1")?;
        self.nodes.push(Node { name, netns, ip });
        Ok(())
    }

    fn add_host_link(&mut self) -> Result<()> {
        let host_side = self.run.id().object("h");
        let ip = host_in(self.subnet, 254);
        cmd::ip(&[
            "link",
            "add",
            &host_side,
            "type",
            "veth",
            "peer",
            "name",
            "host",
            "netns",
            self.underlay.name(),
        ])?;
        self.underlay
            .ip(&["link", "set", "host", "master", "br0", "up"])?;
        // The only change to the host: an address (and so a connected route) on our own link.
        cmd::ip(&["addr", "add", &cidr(ip), "dev", &host_side])?;
        cmd::ip(&["link", "set", &host_side, "up"])?;
        self.host_ip = Some(ip);
        Ok(())
    }

    /// The run that owns everything here.
    pub fn run(&self) -> &Run {
        &self.run
    }

    /// The nodes, in order (`node1` first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `n`, counting from 1 like the names.
    pub fn node(&self, n: usize) -> &Node {
        &self.nodes[n - 1]
    }

    /// The namespace the control plane runs in (the underlay's).
    pub fn control_plane_netns(&self) -> &Netns {
        &self.underlay
    }

    /// The control plane's address, reachable from every node and from the host link.
    pub fn control_plane_ip(&self) -> Ipv4Addr {
        host_in(self.subnet, 1)
    }

    /// The underlay network, e.g. `172.31.7.0/24`.
    pub fn underlay_cidr(&self) -> String {
        format!("{}/{UNDERLAY_PREFIX}", self.subnet)
    }

    /// The host's address on the underlay, when there is a host link.
    pub fn host_ip(&self) -> Option<Ipv4Addr> {
        self.host_ip
    }

    /// Starts a process in `ns` under this run (see [`Process::spawn`]).
    pub fn spawn(
        &self,
        ns: &Netns,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Process> {
        Process::spawn(&self.run, ns, name, argv, env)
    }

    /// Keeps everything after this process exits; `run::destroy(id)` removes it later.
    pub fn detach(self) -> Result<RunId> {
        self.run.detach()
    }
}

fn cidr(ip: Ipv4Addr) -> String {
    format!("{ip}/{UNDERLAY_PREFIX}")
}

fn host_in(subnet: Ipv4Addr, host: u8) -> Ipv4Addr {
    let [a, b, c, _] = subnet.octets();
    Ipv4Addr::new(a, b, c, host)
}

/// A /24 inside 172.31.0.0/16 for the run. Namespaced runs could all share one, but a run with a
/// host link puts a route on the host, so it takes one no host route overlaps.
fn pick_subnet(id: &RunId, host_link: bool) -> Result<Ipv4Addr> {
    let start = id
        .as_str()
        .bytes()
        .fold(0u8, |acc, b| acc.wrapping_mul(31).wrapping_add(b));
    if !host_link {
        return Ok(Ipv4Addr::new(172, 31, start, 0));
    }
    let routes = cmd::ip(&["-4", "route", "show", "table", "all"])?;
    let taken: Vec<(u32, u32)> = routes.lines().filter_map(parse_route_prefix).collect();
    (0..=255u8)
        .map(|k| Ipv4Addr::new(172, 31, start.wrapping_add(k), 0))
        .find(|candidate| {
            let net = u32::from(*candidate);
            taken.iter().all(|&(base, mask)| {
                let common = mask & 0xffff_ff00;
                (net & common) != (base & common)
            })
        })
        .context("no free /24 in 172.31.0.0/16 for the underlay")
}

/// `(base, mask)` of a route line's destination; `default` routes overlap nothing we pick.
fn parse_route_prefix(line: &str) -> Option<(u32, u32)> {
    let mut words = line.split_whitespace();
    let mut dest = words.next()?;
    if matches!(
        dest,
        "local" | "broadcast" | "unicast" | "blackhole" | "unreachable" | "prohibit"
    ) {
        dest = words.next()?;
    }
    if dest == "default" {
        return None;
    }
    let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
    let len: u32 = len.parse().ok()?;
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32))
    };
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?) & mask, mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_prefixes_parse_with_and_without_a_length() {
        assert_eq!(
            parse_route_prefix("172.31.4.0/24 dev x proto kernel"),
            Some((u32::from(Ipv4Addr::new(172, 31, 4, 0)), 0xffff_ff00))
        );
        assert_eq!(
            parse_route_prefix("local 127.0.0.1 dev lo table local"),
            Some((u32::from(Ipv4Addr::LOCALHOST), u32::MAX))
        );
        assert_eq!(parse_route_prefix("default via 192.0.2.1 dev eth0"), None);
    }
}
