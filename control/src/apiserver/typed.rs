//! Strict decoding against the real Kubernetes types (k8s-openapi).
//!
//! Objects travel through the apiserver as JSON values so that patches, defaulting and
//! field selectors work on any kind alike. To know whether a body *is* a valid Pod — right
//! field types, no unknown fields — it is decoded into k8s-openapi's `Pod` and encoded back:
//! a decode error is a malformed object, and any key of the input that did not survive the
//! round trip is a field the type does not have.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a body does not fit its type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A field has the wrong JSON type, or similar.
    #[error("{0}")]
    Malformed(String),
}

/// Checks `value` against the Kubernetes type `T`: returns the paths of fields `T` lacks
/// (`spec.replica`), or the decode error. Each resource's entry names this for its own type.
pub fn unknown_fields<T: DeserializeOwned + Serialize>(
    value: &Value,
) -> Result<Vec<String>, DecodeError> {
    let typed: T =
        serde_json::from_value(value.clone()).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| DecodeError::Malformed(e.to_string()))?;
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

    use crate::resources::Resource;

    fn deployments() -> &'static Resource {
        crate::resources::find("apps", "v1", "deployments").unwrap()
    }

    fn unknown_fields(resource: &Resource, value: &Value) -> Result<Vec<String>, DecodeError> {
        resource.unknown_fields(value)
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
