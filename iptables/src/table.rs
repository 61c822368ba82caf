//! The tables iptables knows, and the chains each is born with.

use std::fmt;
use std::str::FromStr;

/// An iptables table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `filter`: accept, reject or drop.
    Filter,
    /// `nat`: address translation of a connection's first packet.
    Nat,
    /// `mangle`: marks and header changes.
    Mangle,
    /// `raw`: before connection tracking.
    Raw,
    /// `security`: SELinux marks.
    Security,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Filter,
        Table::Nat,
        Table::Mangle,
        Table::Raw,
        Table::Security,
    ];

    /// The table's name, as `-t` and `*table` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
            Table::Mangle => "mangle",
            Table::Raw => "raw",
            Table::Security => "security",
        }
    }

    /// The chains the table starts with, which restore never flushes and `-X` never deletes.
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Filter | Table::Security => &["INPUT", "FORWARD", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Mangle => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            Table::Raw => &["PREROUTING", "OUTPUT"],
        }
    }

    /// Is `chain` one the table starts with?
    pub fn is_builtin(self, chain: &str) -> bool {
        self.builtin_chains().contains(&chain)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Table {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Table::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| format!("no table {name:?}"))
    }
}
