//! The EndpointSlice and Endpoints controllers: which Pods back each Service, published for
//! kube-proxy, DNS and `kubectl describe svc`.
//!
//! One kube-rs controller on Services does both jobs of kube-controller-manager's
//! endpointslice and endpoints controllers, since both read the same Pods for the same
//! Service. It is kube-rs' `Controller` engine (`applier`: reconcile returning `Action`,
//! `error_policy`, per-object scheduling) fed by our own reflectors, because
//! `Controller::reconcile_on` is behind an unstable feature and `Controller::watches` would
//! watch every kind a second time next to the stores. Reflector stores hold Pods,
//! EndpointSlices, Endpoints and Nodes; their events are mapped back to the Services they
//! concern (a Pod to the Services selecting it *and* those whose slices still list it, so a
//! Pod that stopped matching is removed). A reconcile
//! computes the desired endpoints from the stores ([`desired`]), plans minimal slice writes
//! ([`plan`]) and writes only differences. Because the stores trail our own writes, a
//! [`tracker::Tracker`] holds back a Service's reconcile until its last writes are visible.
//! Services without a selector are left to their users. A deleted Service's slices and
//! Endpoints are removed by [`cleanup`], which does not rely on a garbage collector.

mod cleanup;
mod desired;
mod plan;
mod tracker;
mod trigger_time;
mod triggers;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{self, Action, applier};
use kube::runtime::reflector::{self, ObjectRef, Store};

use super::Settings;
use super::failures::FailureBackoff;
use tracker::{Kind, ServiceKey, Tracker};
use trigger_time::{TRIGGER_TIME_ANNOTATION, TriggerTimes};

/// At most this many endpoints go into one slice (kube-controller-manager's default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Label on Endpoints we manage, telling the EndpointSlice mirroring controller to skip them.
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Node label naming its zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// How soon a reconcile that found its stores stale tries again.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// What can fail in a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed (a 409 conflict means a store was behind: retried).
    #[error("cannot {action} {kind} {namespace}/{name}")]
    Api {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// A reflector stopped, so the stores can no longer be trusted.
    #[error("the {0} store's reflector is gone")]
    StoreGone(&'static str),
}

/// What every reconcile shares.
struct Context {
    client: kube::Client,
    pods: Store<Pod>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    nodes: Store<Node>,
    tracker: Arc<Tracker>,
    trigger_times: Arc<TriggerTimes>,
    failures: FailureBackoff<ServiceKey>,
}

impl Context {
    async fn ready(&self) -> Result<(), Error> {
        let gone = |what| move |_| Error::StoreGone(what);
        self.pods.wait_until_ready().await.map_err(gone("Pod"))?;
        self.slices
            .wait_until_ready()
            .await
            .map_err(gone("EndpointSlice"))?;
        self.endpoints
            .wait_until_ready()
            .await
            .map_err(gone("Endpoints"))?;
        self.nodes.wait_until_ready().await.map_err(gone("Node"))
    }

    fn zone(&self, node: &str) -> Option<String> {
        let node = self.nodes.get(&ObjectRef::new(node))?;
        node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
    }

    /// The resourceVersion the store holds for an object we may have written.
    fn seen(&self, kind: Kind, namespace: &str, name: &str) -> Option<String> {
        match kind {
            Kind::Slice => self
                .slices
                .get(&ObjectRef::new(name).within(namespace))
                .map(|s| s.metadata.resource_version.clone().unwrap_or_default()),
            Kind::Endpoints => self
                .endpoints
                .get(&ObjectRef::new(name).within(namespace))
                .map(|e| e.metadata.resource_version.clone().unwrap_or_default()),
        }
    }
}

fn service_key(service: &Service) -> ServiceKey {
    (
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// The IPv4 slices this controller manages for a Service.
fn managed_slices(
    slices: &Store<EndpointSlice>,
    (ns, name): &ServiceKey,
) -> Vec<Arc<EndpointSlice>> {
    slices.state_filter(|s| {
        let labels = s.metadata.labels.as_ref();
        s.metadata.namespace.as_ref() == Some(ns)
            && s.address_type == "IPv4"
            && labels.and_then(|l| l.get(plan::SERVICE_NAME_LABEL)) == Some(name)
            && labels
                .and_then(|l| l.get(plan::MANAGED_BY_LABEL))
                .map(String::as_str)
                == Some(plan::MANAGED_BY)
    })
}

/// Runs the controller until dropped.
pub async fn run(client: kube::Client, _settings: Arc<Settings>) {
    let (services, service_writer) = reflector::store::<Service>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let (endpoints, endpoints_writer) = reflector::store::<Endpoints>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let tracker = Arc::new(Tracker::default());
    let trigger_times = Arc::new(TriggerTimes::default());
    let (gone_tx, gone_rx) = tokio::sync::mpsc::unbounded_channel();
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods,
        slices: slices.clone(),
        endpoints: endpoints.clone(),
        nodes,
        tracker: Arc::clone(&tracker),
        trigger_times: Arc::clone(&trigger_times),
        failures: FailureBackoff::default(),
    });
    let pod_triggers = triggers::watch(client.clone(), pod_writer, services.clone(), {
        let (services, slices) = (services.clone(), slices.clone());
        move |pod: &Pod| triggers::for_pod(pod, &services, &slices)
    });
    let slice_triggers = triggers::watch(
        client.clone(),
        slice_writer,
        services.clone(),
        triggers::for_slice,
    );
    let endpoints_triggers = triggers::watch(
        client.clone(),
        endpoints_writer,
        services.clone(),
        triggers::for_endpoints,
    );
    let node_triggers = triggers::watch(client.clone(), node_writer, services.clone(), {
        let slices = slices.clone();
        move |node: &Node| triggers::for_node(node, &slices)
    });
    let queue = stream::select_all([
        triggers::services(client.clone(), service_writer, gone_tx).boxed(),
        pod_triggers.boxed(),
        slice_triggers.boxed(),
        endpoints_triggers.boxed(),
        node_triggers.boxed(),
    ])
    .map(Ok::<_, Infallible>);
    let controller = applier(
        |service, ctx| Box::pin(reconcile(service, ctx)),
        error_policy,
        ctx,
        services,
        queue,
        controller::Config::default(),
    )
    .for_each(|result| {
        if let Err(err) = result {
            tracing::debug!(error = %err, "endpointslice controller");
        }
        std::future::ready(())
    });
    tokio::select! {
        () = controller => tracing::error!("endpointslice controller stream ended"),
        () = cleanup::run(client, gone_rx, slices, endpoints, tracker, trigger_times) => {
            tracing::error!("endpointslice cleanup ended");
        }
    }
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.ready().await?;
    let key = service_key(&service);
    let action = sync(&service, &key, &ctx).await?;
    ctx.failures.succeeded(&key);
    Ok(action)
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's applier calls"
)]
fn error_policy(service: Arc<Service>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = service_key(&service);
    let cause = std::error::Error::source(error).map(ToString::to_string);
    tracing::warn!(service = %format!("{}/{}", key.0, key.1), %error, ?cause, "endpoints sync failed");
    Action::requeue(ctx.failures.failed(key))
}

/// Brings one Service's slices and Endpoints to what its Pods say.
async fn sync(service: &Service, key: &ServiceKey, ctx: &Context) -> Result<Action, Error> {
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if ctx
        .tracker
        .is_stale(key, |kind, name| ctx.seen(kind, &key.0, name))
    {
        return Ok(Action::requeue(STALE_RETRY));
    }
    let existing = managed_slices(&ctx.slices, key);
    let slices_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &key.0);
    if desired::selector(service).is_none() {
        // Slices we made before the selector went away; users manage this Service's now.
        for slice in &existing {
            delete_slice(
                &slices_api,
                ctx,
                key,
                slice.metadata.name.as_deref().unwrap_or_default(),
            )
            .await?;
        }
        return Ok(Action::await_change());
    }
    let pods = ctx.pods.state_filter(|p| desired::selects(service, p));
    let pods: Vec<&Pod> = pods.iter().map(AsRef::as_ref).collect();
    let groups = desired::slice_groups(service, &pods, |node| ctx.zone(node));
    let existing: Vec<&EndpointSlice> = existing.iter().map(AsRef::as_ref).collect();
    let plan = plan::plan(service, &existing, &groups, MAX_ENDPOINTS_PER_SLICE);
    let trigger = ctx.trigger_times.changed_since_last(key, service, &pods);
    // Without a new trigger time the old one goes: a proxy would count it a second time.
    let stamped = |slice: &EndpointSlice| {
        let mut slice = slice.clone();
        let annotations = slice.metadata.annotations.get_or_insert_default();
        match trigger {
            Some(time) => annotations.insert(TRIGGER_TIME_ANNOTATION.into(), time.to_string()),
            None => annotations.remove(TRIGGER_TIME_ANNOTATION),
        };
        if annotations.is_empty() {
            slice.metadata.annotations = None;
        }
        slice
    };
    if !plan.is_empty() {
        tracing::debug!(service = %key.1, create = plan.create.len(), update = plan.update.len(),
            delete = plan.delete.len(), "writing endpoint slices");
    }
    // Creates and updates before deletes, so readers never see endpoints vanish in between.
    for slice in &plan.create {
        let created = slices_api
            .create(&PostParams::default(), &stamped(slice))
            .await
            .map_err(api_error("create", "EndpointSlice", &key.0, &key.1))?;
        let name = created.metadata.name.as_deref().unwrap_or_default();
        ctx.tracker.wrote(
            key,
            Kind::Slice,
            name,
            created.metadata.resource_version.as_deref(),
        );
    }
    for slice in &plan.update {
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        let updated = slices_api
            .replace(name, &PostParams::default(), &stamped(slice))
            .await
            .map_err(api_error("update", "EndpointSlice", &key.0, name))?;
        ctx.tracker.wrote(
            key,
            Kind::Slice,
            name,
            updated.metadata.resource_version.as_deref(),
        );
    }
    for name in &plan.delete {
        delete_slice(&slices_api, ctx, key, name).await?;
    }
    sync_endpoints(service, key, &pods, ctx).await?;
    Ok(Action::await_change())
}

fn api_error<'a>(
    action: &'static str,
    kind: &'static str,
    namespace: &'a str,
    name: &'a str,
) -> impl FnOnce(kube::Error) -> Error + 'a {
    move |source| Error::Api {
        action,
        kind,
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        source,
    }
}

/// Whether an API error is a 404: the object is already gone.
fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

async fn delete_slice(
    api: &Api<EndpointSlice>,
    ctx: &Context,
    key: &ServiceKey,
    name: &str,
) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(err) if is_not_found(&err) => {}
        Err(err) => return Err(api_error("delete", "EndpointSlice", &key.0, name)(err)),
    }
    ctx.tracker.deleted(key, Kind::Slice, name);
    Ok(())
}

/// The labels of a Service's Endpoints: the Service's, headless, and skip-mirror.
fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(plan::HEADLESS_LABEL);
    let ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
    if matches!(ip, None | Some("" | "None")) {
        labels.insert(plan::HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(SKIP_MIRROR_LABEL.into(), "true".into());
    labels
}

/// Mirrors the Service's Pods into its v1 Endpoints, writing only on a difference.
async fn sync_endpoints(
    service: &Service,
    key: &ServiceKey,
    pods: &[&Pod],
    ctx: &Context,
) -> Result<(), Error> {
    let subsets = desired::subsets(service, pods);
    let labels = endpoints_labels(service);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &key.0);
    let current = ctx.endpoints.get(&ObjectRef::new(&key.1).within(&key.0));
    let written = match current {
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                subsets: Some(subsets).filter(|s| !s.is_empty()),
            };
            api.create(&PostParams::default(), &endpoints)
                .await
                .map_err(api_error("create", "Endpoints", &key.0, &key.1))?
        }
        Some(current) => {
            let same_subsets = current.subsets.as_deref().unwrap_or_default() == subsets.as_slice();
            if same_subsets && current.metadata.labels.as_ref() == Some(&labels) {
                return Ok(());
            }
            let mut endpoints = (*current).clone();
            endpoints.metadata.labels = Some(labels);
            endpoints.metadata.managed_fields = None;
            endpoints.subsets = Some(subsets).filter(|s| !s.is_empty());
            api.replace(&key.1, &PostParams::default(), &endpoints)
                .await
                .map_err(api_error("update", "Endpoints", &key.0, &key.1))?
        }
    };
    ctx.tracker.wrote(
        key,
        Kind::Endpoints,
        &key.1,
        written.metadata.resource_version.as_deref(),
    );
    Ok(())
}
