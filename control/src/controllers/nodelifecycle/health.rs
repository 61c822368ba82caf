//! The node lifecycle controller's decisions, as pure functions over API objects.
//!
//! Kept apart from the API calls so each rule — when a Node counts as silent, what its
//! conditions and taints become, when a Pod on it is evicted — is tested on its own.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus, Pod, PodCondition, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The taint key of a Node that stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const EFFECTS: [&str; 2] = ["NoExecute", "NoSchedule"];
/// Conditions kube turns `Unknown` with Ready when the kubelet falls silent.
const CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The last sign of life: the latest of the Lease's renewal, Ready's heartbeat and the Node's
/// creation (as kube, a new Node gets a full grace period whatever times it was created with).
pub fn last_heard(node: &Node, lease: Option<&Lease>) -> Option<Timestamp> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    let heartbeat = conditions(node)
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0);
    [renewed, heartbeat, created].into_iter().flatten().max()
}

/// True when `last` is more than `grace` before `now` (or unknown).
pub fn is_silent(last: Option<Timestamp>, now: Timestamp, grace: Duration) -> bool {
    last.is_none_or(|last| elapsed(last, now) > grace)
}

/// Time from `since` to `now`, zero if `since` is in the future.
pub fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO)
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

/// Sets Ready (added if missing) and the pressure conditions to `Unknown`; true if anything changed.
pub fn mark_unknown(status: &mut NodeStatus, now: Timestamp) -> bool {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let mut changed = false;
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".to_owned(),
            status: "Unknown".to_owned(),
            reason: Some("NodeStatusNeverUpdated".to_owned()),
            message: Some("Kubelet never posted node status.".to_owned()),
            last_transition_time: Some(Time(now)),
            last_heartbeat_time: None,
        });
        changed = true;
    }
    for c in conditions
        .iter_mut()
        .filter(|c| CONDITIONS.contains(&c.type_.as_str()) && c.status != "Unknown")
    {
        c.status = "Unknown".to_owned();
        c.reason = Some("NodeStatusUnknown".to_owned());
        c.message = Some("Kubelet stopped posting node status.".to_owned());
        c.last_transition_time = Some(Time(now));
        changed = true;
    }
    changed
}

/// Adds the unreachable taints (NoExecute stamped with `now`); true if anything changed.
pub fn add_unreachable(taints: &mut Vec<Taint>, now: Timestamp) -> bool {
    let mut changed = false;
    for effect in EFFECTS {
        let stamp = (effect == "NoExecute").then_some(Time(now));
        match taints
            .iter_mut()
            .find(|t| t.key == UNREACHABLE && t.effect == effect)
        {
            // Eviction counts from timeAdded: a NoExecute taint without one gets it now.
            Some(t) if t.time_added.is_none() && stamp.is_some() => {
                t.time_added = stamp;
                changed = true;
            }
            Some(_) => {}
            None => {
                taints.push(Taint {
                    key: UNREACHABLE.to_owned(),
                    effect: effect.to_owned(),
                    time_added: stamp,
                    value: None,
                });
                changed = true;
            }
        }
    }
    changed
}

/// Removes the unreachable taints; true if there were any.
pub fn remove_unreachable(taints: &mut Vec<Taint>) -> bool {
    let before = taints.len();
    taints.retain(|t| t.key != UNREACHABLE);
    taints.len() != before
}

/// When the Node became unreachable: its NoExecute taint's timeAdded.
pub fn unreachable_since(node: &Node) -> Option<Timestamp> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|t| t.key == UNREACHABLE && t.effect == "NoExecute")?
        .time_added
        .as_ref()
        .map(|t| t.0)
}

/// How long `pod` stays on an unreachable Node: its tolerations of the NoExecute taint
/// decide (`None`: forever), else `default`.
pub fn eviction_delay(pod: &Pod, default: Duration) -> Option<Duration> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref());
    let matching: Vec<_> = tolerations
        .unwrap_or_default()
        .iter()
        .filter(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "NoExecute");
            let key = t.key.as_deref().unwrap_or("");
            let value = t.value.as_deref().unwrap_or("");
            let key_ok = match t.operator.as_deref() {
                Some("Exists") => key.is_empty() || key == UNREACHABLE,
                _ => key == UNREACHABLE && value.is_empty(),
            };
            effect_ok && key_ok
        })
        .collect();
    if matching.is_empty() {
        return Some(default);
    }
    // The shortest bound wins; one without a bound keeps the Pod forever only if all are unbound.
    matching
        .iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| Duration::from_secs(s.max(0) as u64))
}

/// Sets the Pod's Ready condition `False` (added if missing); true if anything changed.
pub fn mark_pod_not_ready(pod: &mut Pod, now: Timestamp) -> bool {
    let conditions = pod
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "False" => false,
        Some(c) => {
            c.status = "False".to_owned();
            c.last_transition_time = Some(Time(now));
            true
        }
        None => {
            conditions.push(PodCondition {
                type_: "Ready".to_owned(),
                status: "False".to_owned(),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(tolerations: &serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "tolerations": tolerations}}))
        .unwrap()
    }

    #[test]
    fn the_latest_sign_of_life_counts() {
        let n = node(
            json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "lastHeartbeatTime": "2026-01-01T00:01:00Z"}]}}),
        );
        let lease = |renewed: &str| -> Lease {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "spec": {"renewTime": renewed}}),
            )
            .unwrap()
        };
        let fresh = lease("2026-01-01T00:02:00.000000Z");
        assert_eq!(
            last_heard(&n, Some(&fresh)),
            Some(at("2026-01-01T00:02:00Z"))
        );
        // A stale Lease does not hide a newer heartbeat.
        let stale = lease("2026-01-01T00:00:30.000000Z");
        assert_eq!(
            last_heard(&n, Some(&stale)),
            Some(at("2026-01-01T00:01:00Z"))
        );
        assert_eq!(last_heard(&n, None), Some(at("2026-01-01T00:01:00Z")));
        // A Node created with an old heartbeat counts from its creation.
        let recreated = node(
            json!({"metadata": {"name": "n", "creationTimestamp": "2026-01-01T00:05:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "lastHeartbeatTime": "2025-01-01T00:00:00Z"}]}}),
        );
        assert_eq!(
            last_heard(&recreated, None),
            Some(at("2026-01-01T00:05:00Z"))
        );
    }

    #[test]
    fn silent_only_past_the_grace() {
        let grace = Duration::from_secs(40);
        let last = Some(at("2026-01-01T00:00:00Z"));
        assert!(!is_silent(last, at("2026-01-01T00:00:40Z"), grace));
        assert!(is_silent(last, at("2026-01-01T00:00:41Z"), grace));
        assert!(is_silent(None, at("2026-01-01T00:00:00Z"), grace));
        // A clock ahead of ours is not silence.
        assert!(!is_silent(
            Some(at("2026-01-02T00:00:00Z")),
            at("2026-01-01T00:00:00Z"),
            grace
        ));
    }

    #[test]
    fn ready_turns_unknown_once() {
        let now = at("2026-01-01T00:00:00Z");
        let mut n = node(json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"},
            {"type": "NetworkUnavailable", "status": "False"}]}}));
        let status = n.status.as_mut().unwrap();
        assert!(mark_unknown(status, now));
        let conds = status.conditions.as_ref().unwrap();
        assert_eq!(conds[0].status, "Unknown");
        assert_eq!(conds[0].reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            conds[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(conds[1].status, "Unknown");
        assert_eq!(conds[2].status, "False");
        assert!(!mark_unknown(status, now));
        let mut empty = NodeStatus::default();
        assert!(mark_unknown(&mut empty, now));
        assert_eq!(
            empty.conditions.unwrap()[0].reason.as_deref(),
            Some("NodeStatusNeverUpdated")
        );
    }

    #[test]
    fn taints_come_and_go_and_keep_others() {
        let now = at("2026-01-01T00:00:00Z");
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let mut taints = vec![other.clone()];
        assert!(add_unreachable(&mut taints, now));
        assert!(!add_unreachable(&mut taints, at("2026-01-01T00:05:00Z")));
        assert_eq!(taints.len(), 3);
        let n = node(json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}));
        assert_eq!(unreachable_since(&n), Some(now));
        assert!(remove_unreachable(&mut taints));
        assert_eq!(taints, vec![other]);
        assert!(!remove_unreachable(&mut taints));
    }

    #[test]
    fn tolerations_decide_how_long_a_pod_stays() {
        let default = Duration::from_secs(300);
        assert_eq!(eviction_delay(&pod(&json!([])), default), Some(default));
        let forever =
            pod(&json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]));
        assert_eq!(eviction_delay(&forever, default), None);
        let everything = pod(&json!([{"operator": "Exists"}]));
        assert_eq!(eviction_delay(&everything, default), None);
        let bounded = pod(&json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 20},
            {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 10}]));
        assert_eq!(
            eviction_delay(&bounded, default),
            Some(Duration::from_secs(10))
        );
        let unrelated = pod(&json!([
            {"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"},
            {"key": "other", "operator": "Exists"}]));
        assert_eq!(eviction_delay(&unrelated, default), Some(default));
    }

    #[test]
    fn a_pod_turns_not_ready_once() {
        let now = at("2026-01-01T00:00:00Z");
        let mut p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        assert!(mark_pod_not_ready(&mut p, now));
        assert!(!mark_pod_not_ready(&mut p, now));
        let conds = p.status.unwrap().conditions.unwrap();
        assert_eq!((conds[0].status.as_str(), conds.len()), ("False", 1));
        let mut bare = Pod::default();
        assert!(mark_pod_not_ready(&mut bare, now));
    }
}
