//! skiff's kernel-side programs.
//!
//! For now one socket hook that lets every connect through: it proves the toolchain (pinned
//! nightly, build-std, bpf-linker) and the loader path end to end. The service lookups of the
//! eBPF data plane grow here.
#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};
use skiff_ebpf_common::SOCK_ADDR_ALLOW;

/// `cgroup/connect4`: called on every IPv4 `connect()` in the attached cgroup.
#[cgroup_sock_addr(connect4)]
pub fn skiff_connect4(_ctx: SockAddrContext) -> i32 {
    SOCK_ADDR_ALLOW
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
