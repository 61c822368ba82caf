//! The smaller kinds: Namespace, Node, Endpoints, EndpointSlice, Event, Lease and Scale.

use serde_json::{Value, json};

use super::field::{FieldError, Path};
use super::json::{
    arr_of, default_ptr, default_zero, each_mut, get, int_of, obj_mut, str_of, strings_of,
};
use super::meta::{
    validate_immutable, validate_kube_finalizer_name, validate_labels, validate_object_meta,
    validate_object_meta_update, validate_qualified_name,
};
use super::names::{
    NameRule, is_dns1123_label, is_dns1123_subdomain, is_label_value, is_valid_port_num,
};
use super::net::{
    family_of, validate_cidr, validate_ip, validate_ip_legacy, validate_non_special_ip,
};
use super::podspec::validate_taints;
use super::service::validate_protocol;

fn meta_checks(obj: &Value, old: Option<&Value>, rule: NameRule) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(obj, old));
    }
    errs.extend(validate_object_meta(obj, rule));
    errs
}

/// Namespace defaults: the `kubernetes.io/metadata.name` label, the `kubernetes` finalizer and
/// phase `Active`.
pub(crate) fn default_namespace(obj: &mut Value) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !name.is_empty() {
        let labels = obj_mut(obj_mut(obj, "metadata"), "labels");
        labels["kubernetes.io/metadata.name"] = json!(name);
    }
    let spec = obj_mut(obj, "spec");
    if !strings_of(spec, "finalizers").contains(&"kubernetes") {
        let mut finalizers = arr_of(spec, "finalizers").to_vec();
        finalizers.push(json!("kubernetes"));
        spec["finalizers"] = Value::Array(finalizers);
    }
    default_zero(obj_mut(obj, "status"), "phase", json!("Active"));
}

/// Namespace `PrepareForUpdate`: the main door may not change finalizers or status.
pub(crate) fn prepare_namespace_update(obj: &mut Value, old: &Value) {
    if let Some(finalizers) = old.pointer("/spec/finalizers") {
        obj_mut(obj, "spec")["finalizers"] = finalizers.clone();
    }
    if let Some(status) = old.get("status") {
        obj["status"] = status.clone();
    }
}

/// `ValidateNamespace`: DNS-label names and finalizer names.
pub(crate) fn validate_namespace(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Label);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let p = Path::new("spec").child("finalizers");
    for f in strings_of(spec, "finalizers") {
        errs.extend(validate_qualified_name(f, &p));
        errs.extend(validate_kube_finalizer_name(f, &p));
    }
    errs
}

/// Node defaults: `podCIDRs` and `podCIDR` in step, allocatable from capacity.
pub(crate) fn default_node(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    let cidrs = strings_of(spec, "podCIDRs")
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    let cidr = str_of(spec, "podCIDR").to_string();
    if cidrs.is_empty() && !cidr.is_empty() {
        spec["podCIDRs"] = json!([cidr]);
    } else if let Some(first) = cidrs.first() {
        spec["podCIDR"] = json!(first);
    }
    let status = obj_mut(obj, "status");
    if let Some(capacity) = get(status, "capacity").cloned() {
        default_ptr(status, "allocatable", capacity);
    }
}

/// `ValidateNode` and, on update, `ValidateNodeUpdate`.
pub(crate) fn validate_node(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    // Kubernetes reports node taints under `metadata.taints`.
    errs.extend(validate_taints(
        arr_of(spec, "taints"),
        &Path::new("metadata").child("taints"),
    ));
    let cidrs = strings_of(spec, "podCIDRs");
    let p = Path::new("spec").child("podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        errs.extend(validate_cidr(&p.index(i), c));
    }
    if cidrs.len() > 1 {
        let v4 = cidrs
            .iter()
            .filter(|c| family_of(c) == Some("IPv4"))
            .count();
        if v4 == 0 || v4 == cidrs.len() || cidrs.len() > 2 {
            let value = Value::Array(arr_of(spec, "podCIDRs").to_vec());
            errs.push(FieldError::invalid(
                &p,
                value,
                "may specify no more than one CIDR for each IP family",
            ));
        }
        for (i, c) in cidrs.iter().enumerate() {
            if cidrs[..i].contains(c) {
                errs.push(FieldError::duplicate(&p.index(i), *c));
            }
        }
    }
    if let Some(old) = old {
        let old_spec = old.get("spec").unwrap_or(&null);
        let old_cidrs = strings_of(old_spec, "podCIDRs");
        if !old_cidrs.is_empty() {
            let detail = "node updates may not change podCIDR except from \"\" to valid";
            if old_cidrs.len() != cidrs.len() {
                errs.push(FieldError::forbidden(&p, detail));
            } else {
                let changed = old_cidrs.iter().zip(&cidrs).filter(|(a, b)| a != b).count();
                errs.extend((0..changed).map(|_| FieldError::forbidden(&p, detail)));
            }
        }
        let old_provider = str_of(old_spec, "providerID");
        if !old_provider.is_empty() && old_provider != str_of(spec, "providerID") {
            let detail = "node updates may not change providerID except from \"\" to valid";
            errs.push(FieldError::forbidden(
                &Path::new("spec").child("providerID"),
                detail,
            ));
        }
        if str_of(spec, "externalID") != str_of(old_spec, "externalID") {
            errs.push(FieldError::forbidden(
                &Path::new("spec").child("externalID"),
                "may not be updated",
            ));
        }
    }
    errs
}

/// Endpoints defaults: ports are TCP unless they say otherwise.
pub(crate) fn default_endpoints(obj: &mut Value) {
    each_mut(obj, "subsets", |subset| {
        each_mut(subset, "ports", |port| {
            default_zero(port, "protocol", json!("TCP"))
        })
    });
}

/// `ValidateEndpoints`.
pub(crate) fn validate_endpoints(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    for (i, subset) in arr_of(obj, "subsets").iter().enumerate() {
        let sp = Path::new("subsets").index(i);
        let (ready, not_ready) = (
            arr_of(subset, "addresses"),
            arr_of(subset, "notReadyAddresses"),
        );
        if ready.is_empty() && not_ready.is_empty() {
            errs.push(FieldError::required(
                &sp,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for (list, addrs) in [("addresses", ready), ("notReadyAddresses", not_ready)] {
            for (j, addr) in addrs.iter().enumerate() {
                let ap = sp.child(list).index(j);
                let ip = str_of(addr, "ip");
                errs.extend(validate_ip(&ap.child("ip"), ip));
                let hostname = str_of(addr, "hostname");
                if !hostname.is_empty() {
                    errs.extend(
                        is_dns1123_label(hostname)
                            .iter()
                            .map(|m| FieldError::invalid(&ap.child("hostname"), hostname, m)),
                    );
                }
                if let Some(node) = get(addr, "nodeName").and_then(Value::as_str) {
                    errs.extend(
                        is_dns1123_subdomain(node)
                            .iter()
                            .map(|m| FieldError::invalid(&ap.child("nodeName"), node, m)),
                    );
                }
                errs.extend(validate_non_special_ip(&ap.child("ip"), ip));
            }
        }
        let ports = arr_of(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = str_of(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(&pp.child("name"), ""));
            } else if !name.is_empty() {
                errs.extend(
                    is_dns1123_label(name)
                        .iter()
                        .map(|m| FieldError::invalid(&pp.child("name"), name, m)),
                );
            }
            let number = int_of(port, "port").unwrap_or(0);
            errs.extend(
                is_valid_port_num(number)
                    .iter()
                    .map(|m| FieldError::invalid(&pp.child("port"), number, m)),
            );
            errs.extend(validate_protocol(
                str_of(port, "protocol"),
                &pp.child("protocol"),
            ));
            if let Some(app) = get(port, "appProtocol").and_then(Value::as_str) {
                errs.extend(validate_qualified_name(app, &pp.child("appProtocol")));
            }
        }
    }
    errs
}

/// EndpointSlice defaults: port names `""` and protocol TCP.
pub(crate) fn default_endpoint_slice(obj: &mut Value) {
    each_mut(obj, "ports", |port| {
        default_ptr(port, "name", json!(""));
        default_ptr(port, "protocol", json!("TCP"));
    });
}

/// `ValidateEndpointSlice` and, on update, the immutable `addressType`.
pub(crate) fn validate_endpoint_slice(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    let address_type = str_of(obj, "addressType");
    let tp = Path::new("addressType");
    match address_type {
        "" => errs.push(FieldError::required(&tp, "")),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => errs.push(FieldError::not_supported(
            &tp,
            other,
            &["FQDN", "IPv4", "IPv6"],
        )),
    }
    let endpoints = arr_of(obj, "endpoints");
    let ep = Path::new("endpoints");
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many(&ep, endpoints.len(), 1000));
    } else {
        for (i, endpoint) in endpoints.iter().enumerate() {
            errs.extend(validate_slice_endpoint(
                endpoint,
                address_type,
                &ep.index(i),
            ));
        }
    }
    let ports = arr_of(obj, "ports");
    let pp = Path::new("ports");
    if ports.len() > 20000 {
        errs.push(FieldError::too_many(&pp, ports.len(), 20000));
    } else {
        let mut names: Vec<&str> = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let p = pp.index(i);
            let name = str_of(port, "name");
            if !name.is_empty() {
                errs.extend(
                    is_dns1123_label(name)
                        .iter()
                        .map(|m| FieldError::invalid(&p.child("name"), name, m)),
                );
            }
            if names.contains(&name) {
                errs.push(FieldError::duplicate(&p.child("name"), name));
            } else {
                names.push(name);
            }
            match get(port, "protocol").map(|v| v.as_str().unwrap_or("")) {
                None => errs.push(FieldError::required(&p.child("protocol"), "")),
                Some(protocol) => {
                    if !super::service::PROTOCOLS.contains(&protocol) {
                        errs.push(FieldError::not_supported(
                            &p.child("protocol"),
                            protocol,
                            super::service::PROTOCOLS,
                        ));
                    }
                }
            }
            if let Some(app) = get(port, "appProtocol").and_then(Value::as_str) {
                errs.extend(validate_qualified_name(app, &p.child("appProtocol")));
            }
        }
    }
    if let Some(old) = old {
        errs.extend(validate_immutable(
            &json!(address_type),
            &json!(str_of(old, "addressType")),
            &tp,
        ));
    }
    errs
}

fn validate_slice_endpoint(endpoint: &Value, address_type: &str, p: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let addresses = strings_of(endpoint, "addresses");
    let ap = p.child("addresses");
    if addresses.is_empty() {
        errs.push(FieldError::required(&ap, "must contain at least 1 address"));
    } else if addresses.len() > 100 {
        errs.push(FieldError::too_many(&ap, addresses.len(), 100));
    }
    for (i, addr) in addresses.iter().enumerate() {
        let path = ap.index(i);
        match address_type {
            "IPv4" | "IPv6" => {
                let ip_errs = validate_ip_legacy(&path, addr);
                if !ip_errs.is_empty() {
                    errs.extend(ip_errs);
                    continue;
                }
                if family_of(addr) != Some(address_type) {
                    errs.push(FieldError::invalid(
                        &path,
                        *addr,
                        &format!("must be an {address_type} address"),
                    ));
                }
                errs.extend(validate_non_special_ip(&path, addr));
            }
            "FQDN" => errs.extend(validate_fqdn(&path, addr)),
            _ => {}
        }
    }
    if let Some(node) = get(endpoint, "nodeName").and_then(Value::as_str) {
        errs.extend(
            is_dns1123_subdomain(node)
                .iter()
                .map(|m| FieldError::invalid(&p.child("nodeName"), node, m)),
        );
    }
    let topology = p.child("deprecatedTopology");
    let count = get(endpoint, "deprecatedTopology")
        .and_then(Value::as_object)
        .map_or(0, |m| m.len());
    if count > 16 {
        errs.push(FieldError::too_many(&topology, count, 16));
    }
    errs.extend(validate_labels(endpoint, "deprecatedTopology", &topology));
    if let Some(hostname) = get(endpoint, "hostname").and_then(Value::as_str) {
        errs.extend(
            is_dns1123_label(hostname)
                .iter()
                .map(|m| FieldError::invalid(&p.child("hostname"), hostname, m)),
        );
    }
    if let Some(hints) = get(endpoint, "hints") {
        let zp = p.child("hints").child("forZones");
        let zones = arr_of(hints, "forZones");
        if zones.len() > 8 {
            errs.push(FieldError::too_many(&zp, zones.len(), 8));
            return errs;
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, zone) in zones.iter().enumerate() {
            let name = str_of(zone, "name");
            let np = zp.index(i).child("name");
            if seen.contains(&name) {
                errs.push(FieldError::duplicate(&np, name));
            } else {
                seen.push(name);
            }
            errs.extend(
                is_label_value(name)
                    .iter()
                    .map(|m| FieldError::invalid(&np, name, m)),
            );
        }
    }
    errs
}

/// `IsFullyQualifiedDomainName`.
fn validate_fqdn(p: &Path, name: &str) -> Vec<FieldError> {
    if name.is_empty() {
        return vec![FieldError::required(p, "")];
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let msgs = is_dns1123_subdomain(name);
    if !msgs.is_empty() {
        return vec![FieldError::invalid(p, name, &msgs.join(","))];
    }
    if !name.contains('.') {
        return vec![FieldError::invalid(
            p,
            name,
            "should be a domain with at least two segments separated by dots",
        )];
    }
    for label in name.split('.') {
        let msgs = is_dns1123_label(label);
        if !msgs.is_empty() {
            return vec![FieldError::invalid(p, label, &msgs.join(","))];
        }
    }
    Vec::new()
}

/// Core v1 Event checks (`legacyValidateEvent`), plus names and a present `involvedObject`.
pub(crate) fn validate_event(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    let null = Value::Null;
    let involved = get(obj, "involvedObject").unwrap_or(&null);
    if str_of(involved, "kind").is_empty() && str_of(involved, "name").is_empty() {
        // skiff addition: an event must point at something.
        errs.push(FieldError::required(&Path::new("involvedObject"), ""));
    }
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let involved_ns = str_of(involved, "namespace");
    let ns_path = Path::new("involvedObject").child("namespace");
    let mismatch = |errs: &mut Vec<FieldError>| {
        errs.push(FieldError::invalid(
            &ns_path,
            involved_ns,
            "does not match event.namespace",
        ));
    };
    if get(obj, "eventTime").is_none() {
        let ok = if involved_ns.is_empty() {
            matches!(namespace, "" | "default")
        } else {
            namespace == involved_ns
        };
        if !ok {
            mismatch(&mut errs);
        }
    } else {
        if involved_ns.is_empty() && !matches!(namespace, "default" | "kube-system") {
            mismatch(&mut errs);
        }
        let controller = str_of(obj, "reportingComponent");
        let controller_path = Path::new("reportingController");
        if controller.is_empty() {
            errs.push(FieldError::required(&controller_path, ""));
        }
        errs.extend(validate_qualified_name(controller, &controller_path));
        for (field, wire, limit) in [
            ("reportingInstance", "reportingInstance", 128),
            ("action", "action", 128),
            ("reason", "reason", 128),
        ] {
            let value = str_of(obj, wire);
            if value.is_empty() {
                errs.push(FieldError::required(&Path::new(field), ""));
            }
            if value.len() > limit {
                errs.push(FieldError::invalid(
                    &Path::new(field),
                    "",
                    &format!("can have at most {limit} characters"),
                ));
            }
        }
        if str_of(obj, "message").len() > 1024 {
            errs.push(FieldError::invalid(
                &Path::new("message"),
                "",
                "can have at most 1024 characters",
            ));
        }
    }
    errs.extend(
        is_dns1123_subdomain(namespace)
            .iter()
            .map(|m| FieldError::invalid(&Path::new("namespace"), namespace, m)),
    );
    errs
}

/// `ValidateLease`.
pub(crate) fn validate_lease(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let sp = Path::new("spec");
    if let Some(d) = int_of(spec, "leaseDurationSeconds").filter(|d| *d <= 0) {
        errs.push(FieldError::invalid(
            &sp.child("leaseDurationSeconds"),
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = int_of(spec, "leaseTransitions").filter(|t| *t < 0) {
        errs.push(FieldError::invalid(
            &sp.child("leaseTransitions"),
            t,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

/// `ValidateScale`.
#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the scale subresource checks replicas inline; kept for ValidateScale parity"
    )
)]
pub(crate) fn validate_scale(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = meta_checks(obj, old, NameRule::Subdomain);
    if let Some(r) = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .filter(|r| *r < 0)
    {
        errs.push(FieldError::invalid(
            &Path::new("spec").child("replicas"),
            r,
            "must be greater than or equal to 0",
        ));
    }
    errs
}

#[cfg(test)]
#[path = "other_tests.rs"]
mod tests;
