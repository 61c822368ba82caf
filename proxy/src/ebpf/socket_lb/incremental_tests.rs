//! Incremental syncs against full plans, through random churn.

use std::net::Ipv4Addr;

use super::tests::{ep, name, node_port, service};
use super::*;
use crate::dataplane::Dataplane;
use crate::ebpf::churn_tests::{churn, one_node};
use crate::model::{DesiredState, Protocol};
use skiff_common::rng::SmallRng;

fn random_service(rng: &mut SmallRng) -> crate::model::DesiredService {
    // Few addresses: backends are shared between Services, and sometimes two Services claim
    // one ClusterIP (the contested case).
    let vip = 1 + rng.below(120) as u8;
    let endpoints: Vec<u8> = (0..rng.below(4)).map(|_| 1 + rng.below(30) as u8).collect();
    let mut svc = if rng.below(3) == 0 {
        node_port(vip, &endpoints, &endpoints)
    } else {
        service(vip, &endpoints)
    };
    if rng.below(4) == 0 {
        svc.port.affinity_seconds = Some(10);
    }
    svc
}

#[test]
fn incremental_syncs_write_what_a_full_plan_would_through_random_churn() {
    let mut rng = SmallRng::seeded(11);
    let mut desired = one_node();
    for i in 0..100 {
        desired.services.insert(
            name(&format!("s{i}"), Protocol::Tcp),
            service(1 + i as u8, &[1 + (i % 30) as u8]),
        );
    }
    let mut plane = SocketLbPlane::new(FakeSocketLbMaps::default());
    plane.sync(&desired).unwrap();
    let change = |desired: &mut DesiredState, rng: &mut SmallRng| {
        let n = name(&format!("s{}", rng.below(140)), Protocol::Tcp);
        match rng.below(6) {
            0 => _ = desired.services.remove(&n),
            1 => {
                if let Some(svc) = desired.services.get_mut(&n) {
                    svc.internal_endpoints.push(ep(1 + rng.below(30) as u8));
                    svc.has_endpoints = true;
                }
            }
            _ => _ = desired.services.insert(n, random_service(rng)),
        }
    };
    let seen = churn(&mut plane, &mut desired, &mut rng, change, |step, plane| {
        trace::check(&plane.maps().state).unwrap_or_else(|e| panic!("step {step}: {e}"));
    });
    assert!(seen.small > 300, "only {} small syncs", seen.small);
}

#[test]
fn one_endpoint_change_among_many_services_writes_one_slot() {
    let mut desired = DesiredState::default();
    for i in 0..2000u32 {
        let mut svc = service(0, &[1, 2]);
        svc.port.cluster_ips = vec![Ipv4Addr::from(0x0A60_0000 + i)];
        svc.internal_endpoints[0].ip = Ipv4Addr::from(0x0AF4_0000 + 2 * i);
        svc.internal_endpoints[1].ip = Ipv4Addr::from(0x0AF4_0001 + 2 * i);
        desired
            .services
            .insert(name(&format!("s{i}"), Protocol::Tcp), svc);
    }
    let mut plane = SocketLbPlane::new(FakeSocketLbMaps::default());
    plane.sync(&desired).unwrap();
    let svc = desired
        .services
        .get_mut(&name("s7", Protocol::Tcp))
        .unwrap();
    svc.internal_endpoints[1].ip = Ipv4Addr::new(10, 250, 0, 1);
    let report = plane.sync(&desired).unwrap();
    // A new backend, its slot, and the old backend deleted.
    assert_eq!(
        report.written,
        3,
        "{:?}",
        &plane.maps().writes[plane.maps().writes.len() - 3..]
    );
}
