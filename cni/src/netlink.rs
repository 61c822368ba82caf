//! What the plugin's and the node network's netlink doors share.
//!
//! The two doors stay separate traits — [`LinkOps`](crate::link::LinkOps) wires one Pod,
//! [`NodeNetOps`](crate::network::NodeNetOps) keeps the node's cross-node entries — because they
//! change for different reasons. Below them the kernel is the same, so is this: one failed-call
//! error, one MAC type, how a socket is opened on a [`netns`](crate::netns) thread, the "does
//! this link exist" and "which IPv4 addresses" requests, and reading links and routes back out
//! of netlink messages.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use nix::errno::Errno;
use rtnetlink::Handle;

/// A failed kernel call: which call, and the errno it returned.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed")]
pub struct SyscallError {
    /// The call or netlink request, e.g. `RTM_NEWROUTE`.
    pub call: &'static str,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl SyscallError {
    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The bytes, as netlink wants them.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Parses six bytes, e.g. from a netlink attribute.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(MacAddr(bytes.try_into().ok()?))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Opens a netlink socket in the calling thread's namespace and spawns its connection on the
/// current runtime (call it inside one, on the thread that entered the namespace).
pub(crate) fn connect() -> Result<Handle, SyscallError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| SyscallError {
        call: "socket(NETLINK_ROUTE)",
        source,
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

/// The kernel's errno inside an rtnetlink error, if the kernel answered at all.
pub(crate) fn os_error(err: &rtnetlink::Error) -> Option<io::Error> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.to_io()),
        _ => None,
    }
}

/// Did the kernel answer `err` with one of `errnos`?
pub(crate) fn is_errno(err: &rtnetlink::Error, errnos: &[Errno]) -> bool {
    os_error(err)
        .and_then(|e| e.raw_os_error())
        .is_some_and(|code| errnos.contains(&Errno::from_raw(code)))
}

/// The link named `name`, or `None` when the kernel has none (`ENODEV`).
pub(crate) async fn link_by_name(
    handle: &Handle,
    name: String,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await {
        Err(err) if is_errno(&err, &[Errno::ENODEV]) => Ok(None),
        other => other,
    }
}

/// The IPv4 addresses of link `index`.
pub(crate) async fn ipv4_addresses(
    handle: &Handle,
    index: u32,
) -> Result<Vec<Ipv4Net>, rtnetlink::Error> {
    let messages: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await?;
    Ok(messages
        .iter()
        .filter(|m| m.header.index == index && m.header.family == AddressFamily::Inet)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => {
                    Ipv4Net::new(*ip, m.header.prefix_len).ok()
                }
                _ => None,
            })
        })
        .collect())
}

/// What every link has, read from a link message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LinkBasics {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// For Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administratively up.
    pub up: bool,
}

pub(crate) fn link_basics(message: &LinkMessage) -> LinkBasics {
    let mut link = LinkBasics {
        index: message.header.index,
        name: String::new(),
        mtu: 0,
        mac: None,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(bytes) => link.mac = MacAddr::from_slice(bytes),
            _ => {}
        }
    }
    link
}

/// An IPv4 route's destination, next hop and output link, read from a route message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteBasics {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// `None` when the prefix length does not fit IPv4.
pub(crate) fn route_basics(message: &RouteMessage) -> Option<RouteBasics> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let (mut gateway, mut oif) = (None, None);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    Some(RouteBasics {
        dst: Ipv4Net::new(dst, message.header.destination_prefix_length).ok()?,
        gateway,
        oif,
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::LinkFlags;
    use rtnetlink::{LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};

    use super::*;

    #[test]
    fn macs_print_like_iproute2_and_parse_only_six_bytes() {
        let mac = MacAddr([0x0e, 0x5f, 172, 31, 4, 11]);
        assert_eq!(mac.to_string(), "0e:5f:ac:1f:04:0b");
        assert_eq!(format!("{mac:?}"), "0e:5f:ac:1f:04:0b");
        assert_eq!(MacAddr::from_slice(&mac.octets()), Some(mac));
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn link_messages_give_name_mtu_mac_and_state() {
        let mut message = LinkMessageBuilder::<LinkUnspec>::new()
            .name("eth0".to_owned())
            .mtu(1450)
            .address(vec![2, 0, 0, 0, 0, 7])
            .build();
        message.header.index = 4;
        message.header.flags = LinkFlags::Up;
        assert_eq!(
            link_basics(&message),
            LinkBasics {
                index: 4,
                name: "eth0".into(),
                mtu: 1450,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 7])),
                up: true,
            }
        );
    }

    #[test]
    fn route_messages_give_destination_gateway_and_link() {
        let message = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 244, 2, 0), 24)
            .gateway(Ipv4Addr::new(172, 31, 1, 12))
            .output_interface(3)
            .build();
        assert_eq!(
            route_basics(&message),
            Some(RouteBasics {
                dst: "10.244.2.0/24".parse().unwrap(),
                gateway: Some(Ipv4Addr::new(172, 31, 1, 12)),
                oif: Some(3),
            })
        );
        let default = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let basics = route_basics(&default).unwrap();
        assert_eq!(
            (basics.dst, basics.gateway, basics.oif),
            (Ipv4Net::default(), None, None)
        );
    }

    #[test]
    fn only_kernel_answers_carry_an_errno() {
        let other = rtnetlink::Error::RequestFailed;
        assert!(os_error(&other).is_none());
        assert!(!is_errno(&other, &[Errno::ENODEV]));
    }
}
