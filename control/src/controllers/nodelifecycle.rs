//! Node lifecycle: a Node that stops renewing its Lease is marked unreachable and emptied.
//!
//! What kube-controller-manager's node lifecycle controller and taint manager do together,
//! reduced to a periodic check (every grace/4, at most 5 s). Node agents renew a Lease in
//! `kube-node-lease` named after their node; Ready's `lastHeartbeatTime` counts too, and a new
//! Node counts from its creation. Once the latest of these is older than `node_monitor_grace`:
//! - Ready (and the pressure conditions) become `Unknown`, through `nodes/<n>/status`;
//! - `node.kubernetes.io/unreachable` is added to `spec.taints` as NoSchedule, so nothing new
//!   lands there, and NoExecute, whose `timeAdded` is when eviction starts counting — kept in
//!   the Node, so a restart or a new leader counts on from the same moment;
//! - every Pod on it gets Ready=False (kube's `MarkPodsNotReady`), so endpoints stop using it;
//! - after `pod_eviction_timeout` (or the Pod's own toleration of the NoExecute taint) the Pod
//!   is deleted gracefully.
//!
//! A fresh sign of life removes the taints again; Ready is the node agent's to set back.
//! Times are compared with this machine's clock: node clocks must be roughly in sync.

mod health;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

use super::Settings;

/// Where node agents keep their Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// What one check could not do.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Listing Nodes, Leases or Pods failed.
    #[error("cannot list {what}")]
    List {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Writing a Node's status or taints failed.
    #[error("cannot update node {node}")]
    Node {
        node: String,
        #[source]
        source: kube::Error,
    },
    /// Writing a Pod's status or deleting it failed.
    #[error("cannot {action} pod {pod}")]
    Pod {
        action: &'static str,
        pod: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the controller until dropped.
pub async fn run(client: kube::Client, settings: Arc<Settings>) {
    let period =
        (settings.node_monitor_grace / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let monitor = Monitor {
        nodes: Api::all(client.clone()),
        leases: Api::namespaced(client.clone(), LEASE_NAMESPACE),
        pods: Api::all(client.clone()),
        client,
        settings,
    };
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(err) = monitor.check_all().await {
            tracing::warn!(error = %err, "node health check failed");
        }
    }
}

struct Monitor {
    client: kube::Client,
    nodes: Api<Node>,
    leases: Api<Lease>,
    pods: Api<Pod>,
    settings: Arc<Settings>,
}

impl Monitor {
    async fn check_all(&self) -> Result<(), LifecycleError> {
        let list = |what: &str| {
            let what = what.to_owned();
            move |source| LifecycleError::List { what, source }
        };
        let nodes = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(list("nodes"))?;
        let leases = self
            .leases
            .list(&ListParams::default())
            .await
            .map_err(list("leases"))?;
        let leases: HashMap<String, Lease> = leases
            .items
            .into_iter()
            .map(|l| (l.name_any(), l))
            .collect();
        for node in nodes.items {
            if node.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let lease = leases.get(&node.name_any());
            if let Err(err) = self.check(node, lease).await {
                tracing::warn!(error = %err, "node health check failed");
            }
        }
        Ok(())
    }

    async fn check(&self, node: Node, lease: Option<&Lease>) -> Result<(), LifecycleError> {
        let now = Timestamp::now();
        let last = health::last_heard(&node, lease);
        if health::is_silent(last, now, self.settings.node_monitor_grace) {
            let node = self.mark_unreachable(node, now).await?;
            self.handle_pods(&node, now).await
        } else {
            self.mark_reachable(node).await
        }
    }

    /// Ready=Unknown, then the taints; returns the Node as last written.
    async fn mark_unreachable(
        &self,
        mut node: Node,
        now: Timestamp,
    ) -> Result<Node, LifecycleError> {
        let name = node.name_any();
        let error = |source| LifecycleError::Node {
            node: name.clone(),
            source,
        };
        if health::mark_unknown(node.status.get_or_insert_with(Default::default), now) {
            tracing::warn!(node = %name, "node stopped reporting: Ready is Unknown");
            node = self
                .nodes
                .replace_status(&name, &PostParams::default(), &node)
                .await
                .map_err(error)?;
        }
        let spec = node.spec.get_or_insert_with(Default::default);
        if health::add_unreachable(spec.taints.get_or_insert_with(Vec::new), now) {
            tracing::info!(node = %name, "tainting unreachable node");
            node = self
                .nodes
                .replace(&name, &PostParams::default(), &node)
                .await
                .map_err(error)?;
        }
        Ok(node)
    }

    async fn mark_reachable(&self, mut node: Node) -> Result<(), LifecycleError> {
        let Some(taints) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) else {
            return Ok(());
        };
        if !health::remove_unreachable(taints) {
            return Ok(());
        }
        let name = node.name_any();
        tracing::info!(node = %name, "node reports again: removing the unreachable taints");
        self.nodes
            .replace(&name, &PostParams::default(), &node)
            .await
            .map(drop)
            .map_err(|source| LifecycleError::Node { node: name, source })
    }

    /// Marks the Node's Pods not ready and evicts those whose time is up.
    async fn handle_pods(&self, node: &Node, now: Timestamp) -> Result<(), LifecycleError> {
        let name = node.name_any();
        let on_node = ListParams::default().fields(&format!("spec.nodeName={name}"));
        let pods = self
            .pods
            .list(&on_node)
            .await
            .map_err(|source| LifecycleError::List {
                what: format!("pods on node {name}"),
                source,
            })?;
        let since = health::unreachable_since(node);
        for pod in pods.items {
            // Already going; endpoints treat terminating Pods as not ready anyway.
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let evict = since
                .zip(health::eviction_delay(
                    &pod,
                    self.settings.pod_eviction_timeout,
                ))
                .is_some_and(|(since, delay)| health::elapsed(since, now) >= delay);
            let result = if evict {
                self.evict(&pod).await
            } else {
                self.mark_not_ready(pod, now).await
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "pod on unreachable node not handled");
            }
        }
        Ok(())
    }

    async fn mark_not_ready(&self, mut pod: Pod, now: Timestamp) -> Result<(), LifecycleError> {
        if !health::mark_pod_not_ready(&mut pod, now) {
            return Ok(());
        }
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        pods.replace_status(&name, &PostParams::default(), &pod)
            .await
            .map(drop)
            .map_err(|source| LifecycleError::Pod {
                action: "mark not ready",
                pod: format!("{namespace}/{name}"),
                source,
            })
    }

    async fn evict(&self, pod: &Pod) -> Result<(), LifecycleError> {
        let (namespace, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        tracing::info!(pod = %format!("{namespace}/{name}"), "evicting pod from unreachable node");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(source) => Err(LifecycleError::Pod {
                action: "evict",
                pod: format!("{namespace}/{name}"),
                source,
            }),
        }
    }
}
