//! Container log rotation, kubelet's container log manager: a running container's CRI log
//! (`<n>.log`) over the size limit is renamed `<n>.log.<UTC time>`, the runtime is asked to
//! reopen its log (ReopenContainerLog) so it writes a fresh `<n>.log`, and the oldest rotated
//! files go so that at most `max_files` remain, the live one included. Only the naming and the
//! choice of what goes are here, pure; the runtime does the calls.

use std::path::{Path, PathBuf};

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
