//! What the runtime is asked to run for a Pod: its sandbox (hostname, DNS, /etc/hosts, host
//! ports, hostPath volumes) and each
//! container (command, args and environment with `$(VAR)`s expanded as kubelet does, working
//! dir, limits).

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Worker;
use crate::pods::dns::{DnsSettings, pod_dns};
use crate::pods::env::{container_env, expand, service_env};
use crate::pods::hosts::{kernel_hostname, pod_hosts};
use crate::pods::resources::container_resources;
use crate::pods::volumes::{pod_mounts, prepare_host_paths};
use crate::runtime::{ContainerConfig, PortMapping, RuntimeError, SandboxConfig};

/// The Pod's sandbox, as the runtime is asked for it (at RunPodSandbox and CreateContainer);
/// refused, as kubelet refuses it, when its FQDN cannot be its hostname or its volumes cannot
/// be given (their node paths are checked, or made, here, before anything runs).
pub(super) fn sandbox_config(pod: &Pod, dns: &DnsSettings) -> Result<SandboxConfig, RuntimeError> {
    let hosts = pod_hosts(pod, &dns.cluster_domain);
    // A hostNetwork Pod keeps the node's hostname (kubelet sets none).
    let hostname = match hosts.host_network {
        true => String::new(),
        false => kernel_hostname(pod, &dns.cluster_domain).map_err(RuntimeError::Invalid)?,
    };
    let invalid = |err: crate::pods::volumes::VolumeError| RuntimeError::Invalid(err.to_string());
    let mounts = pod_mounts(pod).map_err(invalid)?;
    prepare_host_paths(pod).map_err(invalid)?;
    Ok(SandboxConfig {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        hostname,
        port_mappings: port_mappings(pod),
        dns: pod_dns(pod, dns),
        hosts,
        mounts,
    })
}

pub(super) fn port_mappings(pod: &Pod) -> Vec<PortMapping> {
    let containers = pod.spec.iter().flat_map(|s| &s.containers);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(PortMapping {
                host_port: u16::try_from(p.host_port?).ok().filter(|&h| h != 0)?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_ip: p.host_ip.clone().filter(|h| !h.is_empty()),
            })
        })
        .collect()
}

impl Worker {
    /// The container as the runtime is asked to run it: the Pod's command, args and
    /// environment (`$(VAR)`s expanded, as kubelet does), working dir and limits.
    pub(super) fn launch(&self, pod: &Pod, container: &Container) -> ContainerConfig {
        let pod_ip = self
            .sandbox
            .as_ref()
            .and_then(|s| s.ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let services = self.ctx.services.state();
        let services = service_env(namespace, links, services.iter().map(AsRef::as_ref));
        let host_ip = self.ctx.node_ip.to_string();
        let env = container_env(pod, container, &services, &pod_ip, &host_ip);
        let expand_all = |list: &[String]| list.iter().map(|a| expand(a, &env)).collect();
        ContainerConfig {
            name: container.name.clone(),
            image: container.image.clone().unwrap_or_default(),
            command: expand_all(container.command.as_deref().unwrap_or_default()),
            args: container.args.as_deref().map(expand_all),
            working_dir: container.working_dir.clone(),
            resources: container_resources(container),
            env,
        }
    }
}
