use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use skiff_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP, L4Addr, SERVICE_FLAG_HAS_ENDPOINTS, ServiceKey};

use super::*;
use crate::dataplane::Dataplane;
use crate::ebpf::FaultyMaps;
use crate::model::DesiredState;
use crate::model::{DesiredService, EndpointAddr, Protocol, ServicePort, ServicePortName};

pub(crate) fn ep(last: u8) -> EndpointAddr {
    EndpointAddr {
        ip: Ipv4Addr::new(10, 244, 0, last),
        port: 8080,
        local: false,
    }
}

pub(crate) fn service(vip_last: u8, endpoints: &[u8]) -> DesiredService {
    let internal: Vec<EndpointAddr> = endpoints.iter().map(|l| ep(*l)).collect();
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, vip_last)],
            port: 80,
            ..ServicePort::default()
        },
        has_endpoints: !internal.is_empty(),
        external_endpoints: vec![],
        internal_endpoints: internal,
        local_ready: 0,
    }
}

/// A NodePort Service on `vip_last` with node port `30000 + vip_last`, eTP Cluster.
pub(crate) fn node_port(vip_last: u8, internal: &[u8], external: &[u8]) -> DesiredService {
    let mut svc = service(vip_last, internal);
    svc.port.node_port = Some(30_000 + u16::from(vip_last));
    svc.external_endpoints = external.iter().map(|l| ep(*l)).collect();
    svc.has_endpoints = !internal.is_empty() || !external.is_empty();
    svc
}

pub(crate) fn name(n: &str, protocol: Protocol) -> ServicePortName {
    ServicePortName::new("default", n, "", protocol)
}

pub(crate) fn state(services: &[(&str, DesiredService)]) -> DesiredState {
    state_of(Protocol::Tcp, services)
}

pub(crate) fn state_of(protocol: Protocol, services: &[(&str, DesiredService)]) -> DesiredState {
    DesiredState {
        services: services
            .iter()
            .map(|(n, s)| (name(n, protocol), s.clone()))
            .collect(),
        ..DesiredState::default()
    }
}

pub(crate) fn vip(last: u8) -> ServiceKey {
    ServiceKey::new([10, 96, 0, last], 80, IPPROTO_TCP)
}

/// Where a connect to `key` can go, read from the maps as the kernel program reads them.
pub(crate) fn backends_of(maps: &SocketLbState, key: &ServiceKey) -> Option<Vec<u8>> {
    let value = maps.services.get(key)?;
    let mut out: Vec<u8> = (0..value.backend_count)
        .map(|slot| {
            let id = maps.slots[&skiff_ebpf_common::SlotKey {
                service_id: value.service_id,
                slot,
            }];
            maps.backends[&id].octets()[3]
        })
        .collect();
    out.sort();
    Some(out)
}

#[test]
fn adding_a_service_writes_its_frontend_slots_and_backends_in_a_safe_order() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    let report = dp.sync(&state(&[("a", service(1, &[1, 2]))])).unwrap();
    assert!(report.full);
    assert_eq!(report.written, 5);
    let maps = &dp.maps().state;
    assert_eq!(backends_of(maps, &vip(1)), Some(vec![1, 2]));
    assert_eq!(maps.services[&vip(1)].flags, SERVICE_FLAG_HAS_ENDPOINTS);
    // The frontend is written last, so the kernel never sees a count without its slots.
    assert!(matches!(
        dp.maps().writes.last(),
        Some(SocketLbWrite::PutService(..))
    ));
}

#[test]
fn removing_a_service_deletes_all_its_entries_and_leaves_others_alone() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    dp.sync(&state(&[
        ("a", service(1, &[1, 2])),
        ("b", service(2, &[3])),
    ]))
    .unwrap();
    let before = dp.maps().writes.len();
    let report = dp.sync(&state(&[("b", service(2, &[3]))])).unwrap();
    assert!(!report.full);
    let writes = &dp.maps().writes[before..];
    assert_eq!(
        writes.len(),
        5,
        "1 frontend, 2 slots, 2 backends: {writes:?}"
    );
    assert!(matches!(writes[0], SocketLbWrite::DeleteService(k) if k == vip(1)));
    let maps = &dp.maps().state;
    assert_eq!(backends_of(maps, &vip(1)), None);
    assert_eq!(backends_of(maps, &vip(2)), Some(vec![3]));
    assert_eq!(maps.len(), 3);
}

#[test]
fn an_endpoint_change_touches_only_its_own_entries() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    let others: Vec<(String, DesiredService)> = (10..60)
        .map(|i| (format!("s{i}"), service(i, &[i, i + 100])))
        .collect();
    let with = |eps: &[u8]| {
        let mut all: Vec<(&str, DesiredService)> = others
            .iter()
            .map(|(n, s)| (n.as_str(), s.clone()))
            .collect();
        all.push(("a", service(1, eps)));
        state(&all)
    };
    dp.sync(&with(&[1, 2])).unwrap();
    let before = dp.maps().writes.len();
    let report = dp.sync(&with(&[1, 3])).unwrap();
    let writes = &dp.maps().writes[before..];
    // New backend 3, slot 1 now points at it, backend 2 deleted: the count did not change.
    assert_eq!(report.written, 3, "{writes:?}");
    assert!(
        matches!(writes[0], SocketLbWrite::PutBackend(_, a) if a == L4Addr::new([10, 244, 0, 3], 8080))
    );
    assert!(matches!(writes[1], SocketLbWrite::PutSlot(..)));
    assert!(matches!(writes[2], SocketLbWrite::DeleteBackend(_)));
    assert_eq!(backends_of(&dp.maps().state, &vip(1)), Some(vec![1, 3]));

    // Shrinking: the count shrinks before the slot beyond it goes.
    let before = dp.maps().writes.len();
    dp.sync(&with(&[1])).unwrap();
    let writes = &dp.maps().writes[before..];
    assert!(
        matches!(writes[0], SocketLbWrite::PutService(k, v) if k == vip(1) && v.backend_count == 1)
    );
    assert!(matches!(writes[1], SocketLbWrite::DeleteSlot(_)));
    assert!(matches!(writes[2], SocketLbWrite::DeleteBackend(_)));
    assert_eq!(writes.len(), 3);
}

#[test]
fn a_backend_shared_by_two_services_is_stored_once_and_kept_while_one_uses_it() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    dp.sync(&state(&[("a", service(1, &[7])), ("b", service(2, &[7]))]))
        .unwrap();
    assert_eq!(dp.maps().state.backends.len(), 1);
    dp.sync(&state(&[("b", service(2, &[7]))])).unwrap();
    assert_eq!(backends_of(&dp.maps().state, &vip(2)), Some(vec![7]));
}

#[test]
fn no_endpoints_means_refuse_and_local_policy_without_local_endpoints_means_drop() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    let mut local_only = service(2, &[]);
    local_only.has_endpoints = true;
    dp.sync(&state(&[("none", service(1, &[])), ("local", local_only)]))
        .unwrap();
    let maps = &dp.maps().state;
    assert_eq!(maps.services[&vip(1)].backend_count, 0);
    assert_eq!(maps.services[&vip(1)].flags, 0, "refused at once");
    assert_eq!(
        maps.services[&vip(2)].flags,
        SERVICE_FLAG_HAS_ENDPOINTS,
        "dropped"
    );
}

#[test]
fn udp_gets_its_own_frontend_and_sctp_is_left_alone() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    let desired = DesiredState {
        services: BTreeMap::from([
            (name("dns", Protocol::Udp), service(10, &[1])),
            (name("s", Protocol::Sctp), service(11, &[2])),
        ]),
        ..DesiredState::default()
    };
    dp.sync(&desired).unwrap();
    let keys: Vec<ServiceKey> = dp.maps().state.services.keys().copied().collect();
    assert_eq!(
        keys,
        vec![ServiceKey::new([10, 96, 0, 10], 80, IPPROTO_UDP)]
    );
}

#[test]
fn a_restarted_agent_adopts_pinned_maps_and_writes_nothing_when_nothing_changed() {
    let desired = state(&[("a", service(1, &[1, 2])), ("b", service(2, &[2, 3]))]);
    let mut first = SocketLbPlane::new(FakeSocketLbMaps::default());
    first.sync(&desired).unwrap();
    let pinned = first.maps().state.clone();

    let mut second = SocketLbPlane::new(FakeSocketLbMaps {
        state: pinned.clone(),
        ..FakeSocketLbMaps::default()
    });
    let report = second.sync(&desired).unwrap();
    assert!(report.full);
    assert_eq!(report.written, 0, "{:?}", second.maps().writes);
    assert_eq!(second.maps().state, pinned);

    // And a change after adoption keeps the adopted ids.
    let id_b = pinned.services[&vip(2)].service_id;
    second
        .sync(&state(&[("b", service(2, &[2, 3, 4]))]))
        .unwrap();
    assert_eq!(second.maps().state.services[&vip(2)].service_id, id_b);
}

#[test]
fn a_failed_write_makes_the_next_sync_read_the_maps_back_and_finish_the_job() {
    let desired = state(&[("a", service(1, &[1, 2, 3]))]);
    let mut dp = SocketLbPlane::new(FaultyMaps::new(FakeSocketLbMaps::default(), [2]));
    assert!(dp.sync(&desired).is_err());
    assert_eq!(
        backends_of(&dp.maps().inner.state, &vip(1)),
        None,
        "no frontend yet"
    );
    let report = dp.sync(&desired).unwrap();
    assert!(report.full);
    assert_eq!(report.written, 5, "the 2 backends already written stay");
    assert_eq!(
        backends_of(&dp.maps().inner.state, &vip(1)),
        Some(vec![1, 2, 3])
    );
}

#[test]
fn cleanup_empties_the_maps() {
    let mut dp = SocketLbPlane::new(FakeSocketLbMaps::default());
    dp.sync(&state(&[("a", service(1, &[1, 2]))])).unwrap();
    dp.cleanup().unwrap();
    assert!(dp.maps().state.is_empty());
}
