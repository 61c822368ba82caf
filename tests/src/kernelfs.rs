//! The kernel filesystems the data plane needs: bpffs for pinned maps, cgroup v2 for socket hooks.
//!
//! Some machines mount neither (or mount cgroup v2 only beside v1, at `/sys/fs/cgroup/unified`),
//! so the harness finds them in the mount table and mounts what is missing.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

/// Where bpffs is mounted when nothing mounted it.
const BPFFS_DEFAULT: &str = "/sys/fs/bpf";
/// Where cgroup v2 is mounted when nothing mounted it (outside the host's cgroup tree).
const CGROUP2_FALLBACK: &str = "/run/skiff-harness-cgroup2";

/// The first mount point of filesystem type `fstype`, from /proc/self/mounts.
fn mount_of(fstype: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_dev, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == fstype).then(|| PathBuf::from(dir.replace("\\040", " ")))
    })
}

/// The bpffs mount point, if one is mounted.
pub fn bpffs_mount() -> Option<PathBuf> {
    mount_of("bpf")
}

/// The cgroup v2 mount point, if one is mounted.
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_of("cgroup2")
}

/// The bpffs mount point, mounting bpffs at /sys/fs/bpf when none is mounted.
pub fn ensure_bpffs() -> Result<PathBuf> {
    if let Some(dir) = bpffs_mount() {
        return Ok(dir);
    }
    mount_fs("bpf", Path::new(BPFFS_DEFAULT))
}

/// The cgroup v2 mount point, mounting one when none is mounted.
pub fn ensure_cgroup2() -> Result<PathBuf> {
    if let Some(dir) = cgroup2_mount() {
        return Ok(dir);
    }
    mount_fs("cgroup2", Path::new(CGROUP2_FALLBACK))
}

fn mount_fs(fstype: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    mount(
        Some(fstype),
        dir,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("cannot mount {fstype} at {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// Removes a cgroup and everything below it, moving out nothing: its processes are killed.
pub fn remove_cgroup_tree(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    // cgroup.kill (kernel 5.14+) ends every process inside at once.
    let _ = fs::write(dir.join("cgroup.kill"), "1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(err) if std::time::Instant::now() >= deadline => {
                return Err(err).with_context(|| format!("cannot remove cgroup {}", dir.display()));
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

/// This process inside a cgroup until dropped, when it goes back where it was.
///
/// For benchmarks that measure the eBPF proxy's socket programs from their own threads: the
/// programs see only processes in the cgroup they are attached to (a run's, never the root).
/// Drop it before the run that owns the cgroup, whose cleanup kills what is still inside.
#[derive(Debug)]
pub struct InCgroup {
    back_to: PathBuf,
}

/// Moves this whole process into `dir` (a cgroup v2 folder).
pub fn enter_cgroup(dir: &Path) -> Result<InCgroup> {
    let mount = cgroup2_mount().context("no cgroup v2 hierarchy is mounted")?;
    let own = fs::read_to_string("/proc/self/cgroup").context("cannot read /proc/self/cgroup")?;
    let relative = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .context("this process has no cgroup v2 membership")?;
    let back_to = mount.join(relative.trim_start_matches('/'));
    move_self(dir)?;
    Ok(InCgroup { back_to })
}

fn move_self(dir: &Path) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("cannot move this process into {}", dir.display()))
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        if let Err(err) = move_self(&self.back_to) {
            eprintln!("harness: {err:#}");
        }
    }
}
