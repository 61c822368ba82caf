//! The node's heartbeats, as kubelet sends them: a Lease in `kube-node-lease` renewed every
//! quarter of its duration, 10 s of 40 s by default (the cheap signal the node lifecycle
//! controller watches), and the Node's status —
//! Ready with a fresh `lastHeartbeatTime` — posted every minute, or at once when the Node
//! shows anything but Ready=True (a control plane that marked it Unknown while it was away),
//! with the images the runtime holds, and Ready=False with the runtime's reason while the
//! container runtime or its network is not ready (posted as soon as that changes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::facts::MachineFacts;
use crate::register::{NodeIdentity, Observed, post_status};
use crate::runtime::PodRuntime;

/// Where node Leases live.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a Lease holds without renewal by default (kubelet's 40 s).
pub const LEASE_DURATION: Duration = Duration::from_secs(40);
/// How often readiness is checked while the runtime is not ready (its CNI config is about to
/// appear at start), so the node turns Ready within a second of it.
const NOT_READY_RECHECK: Duration = Duration::from_secs(1);
/// How long the runtime gets to say whether it is ready.
const STATUS_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the status is posted when nothing else asks for it.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(60);

/// Renews the Lease (lasting `lease_duration`) and posts the status forever; failures are
/// logged and retried.
pub async fn run(
    client: kube::Client,
    identity: NodeIdentity,
    facts: MachineFacts,
    lease_duration: Duration,
    runtime: Arc<dyn PodRuntime>,
    registered_problem: Option<String>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let nodes: Api<Node> = Api::all(client);
    let mut last_status = Instant::now();
    let mut last_problem: Option<String> = registered_problem;
    loop {
        if let Err(err) = renew(&leases, &nodes, &identity.name, lease_duration).await {
            tracing::warn!(error = %err, "node lease not renewed");
        }
        let problem = runtime_problem(&runtime).await;
        let changed = problem != last_problem;
        if changed {
            match &problem {
                Some(problem) => tracing::warn!(%problem, "node not ready"),
                None => tracing::info!("the container runtime is ready"),
            }
        }
        let stale = last_status.elapsed() >= STATUS_INTERVAL || changed;
        let shown_ready = match nodes.get_opt(&identity.name).await {
            Ok(Some(node)) => is_ready(&node),
            Ok(None) => false,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the node");
                true
            }
        };
        if stale || shown_ready != problem.is_none() {
            let asked = Arc::clone(&runtime);
            let images = match tokio::task::spawn_blocking(move || asked.images()).await {
                Ok(Ok(images)) => images,
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "cannot list the node's images");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            let observed = Observed {
                images,
                runtime_problem: problem.clone(),
            };
            match post_status(&nodes, &identity, &facts, &observed).await {
                Ok(_) => {
                    last_status = Instant::now();
                    last_problem = problem;
                }
                Err(err) => tracing::warn!(error = %err, "node status not posted"),
            }
        }
        let pause = if last_problem.is_some() {
            NOT_READY_RECHECK.min(lease_duration / 4)
        } else {
            lease_duration / 4
        };
        tokio::time::sleep(pause).await;
    }
}

/// Why the runtime cannot run Pods now, as the Ready condition words it; None when it can.
/// Bounded: a hung runtime must not hold up the Lease.
pub async fn runtime_problem(runtime: &Arc<dyn PodRuntime>) -> Option<String> {
    let asked = Arc::clone(runtime);
    let status = tokio::time::timeout(
        STATUS_CALL_TIMEOUT,
        tokio::task::spawn_blocking(move || asked.status()),
    );
    match status.await {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(err))) => Some(format!(
            "container runtime not ready: {}",
            skiff_cni::error_chain(&err)
        )),
        Ok(Err(_)) => Some("container runtime status unknown".to_owned()),
        Err(_) => Some(format!(
            "container runtime not ready: no answer within {STATUS_CALL_TIMEOUT:?}"
        )),
    }
}

/// Whether the Node shows Ready=True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Renews this node's Lease, creating it (owned by the Node) when missing.
pub async fn renew(
    leases: &Api<Lease>,
    nodes: &Api<Node>,
    name: &str,
    duration: Duration,
) -> Result<(), kube::Error> {
    let now = serde_json::to_value(MicroTime(k8s_openapi::jiff::Timestamp::now()))
        .expect("a timestamp serializes");
    let renewal = json!({"spec": {"holderIdentity": name, "renewTime": now,
                                  "leaseDurationSeconds": duration.as_secs()}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&renewal))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let node = nodes.get(name).await?;
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": LEASE_NAMESPACE,
                             "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": name,
                                                  "uid": node.metadata.uid}]},
                "spec": {"holderIdentity": name, "renewTime": now,
                         "leaseDurationSeconds": duration.as_secs()},
            }))
            .expect("a valid Lease");
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}
