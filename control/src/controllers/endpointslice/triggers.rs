//! Which Services an event about a Pod, EndpointSlice, Endpoints or Node concerns.
//!
//! Each watched kind runs through a reflector (filling the store reconciles read) and is then
//! mapped to Service references for `Controller::reconcile_on`. The mapping sees only the new
//! object, so a Pod is also mapped to the Services whose slices still list it: that is how a
//! Pod whose labels stopped matching, or that is gone, leaves its old Service. After a
//! (re)list every Service is reconciled, since deletions during a watch gap send no event.
//! Service deletions go to [`super::cleanup`], as a deleted Service is never reconciled.

use std::fmt::Debug;

use futures::{Stream, StreamExt, stream};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;

use tokio::sync::mpsc::UnboundedSender;

use super::cleanup::Gone;
use super::{ZONE_LABEL, desired, plan, service_key};

/// Watches Services into `writer`'s store: each one changed is to be reconciled, each one
/// deleted is sent to `gone`, and a finished (re)list asks for a sweep of leftovers.
pub fn services(
    client: kube::Client,
    writer: reflector::store::Writer<Service>,
    gone: UnboundedSender<Gone>,
) -> impl Stream<Item = ObjectRef<Service>> + Send + 'static {
    let api: Api<Service> = Api::all(client);
    reflector::reflector(
        writer,
        watcher::watcher(api, watcher::Config::default()).default_backoff(),
    )
    .filter_map(move |event| {
        let reference = match event {
            Ok(Event::Apply(s) | Event::InitApply(s)) => Some(ObjectRef::from_obj(&s)),
            Ok(Event::Delete(s)) => {
                let _ = gone.send(Gone::Service(service_key(&s), s.metadata.uid.clone()));
                None
            }
            Ok(Event::InitDone) => {
                let _ = gone.send(Gone::Sweep);
                None
            }
            Ok(Event::Init) => None,
            Err(err) => {
                tracing::warn!(error = %err, "endpointslice controller: Service watch failed");
                None
            }
        };
        std::future::ready(reference)
    })
}

/// Watches every `K` into `writer`'s store and maps each event through `map`.
pub fn watch<K, F>(
    client: kube::Client,
    writer: reflector::store::Writer<K>,
    services: Store<Service>,
    map: F,
) -> impl Stream<Item = ObjectRef<Service>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    F: Fn(&K) -> Vec<ObjectRef<Service>> + Send + 'static,
{
    let api: Api<K> = Api::all(client);
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    reflector::reflector(writer, events).flat_map(move |event| {
        let refs = match event {
            Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => map(&o),
            Ok(Event::InitDone) => services
                .state()
                .iter()
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect(),
            Ok(Event::Init) => Vec::new(),
            Err(err) => {
                let kind = K::kind(&());
                tracing::warn!(%kind, error = %err, "endpointslice controller watch failed");
                Vec::new()
            }
        };
        stream::iter(refs)
    })
}

/// The Service a managed slice belongs to, from its labels.
fn owner_of(slice: &EndpointSlice) -> Option<ObjectRef<Service>> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(plan::MANAGED_BY_LABEL).map(String::as_str) != Some(plan::MANAGED_BY) {
        return None;
    }
    let name = labels.get(plan::SERVICE_NAME_LABEL)?;
    Some(ObjectRef::new(name).within(slice.metadata.namespace.as_deref()?))
}

/// The Services selecting `pod`, and those whose slices still list it.
pub fn for_pod(
    pod: &Pod,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Vec<ObjectRef<Service>> {
    let mut refs: Vec<ObjectRef<Service>> = services
        .state()
        .iter()
        .filter(|s| desired::selects(s, pod))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect();
    let lists_pod = |slice: &EndpointSlice| {
        slice.metadata.namespace == pod.metadata.namespace
            && slice.endpoints.iter().any(|e| {
                e.target_ref
                    .as_ref()
                    .is_some_and(|r| r.name == pod.metadata.name)
            })
    };
    refs.extend(
        slices
            .state()
            .iter()
            .filter(|s| lists_pod(s))
            .filter_map(|s| owner_of(s)),
    );
    refs.sort_by_key(ToString::to_string);
    refs.dedup();
    refs
}

/// The Service a managed slice belongs to (someone may have changed or deleted it).
pub fn for_slice(slice: &EndpointSlice) -> Vec<ObjectRef<Service>> {
    owner_of(slice).into_iter().collect()
}

/// The Service an Endpoints object mirrors (same namespace and name).
pub fn for_endpoints(endpoints: &Endpoints) -> Vec<ObjectRef<Service>> {
    let (Some(name), Some(ns)) = (&endpoints.metadata.name, &endpoints.metadata.namespace) else {
        return Vec::new();
    };
    vec![ObjectRef::new(name).within(ns)]
}

/// The Services with endpoints on `node` whose zone is not the node's zone (any more).
pub fn for_node(node: &Node, slices: &Store<EndpointSlice>) -> Vec<ObjectRef<Service>> {
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL));
    let outdated = |slice: &EndpointSlice| {
        slice
            .endpoints
            .iter()
            .any(|e| e.node_name == node.metadata.name && e.zone.as_ref() != zone)
    };
    let mut refs: Vec<ObjectRef<Service>> = slices
        .state()
        .iter()
        .filter(|s| outdated(s))
        .filter_map(|s| owner_of(s))
        .collect();
    refs.sort_by_key(ToString::to_string);
    refs.dedup();
    refs
}
