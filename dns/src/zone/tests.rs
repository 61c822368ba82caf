//! The specification's cases, one by one, against an index of a few Services.

use std::net::IpAddr;

use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::json;

use super::{ClusterZone, SCHEMA_VERSION, ZoneAnswer};
use crate::index::Index;
use crate::index::tests::{service, slice};

fn zone() -> ClusterZone {
    ClusterZone::new("cluster.local", 5).unwrap()
}

fn index() -> Index {
    let mut index = Index::new();
    index.apply_service(&service(
        "default",
        "web",
        json!({"clusterIP": "10.96.0.20",
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                         {"name": "dns", "port": 53, "protocol": "UDP"}]}),
    ));
    index.apply_service(&service("default", "db", json!({"clusterIP": "None"})));
    index.apply_slice(&slice(
        "default",
        "db-abc",
        "db",
        &[
            ("10.244.1.5", Some("db-0"), true),
            ("10.244.2.6", None, true),
            ("10.244.3.7", Some("db-2"), false),
        ],
        &[("pg", 5432)],
    ));
    index.apply_service(&service(
        "team",
        "ext",
        json!({"type": "ExternalName", "externalName": "www.example.com"}),
    ));
    index.apply_service(&service(
        "kube-system",
        "kube-dns",
        json!({"clusterIP": "10.96.0.10"}),
    ));
    index
}

fn ask(name: &str, qtype: RecordType) -> ZoneAnswer {
    zone().lookup(&index(), &Name::from_ascii(name).unwrap(), qtype)
}

/// The answer's records as `name type data` lines.
fn lines(answer: &ZoneAnswer) -> Vec<String> {
    match answer {
        ZoneAnswer::Found {
            answers,
            additionals,
        } => answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .chain(
                additionals
                    .iter()
                    .map(|r| format!("+ {} {} {}", r.name, r.record_type(), r.data)),
            )
            .collect(),
        other => vec![format!("{other:?}")],
    }
}

#[test]
fn a_cluster_ip_service_is_its_address_in_any_case() {
    assert_eq!(
        lines(&ask("web.default.svc.cluster.local.", RecordType::A)),
        ["web.default.svc.cluster.local. A 10.96.0.20"]
    );
    // The owner is the name as asked (0x20 case randomisation must see its own case back).
    assert_eq!(
        lines(&ask("WeB.Default.SVC.cluster.LOCAL.", RecordType::A)),
        ["WeB.Default.SVC.cluster.LOCAL. A 10.96.0.20"]
    );
    assert_eq!(
        ask("web.default.svc.cluster.local.", RecordType::AAAA),
        ZoneAnswer::NoData
    );
}

#[test]
fn a_headless_service_is_its_ready_endpoints_and_each_by_its_label() {
    assert_eq!(
        lines(&ask("db.default.svc.cluster.local.", RecordType::A)),
        [
            "db.default.svc.cluster.local. A 10.244.1.5",
            "db.default.svc.cluster.local. A 10.244.2.6"
        ]
    );
    assert_eq!(
        lines(&ask("db-0.db.default.svc.cluster.local.", RecordType::A)),
        ["db-0.db.default.svc.cluster.local. A 10.244.1.5"]
    );
    assert_eq!(
        lines(&ask(
            "10-244-2-6.db.default.svc.cluster.local.",
            RecordType::A
        )),
        ["10-244-2-6.db.default.svc.cluster.local. A 10.244.2.6"]
    );
    // Not ready: not named.
    assert_eq!(
        ask("db-2.db.default.svc.cluster.local.", RecordType::A),
        ZoneAnswer::NxDomain
    );
    // A ClusterIP Service's endpoints are not named.
    assert_eq!(
        ask("10-244-1-5.web.default.svc.cluster.local.", RecordType::A),
        ZoneAnswer::NxDomain
    );
}

#[test]
fn named_ports_are_srv_records_with_their_targets_addresses() {
    assert_eq!(
        lines(&ask(
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV
        )),
        [
            "_http._tcp.web.default.svc.cluster.local. SRV 0 100 80 web.default.svc.cluster.local.",
            "+ web.default.svc.cluster.local. A 10.96.0.20"
        ]
    );
    assert_eq!(
        lines(&ask(
            "_pg._tcp.db.default.svc.cluster.local.",
            RecordType::SRV
        )),
        [
            "_pg._tcp.db.default.svc.cluster.local. SRV 0 50 5432 db-0.db.default.svc.cluster.local.",
            "_pg._tcp.db.default.svc.cluster.local. SRV 0 50 5432 10-244-2-6.db.default.svc.cluster.local.",
            "+ db-0.db.default.svc.cluster.local. A 10.244.1.5",
            "+ 10-244-2-6.db.default.svc.cluster.local. A 10.244.2.6"
        ]
    );
    // The protocol must match; a port that is not there is no name.
    assert_eq!(
        ask("_http._udp.web.default.svc.cluster.local.", RecordType::SRV),
        ZoneAnswer::NxDomain
    );
    assert_eq!(
        ask("_dns._udp.web.default.svc.cluster.local.", RecordType::A),
        ZoneAnswer::NoData
    );
    assert_eq!(
        ask("_udp.web.default.svc.cluster.local.", RecordType::A),
        ZoneAnswer::NoData
    );
    // SRV at the Service's name: every named port.
    assert_eq!(
        lines(&ask("web.default.svc.cluster.local.", RecordType::SRV)).len(),
        3
    );
}

#[test]
fn an_external_name_service_is_a_cname_to_chase() {
    let ZoneAnswer::Alias { cname, target } = ask("ext.team.svc.cluster.local.", RecordType::A)
    else {
        panic!("an alias");
    };
    assert_eq!(target, Name::from_ascii("www.example.com.").unwrap());
    assert_eq!(cname.record_type(), RecordType::CNAME);
    assert_eq!(
        lines(&ask("ext.team.svc.cluster.local.", RecordType::CNAME)),
        ["ext.team.svc.cluster.local. CNAME www.example.com."]
    );
}

#[test]
fn pods_are_named_by_their_address_in_any_namespace() {
    assert_eq!(
        lines(&ask("10-244-1-9.team.pod.cluster.local.", RecordType::A)),
        ["10-244-1-9.team.pod.cluster.local. A 10.244.1.9"]
    );
    assert_eq!(
        ask("not-an-ip.team.pod.cluster.local.", RecordType::A),
        ZoneAnswer::NxDomain
    );
}

#[test]
fn the_zone_apex_version_and_empty_names() {
    assert_eq!(
        lines(&ask("dns-version.cluster.local.", RecordType::TXT)),
        [format!("dns-version.cluster.local. TXT {SCHEMA_VERSION}")]
    );
    let soa = lines(&ask("cluster.local.", RecordType::SOA));
    assert!(
        soa[0].starts_with("cluster.local. SOA ns.dns.cluster.local. hostmaster.cluster.local."),
        "{soa:?}"
    );
    assert_eq!(
        lines(&ask("cluster.local.", RecordType::NS)),
        ["cluster.local. NS ns.dns.cluster.local."]
    );
    assert_eq!(
        lines(&ask("ns.dns.cluster.local.", RecordType::A)),
        ["ns.dns.cluster.local. A 10.96.0.10"]
    );
    for name in [
        "svc.cluster.local.",
        "default.svc.cluster.local.",
        "pod.cluster.local.",
    ] {
        assert_eq!(ask(name, RecordType::A), ZoneAnswer::NoData, "{name}");
    }
    for name in [
        "nobody.svc.cluster.local.",
        "missing.default.svc.cluster.local.",
        "web.default.cluster.local.",
        "a.b.c.d.e.f.web.default.svc.cluster.local.",
        "other.cluster.local.",
    ] {
        assert_eq!(ask(name, RecordType::A), ZoneAnswer::NxDomain, "{name}");
    }
}

#[test]
fn cluster_ips_and_headless_endpoints_have_ptr_records_and_others_fall_through() {
    let zone = zone();
    let index = index();
    let ptr = |ip: &str| {
        let name = Name::from(ip.parse::<IpAddr>().unwrap());
        zone.lookup_reverse(&index, &name, RecordType::PTR)
    };
    let targets = |answer: Option<ZoneAnswer>| match answer {
        Some(ZoneAnswer::Found { answers, .. }) => answers
            .iter()
            .map(|r| match &r.data {
                RData::PTR(ptr) => ptr.0.to_string(),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>(),
        other => vec![format!("{other:?}")],
    };
    assert_eq!(
        targets(ptr("10.96.0.20")),
        ["web.default.svc.cluster.local."]
    );
    assert_eq!(
        targets(ptr("10.244.1.5")),
        ["db-0.db.default.svc.cluster.local."]
    );
    assert_eq!(ptr("10.244.3.7"), None, "not ready");
    assert_eq!(ptr("192.0.2.1"), None, "not the cluster's");
    let partial = Name::from_ascii("244.10.in-addr.arpa.").unwrap();
    assert_eq!(zone.lookup_reverse(&index, &partial, RecordType::PTR), None);
}
