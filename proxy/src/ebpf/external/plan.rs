//! From a [`DesiredState`] to what the external-traffic maps must hold, and the writes that
//! get there.
//!
//! Frontends are every node address × nodePort, and every externalIP and LoadBalancer ingress
//! IP × port, each leading to the Service's *external* endpoints (only local ones under
//! `externalTrafficPolicy: Local`, which also turns source NAT off). Ids are kept from what
//! the maps hold, as in [`crate::ebpf::socket_lb::plan`], so a restarted agent writes nothing
//! and an endpoint change rewrites only its slots. LoadBalancer IPs of a Service with
//! `loadBalancerSourceRanges` admit only those sources (as the iptables `SKIFF-FW-*` chain
//! does; node ports and externalIPs are not limited). A frontend two Services claim belongs to
//! the first in name order, so ids do not swap between them from one sync to the next. Writes
//! are ordered so the kernel never reaches a slot that is not there yet.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ipnet::Ipv4Net;
use skiff_ebpf_common::nodeport::{EXT_FLAG_SNAT, EXT_FLAG_SOURCE_RANGES, EXT_SLOT_LOCAL, ExtSlot};
use skiff_ebpf_common::{
    IPPROTO_TCP, IPPROTO_UDP, L4Addr, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_HAS_ENDPOINTS,
    ServiceKey, ServiceValue, SlotKey,
};

use crate::ebpf::incremental::{AppliedServices, ServiceEntries, plan_changed};
use crate::ebpf::plane::{Change, Planner};
use crate::model::{DesiredService, DesiredState, NodeFacts, Protocol, ServicePortName};

/// Everything the external-traffic maps hold (the NAT table aside: the kernel fills it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalState {
    /// `SKIFF_EXT_SERVICES`.
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `SKIFF_EXT_SLOTS`.
    pub slots: BTreeMap<SlotKey, ExtSlot>,
    /// `SKIFF_EXT_SOURCES`: (external Service id, allowed source range).
    pub sources: BTreeSet<(u32, Ipv4Net)>,
}

/// One entry written or deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalWrite {
    /// A frontend written.
    PutService(ServiceKey, ServiceValue),
    /// A frontend deleted.
    DeleteService(ServiceKey),
    /// A slot written.
    PutSlot(SlotKey, ExtSlot),
    /// A slot deleted.
    DeleteSlot(SlotKey),
    /// A source range admitted.
    PutSource(u32, Ipv4Net),
    /// A source range deleted.
    DeleteSource(u32, Ipv4Net),
}

/// A Service port's external frontends: every one, and those that are LB IPs.
struct Frontends {
    all: Vec<ServiceKey>,
    load_balancer: Vec<ServiceKey>,
}

/// The frontends of one Service port on `node` (none for SCTP, which the programs leave alone).
fn frontends(name: &ServicePortName, service: &DesiredService, node: &NodeFacts) -> Frontends {
    let protocol = match name.protocol {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => {
            return Frontends {
                all: Vec::new(),
                load_balancer: Vec::new(),
            };
        }
    };
    let port = &service.port;
    let mut all = Vec::new();
    if let Some(node_port) = port.node_port {
        all.extend(
            node.ips
                .iter()
                .map(|ip| ServiceKey::new(ip.octets(), node_port, protocol)),
        );
    }
    all.extend(
        port.external_ips
            .iter()
            .map(|ip| ServiceKey::new(ip.octets(), port.port, protocol)),
    );
    let load_balancer: Vec<ServiceKey> = port
        .load_balancer_ips
        .iter()
        .map(|ip| ServiceKey::new(ip.octets(), port.port, protocol))
        .collect();
    all.extend(&load_balancer);
    Frontends { all, load_balancer }
}

/// How many frontends the Services of `desired` claim, counting one claimed twice twice: more
/// than [`ExternalPlanner::plan`] writes when two Services claim one address and port.
pub fn external_frontend_count(desired: &DesiredState) -> usize {
    desired
        .services
        .iter()
        .map(|(name, service)| frontends(name, service, &desired.node).all.len())
        .sum()
}

/// Plans the external-traffic maps.
#[derive(Debug)]
pub struct ExternalPlanner;

impl Planner for ExternalPlanner {
    type State = ExternalState;
    type Applied = AppliedServices;

    /// The external-traffic map contents `desired` needs, reusing the ids `held` gives.
    fn plan(desired: &DesiredState, held: &ExternalState) -> ExternalState {
        let mut want = ExternalState::default();
        let mut taken = BTreeSet::new();
        // Collected when the first Service needs a new id.
        let mut held_ids: Option<BTreeSet<u32>> = None;
        let mut next = 1;
        let all: Vec<(&ServicePortName, &DesiredService, Frontends)> = desired
            .services
            .iter()
            .map(|(name, service)| (name, service, frontends(name, service, &desired.node)))
            .collect();
        // A frontend two Services claim is the first one's, in name order, sync after sync.
        let mut owners: HashMap<ServiceKey, &ServicePortName> = HashMap::new();
        for (name, _, frontends) in &all {
            for key in &frontends.all {
                owners.entry(*key).or_insert(name);
            }
        }
        for (name, service, frontends) in all {
            let port = &service.port;
            let mine = |key: &ServiceKey| owners.get(key) == Some(&name);
            let keys: Vec<ServiceKey> = frontends.all.into_iter().filter(mine).collect();
            let lb_keys: Vec<ServiceKey> =
                frontends.load_balancer.into_iter().filter(mine).collect();
            if keys.is_empty() {
                continue;
            }
            let reuse = keys
                .iter()
                .filter_map(|k| held.services.get(k))
                .map(|v| v.service_id)
                .find(|id| !taken.contains(id));
            let service_id = reuse.unwrap_or_else(|| {
                let held_ids = held_ids
                    .get_or_insert_with(|| held.services.values().map(|v| v.service_id).collect());
                while held_ids.contains(&next) || taken.contains(&next) {
                    next += 1;
                }
                next
            });
            taken.insert(service_id);
            let mut flags = 0;
            if service.has_endpoints {
                flags |= SERVICE_FLAG_HAS_ENDPOINTS;
            }
            if !port.external_policy_local {
                flags |= EXT_FLAG_SNAT;
            }
            if port.affinity_seconds.is_some() {
                flags |= SERVICE_FLAG_AFFINITY;
            }
            let value = ServiceValue {
                service_id,
                backend_count: service.external_endpoints.len() as u32,
                flags,
                affinity_seconds: port.affinity_seconds.unwrap_or(0),
            };
            let ranged = !port.load_balancer_source_ranges.is_empty();
            for key in keys {
                let mut value = value;
                if ranged && lb_keys.contains(&key) {
                    value.flags |= EXT_FLAG_SOURCE_RANGES;
                }
                want.services.insert(key, value);
            }
            if ranged && !lb_keys.is_empty() {
                for range in &port.load_balancer_source_ranges {
                    want.sources.insert((service_id, range.trunc()));
                }
            }
            for (slot, ep) in service.external_endpoints.iter().enumerate() {
                want.slots.insert(
                    SlotKey {
                        service_id,
                        slot: slot as u32,
                    },
                    ExtSlot {
                        backend: L4Addr::new(ep.ip.octets(), ep.port),
                        flags: if ep.local { EXT_SLOT_LOCAL } else { 0 },
                        pad: 0,
                    },
                );
            }
        }
        want
    }

    /// The writes that turn `held` into `want`: slots and source ranges before the frontends that
    /// reach them, frontends that shrink or lose their ranges before the slots and ranges go.
    fn diff(held: &ExternalState, want: &ExternalState) -> Vec<ExternalWrite> {
        let mut writes = Vec::new();
        for (id, range) in want.sources.difference(&held.sources) {
            writes.push(ExternalWrite::PutSource(*id, *range));
        }
        for (key, slot) in &want.slots {
            if held.slots.get(key) != Some(slot) {
                writes.push(ExternalWrite::PutSlot(*key, *slot));
            }
        }
        for (key, value) in &want.services {
            if held.services.get(key) != Some(value) {
                writes.push(ExternalWrite::PutService(*key, *value));
            }
        }
        for key in held.services.keys() {
            if !want.services.contains_key(key) {
                writes.push(ExternalWrite::DeleteService(*key));
            }
        }
        for key in held.slots.keys() {
            if !want.slots.contains_key(key) {
                writes.push(ExternalWrite::DeleteSlot(*key));
            }
        }
        for (id, range) in held.sources.difference(&want.sources) {
            writes.push(ExternalWrite::DeleteSource(*id, *range));
        }
        writes
    }

    fn applied_after_full(desired: &DesiredState, now: &ExternalState) -> AppliedServices {
        let contested = external_frontend_count(desired) != now.services.len();
        AppliedServices::after_full(desired, contested)
    }

    fn plan_changes(
        applied: &mut AppliedServices,
        desired: &DesiredState,
        held: &mut ExternalState,
    ) -> Option<Change<ExternalState>> {
        let (changed, change) = plan_changed(
            applied,
            desired,
            held,
            ExternalPlanner::plan,
            external_frontend_count,
        )?;
        held.replace(&change.before, &change.after);
        changed.record(applied, desired);
        Some(change)
    }
}
