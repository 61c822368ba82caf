//! `metadata` rules shared by every kind, plus labels, annotations and label selectors.
//!
//! Follows apimachinery's `ValidateObjectMeta`/`ValidateObjectMetaUpdate` and core's finalizer
//! check. The namespace of namespaced kinds is set and checked by the request handler, so it is
//! not examined here.

use serde_json::Value;

use super::field::{FieldError, Path};
use super::json::{arr_of, bool_of, get, int_of, str_of, string_map, strings_of};
use super::names::{NameRule, is_label_value, is_qualified_name};

/// `field is immutable`.
pub(crate) const IMMUTABLE: &str = "field is immutable";
/// `must be greater than or equal to 0`.
pub(crate) const NEGATIVE: &str = "must be greater than or equal to 0";
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

/// Create-time checks of `metadata` for an object whose names follow `rule`.
pub(crate) fn validate_object_meta(obj: &Value, rule: NameRule) -> Vec<FieldError> {
    let path = Path::new("metadata");
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    let generate_name = str_of(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            errs.push(FieldError::invalid(
                &path.child("generateName"),
                generate_name,
                &msg,
            ));
        }
    }
    let name = str_of(meta, "name");
    if name.is_empty() {
        // The store generates the name from generateName before it writes, so a generateName
        // alone is enough here.
        if generate_name.is_empty() {
            errs.push(FieldError::required(
                &path.child("name"),
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            errs.push(FieldError::invalid(&path.child("name"), name, &msg));
        }
    }
    errs.extend(validate_meta_common(meta, &path));
    let finalizers = strings_of(meta, "finalizers");
    for (i, f) in finalizers.iter().enumerate() {
        errs.extend(validate_kube_finalizer_name(
            f,
            &path.child("finalizers").index(i),
        ));
    }
    errs
}

fn validate_meta_common(meta: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(g) = int_of(meta, "generation").filter(|g| *g < 0) {
        errs.push(FieldError::invalid(&path.child("generation"), g, NEGATIVE));
    }
    errs.extend(validate_labels(meta, "labels", &path.child("labels")));
    errs.extend(validate_annotations(meta, &path.child("annotations")));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(meta, &path.child("finalizers")));
    errs
}

/// Update-time checks of `metadata`: immutable identity fields and finalizers while deleting.
pub(crate) fn validate_object_meta_update(obj: &Value, old: &Value) -> Vec<FieldError> {
    let path = Path::new("metadata");
    let null = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&null);
    let old_meta = old.get("metadata").unwrap_or(&null);
    let mut errs = Vec::new();
    if get(old_meta, "deletionTimestamp").is_some() {
        let old_f = strings_of(old_meta, "finalizers");
        let mut extra: Vec<&str> = strings_of(meta, "finalizers")
            .into_iter()
            .filter(|f| !old_f.contains(f))
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            let listed: Vec<String> = extra.iter().map(|f| format!("{f:?}")).collect();
            let detail = format!(
                "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                listed.join(", ")
            );
            errs.push(FieldError::forbidden(&path.child("finalizers"), &detail));
        }
    }
    if let Some(g) = int_of(meta, "generation").filter(|g| *g < 0) {
        errs.push(FieldError::invalid(&path.child("generation"), g, NEGATIVE));
    }
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        let new_v = immutable_view(meta, field);
        if new_v != immutable_view(old_meta, field) {
            errs.push(FieldError::invalid(&path.child(field), new_v, IMMUTABLE));
        }
    }
    errs.extend(validate_labels(meta, "labels", &path.child("labels")));
    errs.extend(validate_annotations(meta, &path.child("annotations")));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    let finalizers = strings_of(meta, "finalizers");
    for (i, f) in finalizers.iter().enumerate() {
        errs.extend(validate_kube_finalizer_name(
            f,
            &path.child("finalizers").index(i),
        ));
    }
    errs
}

/// A metadata field as Go compares and prints it: strings default to `""`, the rest to `null`.
fn immutable_view(meta: &Value, field: &str) -> Value {
    match get(meta, field) {
        Some(v) => v.clone(),
        None if matches!(field, "name" | "namespace" | "uid") => Value::from(""),
        None => Value::Null,
    }
}

/// `ValidateImmutableField`: `Invalid(path, new, "field is immutable")` when they differ.
pub(crate) fn validate_immutable(new: &Value, old: &Value, path: &Path) -> Vec<FieldError> {
    if new == old {
        Vec::new()
    } else {
        vec![FieldError::invalid(path, new.clone(), IMMUTABLE)]
    }
}

/// `ValidateNonnegativeField`.
pub(crate) fn validate_nonnegative(value: i64, path: &Path) -> Vec<FieldError> {
    if value < 0 {
        vec![FieldError::invalid(path, value, NEGATIVE)]
    } else {
        Vec::new()
    }
}

/// `ValidateLabels` over the `map[string]string` member `key` of `holder`.
pub(crate) fn validate_labels(holder: &Value, key: &str, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in string_map(holder, key) {
        errs.extend(validate_label_name(k, path));
        for msg in is_label_value(v) {
            errs.push(FieldError::invalid(path, v, &msg));
        }
    }
    errs
}

/// `ValidateLabelName`: a qualified name.
pub(crate) fn validate_label_name(name: &str, path: &Path) -> Vec<FieldError> {
    is_qualified_name(name)
        .into_iter()
        .map(|msg| FieldError::invalid(path, name, &msg))
        .collect()
}

/// `ValidateQualifiedName`.
pub(crate) fn validate_qualified_name(value: &str, path: &Path) -> Vec<FieldError> {
    validate_label_name(value, path)
}

/// `ValidateAnnotations`: case-insensitive qualified-name keys, 256 KiB in total.
pub(crate) fn validate_annotations(holder: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in string_map(holder, "annotations") {
        for msg in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k, &msg));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(meta: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut first_controller: Option<String> = None;
    let refs = arr_of(meta, "ownerReferences");
    for (i, r) in refs.iter().enumerate() {
        let p = path.index(i);
        let api_version = str_of(r, "apiVersion");
        let version_ok = match api_version.split('/').collect::<Vec<_>>().as_slice() {
            [v] => !v.is_empty(),
            [_, v] => !v.is_empty(),
            _ => false,
        };
        if api_version.is_empty() {
            errs.push(FieldError::required(
                &p.child("apiVersion"),
                "must not be empty",
            ));
        } else if !version_ok {
            errs.push(FieldError::invalid(
                &p.child("apiVersion"),
                api_version,
                "must be <group>/<version> or <version>",
            ));
        }
        for field in ["kind", "name", "uid"] {
            if str_of(r, field).is_empty() {
                errs.push(FieldError::required(&p.child(field), "must not be empty"));
            }
        }
        if api_version == "v1" && str_of(r, "kind") == "Event" {
            errs.push(FieldError::invalid(
                &p,
                r.clone(),
                "/v1, Kind=Event is disallowed from being an owner",
            ));
        }
        if bool_of(r, "controller") {
            let current = format!("{}/{}", str_of(r, "kind"), str_of(r, "name"));
            match &first_controller {
                Some(first) => {
                    let detail = format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {current}"
                    );
                    errs.push(FieldError::invalid(
                        path,
                        Value::Array(refs.to_vec()),
                        &detail,
                    ));
                }
                None => first_controller = Some(current),
            }
        }
    }
    errs
}

fn validate_finalizers(meta: &Value, path: &Path) -> Vec<FieldError> {
    let finalizers = strings_of(meta, "finalizers");
    let mut errs: Vec<FieldError> = finalizers
        .iter()
        .flat_map(|f| validate_qualified_name(f, path))
        .collect();
    if finalizers.contains(&"orphan") && finalizers.contains(&"foregroundDeletion") {
        let all: Vec<Value> = finalizers.iter().map(|f| Value::from(*f)).collect();
        errs.push(FieldError::invalid(
            path,
            all,
            "finalizer orphan and foregroundDeletion cannot be both set",
        ));
    }
    errs
}

/// `validateKubeFinalizerName`: unqualified finalizers must be standard ones.
pub(crate) fn validate_kube_finalizer_name(name: &str, path: &Path) -> Vec<FieldError> {
    if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
        let msg = "name is neither a standard finalizer name nor is it fully qualified";
        return vec![FieldError::invalid(path, name, msg)];
    }
    Vec::new()
}

/// `ValidateLabelSelector` (strict label values).
pub(crate) fn validate_label_selector(selector: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(selector, "matchLabels", &path.child("matchLabels"));
    for (i, expr) in arr_of(selector, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = strings_of(expr, "values");
        match str_of(expr, "operator") {
            "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                &p.child("values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                &p.child("values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            op => errs.push(FieldError::invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        errs.extend(validate_label_name(str_of(expr, "key"), &p.child("key")));
        for (j, v) in values.iter().enumerate() {
            for msg in is_label_value(v) {
                errs.push(FieldError::invalid(&p.child("values").index(j), *v, &msg));
            }
        }
    }
    errs
}

/// A label selector as `metav1.LabelSelectorAsSelector` builds it.
#[derive(Debug)]
pub(crate) enum Selector<'a> {
    /// A nil selector: matches nothing.
    Nothing,
    /// Requirements that must all hold (empty: matches everything).
    Requirements(Vec<(&'a str, &'a str, Vec<&'a str>)>),
}

impl<'a> Selector<'a> {
    /// Converts a wire selector; `Err(())` where Kubernetes' conversion fails.
    pub(crate) fn parse(selector: Option<&'a Value>) -> Result<Self, ()> {
        let Some(sel) = selector else {
            return Ok(Self::Nothing);
        };
        let mut reqs = Vec::new();
        for (k, v) in string_map(sel, "matchLabels") {
            if !is_qualified_name(k).is_empty() || !is_label_value(v).is_empty() {
                return Err(());
            }
            reqs.push((k, "In", vec![v]));
        }
        for expr in arr_of(sel, "matchExpressions") {
            let (key, op, values) = (
                str_of(expr, "key"),
                str_of(expr, "operator"),
                strings_of(expr, "values"),
            );
            let ok_shape = match op {
                "In" | "NotIn" => !values.is_empty(),
                "Exists" | "DoesNotExist" => values.is_empty(),
                _ => false,
            };
            if !ok_shape
                || !is_qualified_name(key).is_empty()
                || values.iter().any(|v| !is_label_value(v).is_empty())
            {
                return Err(());
            }
            reqs.push((key, op, values));
        }
        Ok(Self::Requirements(reqs))
    }

    /// `labels.Selector.Empty()`.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Self::Requirements(r) if r.is_empty())
    }

    /// Whether the labels of `holder` (a `map[string]string` member `key`) match.
    pub(crate) fn matches(&self, labels: &[(&str, &str)]) -> bool {
        let Self::Requirements(reqs) = self else {
            return false;
        };
        reqs.iter().all(|(key, op, values)| {
            let found = labels.iter().find(|(k, _)| k == key).map(|(_, v)| *v);
            match *op {
                "In" => found.is_some_and(|v| values.contains(&v)),
                "NotIn" => found.is_none_or(|v| !values.contains(&v)),
                "Exists" => found.is_some(),
                _ => found.is_none(),
            }
        })
    }
}

/// A wire selector as Go's `json.Marshal(metav1.LabelSelector)` prints it (empty parts omitted).
pub(crate) fn selector_value(selector: Option<&Value>) -> Value {
    let Some(sel) = selector else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    if let Some(m) =
        get(sel, "matchLabels").filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
    {
        out.insert("matchLabels".into(), m.clone());
    }
    let exprs: Vec<Value> = arr_of(sel, "matchExpressions")
        .iter()
        .map(|e| {
            let mut r = serde_json::Map::new();
            r.insert("key".into(), Value::from(str_of(e, "key")));
            r.insert("operator".into(), Value::from(str_of(e, "operator")));
            if !arr_of(e, "values").is_empty() {
                r.insert("values".into(), Value::Array(arr_of(e, "values").to_vec()));
            }
            Value::Object(r)
        })
        .collect();
    if !exprs.is_empty() {
        out.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: Vec<FieldError>) -> Vec<String> {
        errs.into_iter().map(|e| e.message()).collect()
    }

    #[test]
    fn name_rules() {
        let ok = json!({"metadata": {"name": "web", "labels": {"app": "web"}}});
        assert!(validate_object_meta(&ok, NameRule::Subdomain).is_empty());
        assert_eq!(
            msgs(validate_object_meta(
                &json!({"metadata": {}}),
                NameRule::Subdomain
            )),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        assert!(
            validate_object_meta(
                &json!({"metadata": {"generateName": "web-"}}),
                NameRule::Subdomain
            )
            .is_empty()
        );
        let bad = validate_object_meta(
            &json!({"metadata": {"generateName": "Web-"}}),
            NameRule::Subdomain,
        );
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].field, "metadata.generateName");
    }

    #[test]
    fn labels_and_annotations() {
        let obj = json!({"metadata": {"name": "a", "labels": {"a/b/c": "x", "ok": "bad value"}}});
        let errs = validate_object_meta(&obj, NameRule::Subdomain);
        assert_eq!(errs.len(), 2);
        assert!(
            errs[0]
                .message()
                .starts_with("metadata.labels: Invalid value: \"a/b/c\": a valid label key")
        );
        assert!(
            errs[1]
                .message()
                .starts_with("metadata.labels: Invalid value: \"bad value\": a valid label must")
        );
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let obj = json!({"metadata": {"name": "a", "annotations": {"Example.COM/Key": big}}});
        assert_eq!(
            msgs(validate_object_meta(&obj, NameRule::Subdomain)),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn immutable_identity() {
        let old = json!({"metadata": {"name": "a", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        let new = json!({"metadata": {"name": "b", "namespace": "ns", "uid": "u2", "creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(
            msgs(validate_object_meta_update(&new, &old)),
            vec![
                "metadata.name: Invalid value: \"b\": field is immutable",
                "metadata.uid: Invalid value: \"u2\": field is immutable"
            ]
        );
        let deleting = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x/a"]}});
        let more = json!({"metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x/a", "x/b"]}});
        assert_eq!(
            msgs(validate_object_meta_update(&more, &deleting)),
            vec![
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"x/b\"}"
            ]
        );
    }

    #[test]
    fn finalizers_and_owners() {
        let obj = json!({"metadata": {"name": "a", "finalizers": ["custom"], "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": ""}]}});
        assert_eq!(
            msgs(validate_object_meta(&obj, NameRule::Subdomain)),
            vec![
                "metadata.ownerReferences[0].uid: Required value: must not be empty",
                "metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"
            ]
        );
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]});
        let s = Selector::parse(Some(&sel)).unwrap();
        assert!(s.matches(&[("app", "web"), ("tier", "fe")]));
        assert!(!s.matches(&[("app", "web"), ("tier", "db")]));
        assert!(Selector::parse(Some(&json!({}))).unwrap().is_empty());
        assert!(!Selector::parse(None).unwrap().matches(&[]));
        let bad = json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]});
        assert!(Selector::parse(Some(&bad)).is_err());
        assert_eq!(
            msgs(validate_label_selector(
                &bad,
                &Path::new("spec").child("selector")
            )),
            vec![
                "spec.selector.matchExpressions[0].operator: Invalid value: \"Foo\": not a valid selector operator"
            ]
        );
    }
}
