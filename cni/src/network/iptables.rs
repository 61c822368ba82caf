//! The firewall door: `iptables-restore --noflush` to write, `iptables -C` to ask.
//!
//! Writes go through `iptables-restore` because it applies a whole table change atomically and
//! leaves every chain it is not told about alone (`--noflush`), so skiff's rules live next to
//! Docker's, kube-proxy's or the admin's without clobbering them. The only question the node
//! network asks is "is this rule there?", which is `iptables -C`'s exit status. The real door
//! runs both binaries from the node's namespace thread (children inherit that thread's network
//! namespace); [`FakeIptables`] models just enough of restore's grammar for the masquerade logic.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::netns::{NetnsError, NetnsThread};

/// Why an iptables call failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// The binary could not be run.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// e.g. `iptables-restore`.
        binary: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran and refused.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line (or `iptables-restore` and the first line it choked on).
        command: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The namespace thread is gone.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Reads and writes iptables rules in one network namespace.
pub trait Iptables {
    /// Applies `rules` (restore format, with `*table` and `COMMIT`) without flushing other chains.
    fn restore(&self, rules: &str) -> Result<(), IptablesError>;
    /// Does `rule` (argv words after the chain name) exist in `table`'s `chain`?
    fn check(&self, table: &str, chain: &str, rule: &[String]) -> Result<bool, IptablesError>;
}

/// Runs the `iptables` binaries on the node's namespace thread.
#[derive(Debug)]
pub struct RealIptables {
    thread: Arc<NetnsThread>,
}

/// Seconds to wait for the xtables lock another writer holds.
const LOCK_WAIT: &str = "5";

impl RealIptables {
    /// The door in `thread`'s namespace.
    pub fn new(thread: Arc<NetnsThread>) -> Self {
        RealIptables { thread }
    }
}

impl Iptables for RealIptables {
    fn restore(&self, rules: &str) -> Result<(), IptablesError> {
        let rules = rules.to_owned();
        self.thread.run(move || {
            let mut child = Command::new("iptables-restore")
                .args(["--noflush", "--wait", LOCK_WAIT])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|source| IptablesError::Spawn {
                    binary: "iptables-restore",
                    source,
                })?;
            if let Some(mut stdin) = child.stdin.take() {
                // A write error shows up as the child's failure below.
                let _ = stdin.write_all(rules.as_bytes());
            }
            let output = child
                .wait_with_output()
                .map_err(|source| IptablesError::Spawn {
                    binary: "iptables-restore",
                    source,
                })?;
            if output.status.success() {
                Ok(())
            } else {
                Err(IptablesError::Failed {
                    command: format!("iptables-restore --noflush <<< {:?}", rules),
                    status: output.status.to_string(),
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                })
            }
        })?
    }

    fn check(&self, table: &str, chain: &str, rule: &[String]) -> Result<bool, IptablesError> {
        let mut args: Vec<String> = ["--wait", LOCK_WAIT, "-t", table, "-C", chain]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(rule.iter().cloned());
        self.thread.run(move || {
            let output = Command::new("iptables")
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .map_err(|source| IptablesError::Spawn {
                    binary: "iptables",
                    source,
                })?;
            // 0: the rule exists; 1: it does not; anything else: the question was bad.
            match output.status.code() {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                _ => Err(IptablesError::Failed {
                    command: format!("iptables {}", args.join(" ")),
                    status: output.status.to_string(),
                    stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                }),
            }
        })?
    }
}

/// Splits a restore-format line into words; double quotes group words and are dropped.
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Chains every table starts with, which restore never flushes and `-X` never deletes.
const BUILTIN: &[&str] = &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// Targets that are not chains.
const BUILTIN_TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "MASQUERADE",
    "SNAT",
    "DNAT",
    "MARK",
    "LOG",
];

/// An in-memory iptables: tables of chains of rules (argv words), changed atomically per restore.
#[derive(Clone, Debug, Default)]
pub struct FakeIptables {
    state: Arc<Mutex<FakeTables>>,
}

#[derive(Clone, Debug, Default)]
struct FakeTables {
    tables: BTreeMap<String, BTreeMap<String, Vec<Vec<String>>>>,
    restores: Vec<String>,
}

impl FakeIptables {
    /// No rules at all.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeTables> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rules of `table`'s `chain` (`None` when the chain does not exist).
    pub fn chain(&self, table: &str, chain: &str) -> Option<Vec<Vec<String>>> {
        let state = self.state();
        let chains = state.tables.get(table);
        match chains.and_then(|c| c.get(chain)) {
            Some(rules) => Some(rules.clone()),
            None if BUILTIN.contains(&chain) => Some(Vec::new()),
            None => None,
        }
    }

    /// Every restore text applied so far.
    pub fn restores(&self) -> Vec<String> {
        self.state().restores.clone()
    }
}

impl Iptables for FakeIptables {
    fn restore(&self, rules: &str) -> Result<(), IptablesError> {
        let mut state = self.state();
        let mut next = state.tables.clone();
        apply(&mut next, rules).map_err(|stderr| IptablesError::Failed {
            command: "iptables-restore --noflush".to_owned(),
            status: "exit status: 1".to_owned(),
            stderr,
        })?;
        state.tables = next;
        state.restores.push(rules.to_owned());
        Ok(())
    }

    fn check(&self, table: &str, chain: &str, rule: &[String]) -> Result<bool, IptablesError> {
        let missing_target = rule.windows(2).find(|w| w[0] == "-j").is_some_and(|w| {
            !BUILTIN_TARGETS.contains(&w[1].as_str()) && self.chain(table, &w[1]).is_none()
        });
        if missing_target {
            return Err(IptablesError::Failed {
                command: format!("iptables -t {table} -C {chain}"),
                status: "exit status: 2".to_owned(),
                stderr: "Couldn't load target".to_owned(),
            });
        }
        Ok(self
            .chain(table, chain)
            .is_some_and(|rules| rules.iter().any(|r| r == rule)))
    }
}

type Chains = BTreeMap<String, Vec<Vec<String>>>;

fn apply(tables: &mut BTreeMap<String, Chains>, text: &str) -> Result<(), String> {
    let mut table: Option<String> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.to_owned());
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let name = table.as_ref().ok_or(format!("{line:?} outside a table"))?;
        let chains = tables.entry(name.clone()).or_default();
        if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if !BUILTIN.contains(&chain) {
                chains.insert(chain.to_owned(), Vec::new());
            }
            continue;
        }
        let words = split_words(line);
        let (op, chain) = match words.as_slice() {
            [op, chain, ..] => (op.as_str(), chain.clone()),
            _ => return Err(format!("bad line {line:?}")),
        };
        let exists = BUILTIN.contains(&chain.as_str()) || chains.contains_key(&chain);
        if !exists {
            return Err(format!("{line:?}: no chain {chain}"));
        }
        let rules = chains.entry(chain.clone()).or_default();
        match op {
            "-A" => rules.push(words[2..].to_vec()),
            "-I" => {
                let (at, rest) = match words.get(2).and_then(|w| w.parse::<usize>().ok()) {
                    Some(n) => (n.saturating_sub(1), &words[3..]),
                    None => (0, &words[2..]),
                };
                rules.insert(at.min(rules.len()), rest.to_vec());
            }
            "-D" => {
                let at = rules
                    .iter()
                    .position(|r| r.as_slice() == &words[2..])
                    .ok_or(format!("{line:?}: no such rule"))?;
                rules.remove(at);
            }
            "-F" => rules.clear(),
            "-X" => {
                let referenced = chains
                    .values()
                    .flatten()
                    .any(|r| r.windows(2).any(|w| w[0] == "-j" && w[1] == chain));
                if referenced {
                    return Err(format!("{line:?}: chain {chain} is still referenced"));
                }
                chains.remove(&chain);
            }
            _ => return Err(format!("unsupported line {line:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line)
    }

    #[test]
    fn quoted_words_stay_together() {
        assert_eq!(
            words(r#"-A X -m comment --comment "two words" -j RETURN"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "two words",
                "-j",
                "RETURN"
            ]
        );
        assert_eq!(words(r#"--comment """#), ["--comment", ""]);
    }

    #[test]
    fn the_fake_applies_a_restore_whole_or_not_at_all() {
        let ipt = FakeIptables::new();
        ipt.restore("*nat\n:MINE - [0:0]\n-A MINE -j RETURN\n-I POSTROUTING 1 -j MINE\nCOMMIT\n")
            .unwrap();
        assert_eq!(ipt.chain("nat", "MINE"), Some(vec![words("-j RETURN")]));
        assert!(ipt.check("nat", "POSTROUTING", &words("-j MINE")).unwrap());
        // The second line fails (still referenced), so the first is undone too.
        let err = ipt
            .restore("*nat\n-A MINE -j ACCEPT\n-X MINE\nCOMMIT\n")
            .unwrap_err();
        assert!(err.to_string().contains("still referenced"), "{err}");
        assert_eq!(ipt.chain("nat", "MINE"), Some(vec![words("-j RETURN")]));
        assert!(
            ipt.check("nat", "POSTROUTING", &words("-j NOPE-X"))
                .is_err()
        );
    }
}
