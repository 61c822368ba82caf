//! Exec probes in the process runtime: a command run where the Pod's containers run (its
//! namespaces and cgroup), with its output, killed at the probe's timeout.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use skiff_common::placement::{Placement, start_placed};

use super::io;
use crate::runtime::{ExecOutput, RuntimeError};

/// Runs `argv` where `place` says, killing it after `timeout`.
pub(super) fn exec_in(
    place: &Placement<'_>,
    argv: &[String],
    timeout: Duration,
) -> Result<ExecOutput, RuntimeError> {
    let (program, rest) = argv.split_first().ok_or_else(|| RuntimeError::Io {
        what: "exec with an empty command".into(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    let mut command = Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    start_placed(&mut command, place).map_err(|err| RuntimeError::Io {
        what: err.to_string(),
        source: err.source,
    })?;
    let child = command
        .spawn()
        .map_err(io(format!("cannot run {program}")))?;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => {
            let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok(ExecOutput {
                code: out.status.code(),
                output,
            })
        }
        Ok(Err(e)) => Err(io(format!("waiting for {program}"))(e)),
        Err(_) => {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = rx.recv();
            Ok(ExecOutput {
                code: None,
                output: format!("timed out after {timeout:?}"),
            })
        }
    }
}
