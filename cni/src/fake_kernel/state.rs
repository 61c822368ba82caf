//! What the fake kernel holds, and the rules by which it changes (see the module above).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use nix::errno::Errno;

use super::Refused;
use crate::link::VethPair;
use crate::netlink::MacAddr;
use crate::network::{FdbEntry, Neighbour, VxlanAttrs, VxlanSpec};

/// `RTPROT_STATIC`: the protocol of routes added without one (what rtnetlink's builder sets).
pub const ROUTE_PROTOCOL_STATIC: u8 = 4;

/// A link of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeLink {
    /// Its index in its namespace.
    pub index: u32,
    /// Its name, unique in its namespace.
    pub name: String,
    /// Its hardware address (all zeros for `lo`).
    pub mac: MacAddr,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Its IPv4 addresses, in the order they were added.
    pub addresses: Vec<Ipv4Net>,
    /// What kind of device it is.
    pub kind: LinkKind,
}

/// The kinds of device the fake knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `lo`: every namespace has one, and it cannot be deleted.
    Loopback,
    /// A physical or otherwise plain Ethernet link (a test's underlay).
    Ethernet,
    /// One end of a veth pair; the other end is `peer` in namespace `peer_netns`.
    Veth {
        /// The namespace of the other end.
        peer_netns: String,
        /// The other end's index there.
        peer: u32,
    },
    /// A VXLAN device.
    Vxlan(VxlanAttrs),
}

/// An IPv4 route of the main table, with everything either door can say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FakeRoute {
    /// Destination.
    pub dst: Ipv4Net,
    /// Next hop, if not directly reachable.
    pub gateway: Option<Ipv4Addr>,
    /// Output link.
    pub oif: u32,
    /// `scope link` (directly reachable) rather than `scope global`.
    pub scope_link: bool,
    /// The gateway is taken as on-link without checking.
    pub onlink: bool,
    /// Who made it (`proto`), e.g. [`ROUTE_PROTOCOL_STATIC`].
    pub protocol: u8,
}

impl fmt::Display for FakeRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "route {}", self.dst)?;
        if let Some(gateway) = self.gateway {
            write!(f, " via {gateway}")?;
        }
        write!(f, " if {}", self.oif)?;
        if self.onlink {
            f.write_str(" onlink")?;
        }
        if self.scope_link {
            f.write_str(" scope link")?;
        }
        Ok(())
    }
}

/// Every namespace of the fake kernel and what each holds.
#[derive(Debug, Default)]
pub struct KernelState {
    namespaces: BTreeMap<String, Namespace>,
    /// Link addresses handed out so far, for distinct MACs across namespaces.
    macs_made: u32,
}

#[derive(Debug, Default)]
struct Namespace {
    links: BTreeMap<u32, FakeLink>,
    last_index: u32,
    routes: Vec<FakeRoute>,
    /// Permanent neighbours: (link, IP) → MAC.
    neighbours: BTreeMap<(u32, Ipv4Addr), MacAddr>,
    /// Permanent FDB entries: (link, remote MAC) → remote VTEP.
    fdb: BTreeMap<(u32, MacAddr), Ipv4Addr>,
    ip_forward: bool,
}

impl Namespace {
    fn link_named(&self, name: &str) -> Option<&FakeLink> {
        self.links.values().find(|l| l.name == name)
    }

    fn link_mut(&mut self, index: u32) -> Result<&mut FakeLink, Refused> {
        self.links
            .get_mut(&index)
            .ok_or(Refused::Errno(Errno::ENODEV))
    }

    /// Takes a link out with every entry on it (not its veth peer: that is the caller's).
    fn forget_link(&mut self, index: u32) -> Option<FakeLink> {
        let link = self.links.remove(&index)?;
        self.routes.retain(|r| r.oif != index);
        self.neighbours.retain(|(link, _), _| *link != index);
        self.fdb.retain(|(link, _), _| *link != index);
        Some(link)
    }

    /// Is `gateway` directly reachable out of `oif`: a `scope link` route or a subnet covers it?
    fn on_link(&self, oif: u32, gateway: Ipv4Addr) -> bool {
        let by_route = self
            .routes
            .iter()
            .any(|r| r.oif == oif && r.scope_link && r.dst.contains(&gateway));
        let by_subnet = self.links.get(&oif).is_some_and(|link| {
            link.addresses
                .iter()
                .any(|a| a.prefix_len() < 32 && a.trunc().contains(&gateway))
        });
        by_route || by_subnet
    }
}

impl KernelState {
    fn ns(&self, ns: &str) -> Option<&Namespace> {
        self.namespaces.get(ns)
    }

    fn ns_mut(&mut self, ns: &str) -> Result<&mut Namespace, Refused> {
        self.namespaces
            .get_mut(ns)
            .ok_or_else(|| Refused::NoNamespace(ns.to_owned()))
    }

    /// Does namespace `ns` exist?
    pub fn has_netns(&self, ns: &str) -> bool {
        self.namespaces.contains_key(ns)
    }

    /// Creates namespace `ns` with `lo`, down; one that exists stays as it is.
    pub fn add_netns(&mut self, ns: &str) {
        self.namespaces.entry(ns.to_owned()).or_insert_with(|| {
            let lo = FakeLink {
                index: 1,
                name: "lo".to_owned(),
                mac: MacAddr::default(),
                mtu: 65536,
                up: false,
                addresses: Vec::new(),
                kind: LinkKind::Loopback,
            };
            Namespace {
                links: BTreeMap::from([(lo.index, lo)]),
                last_index: 1,
                ..Namespace::default()
            }
        });
    }

    /// Deletes namespace `ns`, its links, and their veth peers elsewhere.
    pub fn remove_netns(&mut self, ns: &str) {
        let indexes: Vec<u32> = self
            .ns(ns)
            .map(|space| space.links.keys().copied().collect())
            .unwrap_or_default();
        for index in indexes {
            self.unlink(ns, index);
        }
        self.namespaces.remove(ns);
    }

    fn next_mac(&mut self) -> MacAddr {
        self.macs_made += 1;
        let [_, a, b, c] = self.macs_made.to_be_bytes();
        MacAddr([0x02, 0, 0, a, b, c])
    }

    /// Adds link `name` to `ns`, down and without addresses; returns its index.
    fn new_link(
        &mut self,
        ns: &str,
        name: &str,
        mac: MacAddr,
        mtu: u32,
        kind: LinkKind,
    ) -> Result<u32, Refused> {
        let space = self.ns_mut(ns)?;
        if space.link_named(name).is_some() {
            return Err(Errno::EEXIST.into());
        }
        space.last_index += 1;
        let index = space.last_index;
        let link = FakeLink {
            index,
            name: name.to_owned(),
            mac,
            mtu,
            up: false,
            addresses: Vec::new(),
            kind,
        };
        space.links.insert(index, link);
        Ok(index)
    }

    /// Adds an up Ethernet link with `addresses` (a test's underlay, e.g. `eth0`).
    pub fn add_ethernet(
        &mut self,
        ns: &str,
        name: &str,
        mtu: u32,
        addresses: &[Ipv4Net],
    ) -> Result<u32, Refused> {
        let mac = self.next_mac();
        let index = self.new_link(ns, name, mac, mtu, LinkKind::Ethernet)?;
        let link = self.ns_mut(ns)?.link_mut(index)?;
        link.up = true;
        link.addresses = addresses.to_vec();
        Ok(index)
    }

    /// A veth pair as `veth` says, both ends down: `veth.name` in `ns`, its peer in the
    /// namespace named by `veth.peer_netns`.
    pub fn add_veth(&mut self, ns: &str, veth: &VethPair) -> Result<(), Refused> {
        let peer_ns = veth.peer_netns.to_string_lossy();
        let taken =
            |ns: &str, name: &str| self.ns(ns).is_some_and(|s| s.link_named(name).is_some());
        if !self.has_netns(&peer_ns) {
            return Err(Refused::NoNamespace(peer_ns.into_owned()));
        }
        if taken(ns, &veth.name) || taken(&peer_ns, &veth.peer) {
            return Err(Errno::EEXIST.into());
        }
        let veth_to = |peer_netns: &str, peer| LinkKind::Veth {
            peer_netns: peer_netns.to_owned(),
            peer,
        };
        // Each end names the other, so the first is made pointing nowhere and fixed after.
        let here = self.new_link(ns, &veth.name, veth.mac, veth.mtu, veth_to(&peer_ns, 0))?;
        let peer_mac = self.next_mac();
        let there = self.new_link(&peer_ns, &veth.peer, peer_mac, veth.mtu, veth_to(ns, here))?;
        self.ns_mut(ns)?.link_mut(here)?.kind = veth_to(&peer_ns, there);
        Ok(())
    }

    /// A VXLAN device as `spec` says (no learning), down; its underlay must exist.
    pub fn add_vxlan(&mut self, ns: &str, spec: &VxlanSpec) -> Result<(), Refused> {
        self.ns_mut(ns)?.link_mut(spec.underlay)?;
        let attrs = VxlanAttrs {
            vni: Some(spec.vni),
            port: Some(spec.port),
            local: Some(spec.local),
            underlay: Some(spec.underlay),
            learning: false,
        };
        self.new_link(ns, &spec.name, spec.mac, spec.mtu, LinkKind::Vxlan(attrs))?;
        Ok(())
    }

    /// Deletes a link with every entry on it; a veth takes its peer along. `lo` stays.
    pub fn delete_link(&mut self, ns: &str, index: u32) -> Result<(), Refused> {
        let space = self.ns_mut(ns)?;
        match space.links.get(&index) {
            None => Err(Errno::ENODEV.into()),
            Some(link) if link.kind == LinkKind::Loopback => Err(Errno::EOPNOTSUPP.into()),
            Some(_) => {
                self.unlink(ns, index);
                Ok(())
            }
        }
    }

    /// Removes a link and its veth peer, whatever they are.
    fn unlink(&mut self, ns: &str, index: u32) {
        let Some(link) = self
            .namespaces
            .get_mut(ns)
            .and_then(|s| s.forget_link(index))
        else {
            return;
        };
        if let LinkKind::Veth { peer_netns, peer } = link.kind
            && let Some(space) = self.namespaces.get_mut(&peer_netns)
        {
            space.forget_link(peer);
        }
    }

    /// Deletes link `name` in `ns` as `ip link del` from outside would; true if it existed.
    pub fn delete_link_named(&mut self, ns: &str, name: &str) -> bool {
        let index = self.link(ns, name).map(|l| l.index);
        index.is_some_and(|index| self.delete_link(ns, index).is_ok())
    }

    /// Sets a link up.
    pub fn set_up(&mut self, ns: &str, index: u32) -> Result<(), Refused> {
        self.ns_mut(ns)?.link_mut(index)?.up = true;
        Ok(())
    }

    /// Sets a link's MTU.
    pub fn set_mtu(&mut self, ns: &str, index: u32, mtu: u32) -> Result<(), Refused> {
        self.ns_mut(ns)?.link_mut(index)?.mtu = mtu;
        Ok(())
    }

    /// Adds an address to a link; the same one twice is `EEXIST`.
    pub fn add_address(&mut self, ns: &str, index: u32, address: Ipv4Net) -> Result<(), Refused> {
        let link = self.ns_mut(ns)?.link_mut(index)?;
        if link.addresses.contains(&address) {
            return Err(Errno::EEXIST.into());
        }
        link.addresses.push(address);
        Ok(())
    }

    /// Removes an address from a link; one that is not there is `EADDRNOTAVAIL`.
    pub fn del_address(&mut self, ns: &str, index: u32, address: Ipv4Net) -> Result<(), Refused> {
        let link = self.ns_mut(ns)?.link_mut(index)?;
        let before = link.addresses.len();
        link.addresses.retain(|a| *a != address);
        if link.addresses.len() == before {
            return Err(Errno::EADDRNOTAVAIL.into());
        }
        Ok(())
    }

    /// Adds a route, by the rules in the module doc.
    pub fn add_route(&mut self, ns: &str, route: FakeRoute) -> Result<(), Refused> {
        let space = self.ns_mut(ns)?;
        if !space.link_mut(route.oif)?.up {
            return Err(Errno::ENETDOWN.into());
        }
        if space.routes.iter().any(|r| r.dst == route.dst) {
            return Err(Errno::EEXIST.into());
        }
        if !route.onlink
            && route
                .gateway
                .is_some_and(|gw| !space.on_link(route.oif, gw))
        {
            return Err(Errno::ENETUNREACH.into());
        }
        space.routes.push(route);
        Ok(())
    }

    /// Deletes the route to `route.dst` with the same next hop, link and protocol (`ESRCH` if
    /// there is none).
    pub fn del_route(&mut self, ns: &str, route: FakeRoute) -> Result<(), Refused> {
        let space = self.ns_mut(ns)?;
        let at = space
            .routes
            .iter()
            .position(|r| {
                (r.dst, r.gateway, r.oif, r.protocol)
                    == (route.dst, route.gateway, route.oif, route.protocol)
            })
            .ok_or(Errno::ESRCH)?;
        space.routes.remove(at);
        Ok(())
    }

    /// Adds a permanent neighbour, replacing the one for the same link and IP.
    pub fn add_neighbour(&mut self, ns: &str, neighbour: Neighbour) -> Result<(), Refused> {
        let space = self.ns_mut(ns)?;
        space.link_mut(neighbour.link)?;
        let key = (neighbour.link, neighbour.ip);
        space.neighbours.insert(key, neighbour.mac);
        Ok(())
    }

    /// Deletes the neighbour for `neighbour`'s link and IP (`ENOENT` if there is none).
    pub fn del_neighbour(&mut self, ns: &str, neighbour: Neighbour) -> Result<(), Refused> {
        let key = (neighbour.link, neighbour.ip);
        match self.ns_mut(ns)?.neighbours.remove(&key) {
            Some(_) => Ok(()),
            None => Err(Errno::ENOENT.into()),
        }
    }

    /// Adds a permanent FDB entry, replacing the one for the same link and MAC.
    pub fn add_fdb(&mut self, ns: &str, entry: FdbEntry) -> Result<(), Refused> {
        let space = self.ns_mut(ns)?;
        space.link_mut(entry.link)?;
        space.fdb.insert((entry.link, entry.mac), entry.dst);
        Ok(())
    }

    /// Deletes an FDB entry (`ENOENT` if it is not there, or points elsewhere).
    pub fn del_fdb(&mut self, ns: &str, entry: FdbEntry) -> Result<(), Refused> {
        let fdb = &mut self.ns_mut(ns)?.fdb;
        let key = (entry.link, entry.mac);
        if fdb.get(&key) != Some(&entry.dst) {
            return Err(Errno::ENOENT.into());
        }
        fdb.remove(&key);
        Ok(())
    }

    /// Sets `net.ipv4.ip_forward = 1` in `ns`.
    pub fn enable_ip_forward(&mut self, ns: &str) -> Result<(), Refused> {
        self.ns_mut(ns)?.ip_forward = true;
        Ok(())
    }

    /// The link `name` in `ns`.
    pub fn link(&self, ns: &str, name: &str) -> Option<FakeLink> {
        self.ns(ns)?.link_named(name).cloned()
    }

    /// The link with `index` in `ns`.
    pub fn link_at(&self, ns: &str, index: u32) -> Option<FakeLink> {
        self.ns(ns)?.links.get(&index).cloned()
    }

    /// Every link of `ns`, by index.
    pub fn links(&self, ns: &str) -> Vec<FakeLink> {
        self.ns(ns)
            .map(|space| space.links.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Names of the links in `ns`, by index.
    pub fn link_names(&self, ns: &str) -> Vec<String> {
        self.links(ns).into_iter().map(|l| l.name).collect()
    }

    /// Addresses on link `name` in `ns`.
    pub fn addresses(&self, ns: &str, name: &str) -> Vec<Ipv4Net> {
        self.link(ns, name).map(|l| l.addresses).unwrap_or_default()
    }

    /// Every route in `ns`, oldest first.
    pub fn routes(&self, ns: &str) -> Vec<FakeRoute> {
        self.ns(ns).map(|s| s.routes.clone()).unwrap_or_default()
    }

    /// Every neighbour entry in `ns`.
    pub fn neighbours(&self, ns: &str) -> Vec<Neighbour> {
        let Some(space) = self.ns(ns) else {
            return Vec::new();
        };
        let entries = space.neighbours.iter();
        let neighbour = |(&(link, ip), &mac)| Neighbour { link, ip, mac };
        entries.map(neighbour).collect()
    }

    /// Every FDB entry in `ns`.
    pub fn fdb(&self, ns: &str) -> Vec<FdbEntry> {
        let Some(space) = self.ns(ns) else {
            return Vec::new();
        };
        let entries = space.fdb.iter();
        entries
            .map(|(&(link, mac), &dst)| FdbEntry { link, mac, dst })
            .collect()
    }

    /// Is forwarding on in `ns`?
    pub fn ip_forward(&self, ns: &str) -> bool {
        self.ns(ns).is_some_and(|s| s.ip_forward)
    }
}
