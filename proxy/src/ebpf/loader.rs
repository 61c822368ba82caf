//! Loading the socket load balancer: object file → pinned maps → programs on the node's cgroup.
//!
//! The object is read from a path given in the config rather than embedded, so that building
//! the workspace never needs the BPF toolchain (`cargo xtask build-ebpf` makes the file).
//!
//! Restarts without a gap: the maps are pinned by name under the pin folder, so a new agent's
//! load reuses them with their entries; each program's cgroup link is pinned too. A new agent
//! attaches its programs beside the old ones (cgroup *links* are always multi-attach — the
//! kernel takes no flags for them, hence `CgroupAttachMode::Single` here; the second
//! connect4 sees a backend address, not a Service, and lets it pass), then replaces the old
//! link's pin, which detaches the old program. Only the given cgroup is ever attached to — the
//! node's — never the root cgroup.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use skiff_ebpf_common::{
    AFFINITY_MAP, AFFINITY_MATCH_MAP, BACKENDS_MAP, MAPS, PROGRAMS, SERVICES_MAP, SLOTS_MAP,
};

use super::socket_lb::AyaSocketLbMaps;

/// Where the object is and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketLbConfig {
    /// The compiled object (`target/ebpf/bpfel-unknown-none/release/skiff`).
    pub object: PathBuf,
    /// A folder on bpffs for the maps and links (created if missing).
    pub pin_dir: PathBuf,
    /// The cgroup v2 folder whose processes are load-balanced (the node's).
    pub cgroup: PathBuf,
    /// The operator named the cgroup2 root on purpose (every process of the machine gets
    /// Service translation, as on a real node); otherwise the root is refused, so a test or a
    /// wrong default can never change what the whole machine's sockets do.
    pub allow_root_cgroup: bool,
}

/// Why loading or attaching failed.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// A file or folder could not be used.
    #[error("cannot use {path}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The root cgroup was named; skiff attaches only to a node's own cgroup.
    #[error("refusing to attach to the root cgroup {0} unless it is named on purpose")]
    RootCgroup(PathBuf),
    /// aya could not load the object or pin its maps.
    #[error("cannot load {path}")]
    Load {
        /// The object.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The object lacks something the proxy needs.
    #[error("the object has no {0}")]
    Missing(&'static str),
    /// The kernel refused a program, an attach or a pin.
    #[error("cannot {what} {program}")]
    Program {
        /// What was tried.
        what: &'static str,
        /// Which program.
        program: &'static str,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A map could not be used.
    #[error("map {map} is unusable")]
    Map {
        /// Which map.
        map: &'static str,
        /// The cause.
        #[source]
        source: aya::maps::MapError,
    },
}

/// The loaded programs; they stay attached through their pinned links after this is dropped.
#[derive(Debug)]
pub struct SocketLb {
    _ebpf: Ebpf,
}

impl SocketLb {
    /// Loads the object (adopting pinned maps), attaches every program to the cgroup and pins
    /// the links; returns the map door.
    pub fn load_and_attach(
        config: &SocketLbConfig,
    ) -> Result<(SocketLb, AyaSocketLbMaps), LoaderError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LoaderError::Io { path, source }
        };
        let cgroup_path = std::fs::canonicalize(&config.cgroup).map_err(io(&config.cgroup))?;
        if !config.allow_root_cgroup && is_root_cgroup(&cgroup_path) {
            return Err(LoaderError::RootCgroup(cgroup_path));
        }
        std::fs::create_dir_all(&config.pin_dir).map_err(io(&config.pin_dir))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_dir)
            .load_file(&config.object)
            .map_err(|source| LoaderError::Load {
                path: config.object.clone(),
                source: Box::new(source),
            })?;
        let cgroup = File::open(&cgroup_path).map_err(io(&cgroup_path))?;
        for program in PROGRAMS {
            attach(&mut ebpf, program, &cgroup, &config.pin_dir)?;
        }
        let maps = AyaSocketLbMaps::new(
            take_map(&mut ebpf, SERVICES_MAP)?,
            take_map(&mut ebpf, SLOTS_MAP)?,
            take_map(&mut ebpf, BACKENDS_MAP)?,
            take_map(&mut ebpf, AFFINITY_MATCH_MAP)?,
            take_map(&mut ebpf, AFFINITY_MAP)?,
        );
        Ok((SocketLb { _ebpf: ebpf }, maps))
    }

    /// Detaches every program (unpins the links) and unpins the maps; missing pins are fine.
    pub fn remove(pin_dir: &Path) -> Result<(), LoaderError> {
        let names = PROGRAMS.iter().map(|p| link_pin_name(p));
        unpin(pin_dir, names.chain(MAPS.map(String::from)))
    }
}

/// Removes the pins `names` under `pin_dir`; one already gone is fine.
pub(super) fn unpin(
    pin_dir: &Path,
    names: impl IntoIterator<Item = String>,
) -> Result<(), LoaderError> {
    for name in names {
        let path = pin_dir.join(name);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LoaderError::Io { path, source: e });
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_root_cgroup(path: &Path) -> bool {
    // The root of a cgroup v2 mount has `cgroup.controllers` but no `cgroup.events`.
    path.join("cgroup.controllers").exists() && !path.join("cgroup.events").exists()
}

fn link_pin_name(program: &str) -> String {
    format!("link_{program}")
}

fn attach(
    ebpf: &mut Ebpf,
    program: &'static str,
    cgroup: &File,
    pin_dir: &Path,
) -> Result<(), LoaderError> {
    let fail = |what| failed(what, program);
    let prog: &mut CgroupSockAddr = ebpf
        .program_mut(program)
        .ok_or(LoaderError::Missing(program))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| fail("use")(e.into()))?;
    prog.load().map_err(|e| fail("load")(e.into()))?;
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| fail("attach")(e.into()))?;
    let link = prog.take_link(id).map_err(|e| fail("keep")(e.into()))?;
    let link: FdLink = link
        .try_into()
        .map_err(|e: aya::programs::links::LinkError| fail("keep")(e.into()))?;
    pin_link(link, &pin_dir.join(link_pin_name(program)), program)
}

/// Pins `link` at `path`, replacing (and so detaching) the link a previous agent pinned there.
/// The old link stays attached until the moment the new one takes its place.
pub(super) fn pin_link(
    link: FdLink,
    path: &Path,
    program: &'static str,
) -> Result<(), LoaderError> {
    let fail = |what| failed(what, program);
    if let Ok(old) = PinnedLink::from_pin(path) {
        let old = old
            .unpin()
            .map_err(|e| fail("replace the link of")(e.into()))?;
        drop(old);
    }
    link.pin(path)
        .map_err(|e| fail("pin the link of")(e.into()))?;
    Ok(())
}

pub(super) fn take_map<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, LoaderError> {
    let map = ebpf.take_map(name).ok_or(LoaderError::Missing(name))?;
    HashMap::try_from(map).map_err(|source| LoaderError::Map { map: name, source })
}

/// A [`LoaderError::Program`] maker for `what` was tried on `program`.
pub(super) fn failed(
    what: &'static str,
    program: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> LoaderError {
    move |source| LoaderError::Program {
        what,
        program,
        source,
    }
}
