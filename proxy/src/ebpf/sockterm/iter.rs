//! The real terminator: the `iter/udp` program, read once in every namespace of the node's
//! cgroup while `SKIFF_SOCK_TERM` holds the departed pairs.
//!
//! It comes from the one load of the object ([`crate::ebpf::loader`]), which resolved the
//! program's hand-written `bpf_sock_destroy` call against the running kernel's BTF, so a kernel
//! without the kfunc is found out at start, not at the first Pod deletion; it shares the socket
//! programs' maps (`SKIFF_REVNAT` above all).
//!
//! Each visit attaches the iterator (a link is cheap) and opens it inside the namespace — the
//! open, not the read, fixes the namespace a UDP iterator walks — then reads it to the end;
//! the program writes one 8-byte cookie per socket it ended.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData, MapError};
use aya::programs::Iter;
use aya::{Btf, Ebpf};
use skiff_ebpf_common::sockterm::{MAX_SOCK_TERM, SOCK_TERM_MAP, SOCK_TERM_PROGRAM, SockTermKey};
use tracing::{debug, warn};

use super::netns::{Netns, cgroup_pids, namespaces_of, visit_each};
use super::{SockTermError, SocketTerminator};
use crate::ebpf::LoaderError;
use crate::ebpf::loader::{failed, program_mut, take_map};

/// Ends sockets with the `iter/udp` program in every namespace of the node's cgroup.
#[derive(Debug)]
pub struct AyaSockTerm {
    ebpf: Ebpf,
    departed: HashMap<MapData, SockTermKey, u32>,
    cgroup: PathBuf,
}

impl AyaSockTerm {
    /// Loads the iterator of the loaded object `ebpf` (its kfunc call resolved against `btf`)
    /// for the processes of `cgroup`.
    pub(crate) fn new(mut ebpf: Ebpf, btf: &Btf, cgroup: &Path) -> Result<Self, LoaderError> {
        let fail = |what| failed(what, SOCK_TERM_PROGRAM);
        let prog: &mut Iter = program_mut(&mut ebpf, SOCK_TERM_PROGRAM)?;
        prog.load("udp", btf).map_err(|e| fail("load")(e.into()))?;
        let mut departed = take_map(&mut ebpf, SOCK_TERM_MAP)?;
        // Pairs a predecessor left behind (it stopped mid-pass) are stale by now.
        let left: Vec<SockTermKey> = departed.keys().filter_map(Result::ok).collect();
        for key in left {
            let _ = departed.remove(&key);
        }
        Ok(AyaSockTerm {
            ebpf,
            departed,
            cgroup: cgroup.to_path_buf(),
        })
    }
}

impl SocketTerminator for AyaSockTerm {
    fn end_sockets(&mut self, departed: &BTreeSet<SockTermKey>) -> Result<usize, SockTermError> {
        if departed.is_empty() {
            return Ok(0);
        }
        let namespaces = namespaces_of(&cgroup_pids(&self.cgroup)?, Path::new("/proc"));
        let keys: Vec<SockTermKey> = departed.iter().copied().collect();
        let mut ended = 0;
        for chunk in keys.chunks(MAX_SOCK_TERM as usize) {
            let marked = Marked::write(&mut self.departed, chunk)?;
            let prog: &mut Iter = self
                .ebpf
                .program_mut(SOCK_TERM_PROGRAM)
                .and_then(|p| p.try_into().ok())
                .ok_or(SockTermError::NotLoaded)?;
            let results = visit_each(&namespaces, |_| read_once(prog));
            for (ns, result) in namespaces.iter().zip(results) {
                match result {
                    Ok(Ok(n)) => ended += n,
                    Ok(Err(err)) => warn_visit(ns, &*err),
                    Err(err) => warn_visit(ns, &err),
                }
            }
            drop(marked);
        }
        debug!(
            pairs = keys.len(),
            namespaces = namespaces.len(),
            ended,
            "UDP sockets ended"
        );
        Ok(ended)
    }
}

type VisitError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the iterator in the calling thread's namespace and reads it to the end; returns how
/// many sockets it ended.
fn read_once(prog: &mut Iter) -> Result<usize, VisitError> {
    let id = prog.attach()?;
    let mut file = prog.take_link(id)?.into_file()?;
    let mut cookies = Vec::new();
    file.read_to_end(&mut cookies)?;
    Ok(cookies.len() / size_of::<u64>())
}

fn warn_visit(ns: &Netns, err: &(dyn std::error::Error + 'static)) {
    warn!(
        pid = ns.pid,
        error = err,
        "cannot end UDP sockets in this network namespace"
    );
}

/// Departed pairs written to the map; deleted again when dropped, also after a failure.
struct Marked<'a> {
    map: &'a mut HashMap<MapData, SockTermKey, u32>,
    keys: &'a [SockTermKey],
}

impl<'a> Marked<'a> {
    fn write(
        map: &'a mut HashMap<MapData, SockTermKey, u32>,
        keys: &'a [SockTermKey],
    ) -> Result<Self, SockTermError> {
        let mut marked = Marked { map, keys: &[] };
        for (n, key) in keys.iter().enumerate() {
            marked
                .map
                .insert(key, 1, 0)
                .map_err(|source| SockTermError::Map {
                    op: "write",
                    source,
                })?;
            marked.keys = &keys[..=n];
        }
        Ok(marked)
    }
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        for key in self.keys {
            match self.map.remove(key) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => warn!(
                    error = &err as &dyn std::error::Error,
                    "cannot delete a departed pair"
                ),
            }
        }
    }
}
