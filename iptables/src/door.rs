//! The door: the three things skiff asks of iptables.

use crate::real::NamespaceError;
use crate::table::Table;

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
        /// The command line (for a restore, with the text it was given).
        command: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The network namespace to run in could not be entered.
    #[error("cannot run iptables in its network namespace: {0}")]
    Namespace(#[source] NamespaceError),
}

/// Reads and writes iptables rules in one network namespace.
pub trait Iptables: Send + Sync {
    /// Applies restore text (any number of `*table` ... `COMMIT` sections) with `--noflush`:
    /// chains it does not declare keep their rules.
    fn restore(&self, text: &str) -> Result<(), IptablesError>;
    /// `iptables-save -t table`.
    fn save(&self, table: Table) -> Result<String, IptablesError>;
    /// Does `rule` (argv words after the chain name) exist in `table`'s `chain`?
    fn check(&self, table: Table, chain: &str, rule: &[String]) -> Result<bool, IptablesError>;
}
