//! Service defaulting and validation (core/v1 `SetDefaults_Service`, `ValidateService`,
//! `ValidateServiceUpdate`), plus the registry's clusterIP/ipFamilies normalization.
//!
//! NodePort ranges and clusterIP ranges belong to the allocators; here only the shape of the
//! values is checked. The cluster's primary family is IPv4 when nothing says otherwise.

use serde_json::{Value, json};

use super::field::{FieldError, Path};
use super::json::{
    IntOrString, arr_of, default_ptr, default_zero, each_mut, get, int_of, obj_mut, str_of,
    string_map, strings_of,
};
use super::meta::{
    validate_labels, validate_object_meta, validate_object_meta_update, validate_qualified_name,
};
use super::names::{
    NameRule, is_dns1123_label, is_dns1123_subdomain, is_valid_port_name, is_valid_port_num,
};
use super::net::{family_of, validate_cidr, validate_ip, validate_non_special_ip};
use super::service_ips::{validate_cluster_ips, validate_update};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
pub(crate) const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const MAX_AFFINITY_SECONDS: i64 = 86400;
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

pub(crate) fn spec_of(obj: &Value) -> &Value {
    obj.get("spec").unwrap_or(&Value::Null)
}

pub(crate) fn externally_accessible(spec: &Value) -> bool {
    match str_of(spec, "type") {
        "LoadBalancer" | "NodePort" => true,
        "ClusterIP" => !arr_of(spec, "externalIPs").is_empty(),
        _ => false,
    }
}

pub(crate) fn is_headless(spec: &Value) -> bool {
    strings_of(spec, "clusterIPs") == ["None"]
}

/// `SetDefaults_Service` plus the registry's clusterIPs and IP-family defaulting.
pub(crate) fn default_service(obj: &mut Value) {
    let spec = obj_mut(obj, "spec");
    default_zero(spec, "sessionAffinity", json!("None"));
    match str_of(spec, "sessionAffinity") {
        "None" => {
            spec.as_object_mut()
                .map(|m| m.remove("sessionAffinityConfig"));
        }
        "ClientIP" => {
            let timeout = spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .filter(|v| !v.is_null());
            if timeout.is_none() {
                spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}});
            }
        }
        _ => {}
    }
    default_zero(spec, "type", json!("ClusterIP"));
    each_mut(spec, "ports", |port| {
        default_zero(port, "protocol", json!("TCP"));
        if IntOrString::read(get(port, "targetPort")).is_zero() {
            port["targetPort"] = json!(int_of(port, "port").unwrap_or(0));
        }
    });
    if externally_accessible(spec) {
        default_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    let service_type = str_of(spec, "type").to_string();
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        default_ptr(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        default_ptr(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    // The registry fills clusterIPs from clusterIP for clients that only know the singular field.
    let cluster_ip = str_of(spec, "clusterIP").to_string();
    let cluster_ips = strings_of(spec, "clusterIPs");
    if !cluster_ip.is_empty() && cluster_ips.is_empty() {
        spec["clusterIPs"] = json!([cluster_ip]);
    }
    if service_type != "ExternalName" {
        if arr_of(spec, "ipFamilies").is_empty() {
            let mut families: Vec<&str> = strings_of(spec, "clusterIPs")
                .iter()
                .filter(|ip| **ip != "None")
                .filter_map(|ip| family_of(ip))
                .collect();
            if families.is_empty() {
                families.push("IPv4");
            }
            spec["ipFamilies"] = json!(families);
        }
        let multi = arr_of(spec, "ipFamilies").len() > 1 || arr_of(spec, "clusterIPs").len() > 1;
        default_ptr(
            spec,
            "ipFamilyPolicy",
            json!(if multi {
                "RequireDualStack"
            } else {
                "SingleStack"
            }),
        );
    }
    if service_type == "LoadBalancer"
        && let Some(ingress) = obj
            .pointer_mut("/status/loadBalancer/ingress")
            .and_then(Value::as_array_mut)
    {
        for ing in ingress.iter_mut().filter(|i| !str_of(i, "ip").is_empty()) {
            default_ptr(ing, "ipMode", json!("VIP"));
        }
    }
}

/// `ValidateService`, and on update `ValidateServiceUpdate`.
pub(crate) fn validate_service(obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if let Some(old) = old {
        errs.extend(validate_object_meta_update(obj, old));
        errs.extend(validate_update(spec_of(obj), spec_of(old)));
    }
    errs.extend(validate_object_meta(obj, NameRule::Rfc1035Label));
    let spec = spec_of(obj);
    let sp = Path::new("spec");
    let ports = arr_of(spec, "ports");
    let service_type = str_of(spec, "type");
    let headless = is_headless(spec);
    if ports.is_empty() && !headless && service_type != "ExternalName" {
        errs.push(FieldError::required(&sp.child("ports"), ""));
    }
    match service_type {
        "LoadBalancer" | "NodePort" if headless => {
            let detail = format!("may not be set to 'None' for {service_type} services");
            errs.push(FieldError::invalid(
                &sp.child("clusterIPs").index(0),
                "None",
                &detail,
            ));
        }
        "ExternalName" => {
            for (field, present) in [
                ("clusterIPs", !arr_of(spec, "clusterIPs").is_empty()),
                ("ipFamilies", !arr_of(spec, "ipFamilies").is_empty()),
                ("ipFamilyPolicy", get(spec, "ipFamilyPolicy").is_some()),
            ] {
                if present {
                    errs.push(FieldError::forbidden(
                        &sp.child(field),
                        "may not be set for ExternalName services",
                    ));
                }
            }
            let cname = str_of(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(&sp.child("externalName"), ""));
            }
            for msg in if cname.is_empty() {
                Vec::new()
            } else {
                is_dns1123_subdomain(cname)
            } {
                errs.push(FieldError::invalid(&sp.child("externalName"), cname, &msg));
            }
        }
        _ => {}
    }
    let mut names = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        errs.extend(validate_service_port(
            port,
            ports.len() > 1,
            &mut names,
            &sp.child("ports").index(i),
        ));
    }
    if get(spec, "selector").is_some() {
        errs.extend(validate_labels(spec, "selector", &sp.child("selector")));
    }
    errs.extend(validate_session_affinity(spec, &sp));
    if service_type != "ExternalName" {
        errs.extend(validate_cluster_ips(spec, &sp));
    }
    for (i, ip) in strings_of(spec, "externalIPs").iter().enumerate() {
        let p = sp.child("externalIPs").index(i);
        let ip_errs = validate_ip(&p, ip);
        if ip_errs.is_empty() {
            errs.extend(validate_non_special_ip(&p, ip));
        }
        errs.extend(ip_errs);
    }
    if service_type.is_empty() {
        errs.push(FieldError::required(&sp.child("type"), ""));
    } else if !TYPES.contains(&service_type) {
        errs.push(FieldError::not_supported(
            &sp.child("type"),
            service_type,
            TYPES,
        ));
    }
    errs.extend(validate_node_ports(ports, service_type, &sp));
    errs.extend(validate_duplicate_ports(ports, &sp));
    errs.extend(validate_load_balancer_fields(obj, spec, &sp));
    errs.extend(validate_traffic_policies(spec, &sp));
    errs
}

fn validate_service_port(
    port: &Value,
    require_name: bool,
    names: &mut Vec<String>,
    p: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(&p.child("name"), ""));
    } else if !name.is_empty() {
        for msg in is_dns1123_label(name) {
            errs.push(FieldError::invalid(&p.child("name"), name, &msg));
        }
        if names.iter().any(|n| n == name) {
            errs.push(FieldError::duplicate(&p.child("name"), name));
        } else {
            names.push(name.to_string());
        }
    }
    let number = int_of(port, "port").unwrap_or(0);
    for msg in is_valid_port_num(number) {
        errs.push(FieldError::invalid(&p.child("port"), number, &msg));
    }
    errs.extend(validate_protocol(
        str_of(port, "protocol"),
        &p.child("protocol"),
    ));
    errs.extend(validate_port_num_or_name(
        &IntOrString::read(get(port, "targetPort")),
        &p.child("targetPort"),
    ));
    if let Some(app) = get(port, "appProtocol").and_then(Value::as_str) {
        errs.extend(validate_qualified_name(app, &p.child("appProtocol")));
    }
    errs
}

/// `protocol` of a port: required, one of TCP/UDP/SCTP.
pub(crate) fn validate_protocol(protocol: &str, p: &Path) -> Vec<FieldError> {
    if protocol.is_empty() {
        vec![FieldError::required(p, "")]
    } else if !PROTOCOLS.contains(&protocol) {
        vec![FieldError::not_supported(p, protocol, PROTOCOLS)]
    } else {
        Vec::new()
    }
}

/// `ValidatePortNumOrName`: a number in 1..=65535 or an IANA service name.
pub(crate) fn validate_port_num_or_name(port: &IntOrString, p: &Path) -> Vec<FieldError> {
    match port {
        IntOrString::Int(n) => is_valid_port_num(*n)
            .iter()
            .map(|m| FieldError::invalid(p, *n, m))
            .collect(),
        IntOrString::Str(s) => is_valid_port_name(s)
            .iter()
            .map(|m| FieldError::invalid(p, s.as_str(), m))
            .collect(),
    }
}

fn validate_session_affinity(spec: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let path = sp.child("sessionAffinityConfig");
    match str_of(spec, "sessionAffinity") {
        "" => errs.push(FieldError::required(&sp.child("sessionAffinity"), "")),
        "None" if get(spec, "sessionAffinityConfig").is_some() => {
            errs.push(FieldError::forbidden(
                &path,
                "must not be set when session affinity is None",
            ));
        }
        "None" => {}
        "ClientIP" => {
            let detail = "when session affinity type is ClientIP";
            let config = get(spec, "sessionAffinityConfig");
            let client_ip = config.and_then(|c| get(c, "clientIP"));
            match (
                config,
                client_ip,
                client_ip.and_then(|c| get(c, "timeoutSeconds")),
            ) {
                (None, _, _) => errs.push(FieldError::required(&path, detail)),
                (_, None, _) => errs.push(FieldError::required(&path.child("clientIP"), detail)),
                (_, _, None) => errs.push(FieldError::required(
                    &path.child("clientIP").child("timeoutSeconds"),
                    detail,
                )),
                (_, _, Some(t)) => {
                    let t = t.as_i64().unwrap_or(0);
                    if t <= 0 || t > MAX_AFFINITY_SECONDS {
                        let detail =
                            format!("must be greater than 0 and less than {MAX_AFFINITY_SECONDS}");
                        errs.push(FieldError::invalid(
                            &path.child("clientIP").child("timeoutSeconds"),
                            t,
                            &detail,
                        ));
                    }
                }
            }
        }
        other => errs.push(FieldError::not_supported(
            &sp.child("sessionAffinity"),
            other,
            &["ClientIP", "None"],
        )),
    }
    errs
}

fn validate_node_ports(ports: &[Value], service_type: &str, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let p = sp.child("ports").index(i).child("nodePort");
        let node_port = int_of(port, "nodePort").unwrap_or(0);
        if node_port == 0 {
            continue;
        }
        // skiff addition: the allocator checks the configured range, the shape is checked here.
        if !(0..=65535).contains(&node_port) {
            errs.push(FieldError::invalid(
                &p,
                node_port,
                &super::names::inclusive_range_error(0, 65535),
            ));
        }
        if matches!(service_type, "ClusterIP" | "ExternalName") {
            errs.push(FieldError::forbidden(
                &p,
                &format!("may not be used when `type` is '{service_type}'"),
            ));
        }
        let key = (str_of(port, "protocol"), node_port);
        if seen.contains(&key) {
            errs.push(FieldError::duplicate(&p, node_port));
        }
        seen.push(key);
    }
    errs
}

fn validate_duplicate_ports(ports: &[Value], sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen: Vec<(&str, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let key = (str_of(port, "protocol"), int_of(port, "port").unwrap_or(0));
        if seen.contains(&key) {
            // Go prints the internal core.ServicePort key it built (fields without JSON tags).
            let value = json!({"Name": "", "Protocol": key.0, "AppProtocol": null, "Port": key.1, "TargetPort": 0, "NodePort": 0});
            errs.push(FieldError::duplicate(&sp.child("ports").index(i), value));
        }
        seen.push(key);
    }
    errs
}

fn validate_load_balancer_fields(obj: &Value, spec: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let is_lb = str_of(spec, "type") == "LoadBalancer";
    let only_lb = "may only be used when `type` is 'LoadBalancer'";
    let ranges = strings_of(spec, "loadBalancerSourceRanges");
    let annotation = obj
        .get("metadata")
        .map(|m| string_map(m, "annotations"))
        .unwrap_or_default();
    let annotation = annotation
        .iter()
        .find(|(k, _)| *k == SOURCE_RANGES_ANNOTATION)
        .map(|(_, v)| *v);
    if !ranges.is_empty() {
        let p = sp.child("LoadBalancerSourceRanges");
        if !is_lb {
            errs.push(FieldError::forbidden(&p, only_lb));
        }
        for (i, r) in ranges.iter().enumerate() {
            errs.extend(validate_cidr(&p.index(i), r.trim()));
        }
    } else if let Some(value) = annotation {
        let p = Path::new("metadata")
            .child("annotations")
            .key(SOURCE_RANGES_ANNOTATION);
        if !is_lb {
            errs.push(FieldError::forbidden(&p, only_lb));
        }
        let value = value.trim();
        if !value.is_empty() {
            for r in value.split(',') {
                errs.extend(validate_cidr(&p, r.trim()));
            }
        }
    }
    let allocate = get(spec, "allocateLoadBalancerNodePorts").is_some();
    if allocate && !is_lb {
        errs.push(FieldError::forbidden(
            &sp.child("allocateLoadBalancerNodePorts"),
            only_lb,
        ));
    }
    if is_lb && !allocate {
        // Kubernetes reports this one without the `spec.` prefix.
        errs.push(FieldError::required(
            &Path::new("allocateLoadBalancerNodePorts"),
            "",
        ));
    }
    if let Some(class) = get(spec, "loadBalancerClass").and_then(Value::as_str) {
        if is_lb {
            errs.extend(validate_qualified_name(
                class,
                &sp.child("loadBalancerClass"),
            ));
        } else {
            errs.push(FieldError::forbidden(
                &sp.child("loadBalancerClass"),
                only_lb,
            ));
        }
    }
    errs
}

pub(crate) fn needs_health_check(spec: &Value) -> bool {
    str_of(spec, "type") == "LoadBalancer" && str_of(spec, "externalTrafficPolicy") == "Local"
}

fn validate_traffic_policies(spec: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let etp = str_of(spec, "externalTrafficPolicy");
    let etp_path = sp.child("externalTrafficPolicy");
    if !externally_accessible(spec) {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                &etp_path,
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(&etp_path, ""));
    } else if !matches!(etp, "Cluster" | "Local") {
        errs.push(FieldError::not_supported(
            &etp_path,
            etp,
            &["Cluster", "Local"],
        ));
    }
    let hcnp = int_of(spec, "healthCheckNodePort").unwrap_or(0);
    let hcnp_path = sp.child("healthCheckNodePort");
    if !needs_health_check(spec) {
        if hcnp != 0 {
            let detail = "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'";
            errs.push(FieldError::invalid(&hcnp_path, hcnp, detail));
        }
    } else if hcnp == 0 {
        errs.push(FieldError::required(&hcnp_path, ""));
    } else {
        errs.extend(
            is_valid_port_num(hcnp)
                .iter()
                .map(|m| FieldError::invalid(&hcnp_path, hcnp, m)),
        );
    }
    let itp_path = sp.child("internalTrafficPolicy");
    match get(spec, "internalTrafficPolicy").map(|v| v.as_str().unwrap_or("")) {
        None if matches!(
            str_of(spec, "type"),
            "NodePort" | "LoadBalancer" | "ClusterIP"
        ) =>
        {
            errs.push(FieldError::required(&itp_path, ""));
        }
        Some(itp) if !matches!(itp, "Cluster" | "Local") => {
            errs.push(FieldError::not_supported(
                &itp_path,
                itp,
                &["Cluster", "Local"],
            ));
        }
        _ => {}
    }
    let distributions = ["PreferClose", "PreferSameNode", "PreferSameZone"];
    if let Some(td) = get(spec, "trafficDistribution").map(|v| v.as_str().unwrap_or(""))
        && !distributions.contains(&td)
    {
        errs.push(FieldError::not_supported(
            &sp.child("trafficDistribution"),
            td,
            &distributions,
        ));
    }
    errs
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
