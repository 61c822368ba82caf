//! Types and constants shared by the kernel-side programs (`ebpf/programs`, built for the bpf
//! target) and the user-space proxy (`proxy/`).
//!
//! Both sides must agree on every byte of a map key or value, so each shared type lives here
//! once, `#[repr(C)]` with explicit padding, and the crate stays `no_std` with no dependencies
//! (the `user` feature adds `aya::Pod` impls for the proxy).
//!
//! The socket load balancer's maps split a Service the way Cilium's do, so that one endpoint
//! change rewrites one small entry instead of a whole Service:
//! - `SKIFF_SERVICES`: [`ServiceKey`] (address, port, protocol) → [`ServiceValue`] (service id,
//!   backend count, flags); one entry per cluster IP of a Service port.
//! - `SKIFF_SLOTS`: [`SlotKey`] (service id, slot `0..count`) → backend id (`u32`).
//! - `SKIFF_BACKENDS`: backend id → [`L4Addr`] (address, port), shared by every Service that
//!   reaches the same endpoint.
//! - `SKIFF_REVNAT`: [`RevNatKey`] (socket cookie, backend) → [`L4Addr`] (the Service address),
//!   so `recvmsg4` / `getpeername4` can show the application the address it asked for.
//!
//! Addresses and ports are kept in network byte order, exactly as `bpf_sock_addr` hands them
//! to the kernel side, so the hot path never swaps bytes; the constructors here do it once on
//! the user side.
#![no_std]

pub mod nodeport;

/// What a `cgroup/connect4`-style program returns to let the syscall go on.
pub const SOCK_ADDR_ALLOW: i32 = 1;
/// What a `cgroup/connect4`-style program returns to fail the syscall (`EPERM`, unless the
/// program set another error with `bpf_set_retval`).
pub const SOCK_ADDR_DENY: i32 = 0;

/// The section name the kernel and loaders use for the IPv4 connect hook.
pub const CONNECT4_SECTION: &str = "cgroup/connect4";

/// Map names, as the kernel programs declare them and the proxy pins them.
pub const SERVICES_MAP: &str = "SKIFF_SERVICES";
/// See [`SERVICES_MAP`].
pub const SLOTS_MAP: &str = "SKIFF_SLOTS";
/// See [`SERVICES_MAP`].
pub const BACKENDS_MAP: &str = "SKIFF_BACKENDS";
/// See [`SERVICES_MAP`].
pub const REVNAT_MAP: &str = "SKIFF_REVNAT";

/// Capacity of `SKIFF_SERVICES` (Service port × cluster IP).
pub const MAX_SERVICES: u32 = 65_536;
/// Capacity of `SKIFF_BACKENDS` and `SKIFF_SLOTS` (10k Services × 10 endpoints fit).
pub const MAX_BACKENDS: u32 = 131_072;
/// Capacity of the `SKIFF_REVNAT` LRU.
pub const MAX_REVNAT: u32 = 65_536;

/// Program names (function names in the object), in the order the proxy attaches them.
pub const PROGRAMS: [&str; 4] = [
    "skiff_connect4",
    "skiff_sendmsg4",
    "skiff_recvmsg4",
    "skiff_getpeername4",
];

/// IP protocol numbers as `bpf_sock_addr.protocol` reports them.
pub const IPPROTO_TCP: u8 = 6;
/// See [`IPPROTO_TCP`].
pub const IPPROTO_UDP: u8 = 17;

/// [`ServiceValue::flags`]: the Service has usable endpoints somewhere. With a backend count of
/// zero this means "none for this traffic on this node" (dropped, as iptables does), without it
/// "none at all" (refused at once with `ECONNREFUSED`).
pub const SERVICE_FLAG_HAS_ENDPOINTS: u32 = 1;

/// A Service frontend: where clients send.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero (hash keys compare every byte).
    pub pad: u8,
}

impl ServiceKey {
    /// A key from host-order parts.
    pub const fn new(octets: [u8; 4], port: u16, protocol: u8) -> Self {
        ServiceKey {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            protocol,
            pad: 0,
        }
    }
}

/// What a Service frontend leads to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceValue {
    /// The Service port's id: the first half of every [`SlotKey`].
    pub service_id: u32,
    /// How many slots `0..backend_count` hold a backend.
    pub backend_count: u32,
    /// `SERVICE_FLAG_*` bits.
    pub flags: u32,
}

/// One backend slot of one Service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotKey {
    /// The Service port's id.
    pub service_id: u32,
    /// The slot, `0..backend_count`.
    pub slot: u32,
}

/// An IPv4 address and port, network byte order: a backend, or a Service address to show back.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct L4Addr {
    /// IPv4 address, network byte order.
    pub addr: u32,
    /// Port, network byte order.
    pub port: u16,
    /// Always zero.
    pub pad: u16,
}

impl L4Addr {
    /// An address from host-order parts.
    pub const fn new(octets: [u8; 4], port: u16) -> Self {
        L4Addr {
            addr: u32::from_ne_bytes(octets),
            port: port.to_be(),
            pad: 0,
        }
    }

    /// The address's octets.
    pub const fn octets(&self) -> [u8; 4] {
        self.addr.to_ne_bytes()
    }

    /// The port, host order.
    pub const fn host_port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// Which Service a socket reached a backend through.
///
/// Keyed by socket cookie *and* backend: the cookie keeps two sockets that reach the same
/// backend through different Services apart, and the backend keeps one unconnected UDP socket
/// that sends to several Services apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RevNatKey {
    /// `bpf_get_socket_cookie` of the socket.
    pub cookie: u64,
    /// The backend the socket talks to.
    pub backend: L4Addr,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is `#[repr(C)]`, `Copy`, made only of integers, with explicit padding
    // fields, so any byte pattern is a valid value and no byte is uninitialised.
    unsafe impl aya::Pod for super::ServiceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ServiceValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SlotKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::L4Addr {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevNatKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceValue>(), 12);
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(size_of::<L4Addr>(), 8);
        assert_eq!(size_of::<RevNatKey>(), 16);
    }

    #[test]
    fn keys_hold_network_byte_order() {
        let key = ServiceKey::new([10, 96, 0, 1], 80, IPPROTO_TCP);
        assert_eq!(key.addr.to_ne_bytes(), [10, 96, 0, 1]);
        assert_eq!(key.port.to_ne_bytes(), [0, 80]);
        let backend = L4Addr::new([10, 244, 1, 2], 8080);
        assert_eq!(backend.octets(), [10, 244, 1, 2]);
        assert_eq!(backend.host_port(), 8080);
    }
}
