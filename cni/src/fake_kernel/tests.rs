//! The fake kernel's rules, and both doors agreeing on them.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use nix::errno::Errno;

use super::*;
use crate::link::{FakeNamespaces, LinkOps, Namespaces, RouteSpec, VethPair};
use crate::netlink::MacAddr;
use crate::network::{FakeNetOps, NodeNetOps, Route};

const POD: &str = "/run/netns/pod1";

fn veth(name: &str, peer: &str) -> VethPair {
    VethPair {
        name: name.to_owned(),
        mac: MacAddr([0x02, 0, 0, 0, 0, 0x99]),
        peer: peer.to_owned(),
        peer_netns: PathBuf::from(POD),
        mtu: 1450,
    }
}

fn route(dst: &str, gateway: Option<Ipv4Addr>, oif: u32) -> FakeRoute {
    FakeRoute {
        dst: dst.parse().unwrap(),
        gateway,
        oif,
        scope_link: false,
        onlink: false,
        protocol: ROUTE_PROTOCOL_STATIC,
    }
}

fn errno<T: std::fmt::Debug>(result: Result<T, Refused>) -> Errno {
    match result {
        Err(Refused::Errno(errno)) => errno,
        other => panic!("expected an errno, got {other:?}"),
    }
}

#[test]
fn every_namespace_starts_with_lo_at_1_and_counts_its_own_indexes() {
    let kernel = FakeKernel::new();
    kernel.add_netns(POD);
    kernel.with(|k| {
        for ns in [NODE, POD] {
            let lo = k.link(ns, "lo").unwrap();
            assert_eq!((lo.index, lo.up, lo.kind), (1, false, LinkKind::Loopback));
        }
        assert_eq!(k.add_ethernet(NODE, "eth0", 1500, &[]), Ok(2));
        k.add_veth(NODE, &veth("skf1", "eth0")).unwrap();
        assert_eq!(k.link(NODE, "skf1").unwrap().index, 3);
        assert_eq!(k.link(POD, "eth0").unwrap().index, 2);
        assert_ne!(
            k.link(POD, "eth0").unwrap().mac,
            k.link(NODE, "eth0").unwrap().mac
        );
        assert_eq!(
            errno(k.add_ethernet(NODE, "eth0", 1500, &[])),
            Errno::EEXIST
        );
        assert_eq!(
            errno(k.add_veth(NODE, &veth("skf2", "eth0"))),
            Errno::EEXIST
        );
        assert_eq!(errno(k.delete_link(NODE, 1)), Errno::EOPNOTSUPP);
    });
}

#[test]
fn veth_ends_die_together_and_with_their_namespace() {
    let kernel = FakeKernel::new();
    kernel.add_netns(POD);
    kernel.with(|k| {
        let nowhere = veth("skf1", "eth0").into_peer_in("/run/netns/gone");
        assert_eq!(
            k.add_veth(NODE, &nowhere),
            Err(Refused::NoNamespace("/run/netns/gone".into()))
        );
        k.add_veth(NODE, &veth("skf1", "eth0")).unwrap();
        assert!(k.delete_link_named(POD, "eth0"));
        assert!(
            k.link(NODE, "skf1").is_none(),
            "the host end went with the Pod end"
        );
        k.add_veth(NODE, &veth("skf1", "eth0")).unwrap();
    });
    kernel.remove_netns(POD);
    kernel.with(|k| {
        assert!(!k.has_netns(POD));
        assert_eq!(k.link_names(NODE), ["lo"]);
    });
}

impl VethPair {
    fn into_peer_in(mut self, netns: &str) -> Self {
        self.peer_netns = netns.into();
        self
    }
}

#[test]
fn a_route_needs_its_device_up_its_gateway_on_link_and_its_prefix_free() {
    let kernel = FakeKernel::new();
    kernel.with(|k| {
        let eth0 = k
            .add_ethernet(NODE, "eth0", 1500, &["172.31.4.11/24".parse().unwrap()])
            .unwrap();
        k.add_netns(POD);
        k.add_veth(NODE, &veth("skf1", "eth0")).unwrap();
        let skf1 = k.link(NODE, "skf1").unwrap().index;
        let gw = Ipv4Addr::new(10, 244, 1, 1);

        let host = route("10.244.1.7/32", None, skf1);
        assert_eq!(errno(k.add_route(NODE, host)), Errno::ENETDOWN);
        k.set_up(NODE, skf1).unwrap();
        k.add_route(NODE, host).unwrap();
        assert_eq!(errno(k.add_route(NODE, host)), Errno::EEXIST);

        let via_gw = route("10.244.9.0/24", Some(gw), skf1);
        assert_eq!(errno(k.add_route(NODE, via_gw)), Errno::ENETUNREACH);
        let onlink = FakeRoute {
            onlink: true,
            ..via_gw
        };
        k.add_route(NODE, onlink).unwrap();
        let link_route = FakeRoute {
            scope_link: true,
            ..route("10.244.1.1/32", None, skf1)
        };
        k.add_route(NODE, link_route).unwrap();
        k.add_route(NODE, route("10.244.8.0/24", Some(gw), skf1))
            .unwrap();

        let subnet_gw = route("10.244.2.0/24", Some(Ipv4Addr::new(172, 31, 4, 12)), eth0);
        k.add_route(NODE, subnet_gw).unwrap();
        let far_gw = route("10.244.3.0/24", Some(Ipv4Addr::new(192, 0, 2, 1)), eth0);
        assert_eq!(errno(k.add_route(NODE, far_gw)), Errno::ENETUNREACH);

        assert_eq!(k.routes(NODE).len(), 5);
        k.delete_link(NODE, skf1).unwrap();
        assert_eq!(k.routes(NODE), [subnet_gw], "routes go with their device");
    });
}

#[test]
fn adds_of_neighbours_and_fdb_replace_and_deleting_what_is_gone_is_an_error() {
    let kernel = FakeKernel::new();
    kernel.with(|k| {
        let eth0 = k.add_ethernet(NODE, "eth0", 1500, &[]).unwrap();
        let ip = Ipv4Addr::new(10, 244, 2, 0);
        let neighbour = |last| crate::network::Neighbour {
            link: eth0,
            ip,
            mac: MacAddr([2, 0, 0, 0, 0, last]),
        };
        k.add_neighbour(NODE, neighbour(1)).unwrap();
        k.add_neighbour(NODE, neighbour(2)).unwrap();
        assert_eq!(k.neighbours(NODE), [neighbour(2)]);
        k.del_neighbour(NODE, neighbour(2)).unwrap();
        assert_eq!(errno(k.del_neighbour(NODE, neighbour(2))), Errno::ENOENT);

        let fdb = |dst| crate::network::FdbEntry {
            link: eth0,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst,
        };
        k.add_fdb(NODE, fdb(Ipv4Addr::new(172, 31, 4, 12))).unwrap();
        k.add_fdb(NODE, fdb(Ipv4Addr::new(172, 31, 4, 13))).unwrap();
        assert_eq!(k.fdb(NODE), [fdb(Ipv4Addr::new(172, 31, 4, 13))]);
        assert_eq!(
            errno(k.del_fdb(NODE, fdb(Ipv4Addr::new(172, 31, 4, 12)))),
            Errno::ENOENT
        );
        assert_eq!(
            errno(k.add_fdb(NODE, crate::network::FdbEntry { link: 9, ..fdb(ip) })),
            Errno::ENODEV
        );

        let addr = "10.244.1.0/32".parse().unwrap();
        k.add_address(NODE, eth0, addr).unwrap();
        assert_eq!(errno(k.add_address(NODE, eth0, addr)), Errno::EEXIST);
        k.del_address(NODE, eth0, addr).unwrap();
        assert_eq!(errno(k.del_address(NODE, eth0, addr)), Errno::EADDRNOTAVAIL);
        assert_eq!(
            errno(k.del_route(NODE, route("10.244.2.0/24", None, eth0))),
            Errno::ESRCH
        );
    });
}

#[test]
fn every_call_is_recorded_and_queued_failures_hit_only_calls_of_their_words() {
    let kernel = FakeKernel::new();
    kernel.fail_after("get link", 1);
    let get = |name: &str| kernel.call(format!("get link {name}"), |k| Ok(k.link(NODE, name)));
    let list = || kernel.call("get links".to_owned(), |k| Ok(k.links(NODE).len()));
    assert_eq!(list(), Ok(1), "`get links` is not `get link`");
    assert!(get("lo").unwrap().is_some());
    assert_eq!(get("lo"), Err(Refused::Errno(Errno::EIO)));
    assert!(get("lo").unwrap().is_some(), "a queued failure fails once");
    assert_eq!(
        kernel.take_calls(),
        ["get links", "get link lo", "get link lo", "get link lo"]
    );
    assert!(kernel.take_calls().is_empty());
}

#[test]
fn the_plugins_door_and_the_node_networks_door_see_one_kernel() {
    let kernel = FakeKernel::new();
    kernel.add_netns(POD);
    let plugin = FakeNamespaces::on(kernel.clone());
    let node = FakeNetOps::on(kernel.clone());
    let host_route = plugin
        .node(|ops| {
            ops.add_veth(&veth("skf1", "eth0"))?;
            let host = ops.link("skf1")?.unwrap();
            ops.set_up(host.index)?;
            let route = RouteSpec {
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: None,
                oif: host.index,
                scope_link: true,
            };
            ops.add_route(&route)?;
            Ok(route)
        })
        .unwrap();

    let host = node.link("skf1").unwrap().unwrap();
    assert!(host.up && host.vxlan.is_none());
    assert!(
        node.routes().unwrap().is_empty(),
        "not skiff's protocol: not listed"
    );
    let clash = Route {
        dst: host_route.dst,
        gateway: Ipv4Addr::new(10, 244, 2, 0),
        oif: host.index,
        onlink: true,
    };
    let refused = match node.add_route(&clash) {
        Err(crate::network::NetOpsError::Syscall(err)) => err.errno(),
        other => panic!("{other:?}"),
    };
    assert_eq!(refused, Some(Errno::EEXIST as i32), "one prefix, one route");
    node.delete_link(host.index).unwrap();
    let pod_end = plugin.pod(POD.as_ref(), |ops| ops.link("eth0")).unwrap();
    assert!(pod_end.is_none(), "the Pod end died with the host end");
    assert_eq!(
        kernel.take_calls()[..3],
        [
            "add veth skf1 peer eth0 netns /run/netns/pod1",
            "get link skf1",
            "set up if 2"
        ]
    );
}
