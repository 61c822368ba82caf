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
    mounts_of(&[fstype]).into_iter().next()
}

/// Every mount point of the given filesystem types, in mount order.
fn mounts_of(fstypes: &[&str]) -> Vec<PathBuf> {
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_dev, dir, kind) = (fields.next()?, fields.next()?, fields.next()?);
            fstypes
                .contains(&kind)
                .then(|| PathBuf::from(dir.replace("\\040", " ")))
        })
        .collect()
}

/// Every cgroup hierarchy: the v2 one first (its `cgroup.kill` ends what is inside) and, on a
/// hybrid machine, the v1 controllers' (where runc puts containers' cgroups as well).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let mut all = mounts_of(&["cgroup2"]);
    all.extend(mounts_of(&["cgroup"]));
    all
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

/// The cgroups below a Pod's on containerd (one per container, the sandbox's pause included)
/// that hold a process, with that process, in name order.
pub fn container_cgroups(pod_cgroup: &Path) -> Vec<(PathBuf, u32)> {
    let mut found: Vec<(PathBuf, u32)> = fs::read_dir(pod_cgroup)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let procs = fs::read_to_string(e.path().join("cgroup.procs")).ok()?;
            let pid: u32 = procs.lines().next()?.trim().parse().ok()?;
            Some((e.path(), pid))
        })
        .collect();
    found.sort();
    found
}

/// Mount points at or below any of `roots`, deepest first, from /proc/self/mountinfo.
pub fn mounts_below(roots: &[PathBuf]) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|point| roots.iter().any(|root| point.starts_with(root)))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_field(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let code = rest
            .get(at + 1..at + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[at + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Lazily unmounts everything mounted at or below `roots` (what a crashed containerd left).
pub fn unmount_below(roots: &[PathBuf]) -> Result<()> {
    let mut failed = Vec::new();
    for point in mounts_below(roots) {
        match nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
            Err(err) => failed.push(format!("{}: {err}", point.display())),
        }
    }
    anyhow::ensure!(failed.is_empty(), "cannot unmount {}", failed.join(", "));
    Ok(())
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
