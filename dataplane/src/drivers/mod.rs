//! Network drivers: one file per driver. A driver turns a stored network or
//! endpoint into kernel state (links, addresses, routes) and back.
//!
//! Drivers with endpoints (`bridge`, `macvlan`) implement [`attach`] /
//! [`detach`]; `host` and `null` have no kernel state of their own.

pub mod bridge;
pub mod macvlan;

use std::path::Path;

use crate::domain::model::{Driver, Endpoint, Network};
use crate::error::{Error, Result};
use crate::sys::netlink::Netlink;

/// Creates the network's own devices (bridge; for macvlan nothing: the parent
/// must exist).
pub async fn create_network(host: &Netlink, net: &Network) -> Result<()> {
    match net.driver {
        Driver::Bridge | Driver::Overlay => bridge::create_network(host, net).await,
        Driver::Macvlan => macvlan::check_parent(host, net).await,
        _ => Ok(()),
    }
}

pub async fn delete_network(host: &Netlink, net: &Network) -> Result<()> {
    match net.driver {
        Driver::Bridge | Driver::Overlay => bridge::delete_network(host, net).await,
        _ => Ok(()),
    }
}

/// Plugs an endpoint into the sandbox namespace at `netns`. Returns the
/// ifindex of the host-side interface (bridge) or 0.
pub async fn attach(
    host: &Netlink,
    net: &Network,
    ep: &Endpoint,
    netns: &Path,
    default_route: bool,
) -> Result<u32> {
    match net.driver {
        Driver::Bridge | Driver::Overlay => bridge::attach(host, net, ep, netns, default_route).await,
        Driver::Macvlan => macvlan::attach(host, net, ep, netns, default_route).await,
        other => Err(Error::Unsupported(format!("driver {other} has no endpoints"))),
    }
}

/// Removes an endpoint's interfaces. Cleans up as much as it can.
pub async fn detach(host: &Netlink, net: &Network, ep: &Endpoint, netns: &Path) -> Result<()> {
    match net.driver {
        Driver::Bridge | Driver::Overlay => bridge::detach(host, ep).await,
        Driver::Macvlan => macvlan::detach(ep, netns).await,
        _ => Ok(()),
    }
}

/// Configures the sandbox side once the interface is inside `netns` under
/// its temporary name: rename, MAC, address, up, default route.
pub(crate) async fn configure_in_sandbox(
    netns: &Path,
    tmp_name: &str,
    net: &Network,
    ep: &Endpoint,
    default_route: bool,
) -> Result<()> {
    let ipam =
        net.ipam.as_ref().ok_or_else(|| Error::Unsupported(format!("network {} has no IPAM", net.name)))?;
    let nl = Netlink::in_netns(netns)?;
    let idx = nl.require_index(tmp_name).await?;
    if nl.link_index(&ep.ifname).await?.is_some() {
        return Err(Error::Conflict(format!(
            "the network namespace {} already has an interface named {}",
            netns.display(),
            ep.ifname
        )));
    }
    nl.rename(idx, &ep.ifname).await?;
    if let Some(mtu) = net.mtu() {
        nl.set_mtu(idx, mtu).await?;
    }
    nl.set_mac(idx, ep.mac).await?;
    // The address is a /32 with an on-link route to the subnet: the same
    // reachability, but glibc's getaddrinfo (RFC 6724 rule 9, longest
    // matching prefix) then no longer reorders round-robin DNS answers for
    // addresses on the sandbox's own subnet, so `ping NAME` follows the
    // resolver's rotation (as with musl-based images on Docker).
    nl.add_address(idx, ep.ip, 32).await?;
    nl.set_up(idx).await?;
    nl.add_subnet_route(ipam.subnet, idx, ep.ip).await?;
    if default_route && !net.internal {
        nl.add_default_route(ipam.gateway, idx).await?;
    }
    // A dual-stack network: the IPv6 address with its prefix (the kernel
    // adds the on-link route) and the IPv6 default route via the gateway
    // when the sandbox has none yet (its first network may be IPv4-only).
    if let (Some(ip6), Some(ipam6)) = (ep.ip6, &net.ipam6) {
        nl.add_address6(idx, ip6, ipam6.subnet.prefix()).await?;
        if !net.internal && nl.default_route6_interface().await?.is_none() {
            nl.add_default_route6(ipam6.gateway, idx).await?;
        }
    }
    Ok(())
}
