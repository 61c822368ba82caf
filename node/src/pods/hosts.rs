//! A Pod's hostname and /etc/hosts, as kubelet makes them.
//!
//! The hostname is `spec.hostname` or the Pod's name, cut to a DNS label's 63 characters;
//! `spec.subdomain` gives it the domain `<subdomain>.<namespace>.svc.<cluster domain>` (the
//! name a headless Service of that name answers for it), and `setHostnameAsFQDN` makes the
//! kernel's hostname the whole FQDN. The hosts file is kubelet's "managed" one — localhost
//! lines, the Pod's address with its FQDN then its short name, then `hostAliases` — or, for a
//! `hostNetwork` Pod, the node's own file with the aliases added. Pure: the runtime writes the
//! text once the Pod has an address.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::HostsConfig;

/// kubelet's first line of a hosts file it writes.
const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n";
/// ... and of one it copies from the node, for a `hostNetwork` Pod.
const MANAGED_HEADER_HOST_NETWORK: &str = "# Kubernetes-managed hosts file (host network).\n";
/// The localhost lines every managed hosts file starts with.
const LOCALHOST: &str = "127.0.0.1\tlocalhost\n\
                         ::1\tlocalhost ip6-localhost ip6-loopback\n\
                         fe00::0\tip6-localnet\n\
                         fe00::0\tip6-mcastprefix\n\
                         fe00::1\tip6-allnodes\n\
                         fe00::2\tip6-allrouters\n";
/// A hostname is a DNS label.
const HOSTNAME_MAX: usize = 63;
/// The kernel's nodename field holds 64 characters.
const KERNEL_HOSTNAME_MAX: usize = 64;

/// The Pod's hostname and, with `spec.subdomain`, its domain.
pub fn pod_hostname(pod: &Pod, cluster_domain: &str) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname = spec
        .and_then(|s| s.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .unwrap_or(name);
    // A Pod name may be longer than a label: cut, and never end in '-' or '.' (as kubelet).
    let hostname = match hostname.get(..HOSTNAME_MAX) {
        Some(cut) if hostname.len() > HOSTNAME_MAX => cut.trim_end_matches(['-', '.']),
        _ => hostname,
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let domain = spec
        .and_then(|s| s.subdomain.as_deref())
        .filter(|d| !d.is_empty())
        .map(|subdomain| format!("{subdomain}.{namespace}.svc.{cluster_domain}"));
    (hostname.to_owned(), domain)
}

/// The hostname the Pod's kernel reports: the short one, or with `setHostnameAsFQDN` (and a
/// subdomain) the FQDN, refused as kubelet refuses it when longer than the kernel holds.
pub fn kernel_hostname(pod: &Pod, cluster_domain: &str) -> Result<String, String> {
    let (hostname, domain) = pod_hostname(pod, cluster_domain);
    let as_fqdn = pod
        .spec
        .as_ref()
        .and_then(|s| s.set_hostname_as_fqdn)
        .unwrap_or(false);
    match domain {
        Some(domain) if as_fqdn => {
            let fqdn = format!("{hostname}.{domain}");
            if fqdn.len() > KERNEL_HOSTNAME_MAX {
                return Err(format!(
                    "failed to construct FQDN from pod hostname and cluster domain, FQDN {fqdn} \
                     is too long ({KERNEL_HOSTNAME_MAX} characters is the max, {} characters \
                     requested)",
                    fqdn.len()
                ));
            }
            Ok(fqdn)
        }
        _ => Ok(hostname),
    }
}

/// What the Pod's hosts file holds, less its address.
pub fn pod_hosts(pod: &Pod, cluster_domain: &str) -> HostsConfig {
    let spec = pod.spec.as_ref();
    let (hostname, domain) = pod_hostname(pod, cluster_domain);
    HostsConfig {
        hostname,
        domain,
        aliases: spec
            .and_then(|s| s.host_aliases.as_ref())
            .into_iter()
            .flatten()
            .map(|a| (a.ip.clone(), a.hostnames.clone().unwrap_or_default()))
            .collect(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    }
}

/// The hosts file of a Pod with address `pod_ip`; `node_hosts` is the node's own file, the
/// base for a `hostNetwork` Pod.
pub fn hosts_file(config: &HostsConfig, pod_ip: Ipv4Addr, node_hosts: &str) -> String {
    let mut text = String::new();
    if config.host_network {
        text.push_str(MANAGED_HEADER_HOST_NETWORK);
        text.push_str(node_hosts);
    } else {
        text.push_str(MANAGED_HEADER);
        text.push_str(LOCALHOST);
        let short = &config.hostname;
        match &config.domain {
            Some(domain) => text.push_str(&format!("{pod_ip}\t{short}.{domain}\t{short}\n")),
            None => text.push_str(&format!("{pod_ip}\t{short}\n")),
        }
    }
    if !config.aliases.is_empty() {
        text.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in &config.aliases {
            text.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, spec: serde_json::Value) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c"}]);
        serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "team"}, "spec": spec}),
        )
        .unwrap()
    }

    const IP: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);

    #[test]
    fn a_plain_pod_is_known_by_its_name() {
        let config = pod_hosts(&pod("web-1", json!({})), "cluster.local");
        assert_eq!(
            hosts_file(&config, IP, "ignored"),
            "# Kubernetes-managed hosts file.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\n\
             fe00::0\tip6-mcastprefix\n\
             fe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n\
             10.244.1.7\tweb-1\n"
        );
        assert_eq!(
            kernel_hostname(&pod("web-1", json!({})), "cluster.local").unwrap(),
            "web-1"
        );
    }

    #[test]
    fn hostname_and_subdomain_give_the_fqdn_first_and_aliases_follow() {
        let spec = json!({"hostname": "db-0", "subdomain": "dbs", "hostAliases": [
            {"ip": "192.0.2.1", "hostnames": ["foo.local", "bar.local"]},
            {"ip": "192.0.2.2", "hostnames": ["baz.remote"]}]});
        let config = pod_hosts(&pod("anything", spec), "example.org");
        let text = hosts_file(&config, IP, "ignored");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[7..],
            [
                "10.244.1.7\tdb-0.dbs.team.svc.example.org\tdb-0",
                "",
                "# Entries added by HostAliases.",
                "192.0.2.1\tfoo.local\tbar.local",
                "192.0.2.2\tbaz.remote",
            ]
        );
    }

    #[test]
    fn set_hostname_as_fqdn_gives_the_kernel_the_fqdn_if_it_fits() {
        let spec = json!({"subdomain": "dbs", "setHostnameAsFQDN": true});
        assert_eq!(
            kernel_hostname(&pod("db-0", spec.clone()), "cluster.local").unwrap(),
            "db-0.dbs.team.svc.cluster.local"
        );
        // Without a subdomain there is no FQDN: the short name stays.
        let alone = json!({"setHostnameAsFQDN": true});
        assert_eq!(
            kernel_hostname(&pod("db-0", alone), "cluster.local").unwrap(),
            "db-0"
        );
        let long = "a".repeat(40); // 40 + ".dbs.team.svc.cluster.local": 67
        let err = kernel_hostname(&pod(&long, spec), "cluster.local").unwrap_err();
        assert!(
            err.contains("is too long (64 characters is the max, 67 characters requested)"),
            "{err}"
        );
    }

    #[test]
    fn a_long_pod_name_is_cut_to_a_label_without_a_trailing_dash() {
        let name = format!("{}-{}", "x".repeat(62), "tail");
        let (hostname, domain) = pod_hostname(&pod(&name, json!({})), "cluster.local");
        assert_eq!(hostname, "x".repeat(62));
        assert_eq!(domain, None);
    }

    #[test]
    fn a_host_network_pod_gets_the_nodes_file_and_its_aliases() {
        let spec = json!({"hostNetwork": true,
                          "hostAliases": [{"ip": "192.0.2.1", "hostnames": ["foo.local"]}]});
        let config = pod_hosts(&pod("agent", spec), "cluster.local");
        assert_eq!(
            hosts_file(&config, IP, "127.0.0.1\tlocalhost\n192.0.2.9\tnode1\n"),
            "# Kubernetes-managed hosts file (host network).\n\
             127.0.0.1\tlocalhost\n\
             192.0.2.9\tnode1\n\
             \n\
             # Entries added by HostAliases.\n\
             192.0.2.1\tfoo.local\n"
        );
    }
}
