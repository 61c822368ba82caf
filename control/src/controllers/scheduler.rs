//! The scheduler: assigns each unassigned Pod (schedulerName `default-scheduler`) to a Node, as
//! kube-scheduler does, through the API like any other client.
//!
//! Throughput comes from never asking the API while deciding. Two watches (Nodes, Pods) feed
//! an in-memory [`cache::Cache`] of per-Node totals; one loop owns it and the [`queue::Queue`],
//! decides a Pod in one pass over the Nodes (filter, then score), *assumes* it onto the chosen
//! Node at once and hands the binding to a task, with up to [`IN_FLIGHT`] writes under way.
//! Their outcomes come back to the same loop, so no state is shared and nothing is locked.
//!
//! A Pod no Node takes gets `PodScheduled=False` (reason `Unschedulable`) and a
//! `FailedScheduling` Event saying why, node by node, and waits: it is tried again when a
//! Node appears or changes, when an assigned Pod goes, or after its backoff (1 s to 60 s).
//!
//! Scope: nodeSelector, taints and tolerations, cordons, readiness, CPU/memory/Pod count and
//! host ports filter; least-allocated and spreading of a controller's Pods score. No affinity
//! rules, topology spread constraints, preemption or volumes.

mod cache;
mod filter;
mod queue;
mod score;
mod write;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use skiff_common::relist::{Change, changes};
use skiff_common::rng::SmallRng;
use tokio::task::JoinSet;
use tokio::time::Instant;

use self::cache::{Cache, PodDemand, PodKey, pod_key};
use self::queue::{Pending, Queue};
use self::write::{Bound, PodRef, SCHEDULER_NAME, Verdict, WriteError};
use super::Settings;

/// How many writes (bindings, reports) may be under way at once.
pub const IN_FLIGHT: usize = 16;

/// What a finished write tells the loop.
enum Outcome {
    Bind {
        key: PodKey,
        uid: String,
        result: Result<Bound, WriteError>,
    },
    Reported(Result<(), WriteError>),
}

/// Runs the scheduler until dropped.
pub async fn run(client: kube::Client, _settings: Arc<Settings>) {
    let config = watcher::Config::default();
    let nodes = watcher(Api::<Node>::all(client.clone()), config.clone());
    let mut nodes = changes(nodes.default_backoff()).boxed();
    let pods = watcher(Api::<Pod>::all(client.clone()), config);
    let mut pods = changes(pods.default_backoff()).boxed();
    let mut scheduler = Scheduler::new(client);
    loop {
        scheduler.schedule_ready();
        let wake = scheduler
            .queue
            .next_wake()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            Some(done) = scheduler.writes.join_next(), if !scheduler.writes.is_empty() => {
                match done {
                    Ok(outcome) => scheduler.finished(outcome),
                    Err(err) => tracing::error!(error = %err, "scheduler write task failed"),
                }
            }
            Some(event) = nodes.next() => scheduler.node_event(event),
            Some(event) = pods.next() => scheduler.pod_event(event),
            () = tokio::time::sleep_until(wake) => scheduler.queue.wake_due(Instant::now()),
        }
    }
}

/// Whether this scheduler should place `pod`.
fn wants_scheduling(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else {
        return false;
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    spec.node_name.as_deref().unwrap_or("").is_empty()
        && matches!(
            spec.scheduler_name.as_deref(),
            None | Some("") | Some(SCHEDULER_NAME)
        )
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn pending_of(pod: &Pod) -> Pending {
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| (c.status.clone(), c.message.clone().unwrap_or_default()));
    Pending {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        demand: Arc::new(PodDemand::of(pod)),
        scheduled,
    }
}

fn pod_ref(key: &str, uid: &str) -> PodRef {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    PodRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
    }
}

struct Scheduler {
    client: kube::Client,
    cache: Cache,
    queue: Queue,
    writes: JoinSet<Outcome>,
    ties: SmallRng,
    nodes_synced: bool,
    pods_synced: bool,
}

impl Scheduler {
    fn new(client: kube::Client) -> Self {
        Scheduler {
            client,
            cache: Cache::default(),
            queue: Queue::default(),
            writes: JoinSet::new(),
            ties: SmallRng::from_clock(0),
            nodes_synced: false,
            pods_synced: false,
        }
    }

    fn node_event(&mut self, change: Result<Change<Node>, watcher::Error>) {
        match change {
            Err(err) => tracing::warn!(error = %err, "scheduler: node watch failed"),
            Ok(Change::Listing) => {}
            Ok(Change::Applied(node)) => self.apply_node(&node),
            Ok(Change::Deleted(node)) => {
                self.cache
                    .delete_node(node.metadata.name.as_deref().unwrap_or(""));
            }
            Ok(Change::Relisted(nodes)) => {
                for node in &nodes {
                    self.apply_node(node);
                }
                let listed: HashSet<String> = nodes
                    .iter()
                    .map(|n| n.metadata.name.clone().unwrap_or_default())
                    .collect();
                self.cache.retain_nodes(&listed);
                self.nodes_synced = true;
                self.queue.wake_all();
            }
        }
    }

    fn apply_node(&mut self, node: &Node) {
        if self.cache.apply_node(node) {
            self.queue.wake_all();
        }
    }

    fn pod_event(&mut self, change: Result<Change<Pod>, watcher::Error>) {
        match change {
            Err(err) => tracing::warn!(error = %err, "scheduler: pod watch failed"),
            Ok(Change::Listing) => {}
            Ok(Change::Applied(pod)) => self.apply_pod(&pod),
            Ok(Change::Deleted(pod)) => {
                let key = pod_key(&pod);
                self.queue.remove(&key);
                if self.cache.delete_pod(&key) {
                    self.queue.wake_all();
                }
            }
            Ok(Change::Relisted(pods)) => {
                for pod in &pods {
                    self.apply_pod(pod);
                }
                let listed: HashSet<PodKey> = pods.iter().map(pod_key).collect();
                self.cache.retain_pods(&listed);
                self.queue.retain(&listed);
                self.pods_synced = true;
            }
        }
    }

    fn apply_pod(&mut self, pod: &Pod) {
        let key = pod_key(pod);
        if self.cache.apply_pod(pod) {
            self.queue.wake_all();
        }
        if !wants_scheduling(pod) {
            self.queue.remove(&key);
        } else if self.cache.placed_on(&key).is_none() {
            // (A Pod counted somewhere is one this scheduler is binding or just bound.)
            self.queue.upsert(key, pending_of(pod));
        }
    }

    /// Decides Pods while there is room for more writes (and both caches are complete).
    fn schedule_ready(&mut self) {
        if !(self.nodes_synced && self.pods_synced) {
            return;
        }
        while self.writes.len() < IN_FLIGHT {
            let Some((key, pending)) = self.queue.pop() else {
                return;
            };
            self.schedule(key, &pending);
        }
    }

    fn schedule(&mut self, key: PodKey, pending: &Pending) {
        let pod = pod_ref(&key, &pending.uid);
        let client = self.client.clone();
        match score::pick(self.cache.nodes(), &pending.demand, &mut self.ties) {
            Ok(node) => {
                let node = node.to_owned();
                tracing::debug!(pod = %key, %node, "scheduling");
                self.cache
                    .assume(key.clone(), &node, Arc::clone(&pending.demand));
                self.writes.spawn(async move {
                    let result = write::bind(client.clone(), &pod, &node).await;
                    match &result {
                        Ok(Bound::Yes) => {
                            // Off the write slot, as an event recorder is: the Pod is bound.
                            let pod = pod.clone();
                            tokio::spawn(async move {
                                let verdict = Verdict::Scheduled { node: &node };
                                if let Err(err) = write::record(client, &pod, verdict).await {
                                    tracing::warn!(error = %err, "scheduler: event not recorded");
                                }
                            });
                        }
                        Err(err) => tracing::warn!(error = %err, "scheduler: binding failed"),
                        Ok(_) => {}
                    }
                    Outcome::Bind {
                        key,
                        uid: pod.uid,
                        result,
                    }
                });
            }
            Err(fit) => {
                let message = fit.to_string();
                tracing::debug!(pod = %key, %message, "unschedulable");
                self.queue.wait(&key, Instant::now());
                let changed = pending.scheduled != Some(("False".to_owned(), message.clone()));
                self.writes.spawn(async move {
                    if changed {
                        let set = write::set_unschedulable(client.clone(), &pod, &message);
                        if let Err(err) = set.await {
                            return Outcome::Reported(Err(err));
                        }
                    }
                    let verdict = Verdict::Failed { message: &message };
                    Outcome::Reported(write::record(client, &pod, verdict).await)
                });
            }
        }
    }

    fn finished(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bind { key, uid, result } => match result {
                Ok(Bound::Yes) => self.queue.done(&key, &uid),
                Ok(Bound::Already | Bound::Gone) => {
                    self.cache.forget(&key);
                    self.queue.done(&key, &uid);
                }
                Err(_) => {
                    self.cache.forget(&key);
                    self.queue.wait(&key, Instant::now());
                }
            },
            Outcome::Reported(Err(err)) => {
                tracing::warn!(error = %err, "scheduler: failure not reported");
            }
            Outcome::Reported(Ok(())) => {}
        }
    }
}
