//! Types and constants shared by the kernel-side programs (`ebpf/programs`, built for the bpf
//! target) and the user-space proxy (`proxy/`).
//!
//! Both sides must agree on every byte of a map key or value, so each shared type lives here
//! once, `#[repr(C)]` with explicit padding, and the crate stays `no_std` with no dependencies.
#![no_std]

/// What a `cgroup/connect4`-style program returns to let the syscall go on.
pub const SOCK_ADDR_ALLOW: i32 = 1;
/// What a `cgroup/connect4`-style program returns to fail the syscall with `EPERM`.
pub const SOCK_ADDR_DENY: i32 = 0;

/// The section name the kernel and loaders use for the IPv4 connect hook.
pub const CONNECT4_SECTION: &str = "cgroup/connect4";
