//! The Pods bound to this node: one worker per Pod (see [`worker`]), fed by a watch.
//!
//! On start the agent first lists its Pods, then compares them with the sandboxes the runtime
//! still holds: sandboxes of Pods that are gone are removed, the others are adopted by their
//! workers as they are (running containers keep running), and CNI GC frees any address whose
//! sandbox vanished while the agent was away. Only then do workers start, so GC never races
//! an ADD. Workers also wait for the Services to be listed: a container's environment names
//! them.

pub mod dns;
pub mod env;
pub mod events;
pub mod hosts;
pub mod probe;
pub mod resources;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, reflector};
use kube::runtime::watcher;
use skiff_common::relist::{Change, changes};
use tokio::sync::{mpsc, watch};

use self::worker::Context;
use crate::runtime::RuntimeError;

/// The running workers.
struct Workers {
    ctx: Arc<Context>,
    senders: HashMap<String, watch::Sender<Option<Pod>>>,
    done: mpsc::UnboundedSender<String>,
}

impl Workers {
    fn apply(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(sender) = self.senders.get(&uid) {
            sender.send_replace(Some(pod));
            return;
        }
        let (sender, receiver) = watch::channel(Some(pod));
        self.senders.insert(uid.clone(), sender);
        let (ctx, done) = (Arc::clone(&self.ctx), self.done.clone());
        tokio::spawn(async move {
            worker::run(ctx, uid.clone(), receiver).await;
            let _ = done.send(uid);
        });
    }

    fn delete(&mut self, pod: &Pod) {
        if let Some(sender) = pod
            .metadata
            .uid
            .as_ref()
            .and_then(|uid| self.senders.get(uid))
        {
            sender.send_replace(None);
        }
    }
}

/// Runs the Pods of this node until the watch ends (it does not, short of a panic).
pub async fn run(ctx: Arc<Context>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node));
    let mut events = std::pin::pin!(changes(watcher(pods, config)));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut workers = Workers {
        ctx: Arc::clone(&ctx),
        senders: HashMap::new(),
        done: done_tx,
    };
    let mut adopted = false;
    // Containers get the Service variables of their namespace: know the Services first.
    if ctx.services.wait_until_ready().await.is_err() {
        tracing::warn!("the Service watch ended before it listed");
    }
    loop {
        tokio::select! {
            Some(uid) = done_rx.recv() => { workers.senders.remove(&uid); }
            event = events.next() => match event {
                None => return,
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "pod watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Some(Ok(Change::Relisted(listed))) => {
                    if !adopted {
                        adopt(&ctx, &listed).await;
                        adopted = true;
                    }
                    // A relist: Pods that vanished meanwhile are deleted, the rest applied.
                    let alive: HashSet<String> =
                        listed.iter().filter_map(|p| p.metadata.uid.clone()).collect();
                    let gone: Vec<String> = workers.senders.keys().filter(|u| !alive.contains(*u)).cloned().collect();
                    for uid in gone {
                        if let Some(sender) = workers.senders.get(&uid) {
                            sender.send_replace(None);
                        }
                    }
                    for pod in listed {
                        workers.apply(pod);
                    }
                }
                Some(Ok(Change::Applied(pod))) if adopted => workers.apply(pod),
                Some(Ok(Change::Deleted(pod))) if adopted => workers.delete(&pod),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Removes the sandboxes of Pods no longer bound here and has the runtime free what no
/// sandbox holds (CNI GC). Retries while the runtime cannot answer (containerd starting).
async fn adopt(ctx: &Arc<Context>, listed: &[Pod]) {
    let keep: HashSet<String> = listed
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let runtime = Arc::clone(&ctx.runtime);
        let keep = keep.clone();
        let report = tokio::task::spawn_blocking(move || -> Result<usize, RuntimeError> {
            let mut adopted = 0;
            for sandbox in runtime.sandboxes()? {
                if keep.contains(&sandbox.uid) {
                    adopted += 1;
                } else if let Err(err) = runtime.remove_sandbox(&sandbox.uid) {
                    tracing::warn!(pod = %sandbox.name, error = %err, "orphaned sandbox not removed");
                } else {
                    tracing::info!(pod = %sandbox.name, "removed the sandbox of a pod that is gone");
                }
            }
            let live = runtime.sandboxes()?;
            if let Err(err) = runtime.collect_garbage(&live) {
                tracing::warn!(error = %err, "CNI GC failed");
            }
            Ok(adopted)
        })
        .await
        .expect("runtime calls do not panic");
        match report {
            Ok(adopted) => {
                tracing::info!(adopted, "pods adopted from an earlier run");
                return;
            }
            Err(err) => {
                tracing::warn!(error = %skiff_cni::error_chain(&err), "cannot list the runtime's sandboxes; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
}

/// Keeps `writer` (the Services every worker reads) in step with the API until the watch ends.
pub async fn follow_services(client: kube::Client, writer: reflector::store::Writer<Service>) {
    let services: Api<Service> = Api::all(client);
    let stream = reflector(
        writer,
        watcher(services, watcher::Config::default()).default_backoff(),
    );
    stream
        .for_each(|event| {
            if let Err(err) = event {
                tracing::warn!(error = %err, "service watch failed; retrying");
            }
            futures::future::ready(())
        })
        .await;
}

/// Runs `chore` on the runtime every `period` from a blocking task, forever, reporting what it
/// did through `report` and logging `what` when it fails (log rotation, image GC).
async fn every<T: Send + 'static>(
    runtime: Arc<dyn crate::runtime::PodRuntime>,
    period: std::time::Duration,
    what: &'static str,
    chore: impl Fn(&dyn crate::runtime::PodRuntime) -> Result<T, RuntimeError>
    + Send
    + Sync
    + Copy
    + 'static,
    report: impl Fn(T),
) {
    loop {
        tokio::time::sleep(period).await;
        let runtime = Arc::clone(&runtime);
        match tokio::task::spawn_blocking(move || chore(runtime.as_ref())).await {
            Ok(Ok(done)) => report(done),
            Ok(Err(err)) => tracing::warn!(error = %err, "{what} failed"),
            Err(_) => {}
        }
    }
}

/// Rotates containers' logs every `interval` (kubelet's container log manager).
pub async fn rotate_logs(
    runtime: Arc<dyn crate::runtime::PodRuntime>,
    max_bytes: u64,
    max_files: usize,
    interval: std::time::Duration,
) {
    let chore = move |r: &dyn crate::runtime::PodRuntime| r.rotate_logs(max_bytes, max_files);
    every(
        runtime,
        interval,
        "container log rotation",
        chore,
        |rotated| {
            if rotated > 0 {
                tracing::info!(rotated, "container logs rotated");
            }
        },
    )
    .await;
}

/// Collects unused images every `period` when the image filesystem is full (kubelet's image
/// GC).
pub async fn collect_images(
    runtime: Arc<dyn crate::runtime::PodRuntime>,
    high_percent: u8,
    low_percent: u8,
    period: std::time::Duration,
) {
    let chore =
        move |r: &dyn crate::runtime::PodRuntime| r.collect_images(high_percent, low_percent);
    every(
        runtime,
        period,
        "image GC",
        chore,
        |removed: Vec<String>| {
            if !removed.is_empty() {
                tracing::info!(?removed, "unused images removed");
            }
        },
    )
    .await;
}
