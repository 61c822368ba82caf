//! Which sockets a sync ends, through the data plane with fake maps and fake sockets.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::FakeSockets;
use crate::dataplane::Dataplane;
use crate::ebpf::socket_lb::tests::{name, service, state_of};
use crate::ebpf::{FakeSocketLbMaps, FaultyMaps, MapDoor, SocketLbPlane, SocketLbState};
use crate::model::{DesiredService, DesiredState, Protocol};

fn udp(services: &[(&str, DesiredService)]) -> DesiredState {
    state_of(Protocol::Udp, services)
}

fn vip(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, last), 80)
}

fn pod(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, last), 8080)
}

fn cookies(sockets: &[super::FakeSocket]) -> Vec<u64> {
    let mut out: Vec<u64> = sockets.iter().map(|s| s.cookie).collect();
    out.sort();
    out
}

fn plane_with<M: MapDoor<SocketLbState>>(maps: M) -> SocketLbPlane<M, FakeSockets> {
    let mut sockets = FakeSockets::default();
    // dns (10.96.0.10) and other (10.96.0.11) both have pod 1 at first.
    sockets.connect(1, vip(10), pod(1)); // through dns, to the backend that goes
    sockets.connect(2, vip(10), pod(2)); // through dns, to one that stays
    sockets.connect(3, vip(11), pod(1)); // through other, which keeps pod 1
    sockets.connect_direct(4, pod(1)); // straight to the Pod's address
    SocketLbPlane::with_terminator(maps, sockets)
}

#[test]
fn a_backend_leaving_a_service_ends_only_the_sockets_sent_to_it_through_that_service() {
    let mut dp = plane_with(FakeSocketLbMaps::default());
    let before = udp(&[("dns", service(10, &[1, 2])), ("other", service(11, &[1]))]);
    dp.sync(&before).unwrap();
    assert!(dp.sockets().ended.is_empty(), "nothing departed yet");

    let after = udp(&[("dns", service(10, &[2, 3])), ("other", service(11, &[1]))]);
    let report = dp.sync(&after).unwrap();
    assert_eq!(cookies(&dp.sockets().ended), [1]);
    assert_eq!(cookies(&dp.sockets().open), [2, 3, 4]);
    assert_eq!(report.flows_cleared, 1);

    // A sync that takes nothing away ends nothing more and asks for nothing.
    let calls = dp.sockets().calls.len();
    dp.sync(&after).unwrap();
    assert_eq!(dp.sockets().calls.len(), calls);
}

#[test]
fn sockets_connected_to_a_service_before_it_was_written_end_once_it_has_backends() {
    let mut dp = plane_with(FakeSocketLbMaps::default());
    dp.sync(&udp(&[("other", service(11, &[1]))])).unwrap();
    // Started before the proxy wrote dns: sent to the ClusterIP itself, untranslated.
    let mut sockets = dp.sockets().clone();
    sockets.connect_direct(5, vip(10));
    sockets.connect_direct(6, vip(12));
    let mut dp = SocketLbPlane::with_terminator(dp.maps().clone(), sockets);
    let report = dp
        .sync(&udp(&[
            ("other", service(11, &[1])),
            ("dns", service(10, &[2])),
            ("empty", service(12, &[])),
        ]))
        .unwrap();
    // dns opened; empty has nothing to offer, so its early socket is left to its timeout.
    assert_eq!(cookies(&dp.sockets().ended), [5]);
    assert_eq!(report.flows_cleared, 1);
}

#[test]
fn a_deleted_service_ends_its_sockets_and_tcp_services_end_none() {
    let mut dp = plane_with(FakeSocketLbMaps::default());
    let mut both = udp(&[("dns", service(10, &[1, 2]))]);
    both.services
        .insert(name("other", Protocol::Tcp), service(11, &[1]));
    dp.sync(&both).unwrap();
    dp.sync(&DesiredState::default()).unwrap();
    // Cookie 3's entry names 10.96.0.11, a TCP Service here: no UDP pair departs from it.
    assert_eq!(cookies(&dp.sockets().ended), [1, 2]);
}

#[test]
fn pairs_of_a_sync_cut_short_are_ended_after_the_next_one_unless_the_backend_is_back() {
    let before = udp(&[("dns", service(10, &[1, 2])), ("other", service(11, &[1]))]);
    let after = udp(&[("dns", service(10, &[2])), ("other", service(11, &[1]))]);
    // Fail the last write of the second sync (the deletes come last): pod 1 is already out
    // of dns's slots, so a sync that read the maps back would not see it leave.
    let mut probe = SocketLbPlane::new(FakeSocketLbMaps::default());
    probe.sync(&before).unwrap();
    probe.sync(&after).unwrap();
    let last = probe.maps().writes.len() - 1;

    let mut dp = plane_with(FaultyMaps::new(FakeSocketLbMaps::default(), [last]));
    dp.sync(&before).unwrap();
    let calls = dp.sockets().calls.len();
    assert!(dp.sync(&after).is_err());
    assert_eq!(
        dp.sockets().calls.len(),
        calls,
        "no socket ends before the maps are right"
    );
    dp.sync(&after).unwrap();
    assert_eq!(cookies(&dp.sockets().ended), [1]);

    // The same failure, then pod 1 comes back before the retry: nothing ends.
    let mut dp = plane_with(FaultyMaps::new(FakeSocketLbMaps::default(), [last]));
    dp.sync(&before).unwrap();
    assert!(dp.sync(&after).is_err());
    dp.sync(&before).unwrap();
    assert!(dp.sockets().ended.is_empty());
}

#[test]
fn a_restarted_proxy_that_adopts_the_maps_ends_sockets_for_what_changed_while_it_was_away() {
    let mut old = SocketLbPlane::new(FakeSocketLbMaps::default());
    old.sync(&udp(&[("dns", service(10, &[1, 2]))])).unwrap();
    let pinned = FakeSocketLbMaps::holding(old.maps().state.clone());
    let mut dp = plane_with(pinned);
    dp.sync(&udp(&[("dns", service(10, &[2]))])).unwrap();
    assert_eq!(cookies(&dp.sockets().ended), [1]);
}

#[test]
fn a_failing_terminator_leaves_the_sync_good_and_is_not_retried_forever() {
    let mut dp = plane_with(FakeSocketLbMaps::default());
    dp.sync(&udp(&[("dns", service(10, &[1, 2]))])).unwrap();
    let sockets = FakeSockets {
        fail: 1,
        calls: Vec::new(),
        ..dp.sockets().clone()
    };
    let state = dp.maps().state.clone();
    let mut dp = SocketLbPlane::with_terminator(FakeSocketLbMaps::holding(state), sockets);
    let report = dp.sync(&udp(&[("dns", service(10, &[2]))])).unwrap();
    assert_eq!(report.flows_cleared, 0);
    assert!(dp.sockets().ended.is_empty());
    dp.sync(&udp(&[("dns", service(10, &[2]))])).unwrap();
    assert_eq!(
        dp.sockets().calls.len(),
        1,
        "the failed pass is not repeated"
    );
}

#[test]
fn cleanup_ends_no_sockets() {
    let mut dp = plane_with(FakeSocketLbMaps::default());
    dp.sync(&udp(&[("dns", service(10, &[1, 2]))])).unwrap();
    let calls = dp.sockets().calls.len();
    dp.cleanup().unwrap();
    assert_eq!(dp.sockets().calls.len(), calls);
    assert!(dp.sockets().ended.is_empty());
}
