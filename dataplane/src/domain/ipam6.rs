//! IPv6 address management of dual-stack networks (issue 15, first
//! step: the rules, not yet wired to `network create`). A network with
//! `--ipv6` keeps its IPv4 config ([`super::ipam`]) and gets an IPv6 one:
//! the subnet given, or the first free /64 of the host's ULA /48 (RFC 4193:
//! `fd` + a 40-bit random global ID, drawn once per host and kept), its
//! gateway (the subnet's `::1` unless given) and an optional range;
//! addresses are handed out in order, as for IPv4.

use std::collections::HashSet;
use std::net::Ipv6Addr;

use ipnetwork::Ipv6Network;
use serde::{Deserialize, Serialize};

use super::ipam::{parse_net, parse_range};
use crate::error::{Error, Result};

/// The IPv6 part of a create request, as the user gave it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ipam6Request {
    pub subnet: Option<String>,
    pub ip_range: Option<String>,
    pub gateway: Option<String>,
}

/// A network's IPv6 config.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipam6 {
    pub subnet: Ipv6Network,
    pub ip_range: Option<Ipv6Network>,
    pub gateway: Ipv6Addr,
}

/// The host's ULA prefix: `fd` and the 40-bit global ID, a /48.
pub fn ula_48(global_id: [u8; 5]) -> Ipv6Network {
    let [a, b, c, d, e] = global_id;
    let addr = Ipv6Addr::new(
        0xfd00 | u16::from(a),
        u16::from_be_bytes([b, c]),
        u16::from_be_bytes([d, e]),
        0,
        0,
        0,
        0,
        0,
    );
    // A /48 of any address with zero host bits is valid.
    Ipv6Network::new(addr, 48).unwrap_or_else(|_| unreachable!("a /48 is a valid prefix"))
}

/// `--subnet`, `--gateway` or `--ip-range` values split by family: at most
/// one of each (Docker's rule), IPv4 first.
pub fn split_by_family(what: &'static str, values: &[String]) -> Result<(Option<String>, Option<String>)> {
    let (v6, v4): (Vec<&String>, Vec<&String>) = values.iter().partition(|v| v.contains(':'));
    let one = |list: Vec<&String>, family: &str| match list.as_slice() {
        [] => Ok(None),
        [v] => Ok(Some((*v).clone())),
        many => Err(Error::invalid(
            what,
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            format!("may be given once per address family (two {family} values)"),
        )),
    };
    Ok((one(v4, "IPv4")?, one(v6, "IPv6")?))
}

/// Blocks no network may use: their packets never reach a sandbox through
/// a bridge (or mean something else entirely).
fn special(net: Ipv6Network) -> Option<&'static str> {
    let blocks: [(&str, Ipv6Network); 4] = [
        ("loopback and unspecified ::/127", block(Ipv6Addr::UNSPECIFIED, 127)),
        ("IPv4-mapped ::ffff:0:0/96", block(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96)),
        ("link-local fe80::/10", block(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)),
        ("multicast ff00::/8", block(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8)),
    ];
    blocks.into_iter().find(|(_, b)| b.overlaps(net)).map(|(what, _)| what)
}

fn block(addr: Ipv6Addr, prefix: u8) -> Ipv6Network {
    Ipv6Network::new(addr, prefix).unwrap_or_else(|_| unreachable!("the special blocks are valid"))
}

/// Validates (or completes, when no subnet is given) a network's IPv6
/// config. `taken` are the IPv6 subnets of other networks (with their
/// names); `ula` is the host's /48 automatic subnets come from.
pub fn plan6(req: &Ipam6Request, taken: &[(Ipv6Network, String)], ula: Ipv6Network) -> Result<Ipam6> {
    let subnet = match &req.subnet {
        Some(s) => {
            let net: Ipv6Network = parse_net("subnet", s)?;
            if net.prefix() > 126 {
                return Err(Error::invalid(
                    "subnet",
                    s,
                    "prefix must be /126 or shorter to hold a gateway and an endpoint",
                ));
            }
            if let Some(what) = special(net) {
                return Err(Error::invalid("subnet", s, format!("overlaps the {what} block")));
            }
            if let Some((_, other)) = taken.iter().find(|(t, _)| t.overlaps(net)) {
                return Err(Error::SubnetOverlap { subnet: s.clone(), other: other.clone() });
            }
            net
        }
        None => {
            if req.ip_range.is_some() || req.gateway.is_some() {
                return Err(Error::invalid(
                    "IPAM config",
                    "",
                    "an IPv6 --ip-range or --gateway needs an IPv6 --subnet",
                ));
            }
            let base = u128::from(ula.network());
            (0u128..1 << 16)
                .filter_map(|i| Ipv6Network::new(Ipv6Addr::from(base | (i << 64)), 64).ok())
                .find(|p| !taken.iter().any(|(t, _)| t.overlaps(*p)))
                .ok_or_else(|| Error::NoFreeSubnet6 { pool: ula.to_string() })?
        }
    };
    let ip_range = req.ip_range.as_deref().map(|r| parse_range(r, subnet)).transpose()?;
    let gateway = match &req.gateway {
        Some(g) => {
            let ip: Ipv6Addr = g.parse().map_err(|_| Error::invalid("gateway", g, "not an IPv6 address"))?;
            if !subnet.contains(ip) {
                return Err(Error::invalid("gateway", g, format!("not inside subnet {subnet}")));
            }
            if ip == subnet.network() {
                return Err(Error::invalid(
                    "gateway",
                    g,
                    format!("is the subnet-router anycast address of {subnet}"),
                ));
            }
            ip
        }
        None => Ipv6Addr::from(u128::from(subnet.network()) + 1),
    };
    Ok(Ipam6 { subnet, ip_range, gateway })
}

/// Checks a user-requested address (`--ip6`).
pub fn check_requested6(ipam: &Ipam6, ip: Ipv6Addr, used: &HashSet<Ipv6Addr>, network: &str) -> Result<()> {
    if !ipam.subnet.contains(ip) {
        return Err(Error::invalid(
            "ip6",
            ip,
            format!("not inside subnet {} of network {network}", ipam.subnet),
        ));
    }
    if ip == ipam.gateway {
        return Err(Error::invalid("ip6", ip, format!("is the gateway of network {network}")));
    }
    if ip == ipam.subnet.network() {
        return Err(Error::invalid(
            "ip6",
            ip,
            format!("is the subnet-router anycast address of {}", ipam.subnet),
        ));
    }
    if used.contains(&ip) {
        return Err(Error::AddressInUse { ip: ip.into(), network: network.to_string() });
    }
    Ok(())
}

/// The lowest free address of the range (or the subnet): never the
/// subnet-router anycast address (`::0`) nor the gateway. At most 65,536
/// addresses are looked at, which a /64 of sandboxes never exhausts.
pub fn allocate6(ipam: &Ipam6, used: &HashSet<Ipv6Addr>, network: &str) -> Result<Ipv6Addr> {
    let pool = ipam.ip_range.unwrap_or(ipam.subnet);
    let start = u128::from(pool.network());
    let size = u128::from(pool.broadcast()) - start + 1;
    (0..size.min(1 << 16))
        .map(|i| Ipv6Addr::from(start + i))
        .find(|ip| *ip != ipam.subnet.network() && *ip != ipam.gateway && !used.contains(ip))
        .ok_or_else(|| Error::PoolExhausted { network: network.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(subnet: Option<&str>, range: Option<&str>, gw: Option<&str>) -> Ipam6Request {
        Ipam6Request {
            subnet: subnet.map(String::from),
            ip_range: range.map(String::from),
            gateway: gw.map(String::from),
        }
    }

    fn ula() -> Ipv6Network {
        ula_48([0x12, 0x34, 0x56, 0x78, 0x9a])
    }

    #[test]
    fn the_hosts_ula_prefix_is_fd_and_its_global_id() {
        assert_eq!(ula().to_string(), "fd12:3456:789a::/48");
    }

    #[test]
    fn values_split_by_family_once_each() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            split_by_family("subnet", &v(&["fd00:30::/64", "172.30.0.0/24"])).expect("split"),
            (Some("172.30.0.0/24".into()), Some("fd00:30::/64".into()))
        );
        assert_eq!(split_by_family("subnet", &v(&[])).expect("none"), (None, None));
        let e = split_by_family("subnet", &v(&["fd00::/64", "fd01::/64"])).expect_err("two v6");
        assert!(e.to_string().contains("once per address family"), "{e}");
    }

    #[test]
    fn a_subnet_is_chosen_from_the_hosts_ula_or_checked_when_given() {
        let p = plan6(&req(None, None, None), &[], ula()).expect("auto");
        assert_eq!(
            (p.subnet.to_string(), p.gateway.to_string()),
            ("fd12:3456:789a::/64".into(), "fd12:3456:789a::1".into())
        );
        let taken = [(p.subnet, "first".to_string())];
        let q = plan6(&req(None, None, None), &taken, ula()).expect("the next /64");
        assert_eq!(q.subnet.to_string(), "fd12:3456:789a:1::/64");
        let g = plan6(
            &req(Some("2001:db8:1::/64"), Some("2001:db8:1::100/120"), Some("2001:db8:1::fe")),
            &[],
            ula(),
        )
        .expect("given");
        assert_eq!(
            (g.ip_range.map(|r| r.to_string()), g.gateway.to_string()),
            (Some("2001:db8:1::100/120".into()), "2001:db8:1::fe".into())
        );
    }

    #[test]
    fn bad_ipv6_configs_are_refused_naming_the_problem() {
        let taken = [("fd00:30::/64".parse().expect("net"), "web".to_string())];
        for (r, says) in [
            (req(Some("fd00:30::/48"), None, None), "web"),
            (req(Some("fd00:31::1/64"), None, None), "host bits"),
            (req(Some("fe80::/64"), None, None), "link-local"),
            (req(Some("ff02::/64"), None, None), "multicast"),
            (req(Some("fd00:32::/127"), None, None), "/126"),
            (req(Some("fd00:33::/64"), None, Some("fd00:34::1")), "not inside"),
            (req(Some("fd00:33::/64"), None, Some("fd00:33::")), "anycast"),
            (req(Some("fd00:33::/64"), Some("fd00:35::/80"), None), "not inside"),
            (req(Some("172.30.0.0/24"), None, None), "not an IPv6 CIDR"),
            (req(None, None, Some("fd00::1")), "needs an IPv6 --subnet"),
        ] {
            let e = plan6(&r, &taken, ula()).expect_err("refused");
            assert!(e.to_string().contains(says), "{r:?}: {e}");
        }
    }

    #[test]
    fn addresses_are_handed_out_in_order_and_checked_when_asked_for() {
        let p = plan6(&req(Some("fd00:40::/64"), None, None), &[], ula()).expect("plan");
        let mut used = HashSet::new();
        let a = allocate6(&p, &used, "n").expect("first");
        assert_eq!(a.to_string(), "fd00:40::2", "after the anycast address and the gateway");
        used.insert(a);
        assert_eq!(allocate6(&p, &used, "n").expect("second").to_string(), "fd00:40::3");
        assert!(check_requested6(&p, "fd00:40::9".parse().expect("ip"), &used, "n").is_ok());
        assert!(check_requested6(&p, a, &used, "n").is_err());
        assert!(check_requested6(&p, p.gateway, &used, "n").is_err());
        assert!(check_requested6(&p, "fd00:41::9".parse().expect("ip"), &used, "n").is_err());
        let tiny = plan6(&req(Some("fd00:42::/126"), None, None), &[], ula()).expect("plan");
        let full: HashSet<_> = ["fd00:42::2", "fd00:42::3"].iter().map(|s| s.parse().expect("ip")).collect();
        assert!(matches!(allocate6(&tiny, &full, "n"), Err(Error::PoolExhausted { .. })));
    }
}
