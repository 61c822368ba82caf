//! Stale UDP conntrack entries: which to delete after a sync, and the door that deletes them.
//!
//! UDP has no connection to reset, so a conntrack entry made while a Service had no endpoints
//! (or pointing at an endpoint that is gone) keeps steering a client's datagrams into nothing
//! until it times out — the DNS black-hole users report most about kube-proxy. After every
//! successful sync the proxy compares each changed Service's previous state with its new one
//! (never the whole [`DesiredState`], which at 10k Services costs more than the sync) and deletes
//! (a) entries DNATed to a UDP endpoint that no longer serves the Service, and (b) entries for a
//! UDP Service's addresses when it goes from no endpoints to some. The eBPF data plane has no
//! conntrack entries to delete; it ends the connected sockets of both cases instead, found by
//! comparing its maps (`ebpf::sockterm::departed`).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::model::{DesiredService, DesiredState, Protocol, ServicePortName};

/// One `conntrack -D` filter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowFilter {
    /// The protocol (UDP in practice).
    pub protocol: Protocol,
    /// The original destination address (a Service address).
    pub orig_dst: Option<Ipv4Addr>,
    /// The original destination port (a node port).
    pub orig_port_dst: Option<u16>,
    /// The address the flow was DNATed to (an endpoint).
    pub dst_nat: Option<Ipv4Addr>,
}

impl FlowFilter {
    /// The `conntrack -D` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["-D".to_owned(), "-p".to_owned(), self.protocol.to_string()];
        if let Some(ip) = self.orig_dst {
            args.extend(["--orig-dst".to_owned(), ip.to_string()]);
        }
        if let Some(port) = self.orig_port_dst {
            args.extend(["--orig-port-dst".to_owned(), port.to_string()]);
        }
        if let Some(ip) = self.dst_nat {
            args.extend(["--dst-nat".to_owned(), ip.to_string()]);
        }
        args
    }
}

/// The flows to delete after moving from `old` to `new` (none when `old` is unknown).
pub fn stale_flows(old: Option<&DesiredState>, new: &DesiredState) -> BTreeSet<FlowFilter> {
    let mut flows = BTreeSet::new();
    let Some(old) = old else {
        return flows;
    };
    for (name, after) in &new.services {
        stale_service_flows(name, old.services.get(name), Some(after), &mut flows);
    }
    for (name, before) in &old.services {
        if !new.services.contains_key(name) {
            stale_service_flows(name, Some(before), None, &mut flows);
        }
    }
    flows
}

/// Adds to `flows` those made stale by one Service port going from `before` to `after`
/// (`None`: absent), so a data plane that knows which Services changed looks at those only.
pub fn stale_service_flows(
    name: &ServicePortName,
    before: Option<&DesiredService>,
    after: Option<&DesiredService>,
    flows: &mut BTreeSet<FlowFilter>,
) {
    if name.protocol != Protocol::Udp {
        return;
    }
    let filter = |orig_dst, orig_port_dst, dst_nat| FlowFilter {
        protocol: name.protocol,
        orig_dst,
        orig_port_dst,
        dst_nat,
    };
    let Some(after) = after else {
        // A removed Service: its flows to endpoints die with the endpoints' other uses; entries
        // towards the vanished Service address itself are harmless (nothing answers there).
        if let Some(before) = before {
            for gone in endpoint_ips(before) {
                for ip in &before.port.cluster_ips {
                    flows.insert(filter(Some(*ip), None, Some(gone)));
                }
            }
        }
        return;
    };
    let was_empty = before.is_none_or(|b| b.internal_endpoints.is_empty());
    if was_empty && !after.internal_endpoints.is_empty() {
        for ip in &after.port.cluster_ips {
            flows.insert(filter(Some(*ip), None, None));
        }
    }
    let was_empty = before.is_none_or(|b| b.external_endpoints.is_empty());
    if was_empty && !after.external_endpoints.is_empty() {
        for ip in external_ips(after) {
            flows.insert(filter(Some(ip), None, None));
        }
        if let Some(np) = after.port.node_port {
            flows.insert(filter(None, Some(np), None));
        }
    }
    let Some(before) = before else { return };
    let now: BTreeSet<Ipv4Addr> = endpoint_ips(after);
    for gone in endpoint_ips(before).difference(&now) {
        for ip in after
            .port
            .cluster_ips
            .iter()
            .copied()
            .chain(external_ips(after))
        {
            flows.insert(filter(Some(ip), None, Some(*gone)));
        }
        if let Some(np) = after.port.node_port {
            flows.insert(filter(None, Some(np), Some(*gone)));
        }
    }
}

fn external_ips(service: &DesiredService) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let port = &service.port;
    port.external_ips
        .iter()
        .chain(&port.load_balancer_ips)
        .copied()
}

fn endpoint_ips(service: &DesiredService) -> BTreeSet<Ipv4Addr> {
    service
        .internal_endpoints
        .iter()
        .chain(&service.external_endpoints)
        .map(|ep| ep.ip)
        .collect()
}

/// Why deleting flows failed.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// `conntrack` could not be run.
    #[error("cannot run conntrack: {0}")]
    Spawn(#[source] std::io::Error),
    /// It ran and failed.
    #[error("conntrack {args} failed ({status}): {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
}

/// Deletes conntrack entries.
pub trait Conntrack: Send + Sync {
    /// Deletes every entry matching `filter`; finding none is fine.
    fn delete(&self, filter: &FlowFilter) -> Result<(), ConntrackError>;
}

/// The `conntrack` tool, in the calling process's namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealConntrack;

impl Conntrack for RealConntrack {
    fn delete(&self, filter: &FlowFilter) -> Result<(), ConntrackError> {
        let args = filter.args();
        let output = Command::new("conntrack")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(ConntrackError::Spawn)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Exit 1 with "0 flow entries have been deleted" just means there were none.
        if output.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(ConntrackError::Failed {
            args: args.join(" "),
            status: output.status.to_string(),
            stderr: stderr.trim().to_owned(),
        })
    }
}

/// Records deletions instead of making them.
#[derive(Clone, Debug, Default)]
pub struct FakeConntrack {
    deleted: Arc<Mutex<Vec<FlowFilter>>>,
}

impl FakeConntrack {
    /// Every filter deleted so far, in order; clears the record.
    pub fn take(&self) -> Vec<FlowFilter> {
        std::mem::take(&mut *self.deleted.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Conntrack for FakeConntrack {
    fn delete(&self, filter: &FlowFilter) -> Result<(), ConntrackError> {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(filter.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointAddr, ServicePort, ServicePortName};

    fn state(endpoints: &[u8], node_port: Option<u16>) -> DesiredState {
        let eps: Vec<EndpointAddr> = endpoints
            .iter()
            .map(|last| EndpointAddr {
                ip: Ipv4Addr::new(10, 244, 0, *last),
                port: 53,
                local: false,
            })
            .collect();
        let service = DesiredService {
            port: ServicePort {
                cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
                port: 53,
                node_port,
                ..ServicePort::default()
            },
            internal_endpoints: eps.clone(),
            external_endpoints: if node_port.is_some() { eps } else { Vec::new() },
            has_endpoints: !endpoints.is_empty(),
            local_ready: 0,
        };
        let mut state = DesiredState::default();
        let name = ServicePortName::new("kube-system", "dns", "dns", Protocol::Udp);
        state.services.insert(name, service);
        state
    }

    fn vip() -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(10, 96, 0, 10))
    }

    #[test]
    fn a_service_gaining_its_first_endpoint_clears_its_address() {
        let flows = stale_flows(Some(&state(&[], Some(30053))), &state(&[1], Some(30053)));
        let expected: BTreeSet<FlowFilter> = [
            FlowFilter {
                protocol: Protocol::Udp,
                orig_dst: vip(),
                orig_port_dst: None,
                dst_nat: None,
            },
            FlowFilter {
                protocol: Protocol::Udp,
                orig_dst: None,
                orig_port_dst: Some(30053),
                dst_nat: None,
            },
        ]
        .into();
        assert_eq!(flows, expected);
    }

    #[test]
    fn a_removed_endpoint_clears_flows_to_it_only() {
        let flows = stale_flows(Some(&state(&[1, 2], None)), &state(&[2, 3], None));
        let expected: BTreeSet<FlowFilter> = [FlowFilter {
            protocol: Protocol::Udp,
            orig_dst: vip(),
            orig_port_dst: None,
            dst_nat: Some(Ipv4Addr::new(10, 244, 0, 1)),
        }]
        .into();
        assert_eq!(flows, expected);
        assert_eq!(
            expected.first().unwrap().args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.0.1"
        );
    }

    #[test]
    fn nothing_is_cleared_without_a_previous_state_or_without_change() {
        assert!(stale_flows(None, &state(&[1], None)).is_empty());
        assert!(stale_flows(Some(&state(&[1], None)), &state(&[1], None)).is_empty());
    }

    #[test]
    fn tcp_services_never_need_clearing() {
        let mut old = state(&[1], None);
        let mut new = state(&[2], None);
        for s in [&mut old, &mut new] {
            let (name, svc) = s.services.pop_first().unwrap();
            let tcp = ServicePortName {
                protocol: Protocol::Tcp,
                ..name
            };
            s.services.insert(tcp, svc);
        }
        assert!(stale_flows(Some(&old), &new).is_empty());
    }
}
