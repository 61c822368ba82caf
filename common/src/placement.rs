//! Starting a process inside a Pod: in its namespaces and its cgroup from its first
//! instruction.
//!
//! `kubectl exec`, the process runtime's containers and the test harness's clients all need a
//! child that *starts* in a Pod's network namespace and cgroup — joining after `spawn` leaves a
//! window in which it runs, connects or forks outside (the eBPF proxy's socket programs only
//! see processes in the node's cgroup). So the namespaces and `cgroup.procs` are opened before
//! `fork`, and the child enters them between `fork` and `exec` with async-signal-safe calls.
//!
//! The process runtime's Pods also have a mount namespace (their own resolv.conf and
//! /etc/hosts) and a UTS namespace (their hostname). `setns` into a mount namespace needs a
//! single-threaded caller — the child between `fork` and `exec` is one — and moves it to the
//! namespace's root directory, so the child changes back to its working directory after.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;

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

/// Where a process starts: the namespaces it enters (pinned files, `/proc/<pid>/ns/...` or
/// bind mounts of them) and the cgroup it joins. `None` leaves that one as the parent's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Placement<'a> {
    /// A network namespace.
    pub netns: Option<&'a Path>,
    /// A UTS namespace (hostname).
    pub utsns: Option<&'a Path>,
    /// A mount namespace.
    pub mntns: Option<&'a Path>,
    /// A cgroup directory (v1 or v2).
    pub cgroup: Option<&'a Path>,
}

/// Makes `command`'s process enter the network namespace at `netns` and join the cgroup
/// directory `cgroup` (v1 or v2) before it runs; `None` leaves that one as the parent's.
/// Runs after any `pre_exec` hook already set on `command`.
pub fn start_inside(
    command: &mut Command,
    netns: Option<&Path>,
    cgroup: Option<&Path>,
) -> Result<(), PlacementError> {
    start_placed(
        command,
        &Placement {
            netns,
            cgroup,
            ..Placement::default()
        },
    )
}

/// Makes `command`'s process start where `place` says; its working directory (the command's,
/// or this process's) stays the same path. Runs after any `pre_exec` hook already set on
/// `command`.
pub fn start_placed(command: &mut Command, place: &Placement<'_>) -> Result<(), PlacementError> {
    let open = |path: &Path, write: bool| {
        OpenOptions::new()
            .read(!write)
            .write(write)
            .open(path)
            .map_err(|source| PlacementError {
                path: path.to_owned(),
                source,
            })
    };
    let net: Option<File> = place.netns.map(|p| open(p, false)).transpose()?;
    let uts: Option<File> = place.utsns.map(|p| open(p, false)).transpose()?;
    let mnt: Option<File> = place.mntns.map(|p| open(p, false)).transpose()?;
    let procs: Option<File> = place
        .cgroup
        .map(|dir| open(&dir.join("cgroup.procs"), true))
        .transpose()?;
    // Entering a mount namespace moves the process to its root: back to the same path after.
    let workdir: Option<CString> = match &mnt {
        None => None,
        Some(_) => {
            // (`join` keeps an absolute directory as it is.)
            let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            let dir = command.get_current_dir().map(|dir| here.join(dir));
            let dir = dir.unwrap_or(here);
            CString::new(dir.as_os_str().as_bytes()).ok()
        }
    };
    // SAFETY: between fork and exec the child only calls setns(2), write(2) and chdir(2) on
    // descriptors and a string made above, all async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            if let Some(ns) = &net {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)?;
            }
            if let Some(ns) = &uts {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWUTS)?;
            }
            if let Some(procs) = &procs {
                nix::unistd::write(procs.as_fd(), b"0")?;
            }
            if let Some(ns) = &mnt {
                nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)?;
                if let Some(dir) = &workdir {
                    nix::unistd::chdir(dir.as_c_str())?;
                }
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
    // eBPF proxy's clients are placed with it, and answer only when placed in the cgroup; the
    // process runtime's Pods read their own resolv.conf through it).
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

    #[test]
    fn a_missing_mount_namespace_is_named_before_anything_runs() {
        let mut command = Command::new("true");
        let place = Placement {
            mntns: Some(Path::new("/nonexistent/ns/mnt")),
            ..Placement::default()
        };
        let err = start_placed(&mut command, &place).unwrap_err();
        assert_eq!(err.path, Path::new("/nonexistent/ns/mnt"));
    }
}
