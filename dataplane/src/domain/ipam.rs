//! Address management: validating a network's IPAM config, choosing a free
//! subnet, and allocating addresses in order (as Docker does).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use crate::domain::model::Ipam;
use crate::error::{Error, Result};

/// The IPAM part of a create request, as the user gave it.
#[derive(Clone, Debug, Default)]
pub struct IpamRequest {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
    pub aux: BTreeMap<String, String>,
}

/// What IPAM needs of a CIDR of either family.
pub(super) trait Cidr:
    Copy + std::fmt::Display + std::str::FromStr<Err = ipnetwork::IpNetworkError>
{
    type Addr: PartialEq + std::fmt::Display;
    const FAMILY: &'static str;
    fn base(&self) -> Self::Addr;
    fn given(&self) -> Self::Addr;
    fn last(&self) -> Self::Addr;
    fn len(&self) -> u8;
    fn holds(&self, a: Self::Addr) -> bool;
}

macro_rules! cidr {
    ($net:ty, $addr:ty, $family:literal) => {
        impl Cidr for $net {
            type Addr = $addr;
            const FAMILY: &'static str = $family;
            fn base(&self) -> $addr {
                self.network()
            }
            fn given(&self) -> $addr {
                self.ip()
            }
            fn last(&self) -> $addr {
                self.broadcast()
            }
            fn len(&self) -> u8 {
                self.prefix()
            }
            fn holds(&self, a: $addr) -> bool {
                self.contains(a)
            }
        }
    };
}
cidr!(Ipv4Network, Ipv4Addr, "IPv4");
cidr!(ipnetwork::Ipv6Network, std::net::Ipv6Addr, "IPv6");

/// A CIDR of family `N` as given for `what`, its host bits clear.
pub(super) fn parse_net<N: Cidr>(what: &'static str, s: &str) -> Result<N> {
    let net: N =
        s.parse().map_err(|e| Error::invalid(what, s, format!("not an {} CIDR ({e})", N::FAMILY)))?;
    if net.base() != net.given() {
        return Err(Error::invalid(
            what,
            s,
            format!("host bits are set; did you mean {}/{}?", net.base(), net.len()),
        ));
    }
    Ok(net)
}

/// `--ip-range` `r`, which must lie inside `subnet`.
pub(super) fn parse_range<N: Cidr>(r: &str, subnet: N) -> Result<N> {
    let range: N = parse_net("ip-range", r)?;
    if !(subnet.holds(range.base()) && subnet.holds(range.last())) {
        return Err(Error::invalid("ip-range", r, format!("not inside subnet {subnet}")));
    }
    Ok(range)
}

fn parse_ip(what: &'static str, s: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| Error::invalid(what, s, "not an IPv4 address"))
}

/// Default pools Docker picks automatic subnets from.
fn default_pools() -> impl Iterator<Item = Ipv4Network> {
    let b = (18u8..=31).filter_map(|x| Ipv4Network::new(Ipv4Addr::new(172, x, 0, 0), 16).ok());
    let c = (0u8..16).filter_map(|x| Ipv4Network::new(Ipv4Addr::new(192, 168, x * 16, 0), 20).ok());
    b.chain(c)
}

/// Automatic subnets of overlay networks: 10.0.0.0/24, 10.0.1.0/24, …
/// (the /24s Docker's swarm takes from 10.0.0.0/8).
fn overlay_pools() -> impl Iterator<Item = Ipv4Network> {
    (0u8..=255).filter_map(|x| Ipv4Network::new(Ipv4Addr::new(10, 0, x, 0), 24).ok())
}

/// Validates (or completes, when no subnet is given) an IPAM config.
/// `taken` are subnets already used by other networks (with their names).
pub fn plan(req: &IpamRequest, taken: &[(Ipv4Network, String)]) -> Result<Ipam> {
    plan_in(req, taken, default_pools())
}

/// [`plan`] for an overlay network (automatic subnets from [`overlay_pools`]).
pub fn plan_overlay(req: &IpamRequest, taken: &[(Ipv4Network, String)]) -> Result<Ipam> {
    plan_in(req, taken, overlay_pools())
}

fn plan_in(
    req: &IpamRequest,
    taken: &[(Ipv4Network, String)],
    mut pools: impl Iterator<Item = Ipv4Network>,
) -> Result<Ipam> {
    let subnet = match &req.subnet {
        Some(s) => {
            let net: Ipv4Network = parse_net("subnet", s)?;
            if net.prefix() > 30 {
                return Err(Error::invalid(
                    "subnet",
                    s,
                    "prefix must be /30 or shorter to hold a gateway and an endpoint",
                ));
            }
            check_not_special(net, s)?;
            if let Some((_, other)) = taken.iter().find(|(t, _)| t.overlaps(net)) {
                return Err(Error::SubnetOverlap { subnet: s.clone(), other: other.clone() });
            }
            net
        }
        None => {
            if req.ip_range.is_some() || req.gateway.is_some() || !req.aux.is_empty() {
                return Err(Error::invalid(
                    "IPAM config",
                    "",
                    "--ip-range, --gateway and --aux-address need --subnet",
                ));
            }
            pools.find(|p| !taken.iter().any(|(t, _)| t.overlaps(*p))).ok_or(Error::NoFreeSubnet)?
        }
    };
    let ip_range = req.ip_range.as_deref().map(|r| parse_range(r, subnet)).transpose()?;
    let gateway = match &req.gateway {
        Some(g) => {
            let ip = parse_ip("gateway", g)?;
            check_host_address("gateway", subnet, ip)?;
            ip
        }
        None => first_host(subnet),
    };
    let mut aux = BTreeMap::new();
    for (name, a) in &req.aux {
        let ip = parse_ip("aux-address", a)?;
        check_host_address("aux-address", subnet, ip)?;
        aux.insert(name.clone(), ip);
    }
    Ok(Ipam { subnet, ip_range, gateway, aux })
}

/// Address blocks no network may use: packets to them never reach a
/// sandbox through a bridge (loopback, link-local, multicast, reserved and
/// broadcast, "this network").
const SPECIAL: [(&str, Ipv4Network); 5] = [
    ("\"this network\" 0.0.0.0/8", block([0, 0, 0, 0], 8)),
    ("loopback 127.0.0.0/8", block([127, 0, 0, 0], 8)),
    ("link-local 169.254.0.0/16", block([169, 254, 0, 0], 16)),
    ("multicast 224.0.0.0/4", block([224, 0, 0, 0], 4)),
    ("reserved 240.0.0.0/4 (with the broadcast address)", block([240, 0, 0, 0], 4)),
];

/// A network known valid when compiling (an invalid one fails the build).
const fn block(addr: [u8; 4], prefix: u8) -> Ipv4Network {
    match Ipv4Network::new_checked(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]), prefix) {
        Some(n) => n,
        None => panic!("invalid special block"),
    }
}

fn check_not_special(net: Ipv4Network, given: &str) -> Result<()> {
    for (what, block) in SPECIAL {
        if block.overlaps(net) {
            return Err(Error::invalid("subnet", given, format!("overlaps the {what} block")));
        }
    }
    Ok(())
}

fn first_host(net: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

fn check_host_address(what: &'static str, subnet: Ipv4Network, ip: Ipv4Addr) -> Result<()> {
    if !subnet.contains(ip) {
        return Err(Error::invalid(what, ip, format!("not inside subnet {subnet}")));
    }
    if ip == subnet.network() || ip == subnet.broadcast() {
        return Err(Error::invalid(what, ip, format!("is the network or broadcast address of {subnet}")));
    }
    Ok(())
}

/// Addresses never handed to an endpoint.
fn reserved(ipam: &Ipam) -> HashSet<Ipv4Addr> {
    let mut r: HashSet<Ipv4Addr> = ipam.aux.values().copied().collect();
    r.insert(ipam.gateway);
    r.insert(ipam.subnet.network());
    r.insert(ipam.subnet.broadcast());
    r
}

/// Checks a user-requested address (`--ip`).
pub fn check_requested(ipam: &Ipam, ip: Ipv4Addr, used: &HashSet<Ipv4Addr>, network: &str) -> Result<()> {
    if !ipam.subnet.contains(ip) {
        return Err(Error::invalid(
            "ip",
            ip,
            format!("not inside subnet {} of network {network}", ipam.subnet),
        ));
    }
    if reserved(ipam).contains(&ip) || used.contains(&ip) {
        return Err(Error::AddressInUse { ip: ip.into(), network: network.to_string() });
    }
    Ok(())
}

/// The lowest free address of the ip-range (or the subnet).
pub fn allocate(ipam: &Ipam, used: &HashSet<Ipv4Addr>, network: &str) -> Result<Ipv4Addr> {
    allocate_from(ipam, used, network, 0)
}

/// The first free address of the ip-range (or the subnet) at or after the
/// `skip`-th one, wrapping around: hosts of a cluster start their searches
/// at different places, so that concurrent claims seldom collide.
pub fn allocate_from(ipam: &Ipam, used: &HashSet<Ipv4Addr>, network: &str, skip: u32) -> Result<Ipv4Addr> {
    let pool = ipam.ip_range.unwrap_or(ipam.subnet);
    let reserved = reserved(ipam);
    let start = u32::from(pool.network());
    let size = u32::from(pool.broadcast()) - start + 1;
    let skip = skip % size;
    (0..size)
        .map(|i| Ipv4Addr::from(start + (skip + i) % size))
        .find(|ip| !reserved.contains(ip) && !used.contains(ip))
        .ok_or_else(|| Error::PoolExhausted { network: network.to_string() })
}

/// The highest free address of the ip-range (or the subnet): overlay
/// networks take their virtual IPs from the top, their sandboxes from the
/// bottom, so hosts planning at once seldom want the same address.
pub fn allocate_top(ipam: &Ipam, used: &HashSet<Ipv4Addr>, network: &str) -> Result<Ipv4Addr> {
    let pool = ipam.ip_range.unwrap_or(ipam.subnet);
    let reserved = reserved(ipam);
    (u32::from(pool.network())..=u32::from(pool.broadcast()))
        .rev()
        .map(Ipv4Addr::from)
        .find(|ip| !reserved.contains(ip) && !used.contains(ip))
        .ok_or_else(|| Error::PoolExhausted { network: network.to_string() })
}

/// An address pool a runtime's IPAM asked for (Docker's `--ipam-driver
/// dataplane`): its subnet and the addresses handed out of it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Pool {
    /// The ID the runtime knows it by: its CIDR (and sub-pool).
    pub id: String,
    pub subnet: Ipv4Network,
    pub ip_range: Option<Ipv4Network>,
    /// Requests holding it: a repeated RequestPool counts, ReleasePool undoes one.
    pub refs: u32,
    pub addresses: std::collections::BTreeSet<Ipv4Addr>,
}

impl Pool {
    /// A new pool for `subnet` (and sub-pool `ip_range`), held once.
    pub fn new(subnet: Ipv4Network, ip_range: Option<Ipv4Network>) -> Self {
        let id = match ip_range {
            Some(r) => format!("{subnet}+{r}"),
            None => subnet.to_string(),
        };
        Pool { id, subnet, ip_range, refs: 1, addresses: Default::default() }
    }
}

/// RequestPool: the pool asked for, or the first free default pool;
/// refused when it overlaps one of `taken` (networks, other pools, and
/// for a chosen pool the host's own routes).
pub fn plan_pool(
    pool: Option<&str>,
    sub_pool: Option<&str>,
    v6: bool,
    taken: &[(Ipv4Network, String)],
) -> Result<(Ipv4Network, Option<Ipv4Network>)> {
    if v6 || pool.is_some_and(|p| p.contains(':')) {
        return Err(Error::Unsupported(
            "dataplane's IPAM driver gives IPv4 pools only: for an IPv6 subnet, leave the IPAM driver at Docker's default"
                .into(),
        ));
    }
    if pool.is_none() && sub_pool.is_some() {
        return Err(Error::invalid("SubPool", sub_pool.unwrap_or_default(), "a sub-pool needs a pool"));
    }
    let req = IpamRequest {
        subnet: pool.map(str::to_string),
        ip_range: sub_pool.map(str::to_string),
        ..Default::default()
    };
    let planned = plan(&req, taken)?;
    Ok((planned.subnet, planned.ip_range))
}

/// RequestAddress: `want` if it is a free host address of the pool; else
/// the gateway's usual address (the first) for a gateway request, or the
/// lowest free address of the sub-pool (or the pool).
pub fn pool_address(pool: &Pool, want: Option<Ipv4Addr>, gateway: bool) -> Result<Ipv4Addr> {
    let taken = |ip: &Ipv4Addr| {
        pool.addresses.contains(ip) || *ip == pool.subnet.network() || *ip == pool.subnet.broadcast()
    };
    if let Some(ip) = want {
        check_host_address("address", pool.subnet, ip)?;
        if pool.addresses.contains(&ip) {
            return Err(Error::AddressInUse { ip: ip.into(), network: format!("pool {}", pool.id) });
        }
        return Ok(ip);
    }
    if gateway && !taken(&first_host(pool.subnet)) {
        return Ok(first_host(pool.subnet));
    }
    let range = pool.ip_range.unwrap_or(pool.subnet);
    (u32::from(range.network())..=u32::from(range.broadcast()))
        .map(Ipv4Addr::from)
        .find(|ip| !taken(ip))
        .ok_or_else(|| Error::PoolExhausted { network: format!("pool {}", pool.id) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(subnet: &str) -> IpamRequest {
        IpamRequest { subnet: Some(subnet.into()), ..Default::default() }
    }

    #[test]
    fn special_blocks_are_refused_with_their_name() {
        for (s, what) in [
            ("127.0.0.0/24", "loopback"),
            ("126.0.0.0/7", "loopback"),
            ("224.0.0.0/24", "multicast"),
            ("255.255.255.0/24", "reserved"),
            ("169.254.1.0/24", "link-local"),
            ("0.0.0.0/8", "this network"),
        ] {
            let e = plan(&req(s), &[]).expect_err(s).to_string();
            assert!(e.contains(what), "{s}: {e}");
        }
        assert!(plan(&req("128.0.0.0/24"), &[]).is_ok());
    }

    #[test]
    fn automatic_subnets_skip_taken_ones() {
        let taken = vec![("172.18.0.0/16".parse().expect("net"), "a".to_string())];
        let ipam = plan(&IpamRequest::default(), &taken).expect("plan");
        assert_eq!(ipam.subnet.to_string(), "172.19.0.0/16");
        assert_eq!(ipam.gateway, Ipv4Addr::new(172, 19, 0, 1));
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let taken = vec![("10.1.0.0/16".parse().expect("net"), "other".to_string())];
        let e = plan(&req("10.1.2.0/24"), &taken).expect_err("overlap");
        assert!(e.to_string().contains("overlaps network other"), "{e}");
        let mut r = req("10.2.0.0/24");
        r.gateway = Some("10.3.0.1".into());
        assert!(plan(&r, &[]).expect_err("gw").to_string().contains("not inside subnet"));
        let mut r = req("10.2.0.0/24");
        r.ip_range = Some("10.2.1.0/25".into());
        assert!(plan(&r, &[]).expect_err("range").to_string().contains("not inside subnet"));
        assert!(plan(&req("10.2.0.1/24"), &[]).expect_err("host bits").to_string().contains("host bits"));
        assert!(plan(&req("banana"), &[]).is_err());
    }

    #[test]
    fn allocation_is_in_order_and_skips_reserved() {
        let mut r = req("10.9.0.0/29");
        r.aux.insert("router".into(), "10.9.0.2".into());
        let ipam = plan(&r, &[]).expect("plan");
        let mut used = HashSet::new();
        let a = allocate(&ipam, &used, "n").expect("first");
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 3));
        used.insert(a);
        assert_eq!(allocate(&ipam, &used, "n").expect("second"), Ipv4Addr::new(10, 9, 0, 4));
        for i in 4..=6 {
            used.insert(Ipv4Addr::new(10, 9, 0, i));
        }
        assert!(matches!(allocate(&ipam, &used, "n"), Err(Error::PoolExhausted { .. })));
        assert!(check_requested(&ipam, Ipv4Addr::new(10, 9, 0, 1), &used, "n").is_err());
        assert!(check_requested(&ipam, Ipv4Addr::new(10, 8, 0, 9), &used, "n").is_err());
    }

    #[test]
    fn pools_are_chosen_around_whats_taken_and_hand_out_each_address_once() {
        let taken = [("172.18.0.0/16".parse().expect("net"), "web".to_string())];
        let (subnet, range) = plan_pool(None, None, false, &taken).expect("a default pool");
        assert_eq!((subnet.to_string().as_str(), range), ("172.19.0.0/16", None));
        let e = plan_pool(Some("172.18.5.0/24"), None, false, &taken).expect_err("overlap").to_string();
        assert!(e.contains("web"), "{e}");
        assert!(plan_pool(None, Some("10.0.0.0/25"), false, &[]).is_err());
        assert!(plan_pool(None, None, true, &[]).expect_err("v6").to_string().contains("IPv6"));
        let mut p = Pool::new("10.77.0.0/29".parse().expect("net"), None);
        assert_eq!(p.id, "10.77.0.0/29");
        let gw = pool_address(&p, None, true).expect("gateway");
        assert_eq!(gw.to_string(), "10.77.0.1");
        p.addresses.insert(gw);
        let a = pool_address(&p, None, false).expect("address");
        assert_eq!(a.to_string(), "10.77.0.2");
        p.addresses.insert(a);
        assert!(matches!(pool_address(&p, Some(a), false), Err(Error::AddressInUse { .. })));
        assert!(pool_address(&p, Some("10.77.0.7".parse().expect("ip")), false).is_err(), "broadcast");
        for i in 3..=6 {
            p.addresses.insert(format!("10.77.0.{i}").parse().expect("ip"));
        }
        assert!(matches!(pool_address(&p, None, false), Err(Error::PoolExhausted { .. })));
    }
}
