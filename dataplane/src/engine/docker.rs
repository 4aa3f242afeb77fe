//! Docker's network and IPAM driver, behind the remote plugin protocol
//! (`api/plugin.rs` speaks it): a network dockerd makes with `-d dataplane`
//! becomes one of ours — bridge, BPF subnet entry, record with Docker's
//! network ID — and each of its container endpoints a veth on that bridge
//! with our programs, held as a sandbox record owned by Docker (its ID the
//! endpoint's). Docker moves the container side into the container and
//! runs its own resolver; ports it asks for are published in BPF like
//! `run -p`. Every call is idempotent: dockerd retries.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

use super::endpoint::{plan_endpoint, teardown_warnings};
use super::publish::{PortLimits, plan_ports, reserve_ports};
use super::*;
use crate::domain::ipam::{self, Pool};
use crate::domain::names;
use crate::domain::state::State;
use crate::error::{Error, Result};

/// `CreateNetwork`, typed.
#[derive(Clone, Debug, Default)]
pub struct DockerNetwork {
    pub id: String,
    pub pool: Option<Ipv4Network>,
    pub gateway: Option<Ipv4Addr>,
    pub aux: BTreeMap<String, Ipv4Addr>,
    pub internal: bool,
    /// `--ipv6`: a dual-stack network, its IPv6 pool and gateway from
    /// Docker's IPAM.
    pub ipv6: bool,
    pub pool6: Option<ipnetwork::Ipv6Network>,
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// `-o` driver options.
    pub options: BTreeMap<String, String>,
}

/// One entry of Docker's `com.docker.network.portmap`, typed.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerPort {
    pub proto: Proto,
    pub container_port: u16,
    pub host_ip: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
}

impl DockerPort {
    fn spec(&self) -> PortSpec {
        PortSpec {
            host_ip: self.host_ip,
            host_port_start: self.host_port,
            host_port_end: self.host_port_end.max(self.host_port),
            container_port_start: self.container_port,
            container_port_end: self.container_port,
            proto: self.proto,
        }
    }
}

/// What `Join` tells dockerd.
#[derive(Clone, Debug, PartialEq)]
pub struct Joined {
    /// The container side, to be moved into the sandbox.
    pub src_name: String,
    /// None on an `--internal` network (Docker then adds no gateway network either).
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 gateway, on a dual-stack network that is not `--internal`.
    pub gateway6: Option<std::net::Ipv6Addr>,
}

/// The Docker endpoint `ep_id`: its sandbox record, endpoint and network.
fn docker_endpoint<'a>(state: &'a State, ep_id: &str) -> Option<(&'a Sandbox, &'a Endpoint, &'a Network)> {
    let sb = state.sandboxes.iter().find(|s| s.id == ep_id && s.owner == Some(Owner::Docker))?;
    let ep = state.endpoints.iter().find(|e| e.sandbox_id == sb.id)?;
    let net = state.networks.iter().find(|n| n.id == ep.network_id)?;
    Some((sb, ep, net))
}

fn unknown_endpoint(ep_id: &str) -> Error {
    Error::invalid("EndpointID", ep_id, "no such endpoint of a dataplane network (was it created?)")
}

/// Subnets a new pool must not overlap: every network's and every other pool's.
fn taken_subnets(state: &State) -> Vec<(Ipv4Network, String)> {
    let nets = state.networks.iter().filter_map(|n| n.ipam.as_ref().map(|i| (i.subnet, n.name.clone())));
    nets.chain(state.pools.iter().map(|p| (p.subnet, format!("address pool {}", p.id)))).collect()
}

impl Engine {
    pub async fn docker_create_network(&self, d: DockerNetwork) -> Result<()> {
        if self.store.state()?.networks.iter().any(|n| n.id == d.id) {
            return Ok(());
        }
        // Docker's IPAM gives the IPv6 pool; a dual-stack network without
        // one would hand out addresses Docker does not know.
        if d.ipv6 && d.pool6.is_none() {
            return Err(Error::invalid(
                "IPv6Data",
                "",
                "--ipv6 needs an IPv6 --subnet on a dataplane network (Docker's IPAM hands out its addresses)",
            ));
        }
        if d.id.len() < 12 || !d.id.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::invalid("NetworkID", &d.id, "not a Docker network ID"));
        }
        if d.options.contains_key(crate::domain::options::key::LB) {
            return Err(Error::Unsupported(
                "-o lb=vip on a Docker network: a VIP needs the containers' aliases, and Docker does not pass \
                 them to network drivers. Docker's resolver answers an alias with every container's address \
                 (DNS round robin); for an alias balanced in the kernel behind one VIP, use dataplane's own \
                 networks and sandboxes"
                    .into(),
            ));
        }
        let mut req = NetworkCreate::new(&d.id[..12], "bridge", d.options)?;
        req.internal = d.internal;
        req.labels.insert("com.dataplane.owner".into(), Owner::Docker.to_string());
        req.ipam = crate::domain::ipam::IpamRequest {
            subnet: d.pool.map(|p| p.to_string()),
            ip_range: None,
            gateway: d.gateway.map(|g| g.to_string()),
            aux: d.aux.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        };
        req.ipv6 = d.ipv6;
        req.ipam6 = crate::domain::ipam6::Ipam6Request {
            subnet: d.pool6.map(|p| p.to_string()),
            ip_range: None,
            gateway: d.gateway6.map(|g| g.to_string()),
        };
        req.origin = Some((Owner::Docker, d.id));
        self.create_network(req).await.map(|_| ())
    }

    pub async fn docker_delete_network(&self, id: &str) -> Result<Vec<String>> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some(net) = state.networks.iter().find(|n| n.id == id && n.owner == Some(Owner::Docker)) else {
            return Ok(Vec::new());
        };
        Ok(self.remove_network_locked(&state, net.clone()).await?.warnings)
    }

    /// `CreateEndpoint`: the addresses Docker's IPAM gave (IPv4, and IPv6
    /// on a dual-stack network), the MAC Docker gave (or ours, `02:42` +
    /// the address, returned to be reported).
    pub async fn docker_create_endpoint(
        &self,
        net_id: &str,
        ep_id: &str,
        (address, address6): (Option<Ipv4Addr>, Option<std::net::Ipv6Addr>),
        mac: Option<[u8; 6]>,
    ) -> Result<Option<[u8; 6]>> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        if let Some((_, ep, _)) = docker_endpoint(&state, ep_id) {
            return Ok(mac.is_none().then_some(ep.mac));
        }
        let net = state
            .networks
            .iter()
            .find(|n| n.id == net_id)
            .ok_or_else(|| Error::NetworkNotFound(net_id.into()))?;
        let ip =
            address.ok_or_else(|| Error::invalid("Interface.Address", "", "an IPv4 address is needed"))?;
        if ep_id.len() < 12 {
            return Err(Error::invalid("EndpointID", ep_id, "not a Docker endpoint ID"));
        }
        let sb = Sandbox {
            id: ep_id.to_string(),
            name: format!("docker-{}", &ep_id[..12]),
            created: now(),
            mode: NetworkMode::Networks,
            state: SandboxState::Running,
            owner: Some(Owner::Docker),
            ..Default::default()
        };
        let ip6 = address6.map(|a| a.to_string());
        let mut plan = plan_endpoint(&state, net, &sb, Some(&ip.to_string()), ip6.as_deref(), &[])?;
        plan.ep.id = ep_id.to_string();
        let host_if = plan.ep.host_ifname.get_or_insert_with(names::host_veth_name);
        plan.ep.ifname = names::runtime_peer_name(host_if);
        if let Some(m) = mac {
            plan.ep.mac = m;
        }
        let mut undo = Undo::new();
        let res = async {
            let tx = self.store.begin()?;
            tx.put_sandbox(&sb)?;
            tx.put_endpoint(&plan.ep, &net.name)?;
            self.apply_endpoint(net, &sb, &plan, &mut undo).await?;
            self.store.commit(tx)
        }
        .await;
        undo.settle(res).await?;
        tracing::info!(network = %net.name, endpoint = %&ep_id[..12], ip = %ip, "docker endpoint created");
        Ok(mac.is_none().then_some(plan.ep.mac))
    }

    /// `Join`: records the container's namespace; tells Docker which
    /// interface to move in and the gateway.
    pub async fn docker_join(&self, ep_id: &str, sandbox_key: &str) -> Result<Joined> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let (sb, ep, net) = docker_endpoint(&state, ep_id).ok_or_else(|| unknown_endpoint(ep_id))?;
        if sb.netns != sandbox_key {
            let tx = self.store.begin()?;
            tx.put_sandbox(&Sandbox { netns: sandbox_key.to_string(), ..sb.clone() })?;
            self.store.commit(tx)?;
        }
        let gateway = match (&net.ipam, net.internal) {
            (Some(ipam), false) => Some(ipam.gateway),
            _ => None,
        };
        let gateway6 = net.ipam6.as_ref().filter(|_| !net.internal).map(|i| i.gateway);
        Ok(Joined { src_name: ep.ifname.clone(), gateway, gateway6 })
    }

    /// `Leave`: the container's namespace is no longer ours to know.
    pub async fn docker_leave(&self, ep_id: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some((sb, _, _)) = docker_endpoint(&state, ep_id) else { return Ok(()) };
        if !sb.netns.is_empty() {
            let tx = self.store.begin()?;
            tx.put_sandbox(&Sandbox { netns: String::new(), ..sb.clone() })?;
            self.store.commit(tx)?;
        }
        Ok(())
    }

    /// `DeleteEndpoint`: its ports, interfaces, datapath entries and
    /// records; the teardown's failures as warnings (logged).
    pub async fn docker_delete_endpoint(&self, ep_id: &str) -> Result<Vec<String>> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some((sb, ep, net)) = docker_endpoint(&state, ep_id) else { return Ok(Vec::new()) };
        let tx = self.store.begin()?;
        tx.del_endpoint(ep)?;
        tx.del_sandbox(&sb.id)?;
        self.store.commit(tx)?;
        let mut failed: Vec<(&str, Error)> = Vec::new();
        for e in self.unpublish(sb, &ep.addrs()) {
            failed.push(("unpublishing the ports", e));
        }
        for e in self.remove_endpoint(net, ep, std::path::Path::new("")).await {
            failed.push(("removing the endpoint", e));
        }
        self.sync_lb().await;
        Ok(teardown_warnings(&sb.name, failed))
    }

    /// `ProgramExternalConnectivity`: publishes Docker's port map through
    /// the endpoint, as `run -p` does (reservations, BPF services).
    pub async fn docker_publish(&self, ep_id: &str, ports: &[DockerPort]) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let (sb, ep, net) = docker_endpoint(&state, ep_id).ok_or_else(|| unknown_endpoint(ep_id))?;
        let specs: Vec<PortSpec> = ports.iter().map(DockerPort::spec).collect();
        if sb.ports == specs && !sb.bindings.is_empty() {
            // A retry: program what is recorded.
            return self.sync_publications(&state, sb).await;
        }
        if !sb.bindings.is_empty() {
            self.unpublish(sb, &[]);
        }
        let sb = Sandbox { ports: specs, bindings: Vec::new(), ..sb.clone() };
        let plan = plan_ports(&state, &sb, &PortLimits::of_host())?;
        let (bindings, fds) = reserve_ports(&plan)?;
        let mut undo = Undo::new();
        let res = async {
            if net.is_bridge() && !net.internal {
                let entries = self.service_entries(&bindings, ep).await?;
                self.dp.services.set(&entries)?;
                let keys = super::publish::keys_of(&entries);
                undo.push("remove the published ports from the datapath", async move {
                    self.dp.services.remove(&keys).into_iter().next().map_or(Ok(()), Err)
                });
            }
            let tx = self.store.begin()?;
            tx.put_sandbox(&Sandbox { bindings: bindings.clone(), ..sb.clone() })?;
            self.store.commit(tx)
        }
        .await;
        undo.settle(res).await?;
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).insert(sb.id.clone(), fds);
        tracing::info!(endpoint = %&ep_id[..12.min(ep_id.len())], ports = bindings.len(), "docker ports published");
        Ok(())
    }

    /// `RevokeExternalConnectivity`: the endpoint's ports go.
    pub async fn docker_unpublish(&self, ep_id: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some((sb, _, _)) = docker_endpoint(&state, ep_id) else { return Ok(()) };
        if sb.bindings.is_empty() && sb.ports.is_empty() {
            return Ok(());
        }
        let tx = self.store.begin()?;
        tx.put_sandbox(&Sandbox { ports: Vec::new(), bindings: Vec::new(), ..sb.clone() })?;
        self.store.commit(tx)?;
        for e in self.unpublish(sb, &[]) {
            tracing::warn!(sandbox = %sb.name, error = %e, "unpublishing docker ports");
        }
        Ok(())
    }

    /// `RequestPool`: the pool asked for or a free one. Repeating a request
    /// for the same pool holds it once more.
    pub async fn ipam_request_pool(
        &self,
        pool: Option<&str>,
        sub_pool: Option<&str>,
        v6: bool,
    ) -> Result<(String, Ipv4Network)> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let mut taken = taken_subnets(&state);
        if let Some(p) = pool {
            let want: Option<Ipv4Network> = p.parse().ok();
            let range: Option<Ipv4Network> = sub_pool.and_then(|s| s.parse().ok());
            if let Some(existing) = state.pools.iter().find(|x| Some(x.subnet) == want && x.ip_range == range)
            {
                let held = Pool { refs: existing.refs + 1, ..existing.clone() };
                let tx = self.store.begin()?;
                tx.put_pool(&held)?;
                self.store.commit(tx)?;
                return Ok((held.id, held.subnet));
            }
        } else {
            taken.extend(
                self.host.ipv4_claims().await?.into_iter().map(|(n, w)| (n, format!("the host's {w}"))),
            );
        }
        let (subnet, range) = ipam::plan_pool(pool, sub_pool, v6, &taken)?;
        let p = Pool::new(subnet, range);
        let tx = self.store.begin()?;
        tx.put_pool(&p)?;
        self.store.commit(tx)?;
        tracing::info!(pool = %p.id, "address pool requested");
        Ok((p.id, subnet))
    }

    pub async fn ipam_release_pool(&self, id: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some(p) = state.pools.iter().find(|p| p.id == id) else { return Ok(()) };
        let tx = self.store.begin()?;
        if p.refs > 1 {
            tx.put_pool(&Pool { refs: p.refs - 1, ..p.clone() })?;
        } else {
            tx.del_pool(id)?;
        }
        self.store.commit(tx)
    }

    /// `RequestAddress`: returns the address with the pool's prefix length.
    pub async fn ipam_request_address(
        &self,
        pool_id: &str,
        want: Option<Ipv4Addr>,
        gateway: bool,
    ) -> Result<(Ipv4Addr, u8)> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let p = state
            .pools
            .iter()
            .find(|p| p.id == pool_id)
            .ok_or_else(|| Error::invalid("PoolID", pool_id, "no such address pool"))?;
        let ip = ipam::pool_address(p, want, gateway)?;
        let mut held = p.clone();
        held.addresses.insert(ip);
        let tx = self.store.begin()?;
        tx.put_pool(&held)?;
        self.store.commit(tx)?;
        Ok((ip, p.subnet.prefix()))
    }

    pub async fn ipam_release_address(&self, pool_id: &str, ip: Ipv4Addr) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some(p) = state.pools.iter().find(|p| p.id == pool_id) else { return Ok(()) };
        if !p.addresses.contains(&ip) {
            return Ok(());
        }
        let mut held = p.clone();
        held.addresses.remove(&ip);
        let tx = self.store.begin()?;
        tx.put_pool(&held)?;
        self.store.commit(tx)
    }
}
