//! Loading the one BPF object: read once, its maps adopted from their pins, and every program
//! handed out from that one load — the socket programs on the node's cgroup, the TC programs on
//! the interfaces external traffic arrives on, and the `iter/udp` socket terminator.
//!
//! The object is read from a path given in the config rather than embedded, so that building
//! the workspace never needs the BPF toolchain (`cargo xtask build-ebpf` makes the file).
//!
//! Restarts without a gap: the maps are pinned by name under the pin folder, so a new agent's
//! load reuses them with their entries; each program's link is pinned too. A new agent
//! attaches its programs beside the old ones (cgroup *links* are always multi-attach — the
//! kernel takes no flags for them, hence `CgroupAttachMode::Single` here; the second
//! connect4 sees a backend address, not a Service, and lets it pass), then replaces the old
//! link's pin, which detaches the old program. Only the given cgroup is ever attached to — the
//! node's — never the root cgroup. The TC programs attach as tcx links (kernel 6.6+) to the
//! ingress and egress of every given interface, each pinned as `link_<program>_<device>`.
//!
//! Before the load, the terminator's hand-written `bpf_sock_destroy` call gets the kfunc's BTF
//! id from the running kernel (see `skiff_ebpf_common::sockterm`); a kernel without the kfunc
//! loads everything else, and says so when the terminator is asked for.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, MapData};
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, Program, ProgramError, SchedClassifier, TcAttachType,
};
use aya::{Btf, Ebpf, EbpfLoader};
use skiff_ebpf_common::nodeport::{
    EXT_AFFINITY_MAP, EXT_SERVICES_MAP, EXT_SLOTS_MAP, EXT_SOURCES_MAP, NAT_MAP, TC_EGRESS_PROGRAM,
    TC_INGRESS_PROGRAM,
};
use skiff_ebpf_common::sockterm::{SOCK_TERM_PROGRAM, resolve_for_kernel};
use skiff_ebpf_common::{
    AFFINITY_MAP, AFFINITY_MATCH_MAP, BACKENDS_MAP, MAPS, PROGRAMS, SERVICES_MAP, SLOTS_MAP,
};

use super::external::AyaExternalMaps;
use super::socket_lb::AyaSocketLbMaps;
use super::sockterm::AyaSockTerm;

/// Where the object is, where its pins go, and whose sockets it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadConfig {
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

/// The loaded object, handing out its programs (attached, links pinned) and their maps. The
/// programs stay attached through their pinned links after this is dropped.
#[derive(Debug)]
pub struct BpfObject {
    ebpf: Ebpf,
    /// The kernel's BTF, for the iterator; `None`: the kernel has none to read.
    btf: Option<Btf>,
    /// Was the terminator's kfunc call resolved? The error says why not.
    sock_destroy: Result<(), LoaderError>,
    /// The node's cgroup, checked not to be the root unless allowed.
    cgroup: PathBuf,
    pin_dir: PathBuf,
}

impl BpfObject {
    /// Checks the cgroup, then reads and loads the object once, adopting the maps pinned under
    /// the pin folder.
    pub fn load(config: &LoadConfig) -> Result<Self, LoaderError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LoaderError::Io { path, source }
        };
        let cgroup = std::fs::canonicalize(&config.cgroup).map_err(io(&config.cgroup))?;
        if !config.allow_root_cgroup && is_root_cgroup(&cgroup) {
            return Err(LoaderError::RootCgroup(cgroup));
        }
        std::fs::create_dir_all(&config.pin_dir).map_err(io(&config.pin_dir))?;
        let mut bytes = std::fs::read(&config.object).map_err(io(&config.object))?;
        let fail = |what| failed(what, SOCK_TERM_PROGRAM);
        let (btf, sock_destroy) = match Btf::from_sys_fs() {
            Err(e) => (None, Err(fail("find kernel BTF for")(e.into()))),
            Ok(btf) => {
                let resolved = match resolve_for_kernel(&mut bytes, &btf) {
                    Err(e) => Err(fail("find the kfunc bpf_sock_destroy (Linux 6.5+) for")(
                        e.into(),
                    )),
                    Ok(0) => Err(LoaderError::Missing("bpf_sock_destroy call")),
                    Ok(_) => Ok(()),
                };
                (Some(btf), resolved)
            }
        };
        let ebpf = EbpfLoader::new()
            .btf(btf.as_ref())
            .default_map_pin_directory(&config.pin_dir)
            .load(&bytes)
            .map_err(|source| LoaderError::Load {
                path: config.object.clone(),
                source: Box::new(source),
            })?;
        Ok(BpfObject {
            ebpf,
            btf,
            sock_destroy,
            cgroup,
            pin_dir: config.pin_dir.clone(),
        })
    }

    /// Attaches every socket program to the cgroup and pins the links; returns the socket
    /// load balancer's map door.
    pub fn attach_socket_lb(&mut self) -> Result<AyaSocketLbMaps, LoaderError> {
        let cgroup = File::open(&self.cgroup).map_err(|source| LoaderError::Io {
            path: self.cgroup.clone(),
            source,
        })?;
        for program in PROGRAMS {
            attach_to_cgroup(&mut self.ebpf, program, &cgroup, &self.pin_dir)?;
        }
        Ok(AyaSocketLbMaps::new(
            take_map(&mut self.ebpf, SERVICES_MAP)?,
            take_map(&mut self.ebpf, SLOTS_MAP)?,
            take_map(&mut self.ebpf, BACKENDS_MAP)?,
            take_map(&mut self.ebpf, AFFINITY_MATCH_MAP)?,
            take_map(&mut self.ebpf, AFFINITY_MAP)?,
        ))
    }

    /// Attaches the TC programs to the ingress and egress of every one of `devices` and pins
    /// the links; returns the external-traffic map door.
    pub fn attach_external(&mut self, devices: &[String]) -> Result<AyaExternalMaps, LoaderError> {
        for (program, attach_type) in [
            (TC_INGRESS_PROGRAM, TcAttachType::Ingress),
            (TC_EGRESS_PROGRAM, TcAttachType::Egress),
        ] {
            let fail = |what| failed(what, program);
            let prog: &mut SchedClassifier = program_mut(&mut self.ebpf, program)?;
            prog.load().map_err(|e| fail("load")(e.into()))?;
            for device in devices {
                let id = prog
                    .attach(device, attach_type)
                    .map_err(|e| fail("attach")(e.into()))?;
                let name = program.trim_start_matches("skiff_nodeport_");
                let path = self
                    .pin_dir
                    .join(format!("{TC_LINK_PREFIX}{name}_{device}"));
                pin_link(prog.take_link(id), &path, program)?;
            }
        }
        let sources = self
            .ebpf
            .take_map(EXT_SOURCES_MAP)
            .ok_or(LoaderError::Missing(EXT_SOURCES_MAP))?;
        let sources = LpmTrie::try_from(sources).map_err(|source| LoaderError::Map {
            map: EXT_SOURCES_MAP,
            source,
        })?;
        Ok(AyaExternalMaps::new(
            take_map(&mut self.ebpf, EXT_SERVICES_MAP)?,
            take_map(&mut self.ebpf, EXT_SLOTS_MAP)?,
            sources,
        ))
    }

    /// The socket terminator over the node's cgroup, which keeps the object; fails on a kernel
    /// without `bpf_sock_destroy`.
    pub fn into_socket_terminator(self) -> Result<AyaSockTerm, LoaderError> {
        self.sock_destroy?;
        let btf = self.btf.ok_or(LoaderError::Missing("kernel BTF"))?;
        AyaSockTerm::new(self.ebpf, &btf, &self.cgroup)
    }

    /// Detaches every program (unpins the links) and unpins the maps; missing pins are fine.
    pub fn remove(pin_dir: &Path) -> Result<(), LoaderError> {
        let tc_links = std::fs::read_dir(pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(TC_LINK_PREFIX))
            .collect::<Vec<_>>();
        let external_maps = [
            EXT_SERVICES_MAP,
            EXT_SLOTS_MAP,
            EXT_SOURCES_MAP,
            EXT_AFFINITY_MAP,
            NAT_MAP,
        ];
        let names = PROGRAMS
            .iter()
            .map(|p| link_pin_name(p))
            .chain(MAPS.map(String::from))
            .chain(tc_links)
            .chain(external_maps.map(String::from));
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
}

/// How the TC programs' link pins start.
const TC_LINK_PREFIX: &str = "link_skiff_nodeport_";

fn is_root_cgroup(path: &Path) -> bool {
    // The root of a cgroup v2 mount has `cgroup.controllers` but no `cgroup.events`.
    path.join("cgroup.controllers").exists() && !path.join("cgroup.events").exists()
}

fn link_pin_name(program: &str) -> String {
    format!("link_{program}")
}

fn attach_to_cgroup(
    ebpf: &mut Ebpf,
    program: &'static str,
    cgroup: &File,
    pin_dir: &Path,
) -> Result<(), LoaderError> {
    let fail = |what| failed(what, program);
    let prog: &mut CgroupSockAddr = program_mut(ebpf, program)?;
    prog.load().map_err(|e| fail("load")(e.into()))?;
    let id = prog
        .attach(cgroup, CgroupAttachMode::Single)
        .map_err(|e| fail("attach")(e.into()))?;
    let path = pin_dir.join(link_pin_name(program));
    pin_link(prog.take_link(id), &path, program)
}

/// The program `name` of the object, as a `T`.
pub(super) fn program_mut<'a, T>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut T, LoaderError>
where
    &'a mut T: TryFrom<&'a mut Program, Error = ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoaderError::Missing(name))?
        .try_into()
        .map_err(|e: ProgramError| failed("use", name)(e.into()))
}

/// Pins the link `taken` from `program` at `path`, replacing (and so detaching) the link a
/// previous agent pinned there. The old link stays attached until the moment the new one takes
/// its place.
fn pin_link<L>(
    taken: Result<L, ProgramError>,
    path: &Path,
    program: &'static str,
) -> Result<(), LoaderError>
where
    FdLink: TryFrom<L, Error = LinkError>,
{
    let fail = |what| failed(what, program);
    let link = taken.map_err(|e| fail("keep")(e.into()))?;
    let link = FdLink::try_from(link).map_err(|e| fail("keep")(e.into()))?;
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

/// Takes the hash map `name` out of the object.
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
