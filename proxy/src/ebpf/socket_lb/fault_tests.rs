//! Syncs cut short by a failing map write, at every write of several transitions: each state
//! the kernel could read meanwhile is consistent and sends a connect only where the old or the
//! new desired state does, and the next sync reads the maps back and converges.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use super::tests::{node_port, service, vip};
use super::trace::{Outcome, check, honours_pin, key_addr, trace};
use super::*;
use crate::dataplane::Dataplane;
use crate::ebpf::plane::Planner;
use crate::ebpf::{FaultyMaps, MapState};
use crate::model::DesiredState;
use crate::model::{DesiredService, NodeFacts, Protocol, ServicePortName};

fn desired(services: Vec<(&str, DesiredService)>) -> DesiredState {
    DesiredState {
        node: NodeFacts {
            ips: vec![Ipv4Addr::new(172, 31, 0, 11)],
            ..NodeFacts::default()
        },
        services: services
            .into_iter()
            .map(|(n, s)| (ServicePortName::new("default", n, "", Protocol::Tcp), s))
            .collect(),
    }
}

/// A run of desired states that exercises every kind of write.
fn steps() -> Vec<DesiredState> {
    let sticky = |mut svc: DesiredService| {
        svc.port.affinity_seconds = Some(60);
        svc
    };
    let with_external_ip = |mut svc: DesiredService| {
        svc.port.external_ips = vec![Ipv4Addr::new(192, 0, 2, 50)];
        svc
    };
    vec![
        desired(vec![]),
        desired(vec![
            ("a", node_port(1, &[1, 2], &[1, 2])),
            ("b", sticky(node_port(2, &[2, 3], &[2, 3]))),
            ("c", sticky(node_port(3, &[4], &[4, 5, 6]))),
        ]),
        desired(vec![
            ("a", node_port(1, &[3], &[3])),
            ("b", sticky(node_port(2, &[2, 4, 5], &[2, 4, 5]))),
            ("c", sticky(node_port(3, &[4], &[5]))),
            ("d", service(4, &[])),
        ]),
        desired(vec![
            ("a", with_external_ip(node_port(1, &[3, 7], &[3, 7]))),
            ("b", node_port(2, &[2, 4, 5], &[2, 4, 5])),
            ("c", sticky(node_port(3, &[4, 5], &[4, 5]))),
            ("d", service(4, &[8])),
        ]),
        desired(vec![]),
    ]
}

/// What a connect to one frontend meets, and which backends it honours a pin to.
type Seen = (Outcome, BTreeSet<SocketAddrV4>);

/// What each of `frontends` does under `state`.
fn view(state: &SocketLbState, frontends: &BTreeSet<SocketAddrV4>) -> BTreeMap<String, Seen> {
    frontends
        .iter()
        .map(|dst| {
            let outcome = trace(state, *dst, Protocol::Tcp);
            let pins = match &outcome {
                Outcome::Balanced { backends, .. } => backends
                    .iter()
                    .filter(|b| honours_pin(state, *dst, Protocol::Tcp, **b))
                    .copied()
                    .collect(),
                _ => BTreeSet::new(),
            };
            (dst.to_string(), (outcome, pins))
        })
        .collect()
}

fn frontends(states: &[&SocketLbState]) -> BTreeSet<SocketAddrV4> {
    states
        .iter()
        .flat_map(|s| s.services.keys())
        .map(key_addr)
        .collect()
}

fn backends(outcome: &Outcome) -> &[SocketAddrV4] {
    match outcome {
        Outcome::Balanced { backends, .. } => backends,
        _ => &[],
    }
}

/// A connect in the middle of a sync goes where the old or the new state sends it, or to a
/// backend of either; a pin is honoured only where the old or the new state honours it.
fn acceptable(mid: &Seen, old: &Seen, new: &Seen) -> bool {
    let either = |b: &SocketAddrV4| backends(&old.0).contains(b) || backends(&new.0).contains(b);
    let mixed = matches!(mid.0, Outcome::Balanced { .. }) && backends(&mid.0).iter().all(either);
    let outcome_ok = mid.0 == old.0 || mid.0 == new.0 || mixed;
    let pins_ok = mid.1.iter().all(|p| old.1.contains(p) || new.1.contains(p));
    outcome_ok && pins_ok
}

#[test]
fn a_sync_cut_short_at_any_write_is_safe_and_the_next_one_converges() {
    let steps = steps();
    let mut checked = 0;
    for (i, pair) in steps.windows(2).enumerate() {
        let (from, to) = (&pair[0], &pair[1]);
        let start = SocketLbPlanner::plan(from, &SocketLbState::default());
        let clean = SocketLbPlanner::plan(to, &start);
        let total = SocketLbPlanner::diff(&start, &clean).len();
        assert!(total > 0, "step {i} changes nothing");
        let all = frontends(&[&start, &clean]);
        let (old, new) = (view(&start, &all), view(&clean, &all));
        for n in 0..total {
            let what = format!("step {i}, write {n} of {total} fails");
            let maps = FaultyMaps::new(FakeSocketLbMaps::holding(start.clone()), [n]);
            let mut dp = SocketLbPlane::new(maps);
            assert!(dp.sync(to).is_err(), "{what}: no error");

            // Every state the kernel could have read: after each write that went through.
            let mut seen = start.clone();
            for write in &dp.maps().inner.writes {
                seen.apply(*write);
                check(&seen).unwrap_or_else(|e| panic!("{what}: after {write:?}: {e}"));
                let mid = view(&seen, &all);
                for (dst, now) in &mid {
                    assert!(
                        acceptable(now, &old[dst], &new[dst]),
                        "{what}: after {write:?}, {dst} {now:?} is neither {:?} nor {:?}",
                        old[dst],
                        new[dst]
                    );
                }
            }
            assert_eq!(dp.maps().inner.state, seen);

            let report = dp.sync(to).unwrap_or_else(|e| panic!("{what}: retry: {e}"));
            assert!(report.full, "{what}: the retry reads the maps back");
            let converged = &dp.maps().inner.state;
            check(converged).unwrap();
            assert_eq!(view(converged, &all), new, "{what}: converged");
            assert_eq!(
                converged,
                &SocketLbPlanner::plan(to, converged),
                "{what}: nothing left over"
            );
            assert_eq!(
                converged.len(),
                clean.len(),
                "{what}: as many entries as a clean sync"
            );
            assert_eq!(
                dp.sync(to).unwrap().written,
                0,
                "{what}: then nothing to do"
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} cut-short syncs tried");
}

#[test]
fn a_failure_while_forgetting_pins_is_retried_by_nobody_and_is_harmless() {
    // The flag goes off before the pins are cleared; if the clear fails, the next sync reads
    // the flag back as off and has nothing to clear: the kernel ignores pins of a Service
    // without the flag, so no connect goes anywhere the new state does not send it.
    let steps = steps();
    let (from, to) = (&steps[2], &steps[3]);
    let start = SocketLbPlanner::plan(from, &SocketLbState::default());
    let writes = SocketLbPlanner::diff(&start, &SocketLbPlanner::plan(to, &start));
    let clear = writes
        .iter()
        .position(|w| matches!(w, SocketLbWrite::ClearAffinity(_)))
        .expect("b's affinity goes off in step 3");
    let mut dp = SocketLbPlane::new(FaultyMaps::new(FakeSocketLbMaps::holding(start), [clear]));
    assert!(dp.sync(to).is_err());
    dp.sync(to).unwrap();
    let state = &dp.maps().inner.state;
    let b = state.services[&vip(2)];
    assert_eq!(b.flags & skiff_ebpf_common::SERVICE_FLAG_AFFINITY, 0);
    assert!(
        state
            .affinity_match
            .keys()
            .all(|k| k.service_id != b.service_id)
    );
}
