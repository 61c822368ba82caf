//! `sandbox.json`, the process runtime's record of a sandbox, and the Pod's own view of the
//! node's files: its resolv.conf and hosts file, written once the Pod has an address and
//! shown over the node's in its mount namespace with its hostPath volumes, with its hostname in
//! its UTS namespace.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use skiff_common::placement::Placement;

use super::io;
use crate::podns::{self, PodNamespaces};
use crate::pods::dns::resolv_conf;
use crate::pods::hosts::hosts_file;
use crate::runtime::{RuntimeError, SandboxConfig, SandboxInfo, VolumeMount};

/// `sandbox.json`: the sandbox and where its namespace and cgroup are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SandboxRecord {
    #[serde(flatten)]
    pub(super) info: SandboxInfo,
    pub(super) netns: PathBuf,
    pub(super) cgroup: PathBuf,
    /// The mount namespace's pin (none for a Pod made before Pods had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) mntns: Option<PathBuf>,
    /// The UTS namespace's pin (none with the node's hostname).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) utsns: Option<PathBuf>,
}

impl SandboxRecord {
    /// Where its processes start.
    pub(super) fn placement(&self) -> Placement<'_> {
        Placement {
            netns: Some(&self.netns),
            utsns: self.utsns.as_deref(),
            mntns: self.mntns.as_deref(),
            cgroup: Some(&self.cgroup),
        }
    }

    /// Its mount and UTS namespaces, showing `covers` and named `hostname`.
    pub(super) fn namespaces<'a>(
        &'a self,
        hostname: &'a str,
        covers: &'a [VolumeMount],
    ) -> Option<PodNamespaces<'a>> {
        Some(PodNamespaces {
            mnt: self.mntns.as_deref()?,
            uts: self.utsns.as_deref().map(|pin| (pin, hostname)),
            covers,
        })
    }
}

/// Where a Pod's namespaces are pinned, in its folder `dir`.
pub(super) fn pins(dir: &Path, hostname: &str) -> (PathBuf, Option<PathBuf>) {
    let uts = (!hostname.is_empty()).then(|| dir.join("ns/uts"));
    (dir.join("ns/mnt"), uts)
}

/// Writes the Pod's resolv.conf and hosts file (now that it has address `ip`) into its folder
/// `dir` and makes the namespaces that show them; `state_dir` holds every Pod's folder.
pub(super) fn create_pod_files(
    state_dir: &Path,
    dir: &Path,
    record: &SandboxRecord,
    config: &SandboxConfig,
    ip: Ipv4Addr,
) -> Result<(), RuntimeError> {
    let node_hosts = match config.hosts.host_network {
        true => fs::read_to_string("/etc/hosts").map_err(io("cannot read /etc/hosts"))?,
        false => String::new(),
    };
    let files = [
        ("resolv.conf", "/etc/resolv.conf", resolv_conf(&config.dns)),
        (
            "hosts",
            "/etc/hosts",
            hosts_file(&config.hosts, ip, &node_hosts),
        ),
    ];
    let mut covers = Vec::new();
    for (name, node_path, text) in files {
        let file = dir.join(name);
        fs::write(&file, text).map_err(io(format!("cannot write {}", file.display())))?;
        covers.push(VolumeMount {
            host_path: file,
            container_path: PathBuf::from(node_path),
            read_only: false,
        });
    }
    // The Pod's containers share its mount namespace: each sees every container's volumes.
    for (_, mount) in &config.mounts {
        if !covers
            .iter()
            .any(|c| c.container_path == mount.container_path)
        {
            covers.push(mount.clone());
        }
    }
    let Some(namespaces) = record.namespaces(&config.hostname, &covers) else {
        return Ok(());
    };
    podns::make_private_dir(state_dir)?;
    Ok(podns::create(&namespaces)?)
}

/// Unpins whatever namespaces the Pod with folder `dir` has, record or not.
pub(super) fn remove_pins(dir: &Path) -> Result<(), RuntimeError> {
    let (mnt, uts) = pins(dir, "any");
    let uts = uts.unwrap_or_default();
    Ok(podns::remove(&PodNamespaces {
        mnt: &mnt,
        uts: Some((&uts, "")),
        covers: &[],
    })?)
}
