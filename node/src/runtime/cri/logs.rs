//! Container log rotation, kubelet's container log manager: a running container's CRI log
//! (`<n>.log`) over the size limit is renamed `<n>.log.<UTC time>`, the runtime is asked to
//! reopen its log (ReopenContainerLog) so it writes a fresh `<n>.log`, and the oldest rotated
//! files go so that at most `max_files` remain, the live one included. The naming and the
//! choice of what goes are pure functions; the CRI calls are [`CriRuntime`]'s, below them.

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;

use super::convert::POD_UID;
use super::{CALL_TIMEOUT, CriRuntime, io};
use crate::runtime::RuntimeError;

/// The name a rotated log gets: `0.log` → `0.log.20261207-101500`.
pub fn rotated_name(log: &Path, now: k8s_openapi::jiff::Timestamp) -> PathBuf {
    let stamp = now.strftime("%Y%m%d-%H%M%S").to_string();
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{stamp}"));
    PathBuf::from(name)
}

/// The rotated files of `log` (`<log>.<stamp>`) among `siblings` that must go so that at most
/// `max_files` files remain with the live one: the oldest first (stamps sort by time).
pub fn to_remove(log: &Path, siblings: &[PathBuf], max_files: usize) -> Vec<PathBuf> {
    let Some(prefix) = log.file_name().map(|n| format!("{}.", n.to_string_lossy())) else {
        return Vec::new();
    };
    let mut rotated: Vec<&PathBuf> = siblings
        .iter()
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .is_some_and(|n| n.starts_with(&prefix) && !n.ends_with(".tmp"))
        })
        .collect();
    rotated.sort();
    let keep = max_files.saturating_sub(1);
    let excess = rotated.len().saturating_sub(keep);
    rotated.into_iter().take(excess).cloned().collect()
}

impl CriRuntime {
    /// Rotates the log of every running container that is over `max_bytes`; how many were.
    pub(super) fn rotate_running_logs(
        &self,
        max_bytes: u64,
        max_files: usize,
    ) -> Result<usize, RuntimeError> {
        let mut client = self.runtime.clone();
        let request = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                state: Some(cri::ContainerStateValue {
                    state: cri::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        };
        let running = self
            .wait(
                "ListContainers",
                CALL_TIMEOUT,
                client.list_containers(request),
            )?
            .containers;
        let mut rotated = 0;
        for container in running.iter().filter(|c| c.labels.contains_key(POD_UID)) {
            match self.rotate_log(&container.id, max_bytes, max_files) {
                Ok(true) => rotated += 1,
                Ok(false) => {}
                Err(err) => {
                    tracing::warn!(container = %container.id, error = %err, "log not rotated");
                }
            }
        }
        Ok(rotated)
    }

    /// Rotates the log of one running container when it is over `max_bytes`.
    fn rotate_log(&self, id: &str, max_bytes: u64, max_files: usize) -> Result<bool, RuntimeError> {
        let status = self.container_status(id)?;
        let log = PathBuf::from(&status.log_path);
        if status.log_path.is_empty() {
            return Ok(false);
        }
        let size = std::fs::metadata(&log).map_or(0, |m| m.len());
        if size <= max_bytes {
            return Ok(false);
        }
        let rotated = rotated_name(&log, k8s_openapi::jiff::Timestamp::now());
        std::fs::rename(&log, &rotated).map_err(io(format!("cannot rotate {}", log.display())))?;
        let mut client = self.runtime.clone();
        let request = cri::ReopenContainerLogRequest {
            container_id: id.to_owned(),
        };
        if let Err(err) = self.wait(
            "ReopenContainerLog",
            CALL_TIMEOUT,
            client.reopen_container_log(request),
        ) {
            // The runtime still writes the old file: give it its name back.
            let _ = std::fs::rename(&rotated, &log);
            return Err(err);
        }
        let dir = log.parent().unwrap_or(&log).to_path_buf();
        let siblings: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(io(format!("cannot list {}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .collect();
        for old in to_remove(&log, &siblings, max_files) {
            std::fs::remove_file(&old).map_err(io(format!("cannot remove {}", old.display())))?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_logs_are_stamped_and_the_oldest_go_first() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-07T10:15:00Z".parse().unwrap();
        let log = Path::new("/var/log/pods/ns_p_u/c/0.log");
        assert_eq!(
            rotated_name(log, now),
            Path::new("/var/log/pods/ns_p_u/c/0.log.20261207-101500")
        );
        let dir = Path::new("/var/log/pods/ns_p_u/c");
        let siblings: Vec<PathBuf> = [
            "0.log",
            "0.log.20261207-101500",
            "0.log.20261207-100000",
            "0.log.20261207-101000",
            "1.log",
        ]
        .iter()
        .map(|n| dir.join(n))
        .collect();
        assert_eq!(
            to_remove(log, &siblings, 3),
            [dir.join("0.log.20261207-100000")]
        );
        assert_eq!(
            to_remove(log, &siblings, 1).len(),
            3,
            "only the live one stays"
        );
        assert!(to_remove(log, &siblings, 5).is_empty());
    }
}
