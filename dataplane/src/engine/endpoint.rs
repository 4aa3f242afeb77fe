//! Endpoints: planning, plugging and programming one attachment; connect and disconnect.
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::*;
use crate::domain::names;
use crate::domain::state::State;
use crate::domain::{ipam, ipam6};
use crate::drivers;
use crate::error::{Error, Result};

/// What plugging one endpoint will do, decided from the state alone.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct EndpointPlan {
    pub ep: Endpoint,
    /// The sandbox's first endpoint (it takes the default route).
    pub first: bool,
    /// The network with virtual IPs for aliases it had none for (`lb=vip`).
    pub vips: Option<Network>,
}

/// Plans `network connect`: the checks of Docker's, then the endpoint.
pub(super) fn plan_connect(
    state: &State,
    net_ref: &str,
    sb_ref: &str,
    ip: Option<&str>,
    ip6: Option<&str>,
    aliases: &[String],
) -> Result<(Network, Sandbox, EndpointPlan)> {
    let net = state.require_network(net_ref)?.clone();
    let sb = state.require_sandbox(sb_ref)?.clone();
    if let Some(owner) = sb.owner {
        return Err(super::sandbox::owned_by(&sb, owner));
    }
    match &sb.mode {
        NetworkMode::Host => return Err(Error::HostNetworkConnect),
        NetworkMode::None => {
            return Err(Error::Conflict(format!(
                "container {} uses --network none and cannot be connected to a network",
                sb.name
            )));
        }
        NetworkMode::Container(_) => {
            return Err(Error::Conflict(
                "container sharing network namespace with another container or host cannot be connected to any other network".into(),
            ));
        }
        NetworkMode::Networks => {}
    }
    if !net.has_endpoints() {
        return Err(Error::HostNetworkConnect);
    }
    if state.endpoints.iter().any(|e| e.sandbox_id == sb.id && e.network_id == net.id) {
        return Err(Error::AlreadyConnected { sandbox: sb.name, network: net.name });
    }
    if !aliases.is_empty() && net.name == "bridge" {
        return Err(Error::Conflict(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        ));
    }
    let plan = plan_endpoint(state, &net, &sb, ip, ip6, aliases)?;
    Ok((net, sb, plan))
}

/// Plans `network disconnect`: the endpoint to remove, or Docker's refusal.
pub(super) fn plan_disconnect(
    state: &State,
    net_ref: &str,
    sb_ref: &str,
) -> Result<(Network, Sandbox, Endpoint)> {
    let net = state.require_network(net_ref)?.clone();
    let sb = state.require_sandbox(sb_ref)?.clone();
    if let Some(owner) = sb.owner {
        return Err(super::sandbox::owned_by(&sb, owner));
    }
    if sb.mode == NetworkMode::Host || net.driver == Driver::Host {
        return Err(Error::HostNetworkConnect);
    }
    let ep = state
        .endpoints
        .iter()
        .find(|e| e.sandbox_id == sb.id && e.network_id == net.id)
        .ok_or_else(|| Error::NotConnected { sandbox: sb.name.clone(), network: net.name.clone() })?
        .clone();
    Ok((net, sb, ep))
}

/// Teardown failures as the warnings a response carries (each also logged).
pub(super) fn teardown_warnings(sandbox: &str, failed: Vec<(&str, Error)>) -> Vec<String> {
    failed
        .into_iter()
        .map(|(step, e)| {
            tracing::warn!(sandbox, step, error = %e, "teardown step failed; the next reconcile retries it");
            format!("{step} of {sandbox} failed (the daemon retries at its next start): {e}")
        })
        .collect()
}

/// Plans endpoint `ip` (or the next free address) with `aliases` for
/// sandbox `sb` on `net`, and on a dual-stack network its IPv6 address
/// `ip6` (or the next free one): addresses, interface name, MAC, VIPs. No
/// side effects; every refusal happens here.
pub(super) fn plan_endpoint(
    state: &State,
    net: &Network,
    sb: &Sandbox,
    ip: Option<&str>,
    ip6: Option<&str>,
    aliases: &[String],
) -> Result<EndpointPlan> {
    let ipam = net
        .ipam
        .as_ref()
        .ok_or_else(|| Error::Unsupported(format!("network {} has no address pool", net.name)))?;
    if net.driver == Driver::Macvlan && net.device.is_none() {
        return Err(Error::Unsupported(format!(
            "network {} is an --internal macvlan network without parent: it cannot have endpoints",
            net.name
        )));
    }
    if let Some(owner) = net.owner
        && sb.owner != Some(owner)
    {
        return Err(Error::Conflict(format!(
            "network {} belongs to {owner}: only {owner}'s containers attach to it",
            net.name
        )));
    }
    if let Some(bad) = aliases.iter().find(|a| !names::valid_alias(a)) {
        return Err(Error::invalid("alias", bad, "must be a DNS name: 1-253 characters of [a-zA-Z0-9.-_]"));
    }
    let mut used: HashSet<Ipv4Addr> = state.endpoints_of_network(&net.id).map(|e| e.ip).collect();
    // Virtual IPs are taken too (they live on the bridge), and on an
    // overlay network the addresses of the other hosts' sandboxes.
    used.extend(net.vips.values().copied());
    used.extend(state.remote_of_network(&net.id).map(|e| e.ip));
    let ip = match ip {
        Some(s) if !s.is_empty() => {
            let ip: Ipv4Addr = s.parse().map_err(|_| Error::invalid("ip", s, "not an IPv4 address"))?;
            ipam::check_requested(ipam, ip, &used, &net.name)?;
            ip
        }
        _ if net.is_overlay() => ipam::allocate_from(ipam, &used, &net.name, state.overlay_skip)?,
        _ => ipam::allocate(ipam, &used, &net.name)?,
    };
    let ip6 = plan_ip6(state, net, ip6, ip)?;
    let taken: HashSet<String> = state.endpoints_of_sandbox(&sb.id).map(|e| e.ifname.clone()).collect();
    let ifname = (0..).map(|i| format!("eth{i}")).find(|n| !taken.contains(n)).unwrap_or_default();
    let ep = Endpoint {
        id: names::new_id(),
        network_id: net.id.clone(),
        sandbox_id: sb.id.clone(),
        ifname,
        host_ifname: net.is_bridge().then(names::host_veth_name),
        ip,
        ip6,
        mac: names::mac_for_ip(ip),
        aliases: aliases.to_vec(),
    };
    used.insert(ip);
    let mut used6: HashSet<Ipv6Addr> = state.endpoints_of_network(&net.id).filter_map(|e| e.ip6).collect();
    used6.extend(net.vips6.values().copied());
    used6.extend(ip6);
    let vips = Engine::plan_vips(net, aliases, &used, &used6)?;
    Ok(EndpointPlan { ep, first: taken.is_empty(), vips })
}

/// The IPv6 address of an endpoint on `net`: `--ip6` checked, or the next
/// free one on a dual-stack network; None on an IPv4-only network, where
/// `--ip6` is refused. On an overlay network the other hosts' addresses
/// are taken too, and the address first tried is the one at the IPv4
/// address's place in the subnet (10.0.1.7 → fd…::7): unique across the
/// hosts as the IPv4 address is, and easy to read.
fn plan_ip6(state: &State, net: &Network, ip6: Option<&str>, ip: Ipv4Addr) -> Result<Option<Ipv6Addr>> {
    let wanted = ip6.filter(|s| !s.is_empty());
    let Some(ipam) = &net.ipam6 else {
        return match wanted {
            Some(s) => Err(Error::invalid(
                "ip6",
                s,
                format!("network {} has no IPv6 (it was created without --ipv6)", net.name),
            )),
            None => Ok(None),
        };
    };
    let mut used: HashSet<Ipv6Addr> = state.endpoints_of_network(&net.id).filter_map(|e| e.ip6).collect();
    // Virtual IPs live on the bridge.
    used.extend(net.vips6.values().copied());
    used.extend(state.remote_of_network(&net.id).filter_map(|e| e.ip6));
    match wanted {
        Some(s) => {
            let ip: Ipv6Addr = s.parse().map_err(|_| Error::invalid("ip6", s, "not an IPv6 address"))?;
            ipam6::check_requested6(ipam, ip, &used, &net.name)?;
            Ok(Some(ip))
        }
        None if net.is_overlay() => {
            let beside = net.ipam.as_ref().map(|v4| beside_v4(v4, ipam, ip));
            match beside {
                Some(a) if free6(ipam, a, &used, &net.name) => Ok(Some(a)),
                _ => ipam6::allocate6(ipam, &used, &net.name).map(Some),
            }
        }
        None => ipam6::allocate6(ipam, &used, &net.name).map(Some),
    }
}

/// The IPv6 address at IPv4 address `ip`'s place in the subnet (10.0.1.7 → fd…::7).
pub(super) fn beside_v4(v4: &Ipam, v6: &ipam6::Ipam6, ip: Ipv4Addr) -> Ipv6Addr {
    let offset = u32::from(ip).wrapping_sub(u32::from(v4.subnet.network()));
    Ipv6Addr::from(u128::from(v6.subnet.network()).wrapping_add(u128::from(offset)))
}

/// Whether `a` may be handed out: in the range, not the gateway, not taken.
pub(super) fn free6(ipam: &ipam6::Ipam6, a: Ipv6Addr, used: &HashSet<Ipv6Addr>, network: &str) -> bool {
    ipam.ip_range.is_none_or(|r| r.contains(a)) && ipam6::check_requested6(ipam, a, used, network).is_ok()
}

impl Engine {
    /// Plugs a planned endpoint: the interface pair (or macvlan), then the
    /// datapath entries; each step pushes its reversal onto `undo`.
    pub(super) async fn apply_endpoint<'a>(
        &'a self,
        net: &'a Network,
        sb: &'a Sandbox,
        plan: &'a EndpointPlan,
        undo: &mut Undo<'a>,
    ) -> Result<()> {
        let netns = Path::new(&sb.netns);
        // On an overlay network the address is the cluster's: claimed first.
        self.claim_overlay(net, plan.vips.as_ref(), sb, &plan.ep, undo).await?;
        // A runtime's container side stays here for the runtime to move in.
        let hidx = match sb.owner {
            Some(Owner::Docker) => drivers::bridge::attach_unmoved(&self.host, net, &plan.ep).await?,
            Some(Owner::Cni) | None => drivers::attach(&self.host, net, &plan.ep, netns, plan.first).await?,
        };
        undo.push(
            format!("unplug endpoint {}", plan.ep.ifname),
            drivers::detach(&self.host, net, &plan.ep, netns),
        );
        self.program_endpoint(net, &plan.ep, hidx)?;
        if let Some(host_if) = &plan.ep.host_ifname {
            let ifname = &plan.ep.ifname;
            undo.push(format!("forget endpoint {ifname} in the datapath"), async move {
                self.dp.endpoints.remove(hidx)
            });
            undo.push(format!("detach the program from {host_if}"), async move {
                self.dp.programs.detach_veth(host_if)
            });
        }
        Ok(())
    }

    /// Puts a bridge endpoint into the BPF endpoint table and attaches the veth program.
    pub(super) fn program_endpoint(&self, net: &Network, ep: &Endpoint, host_index: u32) -> Result<()> {
        let Some(host_if) = &ep.host_ifname else {
            return Ok(());
        };
        self.dp.endpoints.set(crate::datapath::endpoints::EndpointEntry {
            ifindex: host_index,
            net_num: net.num,
            ip: ep.ip,
            ip6: ep.ip6,
            mac: ep.mac,
            flags: net.datapath_flags(),
        })?;
        if let Err(e) = self.dp.programs.attach_veth(host_if) {
            if let Err(undo) = self.dp.endpoints.remove(host_index) {
                tracing::warn!(interface = %host_if, error = %undo, "undoing the endpoint entry");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Unplugs an endpoint: its datapath entry, its program link, its
    /// interfaces. Every step is tried; each failure is returned.
    pub(super) async fn remove_endpoint(&self, net: &Network, ep: &Endpoint, netns: &Path) -> Vec<Error> {
        let mut errors = Vec::new();
        if let Some(host_if) = &ep.host_ifname {
            match self.host.link_index(host_if).await {
                Ok(Some(idx)) => errors.extend(self.dp.endpoints.remove(idx).err()),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
            errors.extend(self.dp.programs.detach_veth(host_if).err());
        }
        errors.extend(drivers::detach(&self.host, net, ep, netns).await.err());
        errors.extend(self.release_overlay(net, ep).await.err());
        errors
    }

    pub async fn connect(
        &self,
        net_ref: &str,
        sb_ref: &str,
        ip: Option<&str>,
        ip6: Option<&str>,
        aliases: &[String],
    ) -> Result<()> {
        let _g = self.lock.lock().await;
        let requested = [ip, ip6].iter().any(|i| i.is_some_and(|i| !i.is_empty()));
        super::overlay::planning_again_on_lost_claims(requested, |skip| {
            self.connect_locked(net_ref, sb_ref, ip, ip6, aliases, skip)
        })
        .await
    }

    async fn connect_locked(
        &self,
        net_ref: &str,
        sb_ref: &str,
        ip: Option<&str>,
        ip6: Option<&str>,
        aliases: &[String],
        overlay_skip: u32,
    ) -> Result<()> {
        let state = State { overlay_skip, ..self.store.state()? };
        let (net, sb, plan) = plan_connect(&state, net_ref, sb_ref, ip, ip6, aliases)?;
        self.plug_planned(&net, &sb, &plan).await?;
        let ep = &plan.ep;
        if let Ok(st) = self.store.state() {
            self.serve_dns(&st, &sb);
            if let Err(e) = self.sync_publications(&st, &sb).await {
                tracing::warn!(sandbox = %sb.name, error = %e, "published ports after connect");
            }
        }
        self.sync_lb().await;
        tracing::info!(network = %net.name, sandbox = %sb.name, ip = %ep.ip, "connected");
        Ok(())
    }

    /// Applies an endpoint plan of an existing sandbox: records and
    /// interfaces together; a failure reverses both.
    pub(super) async fn plug_planned(&self, net: &Network, sb: &Sandbox, plan: &EndpointPlan) -> Result<()> {
        let mut undo = Undo::new();
        let res = async {
            let tx = self.store.begin()?;
            tx.put_endpoint(&plan.ep, &net.name)?;
            if let Some(with_vips) = &plan.vips {
                tx.put_network(with_vips)?;
            }
            self.apply_endpoint(net, sb, plan, &mut undo).await?;
            self.store.commit(tx)
        }
        .await;
        undo.settle(res).await
    }

    /// Disconnects a sandbox. The record goes first (if it cannot, nothing
    /// changed); then the kernel side, every step tried. Returns, as
    /// warnings, what could not be undone (the next reconcile retries it).
    pub async fn disconnect(&self, net_ref: &str, sb_ref: &str) -> Result<Vec<String>> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let (net, sb, ep) = plan_disconnect(&state, net_ref, sb_ref)?;
        let failed = self.unplug_attachment(&net, &sb, &ep).await?;
        tracing::info!(network = %net.name, sandbox = %sb.name, "disconnected");
        Ok(teardown_warnings(&sb.name, failed))
    }

    /// Takes endpoint `ep` off sandbox `sb`, which keeps others (the
    /// request lock held): the record first (if it cannot go, nothing
    /// changed), then the kernel side, every step tried; returns the steps
    /// that failed.
    pub(super) async fn unplug_attachment(
        &self,
        net: &Network,
        sb: &Sandbox,
        ep: &Endpoint,
    ) -> Result<Vec<(&'static str, Error)>> {
        let tx = self.store.begin()?;
        tx.del_endpoint(ep)?;
        self.store.commit(tx)?;
        let mut failed: Vec<(&'static str, Error)> = Vec::new();
        for e in self.remove_endpoint(net, ep, Path::new(&sb.netns)).await {
            failed.push(("removing the endpoint", e));
        }
        // Flows through the endpoint that went are over; the published
        // ports move to the endpoint that publishes now (or go quiet).
        if let Err(e) = self.dp.conntrack.flush_addrs(&ep.addrs()) {
            failed.push(("forgetting the endpoint's flows", e));
        }
        if let Ok(st) = self.store.state() {
            if let Err(e) = self.move_default_route(&st, sb).await {
                failed.push(("moving the default route", e));
            }
            if let Err(e) = self.sync_publications(&st, sb).await {
                failed.push(("moving the published ports", e));
            }
        }
        self.sync_lb().await;
        Ok(failed)
    }

    /// When the endpoint holding the sandbox's default route went, the
    /// route moves to its first remaining endpoint on a network with a
    /// gateway (Docker moves the gateway endpoint the same way), so
    /// replies to the outside — published ports included — still leave.
    async fn move_default_route(&self, state: &State, sb: &Sandbox) -> Result<()> {
        let path = Path::new(&sb.netns);
        let nl = crate::sys::netlink::Netlink::in_netns(path)?;
        let mut need4 = nl.default_route_interface().await?.is_none();
        let mut need6 = nl.default_route6_interface().await?.is_none();
        for ep in state.endpoints_in_order(&sb.id) {
            if !need4 && !need6 {
                break;
            }
            let Some(net) = state.networks.iter().find(|n| n.id == ep.network_id) else { continue };
            if net.internal {
                continue;
            }
            let Some(idx) = nl.link_index(&ep.ifname).await? else { continue };
            if let (true, Some(ipam)) = (need4, &net.ipam) {
                nl.add_default_route(ipam.gateway, idx).await?;
                tracing::info!(sandbox = %sb.name, via = %ipam.gateway, dev = %ep.ifname, "default route moved");
                need4 = false;
            }
            if let (true, Some(ipam6), Some(_)) = (need6, &net.ipam6, ep.ip6) {
                nl.add_default_route6(ipam6.gateway, idx).await?;
                tracing::info!(sandbox = %sb.name, via = %ipam6.gateway, dev = %ep.ifname, "IPv6 default route moved");
                need6 = false;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::{net, sandbox, state_with};

    #[test]
    fn the_plan_takes_the_next_free_address_and_interface_name() {
        let st = state_with(&[('a', "eth0", "10.9.0.2"), ('b', "eth0", "10.9.0.3")]);
        let p = plan_endpoint(&st, &net(false), &sandbox('c'), None, None, &[]).expect("plan");
        assert_eq!((p.ep.ip.to_string().as_str(), p.ep.ifname.as_str(), p.first), ("10.9.0.4", "eth0", true));
        assert_eq!(p.ep.mac, names::mac_for_ip(p.ep.ip));
        // A second network for `a`: its next interface, not its first.
        let p = plan_endpoint(&st, &net(false), &sandbox('a'), None, None, &[]).expect("plan");
        assert_eq!((p.ep.ifname.as_str(), p.first), ("eth1", false));
    }

    #[test]
    fn the_plan_refuses_what_cannot_be_done_before_anything_happens() {
        let st = state_with(&[('a', "eth0", "10.9.0.2")]);
        let sb = sandbox('c');
        let err = plan_endpoint(&st, &net(false), &sb, Some("10.9.0.2"), None, &[]).expect_err("in use");
        assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
        let err = plan_endpoint(&st, &net(false), &sb, Some("10.8.0.5"), None, &[]).expect_err("outside");
        assert!(err.to_string().contains("not inside subnet"), "{err}");
        let err =
            plan_endpoint(&st, &net(false), &sb, Some("banana"), None, &[]).expect_err("not an address");
        assert!(err.to_string().contains("not an IPv4 address"), "{err}");
        let err =
            plan_endpoint(&st, &net(false), &sb, None, None, &["bad alias!".into()]).expect_err("alias");
        assert!(err.to_string().contains("must be a DNS name"), "{err}");
        // A /29 has 5 addresses for sandboxes (.2-.6): the sixth is refused.
        let full = state_with(&[
            ('a', "eth0", "10.9.0.2"),
            ('b', "eth0", "10.9.0.3"),
            ('d', "eth0", "10.9.0.4"),
            ('e', "eth0", "10.9.0.5"),
            ('f', "eth0", "10.9.0.6"),
        ]);
        let err = plan_endpoint(&full, &net(false), &sb, None, None, &[]).expect_err("full");
        assert!(matches!(err, Error::PoolExhausted { .. }), "{err}");
    }

    #[test]
    fn connect_is_planned_with_dockers_refusals() {
        let mut st = state_with(&[('a', "eth0", "10.9.0.2")]);
        st.sandboxes.push(Sandbox { mode: NetworkMode::Host, ..sandbox('h') });
        st.sandboxes.push(Sandbox { mode: NetworkMode::None, ..sandbox('z') });
        st.sandboxes.push(sandbox('c'));
        let refused = |sb: &str, aliases: &[String]| {
            plan_connect(&st, "web", sb, None, None, aliases).map(|_| ()).expect_err("refused").to_string()
        };
        assert!(refused("sh", &[]).contains("host network"));
        assert!(refused("sz", &[]).contains("--network none"));
        assert!(refused("sa", &[]).contains("already exists in network web"));
        assert!(
            plan_connect(&st, "nosuch", "sc", None, None, &[])
                .is_err_and(|e| matches!(e, Error::NetworkNotFound(_)))
        );
        let (net, sb, plan) = plan_connect(&st, "web", "sc", Some("10.9.0.6"), None, &[]).expect("plan");
        assert_eq!(
            (net.name.as_str(), sb.name.as_str(), plan.ep.ip.to_string().as_str()),
            ("web", "sc", "10.9.0.6")
        );
    }

    #[test]
    fn disconnect_is_planned_with_dockers_refusals() {
        let mut st = state_with(&[('a', "eth0", "10.9.0.2")]);
        st.sandboxes.push(sandbox('c'));
        st.sandboxes.push(Sandbox { mode: NetworkMode::Host, ..sandbox('h') });
        let (net, sb, ep) = plan_disconnect(&st, "web", "sa").expect("plan");
        assert_eq!(
            (net.name.as_str(), sb.name.as_str(), ep.ip.to_string().as_str()),
            ("web", "sa", "10.9.0.2")
        );
        let refused = |sb: &str| plan_disconnect(&st, "web", sb).map(|_| ()).expect_err("refused");
        assert!(matches!(refused("sc"), Error::NotConnected { .. }));
        assert!(matches!(refused("sh"), Error::HostNetworkConnect));
        assert!(matches!(refused("nosuch"), Error::SandboxNotFound(_)));
    }

    #[test]
    fn an_alias_on_a_balancing_network_gets_a_vip_that_no_endpoint_has() {
        let st = state_with(&[('a', "eth0", "10.9.0.2")]);
        let p = plan_endpoint(&st, &net(true), &sandbox('c'), None, None, &["svc".into()]).expect("plan");
        let vip = p.vips.as_ref().and_then(|n| n.vips.get("svc")).copied().expect("a VIP for svc");
        assert!(vip != p.ep.ip && vip.to_string() != "10.9.0.2" && vip.to_string() != "10.9.0.1", "{vip}");
        // Without lb=vip no VIP is planned.
        assert_eq!(
            plan_endpoint(&st, &net(false), &sandbox('c'), None, None, &["svc".into()]).expect("plan").vips,
            None
        );
    }
}
