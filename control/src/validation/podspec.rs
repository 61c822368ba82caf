//! Pod spec rules shared by Pods and pod templates (core `ValidatePodSpec`).

use serde_json::Value;

use super::container::{validate_containers, validate_ids, validate_init_containers};
use super::field::{FieldError, Path};
use super::json::{arr_of, bool_of, get, int_of, str_of, strings_of};
use super::meta::{validate_label_name, validate_labels, validate_qualified_name};
use super::names::{
    NameRule, inclusive_range_error, is_dns1123_label, is_dns1123_subdomain, is_label_value,
};
use super::net::validate_ip;

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// `ValidatePodSpec`; `is_pod` is false for templates (Deployments, ReplicaSets).
pub(crate) fn validate_pod_spec(spec: &Value, p: &Path, is_pod: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let grace = int_of(spec, "terminationGracePeriodSeconds");
    if get(spec, "terminationGracePeriodSeconds").is_none() {
        errs.push(FieldError::required(
            &p.child("terminationGracePeriodSeconds"),
            "",
        ));
    }
    errs.extend(validate_volumes(
        arr_of(spec, "volumes"),
        &p.child("volumes"),
    ));
    let containers = arr_of(spec, "containers");
    errs.extend(validate_containers(
        containers,
        grace,
        &p.child("containers"),
    ));
    errs.extend(validate_init_containers(
        arr_of(spec, "initContainers"),
        containers,
        grace,
        &p.child("initContainers"),
    ));
    errs.extend(validate_host_network_ports(spec, containers, p, is_pod));
    errs.extend(enum_field(
        spec,
        "restartPolicy",
        &["Always", "OnFailure", "Never"],
        p,
    ));
    errs.extend(enum_field(
        spec,
        "dnsPolicy",
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        p,
    ));
    errs.extend(validate_labels(
        spec,
        "nodeSelector",
        &p.child("nodeSelector"),
    ));
    if let Some(sc) = get(spec, "securityContext") {
        errs.extend(validate_ids(sc, &p.child("securityContext")));
    }
    errs.extend(validate_dns_config(spec, &p.child("dnsConfig")));
    errs.extend(validate_gates(spec, p));
    errs.extend(validate_topology_spread(
        arr_of(spec, "topologySpreadConstraints"),
        &p.child("topologySpreadConstraints"),
    ));
    errs.extend(validate_referenced_names(spec, p));
    if let Some(ads) =
        int_of(spec, "activeDeadlineSeconds").filter(|v| !(1..=i64::from(i32::MAX)).contains(v))
    {
        let detail = inclusive_range_error(1, i64::from(i32::MAX));
        errs.push(FieldError::invalid(
            &p.child("activeDeadlineSeconds"),
            ads,
            &detail,
        ));
    }
    errs.extend(validate_tolerations(
        arr_of(spec, "tolerations"),
        &p.child("tolerations"),
    ));
    errs.extend(validate_host_and_runtime(spec, p));
    errs
}

/// With `hostNetwork`, a container port is the host port: a hostPort must match it (in a Pod,
/// an unset one too).
fn validate_host_network_ports(
    spec: &Value,
    containers: &[Value],
    p: &Path,
    is_pod: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if bool_of(spec, "hostNetwork") {
        for (i, c) in containers.iter().enumerate() {
            for (j, port) in arr_of(c, "ports").iter().enumerate() {
                let (hp, cp) = (
                    int_of(port, "hostPort").unwrap_or(0),
                    int_of(port, "containerPort").unwrap_or(0),
                );
                if (is_pod || hp != 0) && hp != cp {
                    let path = p
                        .child("containers")
                        .index(i)
                        .child("ports")
                        .index(j)
                        .child("hostPort");
                    errs.push(FieldError::invalid(
                        &path,
                        hp,
                        "must match `containerPort` when `hostNetwork` is true",
                    ));
                }
            }
        }
    }
    errs
}

/// readinessGates' condition types and schedulingGates' names: qualified names, no repeats.
fn validate_gates(spec: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, gate) in arr_of(spec, "readinessGates").iter().enumerate() {
        let cp = p.child("readinessGates").index(i).child("conditionType");
        errs.extend(validate_qualified_name(str_of(gate, "conditionType"), &cp));
    }
    let gates: Vec<&str> = arr_of(spec, "schedulingGates")
        .iter()
        .map(|g| str_of(g, "name"))
        .collect();
    for (i, gate) in gates.iter().enumerate() {
        let gp = p.child("schedulingGates").index(i);
        errs.extend(validate_qualified_name(gate, &gp));
        if gates[..i].contains(gate) {
            errs.push(FieldError::duplicate(&gp, *gate));
        }
    }
    errs
}

/// The names a spec refers to by name: DNS subdomains or labels.
fn validate_referenced_names(spec: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (field, rule) in [
        ("serviceAccountName", NameRule::Subdomain),
        ("nodeName", NameRule::Subdomain),
        ("hostname", NameRule::Label),
        ("subdomain", NameRule::Label),
        ("priorityClassName", NameRule::Subdomain),
    ] {
        let value = str_of(spec, field);
        if !value.is_empty() {
            errs.extend(
                rule.check(value, false)
                    .iter()
                    .map(|m| FieldError::invalid(&p.child(field), value, m)),
            );
        }
    }
    errs
}

/// hostAliases, runtimeClassName, preemptionPolicy and os.
fn validate_host_and_runtime(spec: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, alias) in arr_of(spec, "hostAliases").iter().enumerate() {
        let ap = p.child("hostAliases").index(i);
        errs.extend(validate_ip(&ap.child("ip"), str_of(alias, "ip")));
        for (j, host) in strings_of(alias, "hostnames").iter().enumerate() {
            let hp = ap.child("hostnames").index(j);
            errs.extend(
                is_dns1123_subdomain(host)
                    .iter()
                    .map(|m| FieldError::invalid(&hp, *host, m)),
            );
        }
    }
    if let Some(rc) = get(spec, "runtimeClassName").and_then(Value::as_str) {
        errs.extend(
            is_dns1123_subdomain(rc)
                .iter()
                .map(|m| FieldError::invalid(&p.child("runtimeClassName"), rc, m)),
        );
    }
    if let Some(pp) = get(spec, "preemptionPolicy").map(|v| v.as_str().unwrap_or("")) {
        match pp {
            "PreemptLowerPriority" | "Never" => {}
            "" => errs.push(FieldError::required(&p.child("preemptionPolicy"), "")),
            other => errs.push(FieldError::not_supported(
                &p.child("preemptionPolicy"),
                other,
                &["PreemptLowerPriority", "Never"],
            )),
        }
    }
    if let Some(os) = get(spec, "os") {
        match str_of(os, "name") {
            "" => errs.push(FieldError::required(
                &p.child("os").child("name"),
                "cannot be empty",
            )),
            "linux" | "windows" => {}
            other => errs.push(FieldError::not_supported(
                &p.child("os"),
                other,
                &["linux", "windows"],
            )),
        }
    }
    errs
}

/// A required enumerated string member (`restartPolicy`, `dnsPolicy`).
fn enum_field(spec: &Value, key: &str, valid: &[&str], p: &Path) -> Vec<FieldError> {
    match str_of(spec, key) {
        "" => vec![FieldError::required(&p.child(key), "")],
        v if valid.contains(&v) => Vec::new(),
        v => vec![FieldError::not_supported(&p.child(key), v, valid)],
    }
}

fn validate_volumes(volumes: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, vol) in volumes.iter().enumerate() {
        let vp = p.index(i);
        let mut vol_errs = Vec::new();
        let sources: Vec<&String> = vol
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| k.as_str() != "name" && !v.is_null())
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        for extra in sources.iter().skip(1) {
            vol_errs.push(FieldError::forbidden(
                &vp.child(extra),
                "may not specify more than 1 volume type",
            ));
        }
        if sources.is_empty() {
            vol_errs.push(FieldError::required(&vp, "must specify a volume type"));
        }
        let name = str_of(vol, "name");
        if name.is_empty() {
            vol_errs.push(FieldError::required(&vp.child("name"), ""));
        } else {
            vol_errs.extend(
                is_dns1123_label(name)
                    .iter()
                    .map(|m| FieldError::invalid(&vp.child("name"), name, m)),
            );
        }
        if names.contains(&name) {
            vol_errs.push(FieldError::duplicate(&vp.child("name"), name));
        }
        if vol_errs.is_empty() {
            names.push(name);
        }
        errs.extend(vol_errs);
    }
    errs
}

fn validate_dns_config(spec: &Value, p: &Path) -> Vec<FieldError> {
    let config = get(spec, "dnsConfig");
    if str_of(spec, "dnsPolicy") == "None" {
        match config {
            None => {
                return vec![FieldError::required(
                    p,
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                )];
            }
            Some(c) if arr_of(c, "nameservers").is_empty() => {
                let detail = "must provide at least one DNS nameserver when `dnsPolicy` is None";
                return vec![FieldError::required(&p.child("nameservers"), detail)];
            }
            _ => {}
        }
    }
    let Some(config) = config else {
        return Vec::new();
    };
    let mut errs = Vec::new();
    let nameservers = strings_of(config, "nameservers");
    if nameservers.len() > 3 {
        let value = Value::Array(arr_of(config, "nameservers").to_vec());
        errs.push(FieldError::invalid(
            &p.child("nameservers"),
            value,
            "must not have more than 3 nameservers",
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        errs.extend(validate_ip(&p.child("nameservers").index(i), ns));
    }
    let searches = strings_of(config, "searches");
    let searches_value = Value::Array(arr_of(config, "searches").to_vec());
    if searches.len() > 32 {
        errs.push(FieldError::invalid(
            &p.child("searches"),
            searches_value.clone(),
            "must not have more than 32 search paths",
        ));
    }
    if searches.join(" ").len() > 2048 {
        let detail =
            "must not have more than 2048 characters (including spaces) in the search list";
        errs.push(FieldError::invalid(
            &p.child("searches"),
            searches_value,
            detail,
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        if *search == "." {
            continue;
        }
        let s = search.strip_suffix('.').unwrap_or(search);
        // Relaxed search validation (GA): underscores are allowed in labels.
        let plain = s.replace('_', "a");
        for msg in is_dns1123_subdomain(&plain) {
            errs.push(FieldError::invalid(&p.child("searches").index(i), s, &msg));
        }
    }
    for (i, option) in arr_of(config, "options").iter().enumerate() {
        if str_of(option, "name").is_empty() {
            errs.push(FieldError::required(
                &p.child("options").index(i),
                "must not be empty",
            ));
        }
    }
    errs
}

fn validate_topology_spread(constraints: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, c) in constraints.iter().enumerate() {
        let cp = p.index(i);
        let skew = int_of(c, "maxSkew").unwrap_or(0);
        if skew <= 0 {
            errs.push(FieldError::invalid(
                &cp.child("maxSkew"),
                skew,
                "must be greater than zero",
            ));
        }
        if str_of(c, "topologyKey").is_empty() {
            errs.push(FieldError::required(
                &cp.child("topologyKey"),
                "can not be empty",
            ));
        }
        let action = str_of(c, "whenUnsatisfiable");
        if !matches!(action, "DoNotSchedule" | "ScheduleAnyway") {
            errs.push(FieldError::not_supported(
                &cp.child("whenUnsatisfiable"),
                action,
                &["DoNotSchedule", "ScheduleAnyway"],
            ));
        }
        let key = (str_of(c, "topologyKey"), action);
        if constraints[i + 1..]
            .iter()
            .any(|o| (str_of(o, "topologyKey"), str_of(o, "whenUnsatisfiable")) == key)
        {
            let path = cp.child("{topologyKey, whenUnsatisfiable}");
            errs.push(FieldError::duplicate(
                &path,
                format!("{{{}, {}}}", key.0, key.1),
            ));
        }
    }
    errs
}

/// `ValidateTolerations`.
pub(crate) fn validate_tolerations(tolerations: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let tp = p.index(i);
        let (key, op, value, effect) = (
            str_of(t, "key"),
            str_of(t, "operator"),
            str_of(t, "value"),
            str_of(t, "effect"),
        );
        if !key.is_empty() {
            errs.extend(validate_label_name(key, &tp.child("key")));
        }
        if key.is_empty() && op != "Exists" {
            let detail = "operator must be Exists when `key` is empty, which means \"match all values and all keys\"";
            errs.push(FieldError::invalid(&tp.child("operator"), op, detail));
        }
        if get(t, "tolerationSeconds").is_some() && effect != "NoExecute" {
            let detail = "effect must be 'NoExecute' when `tolerationSeconds` is set";
            errs.push(FieldError::invalid(&tp.child("effect"), effect, detail));
        }
        match op {
            "Equal" | "" => {
                let msgs = is_label_value(value);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        &tp.child("operator"),
                        value,
                        &msgs.join(";"),
                    ));
                }
            }
            "Exists" if !value.is_empty() => {
                let detail = "value must be empty when `operator` is 'Exists'";
                errs.push(FieldError::invalid(&tp.child("operator"), value, detail));
            }
            "Exists" => {}
            other => errs.push(FieldError::not_supported(
                &tp.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                &tp.child("effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
    }
    errs
}

/// `validateNodeTaints` (Node `spec.taints`, reported under `fldPath` as Kubernetes does).
pub(crate) fn validate_taints(taints: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in taints.iter().enumerate() {
        let tp = p.index(i);
        let (key, value, effect) = (str_of(t, "key"), str_of(t, "value"), str_of(t, "effect"));
        errs.extend(validate_label_name(key, &tp.child("key")));
        let msgs = is_label_value(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                &tp.child("value"),
                value,
                &msgs.join(";"),
            ));
        }
        if effect.is_empty() {
            errs.push(FieldError::required(&tp.child("effect"), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                &tp.child("effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
        if seen.contains(&(key, effect)) {
            let time_added = get(t, "timeAdded").cloned().unwrap_or(Value::Null);
            let value = serde_json::json!({"Key": key, "Value": value, "Effect": effect, "TimeAdded": time_added});
            let mut dup = FieldError::duplicate(&tp, value);
            dup.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(dup);
            continue;
        }
        seen.push((key, effect));
    }
    errs
}
