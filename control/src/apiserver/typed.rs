//! Strict decoding against the real Kubernetes types (k8s-openapi).
//!
//! Objects travel through the apiserver as JSON values so that patches, defaulting and
//! field selectors work on any kind alike. To know whether a body *is* a valid Pod — right
//! field types, no unknown fields — it is decoded into k8s-openapi's `Pod` and encoded back:
//! a decode error is a malformed object, and any key of the input that did not survive the
//! round trip is a field the type does not have.

use serde_json::Value;

use crate::resources::Resource;

/// Why a body does not fit its type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A field has the wrong JSON type, or similar.
    #[error("{0}")]
    Malformed(String),
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &Value,
) -> Result<Value, DecodeError> {
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    serde_json::to_value(&typed).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// The round trip of `value` through the type of `kind` in `group` (unknown kinds pass as is).
fn typed_round_trip(group: &str, kind: &str, value: &Value) -> Result<Value, DecodeError> {
    use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery};
    match (group, kind) {
        ("", "Namespace") => round_trip::<core::v1::Namespace>(value),
        ("", "Node") => round_trip::<core::v1::Node>(value),
        ("", "Pod") => round_trip::<core::v1::Pod>(value),
        ("", "Service") => round_trip::<core::v1::Service>(value),
        ("", "Endpoints") => round_trip::<core::v1::Endpoints>(value),
        ("", "Event") => round_trip::<core::v1::Event>(value),
        ("", "Binding") => round_trip::<core::v1::Binding>(value),
        ("apps", "Deployment") => round_trip::<apps::v1::Deployment>(value),
        ("apps", "ReplicaSet") => round_trip::<apps::v1::ReplicaSet>(value),
        ("discovery.k8s.io", "EndpointSlice") => round_trip::<discovery::v1::EndpointSlice>(value),
        ("coordination.k8s.io", "Lease") => round_trip::<coordination::v1::Lease>(value),
        ("autoscaling", "Scale") => round_trip::<autoscaling::v1::Scale>(value),
        _ => Ok(value.clone()),
    }
}

/// Checks `value` against `resource`'s type; returns the paths of fields the type lacks
/// (`spec.replica`), or the decode error.
pub fn unknown_fields(resource: &Resource, value: &Value) -> Result<Vec<String>, DecodeError> {
    unknown_fields_of(resource.group, resource.kind, value)
}

/// As [`unknown_fields`], for any kind this module knows (Scale, Binding...).
pub fn unknown_fields_of(
    group: &str,
    kind: &str,
    value: &Value,
) -> Result<Vec<String>, DecodeError> {
    let back = typed_round_trip(group, kind, value)?;
    let mut unknown = Vec::new();
    missing_paths(value, &back, "", &mut unknown);
    Ok(unknown)
}

fn missing_paths(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(inp), Value::Object(outp)) => {
            for (key, value) in inp {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match outp.get(key) {
                    Some(back) => missing_paths(value, back, &child, out),
                    // A null for an optional field decodes to "absent": not unknown.
                    None if value.is_null() => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(inp), Value::Array(outp)) => {
            for (i, (a, b)) in inp.iter().zip(outp).enumerate() {
                missing_paths(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployments() -> &'static Resource {
        crate::resources::find("apps", "v1", "deployments").unwrap()
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labelz": {}},
            "spec": {"replica": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "x", "imagePolicy": "y"}]}}}
        });
        let unknown = unknown_fields(deployments(), &body).unwrap();
        assert_eq!(
            unknown,
            vec![
                "metadata.labelz",
                "spec.replica",
                "spec.template.spec.containers[0].imagePolicy"
            ]
        );
    }

    #[test]
    fn a_valid_object_has_no_unknown_fields_and_nulls_are_fine() {
        let body = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "creationTimestamp": null},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "x",
                                           "resources": {"requests": {"cpu": "100m"}}}]}}},
            "status": {}
        });
        assert_eq!(
            unknown_fields(deployments(), &body).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn wrong_types_are_malformed() {
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                          "spec": {"replicas": "three"}});
        assert!(matches!(
            unknown_fields(deployments(), &body),
            Err(DecodeError::Malformed(_))
        ));
    }
}
