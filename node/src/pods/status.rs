//! A Pod's status from what the runtime and the probes say, computed the way kubelet does it
//! (`getPhase`, container statuses, the Ready conditions). Pure, so every rule is unit-tested.

use serde_json::{Value, json};

use crate::runtime::ContainerState;

/// What the worker knows of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerView {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The image's id as the runtime resolved it (`imageID`), once known.
    pub image_id: Option<String>,
    /// The latest run: id, restart count and state; None before the first start.
    pub run: Option<(String, u32, ContainerState)>,
    /// The run before, if it ended (for `lastState`).
    pub previous: Option<ContainerState>,
    /// Why it is not running when it should (`ErrImagePull`, `CrashLoopBackOff`), with detail.
    pub waiting: Option<(String, String)>,
    /// Whether its readiness probe (or, without one, running) says ready.
    pub ready: bool,
}

/// The Pod as a whole.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// The node's address.
    pub host_ip: String,
    /// The Pod's address, once its network is up.
    pub pod_ip: Option<String>,
    /// When the agent first took the Pod on (RFC 3339).
    pub start_time: String,
    /// `spec.restartPolicy`.
    pub restart_policy: String,
    /// Per container, in spec order.
    pub containers: Vec<ContainerView>,
}

fn state_json(state: &ContainerState, id: &str) -> Value {
    match state {
        ContainerState::Creating => json!({"waiting": {"reason": "ContainerCreating"}}),
        ContainerState::Running { started_at } => json!({"running": {"startedAt": started_at}}),
        ContainerState::Exited {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => {
            let mut t = json!({"exitCode": exit_code, "reason": reason, "finishedAt": finished_at,
                               "containerID": id});
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            if let Some(s) = started_at {
                t["startedAt"] = json!(s);
            }
            json!({"terminated": t})
        }
    }
}

/// One entry of `status.containerStatuses`.
pub fn container_status(c: &ContainerView) -> Value {
    let (id, restarts, state) = match &c.run {
        Some((id, attempt, state)) => {
            let shown = match (&c.waiting, state) {
                // Ended and about to be restarted (or held by back-off): Waiting, as kubelet shows.
                (Some((reason, message)), ContainerState::Exited { .. }) => {
                    json!({"waiting": {"reason": reason, "message": message}})
                }
                _ => state_json(state, id),
            };
            (json!(id), *attempt, shown)
        }
        None => {
            let (reason, message) = c
                .waiting
                .clone()
                .unwrap_or_else(|| ("ContainerCreating".to_owned(), String::new()));
            let mut waiting = json!({"reason": reason});
            if !message.is_empty() {
                waiting["message"] = json!(message);
            }
            (Value::Null, 0, json!({"waiting": waiting}))
        }
    };
    let running = matches!(&c.run, Some((_, _, ContainerState::Running { .. })));
    let last_state = match (&c.run, &c.previous, &c.waiting) {
        // Shown as Waiting now: its own last run is the last state.
        (Some((id, _, s @ ContainerState::Exited { .. })), _, Some(_)) => state_json(s, id),
        (_, Some(previous), _) => state_json(previous, ""),
        _ => json!({}),
    };
    let mut status = json!({
        "name": c.name, "image": c.image, "imageID": c.image_id.clone().unwrap_or_default(), "ready": c.ready && running,
        "started": running, "restartCount": restarts, "state": state, "lastState": last_state,
    });
    if !id.is_null() {
        status["containerID"] = id;
    }
    status
}

/// kubelet's `getPhase` for Pods without init containers.
pub fn phase(pod: &PodView) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in &pod.containers {
        match &c.run {
            Some((_, _, ContainerState::Running { .. })) => running += 1,
            Some((_, _, ContainerState::Exited { exit_code, .. })) => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            Some((_, _, ContainerState::Creating)) | None => waiting += 1,
        }
    }
    if waiting > 0 && running == 0 && stopped == 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if waiting > 0 {
        return "Pending";
    }
    match pod.restart_policy.as_str() {
        "Always" => "Running",
        "OnFailure" if succeeded == stopped => "Succeeded",
        "OnFailure" => "Running",
        _ if succeeded == stopped => "Succeeded",
        _ => "Failed",
    }
}

/// A condition, keeping the transition time of `previous` when its status did not change.
fn condition(kind: &str, ok: bool, reason: Option<&str>, previous: &Value, now: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let old = previous["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    let since = match old {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c = json!({"type": kind, "status": status, "lastProbeTime": null,
                       "lastTransitionTime": since});
    if let (false, Some(reason)) = (ok, reason) {
        c["reason"] = json!(reason);
    }
    c
}

/// The status part the agent owns, to patch through `pods/status` (conditions merge by type,
/// so `PodScheduled` from the binding stays).
pub fn pod_status(pod: &PodView, previous: &Value, now: &str) -> Value {
    let phase = phase(pod);
    let containers: Vec<Value> = pod.containers.iter().map(container_status).collect();
    let all_ready = !pod.containers.is_empty()
        && pod
            .containers
            .iter()
            .all(|c| c.ready && matches!(&c.run, Some((_, _, ContainerState::Running { .. }))));
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let not_ready = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let mut status = json!({
        "phase": phase,
        "hostIP": pod.host_ip, "hostIPs": [{"ip": pod.host_ip}],
        "startTime": pod.start_time,
        "conditions": [
            condition("PodReadyToStartContainers", pod.pod_ip.is_some(), None, previous, now),
            condition("Initialized", true, None, previous, now),
            condition("ContainersReady", all_ready, Some(not_ready), previous, now),
            condition("Ready", all_ready, Some(not_ready), previous, now),
        ],
        "containerStatuses": containers,
    });
    if let Some(ip) = &pod.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, ready: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "skiff/test-server".into(),
            image_id: None,
            run: Some((
                format!("skiff://u/{name}/0"),
                0,
                ContainerState::Running {
                    started_at: "2026-11-22T05:00:00Z".into(),
                },
            )),
            previous: None,
            waiting: None,
            ready,
        }
    }

    fn exited(name: &str, code: i32, attempt: u32) -> ContainerView {
        ContainerView {
            run: Some((
                format!("skiff://u/{name}/{attempt}"),
                attempt,
                ContainerState::Exited {
                    exit_code: code,
                    reason: if code == 0 { "Completed" } else { "Error" }.into(),
                    message: None,
                    started_at: Some("2026-11-22T05:00:00Z".into()),
                    finished_at: "2026-11-22T05:01:00Z".into(),
                },
            )),
            ..running(name, false)
        }
    }

    fn pod(policy: &str, containers: Vec<ContainerView>) -> PodView {
        PodView {
            host_ip: "172.31.0.10".into(),
            pod_ip: Some("10.244.1.5".into()),
            start_time: "2026-11-22T05:00:00Z".into(),
            restart_policy: policy.into(),
            containers,
        }
    }

    #[test]
    fn phases_follow_kubelet() {
        let never_started = ContainerView {
            run: None,
            ..running("a", false)
        };
        assert_eq!(
            phase(&pod("Always", vec![never_started.clone()])),
            "Pending"
        );
        assert_eq!(
            phase(&pod("Always", vec![running("a", true), never_started])),
            "Running"
        );
        assert_eq!(phase(&pod("Always", vec![exited("a", 1, 3)])), "Running");
        assert_eq!(phase(&pod("Never", vec![exited("a", 0, 0)])), "Succeeded");
        assert_eq!(
            phase(&pod("Never", vec![exited("a", 0, 0), exited("b", 2, 0)])),
            "Failed"
        );
        assert_eq!(
            phase(&pod("OnFailure", vec![exited("a", 0, 0)])),
            "Succeeded"
        );
        assert_eq!(phase(&pod("OnFailure", vec![exited("a", 1, 0)])), "Running");
    }

    #[test]
    fn ready_needs_every_container_running_and_ready() {
        let both = pod("Always", vec![running("a", true), running("b", true)]);
        let status = pod_status(&both, &Value::Null, "T1");
        let ready = &status["conditions"][3];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        assert_eq!(status["podIPs"], json!([{"ip": "10.244.1.5"}]));
        let one = pod("Always", vec![running("a", true), running("b", false)]);
        let status = pod_status(&one, &Value::Null, "T1");
        assert_eq!(status["conditions"][3]["status"], "False");
        assert_eq!(status["conditions"][3]["reason"], "ContainersNotReady");
        assert_eq!(status["containerStatuses"][1]["ready"], false);
    }

    #[test]
    fn transition_times_stay_while_a_condition_holds() {
        let view = pod("Always", vec![running("a", true)]);
        let first = pod_status(&view, &Value::Null, "T1");
        let again = pod_status(&view, &first, "T2");
        assert_eq!(again["conditions"][3]["lastTransitionTime"], "T1");
        let unready = pod("Always", vec![running("a", false)]);
        let changed = pod_status(&unready, &again, "T3");
        assert_eq!(changed["conditions"][3]["lastTransitionTime"], "T3");
    }

    #[test]
    fn a_crashing_container_waits_in_back_off_with_its_last_run_shown() {
        let mut c = exited("a", 2, 4);
        c.waiting = Some(("CrashLoopBackOff".into(), "back-off 40s".into()));
        let status = container_status(&c);
        assert_eq!(status["restartCount"], 4);
        assert_eq!(status["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(status["lastState"]["terminated"]["exitCode"], 2);
        assert_eq!(status["ready"], false);
    }

    #[test]
    fn an_image_missing_from_the_catalog_waits_with_the_reason() {
        let c = ContainerView {
            run: None,
            waiting: Some((
                "ErrImagePull".into(),
                "image \"nginx\" is not in the image catalog".into(),
            )),
            ..running("a", false)
        };
        let status = container_status(&c);
        assert_eq!(status["state"]["waiting"]["reason"], "ErrImagePull");
        assert!(status.get("containerID").is_none());
    }
}
