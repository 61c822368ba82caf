//! EndpointSlices: the endpoints behind each Service port, merged across a Service's slices.
//!
//! A Service's endpoints arrive in any number of slices, each of which may change alone, so the
//! tracker keeps every slice per Service and re-merges that Service's endpoints when one of its
//! slices changes; the `{previous, current}` comparison then happens on the merged result, where
//! it means something. The same address may sit in two slices for a moment while the controller
//! moves it; the merge keeps one copy and prefers the ready one. The
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation rides along so the runner can
//! report network programming latency the way kube-proxy does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::SystemTime;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{
    NamespacedName, Protocol, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, ServicePortName,
};

/// The annotation the EndpointSlice controller stamps with the time of the triggering change.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One endpoint of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Its address (the first of the endpoint's addresses, as kube-proxy takes it).
    pub ip: Ipv4Addr,
    /// The target port.
    pub port: u16,
    /// `conditions.ready` (absent means ready).
    pub ready: bool,
    /// `conditions.serving` (absent means "as ready").
    pub serving: bool,
    /// `conditions.terminating` (absent means not).
    pub terminating: bool,
    /// The Node it runs on, when the slice says.
    pub node_name: Option<String>,
    /// `hints.forZones`; `None` when the endpoint has no hints.
    pub zone_hints: Option<BTreeSet<String>>,
}

type Merged = BTreeMap<ServicePortName, Vec<Endpoint>>;
type Slices = BTreeMap<String, Merged>;

/// Records EndpointSlice events between syncs.
#[derive(Debug, Default)]
pub struct EndpointSliceTracker {
    slices: BTreeMap<NamespacedName, Slices>,
    /// Services with a change, and their merged endpoints at the last fold.
    pending: BTreeMap<NamespacedName, Merged>,
    trigger_times: Vec<SystemTime>,
}

/// What folding the tracker into the map changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointsUpdate {
    /// Services whose endpoints changed.
    pub changed: BTreeSet<NamespacedName>,
    /// Trigger times of the changes folded in (for network programming latency).
    pub trigger_times: Vec<SystemTime>,
}

fn slice_key(slice: &EndpointSlice) -> Option<(NamespacedName, String)> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.contains_key(SERVICE_PROXY_NAME_LABEL) {
        return None;
    }
    let service = labels.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some((
        NamespacedName::new(namespace, service),
        slice.metadata.name.clone()?,
    ))
}

fn slice_endpoints(service: &NamespacedName, slice: &EndpointSlice) -> Merged {
    let mut merged = Merged::new();
    if slice.address_type != "IPv4" {
        return merged;
    }
    for port in slice.ports.iter().flatten() {
        let (Some(protocol), Some(number)) = (
            Protocol::from_api(port.protocol.as_deref()),
            port.port.and_then(|p| u16::try_from(p).ok()),
        ) else {
            continue;
        };
        let key = ServicePortName {
            service: service.clone(),
            port: port.name.clone().unwrap_or_default(),
            protocol,
        };
        let endpoints = merged.entry(key).or_default();
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse().ok()) else {
                continue;
            };
            let conditions = ep.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let zone_hints = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|zones| {
                    zones
                        .iter()
                        .map(|z| z.name.clone())
                        .collect::<BTreeSet<_>>()
                });
            endpoints.push(Endpoint {
                ip,
                port: number,
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
                node_name: ep.node_name.clone(),
                zone_hints,
            });
        }
    }
    merged
}

fn trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let value = slice
        .metadata
        .annotations
        .as_ref()?
        .get(TRIGGER_TIME_ANNOTATION)?;
    let ts: k8s_openapi::jiff::Timestamp = value.parse().ok()?;
    Some(SystemTime::from(ts))
}

/// Merges a Service's slices: one entry per address and port, ready copies first, sorted.
fn merge(slices: &Slices) -> Merged {
    let mut merged = Merged::new();
    for per_slice in slices.values() {
        for (key, endpoints) in per_slice {
            merged
                .entry(key.clone())
                .or_default()
                .extend(endpoints.iter().cloned());
        }
    }
    for endpoints in merged.values_mut() {
        endpoints.sort_by_key(|e| (e.ip, e.port, !e.ready));
        endpoints.dedup_by(|later, first| later.ip == first.ip && later.port == first.port);
    }
    merged.retain(|_, endpoints| !endpoints.is_empty());
    merged
}

impl EndpointSliceTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a created or updated slice; returns whether anything changed.
    pub fn update(&mut self, slice: &EndpointSlice) -> bool {
        let Some((service, name)) = slice_key(slice) else {
            return false;
        };
        let endpoints = slice_endpoints(&service, slice);
        let changed = self.record(&service, |slices| {
            slices.insert(name, endpoints);
        });
        if changed {
            self.trigger_times.extend(trigger_time(slice));
        }
        changed
    }

    /// Records a deleted slice.
    pub fn delete(&mut self, slice: &EndpointSlice) -> bool {
        let Some((service, name)) = slice_key(slice) else {
            return false;
        };
        self.record(&service, |slices| {
            slices.remove(&name);
        })
    }

    /// Records a complete list: these slices, and no others, exist.
    pub fn relist(&mut self, slices: &[EndpointSlice]) -> bool {
        let mut changed = false;
        let mut seen = BTreeSet::new();
        for slice in slices {
            seen.extend(slice_key(slice));
            changed |= self.update(slice);
        }
        let gone: Vec<(NamespacedName, String)> = self
            .slices
            .iter()
            .flat_map(|(svc, slices)| slices.keys().map(move |n| (svc.clone(), n.clone())))
            .filter(|key| !seen.contains(key))
            .collect();
        for (service, name) in gone {
            changed |= self.record(&service, |slices| {
                slices.remove(&name);
            });
        }
        changed
    }

    /// How many Services have a change waiting.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn record(&mut self, service: &NamespacedName, edit: impl FnOnce(&mut Slices)) -> bool {
        let slices = self.slices.entry(service.clone()).or_default();
        let before = merge(slices);
        edit(slices);
        let after = merge(slices);
        if slices.is_empty() {
            self.slices.remove(service);
        }
        if before == after {
            return false;
        }
        match self.pending.get(service) {
            // Back where the last fold left it: nothing to do after all.
            Some(previous) if *previous == after => {
                self.pending.remove(service);
            }
            Some(_) => {}
            None => {
                self.pending.insert(service.clone(), before);
            }
        }
        true
    }
}

/// The endpoints of every Service port, as far as the slices say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointsMap {
    endpoints: BTreeMap<ServicePortName, Vec<Endpoint>>,
}

impl EndpointsMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds the tracker's pending changes in.
    pub fn apply(&mut self, tracker: &mut EndpointSliceTracker) -> EndpointsUpdate {
        let mut update = EndpointsUpdate {
            trigger_times: std::mem::take(&mut tracker.trigger_times),
            ..EndpointsUpdate::default()
        };
        for (service, previous) in std::mem::take(&mut tracker.pending) {
            for key in previous.keys() {
                self.endpoints.remove(key);
            }
            if let Some(slices) = tracker.slices.get(&service) {
                self.endpoints.extend(merge(slices));
            }
            update.changed.insert(service);
        }
        update
    }

    /// The endpoints of `key` (empty when there are none).
    pub fn get(&self, key: &ServicePortName) -> &[Endpoint] {
        self.endpoints.get(key).map_or(&[], Vec::as_slice)
    }

    /// Every Service port with endpoints.
    pub fn iter(&self) -> impl Iterator<Item = (&ServicePortName, &Vec<Endpoint>)> {
        self.endpoints.iter()
    }
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
