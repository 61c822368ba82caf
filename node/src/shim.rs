//! The container shim: `skiff-node shim`, one per running container, like containerd's shim.
//!
//! The agent starts the shim; the shim starts the container process inside the Pod's
//! namespaces (network; mount and UTS when the Pod has them) and cgroup, waits for it and
//! writes how it ended. The shim leaves the agent's
//! session, so killing or restarting the agent (even with SIGKILL) leaves containers running;
//! a restarted agent reads the state files and learns about exits that happened while it was
//! away, with their exit codes — which it could not get by waiting on processes that are not
//! its children.
//!
//! State files in the container's folder, each written whole by rename:
//! - `started.json`: `{"pid", "startedAt"}` once the process runs;
//! - `exited.json`: `{"exitCode", "signal", "reason", "message", "finishedAt"}` when it ended
//!   (or could not start: exit code 128, reason `StartError`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use skiff_common::placement::{Placement, start_placed};

/// What the shim is told.
#[derive(Clone, Debug, clap::Args)]
pub struct ShimArgs {
    /// The container's state folder.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// The Pod's network namespace.
    #[arg(long)]
    pub netns: PathBuf,
    /// The Pod's mount namespace (its resolv.conf and /etc/hosts).
    #[arg(long)]
    pub mntns: Option<PathBuf>,
    /// The Pod's UTS namespace (its hostname).
    #[arg(long)]
    pub utsns: Option<PathBuf>,
    /// The Pod's cgroup folder.
    #[arg(long)]
    pub cgroup: PathBuf,
    /// The container's log file (appended to).
    #[arg(long)]
    pub log: PathBuf,
    /// The working directory.
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// `started.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Started {
    /// The container process (its own process group leader).
    pub pid: i32,
    /// RFC 3339.
    pub started_at: String,
}

/// `exited.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Exited {
    /// The exit code, 128 + signal when killed by one (as container runtimes report it).
    pub exit_code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, or `StartError`.
    pub reason: String,
    /// Why it could not start, if so.
    pub message: Option<String>,
    /// RFC 3339.
    pub finished_at: String,
}

/// The file names.
pub const STARTED: &str = "started.json";
/// The file names.
pub const EXITED: &str = "exited.json";

/// Now, RFC 3339 to the second (as the state files and Kubernetes statuses hold it).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Writes `value` as `dir/name` atomically.
pub fn write_state<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(tmp, dir.join(name))
}

/// Reads `dir/name`, if it is there and whole.
pub fn read_state<T: for<'de> Deserialize<'de>>(dir: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(dir.join(name)).ok()?).ok()
}

/// `shim.json`: the shim's own pid and start time (to tell it from a recycled pid).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimProcess {
    /// The supervising shim.
    pub pid: i32,
    /// Its start time in clock ticks since boot (/proc/<pid>/stat field 22).
    pub start_ticks: u64,
}

/// The file name.
pub const SHIM: &str = "shim.json";

/// Field `field` (1-based, as proc(5) numbers them, 3 or more) of `/proc/<pid>/stat`.
fn stat_field(pid: i32, field: usize) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its closing parenthesis.
    let after = &stat[stat.rfind(')')? + 2..];
    after.split_whitespace().nth(field - 3)?.parse().ok()
}

/// A process's start time in clock ticks since boot, if it exists.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_field(pid, 22)
}

/// A process's process group, if it exists.
pub fn process_group(pid: i32) -> Option<i32> {
    stat_field(pid, 5).and_then(|g| i32::try_from(g).ok())
}

impl ShimProcess {
    /// Whether this shim still runs (and is not another process with its old pid).
    pub fn alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

/// Runs the shim: forks the supervisor and returns at once in the parent (so the agent, which
/// waits for this process, leaves no zombie); never returns in the supervisor.
pub fn run(args: &ShimArgs) -> ! {
    // SAFETY: the shim is single-threaded here (no runtime started), so fork is sound.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // Recorded before the agent sees this process exit: the agent always finds it.
            let pid = child.as_raw();
            let record = ShimProcess {
                pid,
                start_ticks: start_ticks(pid).unwrap_or(0),
            };
            let written = write_state(&args.state_dir, SHIM, &record);
            std::process::exit(i32::from(written.is_err()))
        }
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            eprintln!("skiff-node shim: cannot fork: {e}");
            std::process::exit(1)
        }
    }
    // Out of the agent's session and process group: the agent may die, the container lives on.
    let _ = nix::unistd::setsid();
    let code = match supervise(args) {
        Ok(()) => 0,
        Err(message) => {
            let exited = Exited {
                exit_code: 128,
                signal: None,
                reason: "StartError".to_owned(),
                message: Some(message.clone()),
                finished_at: now(),
            };
            if let Ok(mut log) = OpenOptions::new().create(true).append(true).open(&args.log) {
                let _ = writeln!(log, "skiff-node shim: {message}");
            }
            let _ = write_state(&args.state_dir, EXITED, &exited);
            1
        }
    };
    std::process::exit(code)
}

fn supervise(args: &ShimArgs) -> Result<(), String> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.log)
        .map_err(|e| format!("cannot open log {}: {e}", args.log.display()))?;
    let err_log = log.try_clone().map_err(|e| e.to_string())?;
    let (program, rest) = args.argv.split_first().ok_or("no command")?;
    let mut command = Command::new(program);
    command
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .process_group(0);
    if let Some(dir) = &args.workdir {
        command.current_dir(dir);
    }
    let shim = nix::unistd::getpid();
    // SAFETY: between fork and exec only async-signal-safe calls: prctl(2) and getppid(2).
    unsafe {
        command.pre_exec(move || {
            // The container dies with its shim (SIGKILLed, or taken down with the agent's
            // cgroup by a unit without KillMode=process): nothing runs that nobody supervises,
            // and the next run does not find its port taken. The agent ends the rest of the
            // process group (see the runtime's reaping).
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            if nix::unistd::getppid() != shim {
                return Err(std::io::Error::other(
                    "the shim ended before the container ran",
                ));
            }
            Ok(())
        });
    }
    let place = Placement {
        netns: Some(&args.netns),
        mntns: args.mntns.as_deref(),
        utsns: args.utsns.as_deref(),
        cgroup: Some(&args.cgroup),
    };
    start_placed(&mut command, &place).map_err(|e| e.to_string())?;
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let started = Started {
        pid: child.id() as i32,
        started_at: now(),
    };
    write_state(&args.state_dir, STARTED, &started).map_err(|e| e.to_string())?;
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    };
    let (exit_code, signal) = match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(signal)) => (128 + signal, Some(signal)),
        (None, None) => (128, None),
    };
    let exited = Exited {
        exit_code,
        signal,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
        message: None,
        finished_at: now(),
    };
    write_state(&args.state_dir, EXITED, &exited).map_err(|e| e.to_string())
}
