//! Rendering a [`DesiredState`] into skiff's chains, per table.
//!
//! The ruleset is shaped for scale (kube-proxy's iptables mode is linear in Services twice
//! over: every new connection walks `KUBE-SERVICES` rule by rule, and every endpoint costs a
//! chain of its own):
//!
//! * **Dispatch by destination prefix.** `SKIFF-SERVICES` does not list every Service address;
//!   entries are grouped by the next 4 bits of their destination address into `SKIFF-DST-*`
//!   chains (`-d 10.96.32.0/20 -j SKIFF-DST-0A602000-20`), recursively, until a group holds at
//!   most [`LEAF`] entries. A new connection to one of 10,000 ClusterIPs walks ~50 rules, not
//!   ~5,000. Groups of one or two entries stay inline, so small clusters look flat.
//! * **No per-endpoint chains.** The Service chain DNATs directly, choosing with
//!   `-m statistic --mode random --probability 1/(n-i)` so every endpoint gets 1/n. Session
//!   affinity needs no chain either: `-m recent --set` is a *match*, so the choosing rule also
//!   records the client, and one `--update --seconds T --reap` rule per endpoint pins it.
//!   Hairpin (a Pod reaching itself through its Service) is caught after the choice, in
//!   `SKIFF-POSTROUTING`: a DNATed packet whose source is its new destination is masqueraded,
//!   found through the same prefix tree (`SKIFF-HP-*`) over every endpoint address. So only a
//!   Pod that lands on itself loses its source address, as with kube-proxy's per-endpoint
//!   chains, at a cost of ~log(endpoints) rules per new DNATed connection.
//! * **Small, separate external chains.** NodePort, externalIP and LB traffic enters
//!   `SKIFF-EXT-<svc>` (masquerade unless `externalTrafficPolicy: Local`, which keeps the client
//!   IP and DNATs to local endpoints only); `loadBalancerSourceRanges` sit in `SKIFF-FW-<svc>`.
//! * **Reject in filter.** A Service with no usable endpoint gets no nat rules; its addresses
//!   are rejected in filter's `SKIFF-SERVICES` (a TCP reset, ICMP port unreachable for UDP and
//!   SCTP: the client fails at once). Traffic that must be dropped (no local endpoint for a Local policy, a source outside
//!   the LB ranges) is marked in nat and dropped by filter's `SKIFF-FIREWALL`.
//!
//! Every Service's chains are rendered from its `DesiredService` alone (and cached by it), so a
//! sync re-renders only the Services that changed.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use super::assemble::{Assembly, ChainChanges, Parts};
use crate::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePortName,
};
use skiff_iptables::{Chains, Table};

/// Every chain of ours starts with this.
pub const CHAIN_PREFIX: &str = "SKIFF-";
/// nat: where PREROUTING and OUTPUT enter; filter: rejects for Services without endpoints.
pub const SERVICES: &str = "SKIFF-SERVICES";
/// nat: NodePort dispatch (only for destinations local to this node).
pub const NODEPORTS: &str = "SKIFF-NODEPORTS";
/// nat: masquerades what was marked.
pub const POSTROUTING: &str = "SKIFF-POSTROUTING";
/// nat: marks a packet for masquerade.
pub const MARK_MASQ: &str = "SKIFF-MARK-MASQ";
/// The root of the hairpin prefix tree, jumped to from `SKIFF-POSTROUTING`.
pub const HAIRPIN: &str = "SKIFF-HAIRPIN";
/// nat: marks a packet to be dropped by filter.
pub const MARK_DROP: &str = "SKIFF-MARK-DROP";
/// filter: drops what was marked.
pub const FIREWALL: &str = "SKIFF-FIREWALL";
/// The masquerade mark bit.
pub const MASQ_MARK: &str = "0x4000";
/// The drop mark bit.
pub const DROP_MARK: &str = "0x8000";
/// Most entries a dispatch chain lists before it is split by the next 4 address bits.
pub const LEAF: usize = 16;

/// Options that shape the ruleset beyond the desired state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// NodePorts answer on 127.0.0.1 too (needs `route_localnet`); adds the localnet guard.
    pub localhost_nodeports: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            localhost_nodeports: true,
        }
    }
}

/// Our chains in both tables, plus the hook rules that lead into them from built-in chains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Table → chain → rules.
    pub tables: BTreeMap<Table, Chains>,
}

impl Ruleset {
    /// The chains of `table`.
    pub fn chains(&self, table: Table) -> &Chains {
        static EMPTY: Chains = Chains::new();
        self.tables.get(&table).unwrap_or(&EMPTY)
    }

    /// How many rules our chains hold in `table`.
    pub fn rule_count(&self, table: Table) -> usize {
        self.chains(table).values().map(Vec::len).sum()
    }
}

/// The rules leading from built-in chains into ours: (table, built-in chain, rule).
pub fn hooks() -> Vec<(Table, &'static str, String)> {
    let services = format!("-m comment --comment \"skiff service portals\" -j {SERVICES}");
    let new_services = format!("-m conntrack --ctstate NEW {services}");
    let firewall = format!("-m comment --comment \"skiff firewall\" -j {FIREWALL}");
    let mut hooks = vec![
        (Table::Nat, "PREROUTING", services.clone()),
        (Table::Nat, "OUTPUT", services),
        (
            Table::Nat,
            "POSTROUTING",
            format!("-m comment --comment \"skiff postrouting rules\" -j {POSTROUTING}"),
        ),
    ];
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        hooks.push((Table::Filter, chain, new_services.clone()));
        hooks.push((Table::Filter, chain, firewall.clone()));
    }
    hooks
}

/// What one Service port contributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ServiceRules {
    /// nat chains it owns.
    chains: Vec<(String, Vec<String>)>,
    /// nat rules for `SKIFF-SERVICES` dispatch, by destination address.
    entries: Vec<(Ipv4Addr, String)>,
    /// nat rules for `SKIFF-NODEPORTS`, by node port.
    node_ports: Vec<(u16, String)>,
    /// filter rules for `SKIFF-SERVICES`.
    rejects: Vec<String>,
    /// Its endpoint addresses, which a hairpin connection would come from.
    endpoint_ips: Vec<Ipv4Addr>,
}

/// Renders rulesets, re-rendering only Services whose desired state changed and patching the
/// assembled ruleset only where they touch it (see the private `assemble` module).
#[derive(Debug)]
pub struct Renderer {
    options: RenderOptions,
    node: Option<NodeFacts>,
    cache: HashMap<ServicePortName, (DesiredService, Parts)>,
    assembly: Assembly,
}

/// What one [`Renderer::render`] changed.
#[derive(Debug, Default)]
pub struct RenderChanges {
    /// The chains that may differ from the previous render, with their previous rules.
    pub chains: ChainChanges,
    /// The Services that changed, with their previous desired state (`None`: new).
    pub services: Vec<(ServicePortName, Option<DesiredService>)>,
}

impl Renderer {
    /// A renderer with `options`.
    pub fn new(options: RenderOptions) -> Self {
        Renderer {
            options,
            node: None,
            cache: HashMap::new(),
            assembly: Assembly::new(),
        }
    }

    /// The ruleset of the last render.
    pub fn ruleset(&self) -> &Ruleset {
        self.assembly.ruleset()
    }

    /// Brings the ruleset to `desired`; says which chains and Services changed.
    pub fn render(&mut self, desired: &DesiredState) -> RenderChanges {
        let mut services = Vec::new();
        if self.node.as_ref() != Some(&desired.node) {
            self.assembly.reset();
            services.extend(self.cache.drain().map(|(name, (old, _))| (name, Some(old))));
            self.node = Some(desired.node.clone());
        }
        let mut unchanged = 0;
        let mut changed = Vec::new();
        for (name, service) in &desired.services {
            match self.cache.get(name) {
                Some((cached, _)) if cached == service => unchanged += 1,
                _ => changed.push((name, service)),
            }
        }
        let kept = unchanged
            + changed
                .iter()
                .filter(|(n, _)| self.cache.contains_key(*n))
                .count();
        if kept < self.cache.len() {
            let gone: Vec<ServicePortName> = self
                .cache
                .keys()
                .filter(|name| !desired.services.contains_key(*name))
                .cloned()
                .collect();
            for name in gone {
                if let Some((old, parts)) = self.cache.remove(&name) {
                    self.assembly.remove(&name, &parts);
                    services.push((name, Some(old)));
                }
            }
        }
        for (name, service) in changed {
            let old = self.cache.remove(name).map(|(old, parts)| {
                self.assembly.remove(name, &parts);
                old
            });
            let rules = service_rules(name, service, &desired.node);
            let parts = Parts {
                chain_names: rules.chains.iter().map(|(n, _)| n.clone()).collect(),
                entries: rules
                    .entries
                    .into_iter()
                    .map(|(ip, r)| (u32::from(ip), Arc::from(r)))
                    .collect(),
                node_ports: rules
                    .node_ports
                    .into_iter()
                    .map(|(port, r)| (port, Arc::from(r)))
                    .collect(),
                rejects: !rules.rejects.is_empty(),
                endpoint_ips: rules.endpoint_ips.iter().map(|ip| u32::from(*ip)).collect(),
            };
            self.assembly.add(name, &parts, rules.chains, rules.rejects);
            self.cache.insert(name.clone(), (service.clone(), parts));
            services.push((name.clone(), old));
        }
        RenderChanges {
            chains: self.assembly.finish(&self.options),
            services,
        }
    }
}

/// Renders `desired` without a cache.
pub fn render(desired: &DesiredState, options: &RenderOptions) -> Ruleset {
    let mut renderer = Renderer::new(options.clone());
    renderer.render(desired);
    renderer.assembly.into_ruleset()
}

/// A short stable hash of a Service port name, for chain and list names (FNV-1a, base32).
pub fn service_hash(name: &ServicePortName) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.to_string().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..13)
        .map(|i| char::from(ALPHABET[((hash >> (i * 5)) & 31) as usize]))
        .collect()
}

/// The internal chain of a Service port.
pub fn svc_chain(name: &ServicePortName) -> String {
    format!("SKIFF-SVC-{}", service_hash(name))
}

/// The external chain of a Service port.
pub fn ext_chain(name: &ServicePortName) -> String {
    format!("SKIFF-EXT-{}", service_hash(name))
}

/// The LB source-range chain of a Service port.
pub fn fw_chain(name: &ServicePortName) -> String {
    format!("SKIFF-FW-{}", service_hash(name))
}

fn port_match(protocol: Protocol, port: u16) -> String {
    format!("-p {protocol} -m {protocol} --dport {port}")
}

fn service_rules(
    name: &ServicePortName,
    service: &DesiredService,
    node: &NodeFacts,
) -> ServiceRules {
    let port = &service.port;
    let proto = name.protocol;
    let mut out = ServiceRules::default();
    let dport = port_match(proto, port.port);
    let mut ips: Vec<(Ipv4Addr, &str)> = port
        .cluster_ips
        .iter()
        .map(|ip| (*ip, "cluster IP"))
        .collect();
    ips.extend(port.external_ips.iter().map(|ip| (*ip, "external IP")));
    ips.extend(
        port.load_balancer_ips
            .iter()
            .map(|ip| (*ip, "load balancer IP")),
    );
    if !service.has_endpoints {
        out.rejects = rejects(name, service, &ips);
        return out;
    }
    let svc = svc_chain(name);
    let ext = ext_chain(name);
    let fw = fw_chain(name);
    for (ip, kind) in &ips {
        let target = match *kind {
            "cluster IP" => &svc,
            "load balancer IP" if !port.load_balancer_source_ranges.is_empty() => &fw,
            _ => &ext,
        };
        out.entries.push((
            *ip,
            format!("-d {ip}/32 {dport} -m comment --comment \"{name} {kind}\" -j {target}"),
        ));
    }
    if let Some(np) = port.node_port {
        out.node_ports.push((
            np,
            format!(
                "{} -m comment --comment \"{name} node port\" -j {ext}",
                port_match(proto, np)
            ),
        ));
    }

    out.endpoint_ips = service
        .internal_endpoints
        .iter()
        .chain(&service.external_endpoints)
        .map(|ep| ep.ip)
        .collect();
    let hash = service_hash(name);
    let mut svc_rules = Vec::new();
    if let Some(cidr) = node.cluster_cidr {
        svc_rules.push(format!("! -s {cidr} -j {MARK_MASQ}"));
    }
    svc_rules.extend(balance(
        &hash,
        proto,
        port.affinity_seconds,
        &service.internal_endpoints,
    ));
    out.chains.push((svc.clone(), svc_rules));

    if port.has_external() {
        let rules = external_rules(name, service, node, &hash, &svc);
        out.chains.push((ext.clone(), rules));
    }
    if !port.load_balancer_source_ranges.is_empty() && !port.load_balancer_ips.is_empty() {
        let mut fw_rules: Vec<String> = port
            .load_balancer_source_ranges
            .iter()
            .map(|range| format!("-s {range} -j {ext}"))
            .collect();
        fw_rules.push(format!(
            "-m comment --comment \"{name} source not in loadBalancerSourceRanges\" -j {MARK_DROP}"
        ));
        out.chains.push((fw, fw_rules));
    }
    out
}

/// The filter rules that refuse a Service without endpoints on each of its addresses.
fn rejects(
    name: &ServicePortName,
    service: &DesiredService,
    ips: &[(Ipv4Addr, &str)],
) -> Vec<String> {
    let (port, proto) = (&service.port, name.protocol);
    let dport = port_match(proto, port.port);
    // TCP gets a reset: ICMP errors are rate-limited per destination (about one a second
    // after a burst of six), so a client retrying quickly would wait out a SYN retransmit.
    let reject = match proto {
        Protocol::Tcp => "REJECT --reject-with tcp-reset",
        Protocol::Udp | Protocol::Sctp => "REJECT",
    };
    let mut rules: Vec<String> = ips
        .iter()
        .map(|(ip, _)| {
            format!(
                "-d {ip}/32 {dport} -m comment --comment \"{name} has no endpoints\" -j {reject}"
            )
        })
        .collect();
    if let Some(np) = port.node_port {
        rules.push(format!(
            "-m addrtype --dst-type LOCAL {} -m comment --comment \"{name} has no endpoints\" -j {reject}",
            port_match(proto, np)
        ));
    }
    rules
}

/// The rules of the Service's external chain: external traffic policy, then the endpoints
/// external traffic may reach (or the Service chain, when they are the same).
fn external_rules(
    name: &ServicePortName,
    service: &DesiredService,
    node: &NodeFacts,
    hash: &str,
    svc: &str,
) -> Vec<String> {
    let port = &service.port;
    let external = |rules: &mut Vec<String>| {
        rules.extend(balance(
            hash,
            name.protocol,
            port.affinity_seconds,
            &service.external_endpoints,
        ));
    };
    let mut rules = Vec::new();
    if port.external_policy_local {
        if let Some(cidr) = node.cluster_cidr {
            rules.push(format!(
                "-s {cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"
            ));
        }
        rules.push(format!("-m addrtype --src-type LOCAL -j {MARK_MASQ}"));
        rules.push(format!("-m addrtype --src-type LOCAL -j {svc}"));
        external(&mut rules);
    } else {
        rules.push(format!("-j {MARK_MASQ}"));
        if service.external_endpoints == service.internal_endpoints {
            rules.push(format!("-j {svc}"));
        } else {
            external(&mut rules);
        }
    }
    rules
}

/// The recent-list name pinning clients of `hash` to `ep`.
fn affinity_list(hash: &str, ep: &EndpointAddr) -> String {
    format!("SKIFF-{hash}-{:08X}{:04X}", u32::from(ep.ip), ep.port)
}

/// Rules that send a packet to one of `endpoints` (uniformly, or to the pinned one).
fn balance(
    hash: &str,
    proto: Protocol,
    affinity: Option<u32>,
    endpoints: &[EndpointAddr],
) -> Vec<String> {
    if endpoints.is_empty() {
        return vec![format!(
            "-m comment --comment \"no usable endpoint for this traffic\" -j {MARK_DROP}"
        )];
    }
    let mut rules: Vec<String> = Vec::new();
    let recent = |ep: &EndpointAddr, how: &str| {
        format!(
            " -m recent --name {} --mask 255.255.255.255 --rsource {how}",
            affinity_list(hash, ep)
        )
    };
    if let Some(seconds) = affinity {
        for ep in endpoints {
            rules.push(format!(
                "-p {proto}{} -j DNAT --to-destination {}:{}",
                recent(ep, &format!("--update --seconds {seconds} --reap")),
                ep.ip,
                ep.port
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let statistic = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        let set = if affinity.is_some() {
            recent(ep, "--set")
        } else {
            String::new()
        };
        rules.push(format!(
            "-p {proto}{statistic}{set} -j DNAT --to-destination {}:{}",
            ep.ip, ep.port
        ));
    }
    rules
}
