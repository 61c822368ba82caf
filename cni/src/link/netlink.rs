//! The real [`LinkOps`]: rtnetlink requests on a socket of the namespace the thread is in.
//!
//! Each batch gets a fresh thread, a current-thread tokio runtime and a netlink connection made
//! *after* the thread entered its namespace (a netlink socket belongs to the namespace of its
//! creator). The thread is scoped and ends with the batch, so it never carries a foreign
//! namespace into other work, and the library is safe to call from inside another runtime.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteScope, RouteType,
};
use nix::sched::{CloneFlags, setns};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::runtime::Runtime;

use super::{LinkError, LinkInfo, LinkOps, Mac, Namespaces, RouteSpec};

/// Namespaces entered with `setns()` on a dedicated thread per batch.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealNamespaces;

impl Namespaces for RealNamespaces {
    type Ops = RealLinkOps;

    fn node<R, F>(&self, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut RealLinkOps) -> Result<R, LinkError> + Send,
    {
        on_thread(None, batch)
    }

    fn pod<R, F>(&self, netns: &Path, batch: F) -> Result<R, LinkError>
    where
        R: Send,
        F: FnOnce(&mut RealLinkOps) -> Result<R, LinkError> + Send,
    {
        let unavailable = |source| LinkError::NetnsUnavailable {
            path: netns.to_owned(),
            source,
        };
        let file = File::open(netns).map_err(unavailable)?;
        on_thread(Some((file, netns)), batch)
    }
}

/// Runs `batch` on a scoped thread, in the namespace of `netns` when given.
fn on_thread<R, F>(netns: Option<(File, &Path)>, batch: F) -> Result<R, LinkError>
where
    R: Send,
    F: FnOnce(&mut RealLinkOps) -> Result<R, LinkError> + Send,
{
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("skiff-netns".into())
            .spawn_scoped(scope, move || {
                if let Some((file, path)) = &netns {
                    setns(file, CloneFlags::CLONE_NEWNET).map_err(|errno| {
                        LinkError::NetnsUnavailable {
                            path: path.to_path_buf(),
                            source: io::Error::from(errno),
                        }
                    })?;
                }
                batch(&mut RealLinkOps::connect()?)
            })
            .map_err(|_| LinkError::Thread("could not start"))?;
        worker.join().map_err(|_| LinkError::Thread("panicked"))?
    })
}

/// rtnetlink on a socket of the calling thread's namespace, driven by its own runtime.
#[derive(Debug)]
pub struct RealLinkOps {
    runtime: Runtime,
    handle: Handle,
}

impl RealLinkOps {
    /// Opens a netlink connection in the calling thread's current namespace.
    pub fn connect() -> Result<Self, LinkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| LinkError::syscall("tokio runtime", e))?;
        let (connection, handle, _) = {
            let _context = runtime.enter();
            rtnetlink::new_connection().map_err(|e| LinkError::syscall("netlink socket", e))?
        };
        runtime.spawn(connection);
        Ok(RealLinkOps { runtime, handle })
    }
}

/// Turns an rtnetlink error into a [`LinkError`] carrying the kernel's errno.
fn nl(call: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |err| {
        let source = match &err {
            rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
            other => io::Error::other(other.to_string()),
        };
        LinkError::syscall(call, source)
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: Mac::default(),
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Address(bytes) => {
                if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                    info.mac = Mac(mac);
                }
            }
            _ => {}
        }
    }
    info
}

fn route_spec(msg: &netlink_packet_route::route::RouteMessage) -> Option<RouteSpec> {
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let (mut gateway, mut oif) = (None, None);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    Some(RouteSpec {
        dst: Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?,
        gateway,
        oif: oif?,
        scope_link: msg.header.scope == RouteScope::Link,
    })
}

impl LinkOps for RealLinkOps {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let mut request = Box::pin(
            self.handle
                .link()
                .get()
                .match_name(name.to_owned())
                .execute(),
        );
        match self.runtime.block_on(request.try_next()) {
            Ok(found) => Ok(found.as_ref().map(link_info)),
            Err(err) => {
                let err = nl("RTM_GETLINK")(err);
                if err.is_missing() { Ok(None) } else { Err(err) }
            }
        }
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        let request = self.handle.link().get().execute();
        let all: Vec<LinkMessage> = self
            .runtime
            .block_on(request.try_collect())
            .map_err(nl("RTM_GETLINK dump"))?;
        Ok(all.iter().map(link_info).collect())
    }

    fn add_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: &Path,
        mtu: u32,
    ) -> Result<(), LinkError> {
        let netns = File::open(peer_netns).map_err(|source| LinkError::NetnsUnavailable {
            path: peer_netns.to_owned(),
            source,
        })?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .mtu(mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(name.to_owned())
            .mtu(mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        let request = self.handle.link().add(msg).execute();
        let result = self
            .runtime
            .block_on(request)
            .map_err(nl("RTM_NEWLINK veth"));
        drop(netns);
        result
    }

    fn set_up(&mut self, index: u32) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        let request = self.handle.link().set(msg).execute();
        self.runtime.block_on(request).map_err(nl("RTM_SETLINK up"))
    }

    fn add_address(&mut self, index: u32, address: Ipv4Net) -> Result<(), LinkError> {
        let request = self
            .handle
            .address()
            .add(index, IpAddr::V4(address.addr()), address.prefix_len())
            .execute();
        self.runtime.block_on(request).map_err(nl("RTM_NEWADDR"))
    }

    fn addresses(&mut self, index: u32) -> Result<Vec<Ipv4Net>, LinkError> {
        let request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let all: Vec<_> = self
            .runtime
            .block_on(request.try_collect())
            .map_err(nl("RTM_GETADDR dump"))?;
        Ok(all
            .iter()
            .filter(|msg| msg.header.family == AddressFamily::Inet && msg.header.index == index)
            .filter_map(|msg| {
                let local = msg.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                Ipv4Net::new(local, msg.header.prefix_len).ok()
            })
            .collect())
    }

    fn add_route(&mut self, route: &RouteSpec) -> Result<(), LinkError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(route.dst.addr(), route.dst.prefix_len())
            .output_interface(route.oif);
        if let Some(gateway) = route.gateway {
            builder = builder.gateway(gateway);
        }
        if route.scope_link {
            builder = builder.scope(RouteScope::Link);
        }
        let request = self.handle.route().add(builder.build()).execute();
        self.runtime.block_on(request).map_err(nl("RTM_NEWROUTE"))
    }

    fn routes(&mut self, oif: u32) -> Result<Vec<RouteSpec>, LinkError> {
        let request = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let all: Vec<_> = self
            .runtime
            .block_on(request.try_collect())
            .map_err(nl("RTM_GETROUTE dump"))?;
        Ok(all
            .iter()
            .filter(|msg| msg.header.table == RouteHeader::RT_TABLE_MAIN)
            .filter(|msg| msg.header.kind == RouteType::Unicast)
            .filter_map(route_spec)
            .filter(|route| route.oif == oif)
            .collect())
    }

    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: Mac) -> Result<(), LinkError> {
        let request = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        self.runtime.block_on(request).map_err(nl("RTM_NEWNEIGH"))
    }

    fn delete_link(&mut self, index: u32) -> Result<(), LinkError> {
        let request = self.handle.link().del(index).execute();
        self.runtime.block_on(request).map_err(nl("RTM_DELLINK"))
    }
}
