//! Deployment and ReplicaSet defaulting (apps/v1) and validation (apps `ValidateDeployment`,
//! `ValidateReplicaSet`), including the pod template each carries.

use serde_json::{Value, json};

use super::field::{FieldError, Path};
use super::json::{
    IntOrString, default_ptr, default_zero, get, int_of, obj_mut, str_of, string_map,
};
use super::meta::{
    IMMUTABLE, Selector, selector_value, validate_label_selector, validate_nonnegative,
    validate_object_meta, validate_object_meta_update,
};
use super::names::{NameRule, is_valid_percent};
use super::pod::{default_pod_spec, validate_pod_template};

/// `SetDefaults_Deployment` / `SetDefaults_ReplicaSet` and the template's pod spec defaults.
fn default_workload(obj: &mut Value, deployment: bool) {
    let spec = obj_mut(obj, "spec");
    default_ptr(spec, "replicas", json!(1));
    if deployment {
        let strategy = obj_mut(spec, "strategy");
        default_zero(strategy, "type", json!("RollingUpdate"));
        if str_of(strategy, "type") == "RollingUpdate" {
            let rolling = obj_mut(strategy, "rollingUpdate");
            default_ptr(rolling, "maxUnavailable", json!("25%"));
            default_ptr(rolling, "maxSurge", json!("25%"));
        }
        default_ptr(spec, "revisionHistoryLimit", json!(10));
        default_ptr(spec, "progressDeadlineSeconds", json!(600));
    }
    let template = obj_mut(spec, "template");
    default_pod_spec(obj_mut(template, "spec"), false);
}

/// Deployment defaults.
pub(crate) fn default_deployment(obj: &mut Value) {
    default_workload(obj, true);
}

/// ReplicaSet defaults.
pub(crate) fn default_replica_set(obj: &mut Value) {
    default_workload(obj, false);
}

/// `ValidateDeployment` / `ValidateDeploymentUpdate`.
pub(crate) fn validate_deployment(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_workload(obj, old, true)
}

/// `ValidateReplicaSet` / `ValidateReplicaSetUpdate`.
pub(crate) fn validate_replica_set(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    validate_workload(obj, old, false)
}

/// Deployment or ReplicaSet validation on create (`old == None`) and update.
fn validate_workload(obj: &Value, old: Option<&Value>, deployment: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    match old {
        Some(old) => errs.extend(validate_object_meta_update(obj, old)),
        None => errs.extend(validate_object_meta(obj, NameRule::Subdomain)),
    }
    errs.extend(validate_nonnegative(
        int_of(spec, "replicas").unwrap_or(0),
        &sp.child("replicas"),
    ));
    if !deployment {
        errs.extend(validate_nonnegative(
            int_of(spec, "minReadySeconds").unwrap_or(0),
            &sp.child("minReadySeconds"),
        ));
    }
    let selector = get(spec, "selector");
    match selector {
        None => errs.push(FieldError::required(&sp.child("selector"), "")),
        Some(sel) => {
            errs.extend(validate_label_selector(sel, &sp.child("selector")));
            if Selector::parse(Some(sel)).is_ok_and(|s| s.is_empty()) {
                // Kubernetes says "deployment" for ReplicaSets too.
                let value = selector_value(Some(sel));
                errs.push(FieldError::invalid(
                    &sp.child("selector"),
                    value,
                    "empty selector is invalid for deployment",
                ));
            }
        }
    }
    match Selector::parse(selector) {
        Err(()) => {
            errs.push(FieldError::invalid(
                &sp.child("selector"),
                selector_value(selector),
                "invalid label selector",
            ));
        }
        Ok(parsed) => errs.extend(validate_template(spec, &parsed, &sp.child("template"))),
    }
    if deployment {
        errs.extend(validate_strategy(spec, &sp.child("strategy")));
        let min_ready = int_of(spec, "minReadySeconds").unwrap_or(0);
        errs.extend(validate_nonnegative(
            min_ready,
            &sp.child("minReadySeconds"),
        ));
        if let Some(limit) = int_of(spec, "revisionHistoryLimit") {
            errs.extend(validate_nonnegative(
                limit,
                &sp.child("revisionHistoryLimit"),
            ));
        }
        if let Some(deadline) = int_of(spec, "progressDeadlineSeconds") {
            let p = sp.child("progressDeadlineSeconds");
            errs.extend(validate_nonnegative(deadline, &p));
            if deadline <= min_ready {
                errs.push(FieldError::invalid(
                    &p,
                    deadline,
                    "must be greater than minReadySeconds",
                ));
            }
        }
    }
    if let Some(old) = old {
        // apps/v1 strategies: the selector is immutable after creation.
        let old_sel = old.get("spec").and_then(|s| get(s, "selector"));
        if selector_value(selector) != selector_value(old_sel) {
            errs.push(FieldError::invalid(
                &sp.child("selector"),
                selector_value(selector),
                IMMUTABLE,
            ));
        }
    }
    errs
}

/// `ValidatePodTemplateSpecForReplicaSet`.
fn validate_template(spec: &Value, selector: &Selector<'_>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let null = Value::Null;
    let template = spec.get("template").unwrap_or(&null);
    let meta = template.get("metadata").unwrap_or(&null);
    if !selector.is_empty() && !selector.matches(&string_map(meta, "labels")) {
        let labels = get(meta, "labels").cloned().unwrap_or(Value::Null);
        let path = p.child("metadata").child("labels");
        errs.push(FieldError::invalid(
            &path,
            labels,
            "`selector` does not match template `labels`",
        ));
    }
    errs.extend(validate_pod_template(template, p));
    let pod_spec = template.get("spec").unwrap_or(&null);
    let restart = str_of(pod_spec, "restartPolicy");
    if restart != "Always" {
        errs.push(FieldError::not_supported(
            &p.child("spec").child("restartPolicy"),
            restart,
            &["Always"],
        ));
    }
    if get(pod_spec, "activeDeadlineSeconds").is_some() {
        let path = p.child("spec").child("activeDeadlineSeconds");
        errs.push(FieldError::forbidden(
            &path,
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    errs
}

fn validate_strategy(spec: &Value, p: &Path) -> Vec<FieldError> {
    let null = Value::Null;
    let strategy = spec.get("strategy").unwrap_or(&null);
    match str_of(strategy, "type") {
        "Recreate" if get(strategy, "rollingUpdate").is_some() => {
            vec![FieldError::forbidden(
                &p.child("rollingUpdate"),
                "may not be specified when strategy `type` is 'Recreate'",
            )]
        }
        "Recreate" => Vec::new(),
        "RollingUpdate" => match get(strategy, "rollingUpdate") {
            None => vec![FieldError::required(
                &p.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )],
            Some(rolling) => validate_rolling_update(rolling, &p.child("rollingUpdate")),
        },
        other => {
            // Go prints the internal apps.DeploymentStrategy struct.
            let value =
                json!({"Type": other, "RollingUpdate": get(strategy, "rollingUpdate").cloned()});
            vec![FieldError::not_supported(
                p,
                value,
                &["Recreate", "RollingUpdate"],
            )]
        }
    }
}

fn validate_rolling_update(rolling: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let max_unavailable = IntOrString::read(get(rolling, "maxUnavailable"));
    let max_surge = IntOrString::read(get(rolling, "maxSurge"));
    errs.extend(validate_int_or_percent(
        &max_unavailable,
        &p.child("maxUnavailable"),
    ));
    errs.extend(validate_int_or_percent(&max_surge, &p.child("maxSurge")));
    if int_or_percent_value(&max_unavailable) == 0 && int_or_percent_value(&max_surge) == 0 {
        let detail = "may not be 0 when `maxSurge` is 0";
        errs.push(FieldError::invalid(
            &p.child("maxUnavailable"),
            max_unavailable.to_value(),
            detail,
        ));
    }
    if percent_value(&max_unavailable).is_some_and(|v| v > 100) {
        let detail = "must not be greater than 100%";
        errs.push(FieldError::invalid(
            &p.child("maxUnavailable"),
            max_unavailable.to_value(),
            detail,
        ));
    }
    errs
}

/// `ValidatePositiveIntOrPercent`.
fn validate_int_or_percent(v: &IntOrString, p: &Path) -> Vec<FieldError> {
    match v {
        IntOrString::Str(s) => is_valid_percent(s)
            .iter()
            .map(|m| FieldError::invalid(p, v.to_value(), m))
            .collect(),
        IntOrString::Int(i) => validate_nonnegative(*i, p),
    }
}

fn percent_value(v: &IntOrString) -> Option<i64> {
    match v {
        IntOrString::Str(s) if is_valid_percent(s).is_empty() => {
            s.trim_end_matches('%').parse().ok()
        }
        _ => None,
    }
}

fn int_or_percent_value(v: &IntOrString) -> i64 {
    match (percent_value(v), v) {
        (Some(p), _) => p,
        (None, IntOrString::Int(i)) => *i,
        (None, IntOrString::Str(s)) => s.parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{apply_defaults, validate};

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
                }
            }
        })
    }

    fn errors(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
        validate(kind, obj, old)
            .iter()
            .map(FieldError::message)
            .collect()
    }

    fn defaulted(mut obj: Value, kind: &str) -> Value {
        apply_defaults(kind, &mut obj);
        obj
    }

    #[test]
    fn valid_deployment_gets_defaults() {
        let d = defaulted(deployment(), "Deployment");
        assert_eq!(errors("Deployment", &d, None), Vec::<String>::new());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert!(pod.get("enableServiceLinks").is_none(), "Pod-only default");
    }

    #[test]
    fn selector_rules() {
        let mut d = defaulted(deployment(), "Deployment");
        d["spec"]["selector"] = json!({"matchLabels": {"app": "api"}});
        assert_eq!(
            errors("Deployment", &d, None),
            vec![
                r#"spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match template `labels`"#
            ]
        );
        d["spec"]["selector"] = json!({});
        assert_eq!(
            errors("Deployment", &d, None),
            vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
        );
        d.as_object_mut()
            .and_then(|o| o["spec"].as_object_mut())
            .map(|s| s.remove("selector"));
        assert_eq!(
            errors("Deployment", &d, None),
            vec![
                "spec.selector: Required value",
                r#"spec.template.metadata.labels: Invalid value: {"app":"web"}: `selector` does not match template `labels`"#
            ]
        );
    }

    #[test]
    fn replicas_strategy_and_restart_policy() {
        let mut d = defaulted(deployment(), "Deployment");
        d["spec"]["replicas"] = json!(-1);
        d["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            errors("Deployment", &d, None),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
                "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"
            ]
        );
        let mut d = defaulted(deployment(), "Deployment");
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"] = json!("abc");
        assert_eq!(
            errors("Deployment", &d, None),
            vec![
                "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"abc\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"
            ]
        );
    }

    #[test]
    fn template_pod_spec_is_validated() {
        let mut d = defaulted(deployment(), "Deployment");
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Web");
        let errs = errors("Deployment", &d, None);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("spec.template.spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"));
    }

    #[test]
    fn selector_is_immutable() {
        let old = defaulted(deployment(), "Deployment");
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"]["tier"] = json!("fe");
        new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("fe");
        assert_eq!(
            errors("Deployment", &new, Some(&old)),
            vec![
                r#"spec.selector: Invalid value: {"matchLabels":{"app":"web","tier":"fe"}}: field is immutable"#
            ]
        );
    }

    #[test]
    fn replica_set() {
        let mut rs = deployment();
        rs["kind"] = json!("ReplicaSet");
        let rs = defaulted(rs, "ReplicaSet");
        assert_eq!(errors("ReplicaSet", &rs, None), Vec::<String>::new());
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(rs["spec"].get("strategy").is_none());
        let mut bad = rs;
        bad["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        assert_eq!(
            errors("ReplicaSet", &bad, None),
            vec![
                "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported"
            ]
        );
    }
}
