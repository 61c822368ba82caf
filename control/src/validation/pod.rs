//! Pod defaulting (core/v1 `SetDefaults_Pod`, `SetDefaults_PodSpec`, containers, probes,
//! volumes) and Pod validation on create and update, plus pod templates for workloads.
//!
//! A Pod's spec is nearly immutable: an update may only change images, shorten
//! `activeDeadlineSeconds`, add tolerations and remove scheduling gates. Binding a Pod to a node
//! goes through the binding subresource, not through an update validated here.

use serde_json::{Map, Value, json};

use super::container::validate_image_whitespace;
use super::field::{FieldError, Path};
use super::json::{
    arr_of, bool_of, child_mut, default_ptr, default_zero, each_mut, get, int_of, obj_mut, str_of,
};
use super::meta::{
    validate_annotations, validate_labels, validate_object_meta, validate_object_meta_update,
};
use super::names::{NameRule, inclusive_range_error};
use super::podspec::{validate_pod_spec, validate_tolerations};

const UPDATABLE_FIELDS: &str = "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Pod defaults (its spec's).
pub(crate) fn default_pod(obj: &mut Value) {
    default_pod_spec(obj_mut(obj, "spec"), true);
}

/// Defaults for a Pod object (`is_pod`) or a pod template's spec.
pub(crate) fn default_pod_spec(spec: &mut Value, is_pod: bool) {
    default_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    default_zero(spec, "restartPolicy", json!("Always"));
    default_ptr(spec, "securityContext", json!({}));
    default_ptr(spec, "terminationGracePeriodSeconds", json!(30));
    default_zero(spec, "schedulerName", json!("default-scheduler"));
    each_mut(spec, "volumes", default_volume);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        each_mut(spec, list, default_container);
    }
    if !is_pod {
        return;
    }
    default_ptr(spec, "enableServiceLinks", json!(true));
    let host_network = bool_of(spec, "hostNetwork");
    for list in ["containers", "initContainers"] {
        each_mut(spec, list, |c| {
            default_requests_from_limits(c);
            if host_network {
                each_mut(c, "ports", |port| {
                    let container_port = int_of(port, "containerPort").unwrap_or(0);
                    default_zero(port, "hostPort", json!(container_port));
                });
            }
        });
    }
}

fn default_requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .pointer("/resources/limits")
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let requests = obj_mut(obj_mut(c, "resources"), "requests");
    for (k, v) in limits {
        default_ptr(requests, &k, v);
    }
}

fn default_volume(vol: &mut Value) {
    let has_source = vol
        .as_object()
        .is_some_and(|m| m.iter().any(|(k, v)| k != "name" && !v.is_null()));
    if !has_source {
        vol["emptyDir"] = json!({});
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = child_mut(vol, source) {
            default_ptr(s, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = child_mut(vol, "hostPath") {
        default_ptr(host_path, "type", json!(""));
    }
    if let Some(projected) = child_mut(vol, "projected") {
        each_mut(projected, "sources", |src| {
            if let Some(token) = child_mut(src, "serviceAccountToken") {
                default_ptr(token, "expirationSeconds", json!(3600));
            }
        });
    }
}

fn default_container(c: &mut Value) {
    if str_of(c, "imagePullPolicy").is_empty() {
        let policy = if image_tag(str_of(c, "image")) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        c["imagePullPolicy"] = json!(policy);
    }
    default_zero(c, "terminationMessagePath", json!("/dev/termination-log"));
    default_zero(c, "terminationMessagePolicy", json!("File"));
    each_mut(c, "ports", |port| {
        default_zero(port, "protocol", json!("TCP"))
    });
    each_mut(c, "env", |ev| {
        if let Some(field_ref) = c_ref(ev, &["valueFrom", "fieldRef"]) {
            default_zero(field_ref, "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = child_mut(c, probe) {
            default_zero(p, "timeoutSeconds", json!(1));
            default_zero(p, "periodSeconds", json!(10));
            default_zero(p, "successThreshold", json!(1));
            default_zero(p, "failureThreshold", json!(3));
            default_handler(p);
            if let Some(grpc) = child_mut(p, "grpc") {
                default_ptr(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = child_mut(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = child_mut(lifecycle, hook) {
                default_handler(h);
            }
        }
    }
}

fn c_ref<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |cur, key| child_mut(cur, key))
}

fn default_handler(h: &mut Value) {
    if let Some(http) = child_mut(h, "httpGet") {
        default_zero(http, "path", json!("/"));
        default_zero(http, "scheme", json!("HTTP"));
    }
}

/// The tag `parsers.ParseImageName` finds: `latest` when there is neither tag nor digest.
fn image_tag(image: &str) -> &str {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[last_slash + i + 1..],
        None if digest.is_none() => "latest",
        None => "",
    }
}

/// `ValidatePodCreate` / `ValidatePodUpdate`.
pub(crate) fn validate_pod(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(obj, old));
    }
    errs.extend(validate_object_meta(obj, NameRule::Subdomain));
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let sp = Path::new("spec");
    errs.extend(validate_pod_spec(spec, &sp, true));
    errs.extend(validate_image_whitespace(
        arr_of(spec, "containers"),
        &sp.child("containers"),
    ));
    errs.extend(validate_image_whitespace(
        arr_of(spec, "initContainers"),
        &sp.child("initContainers"),
    ));
    match old {
        None => {
            if !arr_of(spec, "ephemeralContainers").is_empty() {
                errs.push(FieldError::forbidden(
                    &sp.child("ephemeralContainers"),
                    "cannot be set on create",
                ));
            }
            if !str_of(spec, "nodeName").is_empty() && !arr_of(spec, "schedulingGates").is_empty() {
                errs.push(FieldError::forbidden(
                    &sp.child("nodeName"),
                    "cannot be set until all schedulingGates have been cleared",
                ));
            }
        }
        Some(old) => errs.extend(validate_pod_spec_update(
            spec,
            old.get("spec").unwrap_or(&Value::Null),
        )),
    }
    errs
}

fn validate_pod_spec_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    for list in ["containers", "initContainers"] {
        let (n, o) = (arr_of(new, list), arr_of(old, list));
        if n.len() != o.len() {
            errs.push(FieldError::forbidden(
                &sp.child(list),
                "pod updates may not add or remove containers",
            ));
            return errs;
        }
        for (i, c) in n.iter().enumerate() {
            if str_of(c, "image").is_empty() {
                errs.push(FieldError::required(
                    &sp.child(list).index(i).child("image"),
                    "",
                ));
            }
        }
    }
    let ads_path = sp.child("activeDeadlineSeconds");
    match (
        int_of(new, "activeDeadlineSeconds"),
        int_of(old, "activeDeadlineSeconds"),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldError::invalid(
                &ads_path,
                n,
                &inclusive_range_error(0, i64::from(i32::MAX)),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                &ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => {
            errs.push(FieldError::invalid(
                &ads_path,
                Value::Null,
                "must not update from a positive integer to nil value",
            ));
        }
        _ => {}
    }
    errs.extend(validate_tolerations_update(new, old, &sp));
    let old_gates: Vec<&str> = arr_of(old, "schedulingGates")
        .iter()
        .map(|g| str_of(g, "name"))
        .collect();
    errs.extend(validate_scheduling_gates_update(new, &old_gates, &sp));
    errs.extend(validate_unchanged_rest(new, old, &old_gates, &sp));
    errs
}

/// Existing tolerations stay (but for their tolerationSeconds); new ones must be valid.
fn validate_tolerations_update(new: &Value, old: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let tol_path = sp.child("tolerations");
    let strip_seconds = |t: &Value| {
        let mut t = normalize(t);
        t.as_object_mut().map(|m| m.remove("tolerationSeconds"));
        t
    };
    let new_tols: Vec<Value> = arr_of(new, "tolerations")
        .iter()
        .map(strip_seconds)
        .collect();
    if arr_of(old, "tolerations")
        .iter()
        .any(|t| !new_tols.contains(&strip_seconds(t)))
    {
        errs.push(FieldError::forbidden(
            &tol_path,
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    } else {
        errs.extend(validate_tolerations(arr_of(new, "tolerations"), &tol_path));
    }
    errs
}

/// Scheduling gates may only be removed.
fn validate_scheduling_gates_update(new: &Value, old_gates: &[&str], sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, gate) in arr_of(new, "schedulingGates").iter().enumerate() {
        let name = str_of(gate, "name");
        if !old_gates.contains(&name) {
            let detail =
                format!("only deletion is allowed, but found new scheduling gate '{name}'");
            errs.push(FieldError::forbidden(
                &sp.child("schedulingGates").index(i).child("name"),
                &detail,
            ));
        }
    }
    errs
}

/// Everything else in the spec may not change: compares the specs with the updatable fields
/// (images, activeDeadlineSeconds, schedulingGates, tolerations, a grace of 1 after a negative
/// one, nodeSelector additions while gated) taken from the stored Pod.
fn validate_unchanged_rest(
    new: &Value,
    old: &Value,
    old_gates: &[&str],
    sp: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut munged = new.clone();
    for list in ["containers", "initContainers"] {
        let old_list = arr_of(old, list).to_vec();
        let mut i = 0;
        each_mut(&mut munged, list, |c| {
            c["image"] = old_list
                .get(i)
                .and_then(|o| o.get("image"))
                .cloned()
                .unwrap_or(Value::Null);
            i += 1;
        });
    }
    for key in ["activeDeadlineSeconds", "schedulingGates", "tolerations"] {
        copy_member(&mut munged, old, key);
    }
    if int_of(old, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
        && int_of(&munged, "terminationGracePeriodSeconds") == Some(1)
    {
        copy_member(&mut munged, old, "terminationGracePeriodSeconds");
    }
    if !old_gates.is_empty() {
        let old_selector = old.get("nodeSelector").and_then(Value::as_object);
        let additions_only = old_selector.is_none_or(|o| {
            o.iter()
                .all(|(k, v)| munged.get("nodeSelector").and_then(|n| n.get(k)) == Some(v))
        });
        if additions_only {
            copy_member(&mut munged, old, "nodeSelector");
        } else {
            let value = get(&munged, "nodeSelector").cloned().unwrap_or(Value::Null);
            let detail =
                "only additions to spec.nodeSelector are allowed (no mutations or deletions)";
            errs.push(FieldError::invalid(
                &sp.child("nodeSelector"),
                value,
                detail,
            ));
            copy_member(&mut munged, old, "nodeSelector");
        }
    }
    let (munged, old) = (normalize(&munged), normalize(old));
    if munged != old {
        let mut diff = Vec::new();
        json_diff("spec", &old, &munged, &mut diff);
        let detail = format!(
            "pod updates may not change fields other than {UPDATABLE_FIELDS}\n{}",
            diff.join("\n")
        );
        errs.push(FieldError::forbidden(sp, &detail));
    }
    errs
}

fn copy_member(dst: &mut Value, src: &Value, key: &str) {
    let Some(map) = dst.as_object_mut() else {
        return;
    };
    match src.get(key) {
        Some(v) => map.insert(key.to_string(), v.clone()),
        None => map.remove(key),
    };
}

/// Drops what Go's semantic equality ignores: nulls, empty strings, `false`, empty lists and maps.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let out: Map<String, Value> = m
                .iter()
                .map(|(k, x)| (k.clone(), normalize(x)))
                .filter(|(_, x)| !is_empty_value(x))
                .collect();
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::Number(_) => false,
    }
}

/// A short `-old`/`+new` listing of the paths that differ (Kubernetes prints a `cmp.Diff`).
fn json_diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (a, b) = (
                    o.get(k).unwrap_or(&Value::Null),
                    n.get(k).unwrap_or(&Value::Null),
                );
                json_diff(&format!("{path}.{k}"), a, b, out);
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                json_diff(&format!("{path}[{i}]"), a, b, out);
            }
        }
        (a, b) if a != b => {
            out.push(format!("- {path}: {a}"));
            out.push(format!("+ {path}: {b}"));
        }
        _ => {}
    }
}

/// `ValidatePodTemplateSpec` for a workload's `spec.template` at `p`.
pub(crate) fn validate_pod_template(template: &Value, p: &Path) -> Vec<FieldError> {
    let meta = template.get("metadata").unwrap_or(&Value::Null);
    let mut errs = validate_labels(meta, "labels", &p.child("labels"));
    errs.extend(validate_annotations(meta, &p.child("annotations")));
    let spec = template.get("spec").unwrap_or(&Value::Null);
    errs.extend(validate_pod_spec(spec, &p.child("spec"), false));
    if !arr_of(spec, "ephemeralContainers").is_empty() {
        let path = p.child("spec").child("ephemeralContainers");
        errs.push(FieldError::forbidden(
            &path,
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
