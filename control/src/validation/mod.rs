//! Defaulting and validation for the kinds skiff's apiserver serves.
//!
//! Why: clients rely on the apiserver to fill in what a manifest leaves out (a Service's
//! `type`, a container's `imagePullPolicy`, a Deployment's rollout strategy) and to refuse
//! what Kubernetes refuses, with the same `422 Invalid` text and field causes, because tools and
//! humans read those messages. The rules and wording follow kubernetes/kubernetes
//! (`pkg/apis/*/validation`, `pkg/apis/*/v1/defaults.go`) and apimachinery
//! (`util/validation`, `field`), re-expressed over wire JSON.
//!
//! How a write uses this module, in Kubernetes' order:
//! 1. decode, then the kind's defaults (`default_service`, ...);
//! 2. on update, [`keep_server_metadata`] and the kind's own `PrepareForUpdate`
//!    (`prepare_service_update`, ...);
//! 3. the kind's validation (`validate_service`, ...); if it returns errors, answer 422 with
//!    [`invalid_message`] as the Status message and one cause per error (`reason()`, `field`,
//!    `body()`).
//!
//! Which of these functions a kind uses is said once, in its entry in [`crate::resources`].
//!
//! Not here: namespace existence and matching the request path, resourceVersion
//! preconditions, name generation, quota, and allocator ranges (ClusterIP, NodePort).

mod apps;
mod container;
mod field;
mod json;
mod meta;
mod names;
mod net;
mod other;
mod pod;
mod podspec;
mod service;
mod service_ips;

use serde_json::Value;

pub use field::{FieldError, FieldErrorKind};

pub(crate) use apps::{
    default_deployment, default_replica_set, validate_deployment, validate_replica_set,
};
pub(crate) use other::{
    default_endpoint_slice, default_endpoints, default_namespace, default_node,
    prepare_namespace_update, validate_endpoint_slice, validate_endpoints, validate_event,
    validate_lease, validate_namespace, validate_node,
};
pub(crate) use pod::{default_pod, validate_pod};
pub(crate) use service::{default_service, validate_service};
pub(crate) use service_ips::prepare_service_update;

#[cfg(test)]
mod by_kind_tests;
#[cfg(test)]
pub(crate) use by_kind_tests::{apply_defaults, prepare_for_update, validate};

/// The part of the registry strategies' `PrepareForUpdate` every kind shares: copies the
/// server-owned metadata a client may have omitted (`uid`, `creationTimestamp`, `generation`)
/// from the stored object. Call after defaulting and before validation.
pub fn keep_server_metadata(object: &mut Value, old: &Value) {
    let Some(old_meta) = old.get("metadata") else {
        return;
    };
    let meta = json::obj_mut(object, "metadata");
    for key in ["uid", "creationTimestamp", "generation"] {
        let omitted = json::get(meta, key).is_none();
        if let Some(v) = json::get(old_meta, key).filter(|_| omitted || key != "uid") {
            meta[key] = v.clone();
        }
    }
}

/// The validation of a kind without rules of its own: the generic `metadata` checks
/// (DNS-subdomain names, labels, annotations, immutable fields on update).
pub fn validate_metadata(object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(meta::validate_object_meta_update(object, old));
    }
    errs.extend(meta::validate_object_meta(
        object,
        names::NameRule::Subdomain,
    ));
    errs
}

/// The Status message for a 422: `Service "web" is invalid: [a: ..., b: ...]` (one error: no
/// brackets), as apimachinery's `NewInvalid` formats it; `group` is the kind's API group.
pub fn invalid_message(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> String {
    let qualified = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut messages: Vec<String> = Vec::new();
    for e in errors {
        let m = e.message();
        if !messages.contains(&m) {
            messages.push(m);
        }
    }
    match messages.as_slice() {
        [] => format!("{qualified} {} is invalid", field::go_quote(name)),
        [one] => format!("{qualified} {} is invalid: {one}", field::go_quote(name)),
        many => format!(
            "{qualified} {} is invalid: [{}]",
            field::go_quote(name),
            many.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn invalid_message_formats_like_new_invalid() {
        let a = FieldError {
            kind: FieldErrorKind::Required,
            field: "spec.ports".into(),
            value: None,
            detail: String::new(),
        };
        let b = FieldError {
            kind: FieldErrorKind::Invalid,
            field: "spec.ports[0].port".into(),
            value: Some(json!(0)),
            detail: "must be between 1 and 65535, inclusive".into(),
        };
        assert_eq!(
            invalid_message("Service", "", "web", std::slice::from_ref(&a)),
            "Service \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            invalid_message("Service", "", "web", &[a.clone(), b, a.clone()]),
            "Service \"web\" is invalid: [spec.ports: Required value, spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive]"
        );
        assert_eq!(
            invalid_message("Deployment", "apps", "web", &[a.clone(), a]),
            "Deployment.apps \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            invalid_message("Lease", "coordination.k8s.io", "l", &[]),
            "Lease.coordination.k8s.io \"l\" is invalid"
        );
    }

    #[test]
    fn a_service_of_unknown_type_is_invalid() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        let mut svc = svc;
        apply_defaults("Service", &mut svc);
        assert!(validate("Service", &svc, None).is_empty());
        svc["spec"]["type"] = json!("Foo");
        let errors = validate("Service", &svc, None);
        assert_eq!(
            invalid_message("Service", "", "web", &errors),
            "Service \"web\" is invalid: spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""
        );
    }

    #[test]
    fn unknown_kinds_get_metadata_checks_and_no_defaults() {
        let mut cm = json!({"metadata": {"name": "Bad_Name"}, "data": {}});
        let before = cm.clone();
        apply_defaults("ConfigMap", &mut cm);
        assert_eq!(cm, before);
        assert_eq!(validate("ConfigMap", &cm, None).len(), 1);
    }

    #[test]
    fn malformed_objects_do_not_panic() {
        let kinds = [
            "Pod",
            "Service",
            "Deployment",
            "ReplicaSet",
            "Node",
            "Namespace",
            "Endpoints",
            "EndpointSlice",
            "Event",
            "Lease",
            "Scale",
            "Other",
        ];
        let shapes = [
            json!(null),
            json!("x"),
            json!({"metadata": 5, "spec": "x"}),
            json!({"metadata": {"name": "é-"}, "spec": {"ports": "x", "containers": [1, "a", null], "selector": 3}}),
            json!({"spec": {"template": {"spec": {"containers": [{"ports": [7]}], "volumes": [null]}}}}),
            json!({"subsets": [1], "endpoints": [{"addresses": [1]}], "ports": [null], "involvedObject": 1}),
        ];
        for kind in kinds {
            for shape in &shapes {
                let mut obj = shape.clone();
                apply_defaults(kind, &mut obj);
                let _ = validate(kind, &obj, Some(shape));
                let _ = validate(kind, shape, None);
                let mut upd = shape.clone();
                prepare_for_update(kind, &mut upd, &obj);
            }
        }
    }

    #[test]
    fn prepare_for_update_copies_server_fields() {
        let old = json!({"metadata": {"name": "a", "uid": "u", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3}});
        let mut new = json!({"metadata": {"name": "a", "creationTimestamp": "2020-01-01T00:00:00Z", "generation": 1}});
        prepare_for_update("ConfigMap", &mut new, &old);
        assert_eq!(new, old);
        assert!(validate("ConfigMap", &new, Some(&old)).is_empty());
    }
}
