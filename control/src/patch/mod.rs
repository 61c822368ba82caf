//! PATCH support for the apiserver: JSON patch, JSON merge patch, strategic merge patch and
//! (the merge half of) server-side apply.
//!
//! Kubernetes clients pick the format by Content-Type. JSON patch (RFC 6902) and merge patch
//! (RFC 7386) are generic and come from the `json-patch` crate. Strategic merge patch is
//! Kubernetes' own and what kubectl sends for built-in kinds; no maintained crate does it, so
//! [`strategic`] implements it over the per-kind list strategies in [`schema`]. Apply bodies
//! are merged like a strategic merge patch; field ownership is handled elsewhere.
//!
//! Errors follow the apiserver's `patch.go`: a body that cannot be read as a patch is
//! malformed (400); a well-formed patch that does not fit the object (a failed JSON patch
//! `test`, a missing path) cannot be applied (422). [`PatchError::http_status`] says which.
//! Messages carry their cause's text, since they go to the client as a `Status` message.

pub mod schema;
mod strategic;

use serde_json::Value;

pub use schema::KindSchema;
pub use strategic::strategic_merge;

/// The most operations one JSON patch may carry (the apiserver's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A patch format, chosen by the request's Content-Type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// From the request Content-Type (parameters such as `; charset=utf-8` ignored); `None` for
    /// anything else.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        [
            ("application/json-patch+json", Self::Json),
            ("application/merge-patch+json", Self::Merge),
            (
                "application/strategic-merge-patch+json",
                Self::StrategicMerge,
            ),
            ("application/apply-patch+yaml", Self::Apply),
        ]
        .into_iter()
        .find_map(|(name, t)| essence.eq_ignore_ascii_case(name).then_some(t))
    }
}

/// Why a patch was refused.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not JSON.
    #[error("patch body is not valid JSON: {0}")]
    InvalidJson(#[source] serde_json::Error),
    /// An apply body that is not JSON (YAML bodies must be converted before they get here).
    #[error("apply patch body must be JSON: {0}")]
    ApplyNotJson(#[source] serde_json::Error),
    /// A merge, strategic merge or apply body that is not a JSON object.
    #[error("{0} patch must be a JSON object")]
    NotAnObject(&'static str),
    /// A JSON patch body that is not a list of operations.
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(#[source] serde_json::Error),
    /// A JSON patch with more operations than [`MAX_JSON_PATCH_OPERATIONS`].
    #[error("JSON patch has {count} operations, at most {max} are allowed")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A JSON patch operation failed: a `test` did not match, a path does not exist...
    #[error("JSON patch cannot be applied: {0}")]
    JsonPatchFailed(#[source] json_patch::PatchError),
    /// A `$`-prefixed key that is no directive.
    #[error("unknown patch directive {key:?} at {path}")]
    UnknownDirective {
        /// Where in the patch.
        path: String,
        /// The key.
        key: String,
    },
    /// A `$patch` value other than `replace`, `delete` or `merge`.
    #[error("invalid $patch value {value} at {path}")]
    BadPatchDirective {
        /// Where in the patch.
        path: String,
        /// The value, as JSON.
        value: String,
    },
    /// An element of a merging list without the list's merge key.
    #[error("element of {path} lacks the merge key {key:?}")]
    MissingMergeKey {
        /// The list.
        path: String,
        /// The merge key.
        key: String,
    },
    /// A `$deleteFromPrimitiveList` whose value is not a list.
    #[error("invalid patch format of primitive list at {path}")]
    BadPrimitiveList {
        /// The list.
        path: String,
    },
    /// A `$retainKeys` that is not a list of field names, or a patch setting an unlisted field.
    #[error("invalid patch format of retainKeys at {path}")]
    BadRetainKeys {
        /// The map.
        path: String,
    },
    /// A `$setElementOrder` that is not a list, or that disagrees with the patch's list.
    #[error("invalid patch format of setElementOrder list at {path}")]
    BadSetElementOrder {
        /// The list.
        path: String,
    },
    /// A merging list mixing objects and scalars.
    #[error("elements of {path} are not all of one type")]
    MixedListElements {
        /// The list.
        path: String,
    },
    /// A merging list whose elements are lists.
    #[error("lists of lists are not supported (at {path})")]
    ListOfLists {
        /// The list.
        path: String,
    },
}

impl PatchError {
    /// Whether the patch body itself is malformed (HTTP 400), rather than well-formed but
    /// inapplicable to this object (422), too large (413) or of an unsupported kind (415).
    pub fn is_malformed(&self) -> bool {
        self.http_status() == 400
    }

    /// The HTTP status Kubernetes answers with (400 where it would answer 500 for a bad patch).
    pub fn http_status(&self) -> u16 {
        match self {
            Self::TooManyOperations { .. } => 413,
            Self::JsonPatchFailed(_) | Self::ListOfLists { .. } => 422,
            Self::InvalidJson(_)
            | Self::ApplyNotJson(_)
            | Self::NotAnObject(_)
            | Self::InvalidJsonPatch(_)
            | Self::UnknownDirective { .. }
            | Self::BadPatchDirective { .. }
            | Self::MissingMergeKey { .. }
            | Self::BadPrimitiveList { .. }
            | Self::BadRetainKeys { .. }
            | Self::BadSetElementOrder { .. }
            | Self::MixedListElements { .. } => 400,
        }
    }
}

/// Applies `patch` (the raw request body, JSON) of `patch_type` to `original` (the stored
/// object, JSON) of the kind `schema` describes. Apply bodies merge like a strategic merge patch.
pub fn apply_patch(
    patch_type: PatchType,
    schema: KindSchema,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => {
            let body: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
            let ops: json_patch::Patch =
                serde_json::from_value(body).map_err(PatchError::InvalidJsonPatch)?;
            if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
                return Err(PatchError::TooManyOperations {
                    count: ops.0.len(),
                    max: MAX_JSON_PATCH_OPERATIONS,
                });
            }
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops).map_err(PatchError::JsonPatchFailed)?;
            Ok(doc)
        }
        PatchType::Merge => {
            let body: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
            if !body.is_object() {
                return Err(PatchError::NotAnObject("merge"));
            }
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &body);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let body: Value = serde_json::from_slice(patch).map_err(PatchError::InvalidJson)?;
            strategic_merge(schema, original, &body)
        }
        PatchType::Apply => {
            let body: Value = serde_json::from_slice(patch).map_err(PatchError::ApplyNotJson)?;
            if !body.is_object() {
                return Err(PatchError::NotAnObject("apply"));
            }
            strategic_merge(schema, original, &body)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::schema::schema_of;
    use super::*;

    fn run(t: PatchType, kind: &str, original: &Value, body: &Value) -> Result<Value, PatchError> {
        apply_patch(t, schema_of(kind), original, body.to_string().as_bytes())
    }

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                        "env": [{"name": "MODE", "value": "prod"}, {"name": "DEBUG", "value": "1"}]},
                    {"name": "sidecar", "image": "envoy:1.30"}]}}},
            "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}})
    }

    #[test]
    fn content_types_pick_the_patch_type() {
        let cases = [
            ("application/json-patch+json", Some(PatchType::Json)),
            (
                "application/merge-patch+json; charset=utf-8",
                Some(PatchType::Merge),
            ),
            (
                "Application/Strategic-Merge-Patch+JSON",
                Some(PatchType::StrategicMerge),
            ),
            ("application/apply-patch+yaml", Some(PatchType::Apply)),
            ("application/json", None),
            ("", None),
        ];
        for (ct, want) in cases {
            assert_eq!(PatchType::from_content_type(ct), want, "{ct}");
        }
    }

    #[test]
    fn kubectl_apply_changes_only_the_named_containers_image() {
        let original = deployment();
        let body = json!({"metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}\n"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.28", "name": "web"}]}}}});
        let got = run(PatchType::StrategicMerge, "Deployment", &original, &body).unwrap();
        let mut want = original;
        want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}\n");
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
        assert_eq!(got, want);
    }

    #[test]
    fn kubectl_label_sends_a_merge_patch() {
        let original = deployment();
        let body = json!({"metadata": {"labels": {"tier": "front", "app": null}}});
        let got = run(PatchType::Merge, "Deployment", &original, &body).unwrap();
        assert_eq!(got["metadata"]["labels"], json!({"tier": "front"}));
        assert_eq!(got["spec"], original["spec"]);
    }

    #[test]
    fn kubectl_scale_sends_a_merge_patch_to_scale() {
        let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2}, "status": {"replicas": 2, "selector": "app=web"}});
        let got = run(
            PatchType::Merge,
            "Scale",
            &scale,
            &json!({"spec": {"replicas": 5}}),
        );
        let mut want = scale;
        want["spec"]["replicas"] = json!(5);
        assert_eq!(got.unwrap(), want);
    }

    #[test]
    fn strategic_patch_adding_a_service_port_keeps_the_others() {
        let svc = json!({"kind": "Service", "metadata": {"name": "web"}, "spec": {
            "selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}});
        let body = json!({"spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
        let got = run(PatchType::StrategicMerge, "Service", &svc, &body).unwrap();
        // Kubernetes puts a new element ahead of the untouched stored ones.
        assert_eq!(
            got["spec"]["ports"],
            json!([
            {"name": "https", "port": 443, "targetPort": 8443},
            {"name": "http", "port": 80, "targetPort": 8080}])
        );
        assert_eq!(got["spec"]["selector"], svc["spec"]["selector"]);
    }

    #[test]
    fn strategic_patch_deletes_an_env_var() {
        let body = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "env": [{"name": "DEBUG", "$patch": "delete"}]}]}}}});
        let got = run(
            PatchType::StrategicMerge,
            "Deployment",
            &deployment(),
            &body,
        )
        .unwrap();
        let containers = &got["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            containers[0]["env"],
            json!([{"name": "MODE", "value": "prod"}])
        );
        assert_eq!(
            containers[1],
            json!({"name": "sidecar", "image": "envoy:1.30"})
        );
    }

    #[test]
    fn apply_merges_the_configuration_and_keeps_server_fields() {
        let body = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.28"}]}}}});
        let got = run(PatchType::Apply, "Deployment", &deployment(), &body).unwrap();
        assert_eq!(got["spec"]["replicas"], 3);
        assert_eq!(got["status"], deployment()["status"]);
        let containers = &got["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers[0]["image"], "nginx:1.28");
        assert_eq!(containers[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(containers[1]["name"], "sidecar");
        let err = apply_patch(
            PatchType::Apply,
            schema_of("Deployment"),
            &body,
            b"kind: Deployment\n",
        );
        assert!(matches!(err, Err(PatchError::ApplyNotJson(_))));
    }

    #[test]
    fn json_patch_applies_or_fails_as_a_whole() {
        let original = deployment();
        let body = json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]);
        let got = run(PatchType::Json, "Deployment", &original, &body).unwrap();
        assert_eq!(got["spec"]["replicas"], 3);
        assert_eq!(got["status"], original["status"]);

        let failing = [
            json!([{"op": "test", "path": "/spec/replicas", "value": 5},
                {"op": "replace", "path": "/spec/replicas", "value": 3}]),
            json!([{"op": "remove", "path": "/spec/paused"}]),
        ];
        for body in failing {
            let err = run(PatchType::Json, "Deployment", &original, &body).unwrap_err();
            assert!(matches!(err, PatchError::JsonPatchFailed(_)), "{err}");
            assert!(!err.is_malformed());
            assert!(err.to_string().contains("failed at path '/spec/"), "{err}");
            assert_eq!(err.http_status(), 422);
        }
    }

    #[test]
    fn malformed_bodies_are_bad_requests() {
        let d = deployment();
        let too_many = vec![json!({"op": "test", "path": "/kind", "value": "Deployment"}); 10_001];
        let cases = [
            (PatchType::Json, json!({"op": "replace"}), 400),
            (
                PatchType::Json,
                json!([{"op": "frobnicate", "path": "/a"}]),
                400,
            ),
            (PatchType::Json, Value::Array(too_many), 413),
            (PatchType::Merge, json!(["not", "an", "object"]), 400),
            (PatchType::StrategicMerge, json!(null), 400),
        ];
        for (t, body, status) in cases {
            let err = run(t, "Deployment", &d, &body).unwrap_err();
            assert_eq!(err.http_status(), status, "{t:?} {body}: {err}");
            assert_eq!(err.is_malformed(), status == 400);
        }
        for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
            let err = apply_patch(t, schema_of("Deployment"), &d, b"{not json").unwrap_err();
            assert!(matches!(err, PatchError::InvalidJson(_)) && err.is_malformed());
        }
    }

    #[test]
    fn directives_never_reach_the_result() {
        let body = json!({"metadata": {"finalizers": ["f"],
                "$deleteFromPrimitiveList/finalizers": ["g"]},
            "spec": {"$patch": "merge", "$setElementOrder/containers": [{"name": "c"}],
                "containers": [{"name": "c", "$patch": "merge",
                    "env": [{"name": "gone", "$patch": "delete"}, {"name": "E", "value": null}]}],
                "volumes": [{"name": "v", "$retainKeys": ["name", "emptyDir"], "emptyDir": {}}],
                "tolerations": [{"key": "t", "$patch": "delete"}, {"key": "u"}]}});
        let want = json!({"metadata": {"finalizers": ["f"]},
            "spec": {"containers": [{"name": "c", "env": [{"name": "E"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "u"}]}});
        let got = run(PatchType::StrategicMerge, "Pod", &json!({}), &body).unwrap();
        assert_eq!(got, want);
    }

    #[test]
    fn bad_strategic_patches_are_refused_with_specific_errors() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        let cases = [
            (
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "lacks the merge key",
                400,
            ),
            (
                json!({"spec": {"containers": [{"name": "a", "$patch": "drop"}]}}),
                "$patch",
                400,
            ),
            (
                json!({"spec": {"$frobnicate": 1}}),
                "unknown patch directive",
                400,
            ),
            (
                json!({"spec": {"containers": ["a"]}}),
                "not all of one type",
                400,
            ),
            (
                json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
                "primitive",
                400,
            ),
            (
                json!({"spec": {"containers": [["a"]]}}),
                "lists of lists",
                422,
            ),
        ];
        for (body, want, status) in cases {
            let err = run(PatchType::StrategicMerge, "Pod", &pod, &body).unwrap_err();
            assert!(err.to_string().contains(want), "{err} should say {want}");
            assert_eq!(err.http_status(), status, "{err}");
        }
    }
}
