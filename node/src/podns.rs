//! A Pod's own mount and UTS namespaces in the process runtime: its processes read the
//! resolv.conf and /etc/hosts Kubernetes gives a Pod, and `hostname` prints the Pod's, while
//! the node's files stay as they are — what `ip netns exec` does with `/etc/netns/<name>/`, per
//! Pod.
//!
//! Made the way the sandbox's network namespace is: a fresh thread unshares (CLONE_NEWNS, and
//! CLONE_NEWUTS for a hostname), makes every mount a slave (the node's later mounts still reach
//! the Pod; nothing mounted in the Pod reaches the node), bind-mounts the Pod's files over the
//! node's and sets the hostname, then hands back descriptors of its namespaces and ends. The
//! agent's own thread pins them by bind-mounting them onto files in the Pod's state folder, so
//! they outlive the thread and the agent: a restarted agent finds them by path, and containers
//! and execs enter them (see `skiff_common::placement`).
//!
//! Two kernel rules shape the pins, both answered with EINVAL when broken. A mount namespace can
//! only be pinned from an older one (no loops), so the pin is made from the agent's thread, not
//! from the thread inside. And the pin must sit on a mount that propagates nowhere, or the
//! kernel would have to copy it into the mount's peers and slaves — the Pod's own copy of that
//! mount among them. So the runtime's state folder is made a private bind mount of itself
//! once, as `ip netns` makes /run/netns a mount of its own (shared, there, for network
//! namespaces). Namespaces made later copy the node's mounts without the mount-namespace pins;
//! their copies of UTS pins are detached when the pin files are removed.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::runtime::VolumeMount;
use crate::sandbox::{SandboxError, errno, remove_pin, syscall};

/// The mount points in mountinfo text (field 5, with its `\ooo` escapes undone).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| {
        let field = line.split(' ').nth(4)?;
        let mut bytes = Vec::with_capacity(field.len());
        let mut rest = field.as_bytes();
        while let Some((&first, tail)) = rest.split_first() {
            let code = tail
                .get(..3)
                .and_then(|o| u8::from_str_radix(std::str::from_utf8(o).ok()?, 8).ok());
            match code {
                Some(byte) if first == b'\\' => {
                    bytes.push(byte);
                    rest = &tail[3..];
                }
                _ => {
                    bytes.push(first);
                    rest = tail;
                }
            }
        }
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    })
}

/// Makes `dir` a mount of its own that propagates nowhere — a bind mount of itself, made
/// private — where mount namespaces can be pinned. Fine when it already is one.
pub fn make_private_dir(dir: &Path) -> Result<(), SandboxError> {
    // Two sandboxes made at once must not both find no mount and bind twice.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _held = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    fs::create_dir_all(dir).map_err(syscall("mkdir", dir))?;
    let dir = fs::canonicalize(dir).map_err(syscall("canonicalize", dir))?;
    let table = fs::read_to_string("/proc/self/mountinfo")
        .map_err(syscall("read", Path::new("/proc/self/mountinfo")))?;
    if !mount_points(&table).any(|point| point == dir) {
        mount(
            Some(&dir),
            &dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno("bind mount", &dir))?;
    }
    mount(
        None::<&str>,
        &dir,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(errno("make private", &dir))
}

/// Where a Pod's namespaces are pinned, and what they hold.
#[derive(Clone, Debug, PartialEq)]
pub struct PodNamespaces<'a> {
    /// The mount namespace's pin, on a private mount (see [`make_private_dir`]).
    pub mnt: &'a Path,
    /// The UTS namespace's pin and the hostname; none keeps the node's.
    pub uts: Option<(&'a Path, &'a str)>,
    /// What the Pod sees over the node's paths: its own files (resolv.conf, hosts) and its
    /// hostPath volumes. Each target must exist on the node (the Pod shares its filesystem).
    pub covers: &'a [VolumeMount],
}

/// Makes the Pod's namespaces and pins them, replacing any left from an earlier try; on
/// failure leaves no pin behind.
pub fn create(pod: &PodNamespaces<'_>) -> Result<(), SandboxError> {
    remove(pod)?;
    let pins: Vec<&Path> = [Some(pod.mnt), pod.uts.map(|(pin, _)| pin)]
        .into_iter()
        .flatten()
        .collect();
    let made = pin_all(pod, &pins);
    if made.is_err() {
        let _ = remove(pod);
    }
    made
}

fn pin_all(pod: &PodNamespaces<'_>, pins: &[&Path]) -> Result<(), SandboxError> {
    for pin in pins {
        if let Some(dir) = pin.parent() {
            fs::create_dir_all(dir).map_err(syscall("mkdir", dir))?;
        }
        File::create(pin).map_err(syscall("create", pin))?;
    }
    let covers = pod.covers.to_vec();
    let hostname = pod.uts.map(|(_, name)| name.to_owned());
    let namespaces = std::thread::spawn(move || -> Result<Vec<File>, SandboxError> {
        let mut flags = CloneFlags::CLONE_NEWNS;
        if hostname.is_some() {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        unshare(flags).map_err(errno("unshare", Path::new("/")))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
        .map_err(errno("make slave", Path::new("/")))?;
        for cover in &covers {
            let target = &cover.container_path;
            mount(
                Some(&cover.host_path),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(errno("bind mount", target))?;
            if cover.read_only {
                mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(errno("remount read-only", target))?;
            }
        }
        let mut kinds = vec!["mnt"];
        if let Some(name) = &hostname {
            nix::unistd::sethostname(name).map_err(errno("sethostname", Path::new(name)))?;
            kinds.push("uts");
        }
        kinds
            .into_iter()
            .map(|kind| {
                let path = PathBuf::from(format!("/proc/thread-self/ns/{kind}"));
                File::open(&path).map_err(syscall("open", &path))
            })
            .collect()
    })
    .join()
    .map_err(|_| SandboxError::ThreadPanicked)??;
    // From this (older) namespace: a namespace cannot pin itself.
    for (ns, pin) in namespaces.iter().zip(pins) {
        let source = format!("/proc/self/fd/{}", ns.as_raw_fd());
        mount(
            Some(source.as_str()),
            *pin,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno("pin", pin))?;
    }
    Ok(())
}

/// Unpins the Pod's namespaces (they end with the last process inside); fine when they are
/// gone or were never pinned.
pub fn remove(pod: &PodNamespaces<'_>) -> Result<(), SandboxError> {
    remove_pin(pod.mnt)?;
    if let Some((pin, _)) = pod.uts {
        remove_pin(pin)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        let table = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                     90 22 8:1 /srv /var/lib/my\\040pods rw shared:1 - ext4 /dev/sda1 rw\n";
        let points: Vec<PathBuf> = mount_points(table).collect();
        assert_eq!(
            points,
            [PathBuf::from("/proc"), PathBuf::from("/var/lib/my pods")]
        );
    }

    // Making and entering namespaces needs root: the netns test of the process runtime shows a
    // Pod reading its own files while the node's stay as they were.
    #[test]
    fn removing_pins_that_are_not_there_succeeds() {
        let dir = std::env::temp_dir().join(format!("skiff-no-pins-{}", std::process::id()));
        let mnt = dir.join("mnt");
        let uts = dir.join("uts");
        let pod = PodNamespaces {
            mnt: &mnt,
            uts: Some((&uts, "web")),
            covers: &[],
        };
        remove(&pod).unwrap();
    }
}
