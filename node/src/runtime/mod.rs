//! The seam between the agent's Pod logic and what runs Pods.
//!
//! Shaped after the CRI (RunPodSandbox, CreateContainer + StartContainer, ContainerStatus,
//! StopContainer, ExecSync, RemovePodSandbox, PullImage), with two runtimes behind it: the
//! process runtime ([`process`]: host processes in a network namespace, images from a local
//! catalog) and containerd over CRI ([`cri`]: real containers from registry images). Either way
//! the runtime, not the agent, owns the sandbox's network — it calls the CNI plugins — and the
//! runtime applies the image's config (entrypoint, cmd, env, working dir) beneath what the Pod
//! says, as containerd does, so the agent hands over the Pod's own `command`/`args`/`env`.
//! Calls block (they fork, wait, touch the kernel, or wait on gRPC); the agent makes them from
//! blocking tasks.

pub mod cri;
pub mod fake;
pub mod process;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The interface name Pods get (what the runtimes ask the CNI plugins for).
pub const POD_IFNAME: &str = "eth0";

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The sandbox's namespace or cgroup.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The CNI plugins.
    #[error("pod network: {0}")]
    Network(#[from] crate::cni::CniError),
    /// The CNI result had no IPv4 address.
    #[error("the CNI result gave the pod no IPv4 address: {0}")]
    NoAddress(String),
    /// No sandbox for this Pod.
    #[error("no sandbox for pod {0}")]
    NoSandbox(String),
    /// The Pod asks for a sandbox that cannot be made (kubelet's answer, word for word).
    #[error("{0}")]
    Invalid(String),
    /// The image cannot be had or used.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// The runtime refused or failed a call (containerd's message).
    #[error("{call}: {message}")]
    Call {
        /// The CRI call.
        call: &'static str,
        /// What the runtime said.
        message: String,
    },
    /// A file or process operation.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A host port the Pod asks for (CNI `portMappings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// On the node.
    pub host_port: u16,
    /// In the Pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The node address, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// The Pod's resolv.conf, as kubelet computes it from `dnsPolicy` and `dnsConfig`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsConfig {
    /// `nameserver` lines.
    pub servers: Vec<String>,
    /// The `search` line.
    pub searches: Vec<String>,
    /// `options` (`ndots:5`, ...).
    pub options: Vec<String>,
}

/// The Pod's /etc/hosts, as kubelet writes it, less the Pod's address (known once its network
/// is up): the runtime renders it with [`crate::pods::hosts::hosts_file`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostsConfig {
    /// The name the Pod's address goes by: its hostname, without domain.
    pub hostname: String,
    /// With `spec.subdomain`: `<subdomain>.<namespace>.svc.<cluster domain>`.
    pub domain: Option<String>,
    /// `hostAliases`: an address and its names.
    pub aliases: Vec<(String, Vec<String>)>,
    /// `hostNetwork`: the node's own hosts file is the base.
    pub host_network: bool,
}

/// A node path a container sees at a path of its own (a hostPath volume's `volumeMount`).
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeMount {
    /// On the node.
    pub host_path: PathBuf,
    /// In the container.
    pub container_path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// What a sandbox is made for.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// The Pod's uid (the sandbox's id).
    pub uid: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub name: String,
    /// The hostname the Pod's containers see (its name or `spec.hostname`, the FQDN with
    /// `setHostnameAsFQDN`); empty with `hostNetwork`, which keeps the node's.
    pub hostname: String,
    /// Host ports.
    pub port_mappings: Vec<PortMapping>,
    /// Its resolv.conf.
    pub dns: DnsConfig,
    /// Its /etc/hosts.
    pub hosts: HostsConfig,
    /// Every container's volume mounts, as (container name, mount); the process runtime,
    /// whose containers share the Pod's mount namespace, shows them all to every container.
    pub mounts: Vec<(String, VolumeMount)>,
}

/// A sandbox that exists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    /// The Pod's uid.
    pub uid: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub name: String,
    /// Its address, once the network is up.
    pub ip: Option<Ipv4Addr>,
}

/// Resource limits a container runs under (cgroup v2 settings, as kubelet derives them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resources {
    /// `cpu.weight`'s source: CPU shares from the request (2 when none, as kubelet).
    pub cpu_shares: u64,
    /// CPU quota per 100 ms period in µs, from the limit.
    pub cpu_quota: Option<u64>,
    /// `memory.max` in bytes, from the limit.
    pub memory_limit: Option<u64>,
}

/// What a container runs: the Pod's side of it; the runtime adds the image's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerConfig {
    /// The container's name in the Pod.
    pub name: String,
    /// The image reference.
    pub image: String,
    /// `command` (replaces the image's entrypoint and drops its cmd), `$(VAR)`s expanded.
    pub command: Vec<String>,
    /// `args` (replace the image's cmd), `$(VAR)`s expanded.
    pub args: Option<Vec<String>>,
    /// The Pod's environment for it (over the image's).
    pub env: Vec<(String, String)>,
    /// The working directory, if the Pod sets one.
    pub working_dir: Option<String>,
    /// cgroup limits.
    pub resources: Resources,
}

/// Where a container is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum ContainerState {
    /// Started by the runtime, not yet running.
    Creating,
    /// Its process runs.
    Running {
        /// RFC 3339.
        started_at: String,
    },
    /// It ended (or never started, or its supervisor vanished).
    Exited {
        /// Exit code; 128+n when killed by signal n.
        exit_code: i32,
        /// `Completed`, `Error`, `StartError`, `ContainerStatusUnknown`.
        reason: String,
        /// Detail, if any.
        message: Option<String>,
        /// RFC 3339, if it started.
        started_at: Option<String>,
        /// RFC 3339.
        finished_at: String,
    },
}

/// The latest run of a container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerInfo {
    /// How many runs came before this one (the restart count).
    pub attempt: u32,
    /// `<runtime>://<id>` (`containerd://...`, `skiff://<pod uid>/<name>/<attempt>`).
    pub id: String,
    /// The image it runs, by id (`imageID`), when the runtime knows it.
    pub image_id: Option<String>,
    /// Its state.
    pub state: ContainerState,
}

/// What an exec printed.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecOutput {
    /// The exit code (None when it timed out or was killed).
    pub code: Option<i32>,
    /// stdout and stderr.
    pub output: String,
}

/// When to pull an image (`imagePullPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Every time a container starts.
    Always,
    /// When the node does not have it.
    IfNotPresent,
    /// Never: the node must have it.
    Never,
}

impl PullPolicy {
    /// The container's policy, with Kubernetes' default (`Always` for `:latest` or no tag).
    pub fn of(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                let name = image.split('@').next().unwrap_or(image);
                let last = name.rsplit('/').next().unwrap_or(name);
                let has_digest = image.contains('@');
                match last.split_once(':') {
                    _ if has_digest => PullPolicy::IfNotPresent,
                    Some((_, "latest")) | None => PullPolicy::Always,
                    Some(_) => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

/// An image the node holds (for `status.images`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeImage {
    /// Its names: tags and digests.
    pub names: Vec<String>,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Runs Pods.
pub trait PodRuntime: Send + Sync + 'static {
    /// `<name>://<version>`, for the Node's `containerRuntimeVersion`.
    fn version(&self) -> Result<String, RuntimeError>;
    /// Makes sure `image` is on the node per `policy`; returns its id.
    fn pull_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError>;
    /// The images on the node.
    fn images(&self) -> Result<Vec<NodeImage>, RuntimeError>;
    /// Makes the Pod's sandbox and network, or returns the one that exists.
    fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError>;
    /// Every sandbox this runtime holds (also those made before a restart).
    fn sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError>;
    /// Kills what is left of the Pod, releases its network and removes the sandbox; fine when
    /// it is already gone.
    fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError>;
    /// After a restart: releases what the runtime holds for sandboxes that no longer exist
    /// (addresses whose sandbox vanished while the agent was away). `live` are the sandboxes
    /// that remain.
    fn collect_garbage(&self, live: &[SandboxInfo]) -> Result<(), RuntimeError>;
    /// Creates and starts a new run of a container in the Pod `pod` (the sandbox's config, as
    /// kubelet passes it again at CreateContainer).
    fn start_container(
        &self,
        pod: &SandboxConfig,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError>;
    /// The latest run of a container, if any.
    fn container(&self, uid: &str, name: &str) -> Result<Option<ContainerInfo>, RuntimeError>;
    /// The state of an earlier run of a container (for `lastState`).
    fn previous(&self, uid: &str, name: &str, attempt: u32) -> Option<ContainerState>;
    /// The containers that ever ran in the Pod.
    fn container_names(&self, uid: &str) -> Result<Vec<String>, RuntimeError>;
    /// SIGTERM, up to `grace`, then SIGKILL; returns once it has ended.
    fn stop_container(&self, uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Ok when the runtime can run Pods, its network included (CRI `Status`); the process
    /// runtime always can.
    fn status(&self) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// Removes images no container uses while the image filesystem is fuller than
    /// `high_percent`, until it is under `low_percent`; returns the ids removed. The process
    /// runtime's catalog holds no image data.
    fn collect_images(
        &self,
        _high_percent: u8,
        _low_percent: u8,
    ) -> Result<Vec<String>, RuntimeError> {
        Ok(Vec::new())
    }
    /// Rotates running containers' logs over `max_bytes`, keeping `max_files` per container;
    /// returns how many were rotated. The process runtime keeps a log per run instead.
    fn rotate_logs(&self, _max_bytes: u64, _max_files: usize) -> Result<usize, RuntimeError> {
        Ok(0)
    }
    /// Runs `argv` in a container of the Pod (exec probes).
    fn exec(
        &self,
        uid: &str,
        container: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_as_kubernetes() {
        assert_eq!(PullPolicy::of(None, "web"), PullPolicy::Always);
        assert_eq!(PullPolicy::of(None, "web:latest"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::of(None, "localhost:5000/web"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::of(None, "localhost:5000/web:v1"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::of(None, "web@sha256:ab"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(PullPolicy::of(Some("Never"), "web"), PullPolicy::Never);
    }
}
