//! The `endpoints.kubernetes.io/last-change-trigger-time` annotation: when the oldest change a
//! slice write carries happened, so each kube-proxy (and skiff-proxy) can report network
//! programming latency — the time from that change to its rules being in place — as
//! `kubeproxy_network_programming_duration_seconds`.
//!
//! As kube-controller-manager's `TriggerTimeTracker` does: a Pod's trigger time is when its
//! Ready condition last changed, a Service's when it was created; a reconcile's trigger time is
//! the earliest of those that changed since the Service's last reconcile. Deleted Pods have no
//! time to give, so a scale-down carries none (Kubernetes measures the same way).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;

use super::tracker::ServiceKey;

/// The annotation the proxies read.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The trigger times each Service's last reconcile saw.
#[derive(Debug, Default)]
pub struct TriggerTimes {
    seen: Mutex<HashMap<ServiceKey, Seen>>,
}

#[derive(Debug, Default)]
struct Seen {
    service: Option<Timestamp>,
    pods: HashMap<String, Timestamp>,
}

impl TriggerTimes {
    /// The earliest trigger time among what changed for `key` since the last call (none when
    /// nothing with a time changed), remembering the times seen now.
    pub fn changed_since_last(
        &self,
        key: &ServiceKey,
        service: &Service,
        pods: &[&Pod],
    ) -> Option<Timestamp> {
        let mut all = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let last = all.remove(key).unwrap_or_default();
        let mut now = Seen {
            service: service.metadata.creation_timestamp.as_ref().map(|t| t.0),
            pods: HashMap::new(),
        };
        let mut earliest: Option<Timestamp> = None;
        let mut consider = |current: Timestamp, before: Option<&Timestamp>| {
            if before.is_none_or(|before| current > *before) {
                earliest = Some(earliest.map_or(current, |e| e.min(current)));
            }
        };
        for pod in pods {
            let (Some(name), Some(time)) = (pod.metadata.name.as_ref(), ready_changed(pod)) else {
                continue;
            };
            consider(time, last.pods.get(name));
            now.pods.insert(name.clone(), time);
        }
        if let Some(created) = now.service {
            consider(created, last.service.as_ref());
        }
        all.insert(key.clone(), now);
        earliest
    }

    /// Forgets a deleted Service.
    pub fn forget(&self, key: &ServiceKey) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// When the Pod's Ready condition last changed.
fn ready_changed(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    ready.last_transition_time.as_ref().map(|t| t.0)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn pod(name: &str, ready_at: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    last_transition_time: Some(Time(at(ready_at))),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn service(created: i64) -> Service {
        Service {
            metadata: ObjectMeta {
                creation_timestamp: Some(Time(at(created))),
                ..ObjectMeta::default()
            },
            ..Service::default()
        }
    }

    #[test]
    fn the_earliest_change_since_the_last_reconcile_is_the_trigger() {
        let times = TriggerTimes::default();
        let key = ("ns".to_owned(), "web".to_owned());
        let svc = service(0);
        let (a, b) = (pod("a", 5), pod("b", 7));
        // First sight: the Service's creation is the oldest change.
        assert_eq!(times.changed_since_last(&key, &svc, &[&a]), Some(at(0)));
        // Pod b became ready: its time, not a's (already carried).
        assert_eq!(times.changed_since_last(&key, &svc, &[&a, &b]), Some(at(7)));
        // Nothing changed: no trigger time.
        assert_eq!(times.changed_since_last(&key, &svc, &[&a, &b]), None);
        // Two changed: the earlier one.
        let (a2, b2) = (pod("a", 9), pod("b", 8));
        assert_eq!(
            times.changed_since_last(&key, &svc, &[&a2, &b2]),
            Some(at(8))
        );
        // A Pod gone has no time to give.
        assert_eq!(times.changed_since_last(&key, &svc, &[&a2]), None);
        times.forget(&key);
        assert_eq!(times.changed_since_last(&key, &svc, &[&a2]), Some(at(0)));
    }
}
