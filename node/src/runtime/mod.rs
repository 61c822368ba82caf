//! The seam between the agent's Pod logic and what runs Pods.
//!
//! Shaped after the CRI (RunPodSandbox, StartContainer, ContainerStatus, StopContainer,
//! ExecSync, RemovePodSandbox) so a containerd runtime over gRPC can slot in later: the runtime,
//! not the agent, owns the sandbox's network — it calls the CNI plugins, as containerd does.
//! Calls block (they fork, wait, touch the kernel); the agent makes them from blocking tasks.

pub mod process;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// What a sandbox is made for.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// The Pod's uid (the sandbox's id).
    pub uid: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub name: String,
    /// Host ports.
    pub port_mappings: Vec<PortMapping>,
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
    /// Its network namespace.
    pub netns: PathBuf,
    /// Its cgroup.
    pub cgroup: PathBuf,
    /// Its address, once the network is up.
    pub ip: Option<Ipv4Addr>,
}

/// What a container runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerConfig {
    /// The container's name in the Pod.
    pub name: String,
    /// The command line.
    pub argv: Vec<String>,
    /// The environment, whole.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub working_dir: Option<String>,
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
    /// `skiff://<pod uid>/<name>/<attempt>`.
    pub id: String,
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

/// Runs Pods.
pub trait PodRuntime: Send + Sync + 'static {
    /// Makes the Pod's sandbox and network, or returns the one that exists.
    fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError>;
    /// Every sandbox this runtime holds (also those made before a restart).
    fn sandboxes(&self) -> Vec<SandboxInfo>;
    /// Kills what is left of the Pod, releases its network and removes the sandbox; fine when
    /// it is already gone.
    fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError>;
    /// Starts a new run of a container.
    fn start_container(
        &self,
        uid: &str,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError>;
    /// The latest run of a container, if any.
    fn container(&self, uid: &str, name: &str) -> Option<ContainerInfo>;
    /// The state of an earlier run of a container (for `lastState`).
    fn previous(&self, uid: &str, name: &str, attempt: u32) -> Option<ContainerState>;
    /// The containers that ever ran in the Pod.
    fn container_names(&self, uid: &str) -> Vec<String>;
    /// SIGTERM, up to `grace`, then SIGKILL; returns once it has ended.
    fn stop_container(&self, uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Runs `argv` in the Pod's namespace and cgroup (exec probes).
    fn exec(
        &self,
        uid: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError>;
}
