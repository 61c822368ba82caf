//! Frontends beyond the cluster IP, traffic policies at the socket, and session affinity.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use skiff_ebpf_common::{
    AFFINITY_MATCH_EXTERNAL, AFFINITY_MATCH_INTERNAL, AffinityKey, AffinityMatchKey, AffinityValue,
    EXTERNAL_SLOT_BASE, SERVICE_FLAG_AFFINITY, SERVICE_FLAG_EXTERNAL_SLOTS,
};

use super::tests::{node_port, service, state, vip};
use super::trace::{Outcome, honours_pin, trace};
use super::*;
use crate::dataplane::Dataplane;
use crate::model::DesiredState;
use crate::model::{DesiredService, NodeFacts, Protocol};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 11);

fn on_node(services: &[(&str, DesiredService)]) -> DesiredState {
    DesiredState {
        node: NodeFacts {
            name: "node1".into(),
            ips: vec![NODE_IP],
            ..NodeFacts::default()
        },
        ..state(services)
    }
}

fn addr(text: &str) -> SocketAddrV4 {
    text.parse().unwrap()
}

fn reach(dp: &SocketLbPlane<FakeSocketLbMaps>, dst: &str) -> Outcome {
    trace(&dp.maps().state, addr(dst), Protocol::Tcp)
}

fn balanced(lasts: &[u8]) -> Outcome {
    Outcome::Balanced {
        backends: lasts
            .iter()
            .map(|l| SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, *l), 8080))
            .collect(),
        affinity_seconds: None,
    }
}

fn synced(desired: &DesiredState) -> SocketLbPlane<FakeSocketLbMaps> {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    dp.sync(desired).unwrap();
    dp
}

#[test]
fn node_ports_external_and_lb_ips_share_the_service_id_and_its_slots() {
    let mut svc = node_port(1, &[1, 2], &[1, 2]);
    svc.port.external_ips = vec![Ipv4Addr::new(192, 0, 2, 50)];
    svc.port.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 1)];
    let dp = synced(&on_node(&[("a", svc)]));
    let frontends = [
        "10.96.0.1:80",
        "172.31.0.11:30001",
        "127.0.0.1:30001",
        "192.0.2.50:80",
        "198.51.100.1:80",
    ];
    for dst in frontends {
        assert_eq!(reach(&dp, dst), balanced(&[1, 2]), "{dst}");
    }
    let maps = &dp.maps().state;
    assert_eq!(maps.services.len(), frontends.len());
    let ids: BTreeSet<u32> = maps.services.values().map(|v| v.service_id).collect();
    assert_eq!(ids.len(), 1, "one id for every frontend: {maps:?}");
    assert_eq!(maps.slots.len(), 2, "one slot list, shared");
    assert_eq!(
        reach(&dp, "172.31.0.11:80"),
        Outcome::Untouched,
        "the service port is not a node port"
    );
    assert_eq!(
        reach(&dp, "172.31.0.99:30001"),
        Outcome::Untouched,
        "another node's address"
    );
}

#[test]
fn lb_source_ranges_are_checked_against_every_source_local_traffic_can_have() {
    let lb_reach = |ranges: &[&str], endpoints: &[u8], cluster_cidr: Option<&str>| {
        let mut svc = node_port(1, endpoints, endpoints);
        svc.port.external_ips = vec![Ipv4Addr::new(192, 0, 2, 50)];
        svc.port.load_balancer_ips = vec![Ipv4Addr::new(198, 51, 100, 1)];
        svc.port.load_balancer_source_ranges = ranges.iter().map(|r| r.parse().unwrap()).collect();
        let mut desired = on_node(&[("a", svc)]);
        desired.node.cluster_cidr = cluster_cidr.map(|c| c.parse().unwrap());
        let dp = synced(&desired);
        let open = if endpoints.is_empty() {
            Outcome::Refused
        } else {
            balanced(endpoints)
        };
        assert_eq!(reach(&dp, "192.0.2.50:80"), open, "no ranges here");
        reach(&dp, "198.51.100.1:80")
    };
    let cluster = Some("10.244.0.0/16");
    let everyone_local = ["10.0.0.0/8", "172.31.0.0/16"];
    assert_eq!(lb_reach(&everyone_local, &[1], cluster), balanced(&[1]));
    assert_eq!(
        lb_reach(&["203.0.113.0/24"], &[1], cluster),
        Outcome::Dropped
    );
    assert_eq!(
        lb_reach(&["203.0.113.0/24"], &[], cluster),
        Outcome::Refused
    );
    // Some Pods in, others out: only the packet path knows the source.
    assert_eq!(
        lb_reach(&["10.244.1.0/24"], &[1], cluster),
        Outcome::Untouched
    );
    // Without the cluster CIDR, a Pod's address is unknown.
    assert_eq!(lb_reach(&everyone_local, &[1], None), Outcome::Untouched);
}

#[test]
fn etp_local_short_circuits_local_traffic_to_the_internal_endpoints() {
    // Endpoint 1 is this node's, 2 another's: eTP Local narrows outside traffic to 1, but
    // Pods and the node reach both, as kube-proxy's EXT chain sends them to the SVC chain.
    let mut svc = node_port(1, &[1, 2], &[1]);
    svc.port.external_policy_local = true;
    let dp = synced(&on_node(&[("a", svc)]));
    assert_eq!(reach(&dp, "172.31.0.11:30001"), balanced(&[1, 2]));
    assert_eq!(reach(&dp, "127.0.0.1:30001"), balanced(&[1, 2]));
    let flags = dp.maps().state.services.values().map(|v| v.flags);
    assert!(
        flags
            .into_iter()
            .all(|f| f & SERVICE_FLAG_EXTERNAL_SLOTS == 0)
    );
}

#[test]
fn itp_local_with_etp_cluster_gives_external_frontends_their_own_slot_list() {
    let dp = synced(&on_node(&[("a", node_port(1, &[1], &[1, 2, 3]))]));
    assert_eq!(reach(&dp, "10.96.0.1:80"), balanced(&[1]));
    assert_eq!(reach(&dp, "172.31.0.11:30001"), balanced(&[1, 2, 3]));
    let maps = &dp.maps().state;
    let slots: Vec<u32> = maps.slots.keys().map(|k| k.slot).collect();
    let base = EXTERNAL_SLOT_BASE;
    assert_eq!(slots, vec![0, base, base + 1, base + 2]);
    assert_eq!(maps.backends.len(), 3, "backend 1 is stored once");
}

#[test]
fn external_frontends_refuse_without_endpoints_and_drop_without_usable_ones() {
    let none = node_port(1, &[], &[]);
    // eTP and iTP Local, every endpoint on another node: iptables drops both ways in.
    let mut elsewhere = node_port(2, &[], &[]);
    elsewhere.has_endpoints = true;
    elsewhere.port.external_policy_local = true;
    elsewhere.port.internal_policy_local = true;
    // eTP Local alone, endpoint elsewhere: local traffic still reaches it.
    let mut short = node_port(3, &[9], &[]);
    short.port.external_policy_local = true;
    let dp = synced(&on_node(&[
        ("none", none),
        ("elsewhere", elsewhere),
        ("short", short),
    ]));
    assert_eq!(reach(&dp, "10.96.0.1:80"), Outcome::Refused);
    assert_eq!(reach(&dp, "172.31.0.11:30001"), Outcome::Refused);
    assert_eq!(reach(&dp, "10.96.0.2:80"), Outcome::Dropped);
    assert_eq!(reach(&dp, "127.0.0.1:30002"), Outcome::Dropped);
    assert_eq!(reach(&dp, "172.31.0.11:30003"), balanced(&[9]));
}

#[test]
fn an_external_ip_cannot_take_another_services_cluster_ip() {
    // "a" sorts first, yet "b"'s cluster IP wins the frontend both claim.
    let mut hijack = service(1, &[1]);
    hijack.port.external_ips = vec![Ipv4Addr::new(10, 96, 0, 2)];
    hijack.external_endpoints = hijack.internal_endpoints.clone();
    let dp = synced(&on_node(&[("a", hijack), ("b", service(2, &[2]))]));
    assert_eq!(reach(&dp, "10.96.0.2:80"), balanced(&[2]));
    assert_eq!(reach(&dp, "10.96.0.1:80"), balanced(&[1]));
}

#[test]
fn ids_stay_when_frontends_come_and_go() {
    let mut dp = synced(&on_node(&[("a", service(1, &[1, 2]))]));
    let id = dp.maps().state.services[&vip(1)].service_id;
    let before = dp.maps().writes.len();
    dp.sync(&on_node(&[("a", node_port(1, &[1, 2], &[1, 2]))]))
        .unwrap();
    let writes = &dp.maps().writes[before..];
    assert_eq!(
        writes.len(),
        2,
        "the two node-port frontends only: {writes:?}"
    );
    assert!(
        writes
            .iter()
            .all(|w| matches!(w, SocketLbWrite::PutService(_, v) if v.service_id == id))
    );

    let mut moved = on_node(&[("a", node_port(1, &[1, 2], &[1, 2]))]);
    moved.node.ips = vec![Ipv4Addr::new(172, 31, 0, 12)];
    dp.sync(&moved).unwrap();
    assert_eq!(reach(&dp, "172.31.0.12:30001"), balanced(&[1, 2]));
    assert_eq!(reach(&dp, "172.31.0.11:30001"), Outcome::Untouched);
    let ids: BTreeSet<u32> = dp
        .maps()
        .state
        .services
        .values()
        .map(|v| v.service_id)
        .collect();
    assert_eq!(ids, BTreeSet::from([id]));
}

fn sticky(vip_last: u8, seconds: u32, internal: &[u8], external: &[u8]) -> DesiredService {
    let mut svc = node_port(vip_last, internal, external);
    svc.port.affinity_seconds = Some(seconds);
    svc
}

fn pin(dp: &mut SocketLbPlane<FakeSocketLbMaps>, netns_cookie: u64, service_id: u32) {
    let key = AffinityKey {
        netns_cookie,
        service_id,
        pad: 0,
    };
    let value = AffinityValue {
        backend_id: 1,
        pad: 0,
        last_used_ns: 1,
    };
    // The kernel fills this map; a test stands in for it through the fake.
    dp.maps_mut().kernel_filled.insert(key, value);
}

#[test]
fn affinity_marks_the_frontends_and_lists_each_backend_for_its_slot_lists() {
    let dp = synced(&on_node(&[("a", sticky(1, 60, &[1], &[1, 2]))]));
    let maps = &dp.maps().state;
    for value in maps.services.values() {
        assert_ne!(value.flags & SERVICE_FLAG_AFFINITY, 0);
        assert_eq!(value.affinity_seconds, 60);
    }
    let id = maps.services[&vip(1)].service_id;
    let bits = |backend_id| {
        maps.affinity_match[&AffinityMatchKey {
            service_id: id,
            backend_id,
        }]
    };
    let (one, two) = (1, 2);
    assert_eq!(bits(one), AFFINITY_MATCH_INTERNAL | AFFINITY_MATCH_EXTERNAL);
    assert_eq!(bits(two), AFFINITY_MATCH_EXTERNAL);
    let ep = |l| SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, l), 8080);
    let tcp = Protocol::Tcp;
    assert!(honours_pin(maps, addr("10.96.0.1:80"), tcp, ep(1)));
    // A client pinned through the node port to endpoint 2 is not sent there through the cluster
    // IP, whose traffic policy does not reach it.
    assert!(!honours_pin(maps, addr("10.96.0.1:80"), tcp, ep(2)));
    assert!(honours_pin(maps, addr("172.31.0.11:30001"), tcp, ep(2)));
    assert_eq!(
        reach(&dp, "10.96.0.1:80"),
        Outcome::Balanced {
            backends: vec![ep(1)],
            affinity_seconds: Some(60)
        }
    );
    let plain = synced(&on_node(&[("a", node_port(1, &[1], &[1, 2]))]));
    assert!(
        plain.maps().state.affinity_match.is_empty(),
        "only for affinity"
    );
}

#[test]
fn switching_affinity_off_or_removing_the_service_forgets_its_clients() {
    let mut dp = synced(&on_node(&[
        ("a", sticky(1, 60, &[1, 2], &[1, 2])),
        ("b", sticky(2, 60, &[3], &[3])),
    ]));
    let (a, b) = {
        let maps = &dp.maps().state;
        (
            maps.services[&vip(1)].service_id,
            maps.services[&vip(2)].service_id,
        )
    };
    pin(&mut dp, 7, a);
    pin(&mut dp, 7, b);

    // A shorter timeout is read by the kernel at each connect: nothing to forget.
    let before = dp.maps().writes.len();
    dp.sync(&on_node(&[
        ("a", sticky(1, 30, &[1, 2], &[1, 2])),
        ("b", sticky(2, 60, &[3], &[3])),
    ]))
    .unwrap();
    assert!(
        !dp.maps().writes[before..]
            .iter()
            .any(|w| matches!(w, SocketLbWrite::ClearAffinity(_)))
    );
    assert_eq!(dp.maps().kernel_filled.len(), 2);

    let before = dp.maps().writes.len();
    dp.sync(&on_node(&[
        ("a", node_port(1, &[1, 2], &[1, 2])),
        ("b", sticky(2, 60, &[3], &[3])),
    ]))
    .unwrap();
    let writes = &dp.maps().writes[before..];
    let clear = writes
        .iter()
        .position(|w| *w == SocketLbWrite::ClearAffinity(a))
        .unwrap();
    let last_put = writes
        .iter()
        .rposition(|w| matches!(w, SocketLbWrite::PutService(..)))
        .unwrap();
    assert!(
        clear > last_put,
        "the flag goes off before the pins go: {writes:?}"
    );
    assert!(dp.maps().kernel_filled.keys().all(|k| k.service_id == b));
    assert!(
        dp.maps()
            .state
            .affinity_match
            .keys()
            .all(|k| k.service_id == b)
    );

    dp.sync(&on_node(&[("a", node_port(1, &[1, 2], &[1, 2]))]))
        .unwrap();
    assert!(dp.maps().kernel_filled.is_empty());
    assert!(dp.maps().state.affinity_match.is_empty());
}

#[test]
fn a_removed_endpoint_is_no_longer_honoured_as_a_pin() {
    let mut dp = synced(&on_node(&[("a", sticky(1, 60, &[1, 2], &[1, 2]))]));
    dp.sync(&on_node(&[("a", sticky(1, 60, &[1], &[1]))]))
        .unwrap();
    let ep2 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 2), 8080);
    let maps = &dp.maps().state;
    assert!(!honours_pin(maps, addr("10.96.0.1:80"), Protocol::Tcp, ep2));
    assert_eq!(maps.affinity_match.len(), 1);
}
