//! CNI attachments (`dataplane-cni`, spoken by `api/cni.rs`): a runtime's
//! container is one sandbox record owned by the runtime (its ID the
//! container's when that is a 64-hex ID, and `runtime_id` always), in the
//! runtime's namespace (adopted: never made or deleted by us), with one
//! endpoint per attachment `(container ID, CNI_IFNAME)`. ADD plans it as
//! `create --netns` does (ports, address, MAC, aliases) and applies it
//! with one undo; DEL, CHECK and GC find it by the attachment.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use super::endpoint::{plan_endpoint, teardown_warnings};
use super::publish::PortLimits;
use super::sandbox::{SandboxContext, plan_sandbox};
use super::*;
use crate::domain::names;
use crate::domain::state::State;
use crate::error::{Error, Result};
use crate::sys::netlink::Netlink;
use crate::sys::netns;

/// A CNI ADD, typed at the API edge.
#[derive(Clone, Debug, Default)]
pub struct CniAttach {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// The dataplane network (the configuration's `network`).
    pub network: String,
    /// The container's name (`K8S_POD_NAME`, which Podman sets): the
    /// sandbox's name when it is free, so `ps` and DNS show it.
    pub name: Option<String>,
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address asked for (`ips`), on a dual-stack network.
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: Option<[u8; 6]>,
    pub ports: Vec<PortSpec>,
    pub aliases: Vec<String>,
}

/// An attachment as the ADD result describes it.
#[derive(Clone, Debug)]
pub struct CniAttached {
    pub network: Network,
    pub sandbox: Sandbox,
    pub endpoint: Endpoint,
    /// The endpoint holds the sandbox's default route (via the gateway).
    pub default_route: bool,
    /// The endpoint holds the sandbox's IPv6 default route: its first
    /// dual-stack attachment outside `--internal` networks.
    pub default_route6: bool,
    /// The sandbox has the embedded resolver (127.0.0.11).
    pub dns: bool,
}

/// The sandbox of the runtime's container `container_id`.
fn cni_sandbox<'a>(state: &'a State, container_id: &str) -> Option<&'a Sandbox> {
    state
        .sandboxes
        .iter()
        .find(|s| s.owner == Some(Owner::Cni) && s.runtime_id.as_deref() == Some(container_id))
}

/// The sandbox's name: the runtime's container name when valid and free,
/// else `cni-` and the container ID's first 12 characters.
fn sandbox_name(state: &State, a: &CniAttach) -> String {
    let free = |n: &str| names::check_name(n).is_ok() && state.sandbox(n).is_none();
    let short = format!("cni-{}", &a.container_id[..a.container_id.len().min(12)]);
    match a.name.as_deref() {
        Some(n) if free(n) => n.to_string(),
        _ if free(&short) => short,
        _ => format!("cni-{}", a.container_id),
    }
}

impl Engine {
    fn cni_attached(state: &State, sb: &Sandbox, ep: &Endpoint) -> Result<CniAttached> {
        let network = state
            .networks
            .iter()
            .find(|n| n.id == ep.network_id)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("endpoint {} has no network", ep.id)))?;
        let default_route = !network.internal
            && state
                .endpoints_in_order(&sb.id)
                .iter()
                .find(|e| state.networks.iter().any(|n| n.id == e.network_id && !n.internal))
                .is_some_and(|e| e.id == ep.id);
        let default_route6 = !network.internal
            && state
                .endpoints_in_order(&sb.id)
                .iter()
                .filter(|e| e.ip6.is_some())
                .find(|e| state.networks.iter().any(|n| n.id == e.network_id && !n.internal))
                .is_some_and(|e| e.id == ep.id);
        Ok(CniAttached {
            default_route6,
            dns: Self::wants_dns(state, sb),
            network,
            sandbox: sb.clone(),
            endpoint: ep.clone(),
            default_route,
        })
    }

    /// ADD: the attachment made (or, asked again, the one made before).
    pub async fn cni_add(&self, a: CniAttach) -> Result<CniAttached> {
        let _g = self.lock.lock().await;
        super::overlay::planning_again_on_lost_claims(a.ip.is_some(), |skip| self.cni_add_locked(&a, skip))
            .await
    }

    async fn cni_add_locked(&self, a: &CniAttach, overlay_skip: u32) -> Result<CniAttached> {
        let state = State { overlay_skip, ..self.store.state()? };
        let net = state.require_network(&a.network)?.clone();
        if !net.has_endpoints() {
            return Err(Error::invalid(
                "network",
                &net.name,
                format!(
                    "driver {} has no endpoints: a CNI attachment needs a bridge, macvlan or overlay network",
                    net.driver
                ),
            ));
        }
        let ip = a.ip.map(|i| i.to_string());
        let ip6 = a.ip6.map(|i| i.to_string());
        // The container's record names another namespace: the runtime made
        // the container's namespace anew without a DEL (it crashed, or the
        // host rebooted). What that record holds is stale: it goes first.
        let state = match cni_sandbox(&state, &a.container_id) {
            Some(old) if old.netns != a.netns => {
                tracing::warn!(
                    container = %a.container_id, old = %old.netns, new = %a.netns,
                    "ADD in a new namespace without a DEL: the stale attachments go"
                );
                let failed = self.remove_sandbox_locked(&state, old).await?;
                for w in teardown_warnings(&old.name, failed) {
                    tracing::warn!("{w}");
                }
                State { overlay_skip, ..self.store.state()? }
            }
            _ => state,
        };
        if let Some(sb) = cni_sandbox(&state, &a.container_id) {
            if let Some(ep) = state.endpoints_of_sandbox(&sb.id).find(|e| e.ifname == a.ifname) {
                if ep.network_id == net.id {
                    return Self::cni_attached(&state, sb, ep);
                }
                return Err(Error::Conflict(format!(
                    "container {} already has interface {} (on another network)",
                    a.container_id, a.ifname
                )));
            }
            if !a.ports.is_empty() && a.ports != sb.ports {
                return Err(Error::Unsupported(format!(
                    "container {} publishes its ports through its first attachment; this one asks for other port mappings",
                    a.container_id
                )));
            }
            let mut plan = plan_endpoint(&state, &net, sb, ip.as_deref(), ip6.as_deref(), &a.aliases)?;
            plan.ep.ifname = a.ifname.clone();
            if let Some(m) = a.mac {
                plan.ep.mac = m;
            }
            self.plug_planned(&net, sb, &plan).await?;
            let state = self.store.state()?;
            self.serve_dns(&state, sb);
            self.sync_lb().await;
            tracing::info!(network = %net.name, sandbox = %sb.name, ip = %plan.ep.ip, "cni attachment added");
            return Self::cni_attached(&state, sb, &plan.ep);
        }
        let path = Path::new(&a.netns);
        if !netns::is_pinned(path) && !path.starts_with("/proc") {
            return Err(Error::invalid("CNI_NETNS", &a.netns, "not a network namespace file"));
        }
        let hex64 = a.container_id.len() == 64 && a.container_id.chars().all(|c| c.is_ascii_hexdigit());
        let id = if hex64 && state.sandbox(&a.container_id).is_none() {
            a.container_id.to_ascii_lowercase()
        } else {
            names::new_id()
        };
        let req = SandboxCreate {
            name: Some(sandbox_name(&state, a)),
            network: net.name.clone(),
            aliases: a.aliases.clone(),
            ip,
            ip6,
            publish: a.ports.clone(),
            netns_path: Some(a.netns.clone()),
            ..Default::default()
        };
        let cx = SandboxContext {
            own_netns: self.paths.netns_file(&id),
            host_netns: self.paths.host_netns_file(),
            host_name: None,
            log: None,
            // No socket of ours holds them: the open-file budget does not apply.
            ports: PortLimits { budget: None, ..PortLimits::of_host() },
            created: now(),
            id,
        };
        let mut plan = plan_sandbox(&state, &req, &cx)?;
        plan.sb.owner = Some(Owner::Cni);
        plan.sb.runtime_id = Some(a.container_id.clone());
        plan.sb.state = SandboxState::Running;
        // Podman holds its published ports in conmon; containerd and CRI-O
        // hold none (as with the portmap plugin).
        plan.ports.runtime_holds = true;
        if let Some(ep) = plan.endpoint.as_mut() {
            ep.ep.ifname = a.ifname.clone();
            if let Some(m) = a.mac {
                ep.ep.mac = m;
            }
        }
        for w in &plan.warnings {
            tracing::warn!(container = %a.container_id, "{w}");
        }
        self.apply_sandbox(&plan).await?;
        let state = self.store.state()?;
        self.serve_dns(&state, &plan.sb);
        self.sync_lb().await;
        let sb =
            state.sandbox(&plan.sb.id).ok_or_else(|| Error::Internal("the new sandbox is gone".into()))?;
        let ep = state
            .endpoints_of_sandbox(&sb.id)
            .find(|e| e.ifname == a.ifname)
            .ok_or_else(|| Error::Internal("the new endpoint is gone".into()))?;
        tracing::info!(network = %net.name, sandbox = %sb.name, ip = %ep.ip, "cni attachment added");
        Self::cni_attached(&state, sb, ep)
    }

    /// DEL: the attachment goes (its sandbox with its last one); nothing
    /// to do for one never made or already gone. Returns what could not
    /// be undone as warnings (logged; the next start retries).
    pub async fn cni_del(&self, container_id: &str, ifname: &str) -> Result<Vec<String>> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        self.cni_del_locked(&state, container_id, ifname).await
    }

    async fn cni_del_locked(&self, state: &State, container_id: &str, ifname: &str) -> Result<Vec<String>> {
        let Some(sb) = cni_sandbox(state, container_id) else { return Ok(Vec::new()) };
        let Some(ep) = state.endpoints_of_sandbox(&sb.id).find(|e| e.ifname == ifname) else {
            return Ok(Vec::new());
        };
        // A namespace already gone took the container's interfaces with it.
        let ns_gone = !Path::new(&sb.netns).exists();
        let mut failed = if state.endpoints_of_sandbox(&sb.id).count() == 1 {
            self.remove_sandbox_locked(state, sb).await?
        } else {
            let net = state
                .networks
                .iter()
                .find(|n| n.id == ep.network_id)
                .ok_or_else(|| Error::Internal(format!("endpoint {} has no network", ep.id)))?;
            self.unplug_attachment(net, sb, ep).await?
        };
        if ns_gone {
            failed.retain(|(_, e)| !matches!(e, Error::Sys { .. } | Error::Io { .. }));
        }
        tracing::info!(container = container_id, ifname, sandbox = %sb.name, "cni attachment deleted");
        Ok(teardown_warnings(&sb.name, failed))
    }

    /// CHECK: the attachment is as ADD made it — the sandbox's interface,
    /// address and default route, the host side and its BPF entries.
    pub async fn cni_check(&self, container_id: &str, ifname: &str, netns: &str) -> Result<()> {
        let state = self.store.state()?;
        let unknown =
            || Error::Conflict(format!("container {container_id} has no attachment with interface {ifname}"));
        let sb = cni_sandbox(&state, container_id).ok_or_else(unknown)?;
        let ep = state.endpoints_of_sandbox(&sb.id).find(|e| e.ifname == ifname).ok_or_else(unknown)?;
        let att = Self::cni_attached(&state, sb, ep)?;
        if sb.netns != netns {
            return Err(Error::Conflict(format!(
                "container {container_id} was attached in namespace {}, not {netns}",
                sb.netns
            )));
        }
        if !Path::new(netns).exists() {
            return Err(Error::Conflict(format!("the namespace {netns} is gone")));
        }
        let nl = Netlink::in_netns(Path::new(netns))?;
        let idx = nl.link_index(ifname).await?.ok_or_else(|| {
            Error::Conflict(format!("interface {ifname} is missing from namespace {netns}"))
        })?;
        if !nl.ipv4_addresses(idx).await?.contains(&ep.ip) {
            return Err(Error::Conflict(format!(
                "interface {ifname} in {netns} lacks its address {}",
                ep.ip
            )));
        }
        if att.default_route && nl.default_route_interface().await? != Some(idx) {
            return Err(Error::Conflict(format!(
                "namespace {netns} has no default route through {ifname} (via {})",
                att.network.ipam.as_ref().map(|i| i.gateway.to_string()).unwrap_or_default()
            )));
        }
        if let Some(host_if) = &ep.host_ifname {
            let hidx =
                self.host.link_index(host_if).await?.ok_or_else(|| {
                    Error::Conflict(format!("the host side {host_if} of {ifname} is missing"))
                })?;
            if self.dp.endpoints.entry_ip(hidx) != Some(ep.ip) {
                return Err(Error::Conflict(format!(
                    "the datapath has no endpoint entry for {host_if} ({})",
                    ep.ip
                )));
            }
            let pin = crate::datapath::programs::pin_name(host_if);
            if !self.dp.programs.pinned_links().contains(&pin) {
                return Err(Error::Conflict(format!("the BPF program is not attached to {host_if}")));
            }
        }
        Ok(())
    }

    /// STATUS: ready when the network exists and can have endpoints.
    pub fn cni_status(&self, network: &str) -> Result<()> {
        let state = self.store.state()?;
        let net = state.require_network(network)?;
        if !net.has_endpoints() {
            return Err(Error::invalid(
                "network",
                &net.name,
                format!("driver {} has no endpoints", net.driver),
            ));
        }
        Ok(())
    }

    /// GC: removes the attachments on `network` that are not in `valid`;
    /// returns the ones removed and the warnings of their teardown.
    pub async fn cni_gc(
        &self,
        network: &str,
        valid: &BTreeSet<(String, String)>,
    ) -> Result<(Vec<(String, String)>, Vec<String>)> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Ok(net) = state.require_network(network) else { return Ok(Default::default()) };
        let stale: Vec<(String, String)> = state
            .sandboxes
            .iter()
            .filter(|s| s.owner == Some(Owner::Cni))
            .flat_map(|s| {
                state
                    .endpoints_of_sandbox(&s.id)
                    .filter(|e| e.network_id == net.id)
                    .map(|e| (s.runtime_id.clone().unwrap_or_default(), e.ifname.clone()))
            })
            .filter(|a| !valid.contains(a))
            .collect();
        let mut warnings = Vec::new();
        for (cid, ifname) in &stale {
            let state = self.store.state()?;
            warnings.extend(self.cni_del_locked(&state, cid, ifname).await?);
        }
        if !stale.is_empty() {
            tracing::info!(network, removed = stale.len(), "cni garbage collected");
        }
        Ok((stale, warnings))
    }
}
