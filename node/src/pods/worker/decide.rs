//! What a Pod's containers need next, decided without a runtime, an API or a clock of its own.
//!
//! The rules users of kubelet rely on — which exits a `restartPolicy` restarts, the crash and
//! image-pull back-offs (10 s doubling to 5 min, the first restart at once, a run of 10 min
//! forgiving earlier crashes), and the order a Pod is torn down in — are pure functions here,
//! unit-tested on their own; the worker only observes, asks these, and carries the answer out.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::ContainerState;

/// The first back-off after the immediate restart (and after the first failed pull).
pub const BACKOFF_START: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run that lasted this long forgives the crashes before it.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// The Pod's `restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart whatever the exit (the default).
    Always,
    /// Restart failures only.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The policy `pod` asks for.
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }

    /// Does a run that exited with `exit_code` get another?
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// kubelet's back-off: after the n-th failure in a row, wait 10 s × 2ⁿ⁻¹, at most 5 min.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    /// The wait after the `failures`-th failure in a row.
    pub fn delay(failures: u32) -> Duration {
        (BACKOFF_START * 2u32.pow(failures.saturating_sub(1).min(5))).min(BACKOFF_MAX)
    }

    /// One more failure at `now`: the next try waits longer.
    pub fn fail(&mut self, now: Instant) {
        self.failures += 1;
        self.not_before = Some(now + Self::delay(self.failures));
    }

    /// Success: the next failure starts over.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }

    /// How long a try must still wait at `now` (`None`: it may go).
    pub fn left(&self, now: Instant) -> Option<Duration> {
        let wait = self.not_before?.saturating_duration_since(now);
        (!wait.is_zero()).then_some(wait)
    }
}

/// What one container needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing: it runs, it ended for good, or its Pod cannot run it (finished, no sandbox).
    Leave,
    /// A restart waits out the crash back-off (`CrashLoopBackOff`) for `left`.
    CrashBackOff {
        /// How long still.
        left: Duration,
    },
    /// Its image's pull is backing off (`ImagePullBackOff`).
    PullBackOff,
    /// Pull its image (per policy) and start a run; `restart` when one ran before.
    Start {
        /// A restart counts toward the crash back-off.
        restart: bool,
    },
}

/// What a container needs next, from its latest run's state and its back-offs at `now`.
pub fn next(
    policy: RestartPolicy,
    run: Option<&ContainerState>,
    pod_can_run: bool,
    crash: &Backoff,
    pull: &Backoff,
    now: Instant,
) -> Next {
    let wants_run = match run {
        None => true,
        Some(ContainerState::Exited { exit_code, .. }) => policy.restarts(*exit_code),
        Some(_) => false,
    };
    if !wants_run || !pod_can_run {
        return Next::Leave;
    }
    let restart = run.is_some();
    // Back-off applies to restarts, not the first start.
    match crash.left(now) {
        Some(left) if restart => Next::CrashBackOff { left },
        _ if pull.left(now).is_some() => Next::PullBackOff,
        _ => Next::Start { restart },
    }
}

/// A restart begins at `now`: it counts toward the crash back-off, unless the run before lasted
/// long enough (since `last_started`) to forgive the crashes before it.
pub fn count_restart(crash: &mut Backoff, last_started: Option<Instant>, now: Instant) {
    if last_started.is_some_and(|s| now.saturating_duration_since(s) >= BACKOFF_RESET) {
        crash.reset();
    }
    crash.fail(now);
}

/// One step of taking a Pod down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Teardown {
    /// Stop every container (SIGTERM, the grace period, SIGKILL), all at once.
    StopContainers {
        /// How long each may take to exit.
        grace: Duration,
    },
    /// Release the network and remove the sandbox, retrying until the runtime agrees.
    RemoveSandbox,
    /// Delete the Pod from the API for good (its uid as precondition).
    DeletePod,
}

/// The grace of a Pod deleted from the API without us (nothing waits for it).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(2);

/// How `pod` (`None`: deleted from the API already) is taken down, in order: the address is
/// released only when nothing can answer on it any more, and the Pod is deleted only after.
pub fn teardown(pod: Option<&Pod>) -> Vec<Teardown> {
    match pod {
        Some(pod) => vec![
            Teardown::StopContainers {
                grace: grace_of(pod),
            },
            Teardown::RemoveSandbox,
            Teardown::DeletePod,
        ],
        None => vec![
            Teardown::StopContainers {
                grace: ORPHAN_GRACE,
            },
            Teardown::RemoveSandbox,
        ],
    }
}

/// The Pod's grace period: the deletion's, else the spec's, else 30 s.
pub fn grace_of(pod: &Pod) -> Duration {
    let seconds = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(test)]
mod tests;
