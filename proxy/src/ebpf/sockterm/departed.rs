//! Which backends left which UDP frontends in a sync: read from the map contents before and
//! after it, not from the Services, so a frontend of any kind (cluster IP, node port, external
//! or LB IP), a collision settled differently, or a restarted proxy that adopted pinned maps
//! all count the same way the kernel would have translated a socket. A backend has left a
//! frontend when the frontend no longer picks it: it is gone from the slot list the frontend
//! reads, or the frontend itself is gone (the Service deleted — kube-proxy clears a deleted
//! UDP Service's conntrack entries too). And a frontend that picks nothing before and some
//! backend after *opens*: sockets connected to its address before it was written went out
//! untranslated, into nothing, and end by the `(frontend, frontend)` pair.

use std::collections::BTreeSet;

use skiff_ebpf_common::sockterm::SockTermKey;
use skiff_ebpf_common::{IPPROTO_UDP, L4Addr, ServiceKey};

use crate::ebpf::socket_lb::SocketLbState;
use crate::ebpf::socket_lb::trace::reached;

/// The (frontend, backend) pairs whose connected UDP sockets end after `held` became `want`,
/// and the (frontend, frontend) pairs of frontends that opened.
pub fn departed(held: &SocketLbState, want: &SocketLbState) -> BTreeSet<SockTermKey> {
    let mut out = BTreeSet::new();
    for (key, after) in want.services.iter().filter(|(k, _)| is_udp(k)) {
        let picked_none = held
            .services
            .get(key)
            .is_none_or(|before| reached(held, before).next().is_none());
        if picked_none && reached(want, after).next().is_some() {
            let service = frontend(key);
            out.insert(SockTermKey {
                service,
                backend: service,
            });
        }
    }
    for (key, before) in held.services.iter().filter(|(k, _)| is_udp(k)) {
        let after: BTreeSet<&L4Addr> = match want.services.get(key) {
            Some(value) => reached(want, value).collect(),
            None => BTreeSet::new(),
        };
        let service = frontend(key);
        out.extend(
            reached(held, before)
                .filter(|backend| !after.contains(backend))
                .map(|backend| SockTermKey {
                    service,
                    backend: *backend,
                }),
        );
    }
    out
}

/// Is ending `key`'s sockets still right in `state`? A pair that departed in a sync cut short
/// may be back by the time sockets are ended, and a frontend that opened may have closed.
pub fn still_due(state: &SocketLbState, key: &SockTermKey) -> bool {
    let frontend = ServiceKey {
        addr: key.service.addr,
        port: key.service.port,
        protocol: IPPROTO_UDP,
        pad: 0,
    };
    let mut picks = state
        .services
        .get(&frontend)
        .into_iter()
        .flat_map(|value| reached(state, value));
    if key.service == key.backend {
        picks.next().is_some()
    } else {
        !picks.any(|b| *b == key.backend)
    }
}

fn is_udp(key: &ServiceKey) -> bool {
    key.protocol == IPPROTO_UDP
}

/// A frontend as the application named it: what `SKIFF_REVNAT` shows back.
fn frontend(key: &ServiceKey) -> L4Addr {
    L4Addr {
        addr: key.addr,
        port: key.port,
        pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::ebpf::plane::Planner;
    use crate::ebpf::socket_lb::SocketLbPlanner;
    use crate::ebpf::socket_lb::tests::{name, node_port, service};
    use crate::model::{DesiredService, DesiredState, NodeFacts, Protocol};

    fn udp(services: &[(&str, DesiredService)]) -> SocketLbState {
        let mut desired = DesiredState {
            node: NodeFacts {
                name: "node1".into(),
                ips: vec![Ipv4Addr::new(172, 31, 0, 11)],
                ..NodeFacts::default()
            },
            ..DesiredState::default()
        };
        for (n, svc) in services {
            desired.services.insert(name(n, Protocol::Udp), svc.clone());
        }
        SocketLbPlanner::plan(&desired, &SocketLbState::default())
    }

    fn pair(frontend: &str, backend_last: u8) -> SockTermKey {
        let frontend: std::net::SocketAddrV4 = frontend.parse().unwrap();
        SockTermKey {
            service: L4Addr::new(frontend.ip().octets(), frontend.port()),
            backend: L4Addr::new([10, 244, 0, backend_last], 8080),
        }
    }

    fn pairs(list: &[(&str, u8)]) -> BTreeSet<SockTermKey> {
        list.iter().map(|(f, b)| pair(f, *b)).collect()
    }

    fn opened(frontend: &str) -> SockTermKey {
        let frontend: std::net::SocketAddrV4 = frontend.parse().unwrap();
        let service = L4Addr::new(frontend.ip().octets(), frontend.port());
        SockTermKey {
            service,
            backend: service,
        }
    }

    #[test]
    fn a_replaced_backend_departs_from_its_frontend_only() {
        let before = udp(&[("dns", service(10, &[1, 2])), ("other", service(11, &[1]))]);
        let after = udp(&[("dns", service(10, &[2, 3])), ("other", service(11, &[1]))]);
        // Backend 1 still serves `other`: only sockets that reached it through dns end.
        assert_eq!(departed(&before, &after), pairs(&[("10.96.0.10:80", 1)]));
    }

    #[test]
    fn a_deleted_service_departs_every_backend_of_every_frontend() {
        let before = udp(&[("dns", node_port(10, &[1], &[1]))]);
        let after = udp(&[]);
        assert_eq!(
            departed(&before, &after),
            pairs(&[
                ("10.96.0.10:80", 1),
                ("127.0.0.1:30010", 1),
                ("172.31.0.11:30010", 1)
            ])
        );
    }

    #[test]
    fn external_frontends_follow_their_own_slot_list() {
        // eTP Cluster with a different external list: only the node ports read it.
        let before = udp(&[("dns", node_port(10, &[1], &[1, 2]))]);
        let after = udp(&[("dns", node_port(10, &[1], &[1]))]);
        assert_eq!(
            departed(&before, &after),
            pairs(&[("127.0.0.1:30010", 2), ("172.31.0.11:30010", 2)])
        );
    }

    #[test]
    fn a_frontend_that_gets_its_first_backend_opens() {
        let empty = udp(&[("dns", service(10, &[]))]);
        let served = udp(&[("dns", service(10, &[1]))]);
        let open = BTreeSet::from([opened("10.96.0.10:80")]);
        assert_eq!(departed(&SocketLbState::default(), &served), open);
        assert_eq!(departed(&empty, &served), open);
        assert!(departed(&SocketLbState::default(), &empty).is_empty());
    }

    #[test]
    fn tcp_services_growing_services_and_unchanged_ones_end_nothing() {
        let tcp = |eps: &[u8]| {
            let desired = DesiredState {
                services: [(name("web", Protocol::Tcp), service(20, eps))].into(),
                ..DesiredState::default()
            };
            SocketLbPlanner::plan(&desired, &SocketLbState::default())
        };
        assert!(departed(&tcp(&[1, 2]), &tcp(&[3])).is_empty());
        assert!(departed(&SocketLbState::default(), &tcp(&[3])).is_empty());
        let before = udp(&[("dns", service(10, &[1]))]);
        let grown = udp(&[("dns", service(10, &[1, 2]))]);
        assert!(departed(&before, &grown).is_empty());
        assert!(departed(&grown, &grown).is_empty());
    }

    #[test]
    fn a_pair_is_due_while_its_frontend_does_not_pick_the_backend() {
        let state = udp(&[("dns", service(10, &[2]))]);
        assert!(!still_due(&state, &pair("10.96.0.10:80", 2)));
        assert!(still_due(&state, &pair("10.96.0.10:80", 1)));
        assert!(still_due(&state, &pair("10.96.0.99:80", 2)));
    }

    #[test]
    fn an_opened_frontend_is_due_while_it_picks_some_backend() {
        let state = udp(&[("dns", service(10, &[2])), ("none", service(11, &[]))]);
        assert!(still_due(&state, &opened("10.96.0.10:80")));
        assert!(!still_due(&state, &opened("10.96.0.11:80")));
        assert!(!still_due(&state, &opened("10.96.0.99:80")));
    }
}
