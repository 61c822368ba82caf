//! Turning rulesets into `iptables-restore --noflush` text: full, partial, and cleanup.
//!
//! With `--noflush`, a chain line (`:SKIFF-SVC-X - [0:0]`) creates or *flushes* that chain and
//! leaves every other chain alone, and a rule may jump to any chain the kernel already has. So a
//! partial sync writes chain lines and rules only for chains whose rules differ from what was
//! last applied, deletes chains that are gone (flush first, `-X` last, after the rewritten
//! chains stopped referring to them), and says nothing about the rest — kube-proxy's trick, with
//! the changed set found by comparing the chains a render touched (it hands over their previous
//! rules) instead of trusting change events, and without looking at untouched ones. A full
//! sync (the first, and the one after any failure) rewrites every chain of ours, removes
//! `SKIFF-` chains the kernel has but we no longer want, and inserts missing hook rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use skiff_iptables::{Chains, Table, Tables, jumps_to};

use super::render::{CHAIN_PREFIX, Ruleset, hooks};

/// What `iptables-save` says about our part of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTable {
    /// Our chains that exist.
    pub chains: BTreeSet<String>,
    /// Rules in built-in chains that jump into ours: (chain, rule words after `-A chain`).
    pub hooks: Vec<(String, String)>,
}

/// Reads our chains and hook rules out of `iptables-save` text.
pub fn parse_save(text: &str) -> KernelTable {
    let mut ours = KernelTable::default();
    for (_, chains) in Tables::parse(text).iter() {
        for (chain, rules) in chains {
            if chain.starts_with(CHAIN_PREFIX) {
                ours.chains.insert(chain.clone());
                continue;
            }
            for rule in rules {
                if jumps_to(rule).is_some_and(|t| t.starts_with(CHAIN_PREFIX)) {
                    ours.hooks.push((chain.clone(), rule.clone()));
                }
            }
        }
    }
    ours
}

fn write_chain_rules(out: &mut String, name: &str, rules: &[String]) {
    for rule in rules {
        let _ = writeln!(out, "-A {name} {rule}");
    }
}

/// Full-sync text for `table`: every chain of ours rewritten, stale ones removed, hooks ensured.
pub fn full(table: Table, desired: &Ruleset, kernel: &KernelTable) -> String {
    let chains = desired.chains(table);
    let stale: Vec<&String> = kernel
        .chains
        .iter()
        .filter(|c| !chains.contains_key(*c))
        .collect();
    let mut out = format!("*{}\n", table.as_str());
    for name in chains.keys().chain(stale.iter().copied()) {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (name, rules) in chains {
        write_chain_rules(&mut out, name, rules);
    }
    // Hooks go in last, so they never point at a chain this text has not declared yet.
    for (hook_table, chain, rule) in hooks().iter().rev() {
        let present = kernel
            .hooks
            .iter()
            .any(|(c, r)| c == chain && same_jump(r, rule));
        if *hook_table == table && !present {
            let _ = writeln!(out, "-I {chain} {rule}");
        }
    }
    for name in stale {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    out
}

/// Do two hook rules jump to the same chain? (`iptables-save` may respell the matches.)
fn same_jump(a: &str, b: &str) -> bool {
    jumps_to(a) == jumps_to(b) && a.contains("--ctstate NEW") == b.contains("--ctstate NEW")
}

/// Partial-sync text for `table`, or `None` when nothing in it changed: only the chains in
/// `changes` (the ones a render touched, with what they held before) are compared.
pub fn partial(
    table: Table,
    desired: &Ruleset,
    changes: &BTreeMap<String, Option<Vec<String>>>,
) -> Option<String> {
    let want = desired.chains(table);
    let mut changed: Vec<(&String, &Vec<String>)> = Vec::new();
    let mut gone: Vec<&String> = Vec::new();
    for (name, before) in changes {
        match (want.get(name), before) {
            (Some(rules), before) if before.as_ref() != Some(rules) => changed.push((name, rules)),
            (None, Some(_)) => gone.push(name),
            _ => {}
        }
    }
    if changed.is_empty() && gone.is_empty() {
        return None;
    }
    let mut out = format!("*{}\n", table.as_str());
    for name in changed.iter().map(|(n, _)| *n).chain(gone.iter().copied()) {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (name, rules) in &changed {
        write_chain_rules(&mut out, name, rules);
    }
    for name in gone {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Cleanup text for `table`: hook rules deleted, every chain of ours flushed and removed.
pub fn cleanup(table: Table, kernel: &KernelTable) -> Option<String> {
    if kernel.chains.is_empty() && kernel.hooks.is_empty() {
        return None;
    }
    let mut out = format!("*{}\n", table.as_str());
    for name in &kernel.chains {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (chain, rule) in &kernel.hooks {
        let _ = writeln!(out, "-D {chain} {rule}");
    }
    for name in &kernel.chains {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// The rules of `chains` as restore text without declarations (for golden files and dumps).
pub fn dump(table: Table, chains: &Chains) -> String {
    let mut out = format!("*{}\n", table.as_str());
    for name in chains.keys() {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (name, rules) in chains {
        write_chain_rules(&mut out, name, rules);
    }
    out.push_str("COMMIT\n");
    out
}
