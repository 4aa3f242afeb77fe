//! Networks: create (with the predefined ones), remove, prune.
use std::collections::{BTreeMap, HashSet};

use ipnetwork::{Ipv4Network, Ipv6Network};

use super::*;
use crate::domain::ipam;
use crate::domain::ipam6::{self, Ipam6, Ipam6Request};
use crate::domain::names;
use crate::domain::options::key;
use crate::domain::state::State;
use crate::drivers;
use crate::error::{Error, Result};

/// What planning a network needs from outside the store.
#[derive(Clone, Debug, Default)]
pub(super) struct NetworkContext {
    pub id: String,
    pub created: String,
    /// `bridge`, `host`, `none`, made by the daemon itself.
    pub predefined: bool,
    /// Names of the host's interfaces.
    pub host_links: HashSet<String>,
    /// Subnets the host itself uses (routes, addresses), with what uses them.
    pub host_claims: Vec<(Ipv4Network, String)>,
    /// The host's global IPv6 prefixes, with what uses them.
    pub host_claims6: Vec<(Ipv6Network, String)>,
    /// The host's ULA /48 automatic IPv6 subnets come from.
    pub ula: Option<Ipv6Network>,
    /// The runtime asking (its network ID is `id`), if not our own API.
    pub owner: Option<Owner>,
    /// The cluster's overlay networks as the store has them now; None when
    /// this daemon is not in a cluster.
    pub cluster: Option<Vec<Network>>,
}

/// First VXLAN network identifier (as Docker's overlay: 4096 and up); the
/// numbers of local networks stay below it, so an overlay network's number
/// in the BPF maps is its VNI on every host.
pub const VNI_BASE: u32 = 4096;
const VNI_MAX: u32 = (1 << 24) - 1;

/// Plans an overlay network against the cluster's networks: name, subnet
/// (10.0.X.0/24 when none is given) and VNI unique cluster-wide.
fn plan_overlay(
    state: &State,
    req: &NetworkCreate,
    cx: &NetworkContext,
    ipam6: Option<Ipam6>,
) -> Result<Network> {
    let Some(cluster) = &cx.cluster else {
        return Err(Error::Unsupported(
            "overlay networks need a cluster: start the daemon with --cluster-store etcd://IP:PORT --cluster-advertise IP"
                .into(),
        ));
    };
    if let Some(n) = cluster.iter().find(|n| n.name == req.name) {
        return Err(Error::NetworkExists(n.name.clone()));
    }
    // Subnets of every network here and in the cluster, and the host's own.
    let mut taken: Vec<(Ipv4Network, String)> = state
        .networks
        .iter()
        .chain(cluster)
        .filter(|n| n.is_bridge())
        .filter_map(|n| n.ipam.as_ref().map(|i| (i.subnet, n.name.clone())))
        .collect();
    if req.ipam.subnet.is_none() {
        taken.extend(cx.host_claims.iter().map(|(n, what)| (*n, format!("the host's {what}"))));
    }
    let ipam = ipam::plan_overlay(&req.ipam, &taken)?;
    let vnis: HashSet<u32> = cluster.iter().map(|n| n.num).collect();
    let vni = (VNI_BASE..=VNI_MAX)
        .find(|v| !vnis.contains(v))
        .ok_or_else(|| Error::Unsupported("every VXLAN network identifier is taken".into()))?;
    Ok(Network {
        id: cx.id.clone(),
        name: req.name.clone(),
        driver: Driver::Overlay,
        created: cx.created.clone(),
        num: vni,
        ipam: Some(ipam),
        ipam6,
        internal: req.internal,
        options: req.options.clone(),
        labels: req.labels.clone(),
        device: Some(names::overlay_bridge_name(&cx.id)),
        predefined: false,
        vips: BTreeMap::new(),
        vips6: BTreeMap::new(),
        owner: cx.owner,
    })
}

/// Plans the IPv6 side of `network create`: None without `--ipv6` (an
/// IPv6 `--subnet`, `--gateway` or `--ip-range` without it is refused, not
/// ignored); otherwise the subnet given, checked against every network's
/// and the host's, or the first free /64 of the host's ULA prefix.
fn plan_network6(state: &State, req: &NetworkCreate, cx: &NetworkContext) -> Result<Option<Ipam6>> {
    if !req.ipv6 {
        if req.ipam6 != Ipam6Request::default() {
            let given = [&req.ipam6.subnet, &req.ipam6.ip_range, &req.ipam6.gateway];
            let value = given.into_iter().flatten().next().cloned().unwrap_or_default();
            return Err(Error::invalid("IPAM config", value, "an IPv6 address or subnet needs --ipv6"));
        }
        return Ok(None);
    }
    match req.driver {
        Driver::Bridge | Driver::Macvlan | Driver::Overlay => {}
        d => {
            return Err(Error::invalid("ipv6", "true", format!("driver {d} gives sandboxes no addresses")));
        }
    }
    // Every network's here, and on an overlay network the cluster's too.
    let mut taken: Vec<(Ipv6Network, String)> = state
        .networks
        .iter()
        .chain(cx.cluster.iter().flatten())
        .filter_map(|n| n.ipam6.as_ref().map(|i| (i.subnet, n.name.clone())))
        .collect();
    if req.ipam6.subnet.is_none() {
        taken.extend(cx.host_claims6.iter().map(|(n, what)| (*n, format!("the host's {what}"))));
    }
    let ula = cx.ula.ok_or_else(|| Error::Unsupported("the host's IPv6 pool is not known".into()))?;
    let planned = ipam6::plan6(&req.ipam6, &taken, ula)?;
    // As for IPv4: a bridge must not take addresses the host routes itself.
    if req.driver != Driver::Macvlan
        && !cx.predefined
        && let Some((_, what)) = cx.host_claims6.iter().find(|(c, _)| c.overlaps(planned.subnet))
    {
        return Err(Error::invalid(
            "subnet",
            planned.subnet,
            format!("the host already uses it ({what}); choose a subnet the host does not reach"),
        ));
    }
    Ok(Some(planned))
}

/// Plans `network create`: the record, its device and subnet, or Docker's
/// refusal. No side effects.
pub(super) fn plan_network(state: &State, req: &NetworkCreate, cx: &NetworkContext) -> Result<Network> {
    let predefined = cx.predefined;
    names::check_name(&req.name)?;
    if state.network(&req.name).is_some_and(|n| n.name == req.name) {
        return Err(Error::NetworkExists(req.name.clone()));
    }
    let driver = req.driver;
    match driver {
        Driver::Bridge | Driver::Macvlan => {}
        Driver::Host | Driver::Null if predefined => {}
        Driver::Host | Driver::Null => {
            return Err(Error::Unsupported(format!("only one instance of \"{driver}\" network is allowed")));
        }
        Driver::Ipvlan => {
            return Err(Error::Unsupported("driver ipvlan is not implemented by dataplane yet".into()));
        }
        Driver::Overlay => {
            let ipam6 = plan_network6(state, req, cx)?;
            return plan_overlay(state, req, cx, ipam6);
        }
    }
    let ipam6 = plan_network6(state, req, cx)?;
    let device = match &req.driver_options {
        DriverOptions::Bridge(b) => {
            let dev = b.name.clone().unwrap_or_else(|| names::bridge_name(&cx.id));
            if !names::valid_ifname(&dev) {
                return Err(Error::invalid(
                    key::BRIDGE_NAME,
                    &dev,
                    "not a valid interface name (1-15 characters)",
                ));
            }
            if state.networks.iter().any(|n| n.is_bridge() && n.device.as_deref() == Some(&dev)) {
                return Err(Error::Conflict(format!("bridge device {dev} is used by another network")));
            }
            if !predefined && cx.host_links.contains(&dev) {
                return Err(Error::Conflict(format!("an interface named {dev} already exists on the host")));
            }
            Some(dev)
        }
        DriverOptions::Macvlan(m) => m.parent.clone(),
        DriverOptions::None => None,
    };
    let ipam = if matches!(driver, Driver::Bridge | Driver::Macvlan) {
        let mut taken: Vec<_> = state
            .networks
            .iter()
            .filter(|n| n.is_bridge() || driver == Driver::Bridge)
            .filter_map(|n| n.ipam.as_ref().map(|i| (i.subnet, n.name.clone())))
            .collect();
        // What the host itself uses (routes, addresses): an automatic
        // subnet avoids it; a bridge subnet given by the user must not
        // overlap it either — the bridge and the sandboxes would take the
        // host's own addresses and break its routing. macvlan subnets are
        // the parent's LAN by design.
        let check_host = driver == Driver::Bridge && !predefined;
        if req.ipam.subnet.is_none() {
            taken.extend(cx.host_claims.iter().map(|(n, what)| (*n, format!("the host's {what}"))));
        }
        let planned = ipam::plan(&req.ipam, &taken)?;
        if check_host {
            let ours: Vec<_> =
                state.networks.iter().filter_map(|n| n.ipam.as_ref().map(|i| i.subnet)).collect();
            if let Some((_, what)) = cx
                .host_claims
                .iter()
                .find(|(c, _)| c.overlaps(planned.subnet) && !ours.iter().any(|o| o.overlaps(*c)))
            {
                return Err(Error::invalid(
                    "subnet",
                    planned.subnet,
                    format!("the host already uses it ({what}); choose a subnet the host does not reach"),
                ));
            }
        }
        Some(planned)
    } else {
        None
    };
    let mut options = req.options.clone();
    if driver == Driver::Macvlan {
        options.entry(key::MACVLAN_MODE.into()).or_insert_with(|| "bridge".into());
    }
    Ok(Network {
        id: cx.id.clone(),
        name: req.name.clone(),
        driver,
        created: cx.created.clone(),
        num: {
            let used: HashSet<u32> = state.networks.iter().map(|n| n.num).collect();
            (1..VNI_BASE).find(|n| !used.contains(n)).ok_or_else(|| {
                Error::Unsupported(format!("this host has {} local networks already", VNI_BASE - 1))
            })?
        },
        ipam,
        ipam6,
        internal: req.internal,
        options,
        labels: req.labels.clone(),
        device,
        predefined,
        vips: BTreeMap::new(),
        vips6: BTreeMap::new(),
        owner: cx.owner,
    })
}

/// IPv6 forwarding, which a dual-stack network needs (as IPv4's
/// `ip_forward`, set at start): between the bridges and the uplink, the
/// BPF programs judge every packet. Docker sets it too; as there, a host
/// that forwards no longer takes router advertisements on interfaces
/// left at `accept_ra=1` (set 2 on an uplink configured by SLAAC).
pub(super) fn enable_ipv6_forwarding() -> Result<()> {
    let path = "/proc/sys/net/ipv6/conf/all/forwarding";
    std::fs::write(path, "1").map_err(|e| Error::io("enabling IPv6 forwarding:", path, e))
}

impl Engine {
    /// Creates the predefined networks on first start.
    pub async fn ensure_predefined(&self) -> Result<()> {
        let state = self.store.state()?;
        if state.network("bridge").is_none() {
            let options: BTreeMap<String, String> = [
                (key::BRIDGE_NAME, DEFAULT_BRIDGE_DEVICE),
                (key::DEFAULT_BRIDGE, "true"),
                (key::ENABLE_ICC, "true"),
                (key::ENABLE_IP_MASQUERADE, "true"),
                (key::HOST_BINDING_IPV4, "0.0.0.0"),
                (key::MTU, "1500"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            let mut req = NetworkCreate::new("bridge", "bridge", options)?;
            req.ipam = IpamRequest {
                subnet: Some("172.17.0.0/16".into()),
                gateway: Some("172.17.0.1".into()),
                ..Default::default()
            };
            req.ipv6 = self.default_bridge6.is_some();
            req.ipam6 = self.default_bridge6.clone().unwrap_or_default();
            self.create_network_inner(req, true).await?;
        } else {
            self.sync_default_bridge6().await?;
        }
        for (name, driver) in [("host", "host"), ("none", "null")] {
            if state.network(name).is_none() {
                self.create_network_inner(NetworkCreate::new(name, driver, BTreeMap::new())?, true).await?;
            }
        }
        Ok(())
    }

    /// Gives the default bridge the IPv6 config the daemon was started
    /// with (`--ipv6 [--fixed-cidr-v6]`), or takes it away: planned as for
    /// `network create --ipv6`, applied to the bridge device, the datapath
    /// and the record. Refused while sandboxes are on the bridge (their
    /// addresses would not match the network's): it then keeps its config,
    /// with a warning, until they are gone.
    async fn sync_default_bridge6(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some(net) = state.networks.iter().find(|n| n.predefined && n.name == "bridge").cloned() else {
            return Ok(());
        };
        let wanted = self.default_bridge6.clone();
        let same = match (&wanted, &net.ipam6) {
            (None, None) => true,
            // --ipv6 without --fixed-cidr-v6 keeps whatever subnet it had.
            (Some(req), Some(cur)) => req.subnet.as_deref().is_none_or(|s| s == cur.subnet.to_string()),
            _ => false,
        };
        if same {
            return Ok(());
        }
        if state.endpoints_of_network(&net.id).next().is_some() {
            tracing::warn!(
                ipv6 = ?net.ipam6.as_ref().map(|i| i.subnet),
                "the default bridge keeps its IPv6 config while sandboxes are on it; remove them and restart to change it"
            );
            return Ok(());
        }
        let planned = match &wanted {
            Some(req) => {
                let others = State {
                    networks: state.networks.iter().filter(|n| n.id != net.id).cloned().collect(),
                    ..Default::default()
                };
                let create = NetworkCreate {
                    ipv6: true,
                    ipam6: req.clone(),
                    ..NetworkCreate::new("bridge", "bridge", BTreeMap::new())?
                };
                let cx = NetworkContext {
                    predefined: true,
                    host_claims6: self.host.ipv6_claims().await?,
                    ula: Some(self.store.host_ula()?),
                    ..Default::default()
                };
                plan_network6(&others, &create, &cx)?
            }
            None => None,
        };
        let updated = Network { ipam6: planned.clone(), ..net.clone() };
        if let (Some(old), Some(dev)) = (&net.ipam6, &net.device) {
            if let Some(idx) = self.host.link_index(dev).await? {
                self.host.delete_address(idx, old.gateway.into(), old.subnet.prefix()).await?;
            }
            self.dp.endpoints.remove_subnet6(old.subnet)?;
        }
        let tx = self.store.begin()?;
        tx.put_network(&updated)?;
        self.store.commit(tx)?;
        if let Some(i6) = &updated.ipam6 {
            enable_ipv6_forwarding()?;
            drivers::create_network(&self.host, &updated).await?;
            self.dp.endpoints.set_subnet6(i6.subnet, updated.num, i6.gateway, updated.datapath_flags6())?;
        }
        tracing::info!(ipv6 = ?planned.map(|i| i.subnet), "default bridge IPv6 config changed");
        Ok(())
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<String> {
        if req.driver == Driver::Overlay {
            return self.create_overlay(req).await;
        }
        self.create_network_inner(req, false).await
    }

    async fn create_network_inner(&self, req: NetworkCreate, predefined: bool) -> Result<String> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        if req.driver == Driver::Ipvlan {
            let parent = req.driver_options.macvlan().and_then(|m| m.parent.clone());
            return Err(self.ipvlan_unsupported(parent.as_ref()).await);
        }
        // What the host has, read once; the plan itself is pure.
        let cx = NetworkContext {
            id: req.origin.as_ref().map_or_else(names::new_id, |(_, id)| id.clone()),
            owner: req.origin.as_ref().map(|(o, _)| *o),
            created: now(),
            predefined,
            host_links: self.host.links().await?.into_iter().map(|l| l.name).collect(),
            host_claims: self.host.ipv4_claims().await?,
            host_claims6: if req.ipv6 { self.host.ipv6_claims().await? } else { Vec::new() },
            ula: if req.ipv6 { Some(self.store.host_ula()?) } else { None },
            cluster: None,
        };
        let net = plan_network(&state, &req, &cx)?;
        self.apply_network(&net).await?;
        tracing::info!(network = %net.name, id = %net.short_id(), driver = %net.driver, "network created");
        Ok(net.id)
    }

    /// Makes a planned network: its devices, its subnet in BPF, its record.
    /// Each kernel change pushes its reversal; a failure before the commit
    /// reverses them all (a half-made bridge does not survive).
    pub(super) async fn apply_network(&self, net: &Network) -> Result<()> {
        if net.ipam6.is_some() {
            enable_ipv6_forwarding()?;
        }
        drivers::create_network(&self.host, net).await?;
        let mut undo = Undo::new();
        undo.push(
            format!("delete the devices of network {}", net.name),
            drivers::delete_network(&self.host, net),
        );
        let res = async {
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                self.dp.endpoints.set_subnet(ipam.subnet, net.num, ipam.gateway, net.datapath_flags())?;
                let subnet = ipam.subnet;
                undo.push(format!("remove subnet {subnet}"), async move {
                    self.dp.endpoints.remove_subnet(subnet)
                });
            }
            if let (true, Some(ipam6)) = (net.is_bridge(), &net.ipam6) {
                self.dp.endpoints.set_subnet6(ipam6.subnet, net.num, ipam6.gateway, net.datapath_flags6())?;
                let subnet = ipam6.subnet;
                undo.push(format!("remove subnet {subnet}"), async move {
                    self.dp.endpoints.remove_subnet6(subnet)
                });
            }
            let tx = self.store.begin()?;
            tx.put_network(net)?;
            self.store.commit(tx)
        }
        .await;
        undo.settle(res).await?;
        if let Err(e) = self.refresh_host_ips(&self.store.state()?).await {
            tracing::warn!(error = %e, "refreshing host addresses");
        }
        Ok(())
    }

    /// "Check, don't assume": ask the kernel for an ipvlan link and report what it says.
    async fn ipvlan_unsupported(&self, parent: Option<&String>) -> Error {
        let probe = self.host.probe_link_kind("ipvlan", parent.map(String::as_str).unwrap_or("lo")).await;
        match probe {
            Ok(false) => Error::Unsupported(
                "driver ipvlan is not available: this kernel lacks ipvlan support (CONFIG_IPVLAN)".into(),
            ),
            _ => Error::Unsupported("driver ipvlan is not implemented by dataplane yet".into()),
        }
    }

    /// Removes a network: the record first (if it cannot, nothing
    /// changed), then its devices and datapath entries, every step tried;
    /// what could not be undone comes back as warnings.
    pub async fn remove_network(&self, id_or_name: &str) -> Result<Removed> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let net = state.require_network(id_or_name)?.clone();
        if let Some(owner) = net.owner {
            return Err(Error::Conflict(format!(
                "network {} belongs to {owner}: remove it with `{owner} network rm {}`",
                net.name, net.id
            )));
        }
        self.remove_network_locked(&state, net).await
    }

    /// Removes `net` (the request lock held, its owner checked).
    pub(super) async fn remove_network_locked(&self, state: &State, net: Network) -> Result<Removed> {
        if net.predefined {
            return Err(Error::PredefinedNetwork(net.name));
        }
        if state.endpoints_of_network(&net.id).next().is_some() {
            return Err(Error::NetworkInUse { name: net.name, id: net.id });
        }
        Self::check_firewall_names(state, &net)?;
        if net.is_overlay() {
            self.remove_overlay_record(&net).await?;
        }
        let tx = self.store.begin()?;
        tx.del_network(&net.id)?;
        self.store.commit(tx)?;
        Ok(Removed { warnings: self.teardown_network(&net).await, id: net.id })
    }

    /// Removes a network's devices and datapath entries (its record is
    /// gone), every step tried; returns what could not be undone.
    pub(super) async fn teardown_network(&self, net: &Network) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut failed = |step: &str, e: Error| {
            tracing::warn!(network = %net.name, step, error = %e, "teardown step failed; the next reconcile retries it");
            warnings.push(format!(
                "{step} of network {} failed (the daemon retries at its next start): {e}",
                net.name
            ));
        };
        if let Err(e) = drivers::delete_network(&self.host, net).await {
            failed("deleting the devices", e);
        }
        if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam)
            && let Err(e) = self.dp.endpoints.remove_subnet(ipam.subnet)
        {
            failed("removing the subnet from the datapath", e);
        }
        if let (true, Some(ipam6)) = (net.is_bridge(), &net.ipam6)
            && let Err(e) = self.dp.endpoints.remove_subnet6(ipam6.subnet)
        {
            failed("removing the IPv6 subnet from the datapath", e);
        }
        match self.store.state() {
            Ok(st) => {
                if let Err(e) = self.refresh_host_ips(&st).await {
                    tracing::warn!(error = %e, "refreshing host addresses");
                }
            }
            Err(e) => tracing::warn!(error = %e, "refreshing host addresses"),
        }
        self.sync_lb().await;
        tracing::info!(network = %net.name, "network removed");
        warnings
    }

    /// Removes every user network of this host without endpoints; returns
    /// their names. Overlay networks are the cluster's: `network rm` removes
    /// them, prune does not (as Docker's prune leaves swarm networks).
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let state = self.store.state()?;
        let mut removed = Vec::new();
        for n in state.networks.iter().filter(|n| !n.predefined && !n.is_overlay()) {
            if state.endpoints_of_network(&n.id).next().is_none() && self.remove_network(&n.id).await.is_ok()
            {
                removed.push(n.name.clone());
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::state_with;

    fn cx() -> NetworkContext {
        NetworkContext {
            id: "f".repeat(64),
            created: "2026-11-30T00:00:00Z".into(),
            predefined: false,
            host_links: HashSet::from(["lo".to_string(), "up0".to_string(), "br-taken".to_string()]),
            host_claims: vec![("172.18.0.0/16".parse().expect("net"), "route via up0".into())],
            host_claims6: vec![("fd00:99::/64".parse().expect("net"), "address fd00:99::2 on up0".into())],
            ula: Some(ipam6::ula_48([0x12, 0x34, 0x56, 0x78, 0x9a])),
            owner: None,
            cluster: None,
        }
    }

    fn req(name: &str, driver: &str, subnet: Option<&str>, opts: &[(&str, &str)]) -> NetworkCreate {
        let options = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut r = NetworkCreate::new(name, driver, options).expect("request");
        r.ipam.subnet = subnet.map(str::to_string);
        r
    }

    #[test]
    fn a_network_is_planned_around_what_the_store_and_the_host_use() {
        let st = state_with(&[]);
        let n = plan_network(&st, &req("front", "bridge", None, &[]), &cx()).expect("plan");
        // 172.18/16 is the host's: the next default pool is taken.
        let ipam = n.ipam.expect("ipam");
        assert_eq!(
            (ipam.subnet.to_string().as_str(), ipam.gateway.to_string().as_str()),
            ("172.19.0.0/16", "172.19.0.1")
        );
        assert_eq!((n.device.as_deref(), n.num), (Some(format!("br-{}", &"f".repeat(12))).as_deref(), 2));
        let m = plan_network(&st, &req("lan", "macvlan", Some("192.0.2.0/24"), &[("parent", "up0")]), &cx())
            .expect("macvlan");
        assert_eq!(m.options.get(key::MACVLAN_MODE).map(String::as_str), Some("bridge"));
    }

    #[test]
    fn network_refusals_come_from_the_plan() {
        let st = state_with(&[]);
        let refused =
            |r: NetworkCreate| plan_network(&st, &r, &cx()).map(|_| ()).expect_err("refused").to_string();
        assert!(refused(req("web", "bridge", None, &[])).contains("already exists"));
        assert!(refused(req("h2", "host", None, &[])).contains("only one instance of \"host\""));
        assert!(
            refused(req("b", "bridge", None, &[(key::BRIDGE_NAME, "br-test")]))
                .contains("used by another network")
        );
        assert!(
            refused(req("b", "bridge", None, &[(key::BRIDGE_NAME, "br-taken")]))
                .contains("already exists on the host")
        );
        assert!(
            refused(req("b", "bridge", None, &[(key::BRIDGE_NAME, "a-name-far-too-long")]))
                .contains("not a valid interface name")
        );
        assert!(
            refused(req("b", "bridge", Some("172.18.5.0/24"), &[]))
                .contains("the host already uses it (route via up0)")
        );
        assert!(refused(req("b", "bridge", Some("10.9.0.0/24"), &[])).contains("web"));
        // The daemon's own predefined networks may be host and null.
        let pre = NetworkContext { predefined: true, ..cx() };
        assert!(plan_network(&st, &req("host", "host", None, &[]), &pre).is_ok());
    }

    #[test]
    fn a_dual_stack_network_gets_its_ipv6_config_planned_around_the_others_and_the_hosts() {
        let st = state_with(&[]);
        let v6 = |name: &str, subnet: Option<&str>| {
            let mut r = req(name, "bridge", None, &[]);
            r.ipv6 = true;
            r.ipam6.subnet = subnet.map(str::to_string);
            r
        };
        let n = plan_network(&st, &v6("d", None), &cx()).expect("auto");
        let i6 = n.ipam6.expect("IPv6 config");
        assert_eq!(
            (i6.subnet.to_string(), i6.gateway.to_string()),
            ("fd12:3456:789a::/64".into(), "fd12:3456:789a::1".into())
        );
        assert!(n.ipam.is_some(), "dual stack keeps its IPv4 config");
        // Without --ipv6 there is none, and an IPv6 value is refused, not ignored.
        assert_eq!(plan_network(&st, &req("p", "bridge", None, &[]), &cx()).expect("v4").ipam6, None);
        let mut no_flag = req("p", "bridge", None, &[]);
        no_flag.ipam6.subnet = Some("fd00:1::/64".into());
        let e = plan_network(&st, &no_flag, &cx()).expect_err("no --ipv6");
        assert!(e.to_string().contains("needs --ipv6"), "{e}");
        // Another network's IPv6 subnet, and the host's, are refused.
        let mut st2 = state_with(&[]);
        st2.networks.push(Network {
            ipam6: ipam6::plan6(
                &Ipam6Request { subnet: Some("fd00:5::/64".into()), ..Default::default() },
                &[],
                ipam6::ula_48([0; 5]),
            )
            .ok(),
            name: "six".into(),
            id: "6".repeat(64),
            num: 9,
            device: Some("br-six".into()),
            ..crate::engine::fixtures::net(false)
        });
        let e = plan_network(&st2, &v6("d", Some("fd00:5::/56")), &cx()).expect_err("overlap");
        assert!(e.to_string().contains("six"), "{e}");
        let e = plan_network(&st, &v6("d", Some("fd00:99::/64")), &cx()).expect_err("the host's");
        assert!(e.to_string().contains("the host already uses it (address fd00:99::2 on up0)"), "{e}");
        // Overlay networks: planned around the cluster's IPv6 subnets too.
        let mut ov = req("ov", "overlay", None, &[]);
        ov.ipv6 = true;
        ov.ipam6.subnet = Some("fd00:5::/64".into());
        let incx = NetworkContext { cluster: Some(vec![st2.networks.last().expect("six").clone()]), ..cx() };
        let e = plan_network(&st, &ov, &incx).expect_err("overlap in the cluster");
        assert!(e.to_string().contains("six"), "{e}");
        ov.ipam6.subnet = None;
        let planned = plan_network(&st, &ov, &incx).expect("dual-stack overlay");
        let six = planned.ipam6.expect("ipv6");
        assert!(
            six.subnet.prefix() == 64 && !six.subnet.overlaps("fd00:5::/64".parse().expect("net")),
            "{six:?}"
        );
    }

    #[test]
    fn an_overlay_network_is_planned_against_the_clusters_networks() {
        let st = state_with(&[]);
        // Not in a cluster: the refusal says what to pass.
        let e = plan_network(&st, &req("ov", "overlay", None, &[]), &cx()).expect_err("no cluster");
        assert!(e.to_string().contains("--cluster-store etcd://IP:PORT --cluster-advertise IP"), "{e}");
        let incx = NetworkContext { cluster: Some(vec![]), ..cx() };
        let first = plan_network(&st, &req("ov", "overlay", None, &[]), &incx).expect("first");
        assert_eq!(first.num, VNI_BASE, "the first VNI");
        assert_eq!(first.ipam.as_ref().map(|i| i.subnet.to_string()), Some("10.0.0.0/24".into()));
        assert_eq!(first.device.as_deref(), Some("ov-ffffffffffff"));
        assert_eq!(first.mtu(), Some(crate::domain::model::OVERLAY_MTU));
        // Another host made `ov` meanwhile: VNI, subnet and name are taken cluster-wide.
        let second_cx = NetworkContext { id: "e".repeat(64), cluster: Some(vec![first.clone()]), ..cx() };
        let second = plan_network(&st, &req("ov2", "overlay", None, &[]), &second_cx).expect("second");
        assert_eq!(
            (second.num, second.ipam.map(|i| i.subnet.to_string())),
            (VNI_BASE + 1, Some("10.0.1.0/24".into()))
        );
        let refused = |r: NetworkCreate| {
            plan_network(&st, &r, &second_cx).map(|_| ()).expect_err("refused").to_string()
        };
        assert!(refused(req("ov", "overlay", None, &[])).contains("already exists"));
        assert!(refused(req("x", "overlay", Some("10.0.0.128/25"), &[])).contains("ov"));
        assert!(
            refused(req("x", "overlay", Some("10.9.0.0/24"), &[])).contains("web"),
            "a local network's subnet"
        );
        let opts = [("parent".to_string(), "up0".to_string())].into_iter().collect();
        let e = NetworkCreate::new("x", "overlay", opts).map(|_| ()).expect_err("macvlan's option");
        assert!(e.to_string().contains("the overlay driver does not take it"), "{e}");
        // Local networks keep numbers below the VNIs.
        let local = plan_network(&st, &req("b", "bridge", None, &[]), &cx()).expect("bridge");
        assert!(local.num < VNI_BASE);
    }
}
