//! A Deployment's status from its ReplicaSets, with the `Available` and `Progressing`
//! conditions `kubectl rollout status` reads (Kubernetes' `calculateStatus` and
//! `syncRolloutStatus`).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::rollout::{desired, fenceposts, spec_replicas};

/// The reason of `Progressing=True` once a rollout is done.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
/// The reason of `Progressing=False` once the deadline passed.
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

/// The counts and the `Available` condition (`calculateStatus`).
pub fn calculate(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let (mut replicas, mut ready, mut available) = (0, 0, 0);
    for rs in all {
        let (r, re, a) = status_of(rs);
        replicas += r;
        ready += re;
        available += a;
    }
    let total: i32 = all.iter().map(|rs| spec_replicas(rs)).sum();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(new.map_or(0, |n| status_of(n).0)),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions,
        ..DeploymentStatus::default()
    };
    let (_, max_unavailable) = fenceposts(d);
    let condition = if available >= desired(d) - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            now,
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            now,
        )
    };
    set_condition(&mut status, condition);
    status
}

/// Whether every replica is updated and available (`DeploymentComplete`).
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = desired(d);
    status.updated_replicas == Some(want)
        && status.replicas == Some(want)
        && status.available_replicas == Some(want)
        && status.observed_generation >= d.metadata.generation
}

/// Whether `new` moved on from the Deployment's current status (`DeploymentProgressing`).
fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas > old.updated_replicas
        || new_old < old_old
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
}

/// Sets `Progressing` (`syncRolloutStatus`); returns when to check the deadline again.
pub fn set_progress(
    d: &Deployment,
    status: &mut DeploymentStatus,
    new_rs: Option<&str>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let Some(deadline) = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
    else {
        remove_condition(status, "Progressing");
        return None;
    };
    let name = new_rs.unwrap_or_default();
    let current = get_condition(status, "Progressing").cloned();
    if complete(d, status) {
        if current.as_ref().map(|c| c.reason.as_deref()) != Some(Some(NEW_RS_AVAILABLE)) {
            let msg = format!("ReplicaSet \"{name}\" has successfully progressed.");
            set_condition(
                status,
                condition("Progressing", "True", NEW_RS_AVAILABLE, &msg, now),
            );
        }
        return None;
    }
    if progressing(d, status) {
        let msg = format!("ReplicaSet \"{name}\" is progressing.");
        let mut cond = condition("Progressing", "True", "ReplicaSetUpdated", &msg, now);
        if let Some(current) = &current
            && current.status == "True"
        {
            cond.last_transition_time = current.last_transition_time.clone();
        }
        remove_condition(status, "Progressing");
        status.conditions.get_or_insert_with(Vec::new).push(cond);
        return Some(std::time::Duration::from_secs(
            u64::try_from(deadline).unwrap_or(600),
        ));
    }
    let since = current
        .as_ref()
        .and_then(|c| c.last_update_time.as_ref())
        .map(|t| t.0);
    if let Some(since) = since
        && current.as_ref().and_then(|c| c.reason.as_deref()) != Some(NEW_RS_AVAILABLE)
    {
        let left = since.as_second() + i64::from(deadline) - now.as_second();
        if left <= 0 {
            let msg = format!("ReplicaSet \"{name}\" has timed out progressing.");
            set_condition(
                status,
                condition("Progressing", "False", TIMED_OUT, &msg, now),
            );
            return None;
        }
        return Some(std::time::Duration::from_secs(
            u64::try_from(left).unwrap_or(1),
        ));
    }
    None
}

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn get_condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// `SetDeploymentCondition`: no change when status and reason are the same; the transition
/// time is kept while the status is.
pub fn set_condition(status: &mut DeploymentStatus, mut cond: DeploymentCondition) {
    if let Some(current) = get_condition(status, &cond.type_) {
        if current.status == cond.status && current.reason == cond.reason {
            return;
        }
        if current.status == cond.status {
            cond.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &cond.type_);
    status.conditions.get_or_insert_with(Vec::new).push(cond);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {"replicas": 3, "selector": {}, "template": {}, "progressDeadlineSeconds": 600,
                     "strategy": {"type": "RollingUpdate",
                                  "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1,
                       "availableReplicas": 3}
        }))
        .unwrap()
    }

    fn rs(spec: i32, replicas: i32, available: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"replicas": spec, "selector": {}},
            "status": {"replicas": replicas, "readyReplicas": available,
                       "availableReplicas": available}
        }))
        .unwrap()
    }

    fn reason(status: &DeploymentStatus, type_: &str) -> String {
        get_condition(status, type_)
            .unwrap()
            .reason
            .clone()
            .unwrap()
    }

    #[test]
    fn a_finished_rollout_reports_new_replicaset_available() {
        let d = deployment();
        let new = rs(3, 3, 3);
        let old = rs(0, 0, 0);
        let now = Timestamp::now();
        let mut status = calculate(&d, &[&old, &new], Some(&new), now);
        assert_eq!(status.updated_replicas, Some(3));
        assert_eq!(status.unavailable_replicas, Some(0));
        assert_eq!(reason(&status, "Available"), "MinimumReplicasAvailable");
        assert_eq!(set_progress(&d, &mut status, Some("r"), now), None);
        assert_eq!(reason(&status, "Progressing"), NEW_RS_AVAILABLE);
        assert!(complete(&d, &status));
    }

    #[test]
    fn a_rollout_under_way_is_progressing_and_may_be_unavailable() {
        let d = deployment();
        let new = rs(2, 2, 1);
        let old = rs(2, 2, 1);
        let now = Timestamp::now();
        let mut status = calculate(&d, &[&old, &new], Some(&new), now);
        assert_eq!(status.unavailable_replicas, Some(2));
        assert_eq!(reason(&status, "Available"), "MinimumReplicasUnavailable");
        assert!(set_progress(&d, &mut status, Some("r"), now).is_some());
        assert_eq!(reason(&status, "Progressing"), "ReplicaSetUpdated");
        assert!(!complete(&d, &status));
    }
}
