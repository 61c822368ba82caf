//! The containerd runtime: the agent speaks CRI v1 over gRPC to containerd's CRI plugin, as
//! kubelet does, and containerd runs real containers from registry images and calls the CNI
//! plugins itself (the agent writes the conflist; it never execs CNI for a Pod in this mode).
//!
//! All state lives in containerd: sandboxes and containers carry kubelet's labels
//! (`io.kubernetes.pod.uid`, `io.kubernetes.container.name`), so a restarted agent finds its
//! Pods by listing, and a container's restart count is its CRI `attempt`. Of a container's
//! ended runs only the last is kept (for `lastState` and `kubectl logs --previous`), as
//! kubelet's container GC keeps one. The gRPC channel connects lazily and reconnects, so a
//! restarted containerd is picked up on the next call; until then calls fail and the Pod
//! workers retry. Files of the agent's own per Pod live in `<root>/pods/<uid>/`, as kubelet's:
//! `etc-hosts`, the Pod's /etc/hosts, rewritten at each container start and mounted into every
//! container (containerd writes resolv.conf from the sandbox's DNS config).

pub mod convert;
pub mod image_gc;
pub mod logs;
mod lookup;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint};

use self::convert::{CONTAINER_NAME, POD_UID};
use super::POD_IFNAME;
use super::{
    ContainerConfig, ContainerInfo, ContainerState, ExecOutput, NodeImage, PodRuntime, PullPolicy,
    RuntimeError, SandboxConfig, SandboxInfo,
};
use crate::cni::Cni;
use crate::images::ImageError;

/// How long an ordinary CRI call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an image pull may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// A runtime reached over CRI.
#[derive(Clone, Debug)]
pub struct CriRuntime {
    handle: tokio::runtime::Handle,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    /// The node's Pod cgroup relative to the cgroup2 mount (`/skiff-pods`).
    cgroup_parent: String,
    /// Where Pods' container logs go (`/var/log/pods`).
    log_root: PathBuf,
    /// The CNI plugins, for garbage collection only (containerd 1.6 has no CNI GC).
    cni: Cni,
    /// The sandbox image, never collected.
    pinned_images: Vec<String>,
    /// Each Pod's own files: `<state_dir>/<uid>/`.
    state_dir: PathBuf,
}

/// Where a CRI runtime is and how Pods are laid out under it.
#[derive(Clone, Debug)]
pub struct CriSettings {
    /// `unix:///run/containerd/containerd.sock` (or a bare path).
    pub endpoint: String,
    /// The node's Pod cgroup, an absolute path in the cgroup2 hierarchy (`/sys/fs/cgroup/...`).
    pub cgroup_root: PathBuf,
    /// The cgroup2 mount point.
    pub cgroup_mount: PathBuf,
    /// The Pod log root.
    pub log_root: PathBuf,
    /// The CNI plugins (GC).
    pub cni: Cni,
    /// Images image GC never removes (the sandbox image).
    pub pinned_images: Vec<String>,
    /// Where Pods' own files go, a folder per Pod (`<root>/pods`).
    pub state_dir: PathBuf,
}

fn call_error(call: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| RuntimeError::Call {
        call,
        message: status.message().to_owned(),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

impl CriRuntime {
    /// A runtime at `settings.endpoint`; connects on first use. Must be called inside tokio.
    pub fn new(settings: CriSettings) -> Result<CriRuntime, RuntimeError> {
        let socket = PathBuf::from(
            settings
                .endpoint
                .strip_prefix("unix://")
                .unwrap_or(&settings.endpoint),
        );
        // The URI is a placeholder: every connection goes to the socket.
        // Keep-alives find a connection to a containerd that died without closing it, so calls
        // fail fast and the next one reconnects.
        let channel = Endpoint::from_static("http://cri.sock")
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true)
            .connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(&socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        let relative = settings
            .cgroup_root
            .strip_prefix(&settings.cgroup_mount)
            .map_err(|_| RuntimeError::Io {
                what: format!(
                    "the Pod cgroup {} is not below the cgroup2 mount {}",
                    settings.cgroup_root.display(),
                    settings.cgroup_mount.display()
                ),
                source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            })?;
        Ok(CriRuntime {
            handle: tokio::runtime::Handle::current(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            cgroup_parent: format!("/{}", relative.display()),
            log_root: settings.log_root,
            cni: settings.cni,
            pinned_images: settings.pinned_images,
            state_dir: settings.state_dir,
        })
    }

    /// Writes the Pod's hosts file for its address `ip`, as kubelet does before each container
    /// it creates; returns where it is.
    fn write_hosts_file(
        &self,
        pod: &SandboxConfig,
        ip: std::net::Ipv4Addr,
    ) -> Result<PathBuf, RuntimeError> {
        let dir = self.state_dir.join(&pod.uid);
        std::fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let node_hosts = match pod.hosts.host_network {
            true => std::fs::read_to_string("/etc/hosts").map_err(io("cannot read /etc/hosts"))?,
            false => String::new(),
        };
        let path = dir.join(convert::HOSTS_FILE);
        let text = crate::pods::hosts::hosts_file(&pod.hosts, ip, &node_hosts);
        std::fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))?;
        Ok(path)
    }

    /// Runs a CRI call to completion from a blocking thread, within `limit`.
    fn wait<T>(
        &self,
        call: &'static str,
        limit: Duration,
        future: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, RuntimeError> {
        self.handle.block_on(async {
            match tokio::time::timeout(limit, future).await {
                Ok(result) => result
                    .map(tonic::Response::into_inner)
                    .map_err(call_error(call)),
                Err(_) => Err(RuntimeError::Call {
                    call,
                    message: format!("no answer within {limit:?}"),
                }),
            }
        })
    }
}

impl PodRuntime for CriRuntime {
    fn version(&self) -> Result<String, RuntimeError> {
        let mut client = self.runtime.clone();
        let version = self.wait(
            "Version",
            CALL_TIMEOUT,
            client.version(cri::VersionRequest::default()),
        )?;
        Ok(format!(
            "{}://{}",
            version.runtime_name, version.runtime_version
        ))
    }

    fn pull_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        let spec = cri::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        };
        if policy != PullPolicy::Always {
            let mut client = self.images.clone();
            let request = cri::ImageStatusRequest {
                image: Some(spec.clone()),
                verbose: false,
            };
            let status = self.wait("ImageStatus", CALL_TIMEOUT, client.image_status(request))?;
            if let Some(found) = status.image {
                return Ok(found.id);
            }
            if policy == PullPolicy::Never {
                return Err(ImageError::NeverPull {
                    image: image.to_owned(),
                }
                .into());
            }
        }
        let mut client = self.images.clone();
        let request = cri::PullImageRequest {
            image: Some(spec),
            ..Default::default()
        };
        match self.wait("PullImage", PULL_TIMEOUT, client.pull_image(request)) {
            Ok(pulled) => Ok(pulled.image_ref),
            Err(RuntimeError::Call { message, .. }) => Err(ImageError::PullFailed {
                image: image.to_owned(),
                message,
            }
            .into()),
            Err(other) => Err(other),
        }
    }

    fn images(&self) -> Result<Vec<NodeImage>, RuntimeError> {
        let mut client = self.images.clone();
        let listed = self.wait(
            "ListImages",
            CALL_TIMEOUT,
            client.list_images(cri::ListImagesRequest::default()),
        )?;
        Ok(listed
            .images
            .into_iter()
            .map(|image| NodeImage {
                names: image
                    .repo_digests
                    .into_iter()
                    .chain(image.repo_tags)
                    .collect(),
                size_bytes: image.size,
            })
            .collect())
    }

    fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        let existing = self.pod_sandboxes(&config.uid)?;
        if let Some(ready) = existing
            .iter()
            .rev()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32)
        {
            return self.info_of(ready);
        }
        // A sandbox that died (its pause process gone) is replaced by the next attempt.
        let attempt = existing
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        let request = cri::RunPodSandboxRequest {
            config: Some(convert::sandbox_config(
                config,
                attempt,
                &self.log_root,
                &self.cgroup_parent,
            )),
            runtime_handler: String::new(),
        };
        let log_dir =
            convert::pod_log_dir(&self.log_root, &config.namespace, &config.name, &config.uid);
        std::fs::create_dir_all(&log_dir)
            .map_err(io(format!("cannot create {}", log_dir.display())))?;
        let mut client = self.runtime.clone();
        let id = self
            .wait(
                "RunPodSandbox",
                CALL_TIMEOUT,
                client.run_pod_sandbox(request),
            )?
            .pod_sandbox_id;
        let ip = self
            .sandbox_status(&id)?
            .network
            .and_then(|n| n.ip.parse().ok());
        if ip.is_none() {
            return Err(RuntimeError::NoAddress(format!("sandbox {id}")));
        }
        for old in existing {
            if let Err(err) = self.remove_pod_sandbox(&old.id) {
                tracing::warn!(sandbox = %old.id, error = %err, "an old sandbox was not removed");
            }
        }
        Ok(SandboxInfo {
            uid: config.uid.clone(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            ip,
        })
    }

    fn sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        let listed = self.all_sandboxes()?;
        let mut infos: Vec<SandboxInfo> = Vec::new();
        for sandbox in listed.iter().filter(|s| s.labels.contains_key(POD_UID)) {
            let info = self.info_of(sandbox)?;
            // One entry per Pod: its ready sandbox if it has one.
            match infos.iter_mut().find(|i| i.uid == info.uid) {
                Some(known) if known.ip.is_none() => *known = info,
                Some(_) => {}
                None => infos.push(info),
            }
        }
        Ok(infos)
    }

    fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError> {
        let sandboxes = self.pod_sandboxes(uid)?;
        for sandbox in &sandboxes {
            self.remove_pod_sandbox(&sandbox.id)?;
        }
        // runc removes the containers' cgroups; the Pod's own, their parent, is ours (kubelet's
        // pod cgroup manager's job) — in every hierarchy runc used, with whatever a container
        // that never started left below it.
        let pod_cgroup = format!("{}/pod-{uid}", self.cgroup_parent.trim_matches('/'));
        for hierarchy in crate::sandbox::cgroup_mounts() {
            crate::sandbox::remove_cgroup_tree(&hierarchy.join(&pod_cgroup))?;
        }
        let own = self.state_dir.join(uid);
        match std::fs::remove_dir_all(&own) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io(format!("cannot remove {}", own.display()))(e));
            }
            _ => {}
        }
        if let Some(meta) = sandboxes.last().and_then(|s| s.metadata.as_ref()) {
            let dir = convert::pod_log_dir(&self.log_root, &meta.namespace, &meta.name, uid);
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(format!("cannot remove {}", dir.display()))(e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn collect_garbage(&self, _live: &[SandboxInfo]) -> Result<(), RuntimeError> {
        // containerd calls CNI with the sandbox's id, so what stays valid is every sandbox
        // containerd holds, ready or not (a dead sandbox keeps its address until removed).
        let listed = self.all_sandboxes()?;
        let valid: Vec<(String, String)> = listed
            .into_iter()
            .map(|s| (s.id, POD_IFNAME.to_owned()))
            .collect();
        Ok(self.cni.gc(&valid)?)
    }

    fn start_container(
        &self,
        pod: &SandboxConfig,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError> {
        let uid = pod.uid.as_str();
        let sandbox = self
            .ready_sandbox(uid)?
            .ok_or_else(|| RuntimeError::NoSandbox(uid.to_owned()))?;
        let earlier = self.pod_containers(uid, Some(&config.name))?;
        let attempt = earlier
            .iter()
            .filter_map(|c| c.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        // Keep the last run (lastState, previous logs); older ones go, as kubelet's GC does.
        for old in earlier.iter().rev().skip(1) {
            self.remove_container(&old.id)?;
        }
        let hosts_file = match self.info_of(&sandbox)?.ip {
            Some(ip) => Some(self.write_hosts_file(pod, ip)?),
            None => None,
        };
        let sandbox_attempt = sandbox.metadata.as_ref().map_or(0, |m| m.attempt);
        let sandbox_config =
            convert::sandbox_config(pod, sandbox_attempt, &self.log_root, &self.cgroup_parent);
        let log_dir = PathBuf::from(&sandbox_config.log_directory).join(&config.name);
        std::fs::create_dir_all(&log_dir)
            .map_err(io(format!("cannot create {}", log_dir.display())))?;
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox.id,
            config: Some(convert::container_config(
                pod,
                config,
                attempt,
                hosts_file.as_deref(),
            )),
            sandbox_config: Some(sandbox_config),
        };
        let mut client = self.runtime.clone();
        let id = self
            .wait(
                "CreateContainer",
                CALL_TIMEOUT,
                client.create_container(request),
            )?
            .container_id;
        let mut client = self.runtime.clone();
        let request = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.wait(
            "StartContainer",
            CALL_TIMEOUT,
            client.start_container(request),
        )?;
        let status = self.container_status(&id)?;
        Ok(ContainerInfo {
            attempt,
            id: format!("containerd://{id}"),
            image_id: (!status.image_ref.is_empty()).then(|| status.image_ref.clone()),
            state: convert::container_state(&status),
        })
    }

    fn container(&self, uid: &str, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let mut containers = self.pod_containers(uid, Some(name))?;
        while let Some(latest) = containers.pop() {
            // Created but never started: containerd went away between CreateContainer and
            // StartContainer (start_container does both at once). It goes, so the worker
            // starts the container anew, as kubelet restarts a created container.
            if latest.state == cri::ContainerState::ContainerCreated as i32 {
                tracing::info!(container = %latest.id, "removing a container that never started");
                self.remove_container(&latest.id)?;
                continue;
            }
            return Ok(Some(self.info_of_container(&latest)?));
        }
        Ok(None)
    }

    fn previous(&self, uid: &str, name: &str, attempt: u32) -> Option<ContainerState> {
        let containers = self.pod_containers(uid, Some(name)).ok()?;
        let run = containers
            .iter()
            .find(|c| c.metadata.as_ref().is_some_and(|m| m.attempt == attempt))?;
        Some(self.info_of_container(run).ok()?.state)
    }

    fn container_names(&self, uid: &str) -> Result<Vec<String>, RuntimeError> {
        let mut names: Vec<String> = self
            .pod_containers(uid, None)?
            .into_iter()
            .filter_map(|c| c.labels.get(CONTAINER_NAME).cloned())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn stop_container(&self, uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        for container in self.pod_containers(uid, Some(name))? {
            if container.state == cri::ContainerState::ContainerExited as i32 {
                continue;
            }
            let mut client = self.runtime.clone();
            let request = cri::StopContainerRequest {
                container_id: container.id.clone(),
                timeout: grace.as_secs() as i64,
            };
            self.wait(
                "StopContainer",
                grace + CALL_TIMEOUT,
                client.stop_container(request),
            )?;
        }
        Ok(())
    }

    fn status(&self) -> Result<(), RuntimeError> {
        let mut client = self.runtime.clone();
        let answer = self.wait(
            "Status",
            CALL_TIMEOUT,
            client.status(cri::StatusRequest { verbose: false }),
        )?;
        let not_ready: Vec<String> = answer
            .status
            .map(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.status)
            .map(|c| {
                format!(
                    "{}=false reason:{} message:{}",
                    c.r#type, c.reason, c.message
                )
            })
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Call {
                call: "Status",
                message: not_ready.join("; "),
            })
        }
    }

    fn collect_images(
        &self,
        high_percent: u8,
        low_percent: u8,
    ) -> Result<Vec<String>, RuntimeError> {
        self.collect_unused_images(high_percent, low_percent)
    }

    fn rotate_logs(&self, max_bytes: u64, max_files: usize) -> Result<usize, RuntimeError> {
        self.rotate_running_logs(max_bytes, max_files)
    }

    fn exec(
        &self,
        uid: &str,
        container: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let target = self
            .pod_containers(uid, Some(container))?
            .into_iter()
            .rev()
            .find(|c| c.state == cri::ContainerState::ContainerRunning as i32)
            .ok_or_else(|| RuntimeError::Call {
                call: "ExecSync",
                message: format!("container {container} is not running"),
            })?;
        let mut client = self.runtime.clone();
        let request = cri::ExecSyncRequest {
            container_id: target.id,
            cmd: argv.to_vec(),
            timeout: timeout.as_secs_f64().ceil().max(1.0) as i64,
        };
        match self.wait(
            "ExecSync",
            timeout + CALL_TIMEOUT,
            client.exec_sync(request),
        ) {
            Ok(out) => {
                let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
                output.push_str(&String::from_utf8_lossy(&out.stderr));
                Ok(ExecOutput {
                    code: Some(out.exit_code),
                    output,
                })
            }
            Err(RuntimeError::Call { message, .. }) if message.contains("timeout") => {
                Ok(ExecOutput {
                    code: None,
                    output: format!("timed out after {timeout:?}: {message}"),
                })
            }
            Err(err) => Err(err),
        }
    }
}
