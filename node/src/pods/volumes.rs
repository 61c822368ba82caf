//! A Pod's `hostPath` volumes: which node paths each container sees where (`volumeMounts`,
//! with `subPath` and `readOnly`), and the node-side checks and creation kubelet makes for the
//! volume's `type` before any container starts.
//!
//! hostPath is the one volume kind the node agent serves so far: it is what node-level add-ons
//! mount (the DNS add-on's kubeconfig, a DaemonSet's sockets). A Pod naming any other kind is
//! refused with a clear error instead of running without the files it expects.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, Pod, Volume};

use crate::runtime::VolumeMount;

/// Why a Pod's volumes cannot be given to it.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VolumeError {
    /// A mount names a volume the Pod does not have.
    #[error("container {container:?} mounts volume {volume:?}, which the Pod does not define")]
    NoSuchVolume {
        /// The container.
        container: String,
        /// The volume's name.
        volume: String,
    },
    /// A volume of a kind this node does not serve.
    #[error("volume {volume:?}: only hostPath volumes are supported by this node")]
    Unsupported {
        /// The volume's name.
        volume: String,
    },
    /// A `subPath` that leaves the volume.
    #[error(
        "volume mount {volume:?}: subPath {sub_path:?} must be a relative path inside the volume"
    )]
    BadSubPath {
        /// The volume's name.
        volume: String,
        /// The subPath.
        sub_path: String,
    },
    /// The node path is not what the volume's `type` demands.
    #[error("hostPath volume {volume:?}: {path} {problem}")]
    HostPath {
        /// The volume's name.
        volume: String,
        /// The node path.
        path: String,
        /// What is wrong (`is not a directory`, `cannot be created: ...`).
        problem: String,
    },
}

fn host_path_of(volume: &Volume) -> Result<&HostPathVolumeSource, VolumeError> {
    volume
        .host_path
        .as_ref()
        .ok_or_else(|| VolumeError::Unsupported {
            volume: volume.name.clone(),
        })
}

/// Every container's mounts, as (container name, mount), in the order the Pod lists them.
pub fn pod_mounts(pod: &Pod) -> Result<Vec<(String, VolumeMount)>, VolumeError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    let mut mounts = Vec::new();
    for container in containers {
        for mount in container.volume_mounts.iter().flatten() {
            let volume = volumes
                .iter()
                .find(|v| v.name == mount.name)
                .ok_or_else(|| VolumeError::NoSuchVolume {
                    container: container.name.clone(),
                    volume: mount.name.clone(),
                })?;
            let mut host_path = PathBuf::from(&host_path_of(volume)?.path);
            if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                let inside = Path::new(sub_path)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
                if !inside {
                    return Err(VolumeError::BadSubPath {
                        volume: mount.name.clone(),
                        sub_path: sub_path.to_owned(),
                    });
                }
                host_path.push(sub_path);
            }
            mounts.push((
                container.name.clone(),
                VolumeMount {
                    host_path,
                    container_path: PathBuf::from(&mount.mount_path),
                    read_only: mount.read_only.unwrap_or(false),
                },
            ));
        }
    }
    // A volume no container mounts must still be of a kind this node serves.
    for volume in volumes {
        host_path_of(volume)?;
    }
    Ok(mounts)
}

/// Makes the node's side of every hostPath volume what its `type` says, as kubelet does before
/// a container starts: `DirectoryOrCreate`/`FileOrCreate` are created when missing, the other
/// types must already be there and be of their kind; no type checks nothing.
pub fn prepare_host_paths(pod: &Pod) -> Result<(), VolumeError> {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    for volume in volumes {
        let source = host_path_of(volume)?;
        let path = Path::new(&source.path);
        let problem = |problem: String| VolumeError::HostPath {
            volume: volume.name.clone(),
            path: source.path.clone(),
            problem,
        };
        let kind = fs::metadata(path).ok().map(|m| m.file_type());
        let is = |what: fn(&fs::FileType) -> bool| kind.as_ref().is_some_and(what);
        match source.type_.as_deref().unwrap_or_default() {
            "" => {}
            "DirectoryOrCreate" if kind.is_none() => {
                fs::create_dir_all(path).map_err(|e| problem(format!("cannot be created: {e}")))?
            }
            "FileOrCreate" if kind.is_none() => {
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| problem(format!("cannot be created: {e}")))?;
            }
            "Directory" | "DirectoryOrCreate" if !is(fs::FileType::is_dir) => {
                return Err(problem("is not a directory".into()));
            }
            "File" | "FileOrCreate" if !is(fs::FileType::is_file) => {
                return Err(problem("is not a file".into()));
            }
            "Socket" if !is(FileTypeExt::is_socket) => {
                return Err(problem("is not a socket".into()));
            }
            "CharDevice" if !is(FileTypeExt::is_char_device) => {
                return Err(problem("is not a character device".into()));
            }
            "BlockDevice" if !is(FileTypeExt::is_block_device) => {
                return Err(problem("is not a block device".into()));
            }
            "Directory" | "DirectoryOrCreate" | "File" | "FileOrCreate" | "Socket"
            | "CharDevice" | "BlockDevice" => {}
            other => return Err(problem(format!("has an unknown type {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value, mounts: serde_json::Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}]}
        });
        pod["spec"]["volumes"] = volumes;
        pod["spec"]["containers"][0]["volumeMounts"] = mounts;
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn host_path_mounts_with_sub_path_and_read_only() {
        let p = pod(
            json!([{"name": "conf", "hostPath": {"path": "/etc/skiff"}}]),
            json!([{"name": "conf", "mountPath": "/config", "readOnly": true},
                   {"name": "conf", "mountPath": "/kubeconfig", "subPath": "dns.kubeconfig"}]),
        );
        assert_eq!(
            pod_mounts(&p).unwrap(),
            [
                (
                    "c".to_owned(),
                    VolumeMount {
                        host_path: "/etc/skiff".into(),
                        container_path: "/config".into(),
                        read_only: true
                    }
                ),
                (
                    "c".to_owned(),
                    VolumeMount {
                        host_path: "/etc/skiff/dns.kubeconfig".into(),
                        container_path: "/kubeconfig".into(),
                        read_only: false
                    }
                )
            ]
        );
    }

    #[test]
    fn other_kinds_unknown_names_and_escaping_sub_paths_are_refused() {
        let empty_dir = pod(json!([{"name": "scratch", "emptyDir": {}}]), json!([]));
        assert_eq!(
            pod_mounts(&empty_dir),
            Err(VolumeError::Unsupported {
                volume: "scratch".into()
            })
        );
        let unknown = pod(json!([]), json!([{"name": "nope", "mountPath": "/x"}]));
        assert!(matches!(
            pod_mounts(&unknown),
            Err(VolumeError::NoSuchVolume { .. })
        ));
        let escaping = pod(
            json!([{"name": "v", "hostPath": {"path": "/srv"}}]),
            json!([{"name": "v", "mountPath": "/x", "subPath": "../etc"}]),
        );
        assert!(matches!(
            pod_mounts(&escaping),
            Err(VolumeError::BadSubPath { .. })
        ));
    }

    #[test]
    fn types_are_checked_and_the_or_create_ones_made() {
        let dir = std::env::temp_dir().join(format!("skiff-volumes-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        let new_dir = dir.join("made/here");
        let new_file = dir.join("new-file");
        let volumes = |list: &[(&Path, &str)]| {
            pod(
                json!(
                    list.iter()
                        .enumerate()
                        .map(|(i, (path, kind))| json!(
                    {"name": format!("v{i}"), "hostPath": {"path": path, "type": kind}}))
                        .collect::<Vec<_>>()
                ),
                json!([]),
            )
        };
        let ok = volumes(&[
            (&file, "File"),
            (&dir, "Directory"),
            (&new_dir, "DirectoryOrCreate"),
            (&new_file, "FileOrCreate"),
            (Path::new("/nonexistent/anything"), ""),
        ]);
        prepare_host_paths(&ok).unwrap();
        assert!(new_dir.is_dir() && new_file.is_file());
        for (path, kind) in [
            (file.as_path(), "Directory"),
            (dir.as_path(), "File"),
            (dir.join("missing").as_path(), "File"),
            (file.as_path(), "Socket"),
            (file.as_path(), "Sideways"),
        ] {
            let err = prepare_host_paths(&volumes(&[(path, kind)])).unwrap_err();
            assert!(matches!(err, VolumeError::HostPath { .. }), "{kind}: {err}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
