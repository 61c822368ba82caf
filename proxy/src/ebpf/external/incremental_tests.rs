//! Incremental external-traffic syncs against full plans, through random churn.

use std::net::Ipv4Addr;

use super::*;
use crate::dataplane::Dataplane;
use crate::ebpf::churn_tests::{churn, one_node};
use crate::ebpf::incremental::AppliedServices;
use crate::model::DesiredState;
use crate::model::{DesiredService, EndpointAddr, Protocol, ServicePort, ServicePortName};
use skiff_common::rng::SmallRng;

fn name(i: u32) -> ServicePortName {
    ServicePortName::new("ns", &format!("s{i}"), "", Protocol::Tcp)
}

fn random_service(rng: &mut SmallRng) -> DesiredService {
    // Now and then two Services claim one frontend (contested: planned in full).
    let endpoints: Vec<EndpointAddr> = (0..rng.below(4))
        .map(|_| EndpointAddr {
            ip: Ipv4Addr::new(10, 244, 1, 1 + rng.below(30) as u8),
            port: 8080,
            local: rng.below(2) == 0,
        })
        .collect();
    let mut port = ServicePort {
        cluster_ips: vec![Ipv4Addr::new(10, 96, 0, 1 + rng.below(200) as u8)],
        port: 80 + rng.below(3) as u16,
        external_policy_local: rng.below(3) == 0,
        ..ServicePort::default()
    };
    match rng.below(4) {
        0 => port.node_port = Some(30000 + rng.below(2000) as u16),
        1 => {
            port.external_ips = vec![Ipv4Addr::new(
                203,
                0,
                rng.below(8) as u8,
                1 + rng.below(250) as u8,
            )]
        }
        2 => {
            port.load_balancer_ips = vec![Ipv4Addr::new(
                198,
                51,
                rng.below(8) as u8,
                1 + rng.below(250) as u8,
            )];
            if rng.below(2) == 0 {
                port.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
            }
        }
        _ => {}
    }
    if rng.below(4) == 0 {
        port.affinity_seconds = Some(10);
    }
    DesiredService {
        port,
        internal_endpoints: endpoints.clone(),
        has_endpoints: !endpoints.is_empty(),
        local_ready: endpoints.iter().filter(|e| e.local).count(),
        external_endpoints: endpoints,
    }
}

#[test]
fn incremental_syncs_leave_what_a_full_plan_would_through_random_churn() {
    let mut rng = SmallRng::seeded(7);
    let mut desired = one_node();
    for i in 0..100 {
        let mut svc = random_service(&mut rng);
        // Distinct node ports to start with, so the first syncs are not all contested.
        svc.port.node_port = Some(31000 + i as u16);
        desired.services.insert(name(i), svc);
    }
    let mut plane = ExternalPlane::new(FakeExternalMaps::default());
    plane.sync(&desired).unwrap();
    let change = |desired: &mut DesiredState, rng: &mut SmallRng| {
        let n = name(rng.below(140) as u32);
        match rng.below(6) {
            0 => _ = desired.services.remove(&n),
            1 => {
                if let Some(svc) = desired.services.get_mut(&n) {
                    svc.external_endpoints.pop();
                }
            }
            _ => _ = desired.services.insert(n, random_service(rng)),
        }
    };
    let mut contested = 0;
    let seen = churn(&mut plane, &mut desired, &mut rng, change, |_, plane| {
        contested += usize::from(plane.applied().is_some_and(AppliedServices::contested));
    });
    assert_eq!(
        seen.partial, 400,
        "every sync after the first one works from what it holds"
    );
    assert!(
        seen.small > 300 && contested > 10 && contested < 300,
        "{} small syncs, {contested} contested",
        seen.small
    );
}

#[test]
fn one_endpoint_change_among_many_node_ports_plans_one_service() {
    let mut desired = one_node();
    let mut rng = SmallRng::seeded(3);
    for i in 0..2000u32 {
        let mut svc = random_service(&mut rng);
        svc.port.node_port = Some(30000 + i as u16);
        svc.port.external_ips.clear();
        svc.port.load_balancer_ips.clear();
        svc.external_endpoints = vec![EndpointAddr {
            ip: Ipv4Addr::from(0x0AF4_0000 + i),
            port: 8080,
            local: false,
        }];
        desired.services.insert(name(i), svc);
    }
    let mut plane = ExternalPlane::new(FakeExternalMaps::default());
    plane.sync(&desired).unwrap();
    let svc = desired.services.get_mut(&name(7)).unwrap();
    svc.external_endpoints[0].ip = Ipv4Addr::new(10, 250, 0, 1);
    let report = plane.sync(&desired).unwrap();
    assert!(!report.full);
    let last = plane.maps().writes.last().copied();
    assert_eq!(report.written, 1, "{last:?}");
    assert!(matches!(last, Some(ExternalWrite::PutSlot(..))), "{last:?}");
}
