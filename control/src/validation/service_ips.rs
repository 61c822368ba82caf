//! Service clusterIPs and ipFamilies (core `ValidateServiceClusterIPsRelatedFields`), the
//! update-only rules of `ValidateServiceUpdate`, and the registry's `PrepareForUpdate`
//! (`NormalizeClusterIPs`, `dropTypeDependentFields`).
//!
//! A Service keeps its clusterIPs and ipFamilies for life, except that a second family may be
//! added or removed and the whole set goes away when the Service becomes an ExternalName.

use serde_json::{Value, json};

use super::field::{FieldError, Path};
use super::json::{arr_of, each_mut, get, int_of, obj_mut, str_of, strings_of};
use super::net::{family_of, validate_ip};
use super::service::{externally_accessible, is_headless, needs_health_check, spec_of};

/// `ValidateServiceClusterIPsRelatedFields` plus the registry's single-stack check.
pub(crate) fn validate_cluster_ips(spec: &Value, sp: &Path) -> Vec<FieldError> {
    let ips_path = sp.child("clusterIPs");
    let ips = strings_of(spec, "clusterIPs");
    let ips_value = Value::Array(arr_of(spec, "clusterIPs").to_vec());
    let mut errs = validate_cluster_ip_matches(spec, &ips, &ips_value, &ips_path);
    let families = strings_of(spec, "ipFamilies");
    errs.extend(validate_family_names(&families, sp));
    let policy = get(spec, "ipFamilyPolicy").and_then(Value::as_str);
    if let Some(policy) =
        policy.filter(|p| !matches!(*p, "SingleStack" | "PreferDualStack" | "RequireDualStack"))
    {
        let valid = ["PreferDualStack", "RequireDualStack", "SingleStack"];
        errs.push(FieldError::not_supported(
            &sp.child("ipFamilyPolicy"),
            policy,
            &valid,
        ));
    }
    let mut has_invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && *ip == "None" {
            if ips.len() > 1 {
                has_invalid = true;
                errs.push(FieldError::invalid(
                    &ips_path,
                    ips_value.clone(),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        let ip_errs = validate_ip(&ips_path.index(i), ip);
        has_invalid |= !ip_errs.is_empty();
        errs.extend(ip_errs);
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid(
            &ips_path,
            ips_value.clone(),
            "may only hold up to 2 values",
        ));
    }
    if has_invalid {
        return errs;
    }
    if ips.len() > 1 {
        let v4 = ips
            .iter()
            .filter(|ip| family_of(ip) == Some("IPv4"))
            .count();
        if v4 == 0 || v4 == ips.len() {
            errs.push(FieldError::invalid(
                &ips_path,
                ips_value,
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !is_headless(spec) {
        for (i, (ip, family)) in ips.iter().zip(families.iter()).enumerate() {
            let actual = family_of(ip).unwrap_or("");
            if matches!(*family, "IPv4" | "IPv6") && actual != *family {
                let detail =
                    format!("expected an {family} value as indicated by `ipFamilies[{i}]`");
                errs.push(FieldError::invalid(&ips_path.index(i), *ip, &detail));
            }
        }
    }
    if policy == Some("SingleStack") {
        errs.extend(validate_single_stack(ips.len(), families.len(), sp));
    }
    errs
}

/// `clusterIPs[0]` is `clusterIP`; no clusterIPs without a clusterIP.
fn validate_cluster_ip_matches(
    spec: &Value,
    ips: &[&str],
    ips_value: &Value,
    ips_path: &Path,
) -> Vec<FieldError> {
    let cluster_ip = str_of(spec, "clusterIP");
    if !cluster_ip.is_empty() {
        if ips.is_empty() {
            return vec![FieldError::required(ips_path, "")];
        } else if ips[0] != cluster_ip {
            return vec![FieldError::invalid(
                ips_path,
                ips_value.clone(),
                "first value must match `clusterIP`",
            )];
        }
    } else if !ips.is_empty() {
        return vec![FieldError::invalid(
            ips_path,
            ips_value.clone(),
            "must be empty when `clusterIP` is not specified",
        )];
    }
    Vec::new()
}

/// Each ipFamily is IPv4 or IPv6, once.
fn validate_family_names(families: &[&str], sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, family) in families.iter().enumerate() {
        let p = sp.child("ipFamilies").index(i);
        if !matches!(*family, "IPv4" | "IPv6") {
            errs.push(FieldError::not_supported(&p, *family, &["IPv4", "IPv6"]));
        }
        if families[..i].contains(family) {
            errs.push(FieldError::duplicate(&p, *family));
        }
    }
    errs
}

/// A SingleStack Service holds one clusterIP and one ipFamily.
fn validate_single_stack(ips: usize, families: usize, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (what, n) in [("clusterIPs", ips), ("ipFamilies", families)] {
        if n == 2 {
            let detail = format!(
                "must be RequireDualStack or PreferDualStack when multiple '{what}' are specified"
            );
            errs.push(FieldError::invalid(
                &sp.child("ipFamilyPolicy"),
                "SingleStack",
                &detail,
            ));
        }
    }
    errs
}

/// Update-only rules: clusterIPs/ipFamilies may grow or shrink but not change, and so on.
pub(crate) fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let external_name =
        str_of(new, "type") == "ExternalName" || str_of(old, "type") == "ExternalName";
    let (new_headless, old_headless) = (is_headless(new), is_headless(old));
    let mut errs = Vec::new();
    if !(external_name || old_headless && new_headless) {
        errs.extend(validate_cluster_ips_update(new, old));
    }
    if !external_name && new_headless == old_headless && !new_headless {
        errs.extend(validate_ip_families_update(new, old));
    }
    let both_lb = str_of(new, "type") == "LoadBalancer" && str_of(old, "type") == "LoadBalancer";
    if both_lb && get(new, "loadBalancerClass") != get(old, "loadBalancerClass") {
        let value = get(new, "loadBalancerClass")
            .cloned()
            .unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            &Path::new("spec").child("loadBalancerClass"),
            value,
            "may not change once set",
        ));
    }
    if needs_health_check(new)
        && needs_health_check(old)
        && int_of(new, "healthCheckNodePort") != int_of(old, "healthCheckNodePort")
    {
        errs.push(FieldError::forbidden(
            &Path::new("spec").child("healthCheckNodePort"),
            "field is immutable",
        ));
    }
    errs
}

/// Releasing the secondary `what` (clusterIP, ipFamily) takes ipFamilyPolicy SingleStack.
fn single_stack_to_release(new: &Value, what: &str) -> Option<FieldError> {
    if str_of(new, "ipFamilyPolicy") == "SingleStack" {
        return None;
    }
    let value = get(new, "ipFamilyPolicy").cloned().unwrap_or(Value::Null);
    let detail = format!("must be set to 'SingleStack' when releasing the secondary {what}");
    Some(FieldError::invalid(
        &Path::new("spec").child("ipFamilyPolicy"),
        value,
        &detail,
    ))
}

/// clusterIPs may gain or lose the secondary (then SingleStack), never change the primary.
fn validate_cluster_ips_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ips_path = Path::new("spec").child("clusterIPs");
    let (n, o) = (strings_of(new, "clusterIPs"), strings_of(old, "clusterIPs"));
    let n_value = Value::Array(arr_of(new, "clusterIPs").to_vec());
    let changed = "may not change once set";
    if n.len() == o.len() {
        for (i, ip) in o.iter().enumerate() {
            if *ip != n[i] {
                errs.push(FieldError::invalid(
                    &ips_path.index(i),
                    n_value.clone(),
                    changed,
                ));
            }
        }
    } else if o.len() > n.len() {
        if n.is_empty() {
            errs.push(FieldError::invalid(
                &ips_path.index(0),
                n_value,
                "primary clusterIP can not be unset",
            ));
        } else if n[0] != o[0] {
            errs.push(FieldError::invalid(&ips_path.index(0), n_value, changed));
        }
        if n.len() == 1 {
            errs.extend(single_stack_to_release(new, "clusterIP"));
        }
    } else if !o.is_empty() && n[0] != o[0] {
        errs.push(FieldError::invalid(&ips_path.index(0), n_value, changed));
    }
    errs
}

/// ipFamilies may gain or lose the secondary (then SingleStack), never change the primary.
fn validate_ip_families_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let fam_path = Path::new("spec").child("ipFamilies");
    let (n, o) = (strings_of(new, "ipFamilies"), strings_of(old, "ipFamilies"));
    let n_value = Value::Array(arr_of(new, "ipFamilies").to_vec());
    let ips_value = Value::Array(arr_of(new, "clusterIPs").to_vec());
    if n.len() == o.len() {
        for (i, f) in o.iter().enumerate() {
            if *f != n[i] {
                errs.push(FieldError::invalid(
                    &fam_path.index(0),
                    n_value.clone(),
                    "may not change once set",
                ));
            }
        }
    } else if o.len() > n.len() {
        if arr_of(new, "clusterIPs").is_empty() {
            errs.push(FieldError::invalid(
                &fam_path.index(0),
                n_value,
                "primary ipFamily can not be unset",
            ));
        }
        if !n.is_empty() && n[0] != o[0] {
            errs.push(FieldError::invalid(
                &fam_path.index(0),
                ips_value,
                "may not change once set",
            ));
        }
        if n.len() == 1 {
            errs.extend(single_stack_to_release(new, "ipFamily"));
        }
    } else if !o.is_empty() && !n.is_empty() && n[0] != o[0] {
        errs.push(FieldError::invalid(
            &fam_path.index(0),
            ips_value,
            "may not change once set",
        ));
    }
    errs
}

/// What the apiserver allocated and an update left out is kept (the registry's
/// `patchAllocatedValues`): `kubectl replace` of a manifest without clusterIP, nodePorts or
/// healthCheckNodePort keeps them rather than failing on an "immutable" field.
fn patch_allocated_values(spec: &mut Value, old_spec: &Value) {
    let (new_type, old_type) = (str_of(spec, "type").to_string(), str_of(old_spec, "type"));
    let needs_cluster_ip = |t: &str| t != "ExternalName";
    if needs_cluster_ip(old_type) && needs_cluster_ip(&new_type) {
        if str_of(spec, "clusterIP").is_empty() && !str_of(old_spec, "clusterIP").is_empty() {
            spec["clusterIP"] = old_spec["clusterIP"].clone();
        }
        if arr_of(spec, "clusterIPs").is_empty() && !arr_of(old_spec, "clusterIPs").is_empty() {
            spec["clusterIPs"] = old_spec["clusterIPs"].clone();
        }
    }
    let needs_node_port = |t: &str| matches!(t, "NodePort" | "LoadBalancer");
    if needs_node_port(old_type) && needs_node_port(&new_type) {
        let used = |s: &Value| -> Vec<i64> {
            arr_of(s, "ports")
                .iter()
                .filter_map(|p| int_of(p, "nodePort"))
                .collect()
        };
        let in_both: Vec<i64> = used(old_spec)
            .into_iter()
            .filter(|port| used(spec).contains(port))
            .collect();
        let by_name: Vec<(String, i64)> = arr_of(old_spec, "ports")
            .iter()
            .filter_map(|p| Some((str_of(p, "name").to_string(), int_of(p, "nodePort")?)))
            .collect();
        each_mut(spec, "ports", |port| {
            if int_of(port, "nodePort").unwrap_or(0) != 0 {
                return;
            }
            let name = str_of(port, "name").to_string();
            if let Some((_, old)) = by_name.iter().find(|(n, _)| *n == name)
                && !in_both.contains(old)
            {
                port["nodePort"] = json!(old);
            }
        });
    }
    if needs_health_check(old_spec)
        && needs_health_check(spec)
        && int_of(spec, "healthCheckNodePort").unwrap_or(0) == 0
        && let Some(port) = int_of(old_spec, "healthCheckNodePort")
    {
        spec["healthCheckNodePort"] = json!(port);
    }
}

/// The registry's `PrepareForUpdate` for Services: keep status, keep clusterIP and clusterIPs in
/// step, and drop the fields a type change leaves unused when the client left them as they were.
pub(crate) fn prepare_service_update(new: &mut Value, old: &Value) {
    if let Some(status) = old.get("status") {
        new["status"] = status.clone();
    }
    let old_spec = spec_of(old).clone();
    let spec = obj_mut(new, "spec");
    patch_allocated_values(spec, &old_spec);
    let same = |spec: &Value, key: &str| get(spec, key) == get(&old_spec, key);
    let remove = |spec: &mut Value, key: &str| {
        spec.as_object_mut().map(|m| m.remove(key));
    };
    let (ip, old_ip) = (
        str_of(spec, "clusterIP").to_string(),
        str_of(&old_spec, "clusterIP"),
    );
    if ip != old_ip && same(spec, "clusterIPs") {
        if ip.is_empty() {
            remove(spec, "clusterIPs");
        } else {
            spec["clusterIPs"] = json!([ip]);
        }
    }
    let (new_type, old_type) = (str_of(spec, "type").to_string(), str_of(&old_spec, "type"));
    if new_type == old_type {
        return;
    }
    if old_type != "ExternalName" && new_type == "ExternalName" {
        if same(spec, "clusterIP") && same(spec, "clusterIPs") {
            remove(spec, "clusterIP");
            remove(spec, "clusterIPs");
        }
        for key in ["ipFamilies", "ipFamilyPolicy"] {
            if same(spec, key) {
                remove(spec, key);
            }
        }
    }
    let node_ports = |s: &Value| {
        arr_of(s, "ports")
            .iter()
            .map(|p| int_of(p, "nodePort").unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let needs_node_port = |t: &str| matches!(t, "NodePort" | "LoadBalancer");
    if needs_node_port(old_type)
        && !needs_node_port(&new_type)
        && node_ports(spec) == node_ports(&old_spec)
    {
        each_mut(spec, "ports", |port| remove(port, "nodePort"));
    }
    if needs_health_check(&old_spec)
        && !needs_health_check(spec)
        && same(spec, "healthCheckNodePort")
    {
        remove(spec, "healthCheckNodePort");
    }
    if new_type != "LoadBalancer" {
        remove(spec, "allocateLoadBalancerNodePorts");
        if same(spec, "loadBalancerClass") {
            remove(spec, "loadBalancerClass");
        }
    }
    if externally_accessible(&old_spec)
        && !externally_accessible(spec)
        && same(spec, "externalTrafficPolicy")
    {
        remove(spec, "externalTrafficPolicy");
    }
    if new_type != "LoadBalancer"
        && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
    {
        status.insert("loadBalancer".into(), json!({}));
    }
}
