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
//!   backend count, flags, affinity timeout); one entry per frontend of a Service port: each
//!   cluster IP, external IP and LB ingress IP with the port, each node IP and 127.0.0.1 with
//!   the node port. All frontends of a Service port share its id.
//! - `SKIFF_SLOTS`: [`SlotKey`] (service id, slot) → backend id (`u32`). Slots `0..count` hold
//!   the endpoints for cluster-internal traffic; when a Service's external frontends need a
//!   different list (`externalTrafficPolicy: Cluster` with `internalTrafficPolicy: Local`), it
//!   sits at [`EXTERNAL_SLOT_BASE`]`..+count`, so neither list shifts when the other changes.
//! - `SKIFF_BACKENDS`: backend id → [`L4Addr`] (address, port), shared by every Service that
//!   reaches the same endpoint.
//! - `SKIFF_REVNAT`: [`RevNatKey`] (socket cookie, backend) → [`L4Addr`] (the Service address),
//!   so `recvmsg4` / `getpeername4` can show the application the address it asked for.
//! - `SKIFF_AFFINITY`: [`AffinityKey`] (client netns cookie, service id) → [`AffinityValue`]
//!   (backend id, last use): ClientIP session affinity, an LRU the kernel fills. At `connect()`
//!   an unbound socket has no source address yet, so the client is its network namespace (one
//!   per Pod), as in Cilium's socket LB.
//! - `SKIFF_AFFINITY_MATCH`: [`AffinityMatchKey`] (service id, backend id) → `AFFINITY_MATCH_*`
//!   bits: which of the Service's slot lists hold the backend, so a remembered backend is only
//!   reused while it still serves that traffic (written for Services with affinity only).
//! - `SKIFF_SOCK_TERM`: (frontend, backend) pairs whose connected UDP sockets the `iter/udp`
//!   program ends, filled only while the proxy runs it (see [`sockterm`]).
//!
//! Addresses and ports are kept in network byte order, exactly as `bpf_sock_addr` hands them
//! to the kernel side, so the hot path never swaps bytes; the constructors here do it once on
//! the user side.
#![no_std]

pub mod nodeport;
pub mod sockterm;

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
/// See [`SERVICES_MAP`].
pub const AFFINITY_MAP: &str = "SKIFF_AFFINITY";
/// See [`SERVICES_MAP`].
pub const AFFINITY_MATCH_MAP: &str = "SKIFF_AFFINITY_MATCH";
/// Every map of the socket load balancer (and the proxy pins), its socket terminator's too.
pub const MAPS: [&str; 7] = [
    SERVICES_MAP,
    SLOTS_MAP,
    BACKENDS_MAP,
    REVNAT_MAP,
    AFFINITY_MAP,
    AFFINITY_MATCH_MAP,
    sockterm::SOCK_TERM_MAP,
];

/// Capacity of `SKIFF_SERVICES` (Service port × cluster IP).
pub const MAX_SERVICES: u32 = 65_536;
/// Capacity of `SKIFF_BACKENDS` and `SKIFF_SLOTS` (10k Services × 10 endpoints fit).
pub const MAX_BACKENDS: u32 = 131_072;
/// Capacity of the `SKIFF_REVNAT` LRU.
pub const MAX_REVNAT: u32 = 65_536;
/// Capacity of the `SKIFF_AFFINITY` LRU (client netns × Service with affinity).
pub const MAX_AFFINITY: u32 = 65_536;

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
/// zero this means "none for this traffic on this node" (iptables drops it; the socket fails the
/// call with `EPERM`), without it "none at all" (refused at once with `ECONNREFUSED`).
pub const SERVICE_FLAG_HAS_ENDPOINTS: u32 = 1;
/// [`ServiceValue::flags`]: ClientIP session affinity, for [`ServiceValue::affinity_seconds`].
pub const SERVICE_FLAG_AFFINITY: u32 = 2;
/// [`ServiceValue::flags`]: this frontend reads the external slot list (from
/// [`EXTERNAL_SLOT_BASE`]) rather than the internal one (from 0).
pub const SERVICE_FLAG_EXTERNAL_SLOTS: u32 = 4;

/// Where a Service's external slot list starts (see the crate notes).
pub const EXTERNAL_SLOT_BASE: u32 = 1 << 31;

/// `SKIFF_AFFINITY_MATCH` value bit: the backend is in the Service's internal slot list.
pub const AFFINITY_MATCH_INTERNAL: u32 = 1;
/// `SKIFF_AFFINITY_MATCH` value bit: the backend is in the Service's external slot list.
pub const AFFINITY_MATCH_EXTERNAL: u32 = 2;

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
    /// How long a client stays with its backend after its last connect (0 without affinity).
    pub affinity_seconds: u32,
}

impl ServiceValue {
    /// The slot this frontend's list starts at: 0, or [`EXTERNAL_SLOT_BASE`].
    pub const fn first_slot(&self) -> u32 {
        if self.flags & SERVICE_FLAG_EXTERNAL_SLOTS != 0 {
            EXTERNAL_SLOT_BASE
        } else {
            0
        }
    }

    /// The `AFFINITY_MATCH_*` bit of this frontend's slot list.
    pub const fn match_bit(&self) -> u32 {
        if self.flags & SERVICE_FLAG_EXTERNAL_SLOTS != 0 {
            AFFINITY_MATCH_EXTERNAL
        } else {
            AFFINITY_MATCH_INTERNAL
        }
    }

    /// The key of the affinity match saying whether `backend_id` is in this frontend's list.
    pub const fn match_key(&self, backend_id: u32) -> AffinityMatchKey {
        AffinityMatchKey {
            service_id: self.service_id,
            backend_id,
        }
    }
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

/// A client of a Service with session affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityKey {
    /// `bpf_get_netns_cookie` of the client's socket: its Pod (or the node).
    pub netns_cookie: u64,
    /// The Service port's id.
    pub service_id: u32,
    /// Always zero.
    pub pad: u32,
}

/// Where a client was last sent, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityValue {
    /// The backend chosen.
    pub backend_id: u32,
    /// Always zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns` at the last connect or send that chose it.
    pub last_used_ns: u64,
}

/// A backend of a Service, for checking a remembered choice.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AffinityMatchKey {
    /// The Service port's id.
    pub service_id: u32,
    /// The backend's id.
    pub backend_id: u32,
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityMatchKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::sockterm::SockTermKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ServiceKey>(), 8);
        assert_eq!(size_of::<ServiceValue>(), 16);
        assert_eq!(size_of::<SlotKey>(), 8);
        assert_eq!(size_of::<L4Addr>(), 8);
        assert_eq!(size_of::<RevNatKey>(), 16);
        assert_eq!(size_of::<AffinityKey>(), 16);
        assert_eq!(size_of::<AffinityValue>(), 16);
        assert_eq!(size_of::<AffinityMatchKey>(), 8);
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
