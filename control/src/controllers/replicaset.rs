//! The ReplicaSet controller: keeps `spec.replicas` active Pods matching each ReplicaSet's
//! selector, as kube-controller-manager's `replicaset` controller does.
//!
//! It is kube-runtime's `applier` (the engine under `Controller`) fed by two reflectors, one of
//! ReplicaSets and one of Pods. The triggers are the events of the very reflectors that fill the
//! stores the reconcile reads, so a reconcile never sees a store older than what woke it; with
//! `Controller::owns` the trigger and the store would be two watches that race. Our own writes
//! are laid over the Pod store (see `overlay`) so a reconcile that runs before the watch echoes
//! a create does not create again. Pods are claimed as Kubernetes' `PodControllerRefManager`
//! does: orphans that match are adopted, owned Pods that stopped matching are released.

pub mod overlay;
pub mod pods;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::applier;
use kube::runtime::controller::{Action, ReconcileRequest};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::overlay::Overlay;
use self::pods::{Availability, availability, controller_of, controller_ref, is_active};
use super::Settings;
use super::failures::FailureBackoff;

/// Pods created (or deleted) in one sync at most, as Kubernetes' `burstReplicas`.
const BURST: usize = 500;
/// Creations in flight at once.
const CONCURRENT_CREATES: usize = 16;

/// What a reconcile can fail with; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replicaset {0} has an invalid selector")]
    Selector(String, #[source] crate::selector::SelectorError),
    #[error("api request failed")]
    Api(#[from] kube::Error),
    #[error("the pod store is gone")]
    StoreGone,
}

struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    written: Overlay<Pod>,
    failures: FailureBackoff<ObjectRef<ReplicaSet>>,
}

/// Runs the controller until dropped.
pub async fn run(client: kube::Client, _settings: Arc<Settings>) {
    let (rs_store, rs_events) = super::reflect_all::<ReplicaSet>(&client);
    let (pod_store, pod_events) = super::reflect_all::<Pod>(&client);
    let owners = rs_store.clone();
    let queue = futures::stream::select(
        kube::runtime::controller::trigger_self(rs_events, ()),
        kube::runtime::controller::trigger_with(pod_events, move |pod: Pod| {
            replicasets_for_pod(&owners, &pod)
        }),
    );
    let context = Arc::new(Context {
        client,
        pods: pod_store,
        replicasets: rs_store.clone(),
        written: Overlay::default(),
        failures: FailureBackoff::default(),
    });
    applier(
        |rs, ctx| Box::pin(reconcile(rs, ctx)),
        error_policy,
        context,
        rs_store,
        queue,
        kube::runtime::Config::default(),
    )
    .for_each(|result| {
        if let Err(err) = result {
            tracing::debug!(error = %err, "replicaset reconcile failed");
        }
        future::ready(())
    })
    .await;
}

/// The ReplicaSets a Pod event concerns: its controller, or (an orphan) those that select it.
fn replicasets_for_pod(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ReconcileRequest<ReplicaSet>> {
    let namespace = pod.namespace().unwrap_or_default();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(&namespace).into()];
        }
        return Vec::new();
    }
    let labels = pods::labels(&pod.metadata);
    store
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(&namespace))
        .filter(|rs| {
            rs.spec.as_ref().is_some_and(|spec| {
                pods::label_selector(&spec.selector)
                    .is_ok_and(|s| !s.is_everything() && s.matches(&labels))
            })
        })
        .map(|rs| ObjectRef::from_obj(&**rs).into())
        .collect()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube's applier calls"
)]
fn error_policy(rs: Arc<ReplicaSet>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(replicaset = %rs.name_any(), error = %err, "replicaset reconcile failed");
    Action::requeue(ctx.failures.failed(ObjectRef::from_obj(&*rs)))
}

/// One reconcile; a success forgets the ReplicaSet's failures.
async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*rs);
    let action = sync(rs, Arc::clone(&ctx)).await?;
    ctx.failures.succeeded(&key);
    Ok(action)
}

/// Brings one ReplicaSet's Pods and status to what its spec says.
async fn sync(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreGone)?;
    ctx.replicasets
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreGone)?;
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.uid().unwrap_or_default();
    let spec = rs.spec.clone().unwrap_or_default();
    let selector =
        pods::label_selector(&spec.selector).map_err(|e| Error::Selector(name.clone(), e))?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = rs.meta().deletion_timestamp.is_some();

    let mut owned = Vec::new();
    for pod in ctx.written.view(ctx.pods.state()) {
        if pod.namespace().as_deref() != Some(namespace.as_str()) {
            continue;
        }
        let matches = !selector.is_everything() && selector.matches(&pods::labels(&pod.metadata));
        match controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if !deleting {
                    release(&pod_api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                let adopted = adopt(&pod_api, &rs, &pod).await?;
                owned.push(Arc::new(adopted));
            }
            None => {}
        }
    }
    let active: Vec<Arc<Pod>> = owned.into_iter().filter(|p| is_active(p)).collect();
    let status = compute_status(&rs, &active);
    if !deleting {
        manage_replicas(&ctx, &pod_api, &rs, &active).await?;
    }
    let requeue = status.1;
    if rs.status.as_ref() != Some(&status.0) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({"status": status.0});
        rs_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Creates or deletes Pods so that `spec.replicas` are active.
async fn manage_replicas(
    ctx: &Context,
    api: &Api<Pod>,
    rs: &ReplicaSet,
    active: &[Arc<Pod>],
) -> Result<(), Error> {
    let spec = rs.spec.clone().unwrap_or_default();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    if active.len() < want {
        let template = spec.template.unwrap_or_default();
        let owner = controller_ref(rs.meta(), "apps/v1", "ReplicaSet");
        let namespace = rs.namespace().unwrap_or_default();
        let pod = pods::pod_from_template(&template, &namespace, &rs.name_any(), owner);
        let params = PostParams::default();
        // Kubernetes' burstReplicas: at most this many creations per sync, a few at a time.
        let missing = (want - active.len()).min(BURST);
        let results: Vec<_> = futures::stream::iter(0..missing)
            .map(|_| api.create(&params, &pod))
            .buffer_unordered(CONCURRENT_CREATES)
            .collect()
            .await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(created) => ctx.written.wrote(created),
                Err(err) => failure = Some(err),
            }
        }
        if let Some(err) = failure {
            return Err(err.into());
        }
    } else if active.len() > want {
        let mut victims = active.to_vec();
        victims.sort_by(|a, b| pods::deletion_order(a, b));
        victims.truncate((active.len() - want).min(BURST));
        for pod in victims {
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(err) => return Err(err.into()),
            }
            if let Some(uid) = pod.uid() {
                ctx.written.deleted(&uid);
            }
        }
    }
    Ok(())
}

/// Makes `rs` the controller of an orphan Pod.
async fn adopt(api: &Api<Pod>, rs: &ReplicaSet, pod: &Pod) -> Result<Pod, Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(controller_ref(rs.meta(), "apps/v1", "ReplicaSet"));
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.resource_version(),
    }});
    Ok(api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

/// Lets go of a Pod that no longer matches the selector.
async fn release(api: &Api<Pod>, pod: &Pod, owner_uid: &str) -> Result<(), Error> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": pod.resource_version(),
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

/// The status the active Pods make, and when to look again (a Pod becoming available).
fn compute_status(rs: &ReplicaSet, active: &[Arc<Pod>]) -> (ReplicaSetStatus, Option<Duration>) {
    let spec = rs.spec.clone().unwrap_or_default();
    let min_ready = i64::from(spec.min_ready_seconds.unwrap_or(0));
    let template_labels = spec
        .template
        .and_then(|t| t.metadata)
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut status = ReplicaSetStatus {
        replicas: count(active.len()),
        observed_generation: rs.meta().generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        ..ReplicaSetStatus::default()
    };
    let (mut labelled, mut ready, mut available) = (0, 0, 0);
    let mut next: Option<i64> = None;
    for pod in active {
        let labels = pods::labels(&pod.metadata);
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            labelled += 1;
        }
        match availability(pod, min_ready, now) {
            Availability::NotReady => {}
            Availability::ReadyFor(secs) => {
                ready += 1;
                next = Some(next.map_or(secs, |n| n.min(secs)));
            }
            Availability::Available => {
                ready += 1;
                available += 1;
            }
        }
    }
    status.fully_labeled_replicas = Some(labelled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    let requeue = next.map(|s| Duration::from_secs(u64::try_from(s.max(1)).unwrap_or(1)));
    (status, requeue)
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_replicaset_that_keeps_failing_is_retried_ever_later() {
        let ctx = Arc::new(Context {
            client: super::super::offline_client(),
            pods: kube::runtime::reflector::store().0,
            replicasets: kube::runtime::reflector::store().0,
            written: Overlay::default(),
            failures: FailureBackoff::default(),
        });
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some("web".to_owned());
        let rs = Arc::new(rs);
        let waits: Vec<Action> = (0..3)
            .map(|_| error_policy(Arc::clone(&rs), &Error::StoreGone, Arc::clone(&ctx)))
            .collect();
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4)]);
    }
}
