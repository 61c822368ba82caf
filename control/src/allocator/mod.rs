//! Service address allocation: ClusterIPs from the service range, nodePorts from the node-port
//! range, healthCheckNodePorts for `externalTrafficPolicy: Local` load balancers.
//!
//! Allocation happens inside the apiserver's write of the Service, not in a controller, so a
//! Service is never stored without its addresses and two Services never get the same one. An
//! allocation is a [`Reservation`]: taken before the store write, kept by `commit()` after it
//! succeeds, and given back by its Drop when the write fails or is a dry run — so a failed
//! create leaks nothing. The used set is rebuilt from the stored Services at start.

mod claim;
mod ranges;
mod reservation;

pub use ranges::ServiceRanges;
pub use reservation::Reservation;

use claim::Claim;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::validation::{FieldError, FieldErrorKind};

/// One allocated thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Item {
    /// A ClusterIP.
    Ip(Ipv4Addr),
    /// A nodePort (also used for healthCheckNodePorts).
    Port(u16),
}

#[derive(Debug, Default)]
struct Used {
    items: HashSet<Item>,
    next_ip: u32,
    next_port: u16,
}

/// The allocator; share it with `Arc`.
#[derive(Debug)]
pub struct ServiceAllocator {
    ranges: ServiceRanges,
    used: Mutex<Used>,
}

fn invalid(field: String, value: Value, detail: String) -> FieldError {
    FieldError {
        kind: FieldErrorKind::Invalid,
        field,
        value: Some(value),
        detail,
    }
}

impl ServiceAllocator {
    /// An allocator over `ranges` with nothing used.
    pub fn new(ranges: ServiceRanges) -> Arc<Self> {
        Arc::new(ServiceAllocator {
            ranges,
            used: Mutex::new(Used::default()),
        })
    }

    /// The ranges allocated from.
    pub fn ranges(&self) -> &ServiceRanges {
        &self.ranges
    }

    /// Marks everything stored Services hold as used.
    pub fn load<'a>(&self, services: impl IntoIterator<Item = &'a Value>) {
        let mut used = self.used.lock().expect("allocator lock");
        for service in services {
            used.items.extend(items_of(service));
        }
    }

    /// Gives back everything `service` held (after it was deleted).
    pub fn release_all(&self, service: &Value) {
        let mut used = self.used.lock().expect("allocator lock");
        for item in items_of(service) {
            used.items.remove(&item);
        }
    }

    /// Fills in the ClusterIP(s), nodePorts and healthCheckNodePort `service` needs, checking
    /// requested ones; `old` is the stored Service on update (what it holds stays its own).
    pub fn allocate(
        self: &Arc<Self>,
        service: &mut Value,
        old: Option<&Value>,
    ) -> Result<Reservation, Vec<FieldError>> {
        let mut reservation = Reservation::new(Arc::clone(self));
        let old_items: HashSet<Item> = old.map(items_of).unwrap_or_default().into_iter().collect();
        let service_type = service["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_owned();
        let mut claim = Claim {
            allocator: self,
            used: self.used.lock().expect("allocator lock"),
            reservation: &mut reservation,
            old_items: &old_items,
            errors: Vec::new(),
        };
        claim.cluster_ip(service, &service_type);
        claim.node_ports(service, &service_type);
        claim.health_check_node_port(service, &service_type);
        // The lock goes before the reservation can: its Drop takes the lock to give back.
        let errors = claim.finish();
        if !errors.is_empty() {
            return Err(errors); // the reservation's Drop gives back what was taken
        }
        // What the old Service held and the new one does not: freed once the write commits.
        let kept: HashSet<Item> = items_of(service).into_iter().collect();
        reservation.freed = old_items
            .into_iter()
            .filter(|i| !kept.contains(i))
            .collect();
        Ok(reservation)
    }

    fn next_free_ip(&self, used: &mut Used) -> Option<Ipv4Addr> {
        let net = self.ranges.cluster_ip;
        let base = u32::from(net.network());
        // Skip the network address and the first address (the `kubernetes` Service's).
        let size = 1u64 << (32 - u32::from(net.prefix_len()));
        let usable = size.saturating_sub(3);
        for step in 0..usable {
            let offset = 2 + ((u64::from(used.next_ip) + step) % usable) as u32;
            let ip = Ipv4Addr::from(base + offset);
            if !used.items.contains(&Item::Ip(ip)) {
                used.next_ip = used.next_ip.wrapping_add(step as u32 + 1);
                return Some(ip);
            }
        }
        None
    }

    fn next_free_port(&self, used: &mut Used) -> Option<u16> {
        let (start, end) = (
            *self.ranges.node_ports.start(),
            *self.ranges.node_ports.end(),
        );
        let span = u32::from(end - start) + 1;
        for step in 0..span {
            let port = start + ((u32::from(used.next_port) + step) % span) as u16;
            if !used.items.contains(&Item::Port(port)) {
                used.next_port = used.next_port.wrapping_add(step as u16 + 1);
                return Some(port);
            }
        }
        None
    }

    /// The `kubernetes` Service's address: the first of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ranges.cluster_ip.network()) + 1)
    }

    pub(crate) fn give_back(&self, items: &[Item]) {
        let mut used = self.used.lock().expect("allocator lock");
        for item in items {
            used.items.remove(item);
        }
    }

    /// Marks `items` used (for a Service written outside the API, like `kubernetes`).
    pub fn mark(&self, items: &[Item]) {
        self.used
            .lock()
            .expect("allocator lock")
            .items
            .extend(items.iter().copied());
    }

    /// Is `item` in use?
    pub fn is_used(&self, item: Item) -> bool {
        self.used
            .lock()
            .expect("allocator lock")
            .items
            .contains(&item)
    }
}

/// Everything a stored Service holds.
pub fn items_of(service: &Value) -> Vec<Item> {
    let spec = &service["spec"];
    let mut items = Vec::new();
    let ips = spec["clusterIPs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![spec["clusterIP"].clone()]);
    items.extend(
        ips.iter()
            .filter_map(|ip| ip.as_str()?.parse().ok())
            .map(Item::Ip),
    );
    if let Some(ports) = spec["ports"].as_array() {
        items.extend(
            ports
                .iter()
                .filter_map(|p| p["nodePort"].as_u64())
                .filter(|p| *p != 0)
                .filter_map(|p| u16::try_from(p).ok())
                .map(Item::Port),
        );
    }
    if let Some(p) = spec["healthCheckNodePort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    {
        items.push(Item::Port(p));
    }
    items.sort_by_key(|i| format!("{i:?}"));
    items.dedup();
    items
}

#[cfg(test)]
mod tests;
