//! Which EndpointSlices to create, update and delete so a Service's slices hold the desired
//! endpoints (pure, no API calls).
//!
//! Like Kubernetes' slice reconciler it keeps churn low: an endpoint stays in the slice it is
//! already in, a slice is rewritten only if its endpoints, ports, labels or owner changed, new
//! endpoints first fill slices that are rewritten anyway, then slices with room, and only then
//! go into new slices of at most `max` endpoints. A Service with nothing to publish keeps one
//! empty placeholder slice, so consumers can tell "no endpoints" from "not yet synced".

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::desired::{self, Group, PortKey};

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`], the one kube-controller-manager uses.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label marking a headless Service's slices and Endpoints.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The writes that bring a Service's slices to the desired state.
#[derive(Debug, Default)]
pub struct Plan {
    /// New slices (named by `generateName`).
    pub create: Vec<EndpointSlice>,
    /// Existing slices with new contents (their resourceVersion kept for optimistic locking).
    pub update: Vec<EndpointSlice>,
    /// Names of slices no longer needed.
    pub delete: Vec<String>,
}

impl Plan {
    /// Whether nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// The labels of a Service's slices: the Service's own (but not ours), headless, name, manager.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = service
        .metadata
        .labels
        .iter()
        .flatten()
        .filter(|(k, _)| {
            ![SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if desired::is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// The controller reference from a slice to its Service.
pub fn owner_reference(service: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: service.metadata.name.clone().unwrap_or_default(),
        uid: service.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// `getEndpointSlicePrefix`: `<svc>-`.
fn generate_name(service: &Service) -> String {
    format!("{}-", service.metadata.name.as_deref().unwrap_or_default())
}

fn new_slice(service: &Service, ports: &Group, endpoints: Vec<Endpoint>) -> EndpointSlice {
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(service)),
            namespace: service.metadata.namespace.clone(),
            labels: Some(slice_labels(service)),
            owner_references: Some(vec![owner_reference(service)]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(ports.ports.clone()).filter(|p| !p.is_empty()),
    }
}

/// Identifies an endpoint across rewrites: its address and the Pod it stands for.
fn endpoint_key(endpoint: &Endpoint) -> (Option<String>, Option<String>) {
    (
        endpoint.addresses.first().cloned(),
        endpoint.target_ref.as_ref().and_then(|r| r.name.clone()),
    )
}

/// A slice being worked on: the existing one and the endpoints it will hold.
struct Draft<'a> {
    existing: &'a EndpointSlice,
    endpoints: Vec<Endpoint>,
    changed: bool,
}

fn ports_of(slice: &EndpointSlice) -> PortKey {
    desired::key_of_slice_ports(slice.ports.as_deref().unwrap_or_default())
}

/// Whether the slice's labels or owner differ from what the Service asks for.
fn meta_differs(service: &Service, slice: &EndpointSlice) -> bool {
    slice.metadata.labels.as_ref() != Some(&slice_labels(service))
        || slice.metadata.owner_references.as_deref() != Some(&[owner_reference(service)][..])
}

fn rewritten(service: &Service, draft: Draft<'_>, group: &Group) -> EndpointSlice {
    let mut slice = draft.existing.clone();
    slice.metadata.labels = Some(slice_labels(service));
    slice.metadata.owner_references = Some(vec![owner_reference(service)]);
    slice.metadata.managed_fields = None;
    slice.endpoints = draft.endpoints;
    slice.ports = Some(group.ports.clone()).filter(|p| !p.is_empty());
    slice
}

/// Plans the writes taking `existing` (the Service's managed IPv4 slices) to `groups`.
pub fn plan(
    service: &Service,
    existing: &[&EndpointSlice],
    groups: &BTreeMap<PortKey, Group>,
    max: usize,
) -> Plan {
    let mut sorted = existing.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut out = Plan::default();
    if groups.values().all(|g| g.endpoints.is_empty()) {
        placeholder(service, &sorted, &mut out);
        return out;
    }
    let mut by_key: HashMap<PortKey, Vec<&EndpointSlice>> = HashMap::new();
    for slice in sorted {
        let key = ports_of(slice);
        if groups.get(&key).is_some_and(|g| !g.endpoints.is_empty()) {
            by_key.entry(key).or_default().push(slice);
        } else {
            out.delete.extend(slice.metadata.name.clone());
        }
    }
    for (key, group) in groups.iter().filter(|(_, g)| !g.endpoints.is_empty()) {
        plan_group(
            service,
            by_key.remove(key).unwrap_or_default(),
            group,
            max,
            &mut out,
        );
    }
    out
}

/// Plans one port list's slices.
fn plan_group(
    service: &Service,
    existing: Vec<&EndpointSlice>,
    group: &Group,
    max: usize,
    out: &mut Plan,
) {
    let mut wanted: HashMap<_, &Endpoint> = group
        .endpoints
        .iter()
        .map(|e| (endpoint_key(e), e))
        .collect();
    let mut drafts: Vec<Draft<'_>> = existing
        .into_iter()
        .map(|slice| {
            let mut draft = Draft {
                existing: slice,
                endpoints: Vec::new(),
                changed: meta_differs(service, slice),
            };
            for current in &slice.endpoints {
                match wanted.remove(&endpoint_key(current)) {
                    Some(want) => {
                        draft.changed |= want != current;
                        draft.endpoints.push(want.clone());
                    }
                    None => draft.changed = true,
                }
            }
            draft
        })
        .collect();
    let mut fresh = group
        .endpoints
        .iter()
        .filter(|e| wanted.contains_key(&endpoint_key(e)))
        .cloned()
        .peekable();
    // Slices rewritten anyway take new endpoints first, then any slice with room.
    for pass_changed in [true, false] {
        for draft in drafts.iter_mut().filter(|d| d.changed == pass_changed) {
            while draft.endpoints.len() < max {
                let Some(endpoint) = fresh.next() else { break };
                draft.endpoints.push(endpoint);
                draft.changed = true;
            }
        }
    }
    for draft in drafts {
        if draft.endpoints.is_empty() {
            out.delete.extend(draft.existing.metadata.name.clone());
        } else if draft.changed {
            out.update.push(rewritten(service, draft, group));
        }
    }
    while fresh.peek().is_some() {
        let chunk: Vec<Endpoint> = fresh.by_ref().take(max).collect();
        out.create.push(new_slice(service, group, chunk));
    }
}

/// Nothing to publish: keep (or make) exactly one empty slice without ports.
fn placeholder(service: &Service, sorted: &[&EndpointSlice], out: &mut Plan) {
    let empty = Group::default();
    let Some((keep, rest)) = sorted.split_first() else {
        out.create.push(new_slice(service, &empty, Vec::new()));
        return;
    };
    let is_placeholder = keep.endpoints.is_empty() && ports_of(keep).is_empty();
    if !is_placeholder || meta_differs(service, keep) {
        let draft = Draft {
            existing: keep,
            endpoints: Vec::new(),
            changed: true,
        };
        out.update.push(rewritten(service, draft, &empty));
    }
    out.delete
        .extend(rest.iter().filter_map(|s| s.metadata.name.clone()));
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
