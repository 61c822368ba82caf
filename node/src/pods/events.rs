//! Events about Pods, as `kubectl describe pod` shows them (`Scheduled` comes from the
//! scheduler; the agent adds `Started`, `Failed`, `BackOff`, `Unhealthy`, `Killing`...).
//! Sent off the sync path: an Event that cannot be written is logged, never retried.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Writes Events as this node's agent.
#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder for `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        Recorder {
            client,
            node: node.to_owned(),
        }
    }

    /// Records a `Normal` or `Warning` event about `pod` in the background.
    pub fn pod_event(&self, pod: &Pod, warning: bool, reason: &str, message: &str) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let now = serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ))
        .unwrap_or_default();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = json!({
            "metadata": {"name": format!("{name}.{nanos:x}"), "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                               "name": name, "uid": pod.metadata.uid},
            "reason": reason, "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(err) = events.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %err, "event not recorded");
            }
        });
    }
}
