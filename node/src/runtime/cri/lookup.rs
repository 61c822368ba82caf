//! Finding a Pod's sandboxes and containers in the runtime by kubelet's labels, and reading
//! them back as the seam's types: what every CRI call of the runtime builds on.

use k8s_cri::v1 as cri;

use super::convert::{self, CONTAINER_NAME, POD_UID};
use super::{CALL_TIMEOUT, CriRuntime};
use crate::runtime::{ContainerInfo, RuntimeError, SandboxInfo};

impl CriRuntime {
    /// The Pod's sandboxes, newest attempt last.
    pub(super) fn pod_sandboxes(&self, uid: &str) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [(POD_UID.to_owned(), uid.to_owned())].into(),
                ..Default::default()
            }),
        };
        let mut items = self
            .wait(
                "ListPodSandbox",
                CALL_TIMEOUT,
                client.list_pod_sandbox(request),
            )?
            .items;
        items.sort_by_key(|s| (s.metadata.as_ref().map_or(0, |m| m.attempt), s.created_at));
        Ok(items)
    }

    /// Every sandbox containerd holds.
    pub(super) fn all_sandboxes(&self) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::ListPodSandboxRequest::default();
        Ok(self
            .wait(
                "ListPodSandbox",
                CALL_TIMEOUT,
                client.list_pod_sandbox(request),
            )?
            .items)
    }

    /// The Pod's ready sandbox, if it has one.
    pub(super) fn ready_sandbox(&self, uid: &str) -> Result<Option<cri::PodSandbox>, RuntimeError> {
        Ok(self
            .pod_sandboxes(uid)?
            .into_iter()
            .rev()
            .find(|s| s.state == cri::PodSandboxState::SandboxReady as i32))
    }

    pub(super) fn sandbox_status(&self, id: &str) -> Result<cri::PodSandboxStatus, RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        };
        self.wait(
            "PodSandboxStatus",
            CALL_TIMEOUT,
            client.pod_sandbox_status(request),
        )?
        .status
        .ok_or_else(|| RuntimeError::Call {
            call: "PodSandboxStatus",
            message: format!("no status for sandbox {id}"),
        })
    }

    pub(super) fn info_of(&self, sandbox: &cri::PodSandbox) -> Result<SandboxInfo, RuntimeError> {
        let meta = sandbox.metadata.clone().unwrap_or_default();
        let ip = if sandbox.state == cri::PodSandboxState::SandboxReady as i32 {
            self.sandbox_status(&sandbox.id)?
                .network
                .and_then(|n| n.ip.parse().ok())
        } else {
            None
        };
        Ok(SandboxInfo {
            uid: sandbox.labels.get(POD_UID).cloned().unwrap_or(meta.uid),
            namespace: meta.namespace,
            name: meta.name,
            ip,
        })
    }

    /// The containers named `name` in the Pod's sandboxes (all when `name` is None), oldest
    /// attempt first.
    pub(super) fn pod_containers(
        &self,
        uid: &str,
        name: Option<&str>,
    ) -> Result<Vec<cri::Container>, RuntimeError> {
        let mut selector = vec![(POD_UID.to_owned(), uid.to_owned())];
        if let Some(name) = name {
            selector.push((CONTAINER_NAME.to_owned(), name.to_owned()));
        }
        let mut client = self.runtime.clone();
        let request = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: selector.into_iter().collect(),
                ..Default::default()
            }),
        };
        let mut containers = self
            .wait(
                "ListContainers",
                CALL_TIMEOUT,
                client.list_containers(request),
            )?
            .containers;
        containers.sort_by_key(|c| (c.metadata.as_ref().map_or(0, |m| m.attempt), c.created_at));
        Ok(containers)
    }

    pub(super) fn container_status(&self, id: &str) -> Result<cri::ContainerStatus, RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        self.wait(
            "ContainerStatus",
            CALL_TIMEOUT,
            client.container_status(request),
        )?
        .status
        .ok_or_else(|| RuntimeError::Call {
            call: "ContainerStatus",
            message: format!("no status for container {id}"),
        })
    }

    pub(super) fn info_of_container(
        &self,
        container: &cri::Container,
    ) -> Result<ContainerInfo, RuntimeError> {
        let status = self.container_status(&container.id)?;
        Ok(ContainerInfo {
            attempt: container.metadata.as_ref().map_or(0, |m| m.attempt),
            id: format!("containerd://{}", container.id),
            image_id: (!status.image_ref.is_empty()).then(|| status.image_ref.clone()),
            state: convert::container_state(&status),
        })
    }

    pub(super) fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::RemoveContainerRequest {
            container_id: id.to_owned(),
        };
        self.wait(
            "RemoveContainer",
            CALL_TIMEOUT,
            client.remove_container(request),
        )
        .map(drop)
    }

    /// StopPodSandbox (containers, then the network: containerd's CNI DEL) and
    /// RemovePodSandbox.
    pub(super) fn remove_pod_sandbox(&self, id: &str) -> Result<(), RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.wait(
            "StopPodSandbox",
            CALL_TIMEOUT,
            client.stop_pod_sandbox(request),
        )?;
        let mut client = self.runtime.clone();
        let request = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        self.wait(
            "RemovePodSandbox",
            CALL_TIMEOUT,
            client.remove_pod_sandbox(request),
        )
        .map(drop)
    }
}
