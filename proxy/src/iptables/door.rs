//! The kernel door for iptables: `iptables-restore --noflush` to write, `iptables-save` to read.
//!
//! Everything the proxy writes goes through one `iptables-restore` call per table, so a table
//! changes atomically and chains we do not name are left alone (Docker's, the admin's, the CNI
//! plugin's). Reading is only needed for full syncs and cleanup: which `SKIFF-` chains and hook
//! rules the kernel already has. [`FakeIptables`] keeps tables in memory with enough of
//! restore's grammar and checks (unknown chain, chain still referenced, atomic failure) that the
//! data plane's partial-sync logic can be tested without root.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};

/// A table we write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `nat`.
    Nat,
    /// `filter`.
    Filter,
}

impl Table {
    /// Both tables, in the order they are written.
    pub const ALL: [Table; 2] = [Table::Filter, Table::Nat];

    /// The table's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }

    fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }
}

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
    #[error("{binary} failed on table {table} ({status}): {stderr}")]
    Failed {
        /// e.g. `iptables-restore`.
        binary: &'static str,
        /// The table.
        table: &'static str,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// Reads and writes whole tables.
pub trait Iptables: Send + Sync {
    /// Applies restore text (with `*table` ... `COMMIT`) with `--noflush`, atomically.
    fn restore(&self, table: Table, text: &str) -> Result<(), IptablesError>;
    /// `iptables-save -t table`.
    fn save(&self, table: Table) -> Result<String, IptablesError>;
}

/// Runs the system's `iptables-restore` / `iptables-save` in the calling process's namespace.
#[derive(Clone, Debug)]
pub struct RealIptables {
    restore_bin: String,
    save_bin: String,
}

/// Seconds to wait for the xtables lock another writer holds.
const LOCK_WAIT: &str = "5";

impl Default for RealIptables {
    fn default() -> Self {
        RealIptables {
            restore_bin: "iptables-restore".into(),
            save_bin: "iptables-save".into(),
        }
    }
}

impl RealIptables {
    /// The system's binaries, found on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Other binaries (e.g. `iptables-legacy-restore`).
    pub fn with_binaries(restore: &str, save: &str) -> Self {
        RealIptables {
            restore_bin: restore.into(),
            save_bin: save.into(),
        }
    }
}

impl Iptables for RealIptables {
    fn restore(&self, table: Table, text: &str) -> Result<(), IptablesError> {
        let spawn = |source| IptablesError::Spawn {
            binary: "iptables-restore",
            source,
        };
        let mut child = Command::new(&self.restore_bin)
            .args(["--noflush", "--wait", LOCK_WAIT])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn)?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error shows up as the child's failure below.
            let _ = stdin.write_all(text.as_bytes());
        }
        let output = child.wait_with_output().map_err(spawn)?;
        if output.status.success() {
            return Ok(());
        }
        Err(IptablesError::Failed {
            binary: "iptables-restore",
            table: table.as_str(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let output = Command::new(&self.save_bin)
            .args(["-t", table.as_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| IptablesError::Spawn {
                binary: "iptables-save",
                source,
            })?;
        if !output.status.success() {
            return Err(IptablesError::Failed {
                binary: "iptables-save",
                table: table.as_str(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Chains of one table: name → rules (the words after `-A NAME`).
pub type Chains = BTreeMap<String, Vec<String>>;

/// Targets that are not chains.
const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "REJECT",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "MARK",
    "LOG",
];

#[derive(Debug, Default)]
struct FakeState {
    tables: BTreeMap<Table, Chains>,
    restores: Vec<(Table, String)>,
    fail_restores: usize,
}

/// In-memory tables with restore's semantics; cheap to clone (clones share state).
#[derive(Clone, Debug, Default)]
pub struct FakeIptables {
    state: Arc<Mutex<FakeState>>,
}

impl FakeIptables {
    /// Empty tables with only the built-in chains.
    pub fn new() -> Self {
        let fake = FakeIptables::default();
        {
            let mut state = fake.lock();
            for table in Table::ALL {
                let chains = table
                    .builtin_chains()
                    .iter()
                    .map(|c| ((*c).to_owned(), Vec::new()))
                    .collect();
                state.tables.insert(table, chains);
            }
        }
        fake
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` restores fail (and change nothing).
    pub fn fail_next_restores(&self, n: usize) {
        self.lock().fail_restores = n;
    }

    /// Every restore text applied so far (successful or not), in order.
    pub fn restores(&self) -> Vec<(Table, String)> {
        self.lock().restores.clone()
    }

    /// Forgets the restore history.
    pub fn clear_history(&self) {
        self.lock().restores.clear();
    }

    /// A table's chains as they are now.
    pub fn chains(&self, table: Table) -> Chains {
        self.lock().tables.get(&table).cloned().unwrap_or_default()
    }
}

fn fake_error(table: Table, message: String) -> IptablesError {
    IptablesError::Failed {
        binary: "iptables-restore",
        table: table.as_str(),
        status: "exit status: 1".into(),
        stderr: message,
    }
}

/// Applies restore text to `chains` the way `iptables-restore --noflush` would.
fn apply_restore(table: Table, chains: &mut Chains, text: &str) -> Result<(), String> {
    let mut committed = false;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        let at = |msg: &str| format!("line {}: {msg}: {line}", n + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if name != table.as_str() {
                return Err(at("wrong table"));
            }
        } else if line == "COMMIT" {
            committed = true;
        } else if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if table.builtin_chains().contains(&name) {
                continue;
            }
            chains.insert(name.to_owned(), Vec::new());
        } else {
            let (op, rest) = line.split_once(' ').ok_or_else(|| at("bad line"))?;
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            match op {
                "-X" => {
                    let referenced = chains.iter().any(|(c, rules)| {
                        c != chain && rules.iter().any(|r| jumps_to(r) == Some(chain))
                    });
                    if referenced {
                        return Err(at("chain still referenced"));
                    }
                    chains.remove(chain).ok_or_else(|| at("no such chain"))?;
                    continue;
                }
                "-A" | "-I" | "-D" => {}
                _ => return Err(at("unknown command")),
            }
            if let Some(target) = jumps_to(rule)
                && !TARGETS.contains(&target)
                && !chains.contains_key(target)
            {
                return Err(at("no chain/target by that name"));
            }
            let rules = chains.get_mut(chain).ok_or_else(|| at("no such chain"))?;
            match op {
                "-A" => rules.push(rule.to_owned()),
                "-I" => rules.insert(0, rule.to_owned()),
                _ => {
                    let i = rules
                        .iter()
                        .position(|r| r == rule)
                        .ok_or_else(|| at("no such rule"))?;
                    rules.remove(i);
                }
            }
        }
    }
    if committed {
        Ok(())
    } else {
        Err("no COMMIT".into())
    }
}

/// The `-j` target of a rule.
pub fn jumps_to(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" {
            return words.next();
        }
    }
    None
}

impl Iptables for FakeIptables {
    fn restore(&self, table: Table, text: &str) -> Result<(), IptablesError> {
        let mut state = self.lock();
        state.restores.push((table, text.to_owned()));
        if state.fail_restores > 0 {
            state.fail_restores -= 1;
            return Err(fake_error(table, "injected failure".into()));
        }
        let mut chains = state.tables.get(&table).cloned().unwrap_or_default();
        apply_restore(table, &mut chains, text).map_err(|m| fake_error(table, m))?;
        state.tables.insert(table, chains);
        Ok(())
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let state = self.lock();
        let chains = state.tables.get(&table).cloned().unwrap_or_default();
        let mut out = format!("*{}\n", table.as_str());
        for name in chains.keys() {
            let policy = if table.builtin_chains().contains(&name.as_str()) {
                "ACCEPT"
            } else {
                "-"
            };
            out.push_str(&format!(":{name} {policy} [0:0]\n"));
        }
        for (name, rules) in &chains {
            for rule in rules {
                out.push_str(&format!("-A {name} {rule}\n"));
            }
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }
}
