//! The garbage collector: cascading deletion along ownerReferences, as kube-controller-manager's
//! `garbagecollector` does it for the kinds this apiserver serves.
//!
//! - Background: an object whose every owner is gone (404, or a new object under the same name
//!   with another uid) is deleted; owners that are gone are dropped from an object that still
//!   has a live one.
//! - Foreground: an owner deleted with `propagationPolicy=Foreground` carries the
//!   `foregroundDeletion` finalizer; its dependents are deleted (in the foreground too, so the
//!   cascade goes all the way down) and the finalizer is removed once none is left.
//! - Orphan: an owner with the `orphan` finalizer has itself removed from its dependents'
//!   ownerReferences, then the finalizer removed.
//!
//! One reflector per kind fills the stores (Kubernetes' "graph" is the union of them: dependents
//! are found by owner uid). Every event of an object enqueues the object, its owners and its
//! dependents, each in the `applier` of its kind, so a vanished owner wakes its dependents and a
//! vanished dependent wakes a waiting owner. An owner missing from a store is confirmed with a
//! live GET before anything is deleted, since a store may lag behind a just-created owner.

use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, applier, watcher};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::Settings;
use super::failures::FailureBackoff;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// How often an owner waiting for its dependents looks again, besides their events.
const WAIT: Duration = Duration::from_secs(5);

/// What a collection step can fail with; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("api request failed")]
    Api(#[from] kube::Error),
    #[error("a store of the object graph is gone")]
    StoreGone,
}

/// The kinds whose ownerReferences are followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
    EndpointSlice,
    Service,
}

impl Kind {
    /// The kind an ownerReference names (any version of its group), if we serve it.
    fn of(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Some(match (group, kind) {
            ("", "Pod") => Kind::Pod,
            ("", "Service") => Kind::Service,
            ("apps", "ReplicaSet") => Kind::ReplicaSet,
            ("apps", "Deployment") => Kind::Deployment,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            _ => return None,
        })
    }

    fn api_resource(self) -> ApiResource {
        match self {
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::EndpointSlice => ApiResource::erase::<EndpointSlice>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
        }
    }
}

/// The object graph: a store per kind.
#[derive(Clone)]
struct Stores {
    pods: Store<Pod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    slices: Store<EndpointSlice>,
    services: Store<Service>,
}

fn owned_by<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    kind: Kind,
    uid: &str,
    out: &mut Vec<(Kind, ObjectMeta)>,
) {
    for object in store.state() {
        let refs = object
            .meta()
            .owner_references
            .as_deref()
            .unwrap_or_default();
        if refs.iter().any(|r| r.uid == uid) {
            out.push((kind, object.meta().clone()));
        }
    }
}

fn meta_in<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Option<ObjectMeta> {
    let key = ObjectRef::<K>::new(name).within(namespace);
    store.get(&key).map(|o| o.meta().clone())
}

impl Stores {
    /// Every object with an ownerReference to `uid`.
    fn dependents(&self, uid: &str) -> Vec<(Kind, ObjectMeta)> {
        let mut out = Vec::new();
        owned_by(&self.pods, Kind::Pod, uid, &mut out);
        owned_by(&self.replicasets, Kind::ReplicaSet, uid, &mut out);
        owned_by(&self.deployments, Kind::Deployment, uid, &mut out);
        owned_by(&self.slices, Kind::EndpointSlice, uid, &mut out);
        owned_by(&self.services, Kind::Service, uid, &mut out);
        out
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<ObjectMeta> {
        match kind {
            Kind::Pod => meta_in(&self.pods, namespace, name),
            Kind::ReplicaSet => meta_in(&self.replicasets, namespace, name),
            Kind::Deployment => meta_in(&self.deployments, namespace, name),
            Kind::EndpointSlice => meta_in(&self.slices, namespace, name),
            Kind::Service => meta_in(&self.services, namespace, name),
        }
    }

    async fn ready(&self) -> Result<(), Error> {
        let gone = |_| Error::StoreGone;
        self.pods.wait_until_ready().await.map_err(gone)?;
        self.replicasets.wait_until_ready().await.map_err(gone)?;
        self.deployments.wait_until_ready().await.map_err(gone)?;
        self.slices.wait_until_ready().await.map_err(gone)?;
        self.services.wait_until_ready().await.map_err(gone)
    }
}

/// The work queue of each kind's applier.
struct Queues {
    pods: UnboundedSender<ObjectRef<Pod>>,
    replicasets: UnboundedSender<ObjectRef<ReplicaSet>>,
    deployments: UnboundedSender<ObjectRef<Deployment>>,
    slices: UnboundedSender<ObjectRef<EndpointSlice>>,
    services: UnboundedSender<ObjectRef<Service>>,
}

impl Queues {
    fn send(&self, kind: Kind, namespace: &str, name: &str) {
        // A closed queue means the collector is shutting down; nothing to do then.
        let _ = match kind {
            Kind::Pod => self
                .pods
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .is_ok(),
            Kind::ReplicaSet => self
                .replicasets
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .is_ok(),
            Kind::Deployment => self
                .deployments
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .is_ok(),
            Kind::EndpointSlice => self
                .slices
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .is_ok(),
            Kind::Service => self
                .services
                .unbounded_send(ObjectRef::new(name).within(namespace))
                .is_ok(),
        };
    }
}

struct Context {
    client: kube::Client,
    stores: Stores,
    failures: FailureBackoff<ObjectKey>,
}

/// An object's kind, namespace and name: what failures are counted by.
type ObjectKey = (Kind, String, String);

fn object_key(kind: Kind, meta: &ObjectMeta) -> ObjectKey {
    (
        kind,
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A reflector of one kind, yielding each touched object's metadata.
fn events<K>(
    client: &kube::Client,
    kind: Kind,
    writer: reflector::store::Writer<K>,
) -> BoxStream<'static, (Kind, ObjectMeta)>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let api = Api::<K>::all(client.clone());
    reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .map_ok(move |o: K| (kind, o.meta().clone()))
        .filter_map(|event| future::ready(event.ok()))
        .boxed()
}

/// Runs the collector until dropped.
pub async fn run(client: kube::Client, _settings: Arc<Settings>) {
    let (pods, pods_w) = reflector::store::<Pod>();
    let (replicasets, replicasets_w) = reflector::store::<ReplicaSet>();
    let (deployments, deployments_w) = reflector::store::<Deployment>();
    let (slices, slices_w) = reflector::store::<EndpointSlice>();
    let (services, services_w) = reflector::store::<Service>();
    let stores = Stores {
        pods,
        replicasets,
        deployments,
        slices,
        services,
    };
    let all_events = futures::stream::select_all([
        events(&client, Kind::Pod, pods_w),
        events(&client, Kind::ReplicaSet, replicasets_w),
        events(&client, Kind::Deployment, deployments_w),
        events(&client, Kind::EndpointSlice, slices_w),
        events(&client, Kind::Service, services_w),
    ]);
    let (pods_tx, pods_rx) = unbounded();
    let (replicasets_tx, replicasets_rx) = unbounded();
    let (deployments_tx, deployments_rx) = unbounded();
    let (slices_tx, slices_rx) = unbounded();
    let (services_tx, services_rx) = unbounded();
    let queues = Queues {
        pods: pods_tx,
        replicasets: replicasets_tx,
        deployments: deployments_tx,
        slices: slices_tx,
        services: services_tx,
    };
    let graph = stores.clone();
    let fan_out = all_events.for_each(move |(kind, meta)| {
        enqueue(&graph, &queues, kind, &meta);
        future::ready(())
    });
    let ctx = Arc::new(Context {
        client,
        stores,
        failures: FailureBackoff::default(),
    });
    let s = ctx.stores.clone();
    tokio::join!(
        fan_out,
        collect(Kind::Pod, s.pods, pods_rx, Arc::clone(&ctx)),
        collect(
            Kind::ReplicaSet,
            s.replicasets,
            replicasets_rx,
            Arc::clone(&ctx)
        ),
        collect(
            Kind::Deployment,
            s.deployments,
            deployments_rx,
            Arc::clone(&ctx)
        ),
        collect(Kind::EndpointSlice, s.slices, slices_rx, Arc::clone(&ctx)),
        collect(Kind::Service, s.services, services_rx, Arc::clone(&ctx)),
    );
}

/// An event of `meta` concerns the object, its owners and its dependents.
fn enqueue(stores: &Stores, queues: &Queues, kind: Kind, meta: &ObjectMeta) {
    let namespace = meta.namespace.clone().unwrap_or_default();
    queues.send(kind, &namespace, meta.name.as_deref().unwrap_or_default());
    for owner in meta.owner_references.iter().flatten() {
        if let Some(owner_kind) = Kind::of(&owner.api_version, &owner.kind) {
            queues.send(owner_kind, &namespace, &owner.name);
        }
    }
    if let Some(uid) = &meta.uid {
        for (dep_kind, dep) in stores.dependents(uid) {
            let ns = dep.namespace.unwrap_or_default();
            queues.send(dep_kind, &ns, dep.name.as_deref().unwrap_or_default());
        }
    }
}

/// The applier of one kind.
async fn collect<K>(
    kind: Kind,
    store: Store<K>,
    queue: UnboundedReceiver<ObjectRef<K>>,
    ctx: Arc<Context>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    applier(
        move |object: Arc<K>, ctx| Box::pin(reconcile(kind, object.meta().clone(), ctx)),
        move |object: Arc<K>, err: &Error, ctx: Arc<Context>| {
            retry_after_failure(kind, object.meta(), err, &ctx)
        },
        ctx,
        store,
        queue.map(Ok::<_, Infallible>),
        kube::runtime::Config::default(),
    )
    .for_each(|_| future::ready(()))
    .await;
}

/// When to collect an object again after a failure: later with each failure in a row.
fn retry_after_failure(kind: Kind, meta: &ObjectMeta, err: &Error, ctx: &Context) -> Action {
    let object = meta.name.as_deref().unwrap_or_default();
    tracing::warn!(%object, error = %err, "garbage collection failed");
    Action::requeue(ctx.failures.failed(object_key(kind, meta)))
}

fn api(ctx: &Context, kind: Kind, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), namespace, &kind.api_resource())
}

/// Collects one object and, when that works, forgets its failures.
async fn reconcile(kind: Kind, meta: ObjectMeta, ctx: Arc<Context>) -> Result<Action, Error> {
    let key = object_key(kind, &meta);
    let action = collect_one(kind, meta, Arc::clone(&ctx)).await?;
    ctx.failures.succeeded(&key);
    Ok(action)
}

/// One object: finish its own deletion if it waits on us, else collect it if orphaned.
async fn collect_one(kind: Kind, meta: ObjectMeta, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.ready().await?;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    if meta.deletion_timestamp.is_some() {
        if finalizers.iter().any(|f| f == ORPHAN) {
            for (dep_kind, dep) in ctx.stores.dependents(&uid) {
                let kept: Vec<&OwnerReference> = dep
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != uid)
                    .collect();
                let patch = json!({"metadata": {
                    "ownerReferences": kept, "resourceVersion": dep.resource_version}});
                let dep_ns = dep.namespace.clone().unwrap_or_default();
                ignore_missing(
                    api(&ctx, dep_kind, &dep_ns)
                        .patch(
                            dep.name.as_deref().unwrap_or_default(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await,
                )?;
            }
            remove_finalizer(&ctx, kind, &meta, ORPHAN).await?;
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            let dependents = ctx.stores.dependents(&uid);
            for (dep_kind, dep) in &dependents {
                if dep.deletion_timestamp.is_none() {
                    let dep_ns = dep.namespace.clone().unwrap_or_default();
                    let params = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Foreground),
                        preconditions: Some(Preconditions {
                            uid: dep.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    ignore_missing(
                        api(&ctx, *dep_kind, &dep_ns)
                            .delete(dep.name.as_deref().unwrap_or_default(), &params)
                            .await
                            .map(|_| ()),
                    )?;
                }
            }
            if !dependents.is_empty() {
                return Ok(Action::requeue(WAIT));
            }
            remove_finalizer(&ctx, kind, &meta, FOREGROUND).await?;
        }
        return Ok(Action::await_change());
    }
    let refs = meta.owner_references.clone().unwrap_or_default();
    if refs.is_empty() {
        return Ok(Action::await_change());
    }
    let mut dangling = Vec::new();
    for owner in &refs {
        if owner_gone(&ctx, &namespace, owner).await? {
            dangling.push(owner.uid.clone());
        }
    }
    let name = meta.name.clone().unwrap_or_default();
    if dangling.len() == refs.len() {
        tracing::info!(?kind, %namespace, %name, "deleting an object whose owners are gone");
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: meta.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        ignore_missing(
            api(&ctx, kind, &namespace)
                .delete(&name, &params)
                .await
                .map(|_| ()),
        )?;
    } else if !dangling.is_empty() {
        let kept: Vec<&OwnerReference> =
            refs.iter().filter(|r| !dangling.contains(&r.uid)).collect();
        let patch = json!({"metadata": {"ownerReferences": kept, "resourceVersion": meta.resource_version}});
        ignore_missing(
            api(&ctx, kind, &namespace)
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
        )?;
    }
    Ok(Action::await_change())
}

/// Whether the owner an ownerReference names is gone; owners of kinds we do not serve are
/// assumed to be there.
async fn owner_gone(ctx: &Context, namespace: &str, owner: &OwnerReference) -> Result<bool, Error> {
    let Some(kind) = Kind::of(&owner.api_version, &owner.kind) else {
        return Ok(false);
    };
    if ctx
        .stores
        .get(kind, namespace, &owner.name)
        .is_some_and(|m| m.uid.as_deref() == Some(owner.uid.as_str()))
    {
        return Ok(false);
    }
    let live = api(ctx, kind, namespace).get_opt(&owner.name).await?;
    Ok(live.is_none_or(|o| o.metadata.uid.as_deref() != Some(owner.uid.as_str())))
}

async fn remove_finalizer(
    ctx: &Context,
    kind: Kind,
    meta: &ObjectMeta,
    finalizer: &str,
) -> Result<(), Error> {
    let kept: Vec<&String> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": meta.resource_version}});
    let namespace = meta.namespace.clone().unwrap_or_default();
    ignore_missing(
        api(ctx, kind, &namespace)
            .patch(
                meta.name.as_deref().unwrap_or_default(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await,
    )
}

/// A 404 means someone else finished the job.
fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(err) => Err(err.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::controller::Action;

    use super::Kind;

    #[tokio::test]
    async fn an_object_whose_collection_keeps_failing_is_retried_ever_later() {
        use kube::runtime::reflector::store;
        let ctx = super::Context {
            client: super::super::offline_client(),
            stores: super::Stores {
                pods: store().0,
                replicasets: store().0,
                deployments: store().0,
                slices: store().0,
                services: store().0,
            },
            failures: super::FailureBackoff::default(),
        };
        let meta = super::ObjectMeta {
            name: Some("web-1".into()),
            ..Default::default()
        };
        let retry = || super::retry_after_failure(Kind::Pod, &meta, &super::Error::StoreGone, &ctx);
        let waits: Vec<Action> = (0..3).map(|_| retry()).collect();
        let secs = |s| Action::requeue(Duration::from_secs(s));
        assert_eq!(waits, [secs(1), secs(2), secs(4)]);
    }

    #[test]
    fn owner_kinds_are_known_by_group_not_version() {
        assert_eq!(Kind::of("apps/v1", "ReplicaSet"), Some(Kind::ReplicaSet));
        assert_eq!(
            Kind::of("apps/v1beta2", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::of("v1", "Pod"), Some(Kind::Pod));
        assert_eq!(
            Kind::of("discovery.k8s.io/v1", "EndpointSlice"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(Kind::of("extensions/v1beta1", "ReplicaSet"), None);
        assert_eq!(Kind::of("batch/v1", "Job"), None);
    }
}
