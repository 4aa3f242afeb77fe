//! The macvlan driver: each endpoint is a macvlan sub-interface of the
//! network's parent, moved into the sandbox with its own MAC.

use std::path::Path;

use rtnetlink::packet_route::link::MacVlanMode;

use crate::domain::model::{DriverOptions, Endpoint, Network};
use crate::domain::names;
use crate::domain::options::MacvlanMode;
use crate::error::{Error, Result};
use crate::sys::netlink::Netlink;

/// The kernel's mode for the network's `-o macvlan_mode=`.
pub fn mode(net: &Network) -> MacVlanMode {
    let mode = match net.driver_options() {
        DriverOptions::Macvlan(m) => m.mode,
        _ => MacvlanMode::default(),
    };
    match mode {
        MacvlanMode::Bridge => MacVlanMode::Bridge,
        MacvlanMode::Vepa => MacVlanMode::Vepa,
        MacvlanMode::Private => MacVlanMode::Private,
        MacvlanMode::Passthru => MacVlanMode::Passthrough,
    }
}

/// The parent must exist; `IFACE.VID` asks for an 802.1q sub-interface,
/// which this kernel cannot make.
pub async fn check_parent(host: &Netlink, net: &Network) -> Result<()> {
    let Some(parent) = net.device.as_deref() else {
        return if net.internal {
            Ok(())
        } else {
            Err(Error::invalid("macvlan options", "", "-o parent=IFACE is required (unless --internal)"))
        };
    };
    if let Some((base, vid)) = parent.split_once('.')
        && vid.parse::<u16>().is_ok()
        && host.link_index(parent).await?.is_none()
    {
        if host.link_index(base).await?.is_none() {
            return Err(Error::invalid(
                "parent",
                parent,
                format!("no interface {base} on the host to put VLAN {vid} on"),
            ));
        }
        return Err(if host.probe_link_kind("vlan", base).await? {
            Error::Unsupported(format!(
                "parent {parent} is an 802.1q sub-interface: creating it is not implemented yet; create it yourself and pass it as parent"
            ))
        } else {
            Error::Unsupported(format!(
                "parent {parent} is an 802.1q sub-interface, but this kernel has no 802.1q VLAN support (CONFIG_VLAN_8021Q)"
            ))
        });
    }
    if host.link_index(parent).await?.is_none() {
        return Err(Error::invalid("parent", parent, "no such network interface on the host"));
    }
    Ok(())
}

pub async fn attach(
    host: &Netlink,
    net: &Network,
    ep: &Endpoint,
    netns: &Path,
    default_route: bool,
) -> Result<u32> {
    let parent = net.device.as_deref().ok_or_else(|| {
        Error::Unsupported(format!("macvlan network {} is --internal without parent: no endpoints", net.name))
    })?;
    let pidx = host.require_index(parent).await?;
    let tmp = names::macvlan_name();
    let idx = host.create_macvlan(&tmp, pidx, mode(net)).await?;
    let res = async {
        host.move_to(idx, netns).await?;
        super::configure_in_sandbox(netns, &tmp, net, ep, default_route).await
    }
    .await;
    if let Err(e) = res {
        let _ = host.delete(idx).await;
        if let Ok(nl) = Netlink::in_netns(netns) {
            let _ = nl.delete_by_name(&tmp).await;
        }
        return Err(e);
    }
    Ok(0)
}

pub async fn detach(ep: &Endpoint, netns: &Path) -> Result<()> {
    let nl = Netlink::in_netns(netns)?;
    nl.delete_by_name(&ep.ifname).await
}
