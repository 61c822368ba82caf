//! Pods: placed by the scheduler, run by the node agent. A new Pod starts `Pending` with its QoS
//! class; one bound to a node is deleted gracefully, so its containers can stop.

use k8s_openapi::api::core;
use serde_json::{Value, json};

use crate::resources::strategy::{Hooks, Strategy, nothing_kept};
use crate::resources::{Resource, Subresource};
use crate::{apiserver::typed, patch, protobuf::schema as protobuf, table, validation};

/// `pods`.
pub static POD: Resource = Resource {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Binding],
    field_selectors: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ],
    strategy: Strategy {
        unknown_fields: typed::unknown_fields::<core::v1::Pod>,
        protobuf: Some(&protobuf::POD),
        defaults: validation::default_pod,
        prepare_for_create,
        prepare_for_update: nothing_kept,
        validate: validation::validate_pod,
        status_is_subresource: true,
        tracks_generation: false,
        creates_on_update: false,
        table: &table::POD,
        patch: &patch::schema::POD,
        hooks: Hooks {
            grace_period,
            ..Hooks::NONE
        },
    },
};

/// A new Pod is `Pending`, with the QoS class its containers' resources give it.
fn prepare_for_create(pod: &mut Value) {
    let qos = qos_class(pod);
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// A Pod's QoS class from its containers' requests and limits.
fn qos_class(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let requests = c["resources"]["requests"].as_object();
        let limits = c["resources"]["limits"].as_object();
        any |= requests.is_some_and(|r| !r.is_empty()) || limits.is_some_and(|l| !l.is_empty());
        let full = |res: &str| {
            let limit = limits.and_then(|l| l.get(res));
            limit.is_some()
                && requests
                    .and_then(|r| r.get(res))
                    .is_none_or(|r| Some(r) == limit)
        };
        guaranteed &= full("cpu") && full("memory");
    }
    if guaranteed {
        "Guaranteed"
    } else if any {
        "Burstable"
    } else {
        "BestEffort"
    }
}

/// Seconds a Pod gets to stop: 0 unless it runs on a node (then the asked grace, or its own).
fn grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let on_node = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if !on_node || finished {
        return 0;
    }
    requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0)
}
