//! The restore-text model: tables of chains of rules, read from save text or changed by restore.
//!
//! One reading of the text serves everyone: [`Tables::parse`] takes `iptables-save` output as
//! it is (leniently: a ruleset written by others may use targets we never write), and
//! [`Tables::apply`] changes tables the way `iptables-restore --noflush` does, refusing what the
//! kernel refuses — a rule in a chain that does not exist, a jump to a missing chain, deleting a
//! chain still referenced or not empty, a table without `COMMIT` — and changing nothing when it
//! refuses (iptables-nft applies one restore as one transaction).

use std::collections::BTreeMap;

use crate::table::Table;
use crate::words::{jumps_to, split_words};

/// Chains of one table: name → rules (the text after `-A NAME`, as written).
pub type Chains = BTreeMap<String, Vec<String>>;

/// Targets that are not chains (the extensions skiff or its neighbours use).
const EXTENSION_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "QUEUE",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REDIRECT",
    "MARK",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "LOG",
    "NFLOG",
    "TCPMSS",
];

/// Why restore text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text}")]
pub struct RestoreError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
    /// The line.
    pub text: String,
}

/// Tables of chains of rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    tables: BTreeMap<Table, Chains>,
}

impl Tables {
    /// Every table with only its built-in chains, empty: a fresh network namespace.
    pub fn with_builtins() -> Self {
        let tables = Table::ALL
            .into_iter()
            .map(|table| {
                let chains = table
                    .builtin_chains()
                    .iter()
                    .map(|c| ((*c).to_owned(), Vec::new()))
                    .collect();
                (table, chains)
            })
            .collect();
        Tables { tables }
    }

    /// Reads save (or restore) text: every `*table` section's chain declarations and `-A`
    /// rules. Lenient: other lines, and tables iptables does not have, are passed over.
    pub fn parse(text: &str) -> Self {
        let mut tables = Tables::default();
        let mut current: Option<Table> = None;
        for line in text.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                current = name.parse().ok();
                if let Some(table) = current {
                    tables.tables.entry(table).or_default();
                }
                continue;
            }
            let Some(chains) = current.and_then(|t| tables.tables.get_mut(&t)) else {
                continue;
            };
            if let Some(decl) = line.strip_prefix(':') {
                let name = decl.split_whitespace().next().unwrap_or_default();
                chains.entry(name.to_owned()).or_default();
            } else if let Some((chain, rule)) = line.strip_prefix("-A ").map(chain_and_rule) {
                chains
                    .entry(chain.to_owned())
                    .or_default()
                    .push(rule.to_owned());
            }
        }
        tables
    }

    /// Applies restore text as `iptables-restore --noflush` would: all of it, or (on error)
    /// nothing.
    pub fn apply(&mut self, text: &str) -> Result<(), RestoreError> {
        *self = self.applied(text)?;
        Ok(())
    }

    /// What applying restore text would leave, without changing these tables (a dry run, as
    /// `iptables -C` is).
    pub fn applied(&self, text: &str) -> Result<Tables, RestoreError> {
        let mut next = self.clone();
        let mut open: Option<(Table, usize, &str)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let fail = |message: &str| RestoreError {
                line: n + 1,
                message: message.to_owned(),
                text: line.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                if open.is_some() {
                    return Err(fail("COMMIT expected before the next table"));
                }
                let table: Table = name.parse().map_err(|e: String| fail(&e))?;
                let chains = next.tables.entry(table).or_default();
                for builtin in table.builtin_chains() {
                    chains.entry((*builtin).to_owned()).or_default();
                }
                open = Some((table, n + 1, line));
                continue;
            }
            let Some((table, _, _)) = open else {
                return Err(fail("outside a table"));
            };
            if line == "COMMIT" {
                open = None;
                continue;
            }
            next.apply_line(table, line).map_err(|m| fail(&m))?;
        }
        if let Some((_, line, text)) = open {
            return Err(RestoreError {
                line,
                message: "COMMIT expected".to_owned(),
                text: text.to_owned(),
            });
        }
        Ok(next)
    }

    fn apply_line(&mut self, table: Table, line: &str) -> Result<(), String> {
        let chains = self.tables.entry(table).or_default();
        if let Some(decl) = line.strip_prefix(':') {
            // A declaration creates a chain of ours or flushes it; a built-in one keeps its rules.
            let name = decl.split_whitespace().next().unwrap_or_default();
            if !table.is_builtin(name) {
                chains.insert(name.to_owned(), Vec::new());
            }
            return Ok(());
        }
        let (op, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (chain, rule) = chain_and_rule(rest.trim_start());
        match op {
            "-N" if chains.contains_key(chain) => Err("chain already exists".to_owned()),
            "-N" => {
                chains.insert(chain.to_owned(), Vec::new());
                Ok(())
            }
            "-X" => delete_chain(table, chains, chain),
            "-F" => {
                chains.get_mut(chain).ok_or("no such chain")?.clear();
                Ok(())
            }
            "-A" | "-I" | "-D" => change_rule(chains, op, chain, rule),
            _ => Err("unknown command".to_owned()),
        }
    }

    /// A table's chains (`None`: the text never named the table).
    pub fn chains(&self, table: Table) -> Option<&Chains> {
        self.tables.get(&table)
    }

    /// The rules of one chain (`None` when it does not exist).
    pub fn chain(&self, table: Table, name: &str) -> Option<&[String]> {
        self.chains(table)?.get(name).map(Vec::as_slice)
    }

    /// Every table the model holds, with its chains.
    pub fn iter(&self) -> impl Iterator<Item = (Table, &Chains)> {
        self.tables.iter().map(|(t, c)| (*t, c))
    }

    /// `iptables-save -t table` text for the table.
    pub fn save(&self, table: Table) -> String {
        let empty = Chains::new();
        let chains = self.chains(table).unwrap_or(&empty);
        let mut out = format!("*{table}\n");
        for name in chains.keys() {
            let policy = if table.is_builtin(name) {
                "ACCEPT"
            } else {
                "-"
            };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for (name, rules) in chains {
            for rule in rules {
                out.push_str(&format!("-A {name} {rule}\n"));
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// `CHAIN rule words...` → (chain, rule as written).
fn chain_and_rule(rest: &str) -> (&str, &str) {
    let (chain, rule) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    (chain, rule.trim())
}

fn delete_chain(table: Table, chains: &mut Chains, chain: &str) -> Result<(), String> {
    if table.is_builtin(chain) {
        return Err("cannot delete a built-in chain".to_owned());
    }
    let rules = chains.get(chain).ok_or("no such chain")?;
    if !rules.is_empty() {
        return Err("chain not empty".to_owned());
    }
    let referenced = chains
        .iter()
        .any(|(name, rules)| name != chain && rules.iter().any(|r| jumps_to(r) == Some(chain)));
    if referenced {
        return Err("chain still referenced".to_owned());
    }
    chains.remove(chain);
    Ok(())
}

fn change_rule(chains: &mut Chains, op: &str, chain: &str, rule: &str) -> Result<(), String> {
    if let Some(target) = jumps_to(rule)
        && !EXTENSION_TARGETS.contains(&target)
        && !chains.contains_key(target)
    {
        return Err(format!("no chain/target named {target}"));
    }
    let rules = chains.get_mut(chain).ok_or("no such chain")?;
    let (number, rest) = match rule.split_once(char::is_whitespace) {
        Some((first, rest)) => (first.parse::<usize>().ok(), rest.trim()),
        None => (rule.parse::<usize>().ok(), ""),
    };
    match (op, number) {
        ("-A", _) => rules.push(rule.to_owned()),
        ("-I", Some(at)) if at >= 1 && at <= rules.len() + 1 => {
            rules.insert(at - 1, rest.to_owned());
        }
        ("-I", Some(_)) => return Err("index of insertion too big".to_owned()),
        ("-I", None) => rules.insert(0, rule.to_owned()),
        ("-D", Some(at)) if rest.is_empty() => {
            if at == 0 || at > rules.len() {
                return Err("index of deletion too big".to_owned());
            }
            rules.remove(at - 1);
        }
        _ => {
            let words = split_words(rule);
            let at = rules
                .iter()
                .position(|r| split_words(r) == words)
                .ok_or("no such rule")?;
            rules.remove(at);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
