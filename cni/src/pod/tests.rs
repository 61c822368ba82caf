use super::*;
use crate::fake_kernel::{FakeRoute, NODE};
use crate::link::FakeNamespaces;
use crate::network::Neighbour;

const NETNS: &str = "/run/netns/pod1";

fn net() -> PodNetwork {
    PodNetwork {
        cidr: PodCidr::new("10.244.1.0/24".parse().unwrap()).unwrap(),
        mtu: 1450,
    }
}

fn who() -> Attachment {
    Attachment::new("c0ffee", "eth0")
}

fn ip() -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 7)
}

fn gw() -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, 1)
}

fn fake_with_pod() -> FakeNamespaces {
    let fake = FakeNamespaces::new();
    fake.kernel().add_netns(NETNS);
    fake
}

/// [`who`] attached in [`NETNS`], and `second` in a namespace of its own.
fn two_pods(second: &Attachment) -> FakeNamespaces {
    let fake = fake_with_pod();
    let pod2 = Path::new("/run/netns/pod2");
    fake.kernel().add_netns(&pod2.to_string_lossy());
    attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    let second_ip = Ipv4Addr::new(10, 244, 1, 8);
    attach(&fake, net(), second, pod2, second_ip).unwrap();
    fake
}

#[test]
fn host_veth_macs_are_locally_administered_unicast_and_per_attachment() {
    let mac = host_veth_mac(&who());
    assert_eq!(mac.0[0] & 0x03, 0x02, "{mac:?}");
    assert_eq!(mac, host_veth_mac(&Attachment::new("c0ffee", "eth0")));
    assert_ne!(mac, host_veth_mac(&Attachment::new("c0ffee", "net1")));
    assert_ne!(mac, host_veth_mac(&Attachment::new("c0fffe", "eth0")));
}

#[test]
fn host_veth_names_are_stable_short_and_per_ifname() {
    let name = host_veth_name(&who());
    assert_eq!(name, host_veth_name(&Attachment::new("c0ffee", "eth0")));
    assert_eq!(name.len(), 14);
    assert!(is_host_veth_name(&name), "{name}");
    assert_ne!(name, host_veth_name(&Attachment::new("c0ffee", "net1")));
    assert_ne!(
        host_veth_name(&Attachment::new("ab", "c")),
        host_veth_name(&Attachment::new("a", "bc"))
    );
    assert!(!is_host_veth_name("skfXYZ") && !is_host_veth_name("eth0"));
    // Pinned: a rebuilt plugin must find veths an older build made.
    assert_eq!(
        host_veth_name(&Attachment::new("a", "b")),
        "skf".to_owned() + &format!("{:016x}", fnv(b"a\0b"))[..11]
    );
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn attach_wires_both_ends_as_designed() {
    let fake = fake_with_pod();
    let wired = attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    let host_name = host_veth_name(&who());
    assert_eq!(
        (wired.host.name.as_str(), wired.pod.name.as_str()),
        (host_name.as_str(), "eth0")
    );
    assert!(wired.host.up && wired.pod.up);
    assert_eq!((wired.host.mtu, wired.pod.mtu), (1450, 1450));
    fake.kernel().with(|k| {
        let pod = k.link(NETNS, "eth0").unwrap();
        assert_eq!(k.addresses(NETNS, "eth0"), [Ipv4Net::from(ip())]);
        assert!(k.link(NETNS, "lo").unwrap().up, "lo must be up");
        let routes = k.routes(NETNS);
        assert!(routes.contains(&FakeRoute::from(&gateway_route(gw(), pod.index))));
        assert!(routes.contains(&FakeRoute::from(&default_route(gw(), pod.index))));
        // The address chosen at creation, which udev leaves alone, is what the Pod resolves.
        assert_eq!(wired.host.mac, host_veth_mac(&who()));
        let neighbour = Neighbour {
            link: pod.index,
            ip: gw(),
            mac: wired.host.mac,
        };
        assert_eq!(k.neighbours(NETNS), [neighbour]);
        assert_eq!(k.addresses(NODE, &wired.host.name), [Ipv4Net::from(gw())]);
        let host_route = FakeRoute::from(&host_route(ip(), wired.host.index));
        assert!(k.routes(NODE).contains(&host_route));
    });
}

#[test]
fn every_host_veth_holds_the_gateway() {
    let other = Attachment::new("beef", "eth0");
    let fake = two_pods(&other);
    for pod in [who(), other] {
        let addresses = fake
            .kernel()
            .with(|k| k.addresses(NODE, &host_veth_name(&pod)));
        assert_eq!(addresses, [Ipv4Net::from(gw())]);
    }
}

#[test]
fn a_failure_half_way_leaves_no_veth_behind() {
    // (operation, how many of its calls succeed first): every step after the veth exists.
    let steps = [
        ("set up", 1),
        ("set up", 2),
        ("add address", 0),
        ("add address", 1),
        ("add route", 0),
        ("add route", 1),
        ("add route", 2),
        ("add neigh", 0),
        ("get link", 5),
    ];
    for (op, skip) in steps {
        let fake = fake_with_pod();
        fake.kernel().fail_after(op, skip);
        let err = attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Netlink, "{op}#{skip}: {err}");
        let host_name = host_veth_name(&who());
        fake.kernel().with(|k| {
            assert!(
                k.link(NODE, &host_name).is_none(),
                "{op}#{skip}: host veth left behind"
            );
            assert!(
                k.link(NETNS, "eth0").is_none(),
                "{op}#{skip}: pod veth left behind"
            );
            assert!(
                k.routes(NODE).is_empty(),
                "{op}#{skip}: node route left behind"
            );
        });
    }
}

#[test]
fn an_interface_name_in_use_is_refused_without_touching_it() {
    let fake = fake_with_pod();
    attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    let before = fake.kernel().with(|k| k.link(NETNS, "eth0"));
    let err = attach(
        &fake,
        net(),
        &Attachment::new("other", "eth0"),
        Path::new(NETNS),
        ip(),
    )
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InterfaceExists, "{err}");
    assert_eq!(fake.kernel().with(|k| k.link(NETNS, "eth0")), before);
    assert!(
        fake.kernel()
            .with(|k| k.link(NODE, &host_veth_name(&who())).is_some())
    );
}

#[test]
fn a_missing_netns_is_error_104_and_changes_nothing() {
    let fake = FakeNamespaces::new();
    let err = attach(&fake, net(), &who(), Path::new("/run/netns/gone"), ip()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::NetnsUnavailable, "{err}");
    assert_eq!(fake.kernel().with(|k| k.link_names(NODE)), ["lo"]);
}

#[test]
fn detach_is_idempotent_and_survives_a_deleted_netns() {
    let fake = fake_with_pod();
    attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    assert!(detach(&fake, &who()).unwrap());
    assert!(!detach(&fake, &who()).unwrap());
    assert!(
        fake.kernel().with(|k| k.link(NETNS, "eth0").is_none()),
        "the peer goes with the host end"
    );
    attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    fake.kernel().remove_netns(NETNS);
    assert!(
        !detach(&fake, &who()).unwrap(),
        "the pair died with the namespace"
    );
}

#[test]
fn check_passes_after_attach_and_names_what_is_missing_later() {
    let fake = fake_with_pod();
    let wired = attach(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap();
    assert_eq!(
        check(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap(),
        wired
    );
    let err = check(
        &fake,
        net(),
        &who(),
        Path::new(NETNS),
        Ipv4Addr::new(10, 244, 1, 99),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lacks 10.244.1.99/32"), "{err}");
    fake.kernel()
        .with(|k| k.delete_link_named(NODE, &host_veth_name(&who())));
    let err = check(&fake, net(), &who(), Path::new(NETNS), ip()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::CheckFailed);
    let text = err.to_string();
    assert!(
        text.contains("is missing") && text.contains("eth0"),
        "{text}"
    );
}

#[test]
fn sweep_removes_only_our_unlisted_host_veths() {
    let keep = Attachment::new("keep", "eth0");
    let fake = two_pods(&keep);
    let removed = sweep(&fake, std::slice::from_ref(&keep)).unwrap();
    assert_eq!(removed, [host_veth_name(&who())]);
    let names = fake.kernel().with(|k| k.link_names(NODE));
    assert_eq!(names, ["lo".to_owned(), host_veth_name(&keep)]);
}
