//! [`NodeNetOps`] over rtnetlink, on a [`NetnsThread`] inside the node's namespace.
//!
//! The netlink socket is opened on that thread after it entered the namespace, so every request
//! speaks to the node's kernel tables. Each call is one round trip, driven to completion by the
//! thread's own current-thread runtime; callers block (milliseconds), which is why the node agent
//! calls the node network from a blocking context, never from inside a tokio task.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlags, RouteHeader, RouteMessage, RouteProtocol};
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

use super::ops::{
    ALREADY_GONE, FdbEntry, IfIndex, Link, MacAddr, Neighbour, NetOpsError, NodeNetOps, Route,
    SKIFF_ROUTE_PROTOCOL, SyscallError, VxlanAttrs, VxlanSpec,
};
use crate::netlink as shared;
use crate::netns::NetnsThread;

/// The real kernel door: rtnetlink requests made from inside the node's network namespace.
#[derive(Debug)]
pub struct NetlinkOps {
    thread: Arc<NetnsThread>,
    handle: Handle,
}

impl NetlinkOps {
    /// Opens a netlink socket on `thread` (so, in its namespace).
    pub fn open(thread: Arc<NetnsThread>) -> Result<Self, NetOpsError> {
        let handle = thread.block_on(|| async { shared::connect() })??;
        Ok(NetlinkOps { thread, handle })
    }

    /// The namespace thread this door works on.
    pub fn thread(&self) -> &Arc<NetnsThread> {
        &self.thread
    }

    fn call<T, Fut, F>(&self, request: F) -> Result<T, NetOpsError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, NetOpsError>>,
        F: FnOnce(Handle) -> Fut + Send + 'static,
    {
        let handle = self.handle.clone();
        self.thread.block_on(move || request(handle))?
    }

    /// One netlink request made by `make`; its failure is reported as request `call`'s.
    fn request<T, Fut, F>(&self, call: &'static str, make: F) -> Result<T, NetOpsError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, rtnetlink::Error>>,
        F: FnOnce(Handle) -> Fut + Send + 'static,
    {
        self.call(move |handle| async move { make(handle).await.map_err(failed(call)) })
    }

    /// A delete request: an answer that the entry is already gone is success.
    fn delete<Fut, F>(&self, call: &'static str, make: F) -> Result<(), NetOpsError>
    where
        Fut: Future<Output = Result<(), rtnetlink::Error>>,
        F: FnOnce(Handle) -> Fut + Send + 'static,
    {
        self.call(move |handle| async move {
            match make(handle).await {
                Err(err) if shared::is_errno(&err, &ALREADY_GONE) => Ok(()),
                other => other.map_err(failed(call)),
            }
        })
    }

    fn set_link(&self, message: LinkMessage) -> Result<(), NetOpsError> {
        self.request("RTM_SETLINK", |handle| handle.link().set(message).execute())
    }

    /// The permanent entries on `link` of a neighbour dump of `family`, as (IP, MAC).
    fn permanent_entries(
        &self,
        family: AddressFamily,
        link: IfIndex,
    ) -> Result<Vec<(Ipv4Addr, MacAddr)>, NetOpsError> {
        let messages: Vec<NeighbourMessage> = self.request("RTM_GETNEIGH", move |handle| {
            let request = handle.neighbours().get().set_address_family(family);
            request.execute().try_collect()
        })?;
        Ok(messages
            .iter()
            .filter(|m| m.header.ifindex == link && m.header.state == NeighbourState::Permanent)
            .filter_map(neighbour_parts)
            .collect())
    }
}

/// Maps an rtnetlink failure of request `call` to our error, keeping the errno.
fn failed(call: &'static str) -> impl Fn(rtnetlink::Error) -> NetOpsError {
    move |err| match err {
        rtnetlink::Error::NetlinkError(message) => SyscallError {
            call,
            source: message.to_io(),
        }
        .into(),
        other => NetOpsError::Netlink {
            call,
            detail: other.to_string(),
        },
    }
}

impl NodeNetOps for NetlinkOps {
    fn link(&self, name: &str) -> Result<Option<Link>, NetOpsError> {
        let name = name.to_owned();
        let found = self.request("RTM_GETLINK", |handle| async move {
            shared::link_by_name(&handle, name).await
        })?;
        Ok(found.as_ref().map(parse_link))
    }

    fn add_vxlan(&self, spec: &VxlanSpec) -> Result<(), NetOpsError> {
        let message = LinkVxlan::new(&spec.name, spec.vni)
            .dev(spec.underlay)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.octets().to_vec())
            .build();
        self.request("RTM_NEWLINK", |handle| handle.link().add(message).execute())
    }

    fn delete_link(&self, index: IfIndex) -> Result<(), NetOpsError> {
        self.request("RTM_DELLINK", move |handle| {
            handle.link().del(index).execute()
        })
    }

    fn set_mtu(&self, index: IfIndex, mtu: u32) -> Result<(), NetOpsError> {
        let message = LinkUnspec::new_with_index(index).mtu(mtu).build();
        self.set_link(message)
    }

    fn set_up(&self, index: IfIndex) -> Result<(), NetOpsError> {
        let message = LinkUnspec::new_with_index(index).up().build();
        self.set_link(message)
    }

    fn addresses(&self, index: IfIndex) -> Result<Vec<Ipv4Net>, NetOpsError> {
        self.request("RTM_GETADDR", move |handle| async move {
            shared::ipv4_addresses(&handle, index).await
        })
    }

    fn add_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        self.request("RTM_NEWADDR", move |handle| {
            let ip = IpAddr::V4(addr.addr());
            handle.address().add(index, ip, addr.prefix_len()).execute()
        })
    }

    fn del_address(&self, index: IfIndex, addr: Ipv4Net) -> Result<(), NetOpsError> {
        let message = AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(addr.addr(), addr.prefix_len())
            .build();
        self.delete("RTM_DELADDR", |handle| {
            handle.address().del(message).execute()
        })
    }

    fn routes(&self) -> Result<Vec<Route>, NetOpsError> {
        let messages: Vec<RouteMessage> = self.request("RTM_GETROUTE", |handle| {
            let all = RouteMessageBuilder::<Ipv4Addr>::new().build();
            handle.route().get(all).execute().try_collect()
        })?;
        Ok(messages.iter().filter_map(parse_route).collect())
    }

    fn add_route(&self, route: &Route) -> Result<(), NetOpsError> {
        let message = route_message(route);
        self.request("RTM_NEWROUTE", |handle| {
            handle.route().add(message).execute()
        })
    }

    fn del_route(&self, route: &Route) -> Result<(), NetOpsError> {
        let message = route_message(route);
        self.delete("RTM_DELROUTE", |handle| {
            handle.route().del(message).execute()
        })
    }

    fn fdb(&self, link: IfIndex) -> Result<Vec<FdbEntry>, NetOpsError> {
        let entries = self.permanent_entries(AddressFamily::Bridge, link)?;
        Ok(entries
            .into_iter()
            .filter(|(_, mac)| *mac != MacAddr([0; 6]))
            .map(|(dst, mac)| FdbEntry { link, mac, dst })
            .collect())
    }

    fn add_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        let entry = *entry;
        self.request("RTM_NEWNEIGH(bridge)", move |handle| {
            handle
                .neighbours()
                .add_bridge(entry.link, &entry.mac.octets())
                .flags(NeighbourFlags::Own)
                .destination(IpAddr::V4(entry.dst))
                .replace()
                .execute()
        })
    }

    fn del_fdb(&self, entry: &FdbEntry) -> Result<(), NetOpsError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.header.ifindex = entry.link;
        message.header.flags = NeighbourFlags::Own;
        message.header.state = NeighbourState::Permanent;
        message.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(entry.mac.octets().to_vec()),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)),
        ];
        self.delete("RTM_DELNEIGH(bridge)", |handle| {
            handle.neighbours().del(message).execute()
        })
    }

    fn neighbours(&self, link: IfIndex) -> Result<Vec<Neighbour>, NetOpsError> {
        let entries = self.permanent_entries(AddressFamily::Inet, link)?;
        Ok(entries
            .into_iter()
            .map(|(ip, mac)| Neighbour { link, ip, mac })
            .collect())
    }

    fn add_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        let neighbour = *neighbour;
        self.request("RTM_NEWNEIGH", move |handle| {
            handle
                .neighbours()
                .add(neighbour.link, IpAddr::V4(neighbour.ip))
                .link_layer_address(&neighbour.mac.octets())
                .replace()
                .execute()
        })
    }

    fn del_neighbour(&self, neighbour: &Neighbour) -> Result<(), NetOpsError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = neighbour.link;
        message.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
            neighbour.ip,
        ))];
        self.delete("RTM_DELNEIGH", |handle| {
            handle.neighbours().del(message).execute()
        })
    }

    fn enable_ip_forward(&self) -> Result<(), NetOpsError> {
        // /proc/sys/net resolves against the opening thread's namespace: ours.
        self.thread
            .run(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))?
            .map_err(|source: io::Error| {
                SyscallError {
                    call: "write(/proc/sys/net/ipv4/ip_forward)",
                    source,
                }
                .into()
            })
    }
}

fn route_message(route: &Route) -> RouteMessage {
    let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .gateway(route.gateway)
        .output_interface(route.oif)
        .protocol(RouteProtocol::Other(SKIFF_ROUTE_PROTOCOL));
    if route.onlink {
        builder = builder.onlink();
    }
    builder.build()
}

/// Our routes only: main table, IPv4, skiff's protocol, with a gateway and an output link.
fn parse_route(message: &RouteMessage) -> Option<Route> {
    let header = &message.header;
    if header.address_family != AddressFamily::Inet
        || header.table != RouteHeader::RT_TABLE_MAIN
        || u8::from(header.protocol) != SKIFF_ROUTE_PROTOCOL
    {
        return None;
    }
    let basics = shared::route_basics(message)?;
    Some(Route {
        dst: basics.dst,
        gateway: basics.gateway?,
        oif: basics.oif?,
        onlink: header.flags.contains(RouteFlags::Onlink),
    })
}

fn neighbour_parts(message: &NeighbourMessage) -> Option<(Ipv4Addr, MacAddr)> {
    let (mut ip, mut mac) = (None, None);
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(addr)) => ip = Some(*addr),
            // Bridge-family (FDB) messages carry the VTEP's address as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                ip = <[u8; 4]>::try_from(bytes.as_slice())
                    .ok()
                    .map(Ipv4Addr::from);
            }
            NeighbourAttribute::LinkLayerAddress(bytes) => mac = MacAddr::from_slice(bytes),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

fn parse_link(message: &LinkMessage) -> Link {
    let basics = shared::link_basics(message);
    let vxlan = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            LinkAttribute::LinkInfo(infos) => parse_vxlan(infos),
            _ => None,
        });
    Link {
        index: basics.index,
        name: basics.name,
        mtu: basics.mtu,
        mac: basics.mac,
        up: basics.up,
        vxlan,
    }
}

fn parse_vxlan(infos: &[LinkInfo]) -> Option<VxlanAttrs> {
    if !infos
        .iter()
        .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Vxlan)))
    {
        return None;
    }
    let mut attrs = VxlanAttrs::default();
    for info in infos {
        if let LinkInfo::Data(InfoData::Vxlan(data)) = info {
            for item in data {
                match item {
                    InfoVxlan::Id(vni) => attrs.vni = Some(*vni),
                    InfoVxlan::Port(port) => attrs.port = Some(*port),
                    InfoVxlan::Local(ip) => attrs.local = Some(*ip),
                    InfoVxlan::Link(index) => attrs.underlay = Some(*index),
                    InfoVxlan::Learning(on) => attrs.learning = *on,
                    _ => {}
                }
            }
        }
    }
    Some(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            dst: "10.244.2.0/24".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 244, 2, 0),
            oif: 9,
            onlink: true,
        }
    }

    #[test]
    fn a_route_survives_the_trip_through_a_netlink_message() {
        assert_eq!(parse_route(&route_message(&route())), Some(route()));
        let plain = Route {
            onlink: false,
            ..route()
        };
        assert_eq!(parse_route(&route_message(&plain)), Some(plain));
    }

    #[test]
    fn routes_of_other_protocols_or_tables_are_not_ours() {
        let mut foreign = route_message(&route());
        foreign.header.protocol = RouteProtocol::Static;
        assert_eq!(parse_route(&foreign), None);
        let mut other_table = route_message(&route());
        other_table.header.table = 255; // local
        assert_eq!(parse_route(&other_table), None);
    }

    #[test]
    fn fdb_entries_read_back_with_their_raw_destination() {
        // What a bridge-family dump decodes to: NDA_DST as bytes, not as an IPv4 address.
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Bridge;
        message.attributes = vec![
            NeighbourAttribute::LinkLayerAddress(vec![0x0e, 0x5f, 172, 31, 1, 12]),
            NeighbourAttribute::Destination(NeighbourAddress::Other(vec![172, 31, 1, 12])),
        ];
        assert_eq!(
            neighbour_parts(&message),
            Some((
                Ipv4Addr::new(172, 31, 1, 12),
                MacAddr([0x0e, 0x5f, 172, 31, 1, 12])
            ))
        );
        message.attributes.pop();
        assert_eq!(neighbour_parts(&message), None);
    }

    #[test]
    fn vxlan_links_parse_their_attributes_and_other_links_have_none() {
        let message = LinkVxlan::new("skiff.vxlan", 7)
            .dev(3)
            .port(8472)
            .local(Ipv4Addr::new(172, 31, 1, 11))
            .learning(false)
            .mtu(1450)
            .address(vec![0x0e, 0x5f, 172, 31, 1, 11])
            .build();
        let link = parse_link(&message);
        assert_eq!(link.name, "skiff.vxlan");
        assert_eq!(link.mtu, 1450);
        assert_eq!(link.mac, Some(MacAddr([0x0e, 0x5f, 172, 31, 1, 11])));
        assert_eq!(
            link.vxlan,
            Some(VxlanAttrs {
                vni: Some(7),
                port: Some(8472),
                local: Some(Ipv4Addr::new(172, 31, 1, 11)),
                underlay: Some(3),
                learning: false,
            })
        );
        let plain = LinkUnspec::new_with_index(4).build();
        assert_eq!(parse_link(&plain).vxlan, None);
    }
}
