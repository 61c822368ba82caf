//! What the ReplicaSet controller asks of a Pod: is it active, ready, available; which to
//! delete first; and the Pod a template makes. Pure functions, so they are tested alone.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::selector::{self, SelectorError};

/// A Pod that counts towards replicas: not being deleted and not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase(pod), "Succeeded" | "Failed")
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// When the Pod became Ready, if it is ready (condition Ready=True).
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the Pod has been ready for `min_ready_seconds` at `now`; else, how many seconds
/// until it will be (None when it is not ready at all).
pub fn availability(pod: &Pod, min_ready_seconds: i64, now: Timestamp) -> Availability {
    match ready_since(pod) {
        None => Availability::NotReady,
        Some(_) if min_ready_seconds <= 0 => Availability::Available,
        Some(None) => Availability::Available,
        Some(Some(since)) => {
            let ready_for = now.as_second() - since.as_second();
            if ready_for >= min_ready_seconds {
                Availability::Available
            } else {
                Availability::ReadyFor(min_ready_seconds - ready_for)
            }
        }
    }
}

/// A Pod's standing against minReadySeconds.
#[derive(Debug, PartialEq, Eq)]
pub enum Availability {
    NotReady,
    /// Ready, available in this many seconds.
    ReadyFor(i64),
    Available,
}

/// Kubernetes' `ActivePods` order: the Pods to delete first come first — unscheduled before
/// scheduled, Pending before Unknown before Running, not ready before ready, ready for less
/// time first, more restarts first, newer first.
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let assigned = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
    };
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    assigned(a)
        .cmp(&assigned(b))
        .then(phase_rank(a).cmp(&phase_rank(b)))
        .then(ready_since(a).is_some().cmp(&ready_since(b).is_some()))
        // Ready more recently (a later timestamp) goes first.
        .then_with(
            || match (ready_since(a).flatten(), ready_since(b).flatten()) {
                (Some(x), Some(y)) => y.cmp(&x),
                _ => Ordering::Equal,
            },
        )
        .then(restarts(b).cmp(&restarts(a)))
        .then(created(b).cmp(&created(a)))
}

/// An owner reference marking `owner` as the managing controller.
pub fn controller_ref(owner: &ObjectMeta, api_version: &str, kind: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: owner.name.clone().unwrap_or_default(),
        uid: owner.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The owner reference that marks an object's controller, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// A typed LabelSelector as the apiserver's own selector.
pub fn label_selector(selector: &LabelSelector) -> Result<selector::LabelSelector, SelectorError> {
    let value = serde_json::to_value(selector).unwrap_or_default();
    selector::LabelSelector::from_api(&value)
}

/// The labels of an object (empty when it has none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// A new Pod from `template`, named `<prefix>-…` by the apiserver and owned by `owner`.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    prefix: &str,
    owner: OwnerReference,
) -> Pod {
    let from = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            namespace: Some(namespace.to_owned()),
            labels: from.labels,
            annotations: from.annotations,
            finalizers: from.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_at: Option<i64>,
        created: i64,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..PodCondition::default()
                    }]
                }),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_newest() {
        let mut pods = [
            pod("old-ready", Some("n"), "Running", Some(100), 10),
            pod("new-ready", Some("n"), "Running", Some(100), 20),
            pod("not-ready", Some("n"), "Running", None, 5),
            pod("pending", Some("n"), "Pending", None, 1),
            pod("unscheduled", None, "Pending", None, 0),
            pod("recently-ready", Some("n"), "Running", Some(200), 1),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.as_deref().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "recently-ready",
                "new-ready",
                "old-ready"
            ]
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now = Timestamp::from_second(1000).unwrap();
        let ready = pod("p", None, "Running", Some(995), 0);
        assert_eq!(availability(&ready, 0, now), Availability::Available);
        assert_eq!(availability(&ready, 5, now), Availability::Available);
        assert_eq!(availability(&ready, 10, now), Availability::ReadyFor(5));
        let not_ready = pod("p", None, "Running", None, 0);
        assert_eq!(availability(&not_ready, 0, now), Availability::NotReady);
    }

    #[test]
    fn finished_and_terminating_pods_are_not_active() {
        assert!(is_active(&pod("p", None, "Running", None, 0)));
        assert!(!is_active(&pod("p", None, "Succeeded", None, 0)));
        assert!(!is_active(&pod("p", None, "Failed", None, 0)));
        let mut deleting = pod("p", None, "Running", None, 0);
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(!is_active(&deleting));
    }
}
