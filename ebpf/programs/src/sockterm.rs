//! `iter/udp`: ends the connected UDP sockets whose backend left the Service they used.
//!
//! The proxy fills `SKIFF_SOCK_TERM` and reads this iterator once in every network namespace
//! of the node's Pods (a UDP iterator walks the table of the namespace it was opened in); the
//! rule is `skiff_ebpf_common::sockterm::ends_socket`. Each ended socket's cookie is written
//! to the reader, which counts them.
//!
//! `bpf_sock_destroy` is a kfunc (Linux 6.5+). aya-ebpf has no way to declare one and aya's
//! loader does not resolve them, so the call is written as the instruction itself with a
//! mark in place of the function's BTF id, which the proxy fills in from the running kernel's
//! BTF before loading. The socket pointer comes from the iterator context, which the verifier
//! types as a trusted `udp_sock`, so the kernel checks the call as it would a libbpf one.
//! `sock_common`'s first fields (peer address, bound address, hash, peer port) have kept their
//! offsets since before BPF existed, so the program reads them without CO-RE.

use core::{arch::asm, ffi::c_void};

use aya_ebpf::{
    helpers::generated::{bpf_get_socket_cookie, bpf_seq_write},
    macros::map,
    maps::HashMap,
};
use skiff_ebpf_common::{
    L4Addr,
    sockterm::{MAX_SOCK_TERM, SOCK_DESTROY_MARK, SockTermKey, ends_socket},
};

use crate::SKIFF_REVNAT;

#[map]
static SKIFF_SOCK_TERM: HashMap<SockTermKey, u32> = HashMap::pinned(MAX_SOCK_TERM, 0);

/// `struct bpf_iter_meta`.
#[repr(C)]
pub struct IterMeta {
    seq: *mut c_void,
}

/// `struct bpf_iter__udp`.
#[repr(C)]
pub struct IterUdp {
    meta: *mut IterMeta,
    udp_sk: *mut c_void,
}

/// `skc_dport`'s offset in `struct sock_common` (after `skc_daddr`, `skc_rcv_saddr`, `skc_hash`).
const SKC_DPORT_OFFSET: usize = 12;

/// The iterator program: one call per UDP socket of the namespace, then one with no socket.
///
/// # Safety
/// Called by the kernel only, with a `bpf_iter__udp` context.
#[unsafe(no_mangle)]
#[unsafe(link_section = "iter/udp")]
pub unsafe extern "C" fn skiff_sock_term_udp(ctx: *mut IterUdp) -> i32 {
    // SAFETY: the kernel hands an iterator program a valid context.
    let ctx = unsafe { &*ctx };
    let sk = ctx.udp_sk;
    if sk.is_null() {
        return 0;
    }
    // SAFETY: `sk` is a live socket the iterator holds locked; these are plain loads the
    // verifier checks against the kernel's BTF.
    let peer = unsafe {
        L4Addr {
            addr: core::ptr::read_volatile(sk as *const u32),
            port: core::ptr::read_volatile(sk.byte_add(SKC_DPORT_OFFSET) as *const u16),
            pad: 0,
        }
    };
    // SAFETY: a plain helper call on the socket pointer.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    // SAFETY: values are copied out at once.
    let revnat = |key| unsafe { SKIFF_REVNAT.get(key) }.copied();
    // SAFETY: as above.
    let departed = |key| unsafe { SKIFF_SOCK_TERM.get(key) }.is_some();
    if !ends_socket(cookie, peer, revnat, departed) {
        return 0;
    }
    // SAFETY: the kfunc takes the trusted socket pointer; the reader gets the cookie.
    unsafe {
        if sock_destroy(sk) == 0 {
            let seq = (*ctx.meta).seq;
            bpf_seq_write(seq.cast(), (&raw const cookie).cast(), 8);
        }
    }
    0
}

/// `int bpf_sock_destroy(struct sock_common *)`, written as the kfunc call instruction.
///
/// # Safety
/// `sk` must be the iterator's socket.
#[inline(always)]
unsafe fn sock_destroy(sk: *mut c_void) -> i64 {
    let ret: i64;
    // SAFETY: one `call` instruction; a call clobbers r1-r5 and returns in r0, as declared.
    unsafe {
        asm!(
            ".byte 0x85, 0x20, 0, 0",
            ".4byte {mark}",
            mark = const SOCK_DESTROY_MARK,
            inout("r1") sk => _,
            lateout("r0") ret,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack),
        );
    }
    ret
}
