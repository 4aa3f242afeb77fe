//! Overlay networks across the hosts of a cluster. Their records live in
//! the cluster store (see `cluster.rs`); every host mirrors each one into
//! its own store and kernel (a local bridge holding the gateway, the
//! subnet in BPF with the VNI as the network's number) and programs the
//! other hosts' endpoints into DP_REMOTE, from the store's watch. An
//! address is claimed in the store before its endpoint is plugged.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::network::{NetworkContext, plan_network};
use super::*;
use crate::cluster::{Claim, Cluster, Snapshot, VipClaim};
use crate::datapath::overlay::RemoteEntry;
use crate::domain::names;
use crate::error::{Error, Result};

/// How many times a claim lost to another host's is planned again.
pub(super) const CLAIM_ATTEMPTS: usize = 16;

/// Runs a create or connect again while another host wins the overlay
/// address it planned (each run plans anew, knowing the winner's, from a
/// random place in the pool: the argument of `run`), unless the address
/// was asked for (`requested`).
pub(super) async fn planning_again_on_lost_claims<T, F>(
    requested: bool,
    mut run: impl FnMut(u32) -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        let skip = if attempt == 0 { 0 } else { rand::random::<u32>() };
        match run(skip).await {
            Err(Error::AddressClaimed { .. }) if !requested && attempt < CLAIM_ATTEMPTS => {
                attempt += 1;
                // The watch brings the winner's record meanwhile.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            res => return res,
        }
    }
}

/// This host's endpoints on overlay networks, with their network and sandbox.
fn overlay_endpoints(state: &State) -> impl Iterator<Item = (&Network, &Sandbox, &Endpoint)> {
    state.endpoints.iter().filter_map(|ep| {
        let net = state.networks.iter().find(|n| n.id == ep.network_id && n.is_overlay())?;
        let sb = state.sandboxes.iter().find(|s| s.id == ep.sandbox_id)?;
        Some((net, sb, ep))
    })
}

impl Engine {
    fn cluster_or_refuse(&self) -> Result<&Cluster> {
        self.cluster.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "overlay networks need a cluster: start the daemon with --cluster-store etcd://IP:PORT --cluster-advertise IP"
                    .into(),
            )
        })
    }

    /// `network create -d overlay`: planned against the cluster's networks
    /// as the store has them, recorded there only if none changed since,
    /// then made here (the other hosts make it from their watch).
    pub(super) async fn create_overlay(&self, req: NetworkCreate) -> Result<String> {
        let _g = self.lock.lock().await;
        let cluster = self.cluster_or_refuse()?;
        for _ in 0..5 {
            let state = self.store.state()?;
            let (networks, revision) = cluster.networks().await?;
            let cx = NetworkContext {
                id: names::new_id(),
                created: now(),
                predefined: false,
                host_links: HashSet::new(),
                host_claims: self.host.ipv4_claims().await?,
                host_claims6: if req.ipv6 { self.host.ipv6_claims().await? } else { Vec::new() },
                ula: if req.ipv6 { Some(self.store.host_ula()?) } else { None },
                owner: None,
                cluster: Some(networks),
            };
            let net = plan_network(&state, &req, &cx)?;
            if !cluster.create_network(&net, revision).await?
                // A member that failed over after committing it: it is there.
                && !cluster.networks().await?.0.iter().any(|n| n.id == net.id)
            {
                continue;
            }
            if let Err(e) = self.apply_network(&net).await {
                // No host keeps a network its creator could not make.
                if let Err(undo) = cluster.remove_network(&net.id).await {
                    tracing::warn!(network = %net.name, error = %undo, "cannot withdraw the overlay network");
                }
                return Err(e);
            }
            tracing::info!(network = %net.name, id = %net.short_id(), vni = net.num, "overlay network created");
            return Ok(net.id);
        }
        Err(Error::Conflict(
            "the cluster's networks kept changing while this one was planned; try again".into(),
        ))
    }

    /// Takes an overlay network's record out of the cluster store, unless
    /// a sandbox on any host is on it.
    pub(super) async fn remove_overlay_record(&self, net: &Network) -> Result<()> {
        let cluster = self.cluster_or_refuse()?;
        match cluster.remove_network(&net.id).await? {
            Ok(()) => Ok(()),
            Err(nodes) => Err(Error::NetworkInUseElsewhere {
                name: net.name.clone(),
                id: net.id.clone(),
                nodes: nodes.join(", "),
            }),
        }
    }

    /// Claims endpoint `ep`'s address in the cluster store for this host
    /// (overlay networks only), after the virtual IPs `with_vips` plans for
    /// its aliases; the address claim is given back by `undo`.
    pub(super) async fn claim_overlay<'a>(
        &'a self,
        net: &'a Network,
        with_vips: Option<&Network>,
        sb: &Sandbox,
        ep: &Endpoint,
        undo: &mut Undo<'a>,
    ) -> Result<()> {
        if !net.is_overlay() {
            return Ok(());
        }
        let cluster = self.cluster_or_refuse()?;
        for (alias, vip) in with_vips.map(|n| &n.vips).into_iter().flatten() {
            if net.vips.contains_key(alias) {
                continue;
            }
            let vip6 = with_vips.and_then(|n| n.vips6.get(alias)).copied();
            match cluster.claim_vip(&net.id, alias, *vip, vip6).await? {
                VipClaim::Claimed => {}
                VipClaim::Exists(theirs, theirs6) => {
                    // Another host made it first: it is the alias's VIP here too.
                    let mut known = net.clone();
                    known.vips.insert(alias.clone(), theirs);
                    if let Some(v6) = theirs6 {
                        known.vips6.insert(alias.clone(), v6);
                    }
                    let tx = self.store.begin()?;
                    tx.put_network(&known)?;
                    self.store.commit(tx)?;
                    return Err(Error::AddressClaimed {
                        ip: IpAddr::V4(*vip),
                        network: net.name.clone(),
                        node: format!("another host (the VIP of {alias} is {theirs})"),
                    });
                }
                VipClaim::AddressTaken => {
                    return Err(Error::AddressClaimed {
                        ip: IpAddr::V4(*vip),
                        network: net.name.clone(),
                        node: "another host".into(),
                    });
                }
            }
        }
        let record = self.remote_record(cluster, sb, ep);
        match cluster.claim(&record).await? {
            Claim::Claimed => {
                let (ip, ip6) = (ep.ip, ep.ip6);
                undo.push(format!("release address {ip} in the cluster store"), async move {
                    cluster.release(&net.id, ip, ip6).await
                });
                Ok(())
            }
            Claim::Taken(by) => {
                let node = by.node.clone();
                // The IPv4 address, or else the IPv6 one, is the holder's.
                let ip = match ep.ip6 {
                    Some(ip6) if by.ip != ep.ip => IpAddr::V6(ip6),
                    _ => IpAddr::V4(ep.ip),
                };
                tracing::debug!(network = %net.name, %ip, node = %by.node, sandbox = %by.name, "address claimed by another host first");
                // Known at once, before the watch brings it: the next plan avoids it.
                self.store.learn_remote(*by);
                Err(Error::AddressClaimed { ip, network: net.name.clone(), node })
            }
            Claim::TakenByVip => Err(Error::AddressClaimed {
                ip: IpAddr::V4(ep.ip),
                network: net.name.clone(),
                node: "a virtual IP".into(),
            }),
        }
    }

    fn remote_record(
        &self,
        cluster: &Cluster,
        sb: &Sandbox,
        ep: &Endpoint,
    ) -> crate::domain::model::RemoteEndpoint {
        crate::domain::model::RemoteEndpoint {
            node: cluster.me().id.clone(),
            underlay: cluster.me().address,
            network_id: ep.network_id.clone(),
            sandbox_id: sb.id.clone(),
            name: sb.name.clone(),
            hostname: sb.hostname.clone(),
            aliases: ep.aliases.clone(),
            ip: ep.ip,
            ip6: ep.ip6,
            mac: ep.mac,
            live: sb.is_live(),
        }
    }

    /// Tells the cluster which of this host's overlay sandboxes run (each
    /// record is written again only when its liveness changed).
    pub(super) async fn publish_overlay_liveness(&self, state: &State) {
        let Some(cluster) = &self.cluster else { return };
        for (_, sb, ep) in overlay_endpoints(state) {
            if let Err(e) = cluster.refresh(&self.remote_record(cluster, sb, ep)).await {
                tracing::warn!(sandbox = %sb.name, error = %e, "cannot tell the cluster whether the sandbox runs");
            }
        }
    }

    /// Gives an overlay endpoint's address back to the cluster.
    pub(super) async fn release_overlay(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        match (&self.cluster, net.is_overlay()) {
            (Some(c), true) => c.release(&net.id, ep.ip, ep.ip6).await,
            _ => Ok(()),
        }
    }

    /// After a start: this host's overlay endpoints claimed again (a lease
    /// that expired while the daemon was down took them away).
    pub async fn reclaim_overlay(&self) {
        let Some(cluster) = &self.cluster else { return };
        let Ok(state) = self.store.state() else { return };
        for (net, sb, ep) in overlay_endpoints(&state) {
            let record = self.remote_record(cluster, sb, ep);
            match cluster.claim(&record).await {
                Ok(Claim::Claimed) => {}
                Ok(Claim::TakenByVip) => tracing::error!(
                    network = %net.name, sandbox = %sb.name, ip = %ep.ip,
                    "this sandbox's overlay address became a virtual IP while this daemon was away"
                ),
                Ok(Claim::Taken(by)) => tracing::error!(
                    network = %net.name, sandbox = %sb.name, ip = %ep.ip, node = %by.node,
                    "this sandbox's overlay address was taken by another host while this daemon was away"
                ),
                Err(e) => {
                    // Claimed when the host registers with the store.
                    cluster.remember(&record);
                    tracing::warn!(network = %net.name, sandbox = %sb.name, error = %e, "cannot claim the overlay address again yet")
                }
            }
        }
    }

    /// Follows the cluster store: every change of its networks or
    /// endpoints is applied here as it comes (the latest wins).
    pub fn start_cluster_sync(self: &Arc<Self>) {
        let Some(cluster) = &self.cluster else { return };
        let mut rx = cluster.snapshot();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let snap = rx.borrow_and_update().clone();
                let Some(engine) = me.upgrade() else { return };
                engine.sync_cluster(&snap).await;
                drop(engine);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Makes this host match `snap`: the other hosts' endpoints in
    /// DP_REMOTE and in the resolver's view (at once: a create waiting for
    /// a lost claim needs them), overlay networks made or removed and their
    /// virtual IPs (with the request lock), then the balanced tables.
    async fn sync_cluster(&self, snap: &Snapshot) {
        if !snap.complete {
            return;
        }
        self.sync_remote(snap);
        let changed = {
            let _g = self.lock.lock().await;
            self.sync_networks(snap).await
        };
        if changed {
            self.sync_remote(snap);
        }
        self.sync_lb().await;
    }

    fn sync_remote(&self, snap: &Snapshot) {
        let Some(cluster) = &self.cluster else { return };
        let state = match self.store.state() {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cluster sync: reading the store"),
        };
        let me = &cluster.me().id;
        let remote: Vec<_> = snap
            .endpoints
            .iter()
            .filter(|e| &e.node != me && state.networks.iter().any(|n| n.id == e.network_id))
            .cloned()
            .collect();
        let want: HashMap<IpAddr, RemoteEntry> = remote
            .iter()
            .filter_map(|e| {
                let net = state.networks.iter().find(|n| n.id == e.network_id)?;
                let IpAddr::V4(underlay) = e.underlay else { return None };
                let entry = RemoteEntry { underlay, vni: net.num, mac: e.mac };
                Some(
                    std::iter::once(IpAddr::V4(e.ip)).chain(e.ip6.map(IpAddr::V6)).map(move |ip| (ip, entry)),
                )
            })
            .flatten()
            .collect();
        match self.dp.overlay.sync(&want) {
            Ok((0, 0)) => {}
            Ok((written, removed)) => tracing::debug!(written, removed, "remote overlay addresses"),
            Err(e) => tracing::warn!(error = %e, "cannot program the remote overlay addresses"),
        }
        if let Err(e) = self.store.set_remote(remote) {
            tracing::warn!(error = %e, "cannot publish the remote endpoints");
        }
    }

    /// Overlay networks of `snap` made here, those gone removed, virtual
    /// IPs recorded (the request lock held). Whether anything changed.
    async fn sync_networks(&self, snap: &Snapshot) -> bool {
        let state = match self.store.state() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cluster sync: reading the store");
                return false;
            }
        };
        let mut changed = false;
        for net in &snap.networks {
            if state.networks.iter().any(|n| n.id == net.id) {
                continue;
            }
            if state.networks.iter().any(|n| n.name == net.name) {
                tracing::error!(network = %net.name, "an overlay network has the name of a network of this host: not made here");
                continue;
            }
            match self.apply_network(net).await {
                Ok(()) => {
                    changed = true;
                    tracing::info!(network = %net.name, vni = net.num, "overlay network made on this host")
                }
                Err(e) => {
                    tracing::error!(network = %net.name, error = %e, "cannot make the overlay network on this host")
                }
            }
        }
        for local in state.networks.iter().filter(|n| n.is_overlay()) {
            if snap.networks.iter().any(|n| n.id == local.id) {
                continue;
            }
            if state.endpoints_of_network(&local.id).next().is_some() {
                tracing::error!(network = %local.name, "the overlay network left the cluster but has sandboxes here: kept");
                continue;
            }
            let res = self.store.begin().and_then(|tx| {
                tx.del_network(&local.id)?;
                self.store.commit(tx)
            });
            match res {
                Ok(()) => {
                    changed = true;
                    for w in self.teardown_network(local).await {
                        tracing::warn!(network = %local.name, warning = %w, "overlay network teardown");
                    }
                }
                Err(e) => {
                    tracing::warn!(network = %local.name, error = %e, "cannot remove the overlay network here")
                }
            }
        }
        // Virtual IPs: the cluster's are the network's on every host.
        let Ok(state) = self.store.state() else { return changed };
        for local in state.networks.iter().filter(|n| n.is_overlay()) {
            // (VIPs go only with their network: what this host recorded
            // before the watch brought it stays.)
            let theirs = || snap.vips.iter().filter(|v| v.network_id == local.id);
            let mut want = local.vips.clone();
            want.extend(theirs().map(|v| (v.alias.clone(), v.ip)));
            let mut want6 = local.vips6.clone();
            want6.extend(theirs().filter_map(|v| Some((v.alias.clone(), v.ip6?))));
            if want == local.vips && want6 == local.vips6 {
                continue;
            }
            let mut known = local.clone();
            known.vips = want;
            known.vips6 = want6;
            let res = self.store.begin().and_then(|tx| {
                tx.put_network(&known)?;
                self.store.commit(tx)
            });
            match res {
                Ok(()) => changed = true,
                Err(e) => tracing::warn!(network = %local.name, error = %e, "cannot record the virtual IPs"),
            }
        }
        changed
    }
}
