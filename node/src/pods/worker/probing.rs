//! Probes of a running container: readiness decides whether it serves, a failing liveness
//! probe stops it (the restart policy then decides what follows).

use std::net::Ipv4Addr;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::decide::grace_of;
use super::{Worker, blocking, error_text};
use crate::pods::probe::{Check, ProbeSpec, ProbeState, network_check};

impl Worker {
    /// Runs due probes of a running container; returns its readiness. A failing liveness
    /// probe stops the container (the restart policy then decides).
    pub(super) async fn probe(
        &mut self,
        pod: &Pod,
        uid: &str,
        container: &Container,
        attempt: u32,
    ) -> bool {
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
}
