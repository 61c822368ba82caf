//! One Pod's worker: makes what runs match the Pod, every second and on every change.
//!
//! It observes (the runtime's view of each container), asks [`decide`] what each needs next —
//! restart policy, back-offs and teardown order are pure decisions there — and carries that out
//! against the runtime and the API.
//!
//! Like kubelet's pod worker it owns one Pod from first sight to teardown: it makes the sandbox,
//! pulls images per `imagePullPolicy` (failed pulls back off as kubelet's do:
//! `ErrImagePull`, then `ImagePullBackOff`), starts containers (again, per `restartPolicy`,
//! with kubelet's back-off: the first restart at once, then 10 s doubling to 5 min), runs the
//! probes, and patches the status when it changes.
//! When the Pod is being deleted it stops the containers (SIGTERM, the grace period, SIGKILL),
//! has the runtime release the network and remove the sandbox, and only then deletes the Pod
//! for good — so an address is never reused while the old Pod could still answer on it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::decide::{Backoff, Next, RestartPolicy, Teardown};
use self::launch::sandbox_config;
use super::dns::DnsSettings;
use super::events::Recorder;
use super::probe::ProbeState;
use super::status::{ContainerView, PodView, pod_status};
use crate::runtime::{ContainerState, PodRuntime, PullPolicy, RuntimeError, SandboxInfo};

mod decide;
mod launch;
mod probing;

/// How often a worker looks at its Pod when nothing changed (kubelet's PLEG relist period).
pub const RESYNC: Duration = Duration::from_secs(1);

/// What every worker shares.
pub struct Context {
    /// The API.
    pub client: kube::Client,
    /// What runs Pods.
    pub runtime: Arc<dyn PodRuntime>,
    /// What Pods' resolv.conf is made from.
    pub dns: DnsSettings,
    /// Every Service (for the Service variables containers get).
    pub services: kube::runtime::reflector::Store<Service>,
    /// This node's name.
    pub node: String,
    /// This node's address.
    pub node_ip: Ipv4Addr,
    /// Events.
    pub recorder: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Runs a blocking runtime call off the async threads.
async fn blocking<T: Send + 'static>(
    ctx: &Arc<Context>,
    call: impl FnOnce(&dyn PodRuntime) -> T + Send + 'static,
) -> T {
    let runtime = Arc::clone(&ctx.runtime);
    tokio::task::spawn_blocking(move || call(runtime.as_ref()))
        .await
        .expect("runtime calls do not panic")
}

/// One container's bookkeeping between syncs.
#[derive(Debug, Default)]
struct Track {
    /// The run the probes below belong to.
    attempt: Option<u32>,
    started: Option<Instant>,
    readiness: Option<ProbeState>,
    liveness: Option<ProbeState>,
    /// Restarts in a row, and when the next may happen.
    crash: Backoff,
    /// Failed pulls in a row, and when the next may happen.
    pull: Backoff,
    /// The image id of the last pull.
    image_id: Option<String>,
    /// The last warning sent, not to repeat it every second.
    reported: Option<String>,
}

/// The worker's state.
struct Worker {
    ctx: Arc<Context>,
    tracks: HashMap<String, Track>,
    sandbox: Option<SandboxInfo>,
    start_time: Option<String>,
    posted: Value,
    sandbox_error: Option<String>,
}

fn now_text() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The waiting reason Kubernetes shows for a failed start.
fn start_failure_reason(err: &RuntimeError) -> String {
    match err {
        RuntimeError::Image(image) => image.reason().to_owned(),
        RuntimeError::Call {
            call: "CreateContainer",
            ..
        } => "CreateContainerError".to_owned(),
        _ => "RunContainerError".to_owned(),
    }
}

/// Runs the worker of one Pod until the Pod is gone and torn down. `pod` carries the latest
/// object; `None` means it was deleted from the API.
pub async fn run(ctx: Arc<Context>, uid: String, mut pod: watch::Receiver<Option<Pod>>) {
    let mut worker = Worker::new(ctx);
    loop {
        let current = pod.borrow_and_update().clone();
        match current {
            Some(p) if p.metadata.deletion_timestamp.is_none() => worker.sync(&p).await,
            gone => {
                worker.tear_down(&uid, gone.as_ref()).await;
                return;
            }
        }
        tokio::select! {
            changed = pod.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RESYNC) => {}
        }
    }
}

impl Worker {
    /// A worker that has seen nothing yet.
    fn new(ctx: Arc<Context>) -> Self {
        Worker {
            ctx,
            tracks: HashMap::new(),
            sandbox: None,
            start_time: None,
            posted: Value::Null,
            sandbox_error: None,
        }
    }

    async fn sync(&mut self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        if self.start_time.is_none() {
            let existing = pod.status.as_ref().and_then(|s| s.start_time.as_ref());
            self.start_time = Some(match existing {
                Some(t) => serde_json::to_value(t)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(now_text),
                None => now_text(),
            });
            self.posted = serde_json::to_value(&pod.status).unwrap_or(Value::Null);
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        if self.sandbox.is_none() && !finished {
            let made = match sandbox_config(pod, &self.ctx.dns) {
                Ok(config) => blocking(&self.ctx, move |r| r.run_sandbox(&config)).await,
                Err(err) => Err(err),
            };
            match made {
                Ok(info) => {
                    self.sandbox = Some(info);
                    self.sandbox_error = None;
                }
                Err(err) => {
                    let message = error_text(&err);
                    if self.sandbox_error.as_deref() != Some(&message) {
                        tracing::warn!(pod = ?pod.metadata.name, error = %message, "sandbox failed");
                        self.ctx
                            .recorder
                            .pod_event(pod, true, "FailedCreatePodSandBox", &message);
                    }
                    self.sandbox_error = Some(message);
                }
            }
        }
        let mut views = Vec::new();
        for container in &spec.containers {
            match self.sync_container(pod, &uid, container, finished).await {
                Ok(view) => views.push(view),
                Err(err) => {
                    // The runtime cannot say what runs: post nothing rather than a guess.
                    tracing::warn!(pod = ?pod.metadata.name, error = %error_text(&err), "runtime unavailable");
                    return;
                }
            }
        }
        let view = PodView {
            host_ip: self.ctx.node_ip.to_string(),
            pod_ip: self
                .sandbox
                .as_ref()
                .and_then(|s| s.ip)
                .map(|ip| ip.to_string()),
            start_time: self.start_time.clone().unwrap_or_default(),
            restart_policy: spec
                .restart_policy
                .clone()
                .unwrap_or_else(|| "Always".into()),
            containers: views,
        };
        self.post(pod, pod_status(&view, &self.posted, &now_text()))
            .await;
    }

    async fn sync_container(
        &mut self,
        pod: &Pod,
        uid: &str,
        container: &Container,
        finished: bool,
    ) -> Result<ContainerView, RuntimeError> {
        let name = container.name.clone();
        let runtime_uid = uid.to_owned();
        let runtime_name = name.clone();
        let mut run =
            blocking(&self.ctx, move |r| r.container(&runtime_uid, &runtime_name)).await?;
        let track = self.tracks.entry(name.clone()).or_default();
        let can_run = !finished && self.sandbox.is_some();
        let now = Instant::now();
        let state = run.as_ref().map(|info| &info.state);
        let next = decide::next(
            RestartPolicy::of(pod),
            state,
            can_run,
            &track.crash,
            &track.pull,
            now,
        );
        let image = container.image.as_deref().unwrap_or_default();
        let waiting = match next {
            Next::Leave => None,
            Next::CrashBackOff { left } => Some((
                "CrashLoopBackOff".to_owned(),
                format!(
                    "back-off restarting failed container={name} pod={} ({}s left)",
                    pod.metadata.name.as_deref().unwrap_or_default(),
                    left.as_secs()
                ),
            )),
            Next::PullBackOff => Some((
                "ImagePullBackOff".to_owned(),
                format!("Back-off pulling image {image:?}"),
            )),
            Next::Start { restart } => match self.ensure_image(pod, container).await {
                Err(why) => Some(why),
                Ok(()) => {
                    let (started, why) = self.start(pod, container, restart).await;
                    run = started.or(run);
                    why
                }
            },
        };
        let mut ready = false;
        if let Some(info) = &run
            && let ContainerState::Running { .. } = info.state
        {
            ready = self.probe(pod, uid, container, info.attempt).await;
        }
        let previous = match &run {
            Some(info)
                if info.attempt > 0 && !matches!(info.state, ContainerState::Exited { .. }) =>
            {
                let prior_uid = uid.to_owned();
                let prior_name = name.clone();
                let attempt = info.attempt - 1;
                blocking(&self.ctx, move |r| {
                    r.previous(&prior_uid, &prior_name, attempt)
                })
                .await
            }
            _ => None,
        };
        let image_id = run
            .as_ref()
            .and_then(|info| info.image_id.clone())
            .or_else(|| self.tracks.get(&name).and_then(|t| t.image_id.clone()));
        Ok(ContainerView {
            name,
            image: container.image.clone().unwrap_or_default(),
            image_id,
            run: run.map(|info| (info.id, info.attempt, info.state)),
            previous,
            waiting,
            ready,
        })
    }

    /// Pulls the container's image per its policy; the waiting reason and message when the
    /// image is not there.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<(), (String, String)> {
        let image = container.image.clone().unwrap_or_default();
        let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image);
        let started = Instant::now();
        let wanted = image.clone();
        let pulled = blocking(&self.ctx, move |r| r.pull_image(&wanted, policy)).await;
        let track = self.tracks.entry(container.name.clone()).or_default();
        match pulled {
            Ok(id) => {
                let first = track.image_id.is_none();
                track.pull.reset();
                track.image_id = Some(id);
                if first {
                    let took = started.elapsed();
                    self.ctx.recorder.pod_event(
                        pod,
                        false,
                        "Pulled",
                        &format!(
                            "Container image {image:?} ready in {:.3}s",
                            took.as_secs_f64()
                        ),
                    );
                }
                Ok(())
            }
            Err(err) => {
                track.pull.fail(Instant::now());
                let reason = start_failure_reason(&err);
                let message = error_text(&err);
                self.ctx.recorder.pod_event(pod, true, "Failed", &message);
                self.ctx.recorder.pod_event(
                    pod,
                    false,
                    "BackOff",
                    &format!("Back-off pulling image {image:?}"),
                );
                Err((reason, message))
            }
        }
    }

    /// Starts a run of the container (a restart counts toward the crash back-off); the run,
    /// or the waiting reason and message when it could not start.
    async fn start(
        &mut self,
        pod: &Pod,
        container: &Container,
        restart: bool,
    ) -> (
        Option<crate::runtime::ContainerInfo>,
        Option<(String, String)>,
    ) {
        let name = container.name.clone();
        let track = self.tracks.entry(name.clone()).or_default();
        if restart {
            decide::count_restart(&mut track.crash, track.started, Instant::now());
        }
        let reported = track.reported.clone();
        let config = self.launch(pod, container);
        let started = match sandbox_config(pod, &self.ctx.dns) {
            Ok(sandbox) => blocking(&self.ctx, move |r| r.start_container(&sandbox, &config)).await,
            Err(err) => Err(err),
        };
        match started {
            Ok(info) => {
                self.ctx.recorder.pod_event(
                    pod,
                    false,
                    "Started",
                    &format!("Started container {name}"),
                );
                (Some(info), None)
            }
            Err(err) => {
                let message = error_text(&err);
                if reported.as_deref() != Some(&message) {
                    self.ctx.recorder.pod_event(pod, true, "Failed", &message);
                    self.tracks.entry(name).or_default().reported = Some(message.clone());
                }
                // A run that failed to start shows as such; the reason says why.
                (None, Some((start_failure_reason(&err), message)))
            }
        }
    }

    /// Patches `status` when it differs from what was posted last.
    async fn post(&mut self, pod: &Pod, status: Value) {
        if subset_of(&status, &self.posted) {
            return;
        }
        let pods: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let patch = json!({"status": status});
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(updated) => {
                self.posted = serde_json::to_value(&updated.status).unwrap_or(Value::Null);
            }
            Err(err) => tracing::warn!(pod = %name, error = %err, "status not posted"),
        }
    }

    /// Takes the Pod down step by step, as [`decide::teardown`] orders it.
    async fn tear_down(&mut self, uid: &str, pod: Option<&Pod>) {
        for step in decide::teardown(pod) {
            match (step, pod) {
                (Teardown::StopContainers { grace }, _) => self.stop_containers(uid, grace).await,
                (Teardown::RemoveSandbox, _) => self.remove_sandbox(uid).await,
                (Teardown::DeletePod, Some(pod)) => self.finish(pod).await,
                (Teardown::DeletePod, None) => {}
            }
        }
    }

    /// Stops every container at once, each with `grace`.
    async fn stop_containers(&self, uid: &str, grace: Duration) {
        let names: Vec<String> = {
            let listed_uid = uid.to_owned();
            match blocking(&self.ctx, move |r| r.container_names(&listed_uid)).await {
                Ok(names) => names,
                Err(err) => {
                    // Removing the sandbox stops them all anyway, only without grace.
                    tracing::warn!(pod = %uid, error = %error_text(&err), "cannot list containers to stop");
                    Vec::new()
                }
            }
        };
        let mut stops = tokio::task::JoinSet::new();
        for name in names {
            let runtime = Arc::clone(&self.ctx.runtime);
            let uid = uid.to_owned();
            stops.spawn_blocking(move || runtime.stop_container(&uid, &name, grace));
        }
        while let Some(done) = stops.join_next().await {
            if let Ok(Err(err)) = done {
                tracing::warn!(error = %err, "container did not stop cleanly");
            }
        }
    }

    /// Releases the network and removes the sandbox, retrying until the runtime agrees.
    async fn remove_sandbox(&mut self, uid: &str) {
        let mut delay = Duration::from_millis(200);
        loop {
            let uid_owned = uid.to_owned();
            match blocking(&self.ctx, move |r| r.remove_sandbox(&uid_owned)).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(pod = %uid, error = %error_text(&err), "sandbox removal failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        self.sandbox = None;
    }

    /// Deletes the Pod for good once it is torn down (the uid guards against a namesake).
    async fn finish(&self, pod: &Pod) {
        let pods: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        match pods.delete(&name, &params).await {
            Ok(_) => tracing::info!(pod = %name, "pod terminated and removed"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(err) => tracing::warn!(pod = %name, error = %err, "final delete failed"),
        }
    }
}

/// Whether every field of `new` already holds in `old` (timestamps of held conditions too).
fn subset_of(new: &Value, old: &Value) -> bool {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => n.iter().all(|(k, v)| {
            o.get(k).is_some_and(|ov| subset_of(v, ov)) || (v.is_null() && !o.contains_key(k))
        }),
        (Value::Array(n), Value::Array(o)) => {
            n.len() == o.len() && n.iter().zip(o).all(|(a, b)| subset_of(a, b))
        }
        _ => new == old,
    }
}

fn error_text(err: &RuntimeError) -> String {
    skiff_cni::error_chain(err)
}

#[cfg(test)]
mod tests;
