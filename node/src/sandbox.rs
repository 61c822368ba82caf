//! A Pod's sandbox in the process runtime: a named network namespace (the job the pause
//! container does for containerd) and a cgroup under the node's.
//!
//! The namespace is made the way `ip netns add` makes one — a thread unshares its network
//! namespace and the kernel object is bind-mounted onto `/run/netns/<name>` — so `ip netns`
//! tools see it, a CNI plugin gets a path for `CNI_NETNS`, and it outlives the agent: a
//! restarted agent finds it again by name. The thread is a fresh one that ends right after, so
//! no shared (tokio) thread ever changes namespace. The cgroup groups the Pod's processes so
//! they can be found and killed together, and so the eBPF proxy (attached to the node's
//! cgroup) sees their sockets. The Pod's mount and UTS namespaces (its own resolv.conf,
//! /etc/hosts and hostname) are [`crate::podns`]'s.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use skiff_proxy::ebpf::mounts::mounts_of;

/// Where named network namespaces live (iproute2's place).
pub const NETNS_DIR: &str = "/run/netns";

/// A kernel call that failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A syscall failed.
    #[error("{call} {path} failed")]
    Syscall {
        /// Which call.
        call: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace thread could not run.
    #[error("the namespace thread panicked")]
    ThreadPanicked,
}

/// Maps an I/O error of `call` on `path` to a [`SandboxError`].
pub(crate) fn syscall(
    call: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |source| SandboxError::Syscall { call, path, source }
}

/// Maps an errno of `call` on `path` to a [`SandboxError`].
pub(crate) fn errno(call: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SandboxError {
    let path = path.to_path_buf();
    move |e| SandboxError::Syscall {
        call,
        path,
        source: std::io::Error::from(e),
    }
}

/// `/run/netns/<name>`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Whether `path` holds a network namespace (a bind mount of one), not just an empty file.
pub fn netns_exists(path: &Path) -> bool {
    let Ok(ns) = fs::metadata(path) else {
        return false;
    };
    // An nsfs inode lives on another device than the tmpfs file it is mounted over.
    let Ok(dir) = fs::metadata(path.parent().unwrap_or(Path::new("/"))) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    ns.dev() != dir.dev()
}

/// Creates the named network namespace at `path` (no-op when it exists).
pub fn create_netns(path: &Path) -> Result<(), SandboxError> {
    if netns_exists(path) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new(NETNS_DIR));
    fs::create_dir_all(dir).map_err(syscall("mkdir", dir))?;
    File::create(path).map_err(syscall("create", path))?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> Result<(), SandboxError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(errno("unshare", &target))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno("bind mount", &target))
    })
    .join()
    .map_err(|_| SandboxError::ThreadPanicked)?;
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

/// Removes the namespace at `path`; fine when it is already gone.
pub fn remove_netns(path: &Path) -> Result<(), SandboxError> {
    remove_pin(path)
}

/// Unmounts and removes a namespace's pin (any kind); fine when it is already gone.
pub fn remove_pin(path: &Path) -> Result<(), SandboxError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
        Err(e) => return Err(errno("umount", path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(syscall("unlink", path)(e)),
    }
}

/// Creates the cgroup `dir` (and its parents).
pub fn create_cgroup(dir: &Path) -> Result<(), SandboxError> {
    fs::create_dir_all(dir).map_err(syscall("mkdir", dir))
}

/// Pids in the cgroup `dir` (none when it does not exist).
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills whatever is left in the cgroup `dir` and removes it; fine when it is gone.
pub fn remove_cgroup(dir: &Path) -> Result<(), SandboxError> {
    if !dir.exists() {
        return Ok(());
    }
    // cgroup.kill (kernel 5.14+) ends every process inside at once.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(syscall("rmdir", dir)(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Every mounted cgroup hierarchy, the v2 one first (its `cgroup.kill` ends what is inside),
/// then, on a hybrid machine, the v1 controllers' — where runc makes containers' cgroups too.
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut all = mounts_of("cgroup2");
    all.extend(mounts_of("cgroup"));
    all
}

/// [`remove_cgroup`] for `dir` and every cgroup below it, deepest first.
pub fn remove_cgroup_tree(dir: &Path) -> Result<(), SandboxError> {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    remove_cgroup(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_file_is_not_a_namespace() {
        let file = std::env::temp_dir().join(format!("skiff-not-ns-{}", std::process::id()));
        fs::write(&file, "").unwrap();
        assert!(!netns_exists(&file));
        fs::remove_file(&file).unwrap();
        assert!(!netns_exists(&file));
    }

    #[test]
    fn removing_what_is_not_there_succeeds() {
        let path = std::env::temp_dir().join(format!("skiff-no-ns-{}", std::process::id()));
        remove_netns(&path).unwrap();
        remove_cgroup(&path).unwrap();
        assert!(cgroup_pids(&path).is_empty());
    }
}
