//! L1 golden tests: YAML fixtures of Services and EndpointSlices → the exact restore text of a
//! full sync on an empty node (`testdata/<name>.rules`) and the eBPF maps a first sync writes
//! (`testdata/<name>.maps`, in the form of `ebpf::socket_lb::dump` and `ebpf::external::dump`),
//! plus traces over both.
//!
//! Each fixture lists the node, the objects, and traces: a packet (source, destination, protocol,
//! from a Pod or from the node itself) and what must happen to it — which endpoints it may be
//! DNATed to (each with probability 1/n), whether it is masqueraded, and whether it is accepted,
//! rejected or dropped. The iptables ruleset must pass every trace; the eBPF maps every trace
//! that starts on this node (from a Pod or the node itself: the socket hooks see nothing else)
//! over TCP or UDP, read as the kernel program reads them — masquerade aside, which has no
//! meaning at the socket. `UPDATE_GOLDEN=1 cargo test -p skiff-proxy --test golden` rewrites
//! the `.rules` and `.maps` files; review their diff like code. Traces are never regenerated.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Deserialize;
use skiff_ebpf_common::nodeport::{EXT_FLAG_SNAT, EXT_FLAG_SOURCE_RANGES};
use skiff_ebpf_common::{IPPROTO_TCP, IPPROTO_UDP, ServiceKey, SlotKey};
use skiff_proxy::ebpf::Planner;
use skiff_proxy::ebpf::external::{ExternalPlanner, ExternalState, dump_external};
use skiff_proxy::ebpf::socket_lb::dump::{dump, service_names};
use skiff_proxy::ebpf::socket_lb::trace::{Outcome, honours_pin, trace};
use skiff_proxy::ebpf::socket_lb::{SocketLbPlanner, SocketLbState};
use skiff_proxy::iptables::render::{RenderOptions, render};
use skiff_proxy::iptables::restore::{KernelTable, full};
use skiff_proxy::iptables::trace::{Packet, Tables, Verdict};
use skiff_proxy::iptables::{Ruleset, TABLES, Table};
use skiff_proxy::model::{
    DesiredState, EndpointSliceTracker, EndpointsMap, NodeFacts, Protocol, ServiceChangeTracker,
    ServiceMap, desired_state,
};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    node: FixtureNode,
    #[serde(default)]
    services: Vec<Service>,
    #[serde(default)]
    endpoint_slices: Vec<EndpointSlice>,
    #[serde(default)]
    traces: Vec<FixtureTrace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureNode {
    name: String,
    ips: Vec<Ipv4Addr>,
    zone: Option<String>,
    cluster_cidr: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FixtureTrace {
    name: String,
    src: Ipv4Addr,
    /// `ip:port/proto`.
    dst: String,
    #[serde(default)]
    from_node: bool,
    #[serde(default)]
    endpoints: Vec<SocketAddrV4>,
    #[serde(default)]
    masquerade: bool,
    verdict: String,
    /// Pin the client to this endpoint, then trace again: only it may answer.
    pinned_to: Option<SocketAddrV4>,
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata")
}

fn load(name: &str) -> (Fixture, DesiredState) {
    let path = testdata().join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: Fixture =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut services = ServiceMap::new();
    let mut service_tracker = ServiceChangeTracker::new();
    for service in &fixture.services {
        service_tracker.update(service);
    }
    services.apply(&mut service_tracker);
    let mut endpoints = EndpointsMap::new();
    let mut slice_tracker = EndpointSliceTracker::new();
    for slice in &fixture.endpoint_slices {
        slice_tracker.update(slice);
    }
    endpoints.apply(&mut slice_tracker);
    let node = NodeFacts {
        name: fixture.node.name.clone(),
        ips: fixture.node.ips.clone(),
        zone: fixture.node.zone.clone(),
        cluster_cidr: fixture
            .node
            .cluster_cidr
            .as_ref()
            .map(|c| c.parse().unwrap()),
    };
    let desired = desired_state(&services, &endpoints, &node);
    (fixture, desired)
}

/// The ruleset of a full sync on an empty node, and its restore text.
fn rules(desired: &DesiredState) -> (Ruleset, String) {
    let ruleset = render(desired, &RenderOptions::default());
    let text: String = TABLES
        .iter()
        .map(|t| full(*t, &ruleset, &KernelTable::default()))
        .collect();
    (ruleset, text)
}

/// The maps a first eBPF sync writes (socket and NodePort), and their dump.
fn maps(desired: &DesiredState) -> (SocketLbState, ExternalState, String) {
    let maps = SocketLbPlanner::plan(desired, &SocketLbState::default());
    let external = ExternalPlanner::plan(desired, &ExternalState::default());
    let mut text = dump(&maps, &service_names(desired, &maps));
    text.push_str(&dump_external(&external));
    (maps, external, text)
}

fn check_golden(name: &str, kind: &str, text: &str) {
    let path = testdata().join(format!("{name}.{kind}"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} is missing: run with UPDATE_GOLDEN=1", path.display()));
    if expected != text {
        panic!(
            "{name}: the {kind} differ from {} (UPDATE_GOLDEN=1 rewrites it):\n{}",
            path.display(),
            diff(&expected, text)
        );
    }
}

fn diff(expected: &str, actual: &str) -> String {
    let want: BTreeSet<&str> = expected.lines().collect();
    let have: BTreeSet<&str> = actual.lines().collect();
    let mut out = String::new();
    for line in want.difference(&have) {
        out.push_str(&format!("- {line}\n"));
    }
    for line in have.difference(&want) {
        out.push_str(&format!("+ {line}\n"));
    }
    out
}

fn parse_dst(dst: &str) -> (Ipv4Addr, u16, Protocol) {
    let (addr, proto) = dst.split_once('/').unwrap_or((dst, "tcp"));
    let addr: SocketAddrV4 = addr.parse().unwrap();
    (*addr.ip(), addr.port(), proto.parse().unwrap())
}

fn run_traces(name: &str, fixture: &Fixture, ruleset: &Ruleset) {
    assert!(!fixture.traces.is_empty(), "{name} has no traces");
    let base = Tables::from_ruleset(ruleset).with_local(fixture.node.ips.iter().copied());
    for t in &fixture.traces {
        let what = format!("{name}: {}", t.name);
        let (dst, dport, protocol) = parse_dst(&t.dst);
        let packet = Packet {
            src: t.src,
            dst,
            protocol,
            dport,
            from_node: t.from_node,
        };
        let mut tables = base.clone();
        let mut trace = tables
            .trace(&packet)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(pin) = t.pinned_to {
            let choice = trace.choices.iter().find(|c| c.endpoint == pin);
            let list = choice
                .and_then(|c| c.records.clone())
                .unwrap_or_else(|| panic!("{what}: no affinity recorded for {pin}: {trace:?}"));
            tables.recent.insert((list, t.src));
            trace = tables.trace(&packet).unwrap();
            assert_eq!(
                trace.choices[0].endpoint, pin,
                "{what}: pinned endpoint first"
            );
            assert!(
                (trace.choices[0].probability - 1.0).abs() < 1e-9,
                "{what}: {trace:?}"
            );
            continue;
        }
        let got: BTreeSet<SocketAddrV4> = trace.endpoints().into_iter().collect();
        let want: BTreeSet<SocketAddrV4> = t.endpoints.iter().copied().collect();
        assert_eq!(got, want, "{what}: endpoints ({trace:?})");
        let n = trace.choices.len() as f64;
        for choice in &trace.choices {
            assert!(
                (choice.probability - 1.0 / n).abs() < 1e-6,
                "{what}: {} has probability {}, not 1/{n}",
                choice.endpoint,
                choice.probability
            );
        }
        assert_eq!(
            trace.masquerade, t.masquerade,
            "{what}: masquerade ({trace:?})"
        );
        let verdict = match t.verdict.as_str() {
            "accept" => Verdict::Accept,
            "reject" => Verdict::Reject,
            "drop" => Verdict::Drop,
            other => panic!("{what}: unknown verdict {other}"),
        };
        assert_eq!(trace.verdict, verdict, "{what}: verdict ({trace:?})");
    }
}

/// Checks the fixture's traces from other machines against the NodePort maps, the way the TC
/// ingress program reads them. The TC path differs from iptables in two places, both checked
/// here as they are: a frontend without endpoints drops (iptables rejects), and under the
/// `Cluster` policy only remote backends are source-NATed (iptables masquerades all).
fn run_external_traces(name: &str, fixture: &Fixture, external: &ExternalState) {
    let cluster: Option<Ipv4Net> = fixture
        .node
        .cluster_cidr
        .as_ref()
        .map(|c| c.parse().unwrap());
    for t in &fixture.traces {
        let what = format!("{name} (external maps): {}", t.name);
        let (dst, dport, protocol) = parse_dst(&t.dst);
        let local = t.from_node || cluster.is_some_and(|c| c.contains(&t.src));
        let proto = match protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => continue,
        };
        if local || t.pinned_to.is_some() {
            continue;
        }
        let frontend = external
            .services
            .get(&ServiceKey::new(dst.octets(), dport, proto));
        let Some(value) = frontend else {
            // Not ours (a ClusterIP from outside, a port elsewhere): the TC program lets it be.
            assert!(
                t.verdict != "accept" || t.endpoints.is_empty() || !fixture.node.ips.contains(&dst),
                "{what}: no external frontend for {dst}:{dport}"
            );
            continue;
        };
        let admitted = value.flags & EXT_FLAG_SOURCE_RANGES == 0
            || external
                .sources
                .iter()
                .any(|(id, range)| *id == value.service_id && range.contains(&t.src));
        if !admitted {
            assert_eq!(
                t.verdict, "drop",
                "{what}: a source outside the ranges is dropped"
            );
            continue;
        }
        let backends: BTreeSet<SocketAddrV4> = (0..value.backend_count)
            .filter_map(|slot| {
                external.slots.get(&SlotKey {
                    service_id: value.service_id,
                    slot,
                })
            })
            .map(|slot| {
                SocketAddrV4::new(
                    Ipv4Addr::from(slot.backend.octets()),
                    slot.backend.host_port(),
                )
            })
            .collect();
        match t.verdict.as_str() {
            "accept" => {
                let want: BTreeSet<SocketAddrV4> = t.endpoints.iter().copied().collect();
                assert_eq!(backends, want, "{what}: backends");
                assert_eq!(
                    value.flags & EXT_FLAG_SNAT != 0,
                    t.masquerade,
                    "{what}: source NAT for remote backends"
                );
            }
            "reject" | "drop" => assert!(backends.is_empty(), "{what}: {backends:?}"),
            other => panic!("{what}: unknown verdict {other}"),
        }
    }
}

/// Checks the fixture's traces that the socket hooks see against the maps.
fn run_map_traces(name: &str, fixture: &Fixture, maps: &SocketLbState) {
    let cluster: Option<Ipv4Net> = fixture
        .node
        .cluster_cidr
        .as_ref()
        .map(|c| c.parse().unwrap());
    let mut ran = 0;
    for t in &fixture.traces {
        let what = format!("{name} (maps): {}", t.name);
        let (dst, dport, protocol) = parse_dst(&t.dst);
        let local = t.from_node || cluster.is_some_and(|c| c.contains(&t.src));
        if !local || protocol == Protocol::Sctp {
            continue;
        }
        ran += 1;
        let dst = SocketAddrV4::new(dst, dport);
        let outcome = trace(maps, dst, protocol);
        if let Some(pin) = t.pinned_to {
            assert!(
                honours_pin(maps, dst, protocol, pin),
                "{what}: a client pinned to {pin} is not sent back to it ({outcome:?})"
            );
            continue;
        }
        match (t.verdict.as_str(), &outcome) {
            ("reject", Outcome::Refused) | ("drop", Outcome::Dropped) => {}
            ("accept", Outcome::Untouched) if t.endpoints.is_empty() => {}
            ("accept", Outcome::Balanced { backends, .. }) => {
                let want: BTreeSet<SocketAddrV4> = t.endpoints.iter().copied().collect();
                let got: BTreeSet<SocketAddrV4> = backends.iter().copied().collect();
                assert_eq!(got, want, "{what}: backends");
                assert_eq!(got.len(), backends.len(), "{what}: a backend twice");
            }
            (verdict, outcome) => panic!("{what}: want {verdict}, the maps give {outcome:?}"),
        }
    }
    assert!(ran > 0, "{name} has no trace from this node");
}

fn golden(name: &str) {
    let (fixture, desired) = load(name);
    let (ruleset, text) = rules(&desired);
    check_golden(name, "rules", &text);
    run_traces(name, &fixture, &ruleset);
    let (maps, external, text) = maps(&desired);
    check_golden(name, "maps", &text);
    run_map_traces(name, &fixture, &maps);
    run_external_traces(name, &fixture, &external);
}

#[test]
fn clusterip() {
    golden("clusterip");
}

#[test]
fn nodeport() {
    golden("nodeport");
}

#[test]
fn loadbalancer() {
    golden("loadbalancer");
}

#[test]
fn policies() {
    golden("policies");
}

#[test]
fn skipped() {
    golden("skipped");
    let (_, desired) = load("skipped");
    let (ruleset, _) = rules(&desired);
    assert!(
        ruleset
            .chains(Table::Nat)
            .keys()
            .all(|c| !c.starts_with("SKIFF-SVC-")),
        "headless and foreign Services get no chains"
    );
    let (socket, external, _) = maps(&desired);
    assert!(
        socket.is_empty() && external.services.is_empty(),
        "nor map entries"
    );
}
