//! The whole state at one moment: networks, sandboxes and endpoints as one
//! store transaction read them, with the lookups every layer asks of them.

use crate::domain::model::{Endpoint, Network, Sandbox};
use crate::error::{Error, Result};

/// Snapshot of everything in the store, read in one transaction.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub networks: Vec<Network>,
    pub sandboxes: Vec<Sandbox>,
    pub endpoints: Vec<Endpoint>,
    /// Address pools of runtimes' IPAM requests.
    pub pools: Vec<crate::domain::ipam::Pool>,
    /// `dataplane firewall` rules, by ID.
    pub firewall: Vec<crate::domain::model::FirewallRule>,
    /// Endpoints of overlay networks on the cluster's other hosts (from the
    /// cluster store's watch; kept in memory, not in the store).
    pub remote: Vec<crate::domain::model::RemoteEndpoint>,
    /// Where the search for a free overlay address starts (a planning
    /// input, not stored): 0, the lowest free address, as Docker hands
    /// them out; a random place when planning again after another host
    /// won the address, so that a host never chases the others' frontier.
    pub overlay_skip: u32,
}

impl State {
    pub fn network(&self, id_or_name: &str) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.id == id_or_name)
            .or_else(|| self.networks.iter().find(|n| n.name == id_or_name))
            .or_else(|| {
                let mut m = self.networks.iter().filter(|n| n.id.starts_with(id_or_name));
                match (m.next(), m.next()) {
                    (Some(n), None) if !id_or_name.is_empty() => Some(n),
                    _ => None,
                }
            })
    }
    pub fn sandbox(&self, id_or_name: &str) -> Option<&Sandbox> {
        let name = id_or_name.trim_start_matches('/');
        self.sandboxes
            .iter()
            .find(|s| s.id == name)
            .or_else(|| self.sandboxes.iter().find(|s| s.name == name))
            .or_else(|| {
                let mut m = self.sandboxes.iter().filter(|s| s.id.starts_with(name));
                match (m.next(), m.next()) {
                    (Some(s), None) if !name.is_empty() => Some(s),
                    _ => None,
                }
            })
    }
    /// Like [`State::network`], with Docker's "not found" error.
    pub fn require_network(&self, id_or_name: &str) -> Result<&Network> {
        self.network(id_or_name).ok_or_else(|| Error::NetworkNotFound(id_or_name.to_string()))
    }

    /// Like [`State::sandbox`], with Docker's "No such container" error.
    pub fn require_sandbox(&self, id_or_name: &str) -> Result<&Sandbox> {
        self.sandbox(id_or_name).ok_or_else(|| Error::SandboxNotFound(id_or_name.to_string()))
    }

    /// Endpoints of network `network_id` on the cluster's other hosts.
    pub fn remote_of_network<'a>(
        &'a self,
        network_id: &'a str,
    ) -> impl Iterator<Item = &'a crate::domain::model::RemoteEndpoint> {
        self.remote.iter().filter(move |e| e.network_id == network_id)
    }

    pub fn endpoints_of_network<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.network_id == network_id)
    }
    /// A sandbox's endpoints in interface order (eth0, eth1, …).
    pub fn endpoints_in_order<'a>(&'a self, sandbox_id: &'a str) -> Vec<&'a Endpoint> {
        let ifnum = |e: &Endpoint| e.ifname.trim_start_matches("eth").parse::<u32>().unwrap_or(u32::MAX);
        let mut eps: Vec<&Endpoint> = self.endpoints_of_sandbox(sandbox_id).collect();
        eps.sort_by_key(|e| ifnum(e));
        eps
    }

    /// The endpoint a sandbox's published ports lead to, as Docker's
    /// gateway endpoint: its first endpoint (eth0, eth1, …) on a bridge
    /// network that is not `--internal`. None: its ports are reserved but
    /// not reachable (and `port`/`inspect` show none).
    pub fn publishing_endpoint<'a>(&'a self, sandbox_id: &'a str) -> Option<&'a Endpoint> {
        self.endpoints_in_order(sandbox_id).into_iter().find(|e| {
            e.host_ifname.is_some()
                && self.networks.iter().any(|n| n.id == e.network_id && n.is_bridge() && !n.internal)
        })
    }

    pub fn endpoints_of_sandbox<'a>(&'a self, sandbox_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.sandbox_id == sandbox_id)
    }
}
