//! The process runtime: a Pod is a network namespace, a mount and a UTS namespace plus a
//! cgroup (its sandbox), and each container a process started in them by a shim (see
//! [`crate::shim`]). Needs nothing installed beyond the CNI plugins.
//!
//! State lives under `<root>/pods/<uid>/`: `sandbox.json`; the Pod's `resolv.conf` and `hosts`
//! (written once its address is known) and `ns/{mnt,uts}`, the pins of the namespaces that show
//! them over the node's files and give it its hostname (see [`crate::podns`]); then per
//! container and run `containers/<name>/<attempt>/` with the shim's state files and the run's
//! `log`. Everything a restarted agent needs is there, so it adopts running Pods instead of
//! restarting them. `sandbox.json` is written before the network is set up, so a crash mid-way
//! leaves a record that removal (and CNI DEL, which is idempotent) can clean up.
//!
//! Images come from the catalog (see [`crate::images`]): an entry's entrypoint, cmd, env and
//! working dir sit beneath the Pod's own, as an image config does under containerd. An image
//! missing from the catalog still runs when the container gives a command (a host program).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use self::exec::exec_in;
use self::record::{SandboxRecord, create_pod_files, pins, remove_pins};
use super::{
    ContainerConfig, ContainerInfo, ContainerState, ExecOutput, NodeImage, POD_IFNAME, PodRuntime,
    PullPolicy, RuntimeError, SandboxConfig, SandboxInfo,
};
use crate::cni::{Attachment, Cni};
use crate::images::{Catalog, ImageError, resolve};
use crate::podns;
use crate::pods::env::DEFAULT_PATH;
use crate::sandbox;
use crate::shim::{self, Exited, ShimProcess, Started};

mod exec;
mod record;

/// How long starting a container waits for its shim to say the process runs.
const START_WAIT: Duration = Duration::from_secs(2);
/// What this runtime reports as the Node's `containerRuntimeVersion`.
pub const VERSION: &str = concat!("skiff-process://", env!("CARGO_PKG_VERSION"));

/// Whether the shim of the run in `dir` still runs.
fn shim_alive(dir: &Path) -> bool {
    shim::read_state::<ShimProcess>(dir, shim::SHIM).is_some_and(|s| s.alive())
}

/// How a run ended that its shim did not see end (the shim was killed, or never recorded).
fn shim_gone() -> Exited {
    Exited {
        exit_code: 137,
        signal: None,
        reason: "ContainerStatusUnknown".to_owned(),
        message: Some("the container's shim is gone".to_owned()),
        finished_at: shim::now(),
    }
}

/// The process runtime.
#[derive(Clone, Debug)]
pub struct ProcessRuntime {
    /// State folder (`<root-dir>/pods`).
    pub state_dir: PathBuf,
    /// The node's cgroup; Pods get `pod-<uid>` below it.
    pub cgroup_root: PathBuf,
    /// Pod namespaces are `/run/netns/<prefix><uid>`.
    pub netns_prefix: String,
    /// The CNI plugins.
    pub cni: Cni,
    /// This binary, run as `<exe> shim ...`.
    pub shim_exe: PathBuf,
    /// Where images come from.
    pub catalog: Catalog,
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Io { what, source }
}

impl ProcessRuntime {
    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.state_dir.join(uid)
    }

    fn container_dir(&self, uid: &str, name: &str) -> PathBuf {
        self.pod_dir(uid).join("containers").join(name)
    }

    fn read_sandbox(&self, uid: &str) -> Option<SandboxRecord> {
        shim::read_state(&self.pod_dir(uid), "sandbox.json")
    }

    fn attachment(&self, record: &SandboxRecord, config: Option<&SandboxConfig>) -> Attachment {
        let info = &record.info;
        Attachment {
            container_id: info.uid.clone(),
            netns: record.netns.clone(),
            ifname: POD_IFNAME.to_owned(),
            args: vec![
                ("K8S_POD_NAMESPACE".into(), info.namespace.clone()),
                ("K8S_POD_NAME".into(), info.name.clone()),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), info.uid.clone()),
                ("K8S_POD_UID".into(), info.uid.clone()),
            ],
            runtime_config: match config {
                Some(c) if !c.port_mappings.is_empty() => {
                    serde_json::json!({"portMappings": c.port_mappings})
                }
                _ => serde_json::Value::Null,
            },
        }
    }

    /// The attempts of a container, newest last.
    fn attempts(&self, uid: &str, name: &str) -> Vec<u32> {
        let mut list: Vec<u32> = fs::read_dir(self.container_dir(uid, name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        list.sort_unstable();
        list
    }

    /// One run of a container, read from the shim's files.
    fn run_of(&self, uid: &str, name: &str, attempt: u32) -> ContainerInfo {
        let dir = self.container_dir(uid, name).join(attempt.to_string());
        let started: Option<Started> = shim::read_state(&dir, shim::STARTED);
        let exited = shim::read_state::<Exited>(&dir, shim::EXITED)
            .or_else(|| (!shim_alive(&dir)).then(shim_gone));
        let state = match (exited, started) {
            (Some(exited), started) => ContainerState::Exited {
                exit_code: exited.exit_code,
                reason: exited.reason,
                message: exited.message,
                started_at: started.map(|s| s.started_at),
                finished_at: exited.finished_at,
            },
            (None, Some(s)) => ContainerState::Running {
                started_at: s.started_at,
            },
            (None, None) => ContainerState::Creating,
        };
        ContainerInfo {
            attempt,
            id: format!("skiff://{uid}/{name}/{attempt}"),
            image_id: None,
            state,
        }
    }

    /// Settles a run whose shim is gone without recording an exit (killed, or taken down with
    /// the agent's unit): what is left of the container's process group in the Pod's cgroup
    /// is killed and the run recorded as ended, so the next run does not share the Pod with
    /// it (and find its port taken) and its status stops changing. Fine for any other run.
    fn reap_orphan(&self, cgroup: &Path, dir: &Path) -> Result<(), RuntimeError> {
        if dir.join(shim::EXITED).exists() || shim_alive(dir) {
            return Ok(());
        }
        let started: Option<Started> = shim::read_state(dir, shim::STARTED);
        if let Some(started) = &started {
            // Only processes of this Pod: a recycled pid elsewhere is never touched.
            let leftovers = || -> Vec<i32> {
                sandbox::cgroup_pids(cgroup)
                    .into_iter()
                    .filter(|&pid| shim::process_group(pid) == Some(started.pid))
                    .collect()
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = leftovers();
                if left.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(RuntimeError::Io {
                        what: format!("processes {left:?} of {} did not end", dir.display()),
                        source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                    });
                }
                for pid in left {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            tracing::info!(run = %dir.display(), "a container whose shim was gone is ended");
        }
        shim::write_state(dir, shim::EXITED, &shim_gone())
            .map_err(io(format!("cannot record the end of {}", dir.display())))
    }

    /// The log of a container's run.
    pub fn log_path(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        self.container_dir(uid, name)
            .join(attempt.to_string())
            .join("log")
    }
}

/// The first IPv4 address of a CNI result.
pub fn result_ipv4(result: &serde_json::Value) -> Option<std::net::Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let address = ip["address"].as_str()?;
        address.split('/').next()?.parse().ok()
    })
}

/// The environment of a container: the image's, `PATH` when nobody sets one, `HOSTNAME` (the
/// Pod's name, as a container's hostname would be), then the Pod's.
fn merged_env(
    image_env: &[(String, String)],
    hostname: &str,
    pod_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_owned(),
        None => env.push((key.to_owned(), value.to_owned())),
    };
    for (key, value) in image_env {
        set(key, value);
    }
    if !image_env.iter().any(|(k, _)| k == "PATH") {
        set("PATH", DEFAULT_PATH);
    }
    set("HOSTNAME", hostname);
    for (key, value) in pod_env {
        set(key, value);
    }
    env
}

impl PodRuntime for ProcessRuntime {
    fn version(&self) -> Result<String, RuntimeError> {
        Ok(VERSION.to_owned())
    }

    fn pull_image(&self, image: &str, _policy: PullPolicy) -> Result<String, RuntimeError> {
        // Nothing to pull: a catalog entry or a host program. A broken entry fails here.
        match self.catalog.lookup(image) {
            Ok(_) => Ok(format!("catalog://{}", crate::images::repository(image))),
            Err(ImageError::NotFound { .. }) => Ok("host://".to_owned()),
            Err(err) => Err(err.into()),
        }
    }

    fn images(&self) -> Result<Vec<NodeImage>, RuntimeError> {
        Ok(self
            .catalog
            .entries()
            .into_iter()
            .map(|name| NodeImage {
                names: vec![name],
                size_bytes: 0,
            })
            .collect())
    }

    fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        if let Some(record) = self.read_sandbox(&config.uid)
            && record.info.ip.is_some()
            && sandbox::netns_exists(&record.netns)
        {
            return Ok(record.info);
        }
        let dir = self.pod_dir(&config.uid);
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let (mntns, utsns) = pins(&dir, &config.hostname);
        let mut record = SandboxRecord {
            info: SandboxInfo {
                uid: config.uid.clone(),
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                ip: None,
            },
            netns: sandbox::netns_path(&format!("{}{}", self.netns_prefix, config.uid)),
            cgroup: self.cgroup_root.join(format!("pod-{}", config.uid)),
            mntns: Some(mntns),
            utsns,
        };
        shim::write_state(&dir, "sandbox.json", &record)
            .map_err(io("cannot record the sandbox"))?;
        let made = (|| {
            sandbox::create_netns(&record.netns)?;
            sandbox::create_cgroup(&record.cgroup)?;
            let result = self.cni.add(&self.attachment(&record, Some(config)))?;
            let ip =
                result_ipv4(&result).ok_or_else(|| RuntimeError::NoAddress(result.to_string()))?;
            create_pod_files(&self.state_dir, &dir, &record, config, ip)?;
            Ok(ip)
        })();
        match made {
            Ok(ip) => {
                record.info.ip = Some(ip);
                shim::write_state(&dir, "sandbox.json", &record)
                    .map_err(io("cannot record the sandbox"))?;
                Ok(record.info)
            }
            Err(err) => {
                // Leave nothing half-made: the next sync starts from scratch.
                if let Err(cleanup) = self.remove_sandbox(&config.uid) {
                    tracing::warn!(error = %cleanup, pod = %config.name, "sandbox cleanup failed");
                }
                Err(err)
            }
        }
    }

    fn sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        Ok(fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.read_sandbox(e.file_name().to_str()?))
            .map(|record| record.info)
            .collect())
    }

    fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError> {
        let Some(record) = self.read_sandbox(uid) else {
            let dir = self.pod_dir(uid);
            remove_pins(&dir)?;
            return match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io(format!("cannot remove {}", dir.display()))(e))
                }
                _ => Ok(()),
            };
        };
        // Processes first (they may hold the address), then the network, then the rest.
        sandbox::remove_cgroup(&record.cgroup)?;
        if sandbox::netns_exists(&record.netns) || record.info.ip.is_some() {
            self.cni.del(&self.attachment(&record, None))?;
        }
        sandbox::remove_netns(&record.netns)?;
        if let Some(namespaces) = record.namespaces("", &[]) {
            podns::remove(&namespaces)?;
        }
        let dir = self.pod_dir(uid);
        fs::remove_dir_all(&dir).map_err(io(format!("cannot remove {}", dir.display())))
    }

    fn collect_garbage(&self, live: &[SandboxInfo]) -> Result<(), RuntimeError> {
        let valid: Vec<(String, String)> = live
            .iter()
            .map(|s| (s.uid.clone(), POD_IFNAME.to_owned()))
            .collect();
        Ok(self.cni.gc(&valid)?)
    }

    fn start_container(
        &self,
        pod: &SandboxConfig,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError> {
        let uid = pod.uid.as_str();
        let record = self
            .read_sandbox(uid)
            .ok_or_else(|| RuntimeError::NoSandbox(uid.to_owned()))?;
        let launch = resolve(
            &self.catalog,
            &config.image,
            &config.command,
            config.args.as_deref(),
            config.working_dir.as_deref(),
        )?;
        let hostname = match pod.hostname.as_str() {
            // hostNetwork: the node's.
            "" => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            name => name.to_owned(),
        };
        let env = merged_env(&launch.image_env, &hostname, &config.env);
        let attempts = self.attempts(uid, &config.name);
        // Any earlier run, not only the last: one orphaned before this agent started has
        // crash-looping runs after it.
        for earlier in &attempts {
            let dir = self
                .container_dir(uid, &config.name)
                .join(earlier.to_string());
            self.reap_orphan(&record.cgroup, &dir)?;
        }
        let attempt = attempts.last().map_or(0, |last| last + 1);
        let dir = self
            .container_dir(uid, &config.name)
            .join(attempt.to_string());
        fs::create_dir_all(&dir).map_err(io(format!("cannot create {}", dir.display())))?;
        let mut command = Command::new(&self.shim_exe);
        command
            .arg("shim")
            .arg("--state-dir")
            .arg(&dir)
            .arg("--netns")
            .arg(&record.netns)
            .arg("--cgroup")
            .arg(&record.cgroup)
            .arg("--log")
            .arg(dir.join("log"));
        if let Some(pin) = &record.mntns {
            command.arg("--mntns").arg(pin);
        }
        if let Some(pin) = &record.utsns {
            command.arg("--utsns").arg(pin);
        }
        if let Some(workdir) = &launch.working_dir {
            command.arg("--workdir").arg(workdir);
        }
        command
            .arg("--")
            .args(&launch.argv)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let status = command
            .status()
            .map_err(io(format!("cannot run {}", self.shim_exe.display())))?;
        if !status.success() {
            return Err(RuntimeError::Io {
                what: format!("the shim for {} failed to start", config.name),
                source: std::io::Error::other(status.to_string()),
            });
        }
        // As CRI's StartContainer, return once the process runs (or could not start), so the
        // Pod shows Running now rather than at the next sync; bounded, the shim may be slow.
        let deadline = Instant::now() + START_WAIT;
        loop {
            let run = self.run_of(uid, &config.name, attempt);
            if run.state != ContainerState::Creating || Instant::now() >= deadline {
                return Ok(run);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn container(&self, uid: &str, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        Ok(self
            .attempts(uid, name)
            .last()
            .map(|&attempt| self.run_of(uid, name, attempt)))
    }

    fn previous(&self, uid: &str, name: &str, attempt: u32) -> Option<ContainerState> {
        self.attempts(uid, name)
            .contains(&attempt)
            .then(|| self.run_of(uid, name, attempt).state)
    }

    fn container_names(&self, uid: &str) -> Result<Vec<String>, RuntimeError> {
        Ok(fs::read_dir(self.pod_dir(uid).join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect())
    }

    fn stop_container(&self, uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let Some(attempt) = self.attempts(uid, name).last().copied() else {
            return Ok(());
        };
        let dir = self.container_dir(uid, name).join(attempt.to_string());
        let ended = || dir.join(shim::EXITED).exists() || !shim_alive(&dir);
        if !shim_alive(&dir) {
            let record = self
                .read_sandbox(uid)
                .ok_or_else(|| RuntimeError::NoSandbox(uid.to_owned()))?;
            return self.reap_orphan(&record.cgroup, &dir);
        }
        let Some(started) = shim::read_state::<Started>(&dir, shim::STARTED) else {
            return Ok(());
        };
        let group = Pid::from_raw(started.pid);
        let wait = |limit: Duration| {
            let deadline = Instant::now() + limit;
            while !ended() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            ended()
        };
        if ended() {
            return Ok(());
        }
        let _ = killpg(group, Signal::SIGTERM);
        if wait(grace) {
            return Ok(());
        }
        let _ = killpg(group, Signal::SIGKILL);
        if wait(Duration::from_secs(5)) {
            Ok(())
        } else {
            Err(RuntimeError::Io {
                what: format!("container {name} of pod {uid} did not stop"),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            })
        }
    }

    fn exec(
        &self,
        uid: &str,
        _container: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        // Containers of a Pod share its namespaces and cgroup here: any of them will do.
        let record = self
            .read_sandbox(uid)
            .ok_or_else(|| RuntimeError::NoSandbox(uid.to_owned()))?;
        exec_in(&record.placement(), argv, timeout)
    }
}
