//! Node registration, as kubelet does it: create the Node (or, when it exists already from an
//! earlier run, bring its status up to date), then wait for the control plane's node IPAM to
//! give it a podCIDR — no Pod gets a network before the node knows its address block.

use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::facts::MachineFacts;
use crate::runtime::NodeImage;

/// The version this agent reports as `kubeletVersion`: the API it serves, plus ours.
pub const AGENT_VERSION: &str = concat!("v1.33.0-skiff.", env!("CARGO_PKG_VERSION"));
/// Pods a node takes, kubelet's default `--max-pods`.
pub const MAX_PODS: u32 = 110;

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The apiserver refused or could not be reached.
    #[error("cannot register node {node}")]
    Api {
        /// The Node's name.
        node: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The Node's watch ended, which a kube-rs watcher never does on its own.
    #[error("the watch of node {node} ended before it got a podCIDR")]
    WatchEnded {
        /// The Node's name.
        node: String,
    },
    /// The podCIDR is not an IPv4 network.
    #[error("node {node} has podCIDR {cidr:?}, not an IPv4 network")]
    BadCidr {
        /// The Node's name.
        node: String,
        /// What it held.
        cidr: String,
    },
}

/// Who this node is.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// The Node's name (`--hostname-override`, else the hostname).
    pub name: String,
    /// Its InternalIP (`--node-ip`).
    pub ip: Ipv4Addr,
}

fn now() -> Value {
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    serde_json::to_value(now).expect("a timestamp serializes")
}

/// What the agent sees of its node besides the machine: the runtime's images, and why the
/// node cannot run Pods (the runtime or its network not ready), if so.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The images the runtime holds.
    pub images: Vec<NodeImage>,
    /// Why the runtime is not ready, as kubelet words it.
    pub runtime_problem: Option<String>,
}

/// The Ready condition this agent posts while it runs: True, or False with kubelet's reason
/// when the runtime is not ready.
pub fn ready_condition(problem: Option<&str>) -> Value {
    match problem {
        None => json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "skiff-node is posting ready status",
                       "lastHeartbeatTime": now(), "lastTransitionTime": now()}),
        Some(problem) => json!({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                "message": problem,
                                "lastHeartbeatTime": now(), "lastTransitionTime": now()}),
    }
}

/// At most this many images in the status, kubelet's `--node-status-max-images`.
pub const MAX_IMAGES: usize = 50;

/// The status part this agent owns: addresses, capacity, nodeInfo, Ready and the images the
/// runtime holds (largest first, as kubelet lists them).
pub fn node_status(identity: &NodeIdentity, facts: &MachineFacts, observed: &Observed) -> Value {
    let mut images: Vec<&NodeImage> = observed
        .images
        .iter()
        .filter(|i| !i.names.is_empty())
        .collect();
    images.sort_by_key(|i| std::cmp::Reverse(i.size_bytes));
    let images: Vec<Value> = images
        .into_iter()
        .take(MAX_IMAGES)
        .map(|i| json!({"names": i.names, "sizeBytes": i.size_bytes}))
        .collect();
    let capacity = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_bytes / 1024),
        "pods": MAX_PODS.to_string(),
    });
    json!({
        "addresses": [
            {"type": "InternalIP", "address": identity.ip.to_string()},
            {"type": "Hostname", "address": identity.name},
        ],
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [ready_condition(observed.runtime_problem.as_deref())],
        "images": images,
        "nodeInfo": {
            "machineID": facts.machine_id, "systemUUID": facts.machine_id,
            "bootID": facts.boot_id, "kernelVersion": facts.kernel_version,
            "osImage": facts.os_image, "containerRuntimeVersion": facts.runtime_version,
            "kubeletVersion": AGENT_VERSION, "kubeProxyVersion": AGENT_VERSION,
            "operatingSystem": "linux", "architecture": facts.architecture,
        },
    })
}

/// The labels every Node carries.
pub fn node_labels(identity: &NodeIdentity, facts: &MachineFacts) -> Value {
    json!({
        "kubernetes.io/hostname": identity.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": facts.architecture,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": facts.architecture,
    })
}

/// Creates the Node, or updates the labels and status of one that exists.
pub async fn register(
    nodes: &Api<Node>,
    identity: &NodeIdentity,
    facts: &MachineFacts,
    observed: &Observed,
) -> Result<Node, RegisterError> {
    let api_error = |source| RegisterError::Api {
        node: identity.name.clone(),
        source,
    };
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": identity.name, "labels": node_labels(identity, facts)},
        "status": node_status(identity, facts, observed),
    }))
    .expect("a valid Node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(created) => {
            tracing::info!(node = %identity.name, "registered the node");
            // Some apiservers drop a created Node's status: post it through /status too.
            post_status(nodes, identity, facts, observed)
                .await
                .map(|_| created)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let labels = json!({"metadata": {"labels": node_labels(identity, facts)}});
            nodes
                .patch(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&labels),
                )
                .await
                .map_err(api_error)?;
            tracing::info!(node = %identity.name, "the node exists: updating it");
            post_status(nodes, identity, facts, observed).await
        }
        Err(source) => Err(api_error(source)),
    }
}

/// Posts this agent's part of the Node's status (conditions merge by type).
pub async fn post_status(
    nodes: &Api<Node>,
    identity: &NodeIdentity,
    facts: &MachineFacts,
    observed: &Observed,
) -> Result<Node, RegisterError> {
    let patch = json!({"status": node_status(identity, facts, observed)});
    nodes
        .patch_status(
            &identity.name,
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .map_err(|source| RegisterError::Api {
            node: identity.name.clone(),
            source,
        })
}

/// The Node's podCIDR, once it has one.
pub fn pod_cidr_of(node: &Node) -> Result<Option<Ipv4Net>, RegisterError> {
    let Some(cidr) = node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
        return Ok(None);
    };
    cidr.parse().map(Some).map_err(|_| RegisterError::BadCidr {
        node: node.metadata.name.clone().unwrap_or_default(),
        cidr: cidr.to_owned(),
    })
}

/// Waits until the Node has a podCIDR, logging every `nag` while it has none.
pub async fn wait_for_pod_cidr(
    nodes: &Api<Node>,
    name: &str,
    nag: Duration,
) -> Result<Ipv4Net, RegisterError> {
    let mut events = std::pin::pin!(watcher::watch_object(nodes.clone(), name));
    loop {
        match tokio::time::timeout(nag, events.next()).await {
            Err(_) => tracing::info!(node = %name, "waiting for a podCIDR"),
            Ok(Some(Ok(Some(node)))) => {
                if let Some(cidr) = pod_cidr_of(&node)? {
                    return Ok(cidr);
                }
            }
            Ok(Some(Ok(None))) => tracing::warn!(node = %name, "the node is gone"),
            Ok(Some(Err(source))) => {
                // The watcher starts over on the next poll; say so and go on.
                tracing::warn!(node = %name, error = %source, "node watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(None) => {
                return Err(RegisterError::WatchEnded {
                    node: name.to_owned(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> MachineFacts {
        MachineFacts {
            cpus: 2,
            memory_bytes: 4 * 1024 * 1024 * 1024,
            kernel_version: "6.18.0".into(),
            os_image: "Debian".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            architecture: "amd64".into(),
            runtime_version: "containerd://1.6.20".into(),
        }
    }

    #[test]
    fn the_status_is_a_valid_node_status_with_addresses_and_capacity() {
        let identity = NodeIdentity {
            name: "node1".into(),
            ip: Ipv4Addr::new(172, 31, 0, 10),
        };
        let images = [
            NodeImage {
                names: vec!["localhost:5000/skiff/pause:latest".into()],
                size_bytes: 10,
            },
            NodeImage {
                names: vec!["localhost:5000/skiff/test-server:latest".into()],
                size_bytes: 20,
            },
        ];
        let observed = Observed {
            images: images.to_vec(),
            runtime_problem: None,
        };
        let status: k8s_openapi::api::core::v1::NodeStatus =
            serde_json::from_value(node_status(&identity, &facts(), &observed)).unwrap();
        let listed = status.images.clone().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].size_bytes, Some(20), "largest first");
        assert_eq!(
            status.node_info.as_ref().unwrap().container_runtime_version,
            "containerd://1.6.20"
        );
        let addresses: Vec<(String, String)> = status
            .addresses
            .unwrap()
            .into_iter()
            .map(|a| (a.type_, a.address))
            .collect();
        assert_eq!(
            addresses,
            [
                ("InternalIP".to_owned(), "172.31.0.10".to_owned()),
                ("Hostname".to_owned(), "node1".to_owned())
            ]
        );
        let capacity = status.capacity.unwrap();
        assert_eq!(capacity["memory"].0, "4194304Ki");
        assert_eq!(capacity["pods"].0, "110");
        assert_eq!(status.node_info.unwrap().kubelet_version, AGENT_VERSION);
        let ready = &status.conditions.unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        let down = Observed {
            images: Vec::new(),
            runtime_problem: Some("container runtime is down".into()),
        };
        let status: k8s_openapi::api::core::v1::NodeStatus =
            serde_json::from_value(node_status(&identity, &facts(), &down)).unwrap();
        let ready = &status.conditions.unwrap()[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert_eq!(ready.message.as_deref(), Some("container runtime is down"));
    }

    #[test]
    fn a_pod_cidr_must_be_ipv4() {
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "fd00::/64"}}),
        )
        .unwrap();
        let err = pod_cidr_of(&node).unwrap_err();
        assert_eq!(
            err.to_string(),
            "node n has podCIDR \"fd00::/64\", not an IPv4 network"
        );
        let node: Node = serde_json::from_value(
            json!({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.3.0/24"}}),
        )
        .unwrap();
        assert_eq!(
            pod_cidr_of(&node).unwrap(),
            Some("10.244.3.0/24".parse().unwrap())
        );
    }
}
