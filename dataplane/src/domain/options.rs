//! Typed values of what requests name by string: the network driver, its
//! `-o` options, and the protocol of a port. Parsed once, where a request
//! enters (the API); below it nothing compares option strings.
//!
//! Unknown `-o` keys are refused, naming the key and the keys the driver
//! knows (Docker accepts and ignores them: a typo such as
//! `enable_icc=false` without its prefix would silently leave ICC on).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Option keys (Docker's names).
pub mod key {
    pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
    pub const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
    pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
    pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
    pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
    pub const MTU: &str = "com.docker.network.driver.mtu";
    pub const GATEWAY_MODE_IPV4: &str = "com.docker.network.bridge.gateway_mode_ipv4";
    pub const GATEWAY_MODE_IPV6: &str = "com.docker.network.bridge.gateway_mode_ipv6";
    pub const PARENT: &str = "parent";
    pub const MACVLAN_MODE: &str = "macvlan_mode";
    /// `lb=vip`: every network alias gets a virtual IP balanced in BPF.
    pub const LB: &str = "lb";
}

/// A network driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Macvlan,
    Host,
    Null,
    /// Named so that its refusal can say why (this kernel lacks it).
    Ipvlan,
    /// Spans the hosts of a cluster (`--cluster-store`): VXLAN in BPF.
    Overlay,
}

impl Driver {
    /// `-d NAME`; empty is the default, bridge.
    pub fn parse(name: &str) -> Result<Driver> {
        Ok(match name {
            "" | "bridge" => Driver::Bridge,
            "macvlan" => Driver::Macvlan,
            "host" => Driver::Host,
            "null" => Driver::Null,
            "ipvlan" => Driver::Ipvlan,
            "overlay" => Driver::Overlay,
            other => return Err(Error::UnknownDriver(other.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
            Driver::Host => "host",
            Driver::Null => "null",
            Driver::Ipvlan => "ipvlan",
            Driver::Overlay => "overlay",
        }
    }

    /// The `-o` keys the driver knows.
    pub fn keys(self) -> &'static [&'static str] {
        match self {
            Driver::Bridge => &[
                key::BRIDGE_NAME,
                key::DEFAULT_BRIDGE,
                key::ENABLE_ICC,
                key::ENABLE_IP_MASQUERADE,
                key::HOST_BINDING_IPV4,
                key::MTU,
                key::GATEWAY_MODE_IPV4,
                key::GATEWAY_MODE_IPV6,
                key::LB,
            ],
            Driver::Macvlan | Driver::Ipvlan => &[key::PARENT, key::MACVLAN_MODE, key::MTU],
            Driver::Overlay => &[key::ENABLE_ICC, key::MTU, key::LB],
            Driver::Host | Driver::Null => &[],
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A transport protocol of a published or exposed port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn parse(what: &'static str, value: &str, name: &str) -> Result<Proto> {
        match name {
            "tcp" => Ok(Proto::Tcp),
            "udp" => Ok(Proto::Udp),
            "sctp" => Ok(Proto::Sctp),
            other => {
                Err(Error::invalid(what, value, format!("unknown protocol {other:?} (tcp, udp or sctp)")))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Docker's IPv4 gateway modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GatewayMode {
    /// Masquerade, and no direct access from outside (the default).
    #[default]
    Nat,
    /// Masquerade, and direct access from outside too.
    NatUnprotected,
    /// No NAT; direct access from outside.
    Routed,
}

/// A bridge network's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeOptions {
    /// The bridge device (default: `br-` + the network id).
    pub name: Option<String>,
    pub default_bridge: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub host_binding_ipv4: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub gateway_mode: GatewayMode,
    /// The same for IPv6 (`gateway_mode_ipv6`), on dual-stack networks.
    pub gateway_mode6: GatewayMode,
    /// `lb=vip`: aliases get virtual IPs balanced in BPF.
    pub balance_aliases: bool,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            name: None,
            default_bridge: false,
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
            mtu: None,
            gateway_mode: GatewayMode::Nat,
            gateway_mode6: GatewayMode::Nat,
            balance_aliases: false,
        }
    }
}

/// macvlan modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MacvlanMode {
    #[default]
    Bridge,
    Vepa,
    Private,
    Passthru,
}

/// A macvlan network's options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MacvlanOptions {
    /// The parent interface (none: an `--internal` network without one).
    pub parent: Option<String>,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
}

/// A network's options, typed for its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriverOptions {
    Bridge(BridgeOptions),
    Macvlan(MacvlanOptions),
    /// host, null (no options).
    None,
}

fn invalid(k: &str, v: &str, why: &str) -> Error {
    Error::invalid("option", format!("{k}={v}"), why)
}

fn boolean(k: &str, v: &str) -> Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(k, v, "must be true or false")),
    }
}

fn mtu(k: &str, v: &str) -> Result<u32> {
    v.parse::<u32>()
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| invalid(k, v, "the MTU must be 68 to 65535"))
}

impl DriverOptions {
    /// Parses `-o` options for `driver`, refusing keys it does not know.
    pub fn parse(driver: Driver, given: &BTreeMap<String, String>) -> Result<DriverOptions> {
        let known = driver.keys();
        if let Some(k) = given.keys().find(|k| !known.contains(&k.as_str())) {
            let owner =
                [Driver::Bridge, Driver::Macvlan].into_iter().find(|d| d.keys().contains(&k.as_str()));
            let reason = match owner {
                _ if known.is_empty() => format!("the {driver} driver takes no options"),
                Some(owner) => format!("an option of {owner} networks; the {driver} driver does not take it"),
                None => format!("unknown option for the {driver} driver; known: {}", known.join(", ")),
            };
            return Err(Error::invalid("option", k, reason));
        }
        let get = |k: &str| given.get(k).map(String::as_str);
        Ok(match driver {
            // An overlay network is a bridge on each host (the gateway, the
            // local sandboxes) joined to the others by VXLAN in BPF.
            Driver::Bridge | Driver::Overlay => {
                let mut o = BridgeOptions {
                    name: get(key::BRIDGE_NAME).map(String::from),
                    ..BridgeOptions::default()
                };
                if let Some(v) = get(key::DEFAULT_BRIDGE) {
                    o.default_bridge = boolean(key::DEFAULT_BRIDGE, v)?;
                }
                if let Some(v) = get(key::ENABLE_ICC) {
                    o.icc = boolean(key::ENABLE_ICC, v)?;
                }
                if let Some(v) = get(key::ENABLE_IP_MASQUERADE) {
                    o.masquerade = boolean(key::ENABLE_IP_MASQUERADE, v)?;
                }
                if let Some(v) = get(key::HOST_BINDING_IPV4) {
                    o.host_binding_ipv4 = Some(
                        v.parse().map_err(|_| invalid(key::HOST_BINDING_IPV4, v, "not an IPv4 address"))?,
                    );
                }
                if let Some(v) = get(key::MTU) {
                    o.mtu = Some(mtu(key::MTU, v)?);
                }
                let mode = |k: &'static str, v: &str| match v {
                    "nat" => Ok(GatewayMode::Nat),
                    "nat-unprotected" => Ok(GatewayMode::NatUnprotected),
                    "routed" => Ok(GatewayMode::Routed),
                    _ => Err(invalid(k, v, "must be nat, nat-unprotected or routed")),
                };
                if let Some(v) = get(key::GATEWAY_MODE_IPV4) {
                    o.gateway_mode = mode(key::GATEWAY_MODE_IPV4, v)?;
                }
                if let Some(v) = get(key::GATEWAY_MODE_IPV6) {
                    o.gateway_mode6 = mode(key::GATEWAY_MODE_IPV6, v)?;
                }
                if let Some(v) = get(key::LB) {
                    if v != "vip" {
                        return Err(invalid(key::LB, v, "the only balancing mode is vip"));
                    }
                    o.balance_aliases = true;
                }
                DriverOptions::Bridge(o)
            }
            Driver::Macvlan | Driver::Ipvlan => {
                let mode = match get(key::MACVLAN_MODE).unwrap_or("bridge") {
                    "bridge" => MacvlanMode::Bridge,
                    "vepa" => MacvlanMode::Vepa,
                    "private" => MacvlanMode::Private,
                    "passthru" => MacvlanMode::Passthru,
                    other => {
                        return Err(Error::invalid(
                            key::MACVLAN_MODE,
                            other,
                            "must be bridge, vepa, private or passthru",
                        ));
                    }
                };
                let mtu = get(key::MTU).map(|v| mtu(key::MTU, v)).transpose()?;
                DriverOptions::Macvlan(MacvlanOptions {
                    parent: get(key::PARENT).map(String::from),
                    mode,
                    mtu,
                })
            }
            Driver::Host | Driver::Null => DriverOptions::None,
        })
    }

    pub fn bridge(&self) -> Option<&BridgeOptions> {
        match self {
            DriverOptions::Bridge(b) => Some(b),
            _ => None,
        }
    }

    pub fn macvlan(&self) -> Option<&MacvlanOptions> {
        match self {
            DriverOptions::Macvlan(m) => Some(m),
            _ => None,
        }
    }

    pub fn mtu(&self) -> Option<u32> {
        match self {
            DriverOptions::Bridge(b) => b.mtu,
            DriverOptions::Macvlan(m) => m.mtu,
            DriverOptions::None => None,
        }
    }
}

/// Whether options recorded for a network (checked when it was created)
/// balance its aliases: read without parsing the rest, since the resolver
/// asks it on every query.
pub fn balances_aliases(options: &BTreeMap<String, String>) -> bool {
    options.get(key::LB).is_some_and(|v| v == "vip")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn bridge_options_parse_into_values_and_defaults() {
        let o = DriverOptions::parse(
            Driver::Bridge,
            &opts(&[
                (key::ENABLE_ICC, "false"),
                (key::MTU, "1400"),
                (key::GATEWAY_MODE_IPV4, "routed"),
                (key::LB, "vip"),
            ]),
        )
        .expect("valid");
        let b = o.bridge().expect("bridge");
        assert!(!b.icc && b.masquerade && b.balance_aliases);
        assert_eq!((b.mtu, b.gateway_mode), (Some(1400), GatewayMode::Routed));
        assert_eq!(
            DriverOptions::parse(Driver::Bridge, &BTreeMap::new()).expect("none"),
            DriverOptions::Bridge(BridgeOptions::default())
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let e = DriverOptions::parse(Driver::Bridge, &opts(&[("enable_icc", "false")])).expect_err("unknown");
        assert!(e.to_string().contains("enable_icc") && e.to_string().contains(key::ENABLE_ICC), "{e}");
        let e = DriverOptions::parse(Driver::Macvlan, &opts(&[(key::LB, "vip")])).expect_err("not macvlan's");
        assert!(e.to_string().contains("lb") && e.to_string().contains("macvlan"), "{e}");
        let e =
            DriverOptions::parse(Driver::Null, &opts(&[(key::MTU, "1500")])).expect_err("null takes none");
        assert!(e.to_string().contains("takes no options"), "{e}");
        for (k, v) in
            [(key::ENABLE_ICC, "no"), (key::MTU, "60"), (key::GATEWAY_MODE_IPV4, "open"), (key::LB, "rr")]
        {
            let e = DriverOptions::parse(Driver::Bridge, &opts(&[(k, v)])).expect_err("bad value");
            assert!(e.to_string().contains(&format!("{k}={v}")), "{e}");
        }
        let e =
            DriverOptions::parse(Driver::Macvlan, &opts(&[(key::MACVLAN_MODE, "source")])).expect_err("mode");
        assert!(e.to_string().contains("source"), "{e}");
    }

    #[test]
    fn drivers_and_protocols_round_trip_their_names() {
        for d in [Driver::Bridge, Driver::Macvlan, Driver::Host, Driver::Null, Driver::Ipvlan] {
            assert_eq!(Driver::parse(d.name()).expect("known"), d);
            assert_eq!(serde_json::to_string(&d).expect("json"), format!("\"{}\"", d.name()));
        }
        assert_eq!(Driver::parse("").expect("default"), Driver::Bridge);
        assert!(matches!(Driver::parse("overlay2"), Err(Error::UnknownDriver(_))));
        for p in [Proto::Tcp, Proto::Udp, Proto::Sctp] {
            assert_eq!(Proto::parse("port", "x", p.name()).expect("known"), p);
        }
        assert!(Proto::parse("port", "80/icmp", "icmp").is_err());
    }
}
