//! The fake door: [`Tables`] in memory, changed by restores as the kernel would change them.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::door::{Iptables, IptablesError};
use crate::model::{Chains, Tables};
use crate::table::Table;
use crate::words::join_words;

#[derive(Debug)]
struct FakeState {
    tables: Tables,
    restores: Vec<String>,
    fail_restores: usize,
}

/// In-memory iptables with restore's semantics; cheap to clone (clones share state).
#[derive(Clone, Debug)]
pub struct FakeIptables {
    state: Arc<Mutex<FakeState>>,
}

impl Default for FakeIptables {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeIptables {
    /// Every table with only its built-in chains.
    pub fn new() -> Self {
        let state = FakeState {
            tables: Tables::with_builtins(),
            restores: Vec::new(),
            fail_restores: 0,
        };
        FakeIptables {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next `n` restores fail (and change nothing).
    pub fn fail_next_restores(&self, n: usize) {
        self.lock().fail_restores = n;
    }

    /// Every restore text given so far (applied or not), in order.
    pub fn restores(&self) -> Vec<String> {
        self.lock().restores.clone()
    }

    /// Forgets the restore history.
    pub fn clear_history(&self) {
        self.lock().restores.clear();
    }

    /// A table's chains as they are now.
    pub fn chains(&self, table: Table) -> Chains {
        self.lock()
            .tables
            .chains(table)
            .cloned()
            .unwrap_or_default()
    }

    /// The rules of one chain (`None` when it does not exist).
    pub fn chain(&self, table: Table, name: &str) -> Option<Vec<String>> {
        self.lock()
            .tables
            .chain(table, name)
            .map(<[String]>::to_vec)
    }
}

fn refused(command: String, status: u8, stderr: String) -> IptablesError {
    IptablesError::Failed {
        command,
        status: format!("exit status: {status}"),
        stderr,
    }
}

impl Iptables for FakeIptables {
    fn restore(&self, text: &str) -> Result<(), IptablesError> {
        let mut state = self.lock();
        state.restores.push(text.to_owned());
        let command = || "iptables-restore --noflush".to_owned();
        if state.fail_restores > 0 {
            state.fail_restores -= 1;
            return Err(refused(command(), 1, "injected failure".to_owned()));
        }
        state
            .tables
            .apply(text)
            .map_err(|err| refused(command(), 1, err.to_string()))
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        Ok(self.lock().tables.save(table))
    }

    fn check(&self, table: Table, chain: &str, rule: &[String]) -> Result<bool, IptablesError> {
        // `iptables -C` is a one-rule restore that is never applied.
        let text = format!("*{table}\n-D {chain} {}\nCOMMIT\n", join_words(rule));
        match self.lock().tables.applied(&text) {
            Ok(_) => Ok(true),
            Err(err) if err.message == "no such rule" || err.message == "no such chain" => {
                Ok(false)
            }
            Err(err) => Err(refused(
                format!("iptables -t {table} -C {chain}"),
                2,
                err.message,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::words::split_words;

    #[test]
    fn check_answers_whether_a_rule_is_there_and_refuses_bad_questions() {
        let ipt = FakeIptables::new();
        ipt.restore("*nat\n:MINE - [0:0]\n-I POSTROUTING 1 -m comment --comment \"my jump\" -j MINE\nCOMMIT\n")
            .unwrap();
        let jump = split_words(r#"-m comment --comment "my jump" -j MINE"#);
        assert!(ipt.check(Table::Nat, "POSTROUTING", &jump).unwrap());
        assert!(!ipt.check(Table::Nat, "OUTPUT", &jump).unwrap());
        assert!(!ipt.check(Table::Nat, "NOPE", &jump).unwrap());
        let err = ipt
            .check(Table::Nat, "POSTROUTING", &split_words("-j NOPE-X"))
            .unwrap_err();
        assert!(
            err.to_string().contains("no chain/target named NOPE-X"),
            "{err}"
        );
        assert_eq!(ipt.restores().len(), 1, "checks are not restores");
    }

    #[test]
    fn injected_failures_change_nothing_and_are_recorded() {
        let ipt = FakeIptables::new();
        ipt.fail_next_restores(1);
        let text = "*filter\n:X - [0:0]\nCOMMIT\n";
        assert!(
            ipt.restore(text)
                .unwrap_err()
                .to_string()
                .contains("injected failure")
        );
        assert!(ipt.chain(Table::Filter, "X").is_none());
        ipt.restore(text).unwrap();
        assert_eq!(ipt.chain(Table::Filter, "X"), Some(Vec::new()));
        assert_eq!(ipt.restores(), [text, text]);
    }
}
