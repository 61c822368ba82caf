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

use ipnet::Ipv4Net;

use super::door::{Chains, Table};
use crate::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePortName,
};

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

/// Renders rulesets, re-rendering only Services whose desired state changed.
#[derive(Debug, Default)]
pub struct Renderer {
    options: RenderOptions,
    node: Option<NodeFacts>,
    cache: HashMap<ServicePortName, (DesiredService, Arc<ServiceRules>)>,
}

impl Renderer {
    /// A renderer with `options`.
    pub fn new(options: RenderOptions) -> Self {
        Renderer {
            options,
            ..Renderer::default()
        }
    }

    /// The whole ruleset for `desired`.
    pub fn render(&mut self, desired: &DesiredState) -> Ruleset {
        if self.node.as_ref() != Some(&desired.node) {
            self.cache.clear();
            self.node = Some(desired.node.clone());
        }
        self.cache.retain(|k, _| desired.services.contains_key(k));
        let mut per_service = Vec::with_capacity(desired.services.len());
        for (name, service) in &desired.services {
            let rules = match self.cache.get(name) {
                Some((cached, rules)) if cached == service => Arc::clone(rules),
                _ => {
                    let rules = Arc::new(service_rules(name, service, &desired.node));
                    self.cache
                        .insert(name.clone(), (service.clone(), Arc::clone(&rules)));
                    rules
                }
            };
            per_service.push(rules);
        }
        assemble(&per_service, &self.options)
    }
}

/// Renders `desired` without a cache.
pub fn render(desired: &DesiredState, options: &RenderOptions) -> Ruleset {
    Renderer::new(options.clone()).render(desired)
}

fn assemble(services: &[Arc<ServiceRules>], options: &RenderOptions) -> Ruleset {
    let mut nat = Chains::new();
    let mut filter = Chains::new();
    let mut entries = Vec::new();
    let mut node_ports = Vec::new();
    let mut rejects = Vec::new();
    let mut endpoint_ips = Vec::new();
    for rules in services {
        endpoint_ips.extend(rules.endpoint_ips.iter().map(|ip| u32::from(*ip)));
        nat.extend(rules.chains.iter().cloned());
        entries.extend(
            rules
                .entries
                .iter()
                .map(|(ip, r)| (u32::from(*ip), r.clone())),
        );
        node_ports.extend(rules.node_ports.iter().cloned());
        rejects.extend(rules.rejects.iter().cloned());
    }
    entries.sort();
    node_ports.sort();
    let mut services_rules = dispatch(&entries, &mut nat, "DST");
    endpoint_ips.sort_unstable();
    endpoint_ips.dedup();
    let hairpins: Vec<(u32, String)> = endpoint_ips
        .into_iter()
        .map(|raw| {
            let ip = Ipv4Addr::from(raw);
            (
                raw,
                format!("-s {ip}/32 -d {ip}/32 -j MASQUERADE --random-fully"),
            )
        })
        .collect();
    let hairpin_root = dispatch(&hairpins, &mut nat, "HP");
    services_rules.push(format!(
        "-m addrtype --dst-type LOCAL -m comment --comment \"skiff node ports; must be last\" -j {NODEPORTS}"
    ));
    nat.insert(SERVICES.into(), services_rules);
    nat.insert(
        NODEPORTS.into(),
        node_ports.into_iter().map(|(_, r)| r).collect(),
    );
    let mut postrouting = Vec::new();
    if !hairpin_root.is_empty() {
        postrouting.push(format!(
            "-m conntrack --ctstate DNAT -m comment --comment \"skiff hairpin: a Pod served by itself\" -j {HAIRPIN}"
        ));
        nat.insert(HAIRPIN.into(), hairpin_root);
    }
    postrouting.extend([
            format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-j MARK --xor-mark {MASQ_MARK}"),
            "-m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                .into(),
        ]);
    nat.insert(POSTROUTING.into(), postrouting);
    nat.insert(
        MARK_MASQ.into(),
        vec![format!("-j MARK --or-mark {MASQ_MARK}")],
    );
    nat.insert(
        MARK_DROP.into(),
        vec![format!("-j MARK --or-mark {DROP_MARK}")],
    );
    filter.insert(SERVICES.into(), rejects);
    let mut firewall = vec![format!(
        "-m mark --mark {DROP_MARK}/{DROP_MARK} -m comment --comment \"skiff dropping marked packets\" -j DROP"
    )];
    if options.localhost_nodeports {
        firewall.push(
            "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment \"block incoming localnet connections\" -j DROP"
                .into(),
        );
    }
    filter.insert(FIREWALL.into(), firewall);
    Ruleset {
        tables: [(Table::Nat, nat), (Table::Filter, filter)].into(),
    }
}

/// Splits sorted `(address, rule)` entries into a prefix tree of chains named
/// `SKIFF-<kind>-<prefix>-<len>`, matching on the destination; returns the root rules.
fn dispatch(entries: &[(u32, String)], chains: &mut Chains, kind: &str) -> Vec<String> {
    match (entries.first(), entries.last()) {
        (Some(first), Some(last)) => split(entries, common_len(first.0, last.0), chains, kind),
        _ => Vec::new(),
    }
}

fn common_len(a: u32, b: u32) -> u8 {
    (a ^ b).leading_zeros() as u8
}

fn split(entries: &[(u32, String)], len: u8, chains: &mut Chains, kind: &str) -> Vec<String> {
    if entries.len() <= LEAF || len >= 32 {
        return entries.iter().map(|(_, r)| r.clone()).collect();
    }
    let next = (len + 4).min(32);
    let bucket = |ip: u32| ip.checked_shr(u32::from(32 - next)).unwrap_or(0);
    let mut rules = Vec::new();
    for group in entries.chunk_by(|a, b| bucket(a.0) == bucket(b.0)) {
        if group.len() <= 2 {
            rules.extend(group.iter().map(|(_, r)| r.clone()));
            continue;
        }
        let (first, last) = (group[0].0, group[group.len() - 1].0);
        let plen = common_len(first, last).max(next);
        let prefix = Ipv4Net::new(Ipv4Addr::from(first), plen)
            .expect("a prefix length of at most 32")
            .trunc();
        let name = format!("SKIFF-{kind}-{:08X}-{plen}", u32::from(prefix.network()));
        let sub = split(group, plen, chains, kind);
        chains.insert(name.clone(), sub);
        rules.push(format!("-d {prefix} -j {name}"));
    }
    rules
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
        // TCP gets a reset: ICMP errors are rate-limited per destination (about one a second
        // after a burst of six), so a client retrying quickly would wait out a SYN retransmit.
        let reject = match proto {
            Protocol::Tcp => "REJECT --reject-with tcp-reset",
            Protocol::Udp | Protocol::Sctp => "REJECT",
        };
        for (ip, _) in &ips {
            out.rejects.push(format!(
                "-d {ip}/32 {dport} -m comment --comment \"{name} has no endpoints\" -j {reject}"
            ));
        }
        if let Some(np) = port.node_port {
            out.rejects.push(format!(
                "-m addrtype --dst-type LOCAL {} -m comment --comment \"{name} has no endpoints\" -j {reject}",
                port_match(proto, np)
            ));
        }
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
        let mut ext_rules = Vec::new();
        if port.external_policy_local {
            if let Some(cidr) = node.cluster_cidr {
                ext_rules.push(format!(
                    "-s {cidr} -m comment --comment \"pod traffic for {name} external destinations\" -j {svc}"
                ));
            }
            ext_rules.push(format!("-m addrtype --src-type LOCAL -j {MARK_MASQ}"));
            ext_rules.push(format!("-m addrtype --src-type LOCAL -j {svc}"));
            ext_rules.extend(balance(
                &hash,
                proto,
                port.affinity_seconds,
                &service.external_endpoints,
            ));
        } else {
            ext_rules.push(format!("-j {MARK_MASQ}"));
            if service.external_endpoints == service.internal_endpoints {
                ext_rules.push(format!("-j {svc}"));
            } else {
                ext_rules.extend(balance(
                    &hash,
                    proto,
                    port.affinity_seconds,
                    &service.external_endpoints,
                ));
            }
        }
        out.chains.push((ext.clone(), ext_rules));
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
