//! The Deployment controller: turns each Deployment into ReplicaSets, one per Pod template,
//! and moves replicas from old to new as its strategy says — kube-controller-manager's
//! `deployment` controller.
//!
//! A Deployment's ReplicaSets are named `<deployment>-<pod-template-hash>` and carry that hash in
//! their selector and template labels, so Pods of different templates never match each other's
//! ReplicaSet. A rollout is a level-triggered loop: each reconcile looks at all ReplicaSets and
//! takes the next step (grow the new one within maxSurge, shrink old ones within maxUnavailable;
//! or, for Recreate, remove old Pods first), then writes status with the `Progressing`
//! condition `kubectl rollout status` waits for. As in the ReplicaSet controller, the triggers
//! are the events of the reflectors whose stores a reconcile reads, and our writes are laid over
//! the ReplicaSet store until its watch echoes them.

mod hash;
mod rollout;
mod sets;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::applier;
use kube::runtime::controller::{Action, ReconcileRequest, trigger_self, trigger_with};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::rollout::{RsView, desired, fenceposts, spec_replicas};
use self::sets::{Sets, claim, revision_of, sync_revision};
use super::Settings;
use super::failures::FailureBackoff;
use super::replicaset::overlay::Overlay;
use super::replicaset::pods::{controller_of, label_selector, labels};

/// The annotation holding a Deployment's (and each ReplicaSet's) revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// What a reconcile can fail with; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deployment {0} has an invalid selector")]
    Selector(String, #[source] crate::selector::SelectorError),
    #[error("api request failed")]
    Api(#[from] kube::Error),
    #[error("replicaset {0} exists with another template (hash collision)")]
    Collision(String),
    #[error("the replicaset store is gone")]
    StoreGone,
}

struct Context {
    client: kube::Client,
    replicasets: Store<ReplicaSet>,
    written: Overlay<ReplicaSet>,
    failures: FailureBackoff<ObjectRef<Deployment>>,
}

/// Runs the controller until dropped.
pub async fn run(client: kube::Client, _settings: Arc<Settings>) {
    let (d_store, d_events) = super::reflect_all::<Deployment>(&client);
    let (rs_store, rs_events) = super::reflect_all::<ReplicaSet>(&client);
    let owners = d_store.clone();
    let queue = futures::stream::select(
        trigger_self(d_events, ()),
        trigger_with(rs_events, move |rs: ReplicaSet| {
            deployments_for(&owners, &rs)
        }),
    );
    let context = Arc::new(Context {
        client,
        replicasets: rs_store,
        written: Overlay::default(),
        failures: FailureBackoff::default(),
    });
    applier(
        |d, ctx| Box::pin(reconcile(d, ctx)),
        error_policy,
        context,
        d_store,
        queue,
        kube::runtime::Config::default(),
    )
    .for_each(|result| {
        if let Err(err) = result {
            tracing::debug!(error = %err, "deployment reconcile failed");
        }
        future::ready(())
    })
    .await;
}

/// The Deployments a ReplicaSet event concerns: its controller, or those that select an orphan.
fn deployments_for(
    store: &Store<Deployment>,
    rs: &ReplicaSet,
) -> Vec<ReconcileRequest<Deployment>> {
    let namespace = rs.namespace().unwrap_or_default();
    if let Some(owner) = controller_of(&rs.metadata) {
        if owner.kind == "Deployment" && owner.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&owner.name).within(&namespace).into()];
        }
        return Vec::new();
    }
    let rs_labels = labels(&rs.metadata);
    store
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(&namespace))
        .filter(|d| {
            d.spec.as_ref().is_some_and(|s| {
                label_selector(&s.selector)
                    .is_ok_and(|s| !s.is_everything() && s.matches(&rs_labels))
            })
        })
        .map(|d| ObjectRef::from_obj(&**d).into())
        .collect()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube's applier calls"
)]
fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(deployment = %d.name_any(), error = %err, "deployment reconcile failed");
    Action::requeue(ctx.failures.failed(ObjectRef::from_obj(&*d)))
}

/// One reconcile; a success forgets the Deployment's failures.
async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = ObjectRef::from_obj(&*d);
    let action = sync(d, Arc::clone(&ctx)).await?;
    ctx.failures.succeeded(&key);
    Ok(action)
}

/// Brings one Deployment's ReplicaSets and status to what its spec says.
async fn sync(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.replicasets
        .wait_until_ready()
        .await
        .map_err(|_| Error::StoreGone)?;
    if d.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = d.name_any();
    let spec = d.spec.clone().unwrap_or_default();
    let selector = label_selector(&spec.selector).map_err(|e| Error::Selector(name.clone(), e))?;
    if selector.is_everything() {
        // Kubernetes refuses to act on an empty selector: it would take every Pod.
        return Ok(Action::await_change());
    }
    let mut sets = claim(&ctx, &d, &selector).await?;
    let paused = spec.paused == Some(true);
    let next = if paused {
        scale_only(&ctx, &d, &mut sets).await?;
        None
    } else if rollout::is_rolling(&d) {
        rolling(&ctx, &d, &mut sets).await?
    } else {
        recreate(&ctx, &d, &mut sets).await?
    };
    let requeue = write_status(&ctx, &d, &sets).await?;
    if !paused && status::complete(&d, &d.status.clone().unwrap_or_default()) {
        cleanup(&ctx, &d, &sets).await?;
    }
    Ok(match next.or(requeue) {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Sets a ReplicaSet's size (and the annotations Kubernetes keeps with it).
async fn scale(
    ctx: &Context,
    d: &Deployment,
    rs: &mut ReplicaSet,
    replicas: i32,
) -> Result<bool, Error> {
    if spec_replicas(rs) == replicas {
        return Ok(false);
    }
    let api: Api<ReplicaSet> =
        Api::namespaced(ctx.client.clone(), &rs.namespace().unwrap_or_default());
    let (surge, _) = fenceposts(d);
    let patch = json!({
        "metadata": {"annotations": {
            DESIRED_REPLICAS: desired(d).to_string(),
            MAX_REPLICAS: (desired(d) + surge).to_string(),
        }},
        "spec": {"replicas": replicas},
    });
    let updated = api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    ctx.written.wrote(updated.clone());
    *rs = updated;
    Ok(true)
}

/// One step of a rolling update (`rolloutRolling`); returns when to look again, if timed.
async fn rolling(
    ctx: &Context,
    d: &Deployment,
    sets: &mut Sets,
) -> Result<Option<Duration>, Error> {
    let want = desired(d);
    let (surge, unavailable) = fenceposts(d);
    let views: Vec<RsView> = sets.all().into_iter().map(RsView::of).collect();
    let new_size = match &sets.new {
        Some(new) => rollout::new_rs_replicas(want, surge, &views, &RsView::of(new)),
        None => {
            let empty = RsView {
                name: String::new(),
                replicas: 0,
                available: 0,
            };
            rollout::new_rs_replicas(want, surge, &views, &empty)
        }
    };
    sync_revision(ctx, d, sets, Some(new_size)).await?;
    let Some(mut new) = sets.new.take() else {
        return Ok(None);
    };
    // Grow (or, above replicas, shrink) the new ReplicaSet first.
    let views: Vec<RsView> = sets.old.iter().chain(Some(&new)).map(RsView::of).collect();
    let target = if spec_replicas(&new) > want {
        want
    } else {
        rollout::new_rs_replicas(want, surge, &views, &RsView::of(&new))
    };
    let scaled_up = scale(ctx, d, &mut new, target).await?;
    let new_view = RsView::of(&new);
    sets.new = Some(new);
    if scaled_up {
        return Ok(None);
    }
    let old_views: Vec<RsView> = sets.old.iter().map(RsView::of).collect();
    for (name, replicas) in rollout::scale_down_old(want, unavailable, &old_views, Some(&new_view))
    {
        if let Some(rs) = sets.old.iter_mut().find(|rs| rs.name_any() == name) {
            scale(ctx, d, rs, replicas).await?;
        }
    }
    Ok(None)
}

/// One step of a Recreate rollout: old Pods all gone before the new ones start.
async fn recreate(
    ctx: &Context,
    d: &Deployment,
    sets: &mut Sets,
) -> Result<Option<Duration>, Error> {
    sync_revision(ctx, d, sets, None).await?;
    let mut scaled_down = false;
    for rs in &mut sets.old {
        scaled_down |= scale(ctx, d, rs, 0).await?;
    }
    if scaled_down {
        return Ok(None);
    }
    let old_running = sets.old.iter().any(|rs| {
        let status = rs.status.clone().unwrap_or_default();
        status.replicas > 0 || status.observed_generation < rs.metadata.generation
    });
    if old_running {
        return Ok(None);
    }
    if sets.new.is_none() {
        sync_revision(ctx, d, sets, Some(desired(d))).await?;
    }
    if let Some(mut new) = sets.new.take() {
        scale(ctx, d, &mut new, desired(d)).await?;
        sets.new = Some(new);
    }
    Ok(None)
}

/// A paused Deployment: only the active ReplicaSet follows `spec.replicas`.
async fn scale_only(ctx: &Context, d: &Deployment, sets: &mut Sets) -> Result<(), Error> {
    sync_revision(ctx, d, sets, None).await?;
    let mut active: Vec<&mut ReplicaSet> = sets
        .old
        .iter_mut()
        .chain(sets.new.as_mut())
        .filter(|rs| spec_replicas(rs) > 0)
        .collect();
    if active.len() == 1 {
        scale(ctx, d, active[0], desired(d)).await?;
    }
    Ok(())
}

/// Writes status if it changed; returns when the progress deadline is to be checked.
async fn write_status(
    ctx: &Context,
    d: &Deployment,
    sets: &Sets,
) -> Result<Option<Duration>, Error> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut new_status = status::calculate(d, &sets.all(), sets.new.as_ref(), now);
    let new_name = sets.new.as_ref().map(ResourceExt::name_any);
    let requeue = status::set_progress(d, &mut new_status, new_name.as_deref(), now);
    if d.status.as_ref() != Some(&new_status) {
        let api: Api<Deployment> =
            Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"status": new_status});
        api.patch_status(
            &d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(requeue)
}

/// Deletes old, empty ReplicaSets beyond `revisionHistoryLimit`, oldest first.
async fn cleanup(ctx: &Context, d: &Deployment, sets: &Sets) -> Result<(), Error> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10);
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    let mut empty: Vec<&ReplicaSet> = sets
        .old
        .iter()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            spec_replicas(rs) == 0
                && status.replicas == 0
                && status.observed_generation >= rs.metadata.generation
        })
        .collect();
    if empty.len() <= limit {
        return Ok(());
    }
    empty.sort_by_key(|rs| revision_of(&rs.metadata));
    let api: Api<ReplicaSet> =
        Api::namespaced(ctx.client.clone(), &d.namespace().unwrap_or_default());
    for rs in &empty[..empty.len() - limit] {
        match api.delete(&rs.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
        if let Some(uid) = rs.uid() {
            ctx.written.deleted(&uid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str) -> Arc<Deployment> {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.to_owned());
        d.metadata.namespace = Some("default".to_owned());
        Arc::new(d)
    }

    #[tokio::test]
    async fn a_deployment_that_keeps_failing_is_retried_ever_later() {
        let ctx = Arc::new(Context {
            client: super::super::offline_client(),
            replicasets: kube::runtime::reflector::store().0,
            written: Overlay::default(),
            failures: FailureBackoff::default(),
        });
        let retry =
            |name: &str| error_policy(deployment(name), &Error::StoreGone, Arc::clone(&ctx));
        let waits: Vec<Action> = (0..4).map(|_| retry("web")).collect();
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4), secs(8)]);
        assert_eq!(
            retry("api"),
            secs(1),
            "each Deployment backs off on its own"
        );
        ctx.failures
            .succeeded(&ObjectRef::from_obj(&*deployment("web")));
        assert_eq!(retry("web"), secs(1), "a success starts over");
    }
}
