//! The bridge driver: a Linux bridge per network with the gateway address on
//! it, and a veth pair per endpoint (host side `veth<7 hex>` on the bridge,
//! sandbox side renamed `ethN`).

use std::path::Path;

use crate::domain::model::{Endpoint, Network};
use crate::domain::names;
use crate::error::{Error, Result};
use crate::sys::netlink::{LinkInfo, Netlink};

fn device(net: &Network) -> Result<&str> {
    net.device
        .as_deref()
        .ok_or_else(|| Error::Unsupported(format!("bridge network {} has no device", net.name)))
}

/// Creates (or completes) the bridge: device, fixed MAC, gateway address, up.
///
/// The MAC is set explicitly (`02:42:` + the gateway address, as endpoint
/// MACs are made): a bridge left to itself takes the lowest MAC of its
/// ports, so it changes as sandboxes come and go, and sandboxes holding the
/// old one in their neighbour table (for the gateway or a VIP) would send
/// frames the host no longer accepts.
/// A bridge this call made is deleted again when a later step fails, so a
/// refused address (the kernel's EINVAL) leaves no device behind.
pub async fn create_network(host: &Netlink, net: &Network) -> Result<()> {
    let name = device(net)?;
    let (link, made) = match host.link(name).await? {
        Some(l) => (l, false),
        None => {
            let index = host.create_bridge(name).await?;
            (LinkInfo { index, ..Default::default() }, true)
        }
    };
    let idx = link.index;
    // Only what differs is changed (a restart finds the bridge right).
    let res = async {
        if let Some(mtu) = net.mtu()
            && link.mtu != mtu
        {
            host.set_mtu(idx, mtu).await?;
        }
        if let Some(ipam) = &net.ipam {
            let mac = names::mac_for_ip(ipam.gateway);
            if link.mac != mac {
                host.set_mac(idx, mac).await?;
            }
            if made || !host.ipv4_addresses(idx).await?.contains(&ipam.gateway) {
                host.add_address(idx, ipam.gateway, ipam.subnet.prefix()).await?;
            }
        }
        if let Some(ipam6) = &net.ipam6
            && (made || !host.ipv6_addresses(idx).await?.contains(&ipam6.gateway))
        {
            host.add_address6(idx, ipam6.gateway, ipam6.subnet.prefix()).await?;
        }
        if !link.up {
            host.set_up(idx).await?;
        }
        Ok(())
    }
    .await;
    if res.is_err()
        && made
        && let Err(e) = host.delete(idx).await
    {
        tracing::warn!(bridge = name, error = %e, "removing the half-made bridge");
    }
    res
}

pub async fn delete_network(host: &Netlink, net: &Network) -> Result<()> {
    host.delete_by_name(device(net)?).await
}

pub async fn attach(
    host: &Netlink,
    net: &Network,
    ep: &Endpoint,
    netns: &Path,
    default_route: bool,
) -> Result<u32> {
    let bridge = host.require_index(device(net)?).await?;
    let host_name = ep
        .host_ifname
        .clone()
        .ok_or_else(|| Error::Unsupported("bridge endpoint without host interface name".into()))?;
    let peer = names::peer_veth_name(&host_name);
    let (hidx, pidx) = host.create_veth(&host_name, &peer).await?;
    let res = async {
        if let Some(mtu) = net.mtu() {
            host.set_mtu(hidx, mtu).await?;
        }
        host.set_master(hidx, bridge).await?;
        host.set_up(hidx).await?;
        host.move_to(pidx, netns).await?;
        super::configure_in_sandbox(netns, &peer, net, ep, default_route).await
    }
    .await;
    if let Err(e) = res {
        // Deleting one end removes both, wherever the peer is.
        let _ = host.delete(hidx).await;
        return Err(e);
    }
    Ok(hidx)
}

/// A runtime's endpoint: the pair with its host side on the bridge and up;
/// the container side stays in this namespace under `ep.ifname` for the
/// runtime to move, address and rename. Returns the host side's index.
pub async fn attach_unmoved(host: &Netlink, net: &Network, ep: &Endpoint) -> Result<u32> {
    let bridge = host.require_index(device(net)?).await?;
    let host_name = ep
        .host_ifname
        .clone()
        .ok_or_else(|| Error::Unsupported("bridge endpoint without host interface name".into()))?;
    let (hidx, pidx) = host.create_veth(&host_name, &ep.ifname).await?;
    let res = async {
        if let Some(mtu) = net.mtu() {
            host.set_mtu(hidx, mtu).await?;
            host.set_mtu(pidx, mtu).await?;
        }
        host.set_mac(pidx, ep.mac).await?;
        host.set_master(hidx, bridge).await?;
        host.set_up(hidx).await
    }
    .await;
    if let Err(e) = res {
        let _ = host.delete(hidx).await;
        return Err(e);
    }
    Ok(hidx)
}

pub async fn detach(host: &Netlink, ep: &Endpoint) -> Result<()> {
    match &ep.host_ifname {
        Some(n) => host.delete_by_name(n).await,
        None => Ok(()),
    }
}
