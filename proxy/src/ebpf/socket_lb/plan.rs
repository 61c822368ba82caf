//! From a [`DesiredState`] to the map contents it needs, and from two map contents to the
//! ordered writes that turn one into the other.
//!
//! Frontends. Every process the programs see is local (a Pod on this node, or the node), so
//! each Service port gets a frontend for each address local traffic may use: its cluster IPs
//! and, for traffic that iptables sends through the `SKIFF-EXT-*` chain, the external IPs, the
//! LB ingress IPs, and the node port on every node IP and 127.0.0.1 (NodePorts answer on
//! localhost). Cluster IPs lead to `internal_endpoints`. External frontends lead to
//! `external_endpoints` — except under `externalTrafficPolicy: Local`, where kube-proxy (and
//! render.rs) short-circuit Pod and node traffic to the internal endpoints: the client IP that
//! policy preserves is a local one anyway. An LB IP guarded by `loadBalancerSourceRanges` is
//! checked against every source local traffic can have (the node IPs and the cluster CIDR),
//! because at `connect()` an unbound socket has no source address yet: if the ranges hold all
//! of them, it is a plain frontend; if none, it drops (or refuses, without endpoints), as
//! iptables' `SKIFF-FW-*` chain would; if some, it gets no frontend and the traffic takes the
//! packet path through the load balancer, which applies the ranges itself. When two Services
//! claim one frontend, a cluster IP beats a node port beats an external IP beats an LB IP (an
//! externalIP cannot hijack a ClusterIP), then the first Service in name order wins.
//!
//! Ids are the subtle part. A Service port keeps its id for as long as any of its frontends is
//! in the maps — all its frontends share it, and so does its affinity — and a backend (address,
//! port) keeps its id for as long as it is in the backends map, so a restarted agent that adopts
//! pinned maps computes the *same* entries and writes nothing, and an endpoint change rewrites
//! only its slots. New ids take the lowest free number.
//!
//! Order matters because the kernel reads the maps while we write them: new backends, slots
//! and affinity matches go in before a frontend's count grows to reach them, and a count
//! shrinks before the slots, matches and backends beyond it are deleted. A connect in between
//! goes where the old or the new state sends it (or, while slots are rewritten, to a backend of
//! either), never to a slot without a backend; `fault_tests` checks this at every write.
//!
//! A Service's client pins are cleared once none of its frontends has affinity on (switched off,
//! or the Service gone). Pins that survive anyway (a sync cut short before the clear) are
//! harmless: the kernel honours one only while the flag is on, within the timeout, and to a
//! backend the match map still lists for that Service and slot list.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::iter;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use skiff_ebpf_common::{
    AFFINITY_MATCH_EXTERNAL, AFFINITY_MATCH_INTERNAL, AffinityMatchKey, EXTERNAL_SLOT_BASE,
    IPPROTO_TCP, IPPROTO_UDP, L4Addr, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_EXTERNAL_SLOTS,
    SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey, ServiceValue, SlotKey,
};

use super::incremental::{SocketLbApplied, plan_changes};
use super::maps::{SocketLbState, SocketLbWrite};
use crate::ebpf::plane::{Change, Planner};
use crate::model::{
    DesiredService, DesiredState, EndpointAddr, NodeFacts, Protocol, ServicePortName,
};

/// What kind of address a frontend is; the order is the priority when two Services claim one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancerIp,
    /// An LB IP whose source ranges hold no local source: every connect is dropped.
    ClosedLoadBalancerIp,
}

/// A Service port's frontends, each with its kind.
type Frontends = Vec<(ServiceKey, Kind)>;

/// What [`plan_indexed`] needs to know of the held backends beyond the map: their ids by
/// address (to reuse), and the lowest id that may be free (every id below it is held).
#[derive(Clone, Debug, Default)]
pub struct BackendIndex {
    by_addr: HashMap<L4Addr, u32>,
    first_free: u32,
}

impl BackendIndex {
    /// Indexes `state`'s backends.
    pub fn of(state: &SocketLbState) -> Self {
        let mut index = BackendIndex {
            by_addr: state.backends.iter().map(|(id, a)| (*a, *id)).collect(),
            first_free: 1,
        };
        index.settle(&state.backends);
        index
    }

    /// `id` (at `addr`) left the held backends.
    pub fn forget(&mut self, id: u32, addr: &L4Addr) {
        self.by_addr.remove(addr);
        self.first_free = self.first_free.min(id);
    }

    /// `id` (at `addr`) joined the held backends; call [`BackendIndex::settle`] after the last.
    pub fn learn(&mut self, id: u32, addr: L4Addr) {
        self.by_addr.insert(addr, id);
    }

    /// Moves the first-free mark past the ids `backends` holds.
    pub fn settle(&mut self, backends: &BTreeMap<u32, L4Addr>) {
        for id in backends.range(self.first_free..).map(|(id, _)| *id) {
            if id != self.first_free {
                break;
            }
            self.first_free += 1;
        }
    }
}

/// [`SocketLbPlanner::plan`] with `held`'s backends already indexed (`BackendIndex::of(held)`), which an
/// incremental sync keeps between syncs instead of rebuilding from 100,000 entries.
pub fn plan_indexed(
    desired: &DesiredState,
    held: &SocketLbState,
    held_backends: &BackendIndex,
) -> SocketLbState {
    let all: Vec<(&ServicePortName, &DesiredService, Frontends)> = desired
        .services
        .iter()
        .map(|(name, service)| (name, service, frontends(name, service, &desired.node)))
        .collect();
    let mut claims: BTreeMap<ServiceKey, (Kind, &ServicePortName)> = BTreeMap::new();
    for (name, _, frontends) in &all {
        for (key, kind) in frontends {
            let claim = claims.entry(*key).or_insert((*kind, name));
            if *kind < claim.0 {
                *claim = (*kind, name);
            }
        }
    }
    let mut ids = Ids::new(held, held_backends);
    let mut want = SocketLbState::default();
    for (name, service, frontends) in all {
        let mine: Frontends = frontends
            .into_iter()
            .filter(|(key, _)| claims.get(key).is_some_and(|(_, owner)| *owner == name))
            .collect();
        if !mine.is_empty() {
            add_service(&mut want, &mut ids, service, &mine);
        }
    }
    want
}

/// How many frontends the Services of `desired` claim, counting a contested one once per
/// claimant: more than the frontends [`SocketLbPlanner::plan`] writes when two Services claim one address.
pub fn frontend_count(desired: &DesiredState) -> usize {
    desired
        .services
        .iter()
        .map(|(name, service)| frontends(name, service, &desired.node).len())
        .sum()
}

/// Every frontend of one Service port, before collisions are settled.
fn frontends(name: &ServicePortName, service: &DesiredService, node: &NodeFacts) -> Frontends {
    let Some(protocol) = ip_protocol(name.protocol) else {
        return Vec::new();
    };
    let port = &service.port;
    let key = |ip: &Ipv4Addr, number: u16| ServiceKey::new(ip.octets(), number, protocol);
    let on_port = |ips: &[Ipv4Addr], kind: Kind| {
        ips.iter()
            .map(move |ip| (key(ip, port.port), kind))
            .collect::<Vec<_>>()
    };
    let mut out = on_port(&port.cluster_ips, Kind::ClusterIp);
    if let Some(node_port) = port.node_port {
        let local = node.ips.iter().chain(iter::once(&Ipv4Addr::LOCALHOST));
        out.extend(local.map(|ip| (key(ip, node_port), Kind::NodePort)));
    }
    out.extend(on_port(&port.external_ips, Kind::ExternalIp));
    let lb_kind = match local_sources_allowed(&port.load_balancer_source_ranges, node) {
        Some(true) => Some(Kind::LoadBalancerIp),
        Some(false) => Some(Kind::ClosedLoadBalancerIp),
        None => None,
    };
    if let Some(kind) = lb_kind {
        out.extend(on_port(&port.load_balancer_ips, kind));
    }
    out
}

/// Do `ranges` let local traffic in: all of it (`Some(true)`), none (`Some(false)`), or it
/// depends on the source address, which a socket may not have yet (`None`)?
fn local_sources_allowed(ranges: &[Ipv4Net], node: &NodeFacts) -> Option<bool> {
    if ranges.is_empty() {
        return Some(true);
    }
    let sources: Vec<Ipv4Net> = node
        .ips
        .iter()
        .map(|ip| Ipv4Net::from(*ip))
        .chain(node.cluster_cidr)
        .collect();
    let inside = |net: &Ipv4Net| ranges.iter().any(|r| r.contains(net));
    let overlaps = |net: &Ipv4Net| {
        ranges
            .iter()
            .any(|r| r.contains(&net.network()) || net.contains(&r.network()))
    };
    if node.cluster_cidr.is_some() && sources.iter().all(inside) {
        Some(true)
    } else if node.cluster_cidr.is_some() && !sources.iter().any(overlaps) {
        Some(false)
    } else {
        None
    }
}

/// Adds one Service port's frontends, slots, backends and affinity matches to `want`.
fn add_service(
    want: &mut SocketLbState,
    ids: &mut Ids<'_>,
    service: &DesiredService,
    frontends: &[(ServiceKey, Kind)],
) {
    let port = &service.port;
    let internal = &service.internal_endpoints;
    let external = if port.external_policy_local {
        internal
    } else {
        &service.external_endpoints
    };
    // External frontends read their own slot list only when it differs from the internal one.
    let separate = external != internal;
    let reads_external = |kind: Kind| separate && kind != Kind::ClusterIp;
    let open = |kind: &Kind| *kind != Kind::ClosedLoadBalancerIp;
    let uses_internal = frontends
        .iter()
        .any(|(_, kind)| open(kind) && !reads_external(*kind));
    let uses_external = frontends
        .iter()
        .any(|(_, kind)| open(kind) && reads_external(*kind));

    let keys: Vec<ServiceKey> = frontends.iter().map(|(key, _)| *key).collect();
    let service_id = ids.service(&keys);
    let mut flags = 0;
    if service.has_endpoints {
        flags |= SERVICE_FLAG_HAS_ENDPOINTS;
    }
    if port.affinity_seconds.is_some() {
        flags |= SERVICE_FLAG_AFFINITY;
    }
    for (key, kind) in frontends {
        if *kind == Kind::ClosedLoadBalancerIp {
            let closed = ServiceValue {
                service_id,
                backend_count: 0,
                flags: flags & SERVICE_FLAG_HAS_ENDPOINTS,
                affinity_seconds: 0,
            };
            want.services.insert(*key, closed);
            continue;
        }
        let (list, extra) = if reads_external(*kind) {
            (external, SERVICE_FLAG_EXTERNAL_SLOTS)
        } else {
            (internal, 0)
        };
        let value = ServiceValue {
            service_id,
            backend_count: list.len() as u32,
            flags: flags | extra,
            affinity_seconds: port.affinity_seconds.unwrap_or(0),
        };
        want.services.insert(*key, value);
    }
    let lists = [
        (uses_internal, internal, 0, AFFINITY_MATCH_INTERNAL),
        (
            uses_external,
            external,
            EXTERNAL_SLOT_BASE,
            AFFINITY_MATCH_EXTERNAL,
        ),
    ];
    for (used, list, base, bit) in lists {
        if !used {
            continue;
        }
        for (slot, ep) in list.iter().enumerate() {
            let backend_id = add_backend(want, ids, ep);
            let slot = base + slot as u32;
            want.slots.insert(SlotKey { service_id, slot }, backend_id);
            if port.affinity_seconds.is_some() {
                let key = AffinityMatchKey {
                    service_id,
                    backend_id,
                };
                *want.affinity_match.entry(key).or_default() |= bit;
            }
        }
    }
}

fn add_backend(want: &mut SocketLbState, ids: &mut Ids<'_>, ep: &EndpointAddr) -> u32 {
    let addr = L4Addr::new(ep.ip.octets(), ep.port);
    let backend_id = ids.backend(addr);
    want.backends.insert(backend_id, addr);
    backend_id
}

/// The socket hooks see TCP and UDP; SCTP Services are left to the kernel (not translated).
pub(crate) fn ip_protocol(protocol: Protocol) -> Option<u8> {
    match protocol {
        Protocol::Tcp => Some(IPPROTO_TCP),
        Protocol::Udp => Some(IPPROTO_UDP),
        Protocol::Sctp => None,
    }
}

/// Id allocation that prefers what the maps already hold.
struct Ids<'a> {
    held: &'a SocketLbState,
    held_backends: &'a BackendIndex,
    /// Backends this plan gave a new id.
    new_backends: HashMap<L4Addr, u32>,
    /// The ids `held`'s frontends use; collected on the first new Service.
    held_services: Option<BTreeSet<u32>>,
    services_taken: BTreeSet<u32>,
    backends_taken: HashSet<u32>,
    next_service: u32,
    next_backend: u32,
}

impl<'a> Ids<'a> {
    fn new(held: &'a SocketLbState, held_backends: &'a BackendIndex) -> Self {
        Ids {
            held,
            held_backends,
            new_backends: HashMap::new(),
            held_services: None,
            services_taken: BTreeSet::new(),
            backends_taken: HashSet::new(),
            next_service: 1,
            next_backend: held_backends.first_free.max(1),
        }
    }

    fn service(&mut self, keys: &[ServiceKey]) -> u32 {
        let reuse = keys
            .iter()
            .filter_map(|k| self.held.services.get(k))
            .map(|v| v.service_id)
            .find(|id| !self.services_taken.contains(id));
        let id = reuse.unwrap_or_else(|| {
            let held = self.held;
            let held_ids = self
                .held_services
                .get_or_insert_with(|| held.services.values().map(|v| v.service_id).collect());
            while held_ids.contains(&self.next_service)
                || self.services_taken.contains(&self.next_service)
            {
                self.next_service += 1;
            }
            self.next_service
        });
        self.services_taken.insert(id);
        id
    }

    fn backend(&mut self, addr: L4Addr) -> u32 {
        let known = self.held_backends.by_addr.get(&addr);
        if let Some(id) = known.or(self.new_backends.get(&addr)) {
            self.backends_taken.insert(*id);
            return *id;
        }
        // Walk the held ids in order from the last one given (or the first that may be free):
        // dense ids make lookups one by one the slow way to find a gap.
        let mut held = self
            .held
            .backends
            .range(self.next_backend..)
            .map(|(id, _)| *id);
        let mut next_held = held.next();
        loop {
            while next_held.is_some_and(|id| id < self.next_backend) {
                next_held = held.next();
            }
            if next_held == Some(self.next_backend)
                || self.backends_taken.contains(&self.next_backend)
            {
                self.next_backend += 1;
            } else {
                break;
            }
        }
        let id = self.next_backend;
        self.backends_taken.insert(id);
        self.new_backends.insert(addr, id);
        id
    }
}

/// Plans the socket load balancer's maps.
#[derive(Debug)]
pub struct SocketLbPlanner;

impl Planner for SocketLbPlanner {
    type State = SocketLbState;
    type Applied = SocketLbApplied;

    /// The map contents `desired` needs, reusing the ids `held` already gives.
    fn plan(desired: &DesiredState, held: &SocketLbState) -> SocketLbState {
        plan_indexed(desired, held, &BackendIndex::of(held))
    }

    /// The writes that turn `held` into `want`, in an order the kernel may read at any point of.
    fn diff(held: &SocketLbState, want: &SocketLbState) -> Vec<SocketLbWrite> {
        let mut writes = Vec::new();
        puts(
            &mut writes,
            &held.backends,
            &want.backends,
            SocketLbWrite::PutBackend,
        );
        puts(
            &mut writes,
            &held.slots,
            &want.slots,
            SocketLbWrite::PutSlot,
        );
        let (old, new) = (&held.affinity_match, &want.affinity_match);
        puts(&mut writes, old, new, SocketLbWrite::PutAffinityMatch);
        puts(
            &mut writes,
            &held.services,
            &want.services,
            SocketLbWrite::PutService,
        );
        deletes(
            &mut writes,
            &held.services,
            &want.services,
            SocketLbWrite::DeleteService,
        );
        let pinned = |state: &SocketLbState| -> BTreeSet<u32> {
            state
                .services
                .values()
                .filter(|v| v.flags & SERVICE_FLAG_AFFINITY != 0)
                .map(|v| v.service_id)
                .collect()
        };
        let (had, has) = (pinned(held), pinned(want));
        writes.extend(
            had.difference(&has)
                .map(|id| SocketLbWrite::ClearAffinity(*id)),
        );
        deletes(
            &mut writes,
            &held.slots,
            &want.slots,
            SocketLbWrite::DeleteSlot,
        );
        deletes(&mut writes, old, new, SocketLbWrite::DeleteAffinityMatch);
        deletes(
            &mut writes,
            &held.backends,
            &want.backends,
            SocketLbWrite::DeleteBackend,
        );
        writes
    }

    fn applied_after_full(desired: &DesiredState, now: &SocketLbState) -> SocketLbApplied {
        SocketLbApplied::after_full(desired, now)
    }

    fn plan_changes(
        applied: &mut SocketLbApplied,
        desired: &DesiredState,
        held: &mut SocketLbState,
    ) -> Option<Change<SocketLbState>> {
        plan_changes(applied, desired, held)
    }
}

/// Writes for the entries of `want` that `held` lacks or holds otherwise.
fn puts<K: Ord + Copy, V: PartialEq + Copy>(
    writes: &mut Vec<SocketLbWrite>,
    held: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    put: fn(K, V) -> SocketLbWrite,
) {
    for (key, value) in want {
        if held.get(key) != Some(value) {
            writes.push(put(*key, *value));
        }
    }
}

/// Deletes for the entries of `held` that `want` lacks.
fn deletes<K: Ord + Copy, V>(
    writes: &mut Vec<SocketLbWrite>,
    held: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
    delete: fn(K) -> SocketLbWrite,
) {
    writes.extend(
        held.keys()
            .filter(|key| !want.contains_key(key))
            .map(|key| delete(*key)),
    );
}
