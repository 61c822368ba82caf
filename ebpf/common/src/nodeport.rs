//! The NodePort path's maps: traffic that arrives on a node's interface for a NodePort, an
//! externalIP or a LoadBalancer IP, which no socket hook sees.
//!
//! TC programs on the node's interfaces translate it packet by packet:
//! - `SKIFF_EXT_SERVICES`: [`ServiceKey`](crate::ServiceKey) (node IP and nodePort, external or
//!   LB IP and port) → [`ServiceValue`](crate::ServiceValue) whose id numbers this scope's
//!   slots; [`EXT_FLAG_SNAT`] when the policy is `Cluster`.
//! - `SKIFF_EXT_SLOTS`: [`SlotKey`](crate::SlotKey) → [`ExtSlot`] (the backend and whether it
//!   runs on this node). Addresses sit in the slot itself: external backend lists are short.
//! - `SKIFF_EXT_SOURCES`: an LPM trie of each Service's `loadBalancerSourceRanges`
//!   ([`SourceRange`]), consulted for frontends flagged [`EXT_FLAG_SOURCE_RANGES`] (its LB IPs).
//! - `SKIFF_EXT_AFFINITY`: an LRU of `sessionAffinity: ClientIP` choices, [`ExtAffinityKey`]
//!   (client address, external Service id) → [`ExtAffinityValue`] (slot, backend, last use);
//!   honoured while the frontend has `SERVICE_FLAG_AFFINITY`, within its timeout, and while
//!   that slot still holds that backend.
//! - `SKIFF_NAT`: an LRU connection table, [`NatKey`] (a packet's 5-tuple as seen on the wire)
//!   → [`NatValue`] (the tuple to write instead). A new connection writes two entries: the
//!   forward one (client → frontend) and the reverse one (backend → whoever it answers).
//!
//! A remote backend under the `Cluster` policy is reached from the node's own address and a
//! port from [`SNAT_PORT_MIN`] up (above Linux's default ephemeral range), so its reply comes
//! back to this node; a local backend, or any under `Local`, sees the client's own address
//! and its reply is translated as it leaves.

/// Map names, as the kernel programs declare them and the proxy pins them.
pub const EXT_SERVICES_MAP: &str = "SKIFF_EXT_SERVICES";
/// See [`EXT_SERVICES_MAP`].
pub const EXT_SLOTS_MAP: &str = "SKIFF_EXT_SLOTS";
/// See [`EXT_SERVICES_MAP`].
pub const NAT_MAP: &str = "SKIFF_NAT";
/// See [`EXT_SERVICES_MAP`].
pub const EXT_SOURCES_MAP: &str = "SKIFF_EXT_SOURCES";
/// See [`EXT_SERVICES_MAP`].
pub const EXT_AFFINITY_MAP: &str = "SKIFF_EXT_AFFINITY";
/// Capacity of the `SKIFF_EXT_AFFINITY` LRU.
pub const MAX_EXT_AFFINITY: u32 = 65_536;

/// Capacity of `SKIFF_EXT_SERVICES` (frontends: node IPs × nodePorts, external and LB IPs).
pub const MAX_EXT_SERVICES: u32 = 65_536;
/// Capacity of `SKIFF_EXT_SLOTS`.
pub const MAX_EXT_SLOTS: u32 = 131_072;
/// Capacity of `SKIFF_EXT_SOURCES` (source ranges over all Services).
pub const MAX_EXT_SOURCES: u32 = 16_384;
/// Capacity of the `SKIFF_NAT` LRU (two entries per connection).
pub const MAX_NAT: u32 = 262_144;

/// The TC programs (function names in the object): on ingress, and on egress, of every
/// interface external traffic arrives on.
pub const TC_INGRESS_PROGRAM: &str = "skiff_nodeport_ingress";
/// See [`TC_INGRESS_PROGRAM`].
pub const TC_EGRESS_PROGRAM: &str = "skiff_nodeport_egress";

/// [`crate::ServiceValue::flags`] in `SKIFF_EXT_SERVICES` (clear of the `SERVICE_FLAG_*` bits):
/// remote backends are reached from the node's address (`externalTrafficPolicy: Cluster`).
pub const EXT_FLAG_SNAT: u32 = 0x100;

/// [`crate::ServiceValue::flags`] in `SKIFF_EXT_SERVICES`: only sources inside the Service's
/// ranges in `SKIFF_EXT_SOURCES` may use this frontend; others are dropped.
pub const EXT_FLAG_SOURCE_RANGES: u32 = 0x200;

/// [`ExtSlot::flags`]: the backend runs on this node (reached without source NAT).
pub const EXT_SLOT_LOCAL: u32 = 1;

/// [`NatValue::flags`]: the rewritten packet is sent out by a FIB lookup and redirect (its
/// source is now this node's address, which the input path would drop as martian).
pub const NAT_REDIRECT: u32 = 1;
/// [`NatValue::flags`]: the entry applies to packets leaving the node (the egress program),
/// not arriving.
pub const NAT_EGRESS: u32 = 2;

/// The first source port used for source NAT.
pub const SNAT_PORT_MIN: u16 = 61_000;
/// How many source ports from [`SNAT_PORT_MIN`] (up to 65535).
pub const SNAT_PORT_COUNT: u16 = 4_536;

/// One slot of an external frontend's Service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtSlot {
    /// The backend.
    pub backend: crate::L4Addr,
    /// `EXT_SLOT_*` bits.
    pub flags: u32,
    /// Always zero.
    pub pad: u32,
}

/// The data of a `SKIFF_EXT_SOURCES` key: the Service's id, always matched whole, then a
/// source prefix; the key's prefix length is 32 + the range's.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceRange {
    /// The external Service id, big-endian (an LPM trie matches bytes from the first).
    pub service_id_be: u32,
    /// The range's address, network byte order.
    pub addr: u32,
}

impl SourceRange {
    /// A key's data from host-order parts.
    pub const fn new(service_id: u32, octets: [u8; 4]) -> Self {
        SourceRange {
            service_id_be: service_id.to_be(),
            addr: u32::from_ne_bytes(octets),
        }
    }
}

/// Who an external affinity entry pins.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtAffinityKey {
    /// The client's address, network byte order.
    pub client: u32,
    /// The external Service id.
    pub service_id: u32,
}

/// Where an external client is pinned, and since when.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExtAffinityValue {
    /// The backend chosen.
    pub backend: crate::L4Addr,
    /// The slot it was in (checked again before it is reused).
    pub slot: u32,
    /// Always zero.
    pub pad: u32,
    /// `bpf_ktime_get_ns` of the last new connection.
    pub last_used_ns: u64,
}

/// A packet's 5-tuple, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatKey {
    /// Source address.
    pub saddr: u32,
    /// Destination address.
    pub daddr: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

/// The tuple a matching packet is rewritten to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatValue {
    /// New source address.
    pub saddr: u32,
    /// New destination address.
    pub daddr: u32,
    /// New source port.
    pub sport: u16,
    /// New destination port.
    pub dport: u16,
    /// `NAT_*` bits.
    pub flags: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: `#[repr(C)]`, `Copy`, integers only, explicit padding (see the crate root).
    unsafe impl aya::Pod for super::ExtSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NatValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceRange {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExtAffinityKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ExtAffinityValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_hidden_padding() {
        assert_eq!(size_of::<ExtSlot>(), 16);
        assert_eq!(size_of::<NatKey>(), 16);
        assert_eq!(size_of::<NatValue>(), 16);
        assert_eq!(size_of::<ExtAffinityKey>(), 8);
        assert_eq!(size_of::<ExtAffinityValue>(), 24);
        assert!(u32::from(SNAT_PORT_MIN) + u32::from(SNAT_PORT_COUNT) <= 65_536);
    }
}
