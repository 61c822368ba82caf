//! A run: the unit of ownership and cleanup for everything a test (or `cargo xtask up`) makes.
//!
//! Each run gets a short random id; every namespace, link, cgroup and BPF pin it makes is named
//! `sk-<id>-...`, and a record under [`STATE_ROOT`] names the process that owns it (pid and
//! start time, so a reused pid is not mistaken for the owner). A run is destroyed when its owner
//! drops it; if the owner was killed, the next run's [`sweep_stale`] finds the run's owner dead
//! and destroys it. Runs made by `cargo xtask up` are marked detached and live until `down`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use skiff_common::rng::SmallRng;

use crate::{cmd, kernelfs};

/// Every name a run gives to a kernel object starts with this.
pub const PREFIX: &str = "sk-";
/// Where runs record their owner and the processes they started.
pub const STATE_ROOT: &str = "/run/skiff-harness";

const OWNER_FILE: &str = "owner";
const PIDS_FILE: &str = "pids";
const DETACHED: &str = "detached";
const MOUNT_ROOTS_FILE: &str = "mount-roots";

/// A run's id: six lower-case alphanumerics, short enough for 15-byte link names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunId(String);

impl RunId {
    /// A fresh id, random enough that concurrent runs do not collide.
    pub fn generate() -> Self {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        // Two runs in one process may start in the same clock tick: a per-process counter is
        // mixed in; uniqueness is still checked where ids are taken.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut rng = SmallRng::from_clock(count);
        let id = (0..6).map(|_| char::from(*rng.pick(ALPHABET))).collect();
        RunId(id)
    }

    /// Parses the id out of a kernel object's name (`sk-<id>-role` or `sk-<id>`).
    pub fn from_object_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?;
        let id = rest.split('-').next()?;
        (id.len() == 6
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        .then(|| RunId(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name of one of this run's objects: `sk-<id>-<role>`.
    pub fn object(&self, role: &str) -> String {
        format!("{PREFIX}{}-{role}", self.0)
    }

    /// Does `name` belong to this run?
    pub fn owns(&self, name: &str) -> bool {
        Self::from_object_name(name).as_ref() == Some(self)
    }

    fn state_dir(&self) -> PathBuf {
        Path::new(STATE_ROOT).join(&self.0)
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A live run, owned by this process. Dropping it destroys everything it made, unless detached.
#[derive(Debug)]
pub struct Run {
    id: RunId,
    log_dir: PathBuf,
    detached: bool,
}

impl Run {
    /// Starts a run whose process logs go to `log_root/<label>-<id>/`. Sweeps stale runs first.
    pub fn start(label: &str, log_root: &Path) -> Result<Self> {
        require_root()?;
        for (id, err) in sweep_stale()? {
            eprintln!("harness: could not fully remove stale run {id}: {err:#}");
        }
        fs::create_dir_all(STATE_ROOT).with_context(|| format!("cannot create {STATE_ROOT}"))?;
        // The record appears whole (owner included) or not at all, so a concurrent sweeper
        // never sees an ownerless run that is still being born.
        // Drafts are named per call: threads of one test binary start runs concurrently.
        let draft = Path::new(STATE_ROOT).join(format!(".draft-{}", RunId::generate()));
        fs::create_dir_all(&draft)?;
        fs::write(draft.join(OWNER_FILE), owner_stamp(std::process::id())?)
            .context("cannot record the run's owner")?;
        let id = loop {
            let id = RunId::generate();
            if !id.state_dir().exists() && leftovers(&id).is_empty() {
                fs::rename(&draft, id.state_dir()).context("cannot record the run")?;
                break id;
            }
        };
        let log_dir = log_root.join(format!("{label}-{id}"));
        fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create log folder {}", log_dir.display()))?;
        Ok(Run {
            id,
            log_dir,
            detached: false,
        })
    }

    /// This run's id.
    pub fn id(&self) -> &RunId {
        &self.id
    }

    /// The folder that holds the logs of every process this run started.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Records a process this run started, so cleanup can stop it even if its handle is lost.
    pub fn record_pid(&self, pid: u32) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.id.state_dir().join(PIDS_FILE))?;
        writeln!(file, "{}", owner_stamp(pid)?)?;
        Ok(())
    }

    /// Keeps the run after this process exits (for `cargo xtask up`); [`destroy`] removes it.
    pub fn detach(mut self) -> Result<RunId> {
        fs::write(self.id.state_dir().join(OWNER_FILE), DETACHED)?;
        self.detached = true;
        Ok(self.id.clone())
    }

    /// A folder of this run's own for files (e.g. IPAM state), removed with the run.
    pub fn scratch_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.id.state_dir().join("scratch").join(name);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// Records a folder where a process of this run mounts things (containerd's rootfs overlays
    /// and netns mounts): cleanup unmounts whatever is still mounted below it.
    pub fn add_mount_root(&self, dir: &Path) -> Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.id.state_dir().join(MOUNT_ROOTS_FILE))?;
        writeln!(file, "{}", dir.display())?;
        Ok(())
    }

    /// A cgroup (v2) of this run's own, made on first use and removed with the run.
    pub fn cgroup_dir(&self) -> Result<PathBuf> {
        let dir = kernelfs::ensure_cgroup2()?.join(self.id.object("cg"));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }

    /// A bpffs folder of this run's own for pinned maps and programs, removed with the run.
    pub fn bpf_pin_dir(&self) -> Result<PathBuf> {
        let dir = kernelfs::ensure_bpffs()?.join(self.id.object("pins"));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(dir)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.detached
            && let Err(err) = destroy(&self.id)
        {
            eprintln!("harness: cleanup of run {} incomplete: {err:#}", self.id);
        }
    }
}

/// Fails with a clear message unless this process may create namespaces.
pub fn require_root() -> Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the network-namespace harness needs root (run `cargo xtask test` as root)"
    );
    Ok(())
}

/// Is the run still wanted: detached, or its owner alive?
fn is_live(id: &RunId) -> bool {
    match fs::read_to_string(id.state_dir().join(OWNER_FILE)) {
        Ok(owner) if owner.trim() == DETACHED => true,
        Ok(owner) => stamp_alive(owner.trim()),
        Err(_) => false,
    }
}

/// Runs that are detached (made by `cargo xtask up` and not yet taken down).
pub fn detached_runs() -> Vec<RunId> {
    known_runs()
        .into_iter()
        .filter(|id| {
            fs::read_to_string(id.state_dir().join(OWNER_FILE))
                .is_ok_and(|owner| owner.trim() == DETACHED)
        })
        .collect()
}

/// Destroys every run whose owner is gone. Returns the runs it could not fully remove.
pub fn sweep_stale() -> Result<Vec<(RunId, anyhow::Error)>> {
    let mut failures = Vec::new();
    remove_dead_drafts();
    for id in known_runs() {
        if !is_live(&id)
            && let Err(err) = destroy(&id)
        {
            failures.push((id, err));
        }
    }
    Ok(failures)
}

/// Drafts left by a process killed while it was recording a new run.
fn remove_dead_drafts() {
    let Ok(entries) = fs::read_dir(STATE_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let is_draft = entry.file_name().to_string_lossy().starts_with(".draft-");
        // A draft lives for microseconds; one a minute old was abandoned whatever its owner says.
        let abandoned = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(60));
        if is_draft && abandoned {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Every run id that has a record or a kernel object on this machine.
fn known_runs() -> BTreeSet<RunId> {
    let mut ids = BTreeSet::new();
    if let Ok(entries) = fs::read_dir(STATE_ROOT) {
        for entry in entries.flatten() {
            if let Some(id) =
                RunId::from_object_name(&format!("{PREFIX}{}", entry.file_name().to_string_lossy()))
            {
                ids.insert(id);
            }
        }
    }
    for name in netns_names().into_iter().chain(root_link_names()) {
        if let Some(id) = RunId::from_object_name(&name) {
            ids.insert(id);
        }
    }
    ids
}

/// Removes everything run `id` made: processes, namespaces, host links, cgroups, BPF pins, and
/// its record. Idempotent; errors name what is left.
pub fn destroy(id: &RunId) -> Result<()> {
    let namespaces: Vec<String> = netns_names().into_iter().filter(|n| id.owns(n)).collect();
    stop_processes(id, &namespaces);
    let mut problems = Vec::new();
    let mut roots: Vec<PathBuf> = fs::read_to_string(id.state_dir().join(MOUNT_ROOTS_FILE))
        .unwrap_or_default()
        .lines()
        .map(PathBuf::from)
        .collect();
    roots.push(id.state_dir());
    if let Err(err) = kernelfs::unmount_below(&roots) {
        problems.push(format!("{err:#}"));
    }
    for ns in &namespaces {
        if let Err(err) = cmd::ip(&["netns", "delete", ns]) {
            problems.push(format!("{err:#}"));
        }
    }
    for link in root_link_names().into_iter().filter(|l| id.owns(l)) {
        // Usually gone with its peer's namespace already; deleting twice is harmless.
        let _ = cmd::ip(&["link", "delete", &link]);
    }
    for root in kernelfs::cgroup_mounts() {
        let cg = root.join(id.object("cg"));
        if cg.exists()
            && let Err(err) = kernelfs::remove_cgroup_tree(&cg)
        {
            problems.push(format!("{err:#}"));
        }
    }
    if let Some(bpffs) = kernelfs::bpffs_mount() {
        let pins = bpffs.join(id.object("pins"));
        if pins.exists()
            && let Err(err) = fs::remove_dir_all(&pins)
        {
            problems.push(format!("cannot remove {}: {err}", pins.display()));
        }
    }
    let left = leftovers(id);
    if !left.is_empty() {
        problems.push(format!("still present: {}", left.join(", ")));
    }
    if problems.is_empty() {
        let _ = fs::remove_dir_all(id.state_dir());
        Ok(())
    } else {
        anyhow::bail!("{}", problems.join("; "))
    }
}

/// Kernel objects of run `id` that still exist: namespaces and host links.
pub fn leftovers(id: &RunId) -> Vec<String> {
    netns_names()
        .into_iter()
        .chain(root_link_names())
        .filter(|n| id.owns(n))
        .collect()
}

/// Stops the run's processes: those it recorded and any still inside its namespaces.
fn stop_processes(id: &RunId, namespaces: &[String]) {
    let mut pids: BTreeSet<i32> = BTreeSet::new();
    if let Ok(recorded) = fs::read_to_string(id.state_dir().join(PIDS_FILE)) {
        // Only pids whose start time still matches: anything else is somebody else's process.
        pids.extend(
            recorded
                .lines()
                .filter(|stamp| stamp_alive(stamp))
                .filter_map(|stamp| stamp.split(' ').next()?.parse::<i32>().ok()),
        );
    }
    for ns in namespaces {
        if let Ok(out) = cmd::ip(&["netns", "pids", ns]) {
            pids.extend(out.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    pids.remove(&(std::process::id() as i32));
    if pids.is_empty() {
        return;
    }
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|&p| process_exists(p)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Names of all named network namespaces (`ip netns list`).
pub fn netns_names() -> Vec<String> {
    // /run/netns is where iproute2 keeps them; reading it avoids a process per call.
    entry_names("/run/netns")
}

/// Names of the links in this process's own network namespace.
pub fn root_link_names() -> Vec<String> {
    entry_names("/sys/class/net")
}

/// The names in directory `dir` (none when it cannot be read).
fn entry_names(dir: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `"<pid> <start time>"`: names a process unambiguously even after its pid is reused.
fn owner_stamp(pid: u32) -> Result<String> {
    let start = process_start_time(pid as i32)
        .with_context(|| format!("cannot read the start time of process {pid}"))?;
    Ok(format!("{pid} {start}"))
}

fn stamp_alive(stamp: &str) -> bool {
    let mut parts = stamp.split(' ');
    let (Some(pid), Some(start)) = (parts.next(), parts.next()) else {
        return false;
    };
    pid.parse::<i32>()
        .ok()
        .and_then(process_start_time)
        .is_some_and(|actual| actual.to_string() == start)
}

fn process_exists(pid: i32) -> bool {
    // A zombie still exists but is done; treat it as gone.
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// Field 22 of /proc/<pid>/stat: start time in clock ticks since boot.
fn process_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parens: count fields after the last ')'.
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_parse_back_from_object_names() {
        let id = RunId::generate();
        let name = id.object("n1");
        assert!(name.len() <= 15, "{name} too long for a link name");
        assert_eq!(RunId::from_object_name(&name), Some(id.clone()));
        assert!(id.owns(&id.object("ul")));
        assert_ne!(RunId::generate(), id);
    }

    #[test]
    fn names_outside_the_prefix_belong_to_no_run() {
        assert_eq!(RunId::from_object_name("eth0"), None);
        assert_eq!(RunId::from_object_name("sk-x"), None);
        assert_eq!(RunId::from_object_name("sk-ABCDEF-n1"), None);
    }

    #[test]
    fn own_process_stamp_is_alive_and_a_wrong_start_time_is_not() {
        let stamp = owner_stamp(std::process::id()).unwrap();
        assert!(stamp_alive(&stamp));
        assert!(!stamp_alive(&format!("{} 1", std::process::id())));
        assert!(!stamp_alive("garbage"));
    }
}
