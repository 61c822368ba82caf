//! A runtime in memory, for unit tests of the Pod worker: sandboxes and container runs are
//! records, a test ends a run with [`FakeRuntime::exit`], and images named in
//! [`FakeRuntime::missing_images`] fail to pull, as a registry without them would.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

use super::{
    ContainerConfig, ContainerInfo, ContainerState, ExecOutput, NodeImage, PodRuntime, PullPolicy,
    RuntimeError, SandboxConfig, SandboxInfo,
};
use crate::images::ImageError;

/// One run of a container.
#[derive(Clone, Debug, PartialEq)]
pub struct FakeRun {
    /// What it was started with.
    pub config: ContainerConfig,
    /// Its state.
    pub state: ContainerState,
}

#[derive(Debug, Default)]
struct State {
    sandboxes: BTreeMap<String, SandboxInfo>,
    runs: BTreeMap<(String, String), Vec<FakeRun>>,
    pulled: BTreeSet<String>,
    pulls: u32,
    next_ip: u8,
    /// Calls that change what runs, in order.
    calls: Vec<String>,
}

/// The in-memory runtime.
#[derive(Debug, Default)]
pub struct FakeRuntime {
    state: Mutex<State>,
    /// Images whose pull fails.
    pub missing_images: BTreeSet<String>,
}

const NOW: &str = "2026-01-01T00:00:00Z";

impl FakeRuntime {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no test panics holding the fake's lock")
    }

    /// Ends the latest run of a container with `exit_code`.
    pub fn exit(&self, uid: &str, name: &str, exit_code: i32) {
        let mut state = self.state();
        if let Some(run) = state
            .runs
            .get_mut(&(uid.to_owned(), name.to_owned()))
            .and_then(|runs| runs.last_mut())
        {
            run.state = ContainerState::Exited {
                exit_code,
                reason: if exit_code == 0 { "Completed" } else { "Error" }.to_owned(),
                message: None,
                started_at: Some(NOW.to_owned()),
                finished_at: NOW.to_owned(),
            };
        }
    }

    /// Every run of a container so far.
    pub fn runs(&self, uid: &str, name: &str) -> Vec<FakeRun> {
        self.state()
            .runs
            .get(&(uid.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The calls that stop or remove something, in the order they came.
    pub fn calls(&self) -> Vec<String> {
        self.state().calls.clone()
    }

    /// How many pulls reached the "registry".
    pub fn pulls(&self) -> u32 {
        self.state().pulls
    }
}

impl PodRuntime for FakeRuntime {
    fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake://1".to_owned())
    }

    fn pull_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        let mut state = self.state();
        let present = state.pulled.contains(image);
        match policy {
            PullPolicy::Never if !present => Err(ImageError::NeverPull {
                image: image.to_owned(),
            }
            .into()),
            PullPolicy::Never | PullPolicy::IfNotPresent if present => {
                Ok(format!("sha256:{image}"))
            }
            _ if self.missing_images.contains(image) => {
                state.pulls += 1;
                Err(ImageError::PullFailed {
                    image: image.to_owned(),
                    message: "not found".to_owned(),
                }
                .into())
            }
            _ => {
                state.pulls += 1;
                state.pulled.insert(image.to_owned());
                Ok(format!("sha256:{image}"))
            }
        }
    }

    fn images(&self) -> Result<Vec<NodeImage>, RuntimeError> {
        Ok(self
            .state()
            .pulled
            .iter()
            .map(|name| NodeImage {
                names: vec![name.clone()],
                size_bytes: 1,
            })
            .collect())
    }

    fn run_sandbox(&self, config: &SandboxConfig) -> Result<SandboxInfo, RuntimeError> {
        let mut state = self.state();
        if let Some(info) = state.sandboxes.get(&config.uid) {
            return Ok(info.clone());
        }
        state.next_ip += 1;
        let info = SandboxInfo {
            uid: config.uid.clone(),
            namespace: config.namespace.clone(),
            name: config.name.clone(),
            ip: Some(Ipv4Addr::new(10, 244, 0, state.next_ip)),
        };
        state.sandboxes.insert(config.uid.clone(), info.clone());
        Ok(info)
    }

    fn sandboxes(&self) -> Result<Vec<SandboxInfo>, RuntimeError> {
        Ok(self.state().sandboxes.values().cloned().collect())
    }

    fn remove_sandbox(&self, uid: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.calls.push(format!("remove_sandbox {uid}"));
        state.sandboxes.remove(uid);
        state.runs.retain(|(pod, _), _| pod != uid);
        Ok(())
    }

    fn collect_garbage(&self, _live: &[SandboxInfo]) -> Result<(), RuntimeError> {
        Ok(())
    }

    fn start_container(
        &self,
        pod: &SandboxConfig,
        config: &ContainerConfig,
    ) -> Result<ContainerInfo, RuntimeError> {
        let mut state = self.state();
        if !state.sandboxes.contains_key(&pod.uid) {
            return Err(RuntimeError::NoSandbox(pod.uid.clone()));
        }
        let runs = state
            .runs
            .entry((pod.uid.clone(), config.name.clone()))
            .or_default();
        runs.push(FakeRun {
            config: config.clone(),
            state: ContainerState::Running {
                started_at: NOW.to_owned(),
            },
        });
        let attempt = runs.len() as u32 - 1;
        Ok(ContainerInfo {
            attempt,
            id: format!("fake://{}/{}/{attempt}", pod.uid, config.name),
            image_id: None,
            state: runs[attempt as usize].state.clone(),
        })
    }

    fn container(&self, uid: &str, name: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let runs = self.runs(uid, name);
        Ok(runs.last().map(|run| {
            let attempt = runs.len() as u32 - 1;
            ContainerInfo {
                attempt,
                id: format!("fake://{uid}/{name}/{attempt}"),
                image_id: None,
                state: run.state.clone(),
            }
        }))
    }

    fn previous(&self, uid: &str, name: &str, attempt: u32) -> Option<ContainerState> {
        Some(self.runs(uid, name).get(attempt as usize)?.state.clone())
    }

    fn container_names(&self, uid: &str) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .state()
            .runs
            .keys()
            .filter(|(pod, _)| pod == uid)
            .map(|(_, name)| name.clone())
            .collect())
    }

    fn stop_container(&self, uid: &str, name: &str, grace: Duration) -> Result<(), RuntimeError> {
        let call = format!("stop_container {uid}/{name} {}s", grace.as_secs());
        self.state().calls.push(call);
        let running = matches!(
            self.runs(uid, name).last().map(|r| &r.state),
            Some(ContainerState::Running { .. })
        );
        if running {
            self.exit(uid, name, 143);
        }
        Ok(())
    }

    fn exec(
        &self,
        _uid: &str,
        _container: &str,
        argv: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        Ok(ExecOutput {
            code: Some(if argv.first().is_some_and(|a| a == "false") {
                1
            } else {
                0
            }),
            output: String::new(),
        })
    }
}
