//! The two kernel filesystems the eBPF data plane stands on: bpffs and a cgroup v2 hierarchy.
//!
//! Pins (maps and program links that outlive the agent) live on bpffs, and the socket programs
//! attach to a cgroup v2 folder. Fresh machines and minimal VMs often have neither mounted, so,
//! like Cilium's agent, the proxy mounts what is missing at the usual places instead of failing.
//! Both are read from `/proc/self/mounts`; nothing is mounted twice.

use std::fs;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

/// Where bpffs is mounted when it is missing.
pub const BPFFS_DIR: &str = "/sys/fs/bpf";
/// Where a cgroup v2 hierarchy is mounted when there is none.
pub const CGROUP2_DIR: &str = "/sys/fs/cgroup";
/// ... unless [`CGROUP2_DIR`] holds something else (a cgroup v1 tmpfs): then here.
pub const CGROUP2_FALLBACK_DIR: &str = "/run/skiff/cgroup2";

/// Why a filesystem could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount itself failed.
    #[error("cannot mount {kind} at {dir}: {source}")]
    Mount {
        /// `bpf` or `cgroup2`.
        kind: &'static str,
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The mount point could not be made.
    #[error("cannot create {dir}: {source}")]
    Dir {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The pin folder is outside every bpffs mount.
    #[error("{pin_dir} is not on bpffs (mounted at {mounted:?}): pins must live on bpffs")]
    NotOnBpffs {
        /// The pin folder asked for.
        pin_dir: PathBuf,
        /// Where bpffs is mounted.
        mounted: Vec<PathBuf>,
    },
}

/// The folders where filesystems of type `kind` are mounted, in mount order.
pub fn mounts_of(kind: &str) -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts_in(&table, kind)
}

fn mounts_in(table: &str, kind: &str) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_dev, dir, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            (fs_type == kind).then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .collect()
}

/// Makes sure `pin_dir` is on bpffs, mounting bpffs at [`BPFFS_DIR`] when none is mounted.
///
/// A pin folder outside any bpffs mount is refused by the kernel at the first pin; saying so
/// here is clearer, so that case is an error naming both paths.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<(), MountError> {
    let mut mounted = mounts_of("bpf");
    if mounted.is_empty() {
        mount_fs("bpf", Path::new(BPFFS_DIR))?;
        mounted.push(PathBuf::from(BPFFS_DIR));
    }
    if mounted.iter().any(|dir| pin_dir.starts_with(dir)) {
        Ok(())
    } else {
        Err(MountError::NotOnBpffs {
            pin_dir: pin_dir.to_path_buf(),
            mounted,
        })
    }
}

/// The cgroup v2 hierarchy's mount point, mounting one at [`CGROUP2_DIR`] when there is none.
pub fn ensure_cgroup2() -> Result<PathBuf, MountError> {
    if let Some(dir) = mounts_of("cgroup2").into_iter().next() {
        return Ok(dir);
    }
    let usual = Path::new(CGROUP2_DIR);
    let taken = fs::read_dir(usual).is_ok_and(|mut entries| entries.next().is_some());
    let dir = if taken {
        Path::new(CGROUP2_FALLBACK_DIR)
    } else {
        usual
    };
    mount_fs("cgroup2", dir)?;
    Ok(dir.to_path_buf())
}

fn mount_fs(kind: &'static str, dir: &Path) -> Result<(), MountError> {
    fs::create_dir_all(dir).map_err(|source| MountError::Dir {
        dir: dir.to_path_buf(),
        source,
    })?;
    mount(Some(kind), dir, Some(kind), MsFlags::empty(), None::<&str>).map_err(|source| {
        MountError::Mount {
            kind,
            dir: dir.to_path_buf(),
            source,
        }
    })?;
    tracing::info!(kind, dir = %dir.display(), "mounted a missing kernel filesystem");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_by_type_with_escaped_spaces() {
        let table = "sysfs /sys sysfs rw 0 0\n\
                     bpf /sys/fs/bpf bpf rw,relatime 0 0\n\
                     cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
                     bpf /run/my\\040pins bpf rw 0 0\n";
        assert_eq!(
            mounts_in(table, "bpf"),
            [PathBuf::from("/sys/fs/bpf"), PathBuf::from("/run/my pins")]
        );
        assert_eq!(
            mounts_in(table, "cgroup2"),
            [PathBuf::from("/sys/fs/cgroup")]
        );
        assert!(mounts_in(table, "tmpfs").is_empty());
    }
}
