//! Keeping the assembled ruleset between syncs and patching only what a change touches.
//!
//! One endpoint change in a 10,000-Service cluster must not cost 10,000 Services of work: not
//! re-collecting every Service's chains, not re-formatting the 100,000 hairpin rules, and not
//! comparing every chain with what was applied. So the [`Assembly`] owns the ruleset, takes out a
//! Service's contribution and puts in its new one, and records the previous content of every
//! chain it touches (moved out, never copied); the partial sync compares only those.
//!
//! The two prefix trees (`SKIFF-DST-*` over Service addresses, `SKIFF-HP-*` over endpoint
//! addresses) are rebuilt along dirty paths only. This rests on one fact about [`split`]'s
//! output: a chain named for prefix `P/L` holds exactly the entries inside `P/L` (its group is
//! the whole bucket around it, and every entry of the bucket lies inside `P/L`), and its rules
//! depend on nothing else. So a chain that existed before and has no changed address inside its
//! prefix is unchanged, and so is everything below it; the walk stops there. A chain that was
//! neither rebuilt nor below a kept chain is gone.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnet::Ipv4Net;

use super::render::{
    DROP_MARK, FIREWALL, HAIRPIN, LEAF, MARK_DROP, MARK_MASQ, MASQ_MARK, NODEPORTS, POSTROUTING,
    RenderOptions, Ruleset, SERVICES,
};
use crate::model::ServicePortName;
use skiff_iptables::Table;

/// Chain name → its rules before this render (`None`: it did not exist), per table.
pub type ChainChanges = BTreeMap<Table, BTreeMap<String, Option<Vec<String>>>>;

/// What one Service port put into the assembly, kept to take it out again.
#[derive(Clone, Debug, Default)]
pub(super) struct Parts {
    /// Names of the nat chains it owns.
    pub chain_names: Vec<String>,
    /// `SKIFF-SERVICES` dispatch entries.
    pub entries: Vec<(u32, Arc<str>)>,
    /// `SKIFF-NODEPORTS` rules, by node port.
    pub node_ports: Vec<(u16, Arc<str>)>,
    /// Does it have filter rejects?
    pub rejects: bool,
    /// Its endpoint addresses (with repeats), for the hairpin tree.
    pub endpoint_ips: Vec<u32>,
}

/// The assembled ruleset and the indexes that let it be patched.
#[derive(Debug, Default)]
pub(super) struct Assembly {
    ruleset: Ruleset,
    /// The fixed chains are not written yet.
    fresh: bool,
    dst: BTreeMap<(u32, Arc<str>), usize>,
    hairpin: BTreeMap<u32, usize>,
    node_ports: BTreeSet<(u16, Arc<str>)>,
    rejects: BTreeMap<ServicePortName, Vec<String>>,
    /// Prefix-tree chains of each kind → their prefix.
    trees: BTreeMap<&'static str, BTreeMap<String, (u32, u8)>>,
    dirty_dst: Vec<u32>,
    dirty_hairpin: Vec<u32>,
    dirty_node_ports: bool,
    dirty_rejects: bool,
    changes: ChainChanges,
}

impl Assembly {
    /// An empty assembly whose first [`finish`](Self::finish) writes the fixed chains.
    pub fn new() -> Self {
        Assembly {
            fresh: true,
            ..Assembly::default()
        }
    }

    /// The assembled ruleset.
    pub fn ruleset(&self) -> &Ruleset {
        &self.ruleset
    }

    /// Gives up the ruleset.
    pub fn into_ruleset(self) -> Ruleset {
        self.ruleset
    }

    /// Drops everything, recording every chain as changed, so the next render starts afresh.
    pub fn reset(&mut self) {
        let mut changes = std::mem::take(&mut self.changes);
        for (table, chains) in std::mem::take(&mut self.ruleset.tables) {
            let recorded = changes.entry(table).or_default();
            for (name, rules) in chains {
                recorded.entry(name).or_insert(Some(rules));
            }
        }
        *self = Assembly {
            changes,
            ..Assembly::new()
        };
    }

    fn set(&mut self, table: Table, name: String, rules: Option<Vec<String>>) {
        let chains = self.ruleset.tables.entry(table).or_default();
        let old = match rules {
            Some(rules) => chains.insert(name.clone(), rules),
            None => chains.remove(&name),
        };
        self.changes
            .entry(table)
            .or_default()
            .entry(name)
            .or_insert(old);
    }

    /// Takes out what `name` contributed.
    pub fn remove(&mut self, name: &ServicePortName, parts: &Parts) {
        for chain in &parts.chain_names {
            self.set(Table::Nat, chain.clone(), None);
        }
        for entry in &parts.entries {
            if let Some(count) = self.dst.get_mut(entry) {
                *count -= 1;
                if *count == 0 {
                    self.dst.remove(entry);
                }
            }
            self.dirty_dst.push(entry.0);
        }
        for ip in &parts.endpoint_ips {
            if let Some(count) = self.hairpin.get_mut(ip) {
                *count -= 1;
                if *count == 0 {
                    self.hairpin.remove(ip);
                    self.dirty_hairpin.push(*ip);
                }
            }
        }
        for rule in &parts.node_ports {
            self.node_ports.remove(rule);
            self.dirty_node_ports = true;
        }
        if parts.rejects {
            self.rejects.remove(name);
            self.dirty_rejects = true;
        }
    }

    /// Puts in what `name` contributes: its `chains` (moved in) and `rejects`.
    pub fn add(
        &mut self,
        name: &ServicePortName,
        parts: &Parts,
        chains: Vec<(String, Vec<String>)>,
        rejects: Vec<String>,
    ) {
        for (chain, rules) in chains {
            self.set(Table::Nat, chain, Some(rules));
        }
        for entry in &parts.entries {
            *self.dst.entry(entry.clone()).or_default() += 1;
            self.dirty_dst.push(entry.0);
        }
        for ip in &parts.endpoint_ips {
            let count = self.hairpin.entry(*ip).or_default();
            *count += 1;
            if *count == 1 {
                self.dirty_hairpin.push(*ip);
            }
        }
        for rule in &parts.node_ports {
            self.node_ports.insert(rule.clone());
            self.dirty_node_ports = true;
        }
        if parts.rejects {
            self.rejects.insert(name.clone(), rejects);
            self.dirty_rejects = true;
        }
    }

    /// Rebuilds what the added and removed Services touched; returns the changed chains.
    pub fn finish(&mut self, options: &RenderOptions) -> ChainChanges {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh {
            self.write_fixed(options);
        }
        let dirty_dst = std::mem::take(&mut self.dirty_dst);
        if fresh || !dirty_dst.is_empty() {
            let old = self.trees.remove("DST").unwrap_or_default();
            let entries: Vec<(u32, &Arc<str>)> = self
                .dst
                .iter()
                .flat_map(|((ip, rule), n)| std::iter::repeat_n((*ip, rule), *n))
                .collect();
            let walk = Walk::run("DST", &entries, dirty_dst, &old, |(_, rule)| {
                rule.to_string()
            });
            let mut root = self.replace_tree("DST", &old, walk);
            root.push(format!(
                "-m addrtype --dst-type LOCAL -m comment --comment \"skiff node ports; must be last\" -j {NODEPORTS}"
            ));
            self.set(Table::Nat, SERVICES.into(), Some(root));
        }
        let dirty_hairpin = std::mem::take(&mut self.dirty_hairpin);
        if fresh || !dirty_hairpin.is_empty() {
            let old = self.trees.remove("HP").unwrap_or_default();
            let entries: Vec<(u32, ())> = self.hairpin.keys().map(|ip| (*ip, ())).collect();
            let walk = Walk::run("HP", &entries, dirty_hairpin, &old, |(raw, ())| {
                let ip = Ipv4Addr::from(*raw);
                format!("-s {ip}/32 -d {ip}/32 -j MASQUERADE --random-fully")
            });
            let root = self.replace_tree("HP", &old, walk);
            let mut postrouting = Vec::new();
            if root.is_empty() {
                self.set(Table::Nat, HAIRPIN.into(), None);
            } else {
                postrouting.push(format!(
                    "-m conntrack --ctstate DNAT -m comment --comment \"skiff hairpin: a Pod served by itself\" -j {HAIRPIN}"
                ));
                self.set(Table::Nat, HAIRPIN.into(), Some(root));
            }
            postrouting.extend([
                format!("-m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
                format!("-j MARK --xor-mark {MASQ_MARK}"),
                "-m comment --comment \"skiff service traffic requiring SNAT\" -j MASQUERADE --random-fully"
                    .into(),
            ]);
            self.set(Table::Nat, POSTROUTING.into(), Some(postrouting));
        }
        if std::mem::take(&mut self.dirty_node_ports) || fresh {
            let rules = self.node_ports.iter().map(|(_, r)| r.to_string()).collect();
            self.set(Table::Nat, NODEPORTS.into(), Some(rules));
        }
        if std::mem::take(&mut self.dirty_rejects) || fresh {
            let rules = self.rejects.values().flatten().cloned().collect();
            self.set(Table::Filter, SERVICES.into(), Some(rules));
        }
        std::mem::take(&mut self.changes)
    }

    fn write_fixed(&mut self, options: &RenderOptions) {
        self.set(
            Table::Nat,
            MARK_MASQ.into(),
            Some(vec![format!("-j MARK --or-mark {MASQ_MARK}")]),
        );
        self.set(
            Table::Nat,
            MARK_DROP.into(),
            Some(vec![format!("-j MARK --or-mark {DROP_MARK}")]),
        );
        let mut firewall = vec![format!(
            "-m mark --mark {DROP_MARK}/{DROP_MARK} -m comment --comment \"skiff dropping marked packets\" -j DROP"
        )];
        if options.localhost_nodeports {
            firewall.push(
                "-d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment \"block incoming localnet connections\" -j DROP"
                    .into(),
            );
        }
        self.set(Table::Filter, FIREWALL.into(), Some(firewall));
    }

    /// Writes the chains `walk` rebuilt, deletes the `old` ones it left out; returns the root.
    fn replace_tree(
        &mut self,
        kind: &'static str,
        old: &BTreeMap<String, (u32, u8)>,
        walk: Walk,
    ) -> Vec<String> {
        let Walk {
            root,
            written,
            kept,
            ..
        } = walk;
        let rewritten: HashSet<&str> = written.iter().map(|(n, _, _)| n.as_str()).collect();
        let mut gone = Vec::new();
        let mut tree = BTreeMap::new();
        for (name, prefix) in old {
            // `kept` is sorted by address and its prefixes are disjoint.
            let at = kept.partition_point(|k| k.0 <= prefix.0);
            if at > 0 && contains(kept[at - 1], *prefix) {
                tree.insert(name.clone(), *prefix);
            } else if !rewritten.contains(name.as_str()) {
                gone.push(name.clone());
            }
        }
        for name in gone {
            self.set(Table::Nat, name, None);
        }
        for (name, prefix, rules) in written {
            tree.insert(name.clone(), prefix);
            self.set(Table::Nat, name, Some(rules));
        }
        self.trees.insert(kind, tree);
        root
    }
}

/// Does prefix `outer` contain prefix `inner`?
fn contains(outer: (u32, u8), inner: (u32, u8)) -> bool {
    let differ = (inner.0 ^ outer.0).checked_shr(u32::from(32 - outer.1));
    inner.1 >= outer.1 && differ.is_none_or(|bits| bits == 0)
}

fn common_len(a: u32, b: u32) -> u8 {
    (a ^ b).leading_zeros() as u8
}

/// The tree level (a multiple of 4 bits) of a group whose addresses share `len` leading bits.
///
/// Levels are fixed boundaries, not relative to the group's neighbours: a chain's name then
/// depends only on the addresses inside its own prefix, so one new address far away (an
/// endpoint outside every existing prefix) does not rename, and rewrite, the whole tree.
fn level(len: u8) -> u8 {
    len / 4 * 4
}

/// One rebuild of a prefix tree along the paths of changed addresses.
#[derive(Debug, Default)]
struct Walk {
    /// The rules of the root level.
    root: Vec<String>,
    /// Chains rebuilt: name, prefix, rules.
    written: Vec<(String, (u32, u8), Vec<String>)>,
    /// Old chains kept whole (with everything below them), in address order.
    kept: Vec<(u32, u8)>,
}

impl Walk {
    /// Rebuilds the `kind` tree over sorted `entries`, where only addresses in `dirty` changed
    /// since `old` was built.
    fn run<T>(
        kind: &'static str,
        entries: &[(u32, T)],
        mut dirty: Vec<u32>,
        old: &BTreeMap<String, (u32, u8)>,
        rule: impl Fn(&(u32, T)) -> String,
    ) -> Walk {
        dirty.sort_unstable();
        dirty.dedup();
        let mut walk = Walk::default();
        let at = At {
            kind,
            dirty: &dirty,
            old,
            rule: &rule,
        };
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            walk.root = walk.split(&at, entries, level(common_len(first.0, last.0)));
        }
        walk
    }

    /// Splits sorted `entries` into chains named `SKIFF-<kind>-<prefix>-<len>` matching on the
    /// destination, until a group holds at most [`LEAF`]; returns the rules of this level.
    fn split<T, F: Fn(&(u32, T)) -> String>(
        &mut self,
        at: &At<'_, F>,
        entries: &[(u32, T)],
        len: u8,
    ) -> Vec<String> {
        if entries.len() <= LEAF || len >= 32 {
            return entries.iter().map(at.rule).collect();
        }
        let next = (len + 4).min(32);
        let bucket = |ip: u32| ip.checked_shr(u32::from(32 - next)).unwrap_or(0);
        let mut rules = Vec::new();
        for group in entries.chunk_by(|a, b| bucket(a.0) == bucket(b.0)) {
            if group.len() <= 2 {
                rules.extend(group.iter().map(at.rule));
                continue;
            }
            let (first, last) = (group[0].0, group[group.len() - 1].0);
            let plen = level(common_len(first, last)).max(next);
            let prefix = Ipv4Net::new(Ipv4Addr::from(first), plen)
                .expect("a prefix length of at most 32")
                .trunc();
            let network = u32::from(prefix.network());
            let name = format!("SKIFF-{}-{network:08X}-{plen}", at.kind);
            let broadcast = u32::from(prefix.broadcast());
            let next_dirty = at.dirty.partition_point(|ip| *ip < network);
            let touched = at.dirty.get(next_dirty).is_some_and(|ip| *ip <= broadcast);
            if !touched && at.old.contains_key(&name) {
                self.kept.push((network, plen));
            } else {
                let sub = self.split(at, group, plen);
                self.written.push((name.clone(), (network, plen), sub));
            }
            rules.push(format!("-d {prefix} -j {name}"));
        }
        rules
    }
}

/// What every level of a [`Walk`] reads.
struct At<'a, F> {
    kind: &'static str,
    dirty: &'a [u32],
    old: &'a BTreeMap<String, (u32, u8)>,
    rule: &'a F,
}
