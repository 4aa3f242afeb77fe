//! Overlay networks across the hosts of a cluster. Their records live in
//! the cluster store (see `cluster.rs`); every host mirrors each one into
//! its own store and kernel (a local bridge holding the gateway, the
//! subnet in BPF with the VNI as the network's number) and programs the
//! other hosts' endpoints into DP_REMOTE, from the store's watch. An
//! address is claimed in the store before its endpoint is plugged.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use super::network::{NetworkContext, plan_network};
use super::*;
use crate::cluster::{Claim, Cluster, Snapshot};
use crate::datapath::overlay::RemoteEntry;
use crate::domain::names;
use crate::error::{Error, Result};

/// How many times a claim lost to another host's is planned again.
pub(super) const CLAIM_ATTEMPTS: usize = 16;

/// Runs a create or connect again while another host wins the overlay
/// address it planned (each run plans anew, knowing the winner's), unless
/// the address was asked for (`requested`).
pub(super) async fn planning_again_on_lost_claims<T, F>(
    requested: bool,
    mut run: impl FnMut() -> F,
) -> Result<T>
where
    F: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match run().await {
            Err(Error::AddressClaimed { .. }) if !requested && attempt < CLAIM_ATTEMPTS => attempt += 1,
            res => return res,
        }
    }
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
    /// (overlay networks only); the claim is given back by `undo`.
    pub(super) async fn claim_overlay<'a>(
        &'a self,
        net: &'a Network,
        sb: &Sandbox,
        ep: &Endpoint,
        undo: &mut Undo<'a>,
    ) -> Result<()> {
        if !net.is_overlay() {
            return Ok(());
        }
        let cluster = self.cluster_or_refuse()?;
        let record = self.remote_record(cluster, sb, ep);
        match cluster.claim(&record).await? {
            Claim::Claimed => {
                let ip = ep.ip;
                undo.push(format!("release address {ip} in the cluster store"), async move {
                    cluster.release(&net.id, ip).await
                });
                Ok(())
            }
            Claim::Taken(by) => {
                let node = by.node.clone();
                // Known at once, before the watch brings it: the next plan avoids it.
                if let Ok(st) = self.store.state() {
                    let mut remote = st.remote;
                    remote.push(*by);
                    let _ = self.store.set_remote(remote);
                }
                Err(Error::AddressClaimed { ip: ep.ip, network: net.name.clone(), node })
            }
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
            mac: ep.mac,
        }
    }

    /// Gives an overlay endpoint's address back to the cluster.
    pub(super) async fn release_overlay(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        match (&self.cluster, net.is_overlay()) {
            (Some(c), true) => c.release(&net.id, ep.ip).await,
            _ => Ok(()),
        }
    }

    /// After a start: this host's overlay endpoints claimed again (a lease
    /// that expired while the daemon was down took them away).
    pub async fn reclaim_overlay(&self) {
        let Some(cluster) = &self.cluster else { return };
        let Ok(state) = self.store.state() else { return };
        for ep in &state.endpoints {
            let (Some(net), Some(sb)) = (
                state.networks.iter().find(|n| n.id == ep.network_id && n.is_overlay()),
                state.sandboxes.iter().find(|s| s.id == ep.sandbox_id),
            ) else {
                continue;
            };
            match cluster.claim(&self.remote_record(cluster, sb, ep)).await {
                Ok(Claim::Claimed) => {}
                Ok(Claim::Taken(by)) => tracing::error!(
                    network = %net.name, sandbox = %sb.name, ip = %ep.ip, node = %by.node,
                    "this sandbox's overlay address was taken by another host while this daemon was away"
                ),
                Err(e) => {
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

    /// Makes this host match `snap`: overlay networks made or removed,
    /// other hosts' endpoints in DP_REMOTE and in the resolver's view.
    async fn sync_cluster(&self, snap: &Snapshot) {
        let Some(cluster) = &self.cluster else { return };
        if !snap.complete {
            return;
        }
        let _g = self.lock.lock().await;
        let state = match self.store.state() {
            Ok(s) => s,
            Err(e) => return tracing::warn!(error = %e, "cluster sync: reading the store"),
        };
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
                    for w in self.teardown_network(local).await {
                        tracing::warn!(network = %local.name, warning = %w, "overlay network teardown");
                    }
                }
                Err(e) => {
                    tracing::warn!(network = %local.name, error = %e, "cannot remove the overlay network here")
                }
            }
        }
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
        let want: HashMap<Ipv4Addr, RemoteEntry> = remote
            .iter()
            .filter_map(|e| {
                let net = state.networks.iter().find(|n| n.id == e.network_id)?;
                let IpAddr::V4(underlay) = e.underlay else { return None };
                Some((e.ip, RemoteEntry { underlay, vni: net.num, mac: e.mac }))
            })
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
}
