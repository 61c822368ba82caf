//! The scheduler's few writes: the binding, the PodScheduled=False condition and the
//! Scheduled / FailedScheduling Events. Each is one request, run off the deciding loop so several are in
//! flight at once while the next Pods are decided.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The name Pods ask for in `spec.schedulerName`, and this scheduler's Event source.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// A write that failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The binding was refused for another reason than the Pod being bound or gone.
    #[error("cannot bind {pod} to {node}")]
    Bind {
        /// `namespace/name`.
        pod: String,
        /// The chosen Node.
        node: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The PodScheduled condition could not be written.
    #[error("cannot set the PodScheduled condition of {pod}")]
    Condition {
        /// `namespace/name`.
        pod: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The Event could not be created.
    #[error("cannot record an event for {pod}")]
    Event {
        /// `namespace/name`.
        pod: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

/// How a binding went.
#[derive(Debug)]
pub enum Bound {
    /// The Pod is on the Node.
    Yes,
    /// Someone bound it first (409 "already assigned"): nothing more to do.
    Already,
    /// The Pod (with this uid) no longer exists.
    Gone,
}

/// A Pod being written about.
#[derive(Clone, Debug)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
}

impl PodRef {
    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

fn now() -> Value {
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now())).unwrap_or(Value::Null)
}

/// POST pods/<name>/binding, with the uid as precondition.
pub async fn bind(client: kube::Client, pod: &PodRef, node: &str) -> Result<Bound, WriteError> {
    let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match pods
        .create_subresource::<_, Value>("binding", &pod.name, &PostParams::default(), &binding)
        .await
    {
        Ok(_) => Ok(Bound::Yes),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Bound::Gone),
        Err(kube::Error::Api(e)) if e.code == 409 && e.message.contains("already assigned") => {
            Ok(Bound::Already)
        }
        Err(kube::Error::Api(e)) if e.code == 409 && e.message.contains("UID mismatch") => {
            Ok(Bound::Gone)
        }
        Err(source) => Err(WriteError::Bind {
            pod: pod.key(),
            node: node.to_owned(),
            source,
        }),
    }
}

/// Sets `PodScheduled=False` (reason Unschedulable) through `/status`; the binding itself
/// turns it `True`.
pub async fn set_unschedulable(
    client: kube::Client,
    pod: &PodRef,
    message: &str,
) -> Result<(), WriteError> {
    let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
    let condition = json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                           "message": message, "lastProbeTime": null, "lastTransitionTime": now()});
    let patch = json!({"status": {"conditions": [condition]}});
    pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(drop)
        .map_err(|source| WriteError::Condition {
            pod: pod.key(),
            source,
        })
}

/// What an Event the scheduler records says.
#[derive(Clone, Copy, Debug)]
pub enum Verdict<'a> {
    /// Normal `Scheduled`: "Successfully assigned ns/name to node".
    Scheduled {
        /// The Node the Pod was bound to.
        node: &'a str,
    },
    /// Warning `FailedScheduling` with the reasons no node fits.
    Failed {
        /// Why, e.g. "0/3 nodes are available: ...".
        message: &'a str,
    },
}

/// Creates the Event `kubectl describe pod` shows for a scheduling decision.
pub async fn record(
    client: kube::Client,
    pod: &PodRef,
    verdict: Verdict<'_>,
) -> Result<(), WriteError> {
    let (reason, kind, message) = match verdict {
        Verdict::Scheduled { node } => (
            "Scheduled",
            "Normal",
            format!("Successfully assigned {} to {node}", pod.key()),
        ),
        Verdict::Failed { message } => ("FailedScheduling", "Warning", message.to_owned()),
    };
    let events: Api<Event> = Api::namespaced(client, &pod.namespace);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": format!("{}.{nanos:x}", pod.name), "namespace": pod.namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                           "name": pod.name, "uid": pod.uid},
        "reason": reason, "message": message, "type": kind,
        "action": "Scheduling", "count": 1,
        "source": {"component": SCHEDULER_NAME},
        "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": SCHEDULER_NAME,
        "firstTimestamp": now(), "lastTimestamp": now(),
    }))
    .expect("a valid Event");
    events
        .create(&PostParams::default(), &event)
        .await
        .map(drop)
        .map_err(|source| WriteError::Event {
            pod: pod.key(),
            source,
        })
}
