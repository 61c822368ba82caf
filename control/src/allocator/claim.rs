//! One Service's allocation in progress, under the allocator's lock: its ClusterIP, its
//! nodePorts and its healthCheckNodePort, each taken (or checked, when requested) in turn.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::MutexGuard;

use serde_json::{Value, json};

use super::{Item, Reservation, ServiceAllocator, Used, invalid};
use crate::validation::FieldError;

/// What one `allocate` call holds while it works.
pub(super) struct Claim<'a> {
    pub(super) allocator: &'a ServiceAllocator,
    pub(super) used: MutexGuard<'a, Used>,
    pub(super) reservation: &'a mut Reservation,
    /// What the stored Service already holds (its own to keep).
    pub(super) old_items: &'a HashSet<Item>,
    pub(super) errors: Vec<FieldError>,
}

impl Claim<'_> {
    /// Releases the lock; returns every problem found.
    pub(super) fn finish(self) -> Vec<FieldError> {
        self.errors
    }

    /// Marks `item` used by this write.
    fn take(&mut self, item: Item) {
        self.used.items.insert(item);
        self.reservation.taken.push(item);
    }

    /// The ClusterIP: a free one, the requested one, or none (headless, ExternalName).
    pub(super) fn cluster_ip(&mut self, service: &mut Value, service_type: &str) {
        if service_type == "ExternalName" {
            for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if let Some(spec) = service["spec"].as_object_mut() {
                    spec.remove(field);
                }
            }
            return;
        }
        let range = self.allocator.ranges.cluster_ip;
        let requested = service["spec"]["clusterIP"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        match requested.as_str() {
            "None" => {}
            "" => match self.allocator.next_free_ip(&mut self.used) {
                Some(ip) => {
                    self.take(Item::Ip(ip));
                    service["spec"]["clusterIP"] = json!(ip.to_string());
                    service["spec"]["clusterIPs"] = json!([ip.to_string()]);
                }
                None => self.errors.push(invalid(
                    "spec.clusterIPs".into(),
                    json!(""),
                    format!("no free addresses left in the range {range}"),
                )),
            },
            text => match text.parse::<Ipv4Addr>() {
                Ok(ip) if !range.contains(&ip) => self.errors.push(invalid(
                    "spec.clusterIPs".into(),
                    json!([text]),
                    format!("failed to allocate IP {text}: the provided IP ({text}) is not in the valid range. The range of valid IPs is {range}"),
                )),
                Ok(ip) if self.old_items.contains(&Item::Ip(ip)) => {}
                Ok(ip) if self.used.items.contains(&Item::Ip(ip)) => self.errors.push(invalid(
                    "spec.clusterIPs".into(),
                    json!([text]),
                    format!("failed to allocate IP {text}: provided IP is already allocated"),
                )),
                Ok(ip) => {
                    self.take(Item::Ip(ip));
                    service["spec"]["clusterIPs"] = json!([text]);
                }
                Err(_) => {} // validation reports the malformed address
            },
        }
    }

    /// A nodePort per port of NodePort and LoadBalancer Services; none for the others.
    pub(super) fn node_ports(&mut self, service: &mut Value, service_type: &str) {
        let wants_node_ports = matches!(service_type, "NodePort" | "LoadBalancer")
            && service["spec"]["allocateLoadBalancerNodePorts"].as_bool() != Some(false)
            || service_type == "NodePort";
        let mut own_ports: HashSet<u16> = HashSet::new();
        let Some(ports) = service["spec"]["ports"].as_array_mut() else {
            return;
        };
        for (i, port) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            match port["nodePort"].as_u64().filter(|p| *p != 0) {
                None => match self.allocator.next_free_port(&mut self.used) {
                    Some(p) => {
                        self.take(Item::Port(p));
                        own_ports.insert(p);
                        port["nodePort"] = json!(p);
                    }
                    None => {
                        self.errors.push(invalid(
                            field,
                            json!(0),
                            "no free node ports left".into(),
                        ));
                    }
                },
                Some(p) => self.requested_node_port(field, p, &mut own_ports),
            }
        }
    }

    /// Checks and takes a nodePort the Service asks for; ports it holds (or repeats) stay.
    fn requested_node_port(&mut self, field: String, p: u64, own_ports: &mut HashSet<u16>) {
        let allocator = self.allocator;
        let range = &allocator.ranges.node_ports;
        let p16 = u16::try_from(p).unwrap_or(0);
        if !range.contains(&p16) {
            self.errors.push(invalid(
                field,
                json!(p),
                format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    range.start(),
                    range.end()
                ),
            ));
        } else if own_ports.contains(&p16) || self.old_items.contains(&Item::Port(p16)) {
            own_ports.insert(p16);
        } else if self.used.items.contains(&Item::Port(p16)) {
            self.errors.push(invalid(
                field,
                json!(p),
                "provided port is already allocated".into(),
            ));
        } else {
            self.take(Item::Port(p16));
            own_ports.insert(p16);
        }
    }

    /// healthCheckNodePort, as Kubernetes: LoadBalancer Services with externalTrafficPolicy
    /// Local.
    pub(super) fn health_check_node_port(&mut self, service: &mut Value, service_type: &str) {
        let needs_health_check = service_type == "LoadBalancer"
            && service["spec"]["externalTrafficPolicy"].as_str() == Some("Local");
        if !needs_health_check {
            if let Some(spec) = service["spec"].as_object_mut() {
                spec.remove("healthCheckNodePort");
            }
            return;
        }
        match service["spec"]["healthCheckNodePort"]
            .as_u64()
            .filter(|p| *p != 0)
        {
            Some(p) => {
                let p16 = u16::try_from(p).unwrap_or(0);
                if self.old_items.contains(&Item::Port(p16)) {
                    return;
                }
                if !self.allocator.ranges.node_ports.contains(&p16)
                    || self.used.items.contains(&Item::Port(p16))
                {
                    self.errors.push(invalid(
                        "spec.healthCheckNodePort".into(),
                        json!(p),
                        "provided port is not in the valid range or is already allocated".into(),
                    ));
                } else {
                    self.take(Item::Port(p16));
                }
            }
            None => match self.allocator.next_free_port(&mut self.used) {
                Some(p) => {
                    self.take(Item::Port(p));
                    service["spec"]["healthCheckNodePort"] = json!(p);
                }
                None => self.errors.push(invalid(
                    "spec.healthCheckNodePort".into(),
                    json!(0),
                    "no free node ports left".into(),
                )),
            },
        }
    }
}
