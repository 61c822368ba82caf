//! Leader election between two controller managers sharing one apiserver, as two skiff-control
//! instances do over one store: exactly one leads, the other stands by while the leader renews,
//! and takes over — and does the work — once a dead leader's lease runs out.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, eventually};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use skiff_control::controllers::leader::Election;
use skiff_control::controllers::{self, Settings};

const LEASE: Duration = Duration::from_secs(2);

fn candidate(identity: &str) -> Settings {
    Settings {
        election: Election {
            identity: identity.to_owned(),
            duration: LEASE,
        },
        ..Settings::default()
    }
}

async fn lease(client: &kube::Client) -> Option<(String, i32)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let spec = leases
        .get_opt("skiff-controller-manager")
        .await
        .unwrap()?
        .spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

async fn pod_count(pods: &Api<Pod>) -> usize {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count()
}

async fn scale(replicasets: &Api<ReplicaSet>, replicas: i32) {
    replicasets
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_leads_and_the_other_takes_over_when_it_dies() {
    let server = TestServer::start_without_controllers().await;
    let client = server.client().await;
    let mut instances = std::collections::BTreeMap::from([
        (
            "a",
            tokio::spawn(controllers::run(client.clone(), candidate("a"))),
        ),
        (
            "b",
            tokio::spawn(controllers::run(client.clone(), candidate("b"))),
        ),
    ]);
    let (leader, transitions) = eventually("a leader", Duration::from_secs(10), async || {
        lease(&client).await
    })
    .await;
    assert_eq!(transitions, 0, "the first holder took a fresh lease");

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "x"}]}}}
    }))
    .unwrap();
    replicasets
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    eventually("3 Pods", Duration::from_secs(10), async || {
        (pod_count(&pods).await == 3).then_some(())
    })
    .await;

    // Both alive for several lease durations: the leader keeps renewing, nobody else acts.
    tokio::time::sleep(LEASE * 3).await;
    assert_eq!(lease(&client).await, Some((leader.clone(), 0)));
    assert_eq!(
        pod_count(&pods).await,
        3,
        "only one ReplicaSet controller ran"
    );

    // The leader dies without a word; the other waits out the lease, then leads and works.
    instances
        .remove(leader.as_str())
        .expect("a known leader")
        .abort();
    let died = Instant::now();
    let (successor, transitions) = eventually("a new leader", LEASE * 4, async || {
        lease(&client).await.filter(|(holder, _)| *holder != leader)
    })
    .await;
    assert!(instances.contains_key(successor.as_str()), "{successor}");
    assert_eq!(transitions, 1);
    assert!(
        died.elapsed() >= LEASE - Duration::from_millis(300),
        "took over {:?} after the leader died, before its lease ran out",
        died.elapsed()
    );
    scale(&replicasets, 5).await;
    eventually(
        "5 Pods under the new leader",
        Duration::from_secs(10),
        async || (pod_count(&pods).await == 5).then_some(()),
    )
    .await;
    for (_, instance) in instances {
        instance.abort();
    }
}
