//! Loading the NodePort programs: the same object, the same pinned maps, TC links per device.
//!
//! The TC programs attach as tcx links (kernel 6.6+) to the ingress and egress of every
//! interface external traffic arrives on, each link pinned as `link_<program>_<device>` so a
//! restarted agent replaces it without a gap, as the socket programs' links are.

use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::maps::lpm_trie::LpmTrie;
use aya::programs::links::FdLink;
use aya::programs::{SchedClassifier, TcAttachType};
use skiff_ebpf_common::nodeport::{
    EXT_AFFINITY_MAP, EXT_SERVICES_MAP, EXT_SLOTS_MAP, EXT_SOURCES_MAP, NAT_MAP, TC_EGRESS_PROGRAM,
    TC_INGRESS_PROGRAM,
};

use super::maps::AyaExternalMaps;
use crate::ebpf::LoaderError;
use crate::ebpf::loader::{failed, pin_link, take_map, unpin};

/// Where the object is, where pins go, and which interfaces to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePortConfig {
    /// The compiled object.
    pub object: PathBuf,
    /// The bpffs folder (shared with the socket programs).
    pub pin_dir: PathBuf,
    /// Interfaces external traffic arrives on (those holding the node's addresses).
    pub devices: Vec<String>,
}

/// The loaded TC programs; they stay attached through their pinned links.
#[derive(Debug)]
pub struct NodePortLb {
    _ebpf: aya::Ebpf,
}

const LINK_PREFIX: &str = "link_skiff_nodeport_";

impl NodePortLb {
    /// Loads the TC programs (adopting pinned maps), attaches them to every device, pins the
    /// links; returns the map door.
    pub fn load_and_attach(
        config: &NodePortConfig,
    ) -> Result<(Self, AyaExternalMaps), LoaderError> {
        std::fs::create_dir_all(&config.pin_dir).map_err(|source| LoaderError::Io {
            path: config.pin_dir.clone(),
            source,
        })?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&config.pin_dir)
            .load_file(&config.object)
            .map_err(|source| LoaderError::Load {
                path: config.object.clone(),
                source: Box::new(source),
            })?;
        for (program, attach_type) in [
            (TC_INGRESS_PROGRAM, TcAttachType::Ingress),
            (TC_EGRESS_PROGRAM, TcAttachType::Egress),
        ] {
            let fail = |what| failed(what, program);
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or(LoaderError::Missing(program))?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| fail("use")(e.into()))?;
            prog.load().map_err(|e| fail("load")(e.into()))?;
            for device in &config.devices {
                let id = prog
                    .attach(device, attach_type)
                    .map_err(|e| fail("attach")(e.into()))?;
                let link = prog.take_link(id).map_err(|e| fail("keep")(e.into()))?;
                let link: FdLink = link
                    .try_into()
                    .map_err(|e: aya::programs::links::LinkError| fail("keep")(e.into()))?;
                let name = program.trim_start_matches("skiff_nodeport_");
                let path = config.pin_dir.join(format!("{LINK_PREFIX}{name}_{device}"));
                pin_link(link, &path, program)?;
            }
        }
        let sources = ebpf
            .take_map(EXT_SOURCES_MAP)
            .ok_or(LoaderError::Missing(EXT_SOURCES_MAP))?;
        let sources = LpmTrie::try_from(sources).map_err(|source| LoaderError::Map {
            map: EXT_SOURCES_MAP,
            source,
        })?;
        let maps = AyaExternalMaps::new(
            take_map(&mut ebpf, EXT_SERVICES_MAP)?,
            take_map(&mut ebpf, EXT_SLOTS_MAP)?,
            sources,
        );
        Ok((NodePortLb { _ebpf: ebpf }, maps))
    }

    /// Detaches the TC programs from every device (unpins their links) and unpins the NodePort
    /// maps; missing pins are fine.
    pub fn remove(pin_dir: &Path) -> Result<(), LoaderError> {
        let links = std::fs::read_dir(pin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(LINK_PREFIX));
        let maps = [
            EXT_SERVICES_MAP,
            EXT_SLOTS_MAP,
            EXT_SOURCES_MAP,
            EXT_AFFINITY_MAP,
            NAT_MAP,
        ]
        .map(String::from);
        unpin(pin_dir, links.collect::<Vec<_>>().into_iter().chain(maps))
    }
}
