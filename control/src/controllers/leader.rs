//! Leader election on a Lease (`kube-system/skiff-controller-manager`), as Kubernetes'
//! leaderelection package does it: the holder renews every `retry` and others take over once
//! the lease is `duration` old (15 s and 2 s by default, kube-controller-manager's values).
//! Every write is a compare-and-swap on the Lease's resourceVersion, so two candidates can
//! never both believe they won. Work runs only while leading and is dropped when a renewal
//! fails; the lease is not released on exit, so a successor waits out the duration, as with a
//! crashed leader.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const NAME: &str = "skiff-controller-manager";

/// Who campaigns, and how long a lease lasts.
#[derive(Debug, Clone)]
pub struct Election {
    /// This candidate's name, unique across instances: `<hostname>_<uuid>` by default.
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
}

impl Election {
    /// A unique identity for this process and the default 15 s lease.
    pub fn new() -> Self {
        Self::for_instance(&uuid::Uuid::new_v4().to_string())
    }

    /// The candidate `<hostname>_<instance>` with the default 15 s lease: a process that
    /// restarts as the same instance takes its own lease back without waiting.
    pub fn for_instance(instance: &str) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "skiff-control".to_owned());
        Election {
            identity: format!("{host}_{instance}"),
            duration: Duration::from_secs(15),
        }
    }

    /// How often the holder renews and others retry: 2 s for the default 15 s lease.
    pub fn retry(&self) -> Duration {
        (self.duration * 2 / 15).max(Duration::from_millis(100))
    }
}

impl Default for Election {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `work()` whenever this candidate holds the lease; never returns.
pub async fn lead<F, Fut>(client: kube::Client, election: Election, work: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let identity = election.identity.as_str();
    loop {
        match try_acquire(&leases, &election).await {
            Ok(true) => {
                tracing::info!(%identity, "leading: starting controllers");
                tokio::select! {
                    () = work() => tracing::warn!("controllers stopped"),
                    () = keep(&leases, &election) => tracing::warn!(%identity, "lost the lease: stopping controllers"),
                }
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "leader election attempt failed"),
        }
        tokio::time::sleep(election.retry()).await;
    }
}

/// Renews until a renewal fails to go through.
async fn keep(leases: &Api<Lease>, election: &Election) {
    loop {
        tokio::time::sleep(election.retry()).await;
        match try_acquire(leases, election).await {
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
async fn try_acquire(leases: &Api<Lease>, election: &Election) -> Result<bool, kube::Error> {
    let identity = election.identity.as_str();
    let duration_secs = election.duration.as_secs_f64().ceil() as i32;
    let existing = leases.get_opt(NAME).await?;
    let Some(mut lease) = existing else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": duration_secs,
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
    // The holder's own word on how long its lease lasts, as the API defines it.
    let duration = spec
        .lease_duration_seconds
        .map_or(election.duration, |s| Duration::from_secs(s.max(0) as u64));
    let expired = renewed.is_none_or(|t| {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(t);
        age.as_millis() >= duration.as_millis() as i128
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
    spec.lease_duration_seconds = Some(duration_secs);
    // The resourceVersion in `lease` makes this a compare-and-swap: a rival's write wins.
    match leases.replace(NAME, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
