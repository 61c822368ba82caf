//! The real [`LinkOps`]: rtnetlink requests on a socket of the namespace the thread is in.
//!
//! Each batch runs on [`netns::scoped`]: a fresh thread that entered the batch's namespace, a
//! current-thread runtime made there, and a netlink connection opened after the switch (a
//! netlink socket belongs to the namespace of its creator). The thread ends with the batch, so
//! it never carries a foreign namespace into other work, and the library is safe to call from
//! inside another runtime.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth, LinkMessage};
use netlink_packet_route::neighbour::NeighbourState;
use netlink_packet_route::route::{RouteHeader, RouteMessage, RouteScope, RouteType};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use tokio::runtime::Runtime;

use super::{LinkError, LinkInfo, LinkOps, Namespaces, RouteSpec, VethPair};
use crate::netlink::{self as shared, MacAddr};
use crate::netns::{self, NetnsError};

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
        on_thread(Some(netns), batch)
    }
}

/// Runs `batch` on a scoped thread, in the namespace at `netns` when given.
fn on_thread<R, F>(netns: Option<&Path>, batch: F) -> Result<R, LinkError>
where
    R: Send,
    F: FnOnce(&mut RealLinkOps) -> Result<R, LinkError> + Send,
{
    netns::scoped(netns, |runtime| batch(&mut RealLinkOps::connect(runtime)?))?
}

/// rtnetlink on a socket of the calling thread's namespace, driven by its own runtime.
#[derive(Debug)]
pub struct RealLinkOps {
    runtime: Runtime,
    handle: Handle,
}

impl RealLinkOps {
    /// Opens a netlink connection in the calling thread's current namespace, driven by
    /// `runtime` (a current-thread runtime made on this thread).
    pub fn connect(runtime: Runtime) -> Result<Self, LinkError> {
        let handle = {
            let _context = runtime.enter();
            shared::connect()?
        };
        Ok(RealLinkOps { runtime, handle })
    }
}

/// Turns an rtnetlink error into a [`LinkError`] carrying the kernel's errno.
fn nl(call: &'static str) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    move |err| {
        let source = shared::os_error(&err).unwrap_or_else(|| io::Error::other(err.to_string()));
        LinkError::syscall(call, source)
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let basics = shared::link_basics(msg);
    LinkInfo {
        index: basics.index,
        name: basics.name,
        mac: basics.mac.unwrap_or_default(),
        mtu: basics.mtu,
        up: basics.up,
    }
}

fn route_spec(msg: &RouteMessage) -> Option<RouteSpec> {
    let basics = shared::route_basics(msg)?;
    Some(RouteSpec {
        dst: basics.dst,
        gateway: basics.gateway,
        oif: basics.oif?,
        scope_link: msg.header.scope == RouteScope::Link,
    })
}

impl LinkOps for RealLinkOps {
    fn link(&mut self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let request = shared::link_by_name(&self.handle, name.to_owned());
        let found = self.runtime.block_on(request).map_err(nl("RTM_GETLINK"))?;
        Ok(found.as_ref().map(link_info))
    }

    fn links(&mut self) -> Result<Vec<LinkInfo>, LinkError> {
        let request = self.handle.link().get().execute();
        let all: Vec<LinkMessage> = self
            .runtime
            .block_on(request.try_collect())
            .map_err(nl("RTM_GETLINK dump"))?;
        Ok(all.iter().map(link_info).collect())
    }

    fn add_veth(&mut self, veth: &VethPair) -> Result<(), LinkError> {
        let netns = File::open(&veth.peer_netns).map_err(|source| NetnsError::Open {
            path: veth.peer_netns.clone(),
            source,
        })?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(veth.peer.clone())
            .mtu(veth.mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(veth.name.clone())
            .address(veth.mac.octets().to_vec())
            .mtu(veth.mtu)
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
        let request = shared::ipv4_addresses(&self.handle, index);
        self.runtime
            .block_on(request)
            .map_err(nl("RTM_GETADDR dump"))
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

    fn add_neighbour(&mut self, index: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<(), LinkError> {
        let request = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac.octets())
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
