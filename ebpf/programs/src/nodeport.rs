//! NodePort, externalIP and LoadBalancer-IP traffic arriving on the node's interfaces.
//!
//! The socket programs only see sockets in the node's cgroup; a client on another machine
//! reaches the node as packets. `skiff_nodeport_ingress` (TC ingress) looks a new connection's
//! destination up in `SKIFF_EXT_SERVICES`, picks a backend, records both directions in the
//! `SKIFF_NAT` LRU and rewrites the packet; later packets of the connection only hit the NAT
//! table. See `skiff_ebpf_common::nodeport` for the two shapes a connection takes:
//!
//! - backend on this node, or `externalTrafficPolicy: Local`: only the destination changes;
//!   the stack routes the packet to the Pod, the Pod answers the client's own address, and
//!   `skiff_nodeport_egress` puts the frontend back as the reply's source on its way out.
//! - remote backend under `Cluster`: source and destination change (node address, a port of
//!   ours), and the packet is sent straight out by FIB lookup and redirect — the input path
//!   would drop a packet arriving with one of the node's own addresses as source. The reply
//!   comes back to that port, is turned back into frontend → client on ingress and redirected
//!   out the same way.
//!
//! A LoadBalancer IP with `loadBalancerSourceRanges` admits only sources inside them.
//! Packets that match nothing go on untouched (`TC_ACT_UNSPEC`: the next program, if any).
//! A frontend whose Service has no endpoints at all answers a TCP segment with a RST (UDP is
//! dropped: no ICMP from here yet).

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_SHOT, bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    helpers::generated::{
        bpf_fib_lookup, bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh,
        bpf_skb_change_tail,
    },
    macros::{classifier, map},
    maps::{HashMap, LpmTrie, LruHashMap, lpm_trie::Key},
    programs::TcContext,
};
use skiff_ebpf_common::{
    IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey,
    ServiceValue, SlotKey,
    nodeport::{
        EXT_FLAG_SNAT, EXT_FLAG_SOURCE_RANGES, EXT_SLOT_LOCAL, ExtAffinityKey, ExtAffinityValue,
        ExtSlot, MAX_EXT_AFFINITY, MAX_EXT_SERVICES, MAX_EXT_SLOTS, MAX_EXT_SOURCES, MAX_NAT,
        NAT_EGRESS, NAT_REDIRECT, NatKey, NatValue, SNAT_PORT_COUNT, SNAT_PORT_MIN, SourceRange,
    },
};

#[map]
static SKIFF_EXT_SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_EXT_SERVICES, 0);
#[map]
static SKIFF_EXT_SLOTS: HashMap<SlotKey, ExtSlot> = HashMap::pinned(MAX_EXT_SLOTS, 0);
#[map]
static SKIFF_NAT: LruHashMap<NatKey, NatValue> = LruHashMap::pinned(MAX_NAT, 0);
#[map]
static SKIFF_EXT_AFFINITY: LruHashMap<ExtAffinityKey, ExtAffinityValue> =
    LruHashMap::pinned(MAX_EXT_AFFINITY, 0);
#[map]
static SKIFF_EXT_SOURCES: LpmTrie<SourceRange, u32> = LpmTrie::pinned(MAX_EXT_SOURCES, 0);

/// Go on to the next program (tcx) or the default action (cls_bpf): "not ours".
const TC_ACT_UNSPEC: i32 = -1;
const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IP_PROTO_OFF: usize = ETH_HLEN + 9;
const IP_CSUM_OFF: usize = ETH_HLEN + 10;
const IP_SRC_OFF: usize = ETH_HLEN + 12;
const IP_DST_OFF: usize = ETH_HLEN + 16;
const AF_INET: u8 = 2;
/// How many random source ports are tried before a new connection is given up.
const SNAT_TRIES: u32 = 8;

/// A parsed IPv4 TCP/UDP packet.
struct Packet {
    key: NatKey,
    /// Offset of the L4 header.
    l4: usize,
    /// Offset of the L4 checksum.
    csum: usize,
    /// The IPv4 total length (for the FIB lookup).
    tot_len: u16,
}

/// TC ingress: new external connections and the replies of source-NATed ones.
#[classifier]
pub fn skiff_nodeport_ingress(ctx: TcContext) -> i32 {
    let Some(packet) = parse(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: copied out at once.
    if let Some(nat) = unsafe { SKIFF_NAT.get(packet.key) }.copied() {
        if nat.flags & NAT_EGRESS != 0 {
            return TC_ACT_UNSPEC;
        }
        return apply(&ctx, &packet, &nat);
    }
    let frontend = ServiceKey {
        addr: packet.key.daddr,
        port: packet.key.dport,
        protocol: packet.key.protocol,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(service) = unsafe { SKIFF_EXT_SERVICES.get(frontend) }.copied() else {
        return TC_ACT_UNSPEC;
    };
    if service.flags & EXT_FLAG_SOURCE_RANGES != 0 {
        let source = Key::new(
            64,
            SourceRange {
                service_id_be: service.service_id.to_be(),
                addr: packet.key.saddr,
            },
        );
        if SKIFF_EXT_SOURCES.get(&source).is_none() {
            // Outside loadBalancerSourceRanges.
            return TC_ACT_SHOT;
        }
    }
    if service.backend_count == 0 {
        // No endpoints at all: refused, as iptables rejects (TCP; UDP is dropped). Endpoints
        // elsewhere only (a Local policy): nothing answers here, dropped.
        if service.flags & SERVICE_FLAG_HAS_ENDPOINTS == 0 && packet.key.protocol == IPPROTO_TCP {
            return reset(&ctx, &packet).unwrap_or(TC_ACT_SHOT);
        }
        return TC_ACT_SHOT;
    }
    let Some(slot) = choose(&service, packet.key.saddr) else {
        return TC_ACT_UNSPEC;
    };
    let key = packet.key;
    let backend = slot.backend;
    let snat = service.flags & EXT_FLAG_SNAT != 0 && slot.flags & EXT_SLOT_LOCAL == 0;
    let (forward, reverse_key, reverse) = if snat {
        let Some(port) = free_snat_port(&key, backend.addr, backend.port) else {
            return TC_ACT_SHOT;
        };
        (
            NatValue {
                saddr: key.daddr,
                daddr: backend.addr,
                sport: port,
                dport: backend.port,
                flags: NAT_REDIRECT,
            },
            NatKey {
                saddr: backend.addr,
                daddr: key.daddr,
                sport: backend.port,
                dport: port,
                protocol: key.protocol,
                pad: [0; 3],
            },
            NatValue {
                saddr: key.daddr,
                daddr: key.saddr,
                sport: key.dport,
                dport: key.sport,
                flags: NAT_REDIRECT,
            },
        )
    } else {
        (
            NatValue {
                saddr: key.saddr,
                daddr: backend.addr,
                sport: key.sport,
                dport: backend.port,
                flags: 0,
            },
            NatKey {
                saddr: backend.addr,
                daddr: key.saddr,
                sport: backend.port,
                dport: key.sport,
                protocol: key.protocol,
                pad: [0; 3],
            },
            NatValue {
                saddr: key.daddr,
                daddr: key.saddr,
                sport: key.dport,
                dport: key.sport,
                flags: NAT_EGRESS,
            },
        )
    };
    // The reverse entry first: the reply can only come after the rewritten packet left.
    if SKIFF_NAT.insert(reverse_key, reverse, 0).is_err()
        || SKIFF_NAT.insert(key, forward, 0).is_err()
    {
        return TC_ACT_SHOT;
    }
    apply(&ctx, &packet, &forward)
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Turns a TCP segment into the RST that refuses it and sends it back out of the interface it
/// came in by: the client's connect fails at once, as with iptables' `REJECT --reject-with
/// tcp-reset`. `None` when the segment cannot be answered (it is dropped instead).
fn reset(ctx: &TcContext, packet: &Packet) -> Option<i32> {
    let l4 = packet.l4;
    let flags: u8 = ctx.load(l4 + 13).ok()?;
    if flags & TCP_RST != 0 || l4 != ETH_HLEN + 20 {
        return None;
    }
    let seq = u32::from_be(ctx.load::<u32>(l4 + 4).ok()?);
    let ack = u32::from_be(ctx.load::<u32>(l4 + 8).ok()?);
    let doff = u32::from(ctx.load::<u8>(l4 + 12).ok()? >> 4) * 4;
    let payload = u32::from(packet.tot_len).checked_sub(20 + doff)?;
    let (new_seq, new_ack, new_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let consumed = payload + u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (0, seq.wrapping_add(consumed), TCP_RST | TCP_ACK)
    };
    let dst_mac: [u8; 6] = ctx.load(0).ok()?;
    let src_mac: [u8; 6] = ctx.load(6).ok()?;
    // SAFETY: the context is the kernel's `__sk_buff`.
    let (skb, ifindex) = unsafe { (ctx.skb.skb, (*ctx.skb.skb).ifindex) };
    // SAFETY: shrinking a packet we own to Ethernet + IPv4 + TCP headers.
    if unsafe { bpf_skb_change_tail(skb, (ETH_HLEN + 40) as u32, 0) } != 0 {
        return None;
    }
    let key = &packet.key;
    let mut ip = [0u16; 10];
    ip[0] = 0x4500u16.to_be();
    ip[1] = 40u16.to_be();
    ip[3] = 0x4000u16.to_be(); // don't fragment
    ip[4] = (0x4000u16 | u16::from(IPPROTO_TCP)).to_be(); // TTL 64, protocol
    let (src, dst) = (key.daddr, key.saddr);
    ip[6] = (src & 0xffff) as u16;
    ip[7] = (src >> 16) as u16;
    ip[8] = (dst & 0xffff) as u16;
    ip[9] = (dst >> 16) as u16;
    ip[5] = !fold(ip.iter().map(|w| u32::from(*w)).sum());
    let mut tcp = [0u16; 10];
    tcp[0] = key.dport;
    tcp[1] = key.sport;
    let seq_be = new_seq.to_be();
    tcp[2] = (seq_be & 0xffff) as u16;
    tcp[3] = (seq_be >> 16) as u16;
    let ack_be = new_ack.to_be();
    tcp[4] = (ack_be & 0xffff) as u16;
    tcp[5] = (ack_be >> 16) as u16;
    tcp[6] = ((5u16 << 12) | u16::from(new_flags)).to_be();
    let pseudo = (src & 0xffff)
        + (src >> 16)
        + (dst & 0xffff)
        + (dst >> 16)
        + u32::from(u16::from(IPPROTO_TCP).to_be())
        + u32::from(20u16.to_be());
    tcp[8] = !fold(pseudo + tcp.iter().map(|w| u32::from(*w)).sum::<u32>());
    ctx.store(0, &src_mac, 0).ok()?;
    ctx.store(6, &dst_mac, 0).ok()?;
    ctx.store(ETH_HLEN, &ip, 0).ok()?;
    ctx.store(ETH_HLEN + 20, &tcp, 0).ok()?;
    // SAFETY: a plain helper call.
    Some(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// Folds a one's-complement sum of 16-bit words into 16 bits.
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Picks the slot for a new connection from `client`: its pinned one while affinity holds
/// (same backend still in that slot, within the timeout), else a random one (and pins it).
fn choose(service: &ServiceValue, client: u32) -> Option<ExtSlot> {
    let affinity = service.flags & SERVICE_FLAG_AFFINITY != 0;
    let key = ExtAffinityKey {
        client,
        service_id: service.service_id,
    };
    // SAFETY: a plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if affinity
        // SAFETY: copied out at once.
        && let Some(pin) = unsafe { SKIFF_EXT_AFFINITY.get(key) }.copied()
        && now.saturating_sub(pin.last_used_ns) < u64::from(service.affinity_seconds) * 1_000_000_000
        && pin.slot < service.backend_count
    {
        let slot_key = SlotKey {
            service_id: service.service_id,
            slot: pin.slot,
        };
        // SAFETY: copied out at once.
        if let Some(slot) = unsafe { SKIFF_EXT_SLOTS.get(slot_key) }.copied()
            && slot.backend == pin.backend
        {
            let pin = ExtAffinityValue {
                last_used_ns: now,
                ..pin
            };
            let _ = SKIFF_EXT_AFFINITY.insert(key, pin, 0);
            return Some(slot);
        }
    }
    // SAFETY: a plain helper call.
    let index = unsafe { bpf_get_prandom_u32() } % service.backend_count;
    let slot_key = SlotKey {
        service_id: service.service_id,
        slot: index,
    };
    // SAFETY: copied out at once.
    let slot = unsafe { SKIFF_EXT_SLOTS.get(slot_key) }.copied()?;
    if affinity {
        let pin = ExtAffinityValue {
            backend: slot.backend,
            slot: index,
            pad: 0,
            last_used_ns: now,
        };
        // A full LRU evicts its oldest pin; failing to pin only loses stickiness.
        let _ = SKIFF_EXT_AFFINITY.insert(key, pin, 0);
    }
    Some(slot)
}

/// TC egress: replies of local backends leave with the frontend as their source.
#[classifier]
pub fn skiff_nodeport_egress(ctx: TcContext) -> i32 {
    let Some(packet) = parse(&ctx) else {
        return TC_ACT_UNSPEC;
    };
    // SAFETY: copied out at once.
    match unsafe { SKIFF_NAT.get(packet.key) }.copied() {
        Some(nat) if nat.flags & NAT_EGRESS != 0 => apply(&ctx, &packet, &nat),
        _ => TC_ACT_UNSPEC,
    }
}

/// Picks a source port no connection to this backend from the node's address uses.
fn free_snat_port(key: &NatKey, backend_addr: u32, backend_port: u16) -> Option<u16> {
    for _ in 0..SNAT_TRIES {
        // SAFETY: a plain helper call.
        let offset = (unsafe { bpf_get_prandom_u32() } % u32::from(SNAT_PORT_COUNT)) as u16;
        let port = (SNAT_PORT_MIN + offset).to_be();
        let reverse = NatKey {
            saddr: backend_addr,
            daddr: key.daddr,
            sport: backend_port,
            dport: port,
            protocol: key.protocol,
            pad: [0; 3],
        };
        // SAFETY: only presence is read.
        if unsafe { SKIFF_NAT.get(reverse) }.is_none() {
            return Some(port);
        }
    }
    None
}

/// Reads the 5-tuple of an IPv4 TCP or UDP packet that is not a later fragment.
fn parse(ctx: &TcContext) -> Option<Packet> {
    let ether_type = u16::from_be(ctx.load::<u16>(12).ok()?);
    if ether_type != ETH_P_IP {
        return None;
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).ok()?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
    if frag & 0x1fff != 0 {
        return None;
    }
    let protocol: u8 = ctx.load(IP_PROTO_OFF).ok()?;
    let csum_at = match protocol {
        IPPROTO_TCP => 16,
        IPPROTO_UDP => 6,
        _ => return None,
    };
    let l4 = ETH_HLEN + ihl;
    Some(Packet {
        key: NatKey {
            saddr: ctx.load(IP_SRC_OFF).ok()?,
            daddr: ctx.load(IP_DST_OFF).ok()?,
            sport: ctx.load(l4).ok()?,
            dport: ctx.load(l4 + 2).ok()?,
            protocol,
            pad: [0; 3],
        },
        l4,
        csum: l4 + csum_at,
        tot_len: u16::from_be(ctx.load::<u16>(ETH_HLEN + 2).ok()?),
    })
}

/// Rewrites the packet's tuple to `nat` (checksums included), then passes or redirects it.
fn apply(ctx: &TcContext, packet: &Packet, nat: &NatValue) -> i32 {
    if rewrite(ctx, packet, nat).is_err() {
        return TC_ACT_SHOT;
    }
    if nat.flags & NAT_REDIRECT != 0 {
        return redirect(ctx, packet, nat);
    }
    // The stack routes it (to a local Pod on ingress; out of the interface on egress).
    0
}

fn rewrite(ctx: &TcContext, packet: &Packet, nat: &NatValue) -> Result<(), i64> {
    let old = &packet.key;
    let mangled = if old.protocol == IPPROTO_UDP {
        u64::from(BPF_F_MARK_MANGLED_0)
    } else {
        0
    };
    let pseudo = u64::from(BPF_F_PSEUDO_HDR);
    for (offset, from, to) in [
        (IP_SRC_OFF, old.saddr, nat.saddr),
        (IP_DST_OFF, old.daddr, nat.daddr),
    ] {
        if from != to {
            ctx.l4_csum_replace(
                packet.csum,
                u64::from(from),
                u64::from(to),
                pseudo | mangled | 4,
            )?;
            ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(from), u64::from(to), 4)?;
            ctx.store(offset, &to, 0)?;
        }
    }
    for (offset, from, to) in [
        (packet.l4, old.sport, nat.sport),
        (packet.l4 + 2, old.dport, nat.dport),
    ] {
        if from != to {
            ctx.l4_csum_replace(packet.csum, u64::from(from), u64::from(to), mangled | 2)?;
            ctx.store(offset, &to, 0)?;
        }
    }
    Ok(())
}

/// Sends the rewritten packet straight out of the interface the FIB picks for its destination.
fn redirect(ctx: &TcContext, packet: &Packet, nat: &NatValue) -> i32 {
    // SAFETY: an all-zero `bpf_fib_lookup` is a valid input (integers and unions of them).
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = AF_INET;
    fib.l4_protocol = packet.key.protocol;
    fib.sport = nat.sport;
    fib.dport = nat.dport;
    fib.__bindgen_anon_1.tot_len = packet.tot_len;
    // SAFETY: the context is the kernel's `__sk_buff`.
    fib.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fib.__bindgen_anon_3.ipv4_src = nat.saddr;
    fib.__bindgen_anon_4.ipv4_dst = nat.daddr;
    let size = core::mem::size_of::<FibParams>() as i32;
    // SAFETY: `fib` is a valid, writable `bpf_fib_lookup` of `size` bytes.
    let found = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), &mut fib, size, 0) };
    if found == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        if ctx.store(0, &fib.dmac, 0).is_err() || ctx.store(6, &fib.smac, 0).is_err() {
            return TC_ACT_SHOT;
        }
        // SAFETY: a plain helper call.
        return unsafe { bpf_redirect(fib.ifindex, 0) } as i32;
    }
    if found == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        // SAFETY: after a lookup, `ipv4_dst` holds the next hop.
        let next_hop = unsafe { fib.__bindgen_anon_4.ipv4_dst };
        let mut neigh = bpf_redir_neigh {
            nh_family: u32::from(AF_INET),
            __bindgen_anon_1: aya_ebpf::bindings::bpf_redir_neigh__bindgen_ty_1 {
                ipv4_nh: next_hop,
            },
        };
        let size = core::mem::size_of::<bpf_redir_neigh>() as i32;
        // SAFETY: `neigh` is a valid `bpf_redir_neigh` of `size` bytes.
        return unsafe { bpf_redirect_neigh(fib.ifindex, &mut neigh, size, 0) } as i32;
    }
    TC_ACT_SHOT
}
