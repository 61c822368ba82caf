//! skiff's kernel-side programs, built into one object that the proxy loads once
//! (`proxy/src/ebpf/loader.rs`), all sharing the maps of `skiff_ebpf_common`:
//! - here, the socket-level load balancer: cgroup programs for the node's own processes;
//! - [`nodeport`], TC programs translating NodePort, externalIP and LoadBalancer IP traffic
//!   that arrives from other machines as packets;
//! - [`sockterm`], an `iter/udp` program the proxy runs to end connected UDP sockets whose
//!   backend left their Service.
//!
//! Why at the socket: a Service address is translated once, where the application names it —
//! at `connect()` for TCP and connected UDP, at each `sendmsg()` for unconnected UDP — so no
//! packet to a Service ever leaves the socket and no per-packet NAT or conntrack is needed.
//! Every frontend the proxy writes is translated alike: cluster IPs, external and LB IPs, and
//! node port on the node's IPs and 127.0.0.1 (the processes here are all local: Pods and the
//! node itself). The backend is picked at random from the frontend's slots (see
//! `skiff_ebpf_common` for the maps), or, for a Service with ClientIP affinity, is the one this
//! client (its netns) was last sent to, while that is fresh and still one of the frontend's
//! backends. `recvmsg4` and `getpeername4` look the socket up in the reverse map and show the
//! Service address back, so an application that checks who answered (DNS resolvers do) sees
//! the address it asked for.
//!
//! A Service with no endpoints at all fails the call with `ECONNREFUSED` at once, as
//! kube-proxy's REJECT does: returning 0 alone would give `EPERM`, so the program sets the
//! error with `bpf_set_retval` first (the kernel keeps a program-set error over its default).
//! One that has endpoints, none for this traffic here (a `Local` policy), is *dropped* by
//! iptables; a socket cannot drop silently, so the call fails with plain `EPERM` — what a local
//! sender gets when netfilter drops its packet in OUTPUT — which a client can tell apart from
//! the refusal.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod nodeport;
mod sockterm;

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{
        bpf_get_netns_cookie, bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_ns,
        bpf_set_retval,
    },
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use skiff_ebpf_common::{
    AffinityKey, AffinityMatchKey, AffinityValue, IPPROTO_TCP, IPPROTO_UDP, L4Addr, MAX_AFFINITY,
    MAX_BACKENDS, MAX_REVNAT, MAX_SERVICES, RevNatKey, SERVICE_FLAG_AFFINITY,
    SERVICE_FLAG_HAS_ENDPOINTS, SOCK_ADDR_ALLOW, SOCK_ADDR_DENY, ServiceKey, ServiceValue, SlotKey,
};

/// `ECONNREFUSED` on Linux.
const ECONNREFUSED: i32 = 111;

#[map]
static SKIFF_SERVICES: HashMap<ServiceKey, ServiceValue> = HashMap::pinned(MAX_SERVICES, 0);
#[map]
static SKIFF_SLOTS: HashMap<SlotKey, u32> = HashMap::pinned(MAX_BACKENDS, 0);
#[map]
static SKIFF_BACKENDS: HashMap<u32, L4Addr> = HashMap::pinned(MAX_BACKENDS, 0);
#[map]
static SKIFF_REVNAT: LruHashMap<RevNatKey, L4Addr> = LruHashMap::pinned(MAX_REVNAT, 0);
#[map]
static SKIFF_AFFINITY: LruHashMap<AffinityKey, AffinityValue> = LruHashMap::pinned(MAX_AFFINITY, 0);
#[map]
static SKIFF_AFFINITY_MATCH: HashMap<AffinityMatchKey, u32> = HashMap::pinned(MAX_BACKENDS, 0);

/// Nanoseconds in a second, for affinity timeouts.
const NS_PER_SECOND: u64 = 1_000_000_000;

/// `cgroup/connect4`: TCP connect and UDP connect in the attached cgroup.
#[cgroup_sock_addr(connect4)]
pub fn skiff_connect4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

/// `cgroup/sendmsg4`: unconnected UDP sends in the attached cgroup.
#[cgroup_sock_addr(sendmsg4)]
pub fn skiff_sendmsg4(ctx: SockAddrContext) -> i32 {
    translate(&ctx)
}

/// `cgroup/recvmsg4`: replies show the Service address as their source.
#[cgroup_sock_addr(recvmsg4)]
pub fn skiff_recvmsg4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    SOCK_ADDR_ALLOW
}

/// `cgroup/getpeername4`: a connected socket's peer is the Service address.
#[cgroup_sock_addr(getpeername4)]
pub fn skiff_getpeername4(ctx: SockAddrContext) -> i32 {
    reverse(&ctx);
    SOCK_ADDR_ALLOW
}

/// Rewrites a Service address to a backend; refuses or drops when it has none for us.
fn translate(ctx: &SockAddrContext) -> i32 {
    // SAFETY: the kernel hands every cgroup_sock_addr program a valid `bpf_sock_addr`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let protocol = sa.protocol as u8;
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return SOCK_ADDR_ALLOW;
    }
    let service = L4Addr {
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        pad: 0,
    };
    let key = ServiceKey {
        addr: service.addr,
        port: service.port,
        protocol,
        pad: 0,
    };
    // SAFETY: the value is copied out at once; a concurrent update can only change its integers.
    let Some(value) = (unsafe { SKIFF_SERVICES.get(key) }).copied() else {
        return SOCK_ADDR_ALLOW;
    };
    if value.backend_count == 0 {
        if value.flags & SERVICE_FLAG_HAS_ENDPOINTS == 0 {
            // SAFETY: a plain helper call with an integer argument.
            unsafe { bpf_set_retval(-ECONNREFUSED) };
        }
        // Without ECONNREFUSED set, the kernel fails the call with EPERM: the "drop".
        return SOCK_ADDR_DENY;
    }
    let affinity = if value.flags & SERVICE_FLAG_AFFINITY != 0 {
        // SAFETY: plain helper calls on the kernel's own context.
        let (netns_cookie, now) =
            unsafe { (bpf_get_netns_cookie(ctx.as_ptr()), bpf_ktime_get_ns()) };
        let key = AffinityKey {
            netns_cookie,
            service_id: value.service_id,
            pad: 0,
        };
        Some((key, now))
    } else {
        None
    };
    let pinned = affinity.and_then(|(key, now)| pinned_backend(&key, &value, now));
    let Some(backend_id) = pinned.or_else(|| random_backend(&value)) else {
        return SOCK_ADDR_ALLOW;
    };
    // SAFETY: copied out at once, as above.
    let Some(backend) = (unsafe { SKIFF_BACKENDS.get(backend_id) }).copied() else {
        return SOCK_ADDR_ALLOW;
    };
    if let Some((key, now)) = affinity {
        let choice = AffinityValue {
            backend_id,
            pad: 0,
            last_used_ns: now,
        };
        // An LRU makes room by evicting; a failure only costs this client its pin.
        let _ = SKIFF_AFFINITY.insert(key, choice, 0);
    }
    // SAFETY: the context pointer is the kernel's socket-address context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev_key = RevNatKey { cookie, backend };
    // A full LRU evicts its oldest entry, so this cannot fail for lack of room; if it fails
    // anyway the connection still works, only its peer name shows the backend.
    let _ = SKIFF_REVNAT.insert(rev_key, service, 0);
    sa.user_ip4 = backend.addr;
    sa.user_port = u32::from(backend.port);
    SOCK_ADDR_ALLOW
}

/// A uniformly random backend of the frontend's slot list.
fn random_backend(value: &ServiceValue) -> Option<u32> {
    // SAFETY: a plain helper call.
    let slot = value.first_slot() + unsafe { bpf_get_prandom_u32() } % value.backend_count;
    let slot_key = SlotKey {
        service_id: value.service_id,
        slot,
    };
    // SAFETY: copied out at once, as in `translate`.
    (unsafe { SKIFF_SLOTS.get(slot_key) }).copied()
}

/// The backend this client was last sent to, if that was within the timeout and the backend
/// is still in the frontend's slot list.
fn pinned_backend(key: &AffinityKey, value: &ServiceValue, now: u64) -> Option<u32> {
    // SAFETY: copied out at once, as in `translate`.
    let last = (unsafe { SKIFF_AFFINITY.get(*key) }).copied()?;
    // Another CPU may have stamped a later time than our `now`: that is fresh, not expired.
    let idle = now.saturating_sub(last.last_used_ns);
    if idle >= u64::from(value.affinity_seconds) * NS_PER_SECOND {
        return None;
    }
    // SAFETY: copied out at once, as in `translate`.
    let lists = (unsafe { SKIFF_AFFINITY_MATCH.get(value.match_key(last.backend_id)) }).copied()?;
    (lists & value.match_bit() != 0).then_some(last.backend_id)
}

/// Shows the Service address in place of the backend this socket was sent to.
fn reverse(ctx: &SockAddrContext) {
    // SAFETY: as in `translate`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: as in `translate`.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = RevNatKey {
        cookie,
        backend: L4Addr {
            addr: sa.user_ip4,
            port: sa.user_port as u16,
            pad: 0,
        },
    };
    // SAFETY: copied out at once.
    if let Some(service) = (unsafe { SKIFF_REVNAT.get(key) }).copied() {
        sa.user_ip4 = service.addr;
        sa.user_port = u32::from(service.port);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
