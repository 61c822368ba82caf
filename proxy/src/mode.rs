//! Choosing the data plane, and switching a node from one to the other without leftovers.
//!
//! `skiff-proxy` and `skiff-node` take the same `--proxy-mode` and get a [`NodeDataplane`] from
//! here, the one place that knows both planes. A node that ran the other mode before keeps
//! working through the switch: the new mode's first sync goes in *first* (the socket programs
//! translate at `connect()`, so the old iptables rules stop seeing Service addresses; iptables
//! rules are complete before the programs are detached), and only after it succeeded is the
//! other mode's state removed — iptables chains, or pinned programs and maps. A failed removal
//! is retried after the next sync.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::conntrack::RealConntrack;
use crate::dataplane::{Dataplane, DataplaneError, SyncReport};
use crate::ebpf::external::{AyaExternalMaps, ExternalPlane};
use crate::ebpf::mounts::{self, MountError};
use crate::ebpf::sockterm::AyaSockTerm;
use crate::ebpf::{AyaSocketLbMaps, BpfObject, LoadConfig, LoaderError, SocketLbPlane};
use crate::iptables::{IptablesDataplane, RealIptables, RenderOptions};
use crate::model::DesiredState;

/// The default folder on bpffs for skiff's pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/skiff";
/// The name of the installed BPF object.
pub const OBJECT_NAME: &str = "skiff-lb.bpf.o";
/// Where the object is looked for when not given: beside the binary, the build's output (for a
/// binary in `target/<profile>/`), and the installed location.
fn object_candidates(exe_dir: &Path) -> [PathBuf; 3] {
    [
        exe_dir.join(OBJECT_NAME),
        exe_dir.join("../ebpf/bpfel-unknown-none/release/skiff"),
        Path::new("/usr/lib/skiff").join(OBJECT_NAME),
    ]
}

/// Which data plane programs Services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// iptables-restore rulesets (nat and filter tables).
    Iptables,
    /// Socket-level load balancing with eBPF programs on the node's cgroup.
    Ebpf,
}

/// Where the eBPF data plane's pieces are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EbpfPaths {
    /// The compiled object; `None`: the first of the usual places that has one.
    pub object: Option<PathBuf>,
    /// A folder on bpffs for pinned maps and links.
    pub pin_dir: PathBuf,
    /// The cgroup v2 folder whose processes are load-balanced; `None`: `skiff-pods` under the
    /// cgroup v2 mount (where `skiff-node` puts Pods by default).
    pub cgroup: Option<PathBuf>,
    /// `cgroup` may be the cgroup2 root: the operator named it, so the node's own processes
    /// get Service addresses too.
    pub allow_root_cgroup: bool,
    /// Interfaces NodePort and external traffic arrives on; empty: every interface with a
    /// global IPv4 address except Pod veths and the overlay.
    pub devices: Vec<String>,
}

impl Default for EbpfPaths {
    fn default() -> Self {
        EbpfPaths {
            object: None,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            cgroup: None,
            allow_root_cgroup: false,
            devices: Vec::new(),
        }
    }
}

/// How to build the data plane.
#[derive(Clone, Debug)]
pub struct ModeConfig {
    /// Which one.
    pub mode: ProxyMode,
    /// iptables ruleset options (also used to clean iptables up after a switch).
    pub render: RenderOptions,
    /// eBPF paths (also used to remove pins after a switch).
    pub ebpf: EbpfPaths,
}

/// Why the data plane could not be opened or removed.
#[derive(Debug, thiserror::Error)]
pub enum ModeError {
    /// No object was given and none is in the usual places.
    #[error(
        "no BPF object found (looked at {0:?}); build it with `cargo xtask build-ebpf` or give --bpf-object"
    )]
    NoObject(Vec<PathBuf>),
    /// bpffs or cgroup2 is unavailable.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The node's cgroup could not be made.
    #[error("cannot create the cgroup {dir}: {source}")]
    Cgroup {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Loading or attaching the programs failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Removing rules or entries failed.
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

type RealIptablesDataplane = IptablesDataplane<RealIptables, RealConntrack>;

enum Plane {
    Iptables(Box<RealIptablesDataplane>),
    Ebpf(Box<EbpfPlanes>),
}

/// The eBPF mode's two map planes (the programs that read them stay attached through their
/// pinned links; the socket terminator keeps the loaded object).
struct EbpfPlanes {
    /// `None` inside: the kernel cannot end sockets (no `bpf_sock_destroy`).
    socket_lb: SocketLbPlane<AyaSocketLbMaps, Option<AyaSockTerm>>,
    external: ExternalPlane<AyaExternalMaps>,
}

/// The data plane a node runs, in the mode it was opened with.
pub struct NodeDataplane {
    plane: Plane,
    /// The other mode's state is still to be removed.
    other_mode_left: bool,
    config: ModeConfig,
}

impl std::fmt::Debug for NodeDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeDataplane")
            .field("mode", &self.config.mode)
            .field("other_mode_left", &self.other_mode_left)
            .finish()
    }
}

impl NodeDataplane {
    /// Opens the data plane `config` names; for eBPF, mounts what is missing, loads the object
    /// (adopting pinned maps) and attaches the programs to the node's cgroup.
    pub fn open(config: ModeConfig) -> Result<Self, ModeError> {
        let plane = match config.mode {
            ProxyMode::Iptables => {
                Plane::Iptables(Box::new(IptablesDataplane::real(config.render.clone())))
            }
            ProxyMode::Ebpf => {
                let load = load_config(&config.ebpf)?;
                let mut object = BpfObject::load(&load)?;
                let socket_maps = object.attach_socket_lb()?;
                let devices = match config.ebpf.devices.as_slice() {
                    [] => external_devices(),
                    given => given.to_vec(),
                };
                let external_maps = object.attach_external(&devices)?;
                info!(object = %load.object.display(), cgroup = %load.cgroup.display(),
                    pins = %load.pin_dir.display(), ?devices, "eBPF programs attached");
                let sockets = match object.into_socket_terminator() {
                    Ok(sockets) => Some(sockets),
                    Err(err) => {
                        warn!(
                            error = &err as &dyn std::error::Error,
                            "connected UDP sockets will keep a \
                            backend that left their Service until the application reconnects"
                        );
                        None
                    }
                };
                Plane::Ebpf(Box::new(EbpfPlanes {
                    socket_lb: SocketLbPlane::with_terminator(socket_maps, sockets),
                    external: ExternalPlane::new(external_maps),
                }))
            }
        };
        Ok(NodeDataplane {
            plane,
            other_mode_left: true,
            config,
        })
    }

    /// Removes both modes' state: iptables chains, and pinned programs and maps.
    pub fn remove_all(config: &ModeConfig) -> Result<(), ModeError> {
        remove_iptables(&config.render)?;
        remove_ebpf(&config.ebpf.pin_dir)
    }

    fn remove_other_mode(&mut self) {
        let removed = match self.config.mode {
            ProxyMode::Iptables => remove_ebpf(&self.config.ebpf.pin_dir),
            ProxyMode::Ebpf => remove_iptables(&self.config.render),
        };
        match removed {
            Ok(()) => self.other_mode_left = false,
            Err(err) => warn!(error = %err, "cannot remove the other proxy mode's state yet"),
        }
    }
}

impl Dataplane for NodeDataplane {
    fn sync(&mut self, desired: &DesiredState) -> Result<SyncReport, DataplaneError> {
        let report = match &mut self.plane {
            Plane::Iptables(plane) => plane.sync(desired)?,
            Plane::Ebpf(planes) => {
                let mut report = planes.socket_lb.sync(desired)?;
                let external = planes.external.sync(desired)?;
                report.full |= external.full;
                report.written += external.written;
                report.map_entries.extend(external.map_entries);
                report
            }
        };
        if self.other_mode_left {
            self.remove_other_mode();
        }
        Ok(report)
    }

    fn force_full_sync(&mut self) {
        match &mut self.plane {
            Plane::Iptables(plane) => plane.force_full_sync(),
            Plane::Ebpf(planes) => {
                planes.socket_lb.force_full_sync();
                planes.external.force_full_sync();
            }
        }
    }

    fn cleanup(&mut self) -> Result<(), DataplaneError> {
        match &mut self.plane {
            Plane::Iptables(plane) => plane.cleanup(),
            Plane::Ebpf(planes) => {
                planes.socket_lb.cleanup()?;
                planes.external.cleanup()
            }
        }
    }
}

fn remove_iptables(render: &RenderOptions) -> Result<(), ModeError> {
    let mut iptables = IptablesDataplane::new(RealIptables::new(), RealConntrack, render.clone());
    iptables.cleanup()?;
    Ok(())
}

/// Detaches every program and unpins every map of ours; the folder goes when it is empty
/// (someone else's pins in it stay).
fn remove_ebpf(pin_dir: &Path) -> Result<(), ModeError> {
    BpfObject::remove(pin_dir)?;
    let _ = std::fs::remove_dir(pin_dir);
    Ok(())
}

/// The interfaces holding `ip` (a node's InternalIP).
pub fn devices_with_address(ip: std::net::Ipv4Addr) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "to", &format!("{ip}/32")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    device_names(&out)
}

fn device_names(ip_addr_output: &str) -> Vec<String> {
    let mut devices: Vec<String> = ip_addr_output
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .collect();
    devices.dedup();
    devices
}

/// Interfaces with a global IPv4 address, except Pod veths (`skf*`) and the overlay
/// (`skiff.*`): where traffic from other machines arrives.
fn external_devices() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut devices = device_names(&out);
    devices.retain(|name| !name.starts_with("skf") && !name.starts_with("skiff."));
    devices
}

/// Resolves the object, mounts bpffs and cgroup2 if needed, and makes the cgroup.
fn load_config(paths: &EbpfPaths) -> Result<LoadConfig, ModeError> {
    let object = match &paths.object {
        Some(object) => object.clone(),
        None => find_object()?,
    };
    mounts::ensure_bpffs(&paths.pin_dir)?;
    let cgroup = match &paths.cgroup {
        Some(dir) => dir.clone(),
        None => mounts::ensure_cgroup2()?.join("skiff-pods"),
    };
    std::fs::create_dir_all(&cgroup).map_err(|source| ModeError::Cgroup {
        dir: cgroup.clone(),
        source,
    })?;
    Ok(LoadConfig {
        object,
        pin_dir: paths.pin_dir.clone(),
        cgroup,
        allow_root_cgroup: paths.allow_root_cgroup,
    })
}

fn find_object() -> Result<PathBuf, ModeError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let candidates = object_candidates(&exe_dir);
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .ok_or_else(|| ModeError::NoObject(candidates.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_come_from_ip_addr_lines_without_their_peer_suffix() {
        let out = "2: eth0@if7    inet 192.0.2.11/24 brd 192.0.2.255 scope global eth0\n\
                   2: eth0@if7    inet 192.0.2.12/24 scope global secondary eth0\n\
                   5: ens4    inet 10.0.0.5/8 scope global ens4\n";
        assert_eq!(device_names(out), ["eth0", "ens4"]);
    }
}
