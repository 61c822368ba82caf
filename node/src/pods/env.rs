//! A container's environment as kubelet hands it to the runtime: the Service variables of the
//! Pod's namespace (docker-link style, when `enableServiceLinks`), then the container's `env`
//! with `$(VAR)` references expanded and the downward-API `fieldRef`s kubelet resolves itself
//! (Pod name, namespace, uid, IP, node name, host IP, service account). The runtime puts the
//! image's defaults (and `HOSTNAME`) beneath it.

use k8s_openapi::api::core::v1::{Container, Pod};

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
}
