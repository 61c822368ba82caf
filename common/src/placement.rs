//! Starting a process inside a Pod: in its network namespace and its cgroup from its first
//! instruction.
//!
//! `kubectl exec`, the process runtime's containers and the test harness's clients all need a
//! child that *starts* in a Pod's network namespace and cgroup — joining after `spawn` leaves a
//! window in which it runs, connects or forks outside (the eBPF proxy's socket programs only
//! see processes in the node's cgroup). So the namespace and `cgroup.procs` are opened before
//! `fork`, and the child enters both between `fork` and `exec` with two async-signal-safe calls.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A namespace or cgroup file that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open {}: {source}", path.display())]
pub struct PlacementError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Makes `command`'s process enter the network namespace at `netns` and join the cgroup
/// directory `cgroup` (v1 or v2) before it runs; `None` leaves that one as the parent's.
/// Runs after any `pre_exec` hook already set on `command`.
pub fn start_inside(
    command: &mut Command,
    netns: Option<&Path>,
    cgroup: Option<&Path>,
) -> Result<(), PlacementError> {
    let open = |path: PathBuf, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(&path)
            .map_err(|source| PlacementError { path, source })
    };
    let ns: Option<File> = netns.map(|p| open(p.to_owned(), false)).transpose()?;
    let procs: Option<File> = cgroup
        .map(|dir| open(dir.join("cgroup.procs"), true))
        .transpose()?;
    // SAFETY: between fork and exec the child only calls setns(2) and write(2) on descriptors
    // opened above, both async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if let Some(ns) = &ns {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            if let Some(procs) = &procs {
                nix::unistd::write(procs.as_fd(), b"0")?;
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Entering a namespace and a cgroup needs root: the harness's netns tests show it (the
    // eBPF proxy's clients are placed with it, and answer only when placed in the cgroup).
    #[test]
    fn a_missing_cgroup_is_named_before_anything_runs() {
        let mut command = Command::new("true");
        let err =
            start_inside(&mut command, None, Some(Path::new("/nonexistent/pod"))).unwrap_err();
        assert_eq!(err.path, Path::new("/nonexistent/pod/cgroup.procs"));
        assert!(
            err.to_string()
                .starts_with("cannot open /nonexistent/pod/cgroup.procs")
        );
    }
}
