//! The network namespaces to end sockets in: those of the processes in the node's cgroup.
//!
//! The socket programs translate exactly the sockets of processes in that cgroup, and each
//! such socket lives in its process's namespace (a Pod's, or the node's for host-network
//! ones). The cgroup is the one thing both the standalone proxy and the node agent know, so
//! the namespaces come from it — `cgroup.procs` of it and every cgroup below, then
//! `/proc/<pid>/ns/net` — rather than from the runtime's list of Pods. Namespaces are told apart
//! by the nsfs inode, so a Pod with many processes is visited once.
//!
//! Entering one takes `setns(2)`, which moves only the calling thread: the visits run on a
//! thread of their own that ends afterwards, never on a runtime worker.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// How deep below the node's cgroup processes are looked for.
const MAX_DEPTH: usize = 16;
/// At most this many cgroups are read (a node runs far fewer Pods).
const MAX_CGROUPS: usize = 65_536;

/// An open network namespace, named by one process in it.
#[derive(Debug)]
pub struct Netns {
    /// The process it was found through.
    pub pid: u32,
    /// `/proc/<pid>/ns/net`, held open so it cannot go while it is visited.
    pub file: File,
}

/// Why the namespaces could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the processes of cgroup {path}")]
pub struct ListError {
    /// The cgroup folder.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The processes in `cgroup` and the cgroups below it (to `MAX_DEPTH`).
pub fn cgroup_pids(cgroup: &Path) -> Result<BTreeSet<u32>, ListError> {
    let mut pids = BTreeSet::new();
    let mut todo = vec![(cgroup.to_path_buf(), 0)];
    let mut seen = 0;
    while let Some((dir, depth)) = todo.pop() {
        seen += 1;
        if seen > MAX_CGROUPS {
            break;
        }
        let fail = |source| ListError {
            path: dir.clone(),
            source,
        };
        // A child cgroup removed meanwhile is fine; the node's own must be readable.
        let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
            Ok(procs) => procs,
            Err(e) if depth > 0 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(fail(e)),
        };
        pids.extend(
            procs
                .lines()
                .filter_map(|line| line.trim().parse::<u32>().ok()),
        );
        if depth == MAX_DEPTH {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push((entry.path(), depth + 1));
            }
        }
    }
    Ok(pids)
}

/// The distinct network namespaces of `pids`, opened through `proc` (`/proc`); processes that
/// exited meanwhile are skipped.
pub fn namespaces_of(pids: &BTreeSet<u32>, proc: &Path) -> Vec<Netns> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for pid in pids {
        let Ok(file) = File::open(proc.join(pid.to_string()).join("ns/net")) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            out.push(Netns { pid: *pid, file });
        }
    }
    out
}

/// Runs `visit` inside each of `namespaces` in turn, on a thread of its own; returns each
/// namespace's result, or why it could not be entered.
pub fn visit_each<T: Send>(
    namespaces: &[Netns],
    mut visit: impl FnMut(&Netns) -> T + Send,
) -> Vec<Result<T, nix::Error>> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                namespaces
                    .iter()
                    .map(|ns| {
                        setns(ns.file.as_fd(), CloneFlags::CLONE_NEWNET)?;
                        Ok(visit(ns))
                    })
                    .collect()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-netns-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pids_come_from_the_cgroup_and_every_cgroup_below_it() {
        let root = scratch("tree");
        std::fs::write(root.join("cgroup.procs"), "12\n").unwrap();
        std::fs::create_dir_all(root.join("pod-a/inner")).unwrap();
        std::fs::write(root.join("pod-a/cgroup.procs"), "30\n31\n").unwrap();
        std::fs::write(root.join("pod-a/inner/cgroup.procs"), "40\n").unwrap();
        // A cgroup removed between listing and reading is skipped.
        std::fs::create_dir_all(root.join("gone")).unwrap();
        let pids = cgroup_pids(&root).unwrap();
        assert_eq!(pids, BTreeSet::from([12, 30, 31, 40]));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_node_cgroup_is_an_error_that_names_it() {
        let missing = std::env::temp_dir().join("skiff-netns-no-such-cgroup");
        let err = cgroup_pids(&missing).unwrap_err();
        assert_eq!(err.path, missing);
    }

    #[test]
    fn processes_sharing_a_namespace_give_it_once_and_exited_ones_none() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let pids = BTreeSet::from([me, child.id(), u32::MAX - 1]);
        let namespaces = namespaces_of(&pids, Path::new("/proc"));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(namespaces.len(), 1, "{namespaces:?}");
        assert_eq!(namespaces[0].pid, me.min(child.id()));
    }
}
