//! The real door: the system's `iptables-restore`, `iptables-save` and `iptables -C`.
//!
//! The binaries act on the network namespace they start in. The proxy runs them from its own
//! namespace; the node network runs them on a thread that entered the node's namespace (a
//! child inherits its thread's namespace), which it hands over as a [`Namespace`].

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use crate::door::{Iptables, IptablesError};
use crate::table::Table;

/// Seconds to wait for the xtables lock another writer holds.
const LOCK_WAIT: &str = "5";

/// Why a command could not be run in a namespace.
pub type NamespaceError = Box<dyn std::error::Error + Send + Sync>;

/// Where the binaries run: a network namespace that can run a command for us.
pub trait Namespace: Send + Sync {
    /// Runs `command` in the namespace with `input` on its stdin and collects its output (the
    /// outer error: the namespace could not run it; the inner: the command could not start).
    fn output(
        &self,
        command: Command,
        input: Option<&[u8]>,
    ) -> Result<std::io::Result<Output>, NamespaceError>;
}

/// The calling thread's own network namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct CurrentNamespace;

impl Namespace for CurrentNamespace {
    fn output(
        &self,
        command: Command,
        input: Option<&[u8]>,
    ) -> Result<std::io::Result<Output>, NamespaceError> {
        // Here, unlike on another thread, the input (a whole ruleset) is not copied.
        Ok(output_with_input(command, input))
    }
}

impl<N: Namespace> Namespace for Arc<N> {
    fn output(
        &self,
        command: Command,
        input: Option<&[u8]>,
    ) -> Result<std::io::Result<Output>, NamespaceError> {
        N::output(self, command, input)
    }
}

/// Runs `command` with `input` on its stdin (none: no stdin) and collects its output.
pub fn output_with_input(mut command: Command, input: Option<&[u8]>) -> std::io::Result<Output> {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // A write error shows up as the child's failure.
        let _ = pipe.write_all(input);
    }
    child.wait_with_output()
}

/// Runs the system's iptables binaries in a [`Namespace`].
#[derive(Clone, Debug, Default)]
pub struct RealIptables<N = CurrentNamespace> {
    namespace: N,
}

impl RealIptables {
    /// The door of the calling thread's namespace.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<N: Namespace> RealIptables<N> {
    /// The door of another namespace.
    pub fn in_namespace(namespace: N) -> Self {
        RealIptables { namespace }
    }

    /// Runs `binary args` in the namespace, with `input` on its stdin.
    fn run(
        &self,
        binary: &'static str,
        args: &[String],
        input: Option<&[u8]>,
    ) -> Result<Output, IptablesError> {
        let mut command = Command::new(binary);
        command.args(args);
        self.namespace
            .output(command, input)
            .map_err(IptablesError::Namespace)?
            .map_err(|source| IptablesError::Spawn { binary, source })
    }
}

fn failed(command: String, output: &Output) -> IptablesError {
    IptablesError::Failed {
        command,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    }
}

fn words(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

impl<N: Namespace> Iptables for RealIptables<N> {
    fn restore(&self, text: &str) -> Result<(), IptablesError> {
        let args = words(&["--noflush", "--wait", LOCK_WAIT]);
        let output = self.run("iptables-restore", &args, Some(text.as_bytes()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(failed(
            format!("iptables-restore --noflush <<< {text:?}"),
            &output,
        ))
    }

    fn save(&self, table: Table) -> Result<String, IptablesError> {
        let output = self.run("iptables-save", &words(&["-t", table.as_str()]), None)?;
        if !output.status.success() {
            return Err(failed(format!("iptables-save -t {table}"), &output));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn check(&self, table: Table, chain: &str, rule: &[String]) -> Result<bool, IptablesError> {
        let mut args = words(&["--wait", LOCK_WAIT, "-t", table.as_str(), "-C", chain]);
        args.extend(rule.iter().cloned());
        let output = self.run("iptables", &args, None)?;
        // 0: the rule exists; 1: it does not; anything else: the question was bad.
        match output.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(failed(format!("iptables {}", args.join(" ")), &output)),
        }
    }
}
