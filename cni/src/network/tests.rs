//! The sync logic against the fake kernel and fake iptables: exact entries per node, no calls
//! when nothing changed, adoption after a restart, recovery after a failure, teardown.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::*;
use skiff_iptables::Table;

const NODE_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 4, 11);

fn config(backend: Backend) -> NodeNetworkConfig {
    NodeNetworkConfig {
        node_ip: NODE_IP,
        underlay: "eth0".into(),
        cluster_cidr: "10.244.0.0/16".parse().unwrap(),
        pod_cidr: "10.244.1.0/24".parse().unwrap(),
        backend,
    }
}

fn vxlan() -> Backend {
    Backend::Vxlan(VxlanConfig::default())
}

/// The underlay's index: `lo` is 1, as in every namespace.
const UNDERLAY: IfIndex = 2;

/// A fake node: `eth0` with the node IP in 172.31.4.0/24, MTU 1500.
fn kernel() -> FakeNetOps {
    let ops = FakeNetOps::new();
    let index = ops.add_ethernet("eth0", 1500, &["172.31.4.11/24".parse().unwrap()]);
    assert_eq!(index, UNDERLAY);
    ops
}

fn agent(
    backend: Backend,
    ops: &FakeNetOps,
    ipt: &FakeIptables,
) -> NodeNetwork<FakeNetOps, FakeIptables> {
    NodeNetwork::new(config(backend), ops.clone(), ipt.clone()).unwrap()
}

fn node(k: u8) -> RemoteNode {
    RemoteNode {
        name: format!("node{k}"),
        node_ip: Ipv4Addr::new(172, 31, 4, 10 + k),
        pod_cidr: format!("10.244.{k}.0/24").parse().unwrap(),
    }
}

/// The VXLAN entries of remote node `k` on device `dev`.
fn vxlan_entries(k: u8, dev: IfIndex) -> Vec<Entry> {
    let remote = node(k);
    let mac = vtep_mac(remote.node_ip);
    let gateway = remote.pod_cidr.network();
    vec![
        Entry::Fdb(FdbEntry {
            link: dev,
            mac,
            dst: remote.node_ip,
        }),
        Entry::Neighbour(Neighbour {
            link: dev,
            ip: gateway,
            mac,
        }),
        Entry::Route(Route {
            dst: remote.pod_cidr,
            gateway,
            oif: dev,
            onlink: true,
        }),
    ]
}

fn host_gw_route(k: u8) -> Route {
    let remote = node(k);
    Route {
        dst: remote.pod_cidr,
        gateway: remote.node_ip,
        oif: UNDERLAY,
        onlink: false,
    }
}

fn sorted(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort();
    entries
}

fn device(ops: &FakeNetOps) -> Link {
    ops.current_link("skiff.vxlan").expect("the vxlan device")
}

#[test]
fn first_vxlan_sync_builds_the_device_forwarding_masquerade_and_every_nodes_entries() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    let report = net.sync(&[node(1), node(2), node(3)]).unwrap();

    let dev = device(&ops);
    assert_eq!(dev.mtu, 1450);
    assert_eq!(dev.mac, Some(vtep_mac(NODE_IP)));
    assert!(dev.up);
    let vx = dev.vxlan.clone().unwrap();
    assert_eq!(
        (vx.vni, vx.port, vx.local, vx.underlay, vx.learning),
        (Some(1), Some(8472), Some(NODE_IP), Some(UNDERLAY), false)
    );
    let want_addr: Ipv4Net = "10.244.1.0/32".parse().unwrap();
    assert_eq!(
        ops.current_addresses(dev.index)
            .into_iter()
            .collect::<Vec<_>>(),
        [want_addr]
    );
    assert!(ops.ip_forward());
    assert_eq!(
        ipt.chain(Table::Nat, masquerade::MASQUERADE_CHAIN)
            .map(|c| c.len()),
        Some(2)
    );

    // node1 is this node: only node2 and node3 get entries.
    let mut want = vxlan_entries(2, dev.index);
    want.extend(vxlan_entries(3, dev.index));
    assert_eq!(sorted(report.added), sorted(want));
    assert!(report.removed.is_empty());
    assert_eq!(ops.current_routes().len(), 2);
    assert_eq!(ops.current_fdb().len(), 2);
    assert_eq!(ops.current_neighbours().len(), 2);
}

#[test]
fn a_node_added_or_removed_touches_exactly_its_entries_and_nothing_else_is_asked() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    net.sync(&[node(2)]).unwrap();
    let dev = device(&ops).index;
    ops.kernel().take_calls();

    let report = net.sync(&[node(2), node(3)]).unwrap();
    assert_eq!(sorted(report.added), sorted(vxlan_entries(3, dev)));
    assert!(report.removed.is_empty());
    let calls = ops.kernel().take_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.starts_with("add ")), "{calls:?}");

    let report = net.sync(&[node(3)]).unwrap();
    assert_eq!(sorted(report.removed), sorted(vxlan_entries(2, dev)));
    assert!(report.added.is_empty());
    let calls = ops.kernel().take_calls();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls.iter().all(|c| c.starts_with("del ")), "{calls:?}");
    let left: Vec<Entry> = ops.current_routes().into_iter().map(Entry::Route).collect();
    assert_eq!(left, vec![vxlan_entries(3, dev)[2]]);

    let restores = ipt.restores().len();
    let report = net.sync(&[node(3)]).unwrap();
    assert!(report.is_empty());
    assert_eq!(
        ops.kernel().take_calls(),
        Vec::<String>::new(),
        "unchanged: no calls"
    );
    assert_eq!(ipt.restores().len(), restores, "unchanged: no iptables");
}

#[test]
fn a_restarted_agent_adopts_the_kernels_entries_and_removes_nodes_deleted_meanwhile() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    agent(vxlan(), &ops, &ipt)
        .sync(&[node(2), node(3), node(4)])
        .unwrap();
    let dev = device(&ops).index;
    ops.kernel().take_calls();

    // Same list after a restart: nothing is rewritten, the device is kept.
    let mut restarted = agent(vxlan(), &ops, &ipt);
    let report = restarted.sync(&[node(2), node(3), node(4)]).unwrap();
    assert!(report.is_empty(), "{report:?}");
    let writes: Vec<String> = ops
        .kernel()
        .take_calls()
        .into_iter()
        .filter(|c| !c.starts_with("get ") && !c.starts_with("list "))
        .collect();
    assert_eq!(writes, ["enable ip_forward"]);
    assert_eq!(device(&ops).index, dev);

    // node4 was deleted while no agent ran: the next agent removes exactly its entries.
    let mut again = agent(vxlan(), &ops, &ipt);
    let report = again.sync(&[node(2), node(3)]).unwrap();
    assert_eq!(sorted(report.removed), sorted(vxlan_entries(4, dev)));
    assert!(report.added.is_empty());
    let chain = ipt.chain(Table::Nat, "POSTROUTING").unwrap();
    assert_eq!(chain.len(), 1, "one jump after three agents: {chain:?}");
}

#[test]
fn host_gw_routes_each_podcidr_via_its_node_and_switching_to_vxlan_replaces_them() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(Backend::HostGw, &ops, &ipt);
    let report = net.sync(&[node(2), node(3)]).unwrap();
    assert_eq!(
        sorted(report.added),
        vec![
            Entry::Route(host_gw_route(2)),
            Entry::Route(host_gw_route(3))
        ]
    );
    assert!(ops.current_link("skiff.vxlan").is_none());
    assert!(ops.current_fdb().is_empty() && ops.current_neighbours().is_empty());

    let report = net.sync(&[node(3)]).unwrap();
    assert_eq!(report.removed, vec![Entry::Route(host_gw_route(2))]);
    assert_eq!(
        ops.current_routes().into_iter().collect::<Vec<_>>(),
        [host_gw_route(3)]
    );

    // The node is reconfigured for VXLAN: its old host-gw route is skiff's, so it goes.
    let mut vx = agent(vxlan(), &ops, &ipt);
    let report = vx.sync(&[node(3)]).unwrap();
    assert_eq!(report.removed, vec![Entry::Route(host_gw_route(3))]);
    assert_eq!(
        sorted(report.added),
        sorted(vxlan_entries(3, device(&ops).index))
    );
}

#[test]
fn host_gw_refuses_a_node_that_is_not_on_link_and_changes_nothing() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(Backend::HostGw, &ops, &ipt);
    net.sync(&[node(2)]).unwrap();
    ops.kernel().take_calls();
    let far = RemoteNode {
        name: "far".into(),
        node_ip: Ipv4Addr::new(192, 0, 2, 9),
        pod_cidr: "10.244.9.0/24".parse().unwrap(),
    };
    let err = net.sync(&[node(2), far]).unwrap_err();
    assert!(err.to_string().contains("not on-link"), "{err}");
    assert_eq!(ops.kernel().take_calls(), Vec::<String>::new());
    // The baseline survived the refusal: a good list is applied incrementally.
    assert!(net.sync(&[node(2)]).unwrap().is_empty());
    assert_eq!(ops.kernel().take_calls(), Vec::<String>::new());
}

#[test]
fn a_bad_list_is_refused_before_any_kernel_call() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    let mut clash = node(3);
    clash.pod_cidr = node(2).pod_cidr;
    let err = net.sync(&[node(2), clash]).unwrap_err();
    assert!(matches!(err, NodeNetworkError::Remote { ref name, .. } if name == "node3"));
    assert_eq!(ops.kernel().take_calls(), Vec::<String>::new());
    assert!(ops.current_link("skiff.vxlan").is_none());
    assert!(ipt.restores().is_empty());
}

#[test]
fn after_a_failed_call_the_next_sync_reads_the_kernel_and_finishes_the_job() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    net.sync(&[node(2)]).unwrap();
    let dev = device(&ops).index;
    ops.kernel().fail_next("add route");
    let err = net.sync(&[node(2), node(3)]).unwrap_err();
    assert!(
        err.to_string().contains("adding route 10.244.3.0/24"),
        "{err}"
    );
    ops.kernel().take_calls();

    let report = net.sync(&[node(2), node(3)]).unwrap();
    let calls = ops.kernel().take_calls();
    assert!(calls.contains(&"list routes".to_owned()), "{calls:?}");
    // FDB and neighbour made it before the failure; only the route is left to add.
    assert_eq!(report.added, vec![vxlan_entries(3, dev)[2]]);
    assert_eq!(ops.current_routes().len(), 2);
}

#[test]
fn a_mismatched_device_is_recreated_and_foreign_addresses_removed() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    agent(
        Backend::Vxlan(VxlanConfig {
            vni: 9,
            ..VxlanConfig::default()
        }),
        &ops,
        &ipt,
    )
    .sync(&[node(2)])
    .unwrap();
    let old = device(&ops);
    ops.add_address(old.index, "192.0.2.1/24".parse().unwrap())
        .unwrap();

    agent(vxlan(), &ops, &ipt).sync(&[node(2)]).unwrap();
    let new = device(&ops);
    assert_ne!(new.index, old.index, "VNI 9 -> 1 needs a new device");
    assert_eq!(new.vxlan.unwrap().vni, Some(1));
    assert_eq!(
        ops.current_addresses(new.index)
            .into_iter()
            .collect::<Vec<_>>(),
        ["10.244.1.0/32".parse::<Ipv4Net>().unwrap()]
    );
    // The old device's entries went with it; the new one has node2's again.
    assert_eq!(ops.current_fdb().len(), 1);
    assert!(ops.current_fdb().iter().all(|f| f.link == new.index));

    // Same device, wrong MTU and a stray address: fixed in place.
    ops.set_mtu(new.index, 9000).unwrap();
    ops.add_address(new.index, "192.0.2.1/24".parse().unwrap())
        .unwrap();
    let mut net = agent(vxlan(), &ops, &ipt);
    net.sync(&[node(2)]).unwrap();
    assert_eq!(device(&ops).index, new.index);
    assert_eq!(device(&ops).mtu, 1450);
    assert_eq!(ops.current_addresses(new.index).len(), 1);
}

#[test]
fn teardown_removes_routes_device_and_masquerade_and_may_run_twice() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    net.sync(&[node(2), node(3)]).unwrap();
    net.teardown().unwrap();
    assert!(ops.current_routes().is_empty());
    assert!(ops.current_link("skiff.vxlan").is_none());
    assert!(ops.current_fdb().is_empty() && ops.current_neighbours().is_empty());
    assert_eq!(ipt.chain(Table::Nat, masquerade::MASQUERADE_CHAIN), None);
    assert!(ipt.chain(Table::Nat, "POSTROUTING").unwrap().is_empty());
    assert!(ops.current_link("eth0").is_some(), "the underlay stays");
    net.teardown().unwrap();
    // And it can come back.
    net.sync(&[node(2)]).unwrap();
    assert_eq!(ops.current_routes().len(), 1);
}

#[test]
fn a_node_with_a_new_ip_gets_a_new_vtep_and_keeps_its_route() {
    let (ops, ipt) = (kernel(), FakeIptables::new());
    let mut net = agent(vxlan(), &ops, &ipt);
    net.sync(&[node(2)]).unwrap();
    let dev = device(&ops).index;
    let mut moved = node(2);
    moved.node_ip = Ipv4Addr::new(172, 31, 4, 99);
    let report = net.sync(std::slice::from_ref(&moved)).unwrap();
    // The MAC follows the node IP, so FDB and neighbour change; the route (via the podCIDR's
    // .0) does not, and is left alone.
    let old = vxlan_entries(2, dev);
    assert_eq!(sorted(report.removed), sorted(old[..2].to_vec()));
    let mac = vtep_mac(moved.node_ip);
    let gateway = moved.pod_cidr.network();
    assert_eq!(
        sorted(report.added),
        sorted(vec![
            Entry::Fdb(FdbEntry {
                link: dev,
                mac,
                dst: moved.node_ip
            }),
            Entry::Neighbour(Neighbour {
                link: dev,
                ip: gateway,
                mac
            }),
        ])
    );
    assert_eq!(ops.current_fdb().len(), 1);
    assert_eq!(ops.current_neighbours().len(), 1);
    assert_eq!(ops.current_routes().len(), 1);
}

#[test]
fn a_missing_underlay_or_foreign_node_ip_is_named() {
    let ipt = FakeIptables::new();
    let bare = FakeNetOps::new();
    let err = agent(vxlan(), &bare, &ipt).sync(&[]).unwrap_err();
    assert!(matches!(err, NodeNetworkError::NoUnderlay(ref u) if u == "eth0"));
    let elsewhere = FakeNetOps::new();
    elsewhere.add_ethernet("eth0", 1500, &["192.0.2.5/24".parse().unwrap()]);
    let err = agent(vxlan(), &elsewhere, &ipt).sync(&[]).unwrap_err();
    assert!(
        matches!(err, NodeNetworkError::NodeIpNotOnUnderlay { .. }),
        "{err}"
    );
    assert!(elsewhere.current_link("skiff.vxlan").is_none());
}
