//! From the agent's view of a Pod to CRI messages and back, the way kubelet fills them in:
//! kubelet's labels on sandboxes and containers (how a restarted agent finds its Pods again),
//! the log layout under `/var/log/pods`, cgroup parents under the node's cgroup, the Pod's own
//! /etc/hosts mounted into each container, and container states in Kubernetes' words. Pure, so
//! every field is unit-tested.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;

use crate::runtime::{ContainerConfig, ContainerState, Resources, SandboxConfig, VolumeMount};

/// kubelet's sandbox and container labels.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// The Pod's name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// The Pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// A container's name in its Pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

/// Where kubelet mounts the Pod's hosts file.
pub const ETC_HOSTS: &str = "/etc/hosts";
/// kubelet's name for it in a Pod's folder.
pub const HOSTS_FILE: &str = "etc-hosts";

/// CFS period kubelet uses (100 ms, in µs).
const CPU_PERIOD_US: i64 = 100_000;

/// `<ns>_<name>_<uid>`: a Pod's log folder under the pod log root, as kubelet names it.
pub fn pod_log_dir(root: &Path, namespace: &str, name: &str, uid: &str) -> std::path::PathBuf {
    root.join(format!("{namespace}_{name}_{uid}"))
}

/// `<container>/<attempt>.log`, relative to the Pod's log folder.
pub fn container_log_path(name: &str, attempt: u32) -> String {
    format!("{name}/{attempt}.log")
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn protocol(name: &str) -> i32 {
    match name {
        "udp" => cri::Protocol::Udp as i32,
        "sctp" => cri::Protocol::Sctp as i32,
        _ => cri::Protocol::Tcp as i32,
    }
}

/// Namespaces as kubelet asks for them: the Pod's network and IPC, a PID namespace per
/// container (no `shareProcessNamespace` yet).
fn namespace_options() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The sandbox's config. `cgroup_parent` is the node's Pod cgroup relative to the cgroup2
/// mount (`/skiff-pods`); the Pod gets `pod-<uid>` below it.
pub fn sandbox_config(
    config: &SandboxConfig,
    attempt: u32,
    log_root: &Path,
    cgroup_parent: &str,
) -> cri::PodSandboxConfig {
    let log_dir = pod_log_dir(log_root, &config.namespace, &config.name, &config.uid);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: config.name.clone(),
            uid: config.uid.clone(),
            namespace: config.namespace.clone(),
            attempt,
        }),
        hostname: config.hostname.clone(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        dns_config: Some(cri::DnsConfig {
            servers: config.dns.servers.clone(),
            searches: config.dns.searches.clone(),
            options: config.dns.options.clone(),
        }),
        port_mappings: config
            .port_mappings
            .iter()
            .map(|p| cri::PortMapping {
                protocol: protocol(&p.protocol),
                container_port: i32::from(p.container_port),
                host_port: i32::from(p.host_port),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            })
            .collect(),
        labels: labels(&[
            (POD_UID, &config.uid),
            (POD_NAME, &config.name),
            (POD_NAMESPACE, &config.namespace),
        ]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod-{}", cgroup_parent.trim_end_matches('/'), config.uid),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn linux_resources(resources: &Resources) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: CPU_PERIOD_US,
        cpu_quota: resources.cpu_quota.map_or(0, |q| q as i64),
        cpu_shares: resources.cpu_shares as i64,
        memory_limit_in_bytes: resources.memory_limit.map_or(0, |m| m as i64),
        ..Default::default()
    }
}

/// The Pod's hosts file (at `host_path` on the node) over the container's /etc/hosts, as
/// kubelet mounts it: writable, relabelled for SELinux, propagating nothing.
fn hosts_mount(host_path: &Path) -> cri::Mount {
    cri::Mount {
        container_path: ETC_HOSTS.to_owned(),
        host_path: host_path.to_string_lossy().into_owned(),
        readonly: false,
        selinux_relabel: true,
        propagation: cri::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    }
}

/// A hostPath volume's mount, as kubelet gives it: propagating nothing.
fn volume_mount(mount: &VolumeMount) -> cri::Mount {
    cri::Mount {
        container_path: mount.container_path.to_string_lossy().into_owned(),
        host_path: mount.host_path.to_string_lossy().into_owned(),
        readonly: mount.read_only,
        propagation: cri::MountPropagation::PropagationPrivate as i32,
        ..Default::default()
    }
}

/// A container's config for its `attempt`-th run in the Pod `sandbox`; `hosts_file` is the
/// Pod's hosts file on the node, once the Pod has an address (kubelet mounts none before).
pub fn container_config(
    sandbox: &SandboxConfig,
    config: &ContainerConfig,
    attempt: u32,
    hosts_file: Option<&Path>,
) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: config.name.clone(),
            attempt,
        }),
        image: Some(cri::ImageSpec {
            image: config.image.clone(),
            ..Default::default()
        }),
        command: config.command.clone(),
        args: config.args.clone().unwrap_or_default(),
        working_dir: config.working_dir.clone().unwrap_or_default(),
        envs: config
            .env
            .iter()
            .map(|(key, value)| cri::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        labels: labels(&[
            (POD_UID, &sandbox.uid),
            (POD_NAME, &sandbox.name),
            (POD_NAMESPACE, &sandbox.namespace),
            (CONTAINER_NAME, &config.name),
        ]),
        log_path: container_log_path(&config.name, attempt),
        mounts: hosts_file
            .map(hosts_mount)
            .into_iter()
            .chain(
                sandbox
                    .mounts
                    .iter()
                    .filter(|(container, _)| *container == config.name)
                    .map(|(_, mount)| volume_mount(mount)),
            )
            .collect(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(linux_resources(&config.resources)),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Nanoseconds since the epoch as RFC 3339 (seconds), as Pod status times are written.
pub fn rfc3339(nanos: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .ok()
        .and_then(|t| t.round(k8s_openapi::jiff::Unit::Second).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A CRI container status in Kubernetes' terms.
pub fn container_state(status: &cri::ContainerStatus) -> ContainerState {
    let started = (status.started_at > 0).then(|| rfc3339(status.started_at));
    let state = cri::ContainerState::try_from(status.state)
        .unwrap_or(cri::ContainerState::ContainerUnknown);
    match state {
        cri::ContainerState::ContainerCreated => ContainerState::Creating,
        cri::ContainerState::ContainerRunning => ContainerState::Running {
            started_at: started.unwrap_or_default(),
        },
        cri::ContainerState::ContainerExited => ContainerState::Exited {
            exit_code: status.exit_code,
            reason: match (status.reason.as_str(), status.exit_code) {
                ("", 0) => "Completed".to_owned(),
                ("", _) => "Error".to_owned(),
                (reason, _) => reason.to_owned(),
            },
            message: (!status.message.is_empty()).then(|| status.message.clone()),
            started_at: started,
            finished_at: rfc3339(status.finished_at),
        },
        cri::ContainerState::ContainerUnknown => ContainerState::Exited {
            exit_code: 137,
            reason: "ContainerStatusUnknown".to_owned(),
            message: Some("the container runtime does not know the container's state".to_owned()),
            started_at: started,
            finished_at: rfc3339(status.finished_at.max(status.created_at)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{DnsConfig, HostsConfig, PortMapping};

    fn sandbox() -> SandboxConfig {
        SandboxConfig {
            uid: "u1".into(),
            namespace: "default".into(),
            name: "web-1".into(),
            hostname: "web-1".into(),
            port_mappings: vec![PortMapping {
                host_port: 8053,
                container_port: 53,
                protocol: "udp".into(),
                host_ip: None,
            }],
            dns: DnsConfig {
                servers: vec!["10.96.0.10".into()],
                searches: vec!["default.svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
            hosts: HostsConfig {
                hostname: "web-1".into(),
                ..HostsConfig::default()
            },
            mounts: vec![
                (
                    "app".into(),
                    VolumeMount {
                        host_path: "/etc/skiff/dns.kubeconfig".into(),
                        container_path: "/etc/kubeconfig".into(),
                        read_only: true,
                    },
                ),
                (
                    "sidecar".into(),
                    VolumeMount {
                        host_path: "/srv".into(),
                        container_path: "/srv".into(),
                        read_only: false,
                    },
                ),
            ],
        }
    }

    #[test]
    fn a_sandbox_carries_kubelets_labels_logs_and_cgroup() {
        let config = sandbox_config(&sandbox(), 2, Path::new("/var/log/pods"), "/skiff-pods/");
        let meta = config.metadata.as_ref().unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.uid.as_str(), meta.attempt),
            ("web-1", "u1", 2)
        );
        assert_eq!(config.log_directory, "/var/log/pods/default_web-1_u1");
        assert_eq!(config.labels[POD_UID], "u1");
        assert_eq!(config.labels[POD_NAMESPACE], "default");
        let linux = config.linux.as_ref().unwrap();
        assert_eq!(linux.cgroup_parent, "/skiff-pods/pod-u1");
        assert_eq!(config.port_mappings[0].protocol, cri::Protocol::Udp as i32);
        assert_eq!(config.port_mappings[0].host_port, 8053);
        assert_eq!(config.dns_config.as_ref().unwrap().options, ["ndots:5"]);
        assert_eq!(config.hostname, "web-1");
    }

    #[test]
    fn a_container_keeps_the_pods_command_and_its_limits() {
        let container = ContainerConfig {
            name: "app".into(),
            image: "localhost:5000/skiff/test-server".into(),
            command: vec![],
            args: Some(vec!["--http-port".into(), "9090".into()]),
            env: vec![("MODE".into(), "fast".into())],
            working_dir: None,
            resources: Resources {
                cpu_shares: 102,
                cpu_quota: Some(50_000),
                memory_limit: Some(64 << 20),
            },
        };
        let config = container_config(&sandbox(), &container, 3, None);
        let mounts: Vec<_> = config
            .mounts
            .iter()
            .map(|m| (m.container_path.as_str(), m.host_path.as_str(), m.readonly))
            .collect();
        assert_eq!(
            mounts,
            [("/etc/kubeconfig", "/etc/skiff/dns.kubeconfig", true)],
            "its own volume only, and no hosts file before the Pod has an address"
        );
        let config = container_config(
            &sandbox(),
            &container,
            3,
            Some(Path::new("/var/lib/skiff/pods/u1/etc-hosts")),
        );
        let hosts = &config.mounts[0];
        assert_eq!(
            (
                hosts.container_path.as_str(),
                hosts.host_path.as_str(),
                hosts.readonly
            ),
            ("/etc/hosts", "/var/lib/skiff/pods/u1/etc-hosts", false)
        );
        assert_eq!(
            hosts.propagation,
            cri::MountPropagation::PropagationPrivate as i32
        );
        assert_eq!(config.log_path, "app/3.log");
        assert!(config.command.is_empty(), "the image's entrypoint stays");
        assert_eq!(config.args, ["--http-port", "9090"]);
        assert_eq!(config.envs[0].key, "MODE");
        assert_eq!(config.labels[CONTAINER_NAME], "app");
        let resources = config.linux.unwrap().resources.unwrap();
        assert_eq!(
            (
                resources.cpu_shares,
                resources.cpu_quota,
                resources.cpu_period
            ),
            (102, 50_000, 100_000)
        );
        assert_eq!(resources.memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    fn states_read_as_kubernetes_writes_them() {
        let second = 1_700_000_000_000_000_000_i64;
        let mut status = cri::ContainerStatus {
            state: cri::ContainerState::ContainerRunning as i32,
            started_at: second,
            ..Default::default()
        };
        assert_eq!(
            container_state(&status),
            ContainerState::Running {
                started_at: "2023-11-14T22:13:20Z".into()
            }
        );
        status.state = cri::ContainerState::ContainerExited as i32;
        status.exit_code = 2;
        status.finished_at = second + 5_000_000_000;
        let ContainerState::Exited {
            reason,
            finished_at,
            ..
        } = container_state(&status)
        else {
            panic!("exited");
        };
        assert_eq!(
            (reason.as_str(), finished_at.as_str()),
            ("Error", "2023-11-14T22:13:25Z")
        );
        status.reason = "StartError".into();
        status.started_at = 0;
        let ContainerState::Exited {
            reason, started_at, ..
        } = container_state(&status)
        else {
            panic!("exited");
        };
        assert_eq!((reason.as_str(), started_at), ("StartError", None));
        status.state = cri::ContainerState::ContainerCreated as i32;
        assert_eq!(container_state(&status), ContainerState::Creating);
    }
}
