//! A Pod's resolv.conf, as kubelet computes it (`dnsPolicy` + `dnsConfig`): `ClusterFirst` puts
//! the cluster DNS Service first with the Pod's namespace search path and `ndots:5`, falling
//! back to the node's own resolv.conf while the cluster has no DNS (`--cluster-dns` unset, as
//! kubelet does); `Default` is the node's; `None` is the Pod's `dnsConfig` alone, which every
//! policy then merges in. containerd writes the file from the sandbox's DNS config; the
//! process runtime writes [`resolv_conf`] and mounts it over /etc/resolv.conf in the Pod's own
//! mount namespace.

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::DnsConfig;

/// At most this many nameservers (glibc reads three).
const MAX_SERVERS: usize = 3;
/// At most this many search domains (kubelet's limit).
const MAX_SEARCHES: usize = 32;

/// What the node knows of DNS.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DnsSettings {
    /// `--cluster-dns`: the cluster DNS Service's addresses (empty: no cluster DNS yet).
    pub cluster_dns: Vec<String>,
    /// `--cluster-domain`.
    pub cluster_domain: String,
    /// The node's resolv.conf (`--resolv-conf`).
    pub host: DnsConfig,
}

/// Reads resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut config = DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => config.servers.extend(words.next().map(str::to_owned)),
            // The last search (or domain) line wins, as in glibc.
            Some("search" | "domain") => config.searches = words.map(str::to_owned).collect(),
            Some("options") => config.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    config
}

fn push_unique(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

/// `ndots:5` and `ndots:2` are one option: the later value wins.
fn merge_options(list: &mut Vec<String>, items: impl IntoIterator<Item = String>) {
    for item in items {
        let name = item.split(':').next().unwrap_or(&item).to_owned();
        list.retain(|o| o.split(':').next() != Some(name.as_str()));
        list.push(item);
    }
}

/// resolv.conf text, laid out as containerd writes a sandbox's: `search`, `nameserver`s,
/// `options`, each line only when it has something to say.
pub fn resolv_conf(config: &DnsConfig) -> String {
    let mut text = String::new();
    if !config.searches.is_empty() {
        text.push_str(&format!("search {}\n", config.searches.join(" ")));
    }
    for server in &config.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !config.options.is_empty() {
        text.push_str(&format!("options {}\n", config.options.join(" ")));
    }
    text
}

/// The Pod's resolv.conf.
pub fn pod_dns(pod: &Pod, settings: &DnsSettings) -> DnsConfig {
    let spec = pod.spec.as_ref();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let cluster =
        matches!(policy, "ClusterFirst" if !host_network) || policy == "ClusterFirstWithHostNet";
    let mut config = match policy {
        "None" => DnsConfig::default(),
        _ if cluster && !settings.cluster_dns.is_empty() => {
            let domain = &settings.cluster_domain;
            let mut searches = vec![
                format!("{namespace}.svc.{domain}"),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            push_unique(&mut searches, settings.host.searches.iter().cloned());
            DnsConfig {
                servers: settings.cluster_dns.clone(),
                searches,
                options: vec!["ndots:5".to_owned()],
            }
        }
        _ => settings.host.clone(),
    };
    if let Some(extra) = spec.and_then(|s| s.dns_config.as_ref()) {
        push_unique(
            &mut config.servers,
            extra.nameservers.iter().flatten().cloned(),
        );
        push_unique(
            &mut config.searches,
            extra.searches.iter().flatten().cloned(),
        );
        merge_options(
            &mut config.options,
            extra.options.iter().flatten().filter_map(|o| {
                let name = o.name.clone()?;
                Some(match &o.value {
                    Some(value) => format!("{name}:{value}"),
                    None => name,
                })
            }),
        );
    }
    config.servers.truncate(MAX_SERVERS);
    config.searches.truncate(MAX_SEARCHES);
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(cluster_dns: &[&str]) -> DnsSettings {
        DnsSettings {
            cluster_dns: cluster_dns.iter().map(|s| s.to_string()).collect(),
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf(
                "# host\nnameserver 192.0.2.53\nsearch example.com\noptions edns0 ndots:1\n",
            ),
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "team"}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn cluster_first_uses_the_cluster_dns_with_the_namespace_search_path() {
        let config = pod_dns(&pod(json!({})), &settings(&["10.96.0.10"]));
        assert_eq!(config.servers, ["10.96.0.10"]);
        assert_eq!(
            config.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "example.com"
            ]
        );
        assert_eq!(config.options, ["ndots:5"]);
        assert_eq!(
            resolv_conf(&config),
            "search team.svc.cluster.local svc.cluster.local cluster.local example.com\n\
             nameserver 10.96.0.10\n\
             options ndots:5\n"
        );
        assert_eq!(parse_resolv_conf(&resolv_conf(&config)), config);
    }

    #[test]
    fn without_cluster_dns_or_with_default_the_node_resolv_conf_is_used() {
        let host = settings(&[]).host;
        assert_eq!(host.options, ["edns0", "ndots:1"]);
        assert_eq!(pod_dns(&pod(json!({})), &settings(&[])), host);
        let default = pod(json!({"dnsPolicy": "Default"}));
        assert_eq!(pod_dns(&default, &settings(&["10.96.0.10"])), host);
    }

    #[test]
    fn dns_config_merges_and_none_takes_it_alone() {
        let none = pod(json!({"dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example"], "options": [{"name": "ndots", "value": "2"}]}}));
        let config = pod_dns(&none, &settings(&["10.96.0.10"]));
        assert_eq!(config.servers, ["1.1.1.1"]);
        assert_eq!(config.searches, ["a.example"]);
        assert_eq!(config.options, ["ndots:2"]);
        assert_eq!(
            resolv_conf(&config),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:2\n"
        );
        let bare = pod(json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}}));
        assert_eq!(
            resolv_conf(&pod_dns(&bare, &settings(&[]))),
            "nameserver 1.1.1.1\n"
        );
        let merged = pod(
            json!({"dnsConfig": {"options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}}),
        );
        let config = pod_dns(&merged, &settings(&["10.96.0.10"]));
        assert_eq!(config.options, ["ndots:1", "rotate"]);
    }
}
