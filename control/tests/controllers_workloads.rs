//! The workload controllers (Deployment, ReplicaSet) and the garbage collector, through the API
//! of an in-process apiserver. No node agent runs: a test plays kubelet by patching Pod status.

mod common;

use std::future::Future;
use std::time::Duration;

use common::TestServer;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

const NS: &str = "work";
const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` until it returns Some, failing the test after `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `name` is gone from `api`.
async fn gone<K>(what: &str, api: &Api<K>, name: &str)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

struct Cluster {
    server: TestServer,
    client: kube::Client,
}

impl Cluster {
    async fn start() -> Self {
        let server = TestServer::start().await;
        let client = server.client().await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        Cluster { server, client }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn replicasets(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create_deployment(&self, name: &str, replicas: i32, strategy: Value) -> Deployment {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "strategy": strategy,
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "example/app:1"}]}
                }
            }
        }))
        .unwrap();
        self.deployments()
            .create(&PostParams::default(), &d)
            .await
            .unwrap()
    }

    /// Pods that are not being deleted.
    async fn live_pods(&self) -> Vec<Pod> {
        let list = self.pods().list(&ListParams::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Plays kubelet: every live Pod not yet ready becomes Running and Ready.
    async fn make_ready(&self) {
        for pod in self.live_pods().await {
            if !is_ready(&pod) {
                let _ = mark_ready(&self.pods(), &pod.name_any()).await;
            }
        }
    }
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn mark_ready(pods: &Api<Pod>, name: &str) -> Result<Pod, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

fn controller_uid(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.block_owner_deletion == Some(true))
        .map(|r| r.uid.clone())
}

/// Waits for `n` live Pods, all owned by one ReplicaSet owned by `d`; returns RS and Pods.
async fn settled(cluster: &Cluster, d: &Deployment, n: usize) -> (ReplicaSet, Vec<Pod>) {
    let d_uid = d.uid().unwrap();
    eventually(&format!("{n} pods of one replicaset"), || async {
        let rss = cluster
            .replicasets()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        let active: Vec<_> = rss
            .into_iter()
            .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas) != Some(0))
            .collect();
        let [rs] = active.as_slice() else { return None };
        // The ReplicaSet read must already say `n`: pods listed after it may be newer.
        if controller_uid(&rs.metadata) != Some(d_uid.clone())
            || rs.spec.as_ref().and_then(|s| s.replicas) != Some(n as i32)
        {
            return None;
        }
        let pods = cluster.live_pods().await;
        let owned = pods.iter().all(|p| controller_uid(&p.metadata) == rs.uid());
        (pods.len() == n && owned).then(|| (rs.clone(), pods))
    })
    .await
}

#[tokio::test]
async fn a_deployment_gets_one_replicaset_whose_pods_are_replaced() {
    let cluster = Cluster::start().await;
    let d = cluster.create_deployment("web", 3, json!({})).await;
    let (rs, pods) = settled(&cluster, &d, 3).await;
    let hash = rs
        .labels()
        .get("pod-template-hash")
        .cloned()
        .expect("hash label");
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    let rs_spec = rs.spec.clone().unwrap();
    assert_eq!(
        rs_spec
            .selector
            .match_labels
            .unwrap()
            .get("pod-template-hash"),
        Some(&hash)
    );
    for pod in &pods {
        assert!(pod.name_any().starts_with(&format!("web-{hash}-")));
        assert_eq!(pod.labels().get("pod-template-hash"), Some(&hash));
    }
    let revision = rs
        .annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned();
    assert_eq!(revision.as_deref(), Some("1"));

    // A deleted Pod is replaced.
    let gone = pods[0].name_any();
    cluster
        .pods()
        .delete(&gone, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted pod replaced", || async {
        let pods = cluster.live_pods().await;
        (pods.len() == 3 && pods.iter().all(|p| p.name_any() != gone)).then_some(())
    })
    .await;

    // So is one that ended (restartPolicy Always): it stays, but no longer counts.
    let failed = pods[1].name_any();
    let patch = json!({"status": {"phase": "Failed"}});
    cluster
        .pods()
        .patch_status(&failed, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("the failed pod replaced", || async {
        let pods = cluster.live_pods().await;
        let running = pods
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Failed"))
            .count();
        (pods.len() == 4 && running == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn scaling_up_and_down() {
    let cluster = Cluster::start().await;
    let d = cluster.create_deployment("web", 3, json!({})).await;
    settled(&cluster, &d, 3).await;
    for replicas in [5, 1] {
        let patch = json!({"spec": {"replicas": replicas}});
        cluster
            .deployments()
            .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let (rs, _) = settled(&cluster, &d, replicas as usize).await;
        assert_eq!(rs.spec.unwrap().replicas, Some(replicas));
    }
    // Scaling is not a rollout: still the one ReplicaSet.
    let rss = cluster
        .replicasets()
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(rss.items.len(), 1);
}

#[tokio::test]
async fn a_replicaset_adopts_matching_orphans_and_reports_status() {
    let cluster = Cluster::start().await;
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "solo"}},
        "spec": {"containers": [{"name": "c", "image": "example/app:1"}]}
    }))
    .unwrap();
    cluster
        .pods()
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();
    mark_ready(&cluster.pods(), "orphan").await.unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": {
                "metadata": {"labels": {"app": "solo"}},
                "spec": {"containers": [{"name": "c", "image": "example/app:1"}]}
            }
        }
    }))
    .unwrap();
    let rs = cluster
        .replicasets()
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let pods = eventually("the orphan adopted and one pod added", || async {
        let pods = cluster.live_pods().await;
        (pods.len() == 2 && pods.iter().all(|p| controller_uid(&p.metadata) == rs.uid()))
            .then_some(pods)
    })
    .await;
    assert!(pods.iter().any(|p| p.name_any() == "orphan"));
    let status = eventually("status with one ready replica", || async {
        let rs = cluster.replicasets().get("solo").await.unwrap();
        rs.status.filter(|s| {
            s.replicas == 2 && s.ready_replicas == Some(1) && s.available_replicas == Some(1)
        })
    })
    .await;
    assert_eq!(status.fully_labeled_replicas, Some(2));
    assert_eq!(status.observed_generation, rs.meta().generation);
}

#[tokio::test]
async fn an_image_change_rolls_out_within_surge_and_unavailability() {
    let cluster = Cluster::start().await;
    let strategy = json!({"type": "RollingUpdate",
                          "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let d = cluster.create_deployment("web", 3, strategy).await;
    settled(&cluster, &d, 3).await;
    cluster.make_ready().await;
    eventually("the first rollout complete", || async {
        let d = cluster.deployments().get("web").await.unwrap();
        let s = d.status?;
        (s.available_replicas == Some(3)).then_some(())
    })
    .await;

    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "example/app:2"}]}}}});
    let updated = cluster
        .deployments()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let most = std::cell::Cell::new(0);
    let fewest_ready = std::cell::Cell::new(usize::MAX);
    let status = eventually("the second rollout complete", || {
        let cluster = &cluster;
        let updated = &updated;
        let (most, fewest_ready) = (&most, &fewest_ready);
        async move {
            let pods = cluster.live_pods().await;
            most.set(most.get().max(pods.len()));
            let ready = pods.iter().filter(|p| is_ready(p)).count();
            fewest_ready.set(fewest_ready.get().min(ready));
            cluster.make_ready().await;
            let d = cluster.deployments().get("web").await.unwrap();
            let s = d.status?;
            let progressing = s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Progressing")?
                .reason
                .clone();
            (s.observed_generation >= updated.meta().generation
                && s.updated_replicas == Some(3)
                && s.available_replicas == Some(3)
                && s.replicas == Some(3)
                && progressing.as_deref() == Some("NewReplicaSetAvailable"))
            .then_some(s)
        }
    })
    .await;
    let (most, fewest_ready) = (most.get(), fewest_ready.get());
    assert!(most <= 4, "saw {most} pods: more than replicas + maxSurge");
    assert!(
        fewest_ready >= 3,
        "saw only {fewest_ready} ready pods with maxUnavailable 0"
    );
    assert_eq!(status.unavailable_replicas, Some(0));
    let d = cluster.deployments().get("web").await.unwrap();
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
    let pods = cluster.live_pods().await;
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        let image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        assert_eq!(image.as_deref(), Some("example/app:2"));
    }
    let rss = cluster
        .replicasets()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(rss.len(), 2, "the old replicaset is kept as history");

    let output = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.server.kubeconfig())
        .arg("--cache-dir")
        .arg(cluster.server.dir.join("kubectl-cache"))
        .args(["-n", NS, "rollout", "status", "deploy/web", "--timeout=20s"])
        .output();
    let output = tokio::time::timeout(Duration::from_secs(40), output)
        .await
        .expect("kubectl rollout status hung")
        .expect("kubectl is installed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kubectl rollout status failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("successfully rolled out"), "{stdout}");
}

#[tokio::test]
async fn recreate_removes_old_pods_before_new_ones_start() {
    let cluster = Cluster::start().await;
    let d = cluster
        .create_deployment("web", 2, json!({"type": "Recreate"}))
        .await;
    settled(&cluster, &d, 2).await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "c", "image": "example/app:2"}]}}}});
    cluster
        .deployments()
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let mixed = std::cell::Cell::new(false);
    eventually("the new pods", || {
        let mixed = &mixed;
        let cluster = &cluster;
        async move {
            let pods = cluster.live_pods().await;
            let images: std::collections::BTreeSet<_> = pods
                .iter()
                .filter_map(|p| p.spec.as_ref()?.containers[0].image.clone())
                .collect();
            mixed.set(mixed.get() || images.len() > 1);
            (pods.len() == 2 && images.len() == 1 && images.contains("example/app:2")).then_some(())
        }
    })
    .await;
    assert!(!mixed.get(), "old and new pods ran at once under Recreate");
}

async fn deployment_with_pods(cluster: &Cluster) -> (Deployment, ReplicaSet) {
    let d = cluster.create_deployment("web", 2, json!({})).await;
    let (rs, _) = settled(cluster, &d, 2).await;
    (d, rs)
}

async fn nothing_left(cluster: &Cluster) {
    eventually("deployment, replicasets and pods gone", || async {
        let ds = cluster
            .deployments()
            .list(&ListParams::default())
            .await
            .unwrap();
        let rss = cluster
            .replicasets()
            .list(&ListParams::default())
            .await
            .unwrap();
        let pods = cluster.pods().list(&ListParams::default()).await.unwrap();
        (ds.items.is_empty() && rss.items.is_empty() && pods.items.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn background_deletion_collects_replicasets_and_pods() {
    let cluster = Cluster::start().await;
    deployment_with_pods(&cluster).await;
    cluster
        .deployments()
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    nothing_left(&cluster).await;
}

#[tokio::test]
async fn foreground_deletion_removes_dependents_before_the_owner() {
    let cluster = Cluster::start().await;
    deployment_with_pods(&cluster).await;
    let deleted = cluster
        .deployments()
        .delete("web", &DeleteParams::foreground())
        .await
        .unwrap();
    let marked = deleted.left().expect("the owner waits for its dependents");
    assert!(
        marked
            .finalizers()
            .iter()
            .any(|f| f == "foregroundDeletion")
    );
    nothing_left(&cluster).await;
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents() {
    let cluster = Cluster::start().await;
    let (_, rs) = deployment_with_pods(&cluster).await;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    cluster.deployments().delete("web", &params).await.unwrap();
    gone("the deployment gone", &cluster.deployments(), "web").await;
    let kept = cluster.replicasets().get(&rs.name_any()).await.unwrap();
    assert!(kept.owner_references().is_empty());
    assert!(kept.metadata.deletion_timestamp.is_none());
    // The barrier: a ReplicaSet whose owner is gone, made after the orphaning, must be
    // collected; the collector saw the orphan first, so had it (wrongly) taken it, it did so
    // before. The orphans stay with their Pods.
    let stray: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "stray",
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": "web", "uid": "not-the-real-uid"}]},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"stray": "x"}},
                 "template": {"metadata": {"labels": {"stray": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "example/app:1"}]}}}
    }))
    .unwrap();
    cluster
        .replicasets()
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    gone(
        "the stray replicaset collected",
        &cluster.replicasets(),
        "stray",
    )
    .await;
    assert!(
        cluster
            .replicasets()
            .get_opt(&rs.name_any())
            .await
            .unwrap()
            .is_some()
    );
    let pods = cluster.live_pods().await;
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| controller_uid(&p.metadata) == rs.uid()));
}

#[tokio::test]
async fn objects_whose_owner_is_gone_are_collected() {
    let cluster = Cluster::start().await;
    // A Pod owned by a ReplicaSet uid that never existed (the name exists, the uid differs).
    let (_, rs) = deployment_with_pods(&cluster).await;
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray", "labels": {"other": "x"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": rs.name_any(), "uid": "not-the-real-uid"}]},
        "spec": {"containers": [{"name": "c", "image": "example/app:1"}]}
    }))
    .unwrap();
    cluster
        .pods()
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    gone("the stray pod collected", &cluster.pods(), "stray").await;
    // The ReplicaSet's own Pods are untouched.
    assert_eq!(cluster.live_pods().await.len(), 2);
}
