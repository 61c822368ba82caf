//! A container's environment as kubelet hands it to the runtime: the Service variables of the
//! Pod's namespace (docker-link style, when `enableServiceLinks`), then the container's `env`
//! with `$(VAR)` references expanded and the downward-API `fieldRef`s kubelet resolves itself
//! (Pod name, namespace, uid, IP, node name, host IP, service account). The runtime puts the
//! image's defaults (and `HOSTNAME`) beneath it.

use k8s_openapi::api::core::v1::{Container, Pod, Service};

/// The `PATH` a container gets when neither image nor Pod sets one (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn set(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => env.push((key.to_owned(), value)),
    }
}

/// `$(NAME)` → its value so far; `$$(NAME)` → `$(NAME)`; unknown references stay as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(escaped) = tail.strip_prefix("$$") {
            out.push('$');
            rest = escaped;
        } else if let Some(open) = tail.strip_prefix("$(")
            && let Some(close) = open.find(')')
        {
            let name = &open[..close];
            match env.iter().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..close + 3]),
            }
            rest = &open[close + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The downward-API field `path` of `pod`, if kubelet resolves it.
fn field(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => spec?.node_name.clone(),
        "spec.serviceAccountName" => spec?.service_account_name.clone(),
        "status.podIP" => Some(pod_ip.to_owned()),
        "status.hostIP" => Some(host_ip.to_owned()),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .or_else(|| path.strip_prefix("metadata.annotations['"))?
                .strip_suffix("']")?;
            let map = if path.starts_with("metadata.labels") {
                pod.metadata.labels.as_ref()
            } else {
                pod.metadata.annotations.as_ref()
            };
            map?.get(key).cloned()
        }
    }
}

/// The Pod's environment for `container`, over `service_env`.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    service_env: &[(String, String)],
    pod_ip: &str,
    host_ip: &str,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = service_env.to_vec();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => expand(value, &env),
            (None, Some(from)) => match from.field_ref.as_ref() {
                Some(f) => match field(pod, &f.field_path, pod_ip, host_ip) {
                    Some(v) => v,
                    None => {
                        tracing::warn!(field = %f.field_path, "unsupported fieldRef: left empty");
                        String::new()
                    }
                },
                None => {
                    tracing::warn!(name = %var.name, "only fieldRef env sources are supported");
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        set(&mut env, &var.name, value);
    }
    env
}

/// `my-svc` → `MY_SVC`, as Service variables name a Service.
fn env_name(service: &str) -> String {
    service.to_uppercase().replace('-', "_")
}

/// The Service variables a Pod in `namespace` gets, kubelet's way: every Service of its
/// namespace with a ClusterIP (when `enable_links`, `enableServiceLinks`' default), and the
/// `kubernetes` Service of `default` always — `<NAME>_SERVICE_HOST`/`_PORT`/`_PORT_<PORT NAME>`
/// plus the docker-link style `<NAME>_PORT` and `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
/// Sorted by name, so the environment does not depend on watch order.
pub fn service_env<'a>(
    namespace: &str,
    enable_links: bool,
    services: impl IntoIterator<Item = &'a Service>,
) -> Vec<(String, String)> {
    let mut chosen: Vec<&Service> = services
        .into_iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or_default();
            (enable_links && ns == namespace) || (ns == "default" && name == "kubernetes")
        })
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|spec| spec.cluster_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty() && ip != "None")
        })
        .collect();
    chosen.sort_by_key(|s| s.metadata.name.clone());
    chosen.dedup_by_key(|s| s.metadata.name.clone());
    let mut env = Vec::new();
    for service in chosen {
        let name = env_name(service.metadata.name.as_deref().unwrap_or_default());
        let spec = service.spec.as_ref().expect("filtered on its spec");
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        let Some(first) = ports.first() else {
            continue;
        };
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                    port.port.to_string(),
                ));
            }
        }
        let proto_of = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_owned()
        };
        env.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto_of(first).to_lowercase(), first.port),
        ));
        for port in ports {
            let proto = proto_of(port);
            let prefix = format!("{name}_PORT_{}_{proto}", port.port);
            env.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto.to_lowercase(), port.port),
            ));
            env.push((format!("{prefix}_PROTO"), proto.to_lowercase()));
            env.push((format!("{prefix}_PORT"), port.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_expand_escapes_stay_and_unknowns_remain() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$(B) $", &env), "$(B) $");
    }

    #[test]
    fn the_pod_env_overrides_service_links_and_field_refs_resolve() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "env": [
                {"name": "MODE", "value": "fast"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "GREETING", "value": "$(MODE)-$(POD_NAME)"}
            ]}]}
        }))
        .unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let services = vec![
            ("MODE".to_owned(), "slow".to_owned()),
            ("WEB_SERVICE_HOST".to_owned(), "10.96.0.2".to_owned()),
        ];
        let env = container_env(&pod, container, &services, "10.244.1.5", "172.31.0.10");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MODE"), Some("fast"));
        assert_eq!(get("WEB_SERVICE_HOST"), Some("10.96.0.2"));
        assert_eq!(get("POD_IP"), Some("10.244.1.5"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("GREETING"), Some("fast-web-1"));
    }

    #[test]
    fn services_of_the_namespace_become_variables_as_kubelet_writes_them() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "my-web", "namespace": "team"},
             "spec": {"clusterIP": "10.96.0.20", "ports": [
                 {"name": "http", "port": 80, "protocol": "TCP"},
                 {"name": "dns", "port": 53, "protocol": "UDP"}]}},
            {"metadata": {"name": "headless", "namespace": "team"},
             "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
            {"metadata": {"name": "other", "namespace": "elsewhere"},
             "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}},
            {"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}}
        ]))
        .unwrap();
        let env = service_env("team", true, &services);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("10.96.0.20"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("MY_WEB_PORT"), Some("tcp://10.96.0.20:80"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.96.0.20:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_ADDR"), Some("10.96.0.20"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(
            get("HEADLESS_SERVICE_HOST"),
            None,
            "headless Services get none"
        );
        assert_eq!(
            get("OTHER_SERVICE_HOST"),
            None,
            "other namespaces' get none"
        );
        let without_links = service_env("team", false, &services);
        assert!(
            without_links
                .iter()
                .all(|(k, _)| k.starts_with("KUBERNETES_"))
        );
    }
}
