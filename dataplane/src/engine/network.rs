//! Networks: create (with the predefined ones), remove, prune.
use std::collections::BTreeMap;

use super::*;
use crate::domain::ipam;
use crate::domain::names;
use crate::drivers;
use crate::error::{Error, Result};

impl Engine {
    /// Creates the predefined networks on first start.
    pub async fn ensure_predefined(&self) -> Result<()> {
        let state = self.store.state()?;
        if state.network("bridge").is_none() {
            let mut options = BTreeMap::new();
            options.insert(opt::BRIDGE_NAME.into(), DEFAULT_BRIDGE_DEVICE.into());
            options.insert(opt::DEFAULT_BRIDGE.into(), "true".into());
            options.insert(opt::ENABLE_ICC.into(), "true".into());
            options.insert(opt::ENABLE_IP_MASQUERADE.into(), "true".into());
            options.insert(opt::HOST_BINDING_IPV4.into(), "0.0.0.0".into());
            options.insert(opt::MTU.into(), "1500".into());
            let req = NetworkCreate {
                name: "bridge".into(),
                driver: DRIVER_BRIDGE.into(),
                ipam: IpamRequest {
                    subnet: Some("172.17.0.0/16".into()),
                    gateway: Some("172.17.0.1".into()),
                    ..Default::default()
                },
                options,
                ..Default::default()
            };
            self.create_network_inner(req, true).await?;
        }
        for (name, driver) in [("host", DRIVER_HOST), ("none", DRIVER_NULL)] {
            if state.network(name).is_none() {
                let req = NetworkCreate { name: name.into(), driver: driver.into(), ..Default::default() };
                self.create_network_inner(req, true).await?;
            }
        }
        Ok(())
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<String> {
        self.create_network_inner(req, false).await
    }

    async fn create_network_inner(&self, req: NetworkCreate, predefined: bool) -> Result<String> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        names::check_name(&req.name)?;
        if state.network(&req.name).is_some_and(|n| n.name == req.name) {
            return Err(Error::NetworkExists(req.name));
        }
        let driver = if req.driver.is_empty() { DRIVER_BRIDGE.to_string() } else { req.driver.clone() };
        match driver.as_str() {
            DRIVER_BRIDGE | DRIVER_MACVLAN => {}
            DRIVER_HOST | DRIVER_NULL if predefined => {}
            DRIVER_HOST | DRIVER_NULL => {
                return Err(Error::Unsupported(format!(
                    "only one instance of \"{driver}\" network is allowed"
                )));
            }
            "ipvlan" => return Err(self.ipvlan_unsupported(req.options.get(opt::PARENT)).await),
            other => return Err(Error::UnknownDriver(other.to_string())),
        }
        let id = names::new_id();
        let mut options = req.options.clone();
        let device = match driver.as_str() {
            DRIVER_BRIDGE => {
                let dev = options.get(opt::BRIDGE_NAME).cloned().unwrap_or_else(|| names::bridge_name(&id));
                if !names::valid_ifname(&dev) {
                    return Err(Error::invalid(
                        opt::BRIDGE_NAME,
                        &dev,
                        "not a valid interface name (1-15 characters)",
                    ));
                }
                if state.networks.iter().any(|n| n.is_bridge() && n.device.as_deref() == Some(&dev)) {
                    return Err(Error::Conflict(format!("bridge device {dev} is used by another network")));
                }
                if !predefined && self.host.link_index(&dev).await?.is_some() {
                    return Err(Error::Conflict(format!(
                        "an interface named {dev} already exists on the host"
                    )));
                }
                Some(dev)
            }
            DRIVER_MACVLAN => options.get(opt::PARENT).cloned(),
            _ => None,
        };
        for key in [opt::ENABLE_ICC, opt::ENABLE_IP_MASQUERADE] {
            if let Some(v) = options.get(key)
                && v != "true"
                && v != "false"
            {
                return Err(Error::invalid("option", format!("{key}={v}"), "must be true or false"));
            }
        }
        if let Some(v) = options.get(opt::MTU)
            && !v.parse::<u32>().is_ok_and(|m| (68..=65535).contains(&m))
        {
            return Err(Error::invalid("option", format!("{}={v}", opt::MTU), "the MTU must be 68 to 65535"));
        }
        if let Some(v) = options.get(opt::GATEWAY_MODE_IPV4)
            && !matches!(v.as_str(), "nat" | "nat-unprotected" | "routed")
        {
            return Err(Error::invalid(
                "option",
                format!("{}={v}", opt::GATEWAY_MODE_IPV4),
                "must be nat, nat-unprotected or routed",
            ));
        }
        if let Some(v) = options.get(opt::LB) {
            if v != "vip" {
                return Err(Error::invalid(
                    "option",
                    format!("{}={v}", opt::LB),
                    "the only balancing mode is vip",
                ));
            }
            if driver != DRIVER_BRIDGE {
                return Err(Error::invalid(
                    "option",
                    format!("{}={v}", opt::LB),
                    "only bridge networks balance aliases",
                ));
            }
        }
        let ipam = if driver == DRIVER_BRIDGE || driver == DRIVER_MACVLAN {
            let mut taken: Vec<_> = state
                .networks
                .iter()
                .filter(|n| n.is_bridge() || driver == DRIVER_BRIDGE)
                .filter_map(|n| n.ipam.as_ref().map(|i| (i.subnet, n.name.clone())))
                .collect();
            // What the host itself uses (routes, addresses): an automatic
            // subnet avoids it; a bridge subnet given by the user must not
            // overlap it either — the bridge and the sandboxes would take the
            // host's own addresses and break its routing. macvlan subnets are
            // the parent's LAN by design.
            let check_host = driver == DRIVER_BRIDGE && !predefined;
            let host_claims = if req.ipam.subnet.is_none() || check_host {
                self.host.ipv4_claims().await?
            } else {
                Vec::new()
            };
            if req.ipam.subnet.is_none() {
                taken.extend(host_claims.iter().map(|(n, what)| (*n, format!("the host's {what}"))));
            }
            let planned = ipam::plan(&req.ipam, &taken)?;
            if check_host {
                let ours: Vec<_> =
                    state.networks.iter().filter_map(|n| n.ipam.as_ref().map(|i| i.subnet)).collect();
                if let Some((_, what)) = host_claims
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
        if driver == DRIVER_MACVLAN {
            options.entry(opt::MACVLAN_MODE.into()).or_insert_with(|| "bridge".into());
        }
        let net = Network {
            id: id.clone(),
            name: req.name.clone(),
            driver,
            created: now(),
            num: state.networks.iter().map(|n| n.num).max().unwrap_or(0) + 1,
            ipam,
            internal: req.internal,
            options,
            labels: req.labels.clone(),
            device,
            predefined,
            vips: BTreeMap::new(),
        };
        // A half-made bridge does not survive a failure here (the driver removes it).
        drivers::create_network(&self.host, &net).await?;
        let undo = async {
            let _ = drivers::delete_network(&self.host, &net).await;
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam)
                && let Err(e) = self.dp.endpoints.remove_subnet(ipam.subnet)
            {
                tracing::warn!(network = %net.name, error = %e, "undoing the subnet entry");
            }
        };
        let res = (|| -> Result<()> {
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                self.dp.endpoints.set_subnet(ipam.subnet, net.num, ipam.gateway, net.datapath_flags())?;
            }
            let tx = self.store.begin()?;
            tx.put_network(&net)?;
            self.store.commit(tx)
        })();
        if let Err(e) = res {
            undo.await;
            return Err(e);
        }
        if let Err(e) = self.refresh_host_ips(&self.store.state()?).await {
            tracing::warn!(error = %e, "refreshing host addresses");
        }
        tracing::info!(network = %net.name, id = %net.short_id(), driver = %net.driver, "network created");
        Ok(id)
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

    pub async fn remove_network(&self, id_or_name: &str) -> Result<String> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let net = state.require_network(id_or_name)?.clone();
        if net.predefined {
            return Err(Error::PredefinedNetwork(net.name));
        }
        if state.endpoints_of_network(&net.id).next().is_some() {
            return Err(Error::NetworkInUse { name: net.name, id: net.id });
        }
        // The record goes first: if it cannot (a full disk), nothing changed.
        let tx = self.store.begin()?;
        tx.del_network(&net.id)?;
        self.store.commit(tx)?;
        if let Err(e) = drivers::delete_network(&self.host, &net).await {
            tracing::warn!(network = %net.name, error = %e, "network teardown (what is left goes at the next reconcile)");
        }
        if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam)
            && let Err(e) = self.dp.endpoints.remove_subnet(ipam.subnet)
        {
            tracing::warn!(network = %net.name, error = %e, "network teardown (what is left goes at the next reconcile)");
        }
        if let Err(e) = self.refresh_host_ips(&self.store.state()?).await {
            tracing::warn!(error = %e, "refreshing host addresses");
        }
        self.sync_lb().await;
        tracing::info!(network = %net.name, "network removed");
        Ok(net.id)
    }

    /// Removes every user network without endpoints; returns their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let state = self.store.state()?;
        let mut removed = Vec::new();
        for n in state.networks.iter().filter(|n| !n.predefined) {
            if state.endpoints_of_network(&n.id).next().is_none() && self.remove_network(&n.id).await.is_ok()
            {
                removed.push(n.name.clone());
            }
        }
        Ok(removed)
    }
}
