//! Alias load balancing: virtual IPs for the aliases of `lb=vip` networks
//! (allocated from the network's subnet, held by its bridge so sandboxes
//! reach them on-link), and their Maglev tables kept in step with the live
//! sandboxes carrying each alias.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::domain::{ipam, ipam6};
use crate::error::Result;

/// A balanced alias: its virtual IP and the sandboxes behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vip {
    pub network: String,
    pub alias: String,
    pub vip: Ipv4Addr,
    /// Its IPv6 VIP (dual-stack networks), balanced over the same table.
    pub vip6: Option<Ipv6Addr>,
    pub backends: Vec<VipBackend>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipBackend {
    pub sandbox: String,
    pub ip: Ipv4Addr,
    /// In the table now (its sandbox is live).
    pub live: bool,
    /// New flows sent to it through the VIP since the VIP was made.
    pub flows: u64,
}

/// A Maglev slot's value: the backend's address (network-order bytes).
fn slot(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

impl Engine {
    /// `net` with a virtual IP for each of `aliases` it has none for yet
    /// (and an IPv6 one on a dual-stack network), avoiding `used` and
    /// `used6` (endpoint addresses and VIPs); None if nothing was added.
    pub(super) fn plan_vips(
        net: &Network,
        aliases: &[String],
        used: &HashSet<Ipv4Addr>,
        used6: &HashSet<Ipv6Addr>,
    ) -> Result<Option<Network>> {
        let has = |a: &String| net.vips.contains_key(a) && (net.ipam6.is_none() || net.vips6.contains_key(a));
        if !net.balances_aliases() || aliases.iter().all(has) {
            return Ok(None);
        }
        let Some(pool) = &net.ipam else { return Ok(None) };
        let mut net = net.clone();
        let mut taken = used.clone();
        let mut taken6 = used6.clone();
        for a in aliases {
            if !net.vips.contains_key(a) {
                let vip = if net.is_overlay() {
                    ipam::allocate_top(pool, &taken, &net.name)?
                } else {
                    ipam::allocate(pool, &taken, &net.name)?
                };
                taken.insert(vip);
                net.vips.insert(a.clone(), vip);
            }
            if let Some(pool6) = &net.ipam6
                && !net.vips6.contains_key(a)
            {
                // On an overlay network at the IPv4 VIP's place in the
                // subnet, as sandboxes' addresses are: unique cluster-wide
                // as the IPv4 VIP is (claimed with it).
                let beside = net.vips.get(a).map(|v4| super::endpoint::beside_v4(pool, pool6, *v4));
                let vip6 = match beside {
                    Some(b) if net.is_overlay() && super::endpoint::free6(pool6, b, &taken6, &net.name) => b,
                    _ => ipam6::allocate6(pool6, &taken6, &net.name)?,
                };
                taken6.insert(vip6);
                net.vips6.insert(a.clone(), vip6);
            }
        }
        Ok(Some(net))
    }

    /// Recomputes the table of every virtual IP from the store: the live
    /// sandboxes with that alias on that network. Tables are replaced whole
    /// (one map update each); established flows keep their backend through
    /// conntrack. Failures are logged: the previous table stays.
    pub(super) async fn sync_lb(&self) {
        let Ok(state) = self.store.state() else { return };
        // Liveness changes reach the cluster's other hosts from here too.
        self.publish_overlay_liveness(&state).await;
        let mut want: HashMap<Ipv4Addr, dataplane_common::LbTable> = HashMap::new();
        // IPv6 VIPs share their alias's IPv4 table; the datapath finds the
        // backends' IPv6 addresses by their IPv4 ones.
        let mut want6: HashMap<Ipv6Addr, Ipv4Addr> = HashMap::new();
        let mut addrs6: HashMap<Ipv4Addr, Ipv6Addr> = HashMap::new();
        for net in state.networks.iter().filter(|n| n.balances_aliases()) {
            let bridge = match &net.device {
                Some(d) => self.host.link_index(d).await.ok().flatten(),
                None => None,
            };
            // The VIPs the bridge holds already are not added again.
            let (held, held6) = match bridge {
                Some(b) => (
                    self.host.ipv4_addresses(b).await.unwrap_or_default(),
                    self.host.ipv6_addresses(b).await.unwrap_or_default(),
                ),
                None => Default::default(),
            };
            for (alias, vip) in &net.vips {
                if let Some(b) = bridge
                    && !held.contains(vip)
                    && let Err(e) = self.host.add_address(b, *vip, 32).await
                {
                    tracing::warn!(network = %net.name, %vip, error = %e, "cannot put the VIP on the bridge");
                }
                let vip6 = net.vips6.get(alias).copied();
                if let Some(vip6) = vip6 {
                    if let Some(b) = bridge
                        && !held6.contains(&vip6)
                        && let Err(e) = self.host.add_vip6(b, vip6).await
                    {
                        tracing::warn!(network = %net.name, %vip6, error = %e, "cannot put the VIP on the bridge");
                    }
                    want6.insert(vip6, *vip);
                }
                let mut backends = Vec::new();
                for ep in state.endpoints_of_network(&net.id).filter(|e| e.aliases.contains(alias)) {
                    if let (Some(_), Some(ip6)) = (vip6, ep.ip6) {
                        addrs6.insert(ep.ip, ip6);
                    }
                    let live =
                        state.sandboxes.iter().find(|s| s.id == ep.sandbox_id).is_some_and(Sandbox::is_live);
                    if let (true, Some(h)) = (live, &ep.host_ifname)
                        && let Ok(Some(_)) = self.host.link_index(h).await
                    {
                        backends.push((ep.sandbox_id.clone(), slot(ep.ip)));
                    }
                }
                // On an overlay network, the other hosts' sandboxes with the
                // alias too (live while their host's lease holds them).
                for r in state.remote_of_network(&net.id).filter(|r| r.aliases.contains(alias)) {
                    if let (Some(_), Some(ip6)) = (vip6, r.ip6) {
                        addrs6.insert(r.ip, ip6);
                    }
                    if r.live {
                        backends.push((r.sandbox_id.clone(), slot(r.ip)));
                    }
                }
                want.insert(*vip, crate::datapath::lb::maglev(&backends));
            }
        }
        for (vip, table) in &want {
            if let Err(e) = self.dp.lb.set(*vip, table) {
                tracing::warn!(%vip, error = %e, "cannot program the VIP");
            }
        }
        for vip in self.dp.lb.vips() {
            if !want.contains_key(&vip)
                && let Err(e) = self.dp.lb.remove(vip)
            {
                tracing::warn!(%vip, error = %e, "cannot remove the VIP");
            }
        }
        // IPv6: written only where they differ (a healthy host gets no write).
        let (now6, now_addrs6) = (self.dp.lb.vips6(), self.dp.lb.addrs6());
        for (ip, ip6) in addrs6.iter().filter(|(ip, ip6)| now_addrs6.get(ip) != Some(ip6)) {
            if let Err(e) = self.dp.lb.set_addr6(*ip, *ip6) {
                tracing::warn!(%ip, %ip6, error = %e, "cannot record the backend's IPv6 address");
            }
        }
        for (vip6, vip) in want6.iter().filter(|(v6, v)| now6.get(v6) != Some(v)) {
            if let Err(e) = self.dp.lb.set6(*vip6, *vip) {
                tracing::warn!(%vip6, error = %e, "cannot program the VIP");
            }
        }
        for vip6 in now6.keys().filter(|v| !want6.contains_key(v)) {
            if let Err(e) = self.dp.lb.remove6(*vip6) {
                tracing::warn!(%vip6, error = %e, "cannot remove the VIP");
            }
        }
        for ip in now_addrs6.keys().filter(|ip| !addrs6.contains_key(ip)) {
            if let Err(e) = self.dp.lb.remove_addr6(*ip) {
                tracing::warn!(%ip, error = %e, "cannot remove the backend's IPv6 address");
            }
        }
    }

    /// `dataplane lb list`: VIPs, their live backends and new flows per backend.
    pub fn vips(&self) -> Result<Vec<Vip>> {
        let state = self.store.state()?;
        let stats = self.dp.lb.stats();
        let mut rows = Vec::new();
        for net in state.networks.iter().filter(|n| n.balances_aliases()) {
            for (alias, vip) in &net.vips {
                let mut backends: Vec<VipBackend> = state
                    .endpoints_of_network(&net.id)
                    .filter(|e| e.aliases.contains(alias))
                    .filter_map(|ep| {
                        let sb = state.sandboxes.iter().find(|s| s.id == ep.sandbox_id)?;
                        Some(VipBackend {
                            sandbox: sb.name.clone(),
                            ip: ep.ip,
                            live: sb.is_live(),
                            flows: stats.get(&(*vip, ep.ip)).copied().unwrap_or(0),
                        })
                    })
                    .collect();
                backends.extend(state.remote_of_network(&net.id).filter(|r| r.aliases.contains(alias)).map(
                    |r| VipBackend {
                        sandbox: r.name.clone(),
                        ip: r.ip,
                        live: r.live,
                        flows: stats.get(&(*vip, r.ip)).copied().unwrap_or(0),
                    },
                ));
                backends.sort_by(|a, b| a.sandbox.cmp(&b.sandbox));
                rows.push(Vip {
                    network: net.name.clone(),
                    alias: alias.clone(),
                    vip: *vip,
                    vip6: net.vips6.get(alias).copied(),
                    backends,
                });
            }
        }
        Ok(rows)
    }
}
