//! One Pod's worker: makes what runs match the Pod, every second and on every change.
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

use super::dns::{DnsSettings, pod_dns};
use super::env::{container_env, expand, service_env};
use super::events::Recorder;
use super::probe::{Check, ProbeSpec, ProbeState, network_check};
use super::resources::container_resources;
use super::status::{ContainerView, PodView, pod_status};
use crate::runtime::{
    ContainerConfig, ContainerState, PodRuntime, PortMapping, PullPolicy, RuntimeError,
    SandboxConfig, SandboxInfo,
};

/// How often a worker looks at its Pod when nothing changed (kubelet's PLEG relist period).
pub const RESYNC: Duration = Duration::from_secs(1);
/// The first restart back-off after the immediate one.
const BACKOFF_START: Duration = Duration::from_secs(10);
/// The longest back-off.
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
const BACKOFF_RESET: Duration = Duration::from_secs(600);

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
    /// Restarts done under back-off, and when the next one may happen.
    backoff_count: u32,
    not_before: Option<Instant>,
    /// Failed pulls in a row, and when the next pull may happen.
    pull_failures: u32,
    pull_not_before: Option<Instant>,
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

fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

fn now_text() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The Pod's sandbox, as the runtime is asked for it (at RunPodSandbox and CreateContainer).
fn sandbox_config(pod: &Pod, dns: &DnsSettings) -> SandboxConfig {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let hostname = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .unwrap_or_else(|| name.clone());
    SandboxConfig {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name,
        hostname,
        port_mappings: port_mappings(pod),
        dns: pod_dns(pod, dns),
    }
}

/// kubelet's back-off after the `failures`-th failure in a row: 10 s doubling to 5 min.
fn backoff(failures: u32) -> Duration {
    (BACKOFF_START * 2u32.pow(failures.saturating_sub(1).min(5))).min(BACKOFF_MAX)
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

fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(PortMapping {
                host_port: u16::try_from(p.host_port?).ok().filter(|&h| h != 0)?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
            })
        })
        .collect()
}

/// Runs the worker of one Pod until the Pod is gone and torn down. `pod` carries the latest
/// object; `None` means it was deleted from the API.
pub async fn run(ctx: Arc<Context>, uid: String, mut pod: watch::Receiver<Option<Pod>>) {
    let mut worker = Worker {
        ctx,
        tracks: HashMap::new(),
        sandbox: None,
        start_time: None,
        posted: Value::Null,
        sandbox_error: None,
    };
    loop {
        let current = pod.borrow_and_update().clone();
        match current {
            Some(p) if p.metadata.deletion_timestamp.is_none() => worker.sync(&p).await,
            Some(p) => {
                worker.terminate(&uid, grace_of(&p)).await;
                worker.finish(&p).await;
                return;
            }
            None => {
                // Deleted from the API without us: nothing to wait for.
                worker.terminate(&uid, Duration::from_secs(2)).await;
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
            let config = sandbox_config(pod, &self.ctx.dns);
            match blocking(&self.ctx, move |r| r.run_sandbox(&config)).await {
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
        let mut waiting = None;
        let policy = pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always");
        let wants_start = match &run {
            None => true,
            Some(info) => match &info.state {
                ContainerState::Exited { exit_code, .. } => match policy {
                    "Never" => false,
                    "OnFailure" => *exit_code != 0,
                    _ => true,
                },
                _ => false,
            },
        };
        if wants_start && !finished && self.sandbox.is_some() {
            let track = self.tracks.entry(name.clone()).or_default();
            let now = Instant::now();
            // Back-off applies to restarts, not the first start.
            let held = run.is_some() && track.not_before.is_some_and(|t| now < t);
            let left = track
                .not_before
                .map_or(0, |t| t.saturating_duration_since(now).as_secs());
            if held {
                waiting = Some((
                    "CrashLoopBackOff".to_owned(),
                    format!(
                        "back-off restarting failed container={name} pod={} ({left}s left)",
                        pod.metadata.name.as_deref().unwrap_or_default()
                    ),
                ));
            } else {
                match self.ensure_image(pod, container).await {
                    Err(why) => waiting = Some(why),
                    Ok(()) => {
                        let (started, why) = self.start(pod, container, run.is_some()).await;
                        run = started.or(run);
                        waiting = why;
                    }
                }
            }
        }
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

    /// Pulls the container's image per its policy, unless a failed pull is backing off; the
    /// waiting reason and message when the image is not there.
    async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<(), (String, String)> {
        let image = container.image.clone().unwrap_or_default();
        let track = self.tracks.entry(container.name.clone()).or_default();
        if track.pull_not_before.is_some_and(|t| Instant::now() < t) {
            return Err((
                "ImagePullBackOff".to_owned(),
                format!("Back-off pulling image {image:?}"),
            ));
        }
        let policy = PullPolicy::of(container.image_pull_policy.as_deref(), &image);
        let started = Instant::now();
        let wanted = image.clone();
        let pulled = blocking(&self.ctx, move |r| r.pull_image(&wanted, policy)).await;
        let track = self.tracks.entry(container.name.clone()).or_default();
        match pulled {
            Ok(id) => {
                let first = track.image_id.is_none();
                track.pull_failures = 0;
                track.pull_not_before = None;
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
                track.pull_failures += 1;
                track.pull_not_before = Some(Instant::now() + backoff(track.pull_failures));
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
            if track.started.is_some_and(|s| s.elapsed() >= BACKOFF_RESET) {
                track.backoff_count = 0;
            }
            track.backoff_count += 1;
            track.not_before = Some(Instant::now() + backoff(track.backoff_count));
        }
        let reported = track.reported.clone();
        let config = self.launch(pod, container);
        let sandbox = sandbox_config(pod, &self.ctx.dns);
        match blocking(&self.ctx, move |r| r.start_container(&sandbox, &config)).await {
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

    /// The container as the runtime is asked to run it: the Pod's command, args and
    /// environment (`$(VAR)`s expanded, as kubelet does), working dir and limits.
    fn launch(&self, pod: &Pod, container: &Container) -> ContainerConfig {
        let pod_ip = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = self.ctx.services.state();
        let services = service_env(namespace, links, services.iter().map(AsRef::as_ref));
        let host_ip = self.ctx.node_ip.to_string();
        let env = container_env(pod, container, &services, &pod_ip, &host_ip);
        let expand_all = |list: &[String]| list.iter().map(|a| expand(a, &env)).collect();
        ContainerConfig {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            command: expand_all(container.command.as_deref().unwrap_or_default()),
            args: container.args.as_deref().map(expand_all),
            working_dir: container.working_dir.clone(),
            resources: container_resources(container),
            env,
        }
    }

    /// Runs due probes of a running container; returns its readiness. A failing liveness
    /// probe stops the container (the restart policy then decides).
    async fn probe(&mut self, pod: &Pod, uid: &str, container: &Container, attempt: u32) -> bool {
        let track = self.tracks.entry(container.name.clone()).or_default();
        if track.attempt != Some(attempt) {
            track.attempt = Some(attempt);
            track.started = Some(Instant::now());
            track.readiness = container
                .readiness_probe
                .as_ref()
                .map(|p| ProbeState::new(ProbeSpec::of(p, container), false));
            track.liveness = container
                .liveness_probe
                .as_ref()
                .map(|p| ProbeState::new(ProbeSpec::of(p, container), true));
        }
        let started = track.started.unwrap_or_else(Instant::now);
        let pod_ip = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ip)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let now = Instant::now();
        let mut readiness = track.readiness.take();
        let mut liveness = track.liveness.take();
        if let Some(state) = readiness.as_mut()
            && state.due(started, now)
        {
            let result = self.check(uid, &container.name, &state.spec, pod_ip).await;
            state.record(result, Instant::now());
        }
        let mut kill = false;
        if let Some(state) = liveness.as_mut()
            && state.due(started, now)
        {
            let result = self.check(uid, &container.name, &state.spec, pod_ip).await;
            if state.record(result, Instant::now()) && !state.passing {
                let why = state.last_failure.clone().unwrap_or_default();
                self.ctx.recorder.pod_event(
                    pod,
                    true,
                    "Unhealthy",
                    &format!("Liveness probe failed: {why}"),
                );
                kill = true;
            }
        }
        let ready = readiness.as_ref().is_none_or(|s| s.passing);
        let track = self.tracks.entry(container.name.clone()).or_default();
        track.readiness = readiness;
        track.liveness = liveness;
        if kill {
            let message = format!(
                "Container {} failed liveness probe, will be restarted",
                container.name
            );
            self.ctx.recorder.pod_event(pod, false, "Killing", &message);
            let (uid, name, grace) = (uid.to_owned(), container.name.clone(), grace_of(pod));
            if let Err(err) =
                blocking(&self.ctx, move |r| r.stop_container(&uid, &name, grace)).await
            {
                tracing::warn!(error = %err, "stopping an unhealthy container");
            }
            return false;
        }
        ready
    }

    async fn check(
        &self,
        uid: &str,
        container: &str,
        spec: &ProbeSpec,
        pod_ip: Ipv4Addr,
    ) -> Result<(), String> {
        match &spec.check {
            Check::Exec { argv } => {
                let (uid, argv, timeout) = (uid.to_owned(), argv.clone(), spec.timeout);
                let name = container.to_owned();
                match blocking(&self.ctx, move |r| r.exec(&uid, &name, &argv, timeout)).await {
                    Ok(out) if out.code == Some(0) => Ok(()),
                    Ok(out) => Err(format!("exit {:?}: {}", out.code, out.output.trim())),
                    Err(err) => Err(error_text(&err)),
                }
            }
            other => network_check(other, pod_ip, spec.timeout).await,
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

    /// Stops every container and removes the sandbox, retrying until the runtime agrees.
    async fn terminate(&mut self, uid: &str, grace: Duration) {
        let names: Vec<String> = {
            let listed_uid = uid.to_owned();
            match blocking(&self.ctx, move |r| r.container_names(&listed_uid)).await {
                Ok(names) => names,
                Err(err) => {
                    // Removing the sandbox below stops them all anyway, only without grace.
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
