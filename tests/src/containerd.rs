//! A containerd per node, as a real node runs one: started inside the node's network namespace
//! (so the CNI plugins it calls put the host ends of Pod veths there) but in the host's mount
//! namespace, with a root, state folder, socket and CNI settings of its own, so several run side
//! by side on one machine without touching a containerd the machine may have.
//!
//! Image content and snapshots go in the run's log folder (on disk); the state folder (sockets,
//! Pods' network namespaces — `netns_mounts_under_state_dir`, so none lands in /run/netns under
//! a name the run does not own) goes in the run's scratch folder. Both are registered as mount
//! roots of the run, so its teardown unmounts what containerd left there (rootfs overlays, netns
//! bind mounts) even after a crash. Pod cgroups go below the node's cgroup in the run's own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{Netns, Process, Run, images};

/// The CNI plugins containerd runs from its one `bin_dir`: ours and the reference ones it needs
/// (`loopback` for the Pod's `lo`, `portmap` for hostPorts).
const PLUGINS: &[&str] = &["loopback", "portmap"];

/// Where one node's containerd keeps things.
#[derive(Clone, Debug)]
pub struct ContainerdDirs {
    /// `root`: content store, snapshots, metadata.
    pub root: PathBuf,
    /// `state`: sockets, sandboxes' runtime state, netns mounts.
    pub state: PathBuf,
    /// The CRI socket.
    pub socket: PathBuf,
    /// The CNI plugin folder it searches (links to the real binaries).
    pub cni_bin_dir: PathBuf,
    /// The CNI configuration folder the node agent writes.
    pub cni_conf_dir: PathBuf,
}

impl ContainerdDirs {
    /// The folders of node `node` in `run`, with `cni_conf_dir` the agent's.
    pub fn new(run: &Run, node: &str, data_dir: &Path, cni_conf_dir: &Path) -> Result<Self> {
        let state = run.scratch_dir(&format!("containerd-{node}"))?;
        Ok(ContainerdDirs {
            root: data_dir.join("containerd"),
            socket: state.join("containerd.sock"),
            state,
            cni_bin_dir: data_dir.join("cni-bin"),
            cni_conf_dir: cni_conf_dir.to_path_buf(),
        })
    }
}

/// containerd's config: the CRI plugin with our CNI folders, the skiff pause image as the
/// sandbox image, cgroupfs (no systemd in a test node), and the registry name every image
/// reference uses mapped to where the registry really listens.
pub fn config_toml(dirs: &ContainerdDirs, registry: SocketAddr) -> String {
    let host = images::REGISTRY_HOST;
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  netns_mounts_under_state_dir = true
  # Never below containerd's own OOM score: lowering it needs CAP_SYS_RESOURCE, which a test
  # machine's root may lack (runc fails writing the sandbox's -998).
  restrict_oom_score_adj = true
  enable_selinux = false
  max_container_log_line_size = 16384
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]
    endpoint = ["http://{registry}"]
"#,
        root = dirs.root.display(),
        state = dirs.state.display(),
        socket = dirs.socket.display(),
        pause = images::PAUSE_IMAGE,
        cni_bin = dirs.cni_bin_dir.display(),
        cni_conf = dirs.cni_conf_dir.display(),
    )
}

/// Links `skiff_cni` and the reference plugins containerd needs into `dir`.
fn link_plugins(dir: &Path, skiff_cni: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut plugins = vec![("skiff-cni".to_owned(), skiff_cni.to_path_buf())];
    for name in PLUGINS {
        plugins.push((
            (*name).to_owned(),
            Path::new(crate::cni::REFERENCE_PLUGINS).join(name),
        ));
    }
    for (name, target) in plugins {
        let link = dir.join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(())
}

/// Starts containerd for a node inside `netns` and waits for its socket; it runs `skiff_cni`
/// (the build's, `binaries::skiff_cni()`, unless a test wraps it).
pub fn start(
    run: &Run,
    netns: &Netns,
    name: &str,
    dirs: &ContainerdDirs,
    registry: SocketAddr,
    skiff_cni: &Path,
) -> Result<Process> {
    link_plugins(&dirs.cni_bin_dir, skiff_cni)?;
    std::fs::create_dir_all(&dirs.root)?;
    std::fs::create_dir_all(&dirs.cni_conf_dir)?;
    run.add_mount_root(&dirs.root)?;
    run.add_mount_root(&dirs.state)?;
    let config = dirs.state.join("config.toml");
    std::fs::write(&config, config_toml(dirs, registry))
        .with_context(|| format!("cannot write {}", config.display()))?;
    let config = config.to_string_lossy().into_owned();
    let level = std::env::var("SKIFF_CONTAINERD_LOG_LEVEL").unwrap_or_else(|_| "info".to_owned());
    let command =
        netns.command_keeping_mounts(&["containerd", "--config", &config, "--log-level", &level]);
    let process = Process::spawn_command(run, name, command)?;
    crate::wait::retry(Duration::from_secs(30), || {
        anyhow::ensure!(dirs.socket.exists(), "no socket yet");
        Ok(())
    })
    .with_context(|| {
        format!(
            "containerd of {name} did not open {}",
            dirs.socket.display()
        )
    })?;
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_points_the_cri_plugin_at_our_folders_and_registry() {
        let dirs = ContainerdDirs {
            root: "/d/containerd".into(),
            state: "/run/s".into(),
            socket: "/run/s/containerd.sock".into(),
            cni_bin_dir: "/d/cni-bin".into(),
            cni_conf_dir: "/d/net.d".into(),
        };
        let text = config_toml(&dirs, "172.31.0.1:5000".parse().unwrap());
        for line in [
            r#"address = "/run/s/containerd.sock""#,
            r#"bin_dir = "/d/cni-bin""#,
            r#"conf_dir = "/d/net.d""#,
            r#"registry.mirrors."localhost:5000"]"#,
            r#"endpoint = ["http://172.31.0.1:5000"]"#,
            "netns_mounts_under_state_dir = true",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
