use std::net::Ipv4Addr;

use super::*;
use crate::conntrack::FakeConntrack;
use crate::model::{
    DesiredService, EndpointAddr, NodeFacts, Protocol, ServicePort, ServicePortName,
};
use skiff_common::rng::SmallRng;
use skiff_iptables::Chains;

fn name(n: u8) -> ServicePortName {
    ServicePortName::new("ns", &format!("svc{n}"), "", Protocol::Tcp)
}

fn service(n: u8, endpoints: &[u8]) -> DesiredService {
    let eps: Vec<EndpointAddr> = endpoints
        .iter()
        .map(|last| EndpointAddr {
            ip: Ipv4Addr::new(10, 244, n, *last),
            port: 8080,
            local: false,
        })
        .collect();
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![Ipv4Addr::new(10, 96, 0, n)],
            port: 80,
            ..ServicePort::default()
        },
        internal_endpoints: eps,
        external_endpoints: Vec::new(),
        has_endpoints: !endpoints.is_empty(),
        local_ready: 0,
    }
}

fn state(services: &[(u8, &[u8])]) -> DesiredState {
    DesiredState {
        node: NodeFacts {
            name: "n1".into(),
            ips: vec![Ipv4Addr::new(172, 31, 0, 11)],
            zone: None,
            cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        },
        services: services
            .iter()
            .map(|(n, eps)| (name(*n), service(*n, eps)))
            .collect(),
    }
}

type Plane = IptablesDataplane<FakeIptables, FakeConntrack>;

fn plane() -> (Plane, FakeIptables) {
    let fake = FakeIptables::new();
    let plane = IptablesDataplane::new(
        fake.clone(),
        FakeConntrack::default(),
        RenderOptions::default(),
    );
    (plane, fake)
}

fn nat_text(fake: &FakeIptables) -> String {
    let restores = fake.restores();
    restores
        .iter()
        .flat_map(|text| text.split_inclusive("COMMIT\n"))
        .filter(|section| section.starts_with("*nat\n"))
        .collect()
}

#[test]
fn the_first_sync_is_full_and_hooks_are_inserted_once() {
    let (mut plane, fake) = plane();
    let report = plane.sync(&state(&[(1, &[1, 2])])).unwrap();
    assert!(report.full);
    assert!(report.rules["nat"] > 0);
    // nat and filter change together: one restore names both.
    let restores = fake.restores();
    assert_eq!(restores.len(), 1);
    assert!(restores[0].starts_with("*filter\n") && restores[0].contains("\n*nat\n"));
    let prerouting = &fake.chains(Table::Nat)["PREROUTING"];
    assert_eq!(prerouting.len(), 1);
    assert!(prerouting[0].ends_with("-j SKIFF-SERVICES"));
    assert_eq!(fake.chains(Table::Filter)["INPUT"].len(), 2);
    // Forced full syncs find the hooks in place and add none.
    plane.force_full_sync();
    assert!(plane.sync(&state(&[(1, &[1, 2])])).unwrap().full);
    assert_eq!(fake.chains(Table::Nat)["PREROUTING"].len(), 1);
    assert_eq!(fake.chains(Table::Filter)["OUTPUT"].len(), 2);
}

#[test]
fn a_partial_sync_writes_only_the_changed_services_chain() {
    let (mut plane, fake) = plane();
    plane.sync(&state(&[(1, &[1, 2]), (2, &[1])])).unwrap();
    fake.clear_history();
    let report = plane.sync(&state(&[(1, &[1, 2]), (2, &[1, 2])])).unwrap();
    assert!(!report.full);
    let text = nat_text(&fake);
    let declared: Vec<&str> = text.lines().filter(|l| l.starts_with(':')).collect();
    // The new endpoint address also joins the hairpin lookup, its only other chain.
    assert_eq!(
        declared,
        [
            format!(":{} - [0:0]", render::HAIRPIN),
            format!(":{} - [0:0]", render::svc_chain(&name(2)))
        ]
    );
    assert!(
        fake.restores().iter().all(|text| !text.contains("*filter")),
        "filter did not change"
    );
    // The kernel holds exactly what a full render says.
    let expected = render::render(
        &state(&[(1, &[1, 2]), (2, &[1, 2])]),
        &RenderOptions::default(),
    );
    for (chain, rules) in expected.chains(Table::Nat) {
        assert_eq!(&fake.chains(Table::Nat)[chain], rules, "{chain}");
    }
}

#[test]
fn nothing_changed_means_no_restore_at_all() {
    let (mut plane, fake) = plane();
    plane.sync(&state(&[(1, &[1])])).unwrap();
    fake.clear_history();
    let report = plane.sync(&state(&[(1, &[1])])).unwrap();
    assert_eq!(report.written, 0);
    assert!(fake.restores().is_empty());
}

#[test]
fn a_removed_service_loses_its_chain_and_an_emptied_one_is_rejected() {
    let (mut plane, fake) = plane();
    plane.sync(&state(&[(1, &[1]), (2, &[1])])).unwrap();
    plane.sync(&state(&[(2, &[])])).unwrap();
    let nat = fake.chains(Table::Nat);
    assert!(
        nat.keys().all(|c| !c.starts_with("SKIFF-SVC-")),
        "{:?}",
        nat.keys()
    );
    let rejects = &fake.chains(Table::Filter)["SKIFF-SERVICES"];
    assert_eq!(rejects.len(), 1);
    assert!(
        rejects[0].starts_with("-d 10.96.0.2/32 -p tcp")
            && rejects[0].ends_with("-j REJECT --reject-with tcp-reset")
    );
}

#[test]
fn after_a_failed_sync_the_next_one_is_full() {
    let (mut plane, fake) = plane();
    plane.sync(&state(&[(1, &[1])])).unwrap();
    fake.fail_next_restores(1);
    assert!(plane.sync(&state(&[(1, &[1, 2])])).is_err());
    let report = plane.sync(&state(&[(1, &[1, 2])])).unwrap();
    assert!(report.full);
    let svc = &fake.chains(Table::Nat)[&render::svc_chain(&name(1))];
    assert_eq!(svc.iter().filter(|r| r.contains("DNAT")).count(), 2);
}

#[test]
fn a_restarted_proxy_removes_chains_it_no_longer_wants() {
    let fake = FakeIptables::new();
    let mut first = IptablesDataplane::new(
        fake.clone(),
        FakeConntrack::default(),
        RenderOptions::default(),
    );
    first.sync(&state(&[(1, &[1]), (2, &[1])])).unwrap();
    let mut second = IptablesDataplane::new(
        fake.clone(),
        FakeConntrack::default(),
        RenderOptions::default(),
    );
    second.sync(&state(&[(2, &[1])])).unwrap();
    let nat = fake.chains(Table::Nat);
    assert!(!nat.contains_key(&render::svc_chain(&name(1))));
    assert!(nat.contains_key(&render::svc_chain(&name(2))));
    assert_eq!(nat["PREROUTING"].len(), 1);
}

#[test]
fn cleanup_leaves_no_chain_or_hook_of_ours() {
    let (mut plane, fake) = plane();
    plane.sync(&state(&[(1, &[1]), (2, &[])])).unwrap();
    plane.cleanup().unwrap();
    for table in TABLES {
        let save = fake.save(table).unwrap();
        assert!(!save.contains("SKIFF-"), "{save}");
    }
    // A second cleanup has nothing to do.
    fake.clear_history();
    plane.cleanup().unwrap();
    assert!(fake.restores().is_empty());
}

#[test]
fn many_services_are_dispatched_through_a_prefix_tree() {
    let services: Vec<(u8, &[u8])> = (1..=200).map(|n| (n, &[1u8][..])).collect();
    let ruleset = render::render(&state(&services), &RenderOptions::default());
    let nat = ruleset.chains(Table::Nat);
    let top = &nat["SKIFF-SERVICES"];
    assert!(top.len() <= 17, "{} rules at the top", top.len());
    assert!(nat.keys().any(|c| c.starts_with("SKIFF-DST-")));
    // Every one of them is still reached.
    let tables = trace::Tables::from_ruleset(&ruleset);
    for n in [1u8, 77, 200] {
        let t = tables
            .trace(&trace::Packet {
                src: Ipv4Addr::new(10, 244, 9, 9),
                dst: Ipv4Addr::new(10, 96, 0, n),
                protocol: Protocol::Tcp,
                dport: 80,
                from_node: false,
            })
            .unwrap();
        assert_eq!(
            t.endpoints(),
            [std::net::SocketAddrV4::new(
                Ipv4Addr::new(10, 244, n, 1),
                8080
            )]
        );
        let hops = t
            .path
            .iter()
            .filter(|c| c.starts_with("nat/SKIFF-DST-"))
            .count();
        assert!((1..=2).contains(&hops), "{:?}", t.path);
    }
}

fn random_service(rng: &mut SmallRng, i: u64) -> DesiredService {
    // Few distinct addresses, so trees split deeply, addresses are shared and groups merge.
    let ip = |rng: &mut SmallRng| {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + rng.below(600) as u32)
    };
    let endpoints: Vec<EndpointAddr> = (0..rng.below(4))
        .map(|_| EndpointAddr {
            ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + rng.below(400) as u32),
            port: 8080,
            local: false,
        })
        .collect();
    let node_port = (rng.below(3) == 0).then_some(30_000 + i as u16);
    DesiredService {
        port: ServicePort {
            cluster_ips: vec![ip(rng)],
            external_ips: (0..rng.below(2)).map(|_| ip(rng)).collect(),
            port: 80,
            node_port,
            ..ServicePort::default()
        },
        external_endpoints: if node_port.is_some() || rng.below(2) == 0 {
            endpoints.clone()
        } else {
            Vec::new()
        },
        has_endpoints: !endpoints.is_empty(),
        internal_endpoints: endpoints,
        local_ready: 0,
    }
}

#[test]
fn patched_rulesets_equal_fresh_renders_through_random_churn() {
    let mut rng = SmallRng::seeded(7);
    let mut desired = state(&[]);
    let (mut plane, fake) = plane();
    let mut renderer = Renderer::new(RenderOptions::default());
    for step in 0..300 {
        // Mostly single changes, sometimes a burst, sometimes a mass removal.
        let changes = match step % 50 {
            0 => 200,
            25 => 0,
            _ => 1 + rng.below(3),
        };
        if step % 50 == 25 {
            let keep = rng.below(3);
            desired.services.retain(|_, _| rng.below(3) < keep);
        }
        for _ in 0..changes {
            let i = rng.below(400);
            let name = ServicePortName::new("ns", &format!("svc{i}"), "", Protocol::Tcp);
            if rng.below(5) == 0 {
                desired.services.remove(&name);
            } else {
                desired.services.insert(name, random_service(&mut rng, i));
            }
        }
        if step == 150 {
            desired.node.ips.push(Ipv4Addr::new(172, 31, 0, 12));
        }
        renderer.render(&desired);
        let fresh = render::render(&desired, &RenderOptions::default());
        assert_eq!(renderer.ruleset(), &fresh, "step {step}");
        plane.sync(&desired).unwrap();
        for table in TABLES {
            let ours: Chains = fake
                .chains(table)
                .into_iter()
                .filter(|(name, _)| name.starts_with(render::CHAIN_PREFIX))
                .collect();
            assert_eq!(&ours, fresh.chains(table), "step {step} {table:?}");
        }
    }
}

#[test]
fn an_endpoint_far_from_all_others_rewrites_a_few_chains_not_the_tree() {
    // 2,000 Services × 4 endpoints: deep trees over both Service and endpoint addresses, the
    // endpoints spread over 10.244.0.0/15 (a common prefix not on a 4-bit boundary).
    let mut desired = state(&[]);
    for i in 0..2_000u32 {
        let mut svc = service(0, &[]);
        svc.port.cluster_ips = vec![Ipv4Addr::from(0x0A60_0000 + i * 7)];
        svc.internal_endpoints = (0..4)
            .map(|e| EndpointAddr {
                ip: Ipv4Addr::from(0x0AF4_0000 + (i * 4 + e) * 16),
                port: 8080,
                local: false,
            })
            .collect();
        svc.has_endpoints = true;
        let name = ServicePortName::new("ns", &format!("svc{i}"), "", Protocol::Tcp);
        desired.services.insert(name, svc);
    }
    let (mut plane, _fake) = plane();
    let full = plane.sync(&desired).unwrap();
    assert!(
        full.written > 300,
        "{} chains in the full sync",
        full.written
    );
    // One endpoint moves to an address outside every existing prefix (a new node's podCIDR):
    // the endpoint tree's root changes, but its chains keep their names.
    let first = ServicePortName::new("ns", "svc0", "", Protocol::Tcp);
    let svc = desired.services.get_mut(&first).unwrap();
    svc.internal_endpoints[0].ip = Ipv4Addr::new(10, 250, 0, 1);
    let one = plane.sync(&desired).unwrap();
    assert!(!one.full);
    assert!(
        one.written <= 8,
        "{} chains for one endpoint change",
        one.written
    );
}
