//! rtnetlink wrappers: links, addresses, routes, in the daemon's namespace
//! or, through a socket opened inside it, in a sandbox's namespace.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, MacVlanMode};
use rtnetlink::{Handle, LinkBridge, LinkMacVlan, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder};

use crate::error::{Error, Result};
use crate::sys::netns;

/// Interface alias (IFLA_IFALIAS) marking the links the daemon made, so
/// reconcile never deletes a `br-*`/`veth*` that belongs to someone else
/// (Docker uses the same names).
pub const OWNER_ALIAS: &str = "dataplane";

static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Change requests (links, addresses, routes) sent since the start, in any
/// namespace, whether or not the kernel found anything to change.
pub fn writes() -> u64 {
    WRITES.load(std::sync::atomic::Ordering::Relaxed)
}

fn wrote() {
    WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// One link as listed by [`Netlink::links`].
#[derive(Clone, Debug, Default)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    pub kind: String,
    pub alias: String,
    /// The bridge (or other controller) it is a port of.
    pub master: Option<u32>,
    /// Administratively up.
    pub up: bool,
    pub mtu: u32,
    pub mac: Vec<u8>,
}

fn link_info(m: &LinkMessage) -> LinkInfo {
    use rtnetlink::packet_route::link::LinkFlags;
    let mut l =
        LinkInfo { index: m.header.index, up: m.header.flags.contains(LinkFlags::Up), ..Default::default() };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::IfAlias(n) => l.alias = n.clone(),
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Address(a) => l.mac = a.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let rtnetlink::packet_route::link::LinkInfo::Kind(k) = i {
                        l.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// A netlink handle bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn nl(op: &'static str, target: impl std::fmt::Display) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink { op, target: target.to_string(), source }
}

/// Whether a netlink error is "no such device / object".
fn is_not_found(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc_enodev() || m.raw_code() == -2)
}
const fn libc_enodev() -> i32 {
    19
}

impl Netlink {
    /// A handle in the calling thread's namespace. Needs a tokio runtime.
    pub fn current() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("open netlink socket", "current netns", e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A handle whose socket lives in the namespace at `path`.
    pub fn in_netns(path: &Path) -> Result<Self> {
        let rt = tokio::runtime::Handle::current();
        let (conn, handle, _) = netns::run_in(path, move || {
            let _guard = rt.enter();
            rtnetlink::new_connection()
        })?
        .map_err(|e| Error::io("open netlink socket", path.display(), e))?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn link_index(&self, name: &str) -> Result<Option<u32>> {
        Ok(self.link(name).await?.map(|l| l.index))
    }

    /// The link named `name`, if there is one.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>> {
        let mut s = self.handle.link().get().match_name(name.to_string()).execute();
        match s.try_next().await {
            Ok(Some(m)) => Ok(Some(link_info(&m))),
            Ok(None) => Ok(None),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(nl("get link", name)(e)),
        }
    }

    pub async fn require_index(&self, name: &str) -> Result<u32> {
        self.link_index(name)
            .await?
            .ok_or_else(|| Error::invalid("interface", name, "no such network interface"))
    }

    /// All links.
    pub async fn links(&self) -> Result<Vec<LinkInfo>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(nl("list links", "all"))?;
        Ok(msgs.iter().map(link_info).collect())
    }

    pub async fn create_bridge(&self, name: &str) -> Result<u32> {
        wrote();
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(nl("create bridge", name))?;
        let idx = self.require_index(name).await?;
        if let Err(e) = self.mark_ours(idx).await {
            let _ = self.delete(idx).await;
            return Err(e);
        }
        Ok(idx)
    }

    /// An external-mode (collect_md) VXLAN device on UDP `port`: BPF sets
    /// each packet's VNI and remote host; up, marked ours.
    pub async fn create_vxlan_external(&self, name: &str, port: u16) -> Result<u32> {
        wrote();
        self.handle
            .link()
            .add(LinkVxlan::new(name, 0).port(port).collect_metadata(true).learning(false).build())
            .execute()
            .await
            .map_err(nl("create vxlan device", name))?;
        let idx = self.require_index(name).await?;
        if let Err(e) = async {
            self.mark_ours(idx).await?;
            self.set_up(idx).await
        }
        .await
        {
            let _ = self.delete(idx).await;
            return Err(e);
        }
        Ok(idx)
    }

    pub async fn create_veth(&self, name: &str, peer: &str) -> Result<(u32, u32)> {
        wrote();
        self.handle
            .link()
            .add(LinkVeth::new(name, peer).build())
            .execute()
            .await
            .map_err(nl("create veth", name))?;
        if let Some(idx) = self.link_index(name).await?
            && let Err(e) = self.mark_ours(idx).await
        {
            let _ = self.delete(idx).await;
            return Err(e);
        }
        Ok((self.require_index(name).await?, self.require_index(peer).await?))
    }

    pub async fn create_macvlan(&self, name: &str, parent: u32, mode: MacVlanMode) -> Result<u32> {
        wrote();
        self.handle
            .link()
            .add(LinkMacVlan::new(name, parent, mode).build())
            .execute()
            .await
            .map_err(nl("create macvlan", name))?;
        self.require_index(name).await
    }

    async fn set(&self, what: &'static str, index: u32, msg: LinkMessage) -> Result<()> {
        wrote();
        self.handle.link().set(msg).execute().await.map_err(nl(what, index))
    }

    /// Sets [`OWNER_ALIAS`] (the kernel ignores IFLA_IFALIAS in RTM_NEWLINK,
    /// so this is a second request right after creation).
    async fn mark_ours(&self, index: u32) -> Result<()> {
        self.set("set alias", index, LinkUnspec::new_with_index(index).alias(OWNER_ALIAS).build()).await
    }

    pub async fn set_master(&self, index: u32, master: u32) -> Result<()> {
        self.set("set master", index, LinkUnspec::new_with_index(index).controller(master).build()).await
    }

    pub async fn set_up(&self, index: u32) -> Result<()> {
        self.set("set up", index, LinkUnspec::new_with_index(index).up().build()).await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.set("set mtu", index, LinkUnspec::new_with_index(index).mtu(mtu).build()).await
    }

    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.set("set mac", index, LinkUnspec::new_with_index(index).address(mac.to_vec()).build()).await
    }

    pub async fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.set("rename", index, LinkUnspec::new_with_index(index).name(name.to_string()).build()).await
    }

    /// Moves a link into the namespace at `netns`.
    pub async fn move_to(&self, index: u32, netns: &Path) -> Result<()> {
        let f = std::fs::File::open(netns).map_err(|e| Error::io("open netns", netns.display(), e))?;
        self.set("move to netns", index, LinkUnspec::new_with_index(index).setns_by_fd(f.as_raw_fd()).build())
            .await
    }

    pub async fn delete(&self, index: u32) -> Result<()> {
        wrote();
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(nl("delete link", index)(e)),
        }
    }

    pub async fn delete_by_name(&self, name: &str) -> Result<()> {
        match self.link_index(name).await? {
            Some(i) => self.delete(i).await,
            None => Ok(()),
        }
    }

    /// Removes `ip/prefix` from link `index`; an address not there is fine.
    pub async fn delete_address(&self, index: u32, ip: std::net::IpAddr, prefix: u8) -> Result<()> {
        use rtnetlink::packet_route::address::AddressAttribute;
        for m in self.address_messages(index).await? {
            let holds = m.attributes.iter().any(|a| matches!(a, AddressAttribute::Address(a) if *a == ip));
            if holds && m.header.prefix_len == prefix {
                wrote();
                self.handle
                    .address()
                    .del(m)
                    .execute()
                    .await
                    .map_err(nl("delete address", format!("{ip}/{prefix}")))?;
            }
        }
        Ok(())
    }

    /// Adds `ip/prefix` to a link; an existing identical address is fine.
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        wrote();
        match self.handle.address().add(index, ip.into(), prefix).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -17 => Ok(()),
            Err(e) => Err(nl("add address", format!("{ip}/{prefix} on {index}"))(e)),
        }
    }

    /// IPv6 address `ip/prefix` on link `index`, usable at once: no
    /// duplicate address detection (the address is ours to give, as
    /// Docker's are), so nothing waits a second for it to leave the
    /// tentative state. The kernel adds the prefix's on-link route.
    pub async fn add_address6(&self, index: u32, ip: Ipv6Addr, prefix: u8) -> Result<()> {
        self.add_address6_as(index, ip, prefix, false).await
    }

    /// A virtual IPv6 address (an alias's VIP) on link `index`: as
    /// [`Self::add_address6`], /128 and deprecated (preferred lifetime 0,
    /// valid forever), so the host never picks it as the source of its
    /// own connections — their answers would come back to the VIP and be
    /// taken for new flows to balance.
    pub async fn add_vip6(&self, index: u32, ip: Ipv6Addr) -> Result<()> {
        self.add_address6_as(index, ip, 128, true).await
    }

    async fn add_address6_as(&self, index: u32, ip: Ipv6Addr, prefix: u8, deprecated: bool) -> Result<()> {
        wrote();
        use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, CacheInfo};
        let mut req = self.handle.address().add(index, ip.into(), prefix);
        req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        if deprecated {
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            req.message_mut().attributes.push(AddressAttribute::CacheInfo(lifetimes));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -17 => Ok(()),
            Err(e) => Err(nl("add address", format!("{ip}/{prefix} on {index}"))(e)),
        }
    }

    /// The IPv6 default route via `gateway` on link `index`.
    pub async fn add_default_route6(&self, gateway: Ipv6Addr, index: u32) -> Result<()> {
        wrote();
        let msg = RouteMessageBuilder::<Ipv6Addr>::new().gateway(gateway).output_interface(index).build();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -17 => Ok(()),
            Err(e) => Err(nl("add default route", gateway)(e)),
        }
    }

    /// Interface of the IPv6 default route, if any.
    pub async fn default_route6_interface(&self) -> Result<Option<u32>> {
        self.default_interface::<Ipv6Addr>("ipv6").await
    }

    /// An on-link route to `subnet` through `index`, preferring source `src`
    /// (what the kernel would add for an address of that prefix).
    pub async fn add_subnet_route(
        &self,
        subnet: ipnetwork::Ipv4Network,
        index: u32,
        src: Ipv4Addr,
    ) -> Result<()> {
        wrote();
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix())
            .output_interface(index)
            .pref_source(src)
            .scope(rtnetlink::packet_route::route::RouteScope::Link)
            .protocol(rtnetlink::packet_route::route::RouteProtocol::Kernel)
            .build();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -17 => Ok(()),
            Err(e) => Err(nl("add subnet route", subnet)(e)),
        }
    }

    pub async fn add_default_route(&self, gateway: Ipv4Addr, index: u32) -> Result<()> {
        wrote();
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
        match self.handle.route().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -17 => Ok(()),
            Err(e) => Err(nl("add default route", gateway)(e)),
        }
    }

    /// Every route of family `A` (`family` names it in errors).
    async fn routes<A>(
        &self,
        family: &'static str,
    ) -> Result<Vec<rtnetlink::packet_route::route::RouteMessage>>
    where
        RouteMessageBuilder<A>: Default,
    {
        self.handle
            .route()
            .get(RouteMessageBuilder::<A>::default().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes", family))
    }

    /// What the host itself uses of the IPv4 space, each with words for a
    /// message: connected and static routes of the main table (not the
    /// default route) and every address on every link.
    pub async fn ipv4_claims(&self) -> Result<Vec<(ipnetwork::Ipv4Network, String)>> {
        Ok(self
            .claims()
            .await?
            .into_iter()
            .filter_map(|(n, what)| match n {
                ipnetwork::IpNetwork::V4(n) => Some((n, what)),
                ipnetwork::IpNetwork::V6(_) => None,
            })
            .collect())
    }

    /// The same of the IPv6 space: routes of the main table and global
    /// addresses with their prefixes; link-local, multicast and loopback
    /// are no network's anyway.
    pub async fn ipv6_claims(&self) -> Result<Vec<(ipnetwork::Ipv6Network, String)>> {
        Ok(self
            .claims()
            .await?
            .into_iter()
            .filter_map(|(n, what)| match n {
                ipnetwork::IpNetwork::V6(n) => Some((n, what)),
                ipnetwork::IpNetwork::V4(_) => None,
            })
            .filter(|(n, _)| {
                let ip = n.network();
                !(ip.is_loopback() || ip.is_multicast() || ip.is_unicast_link_local())
            })
            .collect())
    }

    /// Routes of the main table (not default routes) and addresses (IPv4
    /// as /32, IPv6 with their prefix), of both families.
    async fn claims(&self) -> Result<Vec<(ipnetwork::IpNetwork, String)>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        use std::net::IpAddr;
        let names: std::collections::HashMap<u32, String> =
            self.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
        let name = |i: u32| names.get(&i).cloned().unwrap_or_else(|| format!("#{i}"));
        let mut out = Vec::new();
        let mut routes = self.routes::<Ipv4Addr>("ipv4").await?;
        routes.extend(self.routes::<Ipv6Addr>("ipv6").await?);
        for r in routes {
            if r.header.destination_prefix_length == 0 || r.header.table != 254 {
                continue;
            }
            let mut dst = None;
            let mut dev = String::new();
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(IpAddr::V4(*ip)),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => dst = Some(IpAddr::V6(*ip)),
                    RouteAttribute::Oif(i) => dev = name(*i),
                    _ => {}
                }
            }
            if let Some(d) =
                dst.and_then(|d| ipnetwork::IpNetwork::new(d, r.header.destination_prefix_length).ok())
            {
                out.push((d, format!("route {d} dev {dev}")));
            }
        }
        let msgs: Vec<_> =
            self.handle.address().get().execute().try_collect().await.map_err(nl("list addresses", "all"))?;
        for m in msgs {
            let dev = name(m.header.index);
            for a in &m.attributes {
                let claim = match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => ipnetwork::IpNetwork::new((*ip).into(), 32)
                        .ok()
                        .map(|n| (n, format!("address {ip} on {dev}"))),
                    AddressAttribute::Address(IpAddr::V6(ip)) => {
                        let len = m.header.prefix_len;
                        ipnetwork::Ipv6Network::new(*ip, len)
                            .and_then(|n| ipnetwork::Ipv6Network::new(n.network(), len))
                            .ok()
                            .map(|n| (n.into(), format!("address {ip}/{len} on {dev}")))
                    }
                    _ => None,
                };
                out.extend(claim);
            }
        }
        Ok(out)
    }

    /// IPv4 addresses on link `index`.
    pub async fn ipv4_addresses(&self, index: u32) -> Result<Vec<Ipv4Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// IPv6 addresses on link `index`.
    pub async fn ipv6_addresses(&self, index: u32) -> Result<Vec<Ipv6Addr>> {
        Ok(self
            .addresses(index)
            .await?
            .into_iter()
            .filter_map(|ip| match ip {
                std::net::IpAddr::V6(ip) => Some(ip),
                std::net::IpAddr::V4(_) => None,
            })
            .collect())
    }

    /// The address messages of link `index`.
    async fn address_messages(
        &self,
        index: u32,
    ) -> Result<Vec<rtnetlink::packet_route::address::AddressMessage>> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("list addresses", index))
    }

    /// Addresses of both families on link `index` (IPv4 local, IPv6 address).
    async fn addresses(&self, index: u32) -> Result<Vec<std::net::IpAddr>> {
        use rtnetlink::packet_route::address::AddressAttribute;
        Ok(self
            .address_messages(index)
            .await?
            .iter()
            .flat_map(|m| m.attributes.iter())
            .filter_map(|a| match a {
                AddressAttribute::Local(ip @ std::net::IpAddr::V4(_)) => Some(*ip),
                AddressAttribute::Address(ip @ std::net::IpAddr::V6(_)) => Some(*ip),
                _ => None,
            })
            .collect())
    }

    /// Interface of the IPv4 default route, if any.
    pub async fn default_route_interface(&self) -> Result<Option<u32>> {
        self.default_interface::<Ipv4Addr>("ipv4").await
    }

    /// Interface of the default route of family `A` in the main table.
    async fn default_interface<A>(&self, family: &'static str) -> Result<Option<u32>>
    where
        RouteMessageBuilder<A>: Default,
    {
        use rtnetlink::packet_route::route::RouteAttribute;
        let routes = self.routes::<A>(family).await?;
        Ok(routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            }))
    }
}

impl Netlink {
    /// Whether the kernel knows the link kind `kind`: asks for one on top of
    /// `parent` and reads the answer (EOPNOTSUPP: the kind is not built in;
    /// any other answer means the kernel knows it). A link that does get
    /// made is deleted at once.
    pub async fn probe_link_kind(&self, kind: &str, parent: &str) -> Result<bool> {
        let lo = self.require_index(parent).await?;
        let name = "dpprobe0";
        let msg = match kind {
            "ipvlan" => {
                rtnetlink::LinkIpVlan::new(name, lo, rtnetlink::packet_route::link::IpVlanMode::L2).build()
            }
            "vlan" => rtnetlink::LinkVlan::new(name, lo, 4094).build(),
            other => {
                return Err(Error::Unsupported(format!("cannot probe link kind {other}")));
            }
        };
        match self.handle.link().add(msg).execute().await {
            Ok(()) => {
                self.delete_by_name(name).await?;
                Ok(true)
            }
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -95 => Ok(false),
            Err(_) => Ok(true),
        }
    }
}

/// A root qdisc appearing on (`Some(kind)`) or going from (`None`) link `index`.
#[derive(Clone, Debug, PartialEq)]
pub struct RootQdisc {
    pub index: u32,
    pub kind: Option<String>,
}

fn root_qdisc(msg: &rtnetlink::packet_route::tc::TcMessage, present: bool) -> Option<RootQdisc> {
    use rtnetlink::packet_route::tc::{TcAttribute, TcHandle};
    if msg.header.parent != TcHandle::ROOT {
        return None;
    }
    let kind = msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.clone()),
        _ => None,
    });
    Some(RootQdisc { index: u32::try_from(msg.header.index).ok()?, kind: if present { kind } else { None } })
}

/// Root qdiscs of the daemon's namespace as they are now, then as they
/// change: the subscription is made before the listing, so nothing in
/// between is missed. Needs a tokio runtime.
pub async fn watch_root_qdiscs()
-> Result<(Vec<RootQdisc>, impl futures::Stream<Item = RootQdisc> + Send + Unpin)> {
    use futures::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    let (conn, handle, messages) = rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Tc])
        .map_err(|e| Error::io("open netlink socket", "tc events", e))?;
    tokio::spawn(conn);
    let now: Vec<_> =
        handle.qdisc().get().execute().try_collect().await.map_err(nl("list qdiscs", "all links"))?;
    let now = now.iter().filter_map(|m| root_qdisc(m, true)).collect();
    let changes = messages.filter_map(|(m, _)| {
        futures::future::ready(match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewQueueDiscipline(q)) => root_qdisc(&q, true),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelQueueDiscipline(q)) => root_qdisc(&q, false),
            _ => None,
        })
    });
    Ok((now, changes))
}
