use std::net::Ipv4Addr;

use skiff_ebpf_common::nodeport::{EXT_FLAG_SNAT, EXT_FLAG_SOURCE_RANGES, EXT_SLOT_LOCAL};
use skiff_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey};

use super::*;
use crate::dataplane::Dataplane;
use crate::ebpf::FaultyMaps;
use crate::ebpf::plane::Planner;
use crate::model::DesiredState;
use crate::model::{
    DesiredService, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};

fn ep(last: u8, local: bool) -> EndpointAddr {
    EndpointAddr {
        ip: Ipv4Addr::new(10, 244, 1, last),
        port: 8080,
        local,
    }
}

fn state(local_policy: bool, external: Vec<EndpointAddr>) -> DesiredState {
    let mut desired = DesiredState {
        node: NodeFacts {
            name: "n1".into(),
            ips: vec![
                Ipv4Addr::new(192, 0, 2, 11),
                Ipv4Addr::new(198, 51, 100, 11),
            ],
            ..NodeFacts::default()
        },
        ..DesiredState::default()
    };
    desired.services.insert(
        ServicePortName::new("ns", "web", "http", Protocol::Tcp),
        DesiredService {
            port: ServicePort {
                cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 10)],
                port: 80,
                node_port: Some(30080),
                external_ips: vec![Ipv4Addr::new(203, 0, 113, 7)],
                load_balancer_ips: vec![Ipv4Addr::new(203, 0, 113, 8)],
                external_policy_local: local_policy,
                ..ServicePort::default()
            },
            internal_endpoints: vec![ep(1, true), ep(2, false)],
            has_endpoints: true,
            external_endpoints: external,
            local_ready: 1,
        },
    );
    desired.services.insert(
        ServicePortName::new("ns", "dns", "", Protocol::Udp),
        DesiredService {
            port: ServicePort {
                cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 53)],
                port: 53,
                ..ServicePort::default()
            },
            internal_endpoints: vec![ep(3, false)],
            external_endpoints: vec![ep(3, false)],
            has_endpoints: true,
            local_ready: 0,
        },
    );
    desired
}

#[test]
fn every_node_address_external_and_lb_ip_is_a_frontend_with_the_external_endpoints() {
    let want = ExternalPlanner::plan(
        &state(false, vec![ep(1, true), ep(2, false)]),
        &ExternalState::default(),
    );
    let keys: Vec<ServiceKey> = want.services.keys().copied().collect();
    let mut expected = vec![
        ServiceKey::new([192, 0, 2, 11], 30080, IPPROTO_TCP),
        ServiceKey::new([198, 51, 100, 11], 30080, IPPROTO_TCP),
        ServiceKey::new([203, 0, 113, 7], 80, IPPROTO_TCP),
        ServiceKey::new([203, 0, 113, 8], 80, IPPROTO_TCP),
    ];
    expected.sort();
    assert_eq!(keys, expected, "no frontend for a ClusterIP-only Service");
    let value = want.services[&expected[0]];
    assert_eq!(value.backend_count, 2);
    assert_eq!(value.flags, SERVICE_FLAG_HAS_ENDPOINTS | EXT_FLAG_SNAT);
    let slots: Vec<_> = want.slots.values().collect();
    assert_eq!(
        slots[0].flags, EXT_SLOT_LOCAL,
        "the local backend is marked"
    );
    assert_eq!(slots[1].flags, 0);
    assert!(!want.services.keys().any(|k| k.protocol == IPPROTO_UDP));
}

#[test]
fn a_local_policy_turns_source_nat_off_and_no_local_endpoint_means_count_zero() {
    let want = ExternalPlanner::plan(&state(true, Vec::new()), &ExternalState::default());
    let value = want.services.values().next().unwrap();
    assert_eq!(value.backend_count, 0);
    assert_eq!(
        value.flags, SERVICE_FLAG_HAS_ENDPOINTS,
        "endpoints elsewhere: dropped here, no SNAT"
    );
    assert!(want.slots.is_empty());
}

#[test]
fn an_endpoint_change_rewrites_its_slot_only_and_a_restart_writes_nothing() {
    let mut plane = ExternalPlane::new(FakeExternalMaps::default());
    plane
        .sync(&state(false, vec![ep(1, true), ep(2, false)]))
        .unwrap();
    assert_eq!(plane.maps().writes.len(), 4 + 2);
    let mut changed = plane.maps().clone();
    changed.writes.clear();
    let mut plane = ExternalPlane::new(changed);
    let report = plane
        .sync(&state(false, vec![ep(1, true), ep(9, false)]))
        .unwrap();
    assert!(report.full, "a new plane reads the maps back");
    assert_eq!(report.written, 1, "{:?}", plane.maps().writes);
    assert!(matches!(plane.maps().writes[0], ExternalWrite::PutSlot(..)));
    // A restarted agent adopting the pinned maps computes the same entries.
    let mut adopted = plane.maps().clone();
    adopted.writes.clear();
    let mut plane = ExternalPlane::new(adopted);
    let report = plane
        .sync(&state(false, vec![ep(1, true), ep(9, false)]))
        .unwrap();
    assert_eq!(report.written, 0);
}

#[test]
fn after_a_faulty_write_the_next_sync_reads_back_and_converges_and_slots_lead_counts() {
    let want = state(false, vec![ep(1, true), ep(2, false)]);
    for fail_after in 0..6 {
        let mut plane = ExternalPlane::new(FaultyMaps::failing_from(
            FakeExternalMaps::default(),
            fail_after,
        ));
        assert!(plane.sync(&want).is_err(), "fail_after {fail_after}");
        // Whatever got written, no frontend counts a slot that is not there.
        let held = &plane.maps().inner.state;
        for value in held.services.values() {
            for slot in 0..value.backend_count {
                let key = skiff_ebpf_common::SlotKey {
                    service_id: value.service_id,
                    slot,
                };
                assert!(held.slots.contains_key(&key), "fail_after {fail_after}");
            }
        }
        let mut plane = ExternalPlane::new(plane.maps().inner.clone());
        plane.sync(&want).unwrap();
        assert_eq!(
            plane.maps().state,
            ExternalPlanner::plan(&want, &ExternalState::default())
        );
    }
    let mut plane = ExternalPlane::new(FakeExternalMaps::default());
    plane.sync(&want).unwrap();
    plane.cleanup().unwrap();
    assert_eq!(plane.maps().state, ExternalState::default());
}

#[test]
fn source_ranges_guard_only_lb_ips_and_go_in_before_the_flag_and_out_after_it() {
    let plain = state(false, vec![ep(1, true)]);
    let mut ranged = plain.clone();
    for service in ranged.services.values_mut() {
        service.port.load_balancer_source_ranges = vec!["203.0.113.0/24".parse().unwrap()];
    }
    let want = ExternalPlanner::plan(&ranged, &ExternalState::default());
    let lb = ServiceKey::new([203, 0, 113, 8], 80, IPPROTO_TCP);
    let node_port = ServiceKey::new([192, 0, 2, 11], 30080, IPPROTO_TCP);
    assert_ne!(want.services[&lb].flags & EXT_FLAG_SOURCE_RANGES, 0);
    assert_eq!(want.services[&node_port].flags & EXT_FLAG_SOURCE_RANGES, 0);
    assert_eq!(
        want.sources.len(),
        1,
        "the dns Service has no LB IP: no ranges"
    );

    let held = ExternalPlanner::plan(&plain, &ExternalState::default());
    let on = ExternalPlanner::diff(&held, &want);
    let source_at = on
        .iter()
        .position(|w| matches!(w, ExternalWrite::PutSource(..)));
    let flag_at = on
        .iter()
        .position(|w| matches!(w, ExternalWrite::PutService(k, _) if *k == lb));
    assert!(source_at < flag_at, "{on:?}");
    let off = ExternalPlanner::diff(&want, &held);
    let flag_at = off
        .iter()
        .position(|w| matches!(w, ExternalWrite::PutService(k, _) if *k == lb));
    let source_at = off
        .iter()
        .position(|w| matches!(w, ExternalWrite::DeleteSource(..)));
    assert!(flag_at < source_at, "{off:?}");
}
