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
//! 1. decode, then [`apply_defaults`];
//! 2. on update, [`prepare_for_update`] (the registry strategies' `PrepareForUpdate`);
//! 3. [`validate`]; if it returns errors, answer 422 with [`invalid_message`] as the Status
//!    message and one cause per error (`reason()`, `field`, `body()`).
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

/// A rejected write: what [`validate`] found, ready to become a 422 `Status`.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The object is invalid; `causes` are the field errors.
    #[error("{}", invalid_message(kind, name, causes))]
    Invalid {
        /// The object's kind, e.g. `Service`.
        kind: String,
        /// The object's name.
        name: String,
        /// Every problem found.
        causes: Vec<FieldError>,
    },
}

/// Fills in the defaults Kubernetes' v1 defaulting applies, in place.
///
/// `kind` is e.g. "Pod", "Service", "Deployment"; unknown kinds are left untouched.
pub fn apply_defaults(kind: &str, object: &mut Value) {
    if !object.is_object() {
        return;
    }
    match kind {
        "Service" => service::default_service(object),
        "Pod" => pod::default_pod_spec(json::obj_mut(object, "spec"), true),
        "Deployment" => apps::default_workload(object, true),
        "ReplicaSet" => apps::default_workload(object, false),
        "Namespace" => other::default_namespace(object),
        "Node" => other::default_node(object),
        "Endpoints" => other::default_endpoints(object),
        "EndpointSlice" => other::default_endpoint_slice(object),
        _ => {}
    }
}

/// Adjusts an update the way the registry strategies do before validation: keeps status
/// (Service, Namespace finalizers), copies server-owned metadata the client may have omitted
/// (`uid`, `creationTimestamp`, `generation`), and drops Service fields a type change leaves
/// unused. Call after [`apply_defaults`] and before [`validate`].
pub fn prepare_for_update(kind: &str, object: &mut Value, old: &Value) {
    if !object.is_object() {
        return;
    }
    if let Some(old_meta) = old.get("metadata") {
        let meta = json::obj_mut(object, "metadata");
        for key in ["uid", "creationTimestamp", "generation"] {
            let omitted = json::get(meta, key).is_none();
            if let Some(v) = json::get(old_meta, key).filter(|_| omitted || key != "uid") {
                meta[key] = v.clone();
            }
        }
    }
    match kind {
        "Service" => service_ips::prepare_service_update(object, old),
        "Namespace" => {
            if let Some(finalizers) = old.pointer("/spec/finalizers") {
                json::obj_mut(object, "spec")["finalizers"] = finalizers.clone();
            }
            if let Some(status) = old.get("status") {
                object["status"] = status.clone();
            }
        }
        _ => {}
    }
}

/// Validates `object` of `kind`; `old` is the stored object on update (for immutable fields),
/// `None` on create. Returns every problem found (empty = valid).
///
/// Unknown kinds get the generic `metadata` checks (DNS-subdomain names, labels, annotations).
pub fn validate(kind: &str, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match kind {
        "Service" => service::validate_service(object, old),
        "Pod" => pod::validate_pod(object, old),
        "Deployment" => apps::validate_workload(object, old, true),
        "ReplicaSet" => apps::validate_workload(object, old, false),
        "Namespace" => other::validate_namespace(object, old),
        "Node" => other::validate_node(object, old),
        "Endpoints" => other::validate_endpoints(object, old),
        "EndpointSlice" => other::validate_endpoint_slice(object, old),
        "Event" => other::validate_event(object, old),
        "Lease" => other::validate_lease(object, old),
        "Scale" => other::validate_scale(object, old),
        _ => {
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
    }
}

/// Like [`validate`], as a `Result` carrying the kind and name for the 422 answer.
pub fn check(kind: &str, object: &Value, old: Option<&Value>) -> Result<(), ValidationError> {
    let causes = validate(kind, object, old);
    if causes.is_empty() {
        return Ok(());
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    Err(ValidationError::Invalid {
        kind: kind.to_string(),
        name: name.to_string(),
        causes,
    })
}

/// The API group of a served kind (`""` for core), for `Status.details.group`.
pub fn api_group(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "ControllerRevision" => "apps",
        "EndpointSlice" => "discovery.k8s.io",
        "Lease" => "coordination.k8s.io",
        "Scale" => "autoscaling",
        _ => "",
    }
}

/// The Status message for a 422: `Service "web" is invalid: [a: ..., b: ...]` (one error: no
/// brackets), as apimachinery's `NewInvalid` formats it.
pub fn invalid_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let group = api_group(kind);
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
            invalid_message("Service", "web", std::slice::from_ref(&a)),
            "Service \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            invalid_message("Service", "web", &[a.clone(), b.clone(), a.clone()]),
            "Service \"web\" is invalid: [spec.ports: Required value, spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive]"
        );
        assert_eq!(
            invalid_message("Deployment", "web", &[a.clone(), a]),
            "Deployment.apps \"web\" is invalid: spec.ports: Required value"
        );
        assert_eq!(
            invalid_message("Lease", "l", &[]),
            "Lease.coordination.k8s.io \"l\" is invalid"
        );
        let err = ValidationError::Invalid {
            kind: "Service".into(),
            name: "web".into(),
            causes: vec![b],
        };
        assert!(
            err.to_string()
                .starts_with("Service \"web\" is invalid: spec.ports[0].port")
        );
    }

    #[test]
    fn check_names_the_object() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
        let mut svc = svc;
        apply_defaults("Service", &mut svc);
        assert!(check("Service", &svc, None).is_ok());
        svc["spec"]["type"] = json!("Foo");
        let err = check("Service", &svc, None).unwrap_err();
        assert_eq!(
            err.to_string(),
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
