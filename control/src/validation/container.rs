//! Container rules (core `validateContainers`, `validateInitContainers`, probes and handlers).
//!
//! Resource quantities, volume devices and security-context details beyond user/group ids are
//! left to the kubelet; everything a user commonly gets wrong in a manifest is checked here with
//! Kubernetes' wording.

use serde_json::Value;

use super::field::{FieldError, Path};
use super::json::{IntOrString, arr_of, get, int_of, str_of, strings_of};
use super::meta::validate_nonnegative;
use super::names::{
    inclusive_range_error, is_dns1123_label, is_env_var_name, is_http_header_name,
    is_valid_port_name, is_valid_port_num,
};
use super::service::{validate_port_num_or_name, validate_protocol};

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const MAX_ID: i64 = i32::MAX as i64;
const INIT_FORBIDDEN: &str = "may not be set for init containers without restartPolicy=Always";

/// Regular containers: at least one, unique names, probes and lifecycle, host-port conflicts.
pub(crate) fn validate_containers(
    containers: &[Value],
    grace: Option<i64>,
    p: &Path,
) -> Vec<FieldError> {
    if containers.is_empty() {
        return vec![FieldError::required(p, "")];
    }
    let mut errs = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let cp = p.index(i);
        errs.extend(validate_container_common(c, &cp));
        let name = str_of(c, "name");
        if names.contains(&name) {
            errs.push(FieldError::duplicate(&cp.child("name"), name));
        } else {
            names.push(name);
        }
        errs.extend(validate_probes_and_lifecycle(c, grace, &cp));
        if get(c, "restartPolicy").is_some() {
            errs.push(FieldError::forbidden(
                &cp.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    errs.extend(check_host_port_conflicts(containers, p));
    errs
}

/// Init containers: unique against regular ones too; probes only for restartable (sidecar) ones.
pub(crate) fn validate_init_containers(
    init: &[Value],
    regular: &[Value],
    grace: Option<i64>,
    p: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: Vec<&str> = regular.iter().map(|c| str_of(c, "name")).collect();
    for (i, c) in init.iter().enumerate() {
        let cp = p.index(i);
        errs.extend(validate_container_common(c, &cp));
        let restart = get(c, "restartPolicy").map(|v| v.as_str().unwrap_or(""));
        if let Some(policy) = restart.filter(|r| *r != "Always") {
            errs.push(FieldError::not_supported(
                &cp.child("restartPolicy"),
                policy,
                &["Always"],
            ));
        }
        let name = str_of(c, "name");
        if names.contains(&name) {
            errs.push(FieldError::duplicate(&cp.child("name"), name));
        } else if !name.is_empty() {
            names.push(name);
        }
        errs.extend(check_host_port_conflicts(std::slice::from_ref(c), p));
        if restart == Some("Always") {
            errs.extend(validate_probes_and_lifecycle(c, grace, &cp));
        } else {
            for field in [
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ] {
                if get(c, field).is_some() {
                    errs.push(FieldError::forbidden(&cp.child(field), INIT_FORBIDDEN));
                }
            }
        }
    }
    errs
}

fn validate_container_common(c: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(c, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&p.child("name"), ""));
    } else {
        errs.extend(
            is_dns1123_label(name)
                .iter()
                .map(|m| FieldError::invalid(&p.child("name"), name, m)),
        );
    }
    if str_of(c, "image").is_empty() {
        errs.push(FieldError::required(&p.child("image"), ""));
    }
    match str_of(c, "terminationMessagePolicy") {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            &p.child("terminationMessagePolicy"),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            &p.child("terminationMessagePolicy"),
            other,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    errs.extend(validate_container_ports(
        arr_of(c, "ports"),
        &p.child("ports"),
    ));
    errs.extend(validate_env(arr_of(c, "env"), &p.child("env")));
    errs.extend(validate_env_from(arr_of(c, "envFrom"), &p.child("envFrom")));
    errs.extend(validate_volume_mounts(
        arr_of(c, "volumeMounts"),
        &p.child("volumeMounts"),
    ));
    match str_of(c, "imagePullPolicy") {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(&p.child("imagePullPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            &p.child("imagePullPolicy"),
            other,
            PULL_POLICIES,
        )),
    }
    if let Some(sc) = get(c, "securityContext") {
        errs.extend(validate_ids(sc, &p.child("securityContext")));
    }
    errs
}

/// `runAsUser`/`runAsGroup` (and pod-level `fsGroup`, `supplementalGroups`) are 0..=2^31-1.
pub(crate) fn validate_ids(sc: &Value, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["fsGroup", "runAsUser", "runAsGroup"] {
        if let Some(id) = int_of(sc, field).filter(|id| !(0..=MAX_ID).contains(id)) {
            errs.push(FieldError::invalid(
                &p.child(field),
                id,
                &inclusive_range_error(0, MAX_ID),
            ));
        }
    }
    for (i, gid) in arr_of(sc, "supplementalGroups").iter().enumerate() {
        if let Some(gid) = gid.as_i64().filter(|g| !(0..=MAX_ID).contains(g)) {
            errs.push(FieldError::invalid(
                &p.child("supplementalGroups").index(i),
                gid,
                &inclusive_range_error(0, MAX_ID),
            ));
        }
    }
    errs
}

fn validate_container_ports(ports: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = p.index(i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            if !msgs.is_empty() {
                errs.extend(
                    msgs.iter()
                        .map(|m| FieldError::invalid(&pp.child("name"), name, m)),
                );
            } else if names.contains(&name) {
                errs.push(FieldError::duplicate(&pp.child("name"), name));
            } else {
                names.push(name);
            }
        }
        match int_of(port, "containerPort").unwrap_or(0) {
            0 => errs.push(FieldError::required(&pp.child("containerPort"), "")),
            n => errs.extend(
                is_valid_port_num(n)
                    .iter()
                    .map(|m| FieldError::invalid(&pp.child("containerPort"), n, m)),
            ),
        }
        let host_port = int_of(port, "hostPort").unwrap_or(0);
        if host_port != 0 {
            errs.extend(
                is_valid_port_num(host_port)
                    .iter()
                    .map(|m| FieldError::invalid(&pp.child("hostPort"), host_port, m)),
            );
        }
        errs.extend(validate_protocol(
            str_of(port, "protocol"),
            &pp.child("protocol"),
        ));
    }
    errs
}

fn validate_env(vars: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in vars.iter().enumerate() {
        let ep = p.index(i);
        let name = str_of(ev, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&ep.child("name"), ""));
        } else {
            errs.extend(
                is_env_var_name(name)
                    .iter()
                    .map(|m| FieldError::invalid(&ep.child("name"), name, m)),
            );
        }
        let Some(from) = get(ev, "valueFrom") else {
            continue;
        };
        let vp = ep.child("valueFrom");
        let sources = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .iter()
        .filter(|k| get(from, k).is_some())
        .count();
        if sources == 0 {
            let detail = "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`";
            errs.push(FieldError::invalid(&vp, "", detail));
        } else if !str_of(ev, "value").is_empty() {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &vp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
        for (key, child) in [
            ("configMapKeyRef", "configMapKeyRef"),
            ("secretKeyRef", "secretKeyRef"),
        ] {
            if let Some(sel) = get(from, key)
                && str_of(sel, "key").is_empty()
            {
                errs.push(FieldError::required(&vp.child(child).child("key"), ""));
            }
        }
    }
    errs
}

fn validate_env_from(sources: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let prefix = str_of(src, "prefix");
        if !prefix.is_empty() {
            errs.extend(
                is_env_var_name(prefix)
                    .iter()
                    .map(|m| FieldError::invalid(&p.index(i).child("prefix"), prefix, m)),
            );
        }
        let refs = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| get(src, k).is_some())
            .count();
        if refs == 0 {
            errs.push(FieldError::invalid(
                p,
                "",
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if refs > 1 {
            errs.push(FieldError::invalid(
                p,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn validate_volume_mounts(mounts: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    for (i, m) in mounts.iter().enumerate() {
        let mp = p.index(i);
        if str_of(m, "name").is_empty() {
            errs.push(FieldError::required(&mp.child("name"), ""));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(&mp.child("mountPath"), ""));
        }
        if paths.contains(&mount_path) {
            errs.push(FieldError::invalid(
                &mp.child("mountPath"),
                mount_path,
                "must be unique",
            ));
        }
        paths.push(mount_path);
        let sub_path = str_of(m, "subPath");
        if sub_path.starts_with('/') {
            errs.push(FieldError::invalid(
                &p.child("subPath"),
                sub_path,
                "must be a relative path",
            ));
        }
        if sub_path.split('/').any(|s| s == "..") {
            errs.push(FieldError::invalid(
                &p.child("subPath"),
                sub_path,
                "must not contain '..'",
            ));
        }
    }
    errs
}

fn validate_probes_and_lifecycle(c: &Value, grace: Option<i64>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(lifecycle) = get(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(lifecycle, hook) {
                errs.extend(validate_handler(
                    h,
                    true,
                    grace,
                    &p.child("lifecycle").child(hook),
                ));
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let Some(pr) = get(c, probe) else { continue };
        let pp = p.child(probe);
        errs.extend(validate_handler(pr, false, grace, &pp));
        for field in [
            "initialDelaySeconds",
            "timeoutSeconds",
            "periodSeconds",
            "successThreshold",
            "failureThreshold",
        ] {
            errs.extend(validate_nonnegative(
                int_of(pr, field).unwrap_or(0),
                &pp.child(field),
            ));
        }
        let probe_grace = get(pr, "terminationGracePeriodSeconds");
        if let Some(g) = probe_grace.and_then(Value::as_i64).filter(|g| *g <= 0) {
            errs.push(FieldError::invalid(
                &pp.child("terminationGracePeriodSeconds"),
                g,
                "must be greater than 0",
            ));
        }
        if probe == "readinessProbe" {
            if let Some(g) = probe_grace {
                let detail = "must not be set for readinessProbes";
                errs.push(FieldError::invalid(
                    &pp.child("terminationGracePeriodSeconds"),
                    g.clone(),
                    detail,
                ));
            }
        } else if let Some(t) = int_of(pr, "successThreshold").filter(|t| *t != 1) {
            errs.push(FieldError::invalid(
                &pp.child("successThreshold"),
                t,
                "must be 1",
            ));
        }
    }
    errs
}

/// `validateHandler` for probes (`lifecycle == false`) and lifecycle hooks.
fn validate_handler(h: &Value, lifecycle: bool, grace: Option<i64>, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut count = 0;
    for kind in kinds {
        let Some(action) = get(h, kind) else { continue };
        let ap = p.child(kind);
        if count > 0 {
            errs.push(FieldError::forbidden(
                &ap,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match *kind {
            "exec" if strings_of(action, "command").is_empty() => {
                errs.push(FieldError::required(&ap.child("command"), ""));
            }
            "httpGet" => {
                if str_of(action, "path").is_empty() {
                    errs.push(FieldError::required(&ap.child("path"), ""));
                }
                errs.extend(validate_port_num_or_name(
                    &IntOrString::read(get(action, "port")),
                    &ap.child("port"),
                ));
                let scheme = str_of(action, "scheme");
                if !matches!(scheme, "HTTP" | "HTTPS") {
                    errs.push(FieldError::not_supported(
                        &ap.child("scheme"),
                        scheme,
                        &["HTTP", "HTTPS"],
                    ));
                }
                for header in arr_of(action, "httpHeaders") {
                    let name = str_of(header, "name");
                    errs.extend(
                        is_http_header_name(name)
                            .iter()
                            .map(|m| FieldError::invalid(&ap.child("httpHeaders"), name, m)),
                    );
                }
            }
            "tcpSocket" => {
                errs.extend(validate_port_num_or_name(
                    &IntOrString::read(get(action, "port")),
                    &ap.child("port"),
                ));
            }
            "grpc" => {
                let port = int_of(action, "port").unwrap_or(0);
                errs.extend(validate_port_num_or_name(
                    &IntOrString::Int(port),
                    &ap.child("port"),
                ));
            }
            "sleep" => {
                let seconds = int_of(action, "seconds").unwrap_or(0);
                if let Some(g) = grace.filter(|g| seconds < 0 || seconds > *g) {
                    let detail = format!(
                        "must be non-negative and less than terminationGracePeriodSeconds ({g})"
                    );
                    errs.push(FieldError::invalid(&ap, seconds, &detail));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(p, "must specify a handler type"));
    }
    errs
}

/// `checkHostPortConflicts`: one `protocol/hostIP/hostPort` per pod (per init container).
fn check_host_port_conflicts(containers: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for (ci, c) in containers.iter().enumerate() {
        for (pi, port) in arr_of(c, "ports").iter().enumerate() {
            let host_port = int_of(port, "hostPort").unwrap_or(0);
            if host_port == 0 {
                continue;
            }
            let key = format!(
                "{}/{}/{}",
                str_of(port, "protocol"),
                str_of(port, "hostIP"),
                host_port
            );
            if seen.contains(&key) {
                errs.push(FieldError::duplicate(
                    &p.index(ci).child("ports").index(pi).child("hostPort"),
                    key,
                ));
            } else {
                seen.push(key);
            }
        }
    }
    errs
}

/// Pods only (not templates): images may not carry leading or trailing whitespace.
pub(crate) fn validate_image_whitespace(containers: &[Value], p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let image = str_of(c, "image");
        if image.trim() != image {
            errs.push(FieldError::invalid(
                &p.index(i).child("image"),
                image,
                "must not have leading or trailing whitespace",
            ));
        }
    }
    errs
}
