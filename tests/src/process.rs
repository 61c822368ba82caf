//! Long-running processes started by a run (servers, agents), with their output in log files.
//!
//! Each process gets its own process group so it and its children stop together; the run
//! records its pid, so even a lost handle or a killed test cannot leave it behind.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::{Netns, Run, cmd};

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A process started in a namespace; stopped (group-wide) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `argv` in `ns` with extra `env`, logging stdout and stderr to `<log dir>/<name>.log`.
    pub fn spawn(
        run: &Run,
        ns: &Netns,
        name: &str,
        argv: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self> {
        let mut command = ns.command(argv);
        command.envs(env.iter().copied());
        Self::spawn_command(run, name, command)
    }

    /// Starts a prepared `command` (e.g. [`Netns::command_keeping_mounts`]) the same way.
    pub fn spawn_command(
        run: &Run,
        name: &str,
        mut command: std::process::Command,
    ) -> Result<Self> {
        let log = run.log_dir().join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&command)))?;
        run.record_pid(child.id())?;
        Ok(Process {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// The name this process was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// Waits (bounded) for it to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("process already released")?;
        cmd::wait_bounded(child, timeout)
            .with_context(|| format!("waiting for {} to exit", self.name))
    }

    /// Leaves it running after the handle is gone (for detached runs); the run still records it.
    pub fn release(mut self) {
        self.child = None;
    }

    /// SIGTERM to its group, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        if child.try_wait().ok().flatten().is_none() {
            let _ = killpg(group, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Children of the process may outlive it; the group kill reaches them too.
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}
