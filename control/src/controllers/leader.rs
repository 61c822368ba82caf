//! Leader election on a Lease (`kube-system/skiff-controller-manager`), as Kubernetes'
//! leaderelection package does it: the holder renews every `RENEW` and others take over once
//! the lease is `DURATION` old. Work runs only while leading and is dropped when the lease is lost.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const NAME: &str = "skiff-controller-manager";
/// How long a lease is valid without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW: Duration = Duration::from_secs(2);

/// Runs `work()` whenever this `identity` holds the lease; never returns.
pub async fn lead<F, Fut>(client: kube::Client, identity: String, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    loop {
        match try_acquire(&leases, &identity).await {
            Ok(true) => {
                tracing::info!(%identity, "leading: starting controllers");
                tokio::select! {
                    () = work() => tracing::warn!("controllers stopped"),
                    () = keep(&leases, &identity) => tracing::warn!(%identity, "lost the lease: stopping controllers"),
                }
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "leader election attempt failed"),
        }
        tokio::time::sleep(RENEW).await;
    }
}

/// Renews until a renewal fails to go through.
async fn keep(leases: &Api<Lease>, identity: &str) {
    loop {
        tokio::time::sleep(RENEW).await;
        match try_acquire(leases, identity).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(error = %err, "lease renewal failed");
                return;
            }
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// Takes or renews the lease if it is free, expired or ours; true when we hold it after.
async fn try_acquire(leases: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let existing = leases.get_opt(NAME).await?;
    let Some(mut lease) = existing else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": DURATION.as_secs(),
                     "leaseTransitions": 0}
        }))
        .expect("a valid lease");
        let mut lease = lease;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.acquire_time = Some(now());
        spec.renew_time = Some(now());
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0);
    let duration = spec
        .lease_duration_seconds
        .map_or(DURATION, |s| Duration::from_secs(s.max(0) as u64));
    let expired = renewed.is_none_or(|t| {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(t);
        age.as_secs() >= duration.as_secs() as i64
    });
    if holder != identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    if holder != identity {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(DURATION.as_secs() as i32);
    // The resourceVersion in `lease` makes this a compare-and-swap: a rival's write wins.
    match leases.replace(NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
