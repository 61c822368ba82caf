//! What this machine is, as a Node reports it: capacity and `nodeInfo`, read from /proc and
//! /etc the way kubelet's cadvisor does, so `kubectl describe node` shows the real machine.

use std::path::Path;

/// The machine's facts, read once at start.
#[derive(Clone, Debug, PartialEq)]
pub struct MachineFacts {
    /// Online CPUs.
    pub cpus: u32,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` from os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// The kernel's boot id (changes on reboot).
    pub boot_id: String,
    /// `amd64`, `arm64`, ... (Go's names, as Kubernetes uses them).
    pub architecture: String,
    /// The container runtime, `<name>://<version>` (`containerd://1.6.20`); the agent fills it
    /// in from the runtime once it answers.
    pub runtime_version: String,
}

impl MachineFacts {
    /// Reads the facts of the machine this runs on; a missing file gives an empty fact.
    pub fn read() -> MachineFacts {
        Self::read_from(Path::new("/"))
    }

    /// Reads them below `root` (a test's fake filesystem).
    pub fn read_from(root: &Path) -> MachineFacts {
        let read = |path: &str| {
            std::fs::read_to_string(root.join(path))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        MachineFacts {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            memory_bytes: mem_total(&read("proc/meminfo")).unwrap_or(0),
            kernel_version: read("proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read("etc/os-release")).unwrap_or_else(|| "Linux".to_owned()),
            machine_id: read("etc/machine-id"),
            boot_id: read("proc/sys/kernel/random/boot_id"),
            architecture: go_arch(std::env::consts::ARCH).to_owned(),
            runtime_version: String::new(),
        }
    }
}

/// `MemTotal:  24682416 kB` → bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim_matches('"').to_owned())
}

fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_root() {
        let root = std::env::temp_dir().join(format!("skiff-facts-{}", std::process::id()));
        for (path, text) in [
            ("proc/meminfo", "MemTotal:       2048 kB\nMemFree: 1 kB\n"),
            ("proc/sys/kernel/osrelease", "6.18.0\n"),
            ("proc/sys/kernel/random/boot_id", "b00t\n"),
            (
                "etc/os-release",
                "NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
            ),
            ("etc/machine-id", "abc\n"),
        ] {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        }
        let facts = MachineFacts::read_from(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(facts.memory_bytes, 2048 * 1024);
        assert_eq!(facts.kernel_version, "6.18.0");
        assert_eq!(facts.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(
            (facts.machine_id.as_str(), facts.boot_id.as_str()),
            ("abc", "b00t")
        );
        assert!(facts.cpus >= 1);
    }

    #[test]
    fn missing_files_give_empty_facts() {
        let facts = MachineFacts::read_from(Path::new("/nonexistent-skiff-root"));
        assert_eq!((facts.memory_bytes, facts.kernel_version.as_str()), (0, ""));
        assert_eq!(facts.os_image, "Linux");
    }
}
