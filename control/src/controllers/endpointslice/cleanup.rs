//! Removes a deleted Service's slices and Endpoints.
//!
//! The `Controller` never reconciles an object that left its store, and Kubernetes leaves the
//! slices to the garbage collector (they carry an ownerReference). Not to depend on one, the
//! Service watch reports deletions here: a deletion removes the slices owned by that Service's
//! uid and its Endpoints (if we made them); after every (re)list, slices and Endpoints whose
//! Service is gone — deletions missed while not watching — are checked against the API and
//! removed.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Endpoints, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams};
use kube::runtime::reflector::Store;
use tokio::sync::mpsc::UnboundedReceiver;

use super::tracker::{ServiceKey, Tracker};
use super::trigger_time::TriggerTimes;
use super::{SKIP_MIRROR_LABEL, is_not_found, plan};

/// What the Service watch reports for cleaning up.
#[derive(Debug)]
pub enum Gone {
    /// This Service (of this uid) was deleted.
    Service(ServiceKey, Option<String>),
    /// A (re)list finished: look for leftovers of Services deleted meanwhile.
    Sweep,
}

/// Cleans up after every reported deletion, until the sender is dropped.
pub async fn run(
    client: kube::Client,
    mut gone: UnboundedReceiver<Gone>,
    slices: Store<EndpointSlice>,
    endpoints: Store<Endpoints>,
    tracker: Arc<Tracker>,
    trigger_times: Arc<TriggerTimes>,
) {
    while let Some(event) = gone.recv().await {
        match event {
            Gone::Service(key, uid) => {
                tracker.forget(&key);
                trigger_times.forget(&key);
                remove(&client, &slices, &endpoints, &key, uid.as_deref()).await;
            }
            Gone::Sweep => sweep(&client, &slices, &endpoints).await,
        }
    }
}

/// Whether a slice is ours and belongs to the Service `key` (of `uid`, if given).
fn belongs(slice: &EndpointSlice, (ns, name): &ServiceKey, uid: Option<&str>) -> bool {
    let labels = slice.metadata.labels.as_ref();
    let owned_by_uid = match uid {
        None => true,
        Some(uid) => slice
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| o.uid == uid),
    };
    slice.metadata.namespace.as_ref() == Some(ns)
        && labels.and_then(|l| l.get(plan::SERVICE_NAME_LABEL)) == Some(name)
        && labels
            .and_then(|l| l.get(plan::MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(plan::MANAGED_BY)
        && owned_by_uid
}

/// Deletes the slices and Endpoints of a Service that is gone.
async fn remove(
    client: &kube::Client,
    slices: &Store<EndpointSlice>,
    endpoints: &Store<Endpoints>,
    key: &ServiceKey,
    uid: Option<&str>,
) {
    if slices.wait_until_ready().await.is_err() || endpoints.wait_until_ready().await.is_err() {
        return;
    }
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &key.0);
    for slice in slices.state_filter(|s| belongs(s, key, uid)) {
        let name = slice.metadata.name.as_deref().unwrap_or_default();
        match slices_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::debug!(service = %key.1, slice = %name, "deleted a gone Service's slice")
            }
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                tracing::warn!(slice = %name, error = %err, "cannot delete a gone Service's slice")
            }
        }
    }
    let ours = endpoints
        .get(&kube::runtime::reflector::ObjectRef::new(&key.1).within(&key.0))
        .is_some_and(|e| {
            e.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(SKIP_MIRROR_LABEL))
        });
    if ours {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &key.0);
        match api.delete(&key.1, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) => {
                let service = &key.1;
                tracing::warn!(%service, error = %err, "cannot delete a gone Service's Endpoints")
            }
        }
    }
}

/// Removes leftovers of Services deleted while nobody watched.
async fn sweep(client: &kube::Client, slices: &Store<EndpointSlice>, endpoints: &Store<Endpoints>) {
    if slices.wait_until_ready().await.is_err() || endpoints.wait_until_ready().await.is_err() {
        return;
    }
    let mut candidates: BTreeSet<ServiceKey> = BTreeSet::new();
    for slice in slices.state() {
        let labels = slice.metadata.labels.as_ref();
        if labels
            .and_then(|l| l.get(plan::MANAGED_BY_LABEL))
            .map(String::as_str)
            == Some(plan::MANAGED_BY)
            && let (Some(ns), Some(name)) = (
                &slice.metadata.namespace,
                labels.and_then(|l| l.get(plan::SERVICE_NAME_LABEL)),
            )
        {
            candidates.insert((ns.clone(), name.clone()));
        }
    }
    for ep in endpoints.state() {
        if ep
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SKIP_MIRROR_LABEL))
            && let (Some(ns), Some(name)) = (&ep.metadata.namespace, &ep.metadata.name)
        {
            candidates.insert((ns.clone(), name.clone()));
        }
    }
    for key in candidates {
        let api: Api<Service> = Api::namespaced(client.clone(), &key.0);
        match api.get_opt(&key.1).await {
            Ok(None) => remove(client, slices, endpoints, &key, None).await,
            Ok(Some(_)) => {}
            Err(err) => {
                tracing::warn!(service = %key.1, error = %err, "cannot check a Service exists")
            }
        }
    }
}
