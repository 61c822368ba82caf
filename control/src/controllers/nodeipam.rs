//! Node IPAM: every Node gets its own block of the cluster's pod range as `spec.podCIDR`.
//!
//! kube-controller-manager's range allocator, as a watcher over Nodes. The set of used blocks
//! lives only in memory, so it is rebuilt from the Nodes themselves whenever the watch (re)lists:
//! every podCIDR already written is marked used *before* anything is handed out, which keeps
//! allocations stable across restarts and leader changes. A Node that brought its own podCIDR
//! keeps it, even outside the range or overlapping another Node's (that is only logged — the
//! apiserver forbids changing a podCIDR once set). A deleted Node's block is released.
//! When the range is full the Node gets a `CIDRNotAvailable` Event and waits for a release.

mod cidrset;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::json;
use skiff_common::relist::{Change, changes};
use tokio::time::Instant;

pub use cidrset::{CidrError, CidrSet};

use super::{Settings, backoff};

/// Why a Node could not be given its block.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Writing `spec.podCIDR` failed.
    #[error("cannot set the podCIDR of node {node}")]
    Patch {
        node: String,
        #[source]
        source: kube::Error,
    },
    /// Recording the `CIDRNotAvailable` Event failed.
    #[error("cannot record an event for node {node}")]
    Event {
        node: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the controller until dropped.
pub async fn run(client: kube::Client, settings: Arc<Settings>) {
    let set = match CidrSet::new(settings.cluster_cidr, settings.node_cidr_prefix) {
        Ok(set) => set,
        Err(err) => {
            tracing::error!(error = %err, "node IPAM disabled");
            return std::future::pending().await;
        }
    };
    let nodes: Api<Node> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client, "default");
    let mut stream = std::pin::pin!(changes(
        watcher(nodes.clone(), watcher::Config::default()).default_backoff()
    ));
    let mut allocator = Allocator::new(set);
    let mut retry: Option<Instant> = None;
    loop {
        let wake = retry.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(change)) => allocator.observe(change),
                Some(Err(err)) => tracing::warn!(error = %err, "node watch failed"),
                None => return,
            },
            () = tokio::time::sleep_until(wake), if retry.is_some() => {}
        }
        if allocator.synced {
            retry = allocator.assign_pending(&nodes, &events).await;
        }
    }
}

/// What the controller knows: used blocks, who owns them, who waits for one.
struct Allocator {
    empty: CidrSet,
    set: CidrSet,
    /// Nodes whose podCIDR is counted in `set`.
    owners: HashMap<String, Ipv4Net>,
    /// Nodes whose in-range podCIDR overlaps an owner's; they take over when it is released.
    squatters: BTreeMap<String, Ipv4Net>,
    /// Nodes without a podCIDR.
    pending: BTreeMap<String, Node>,
    /// Pending Nodes already told that the range is full.
    announced: HashSet<String>,
    /// False while the watch lists: the used set is not complete, so nothing is handed out.
    synced: bool,
    failures: u32,
}

impl Allocator {
    fn new(set: CidrSet) -> Self {
        Allocator {
            empty: set.clone(),
            set,
            owners: HashMap::new(),
            squatters: BTreeMap::new(),
            pending: BTreeMap::new(),
            announced: HashSet::new(),
            synced: false,
            failures: 0,
        }
    }

    fn observe(&mut self, change: Change<Node>) {
        match change {
            // The used set may be stale until the list is complete: hand nothing out meanwhile.
            Change::Listing => self.synced = false,
            Change::Relisted(nodes) => self.rebuild(nodes),
            Change::Applied(node) => self.apply(node),
            Change::Deleted(node) => self.forget(&node.name_any()),
        }
    }

    /// Starts over from a complete list: existing podCIDRs first, then who needs one.
    fn rebuild(&mut self, listed: Vec<Node>) {
        self.set = self.empty.clone();
        self.owners.clear();
        self.squatters.clear();
        self.pending.clear();
        let (with, without): (Vec<_>, Vec<_>) =
            listed.into_iter().partition(|n| !pod_cidrs(n).is_empty());
        for node in &with {
            self.claim(node);
        }
        for node in without {
            self.pending.insert(node.name_any(), node);
        }
        let pending = &self.pending;
        self.announced.retain(|name| pending.contains_key(name));
        self.synced = true;
        tracing::info!(
            nodes = self.owners.len() + self.squatters.len() + self.pending.len(),
            used = self.set.used(),
            "node IPAM synced"
        );
    }

    fn apply(&mut self, node: Node) {
        let name = node.name_any();
        if !pod_cidrs(&node).is_empty() {
            self.claim(&node);
        } else if !self.owners.contains_key(&name) && node.metadata.deletion_timestamp.is_none() {
            // An owner without a podCIDR in this event: our own write is still on its way.
            self.pending.insert(name, node);
        }
    }

    /// Counts a Node's own podCIDR as used, if it can be.
    fn claim(&mut self, node: &Node) {
        let name = node.name_any();
        self.pending.remove(&name);
        self.announced.remove(&name);
        let cidrs = pod_cidrs(node);
        let Some(cidr) = cidrs.iter().find_map(|c| c.parse::<Ipv4Net>().ok()) else {
            tracing::debug!(node = %name, ?cidrs, "node has no IPv4 podCIDR to account for");
            return;
        };
        match self.owners.get(&name) {
            Some(owned) if *owned == cidr => return,
            Some(owned) => {
                let owned = *owned;
                self.forget(&name);
                tracing::warn!(node = %name, from = %owned, to = %cidr, "node's podCIDR changed");
            }
            None if self.squatters.get(&name) == Some(&cidr) => return,
            None => {}
        }
        match self.set.occupy(cidr) {
            Ok(()) => {
                self.owners.insert(name, cidr);
            }
            Err(err) => {
                tracing::warn!(node = %name, %cidr, error = %err, "node keeps a podCIDR it was not given");
                if matches!(err, CidrError::Overlaps { .. }) {
                    self.squatters.insert(name, cidr);
                }
            }
        }
    }

    /// A Node is gone: its block is free (or passes to a Node that overlapped it).
    fn forget(&mut self, name: &str) {
        self.pending.remove(name);
        self.announced.remove(name);
        self.squatters.remove(name);
        if let Some(cidr) = self.owners.remove(name) {
            self.set.release(cidr);
            let squatters = std::mem::take(&mut self.squatters);
            for (other, cidr) in squatters {
                match self.set.occupy(cidr) {
                    Ok(()) => {
                        self.owners.insert(other, cidr);
                    }
                    Err(_) => {
                        self.squatters.insert(other, cidr);
                    }
                }
            }
        }
    }

    /// Gives every pending Node a block; returns when to try again after a failure.
    async fn assign_pending(&mut self, nodes: &Api<Node>, events: &Api<Event>) -> Option<Instant> {
        let mut failed = false;
        let names: Vec<String> = self.pending.keys().cloned().collect();
        for name in names {
            let Some(node) = self.pending.get(&name).cloned() else {
                continue;
            };
            match self.assign(nodes, &node).await {
                Ok(Some(cidr)) => {
                    tracing::info!(node = %name, %cidr, "allocated podCIDR");
                    self.pending.remove(&name);
                    self.announced.remove(&name);
                    self.owners.insert(name, cidr);
                }
                Ok(None) => {
                    if self.announced.insert(name.clone()) {
                        tracing::warn!(node = %name, "no podCIDR left to allocate");
                        if let Err(err) = record_exhausted(events, &node).await {
                            tracing::warn!(error = %err, "event not recorded");
                        }
                    }
                }
                Err(IpamError::Patch {
                    source: kube::Error::Api(status),
                    ..
                }) if matches!(status.code, 404 | 409 | 422) => {
                    // Gone, or someone else wrote a podCIDR: the watch brings what it is now.
                    tracing::debug!(node = %name, code = status.code, "podCIDR not written");
                    self.pending.remove(&name);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "podCIDR allocation failed, will retry");
                    failed = true;
                }
            }
        }
        if failed {
            self.failures += 1;
            Some(Instant::now() + backoff(self.failures))
        } else {
            self.failures = 0;
            None
        }
    }

    /// Writes the next free block into `node`; `None` when the range is full.
    async fn assign(
        &mut self,
        nodes: &Api<Node>,
        node: &Node,
    ) -> Result<Option<Ipv4Net>, IpamError> {
        let name = node.name_any();
        let cidr = match self.set.allocate() {
            Ok(cidr) => cidr,
            Err(_) => return Ok(None),
        };
        let reservation = Reservation {
            set: &mut self.set,
            cidr,
            committed: false,
        };
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| IpamError::Patch { node: name, source })?;
        Ok(Some(reservation.commit()))
    }
}

/// A block handed out but not yet written: released on drop unless committed.
struct Reservation<'a> {
    set: &'a mut CidrSet,
    cidr: Ipv4Net,
    committed: bool,
}

impl Reservation<'_> {
    fn commit(mut self) -> Ipv4Net {
        self.committed = true;
        self.cidr
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.set.release(self.cidr);
        }
    }
}

/// `spec.podCIDRs`, or `spec.podCIDR` alone.
fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    match (&spec.pod_cidrs, &spec.pod_cidr) {
        (Some(cidrs), _) if !cidrs.is_empty() => cidrs.clone(),
        (_, Some(cidr)) if !cidr.is_empty() => vec![cidr.clone()],
        _ => Vec::new(),
    }
}

/// The Event kube's allocator records on a Node it has no block for.
async fn record_exhausted(events: &Api<Event>, node: &Node) -> Result<(), IpamError> {
    let name = node.name_any();
    let now = Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some("default".to_owned()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(name.clone()),
            uid: node.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some("CIDRNotAvailable".to_owned()),
        message: Some(format!("Node {name} status is now: CIDRNotAvailable")),
        type_: Some("Normal".to_owned()),
        source: Some(EventSource {
            component: Some("cidrAllocator".to_owned()),
            host: None,
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Default::default()
    };
    events
        .create(&PostParams::default(), &event)
        .await
        .map(drop)
        .map_err(|source| IpamError::Event { node: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": cidr.map_or(json!({}), |c| json!({"podCIDR": c, "podCIDRs": [c]})),
        }))
        .unwrap()
    }

    fn synced(nodes: Vec<Node>) -> Allocator {
        let mut a = Allocator::new(CidrSet::new("10.244.0.0/22".parse().unwrap(), 24).unwrap());
        a.observe(Change::Listing);
        a.observe(Change::Relisted(nodes));
        a
    }

    #[test]
    fn a_list_marks_existing_cidrs_used_before_anything_is_handed_out() {
        let mut a = synced(vec![node("new", None), node("old", Some("10.244.0.0/24"))]);
        assert!(a.synced);
        assert_eq!(a.pending.keys().collect::<Vec<_>>(), ["new"]);
        assert_eq!(a.set.allocate().unwrap().to_string(), "10.244.1.0/24");
    }

    #[test]
    fn nothing_is_handed_out_while_listing() {
        let mut a = synced(vec![]);
        a.observe(Change::Listing);
        assert!(!a.synced);
    }

    #[test]
    fn an_overlapping_node_takes_over_the_block_when_the_owner_goes() {
        let mut a = synced(vec![
            node("a", Some("10.244.1.0/24")),
            node("b", Some("10.244.1.0/24")),
        ]);
        assert_eq!(a.set.used(), 1);
        assert!(a.squatters.contains_key("b"));
        a.observe(Change::Deleted(node("a", Some("10.244.1.0/24"))));
        assert_eq!(
            a.owners.get("b").map(ToString::to_string).as_deref(),
            Some("10.244.1.0/24")
        );
        assert_eq!(a.set.used(), 1);
        a.observe(Change::Deleted(node("b", Some("10.244.1.0/24"))));
        assert_eq!(a.set.used(), 0);
    }

    #[test]
    fn an_out_of_range_cidr_is_kept_but_not_counted() {
        let a = synced(vec![node("far", Some("192.168.0.0/24"))]);
        assert_eq!(a.set.used(), 0);
        assert!(a.pending.is_empty());
    }

    #[test]
    fn a_stale_event_of_an_owner_does_not_queue_it_again() {
        let mut a = synced(vec![]);
        a.owners
            .insert("n".into(), "10.244.0.0/24".parse().unwrap());
        a.observe(Change::Applied(node("n", None)));
        assert!(a.pending.is_empty());
    }

    #[test]
    fn a_dropped_reservation_frees_its_block() {
        let mut set = CidrSet::new("10.244.0.0/24".parse().unwrap(), 24).unwrap();
        let cidr = set.allocate().unwrap();
        drop(Reservation {
            set: &mut set,
            cidr,
            committed: false,
        });
        assert_eq!(set.used(), 0);
        let cidr = set.allocate().unwrap();
        Reservation {
            set: &mut set,
            cidr,
            committed: false,
        }
        .commit();
        assert_eq!(set.used(), 1);
    }
}
