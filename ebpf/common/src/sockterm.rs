//! Ending connected UDP sockets whose backend left the Service they were load-balanced through.
//!
//! A connected UDP socket had its peer rewritten once, at `connect()`; nothing translates its
//! later datagrams, so when that backend goes away the socket keeps sending into nothing. UDP
//! has no reset, so the proxy ends such sockets instead (`bpf_sock_destroy`, as Cilium does)
//! and the application sees `ECONNABORTED` on its next call and reconnects — through the
//! Service again, to a live backend.
//!
//! The proxy writes one [`SockTermKey`] per (frontend, departed backend) into
//! `SKIFF_SOCK_TERM` and runs the `iter/udp` program, which ends exactly the sockets
//! [`ends_socket`] picks; the same function backs the proxy's fake, so the rule is one.
//! A socket the socket LB translated has a `SKIFF_REVNAT` entry (cookie, backend) naming the
//! frontend it used. One without an entry counts as having reached its peer through the peer
//! itself: a socket connected to a Pod address directly is never ended (no frontend has that
//! address), and one connected to a frontend's own address before the proxy wrote the
//! frontend — untranslated, sending into nothing — is ended by a `(frontend, frontend)` key
//! once the frontend has backends, as kube-proxy deletes a UDP Service's conntrack entries
//! when it gets endpoints.

use crate::{L4Addr, RevNatKey};

/// Map name of the departed (frontend, backend) pairs the iterator ends sockets for.
pub const SOCK_TERM_MAP: &str = "SKIFF_SOCK_TERM";
/// Capacity of `SKIFF_SOCK_TERM`; the proxy runs the iterator once per this many pairs.
pub const MAX_SOCK_TERM: u32 = 16_384;
/// The `iter/udp` program (function name in the object).
pub const SOCK_TERM_PROGRAM: &str = "skiff_sock_term_udp";

/// The `imm` the program's `bpf_sock_destroy` call carries in the object. A kfunc call names
/// the function by its BTF id in the running kernel, which no build can know (and aya 0.14
/// does not resolve kfuncs), so the proxy writes the id over this mark before loading.
pub const SOCK_DESTROY_MARK: u32 = 0x5c1f_de57;

/// The eight bytes of the program's kfunc call as built: `call` (0x85) with source register
/// `BPF_PSEUDO_KFUNC_CALL` (2), offset 0 (vmlinux), and [`SOCK_DESTROY_MARK`] as `imm`.
pub const fn sock_destroy_call(imm: u32) -> [u8; 8] {
    let imm = imm.to_le_bytes();
    [0x85, 0x20, 0, 0, imm[0], imm[1], imm[2], imm[3]]
}

/// Writes `btf_id` (of `bpf_sock_destroy` in the running kernel) into every kfunc call the
/// object holds; returns how many it found (0: not built with the iterator).
pub fn resolve_sock_destroy(object: &mut [u8], btf_id: u32) -> usize {
    let mark = sock_destroy_call(SOCK_DESTROY_MARK);
    let call = sock_destroy_call(btf_id);
    let mut found = 0;
    let mut at = 0;
    while at + mark.len() <= object.len() {
        if object[at..at + mark.len()] == mark {
            object[at..at + mark.len()].copy_from_slice(&call);
            found += 1;
            at += mark.len();
        } else {
            at += 1;
        }
    }
    found
}

/// The kfunc the program calls.
pub const SOCK_DESTROY_KFUNC: &str = "bpf_sock_destroy";

/// [`resolve_sock_destroy`] with the id from `btf` (the running kernel's); fails when the
/// kernel has no such kfunc (before Linux 6.5).
#[cfg(feature = "user")]
pub fn resolve_for_kernel(object: &mut [u8], btf: &aya::Btf) -> Result<usize, aya::BtfError> {
    let id = btf.id_by_type_name_kind(SOCK_DESTROY_KFUNC, aya_obj::btf::BtfKind::Func)?;
    Ok(resolve_sock_destroy(object, id))
}

/// A backend that left a frontend: sockets that reached `backend` through `service` end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SockTermKey {
    /// The frontend as the application named it (what `SKIFF_REVNAT` shows back).
    pub service: L4Addr,
    /// The backend that left it.
    pub backend: L4Addr,
}

/// Does a UDP socket with this cookie and connected `peer` (all zero when unconnected) end?
/// `revnat` is the `SKIFF_REVNAT` lookup, `departed` the `SKIFF_SOCK_TERM` one; a socket
/// without a reverse entry is looked up as `(peer, peer)`.
#[inline(always)]
pub fn ends_socket(
    cookie: u64,
    peer: L4Addr,
    revnat: impl FnOnce(RevNatKey) -> Option<L4Addr>,
    departed: impl FnOnce(SockTermKey) -> bool,
) -> bool {
    if peer.addr == 0 || peer.port == 0 {
        return false;
    }
    let service = revnat(RevNatKey {
        cookie,
        backend: peer,
    })
    .unwrap_or(peer);
    departed(SockTermKey {
        service,
        backend: peer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SVC: L4Addr = L4Addr::new([10, 96, 0, 10], 53);
    const OLD: L4Addr = L4Addr::new([10, 244, 1, 5], 8081);

    fn revnat(key: RevNatKey) -> Option<L4Addr> {
        (key.cookie == 7 && key.backend == OLD).then_some(SVC)
    }

    fn departed(key: SockTermKey) -> bool {
        let untranslated = SockTermKey {
            service: SVC,
            backend: SVC,
        };
        let translated = SockTermKey {
            service: SVC,
            backend: OLD,
        };
        key == translated || key == untranslated
    }

    #[test]
    fn a_socket_translated_to_a_departed_backend_ends() {
        assert!(ends_socket(7, OLD, revnat, departed));
    }

    #[test]
    fn a_socket_connected_to_the_frontend_untranslated_ends_by_the_frontend_pair() {
        assert!(ends_socket(9, SVC, |_| None, departed));
    }

    #[test]
    fn unconnected_direct_and_other_sockets_stay() {
        let unconnected = L4Addr::new([0, 0, 0, 0], 0);
        assert!(!ends_socket(7, unconnected, revnat, departed));
        // Same peer, but this socket was not translated (no reverse entry): a direct one.
        assert!(!ends_socket(8, OLD, revnat, departed));
        // Translated, but to a backend that still serves.
        let live = L4Addr::new([10, 244, 2, 6], 8081);
        assert!(!ends_socket(7, live, |_| Some(SVC), departed));
    }

    #[test]
    fn resolving_writes_the_id_over_every_mark_and_nothing_else() {
        let mark = sock_destroy_call(SOCK_DESTROY_MARK);
        let mut object = [0u8; 40];
        object[3..11].copy_from_slice(&mark);
        object[24..32].copy_from_slice(&mark);
        object[35] = 0x85;
        let before = object;
        assert_eq!(resolve_sock_destroy(&mut object, 0x1234), 2);
        assert_eq!(object[3..11], sock_destroy_call(0x1234));
        assert_eq!(object[24..32], sock_destroy_call(0x1234));
        assert_eq!(object[..3], before[..3]);
        assert_eq!(object[32..], before[32..]);
        assert_eq!(resolve_sock_destroy(&mut object, 0x1234), 0);
    }

    #[test]
    fn the_mark_is_a_kfunc_call() {
        let call = sock_destroy_call(SOCK_DESTROY_MARK);
        assert_eq!(call[0], 0x85, "BPF_JMP | BPF_CALL");
        assert_eq!(call[1] >> 4, 2, "src_reg BPF_PSEUDO_KFUNC_CALL");
        assert_eq!(size_of::<SockTermKey>(), 16);
    }
}
