//! Start-up reconciliation of the kernel to the store, in three steps:
//! observe what the kernel has (`observe`), plan the difference from the
//! store (`plan_reconcile`, pure: what to re-pin, recreate, re-plug and
//! remove), apply it (`reconcile`), every step tried and its failure logged.
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::Ipv4Network;

use super::*;
use crate::datapath::programs::{CGROUP_LINK_PREFIX, DNS_LINK_PREFIX, XDP_LINK_PREFIX, pin_name};
use crate::domain::names;
use crate::domain::state::State;
use crate::drivers;
use crate::error::Result;
use crate::sys::netlink::{LinkInfo, Netlink, OWNER_ALIAS};
use crate::sys::netns;
use crate::sys::process;

/// A sandbox's namespace as found.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct NetnsSeen {
    /// Its file is a mounted namespace.
    pub pinned: bool,
    /// Its recorded process, if that still runs.
    pub live_pid: Option<u32>,
}

/// What the kernel has, as far as the store's records go.
#[derive(Clone, Debug, Default)]
pub(super) struct Observed {
    /// By sandbox id (sandboxes owning their namespace).
    pub netns: HashMap<String, NetnsSeen>,
    /// By endpoint id: the host-side interface's index (bridge), or 0 when
    /// the sandbox-side interface is there (macvlan). Absent: missing.
    pub endpoints: HashMap<String, u32>,
    /// The daemon namespace's interfaces.
    pub links: Vec<LinkInfo>,
    /// Link pins of the veth programs (by pin name).
    pub pins: Vec<String>,
    /// Datapath entries: endpoints by ifindex, local addresses, subnets.
    pub entry_indexes: Vec<u32>,
    pub local_entries: Vec<(IpAddr, u32)>,
    pub subnets: Vec<Ipv4Network>,
}

/// What to do with a sandbox namespace that is not where the record says.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum NetnsFix {
    /// The mount went (an earlier daemon in a private mount namespace) but
    /// the process still holds it: pin it again from the process.
    Repin { pid: u32 },
    /// Lost: make an empty one (its endpoints are made anew).
    Recreate,
}

/// What to do with one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum EndpointFix {
    /// Present (host-side index, 0 for macvlan): re-plugged into its
    /// bridge (which may be new) and programmed.
    Keep { index: u32 },
    /// Missing, or leading into a lost namespace: made anew, after the
    /// stale host interface (if any) is deleted.
    Recreate { stale_index: Option<u32> },
    /// A runtime's endpoint whose interfaces are gone: only the runtime can
    /// make them again (its container restarted); reported.
    Gone,
}

/// The difference between the store and the kernel, as steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ReconcilePlan {
    pub netns: Vec<(String, NetnsFix)>,
    pub endpoints: Vec<(String, EndpointFix)>,
    /// Interfaces we made that no record knows (index, name).
    pub delete_links: Vec<(u32, String)>,
    /// Veth program link pins of interfaces no record knows.
    pub detach_pins: Vec<String>,
    pub stale_entries: Vec<u32>,
    pub stale_locals: Vec<IpAddr>,
    pub stale_subnets: Vec<Ipv4Network>,
}

/// Plans the reconciliation from the store and the observation. Pure.
pub(super) fn plan_reconcile(state: &State, seen: &Observed, uplink: Option<&str>) -> ReconcilePlan {
    let mut plan = ReconcilePlan::default();
    let mut known_ifs: HashSet<&str> = HashSet::new();
    let mut subnets = HashSet::new();
    for net in state.networks.iter().filter(|n| n.is_bridge()) {
        if let Some(ipam) = &net.ipam {
            subnets.insert(ipam.subnet);
        }
        if let Some(dev) = &net.device {
            known_ifs.insert(dev);
        }
    }
    known_ifs.extend(uplink);
    // The overlay's VXLAN device keeps its program across restarts.
    known_ifs.insert(super::VXLAN_DEVICE);
    let mut kept = HashSet::new();
    // Addresses whose local entry the apply writes anew (keyed by address).
    let mut programmed = HashSet::new();
    for sb in &state.sandboxes {
        let ns = seen.netns.get(&sb.id).cloned().unwrap_or(NetnsSeen { pinned: true, live_pid: None });
        let recreated = sb.owns_netns && !ns.pinned && ns.live_pid.is_none();
        if sb.owns_netns && !ns.pinned {
            let fix = match ns.live_pid {
                Some(pid) => NetnsFix::Repin { pid },
                None => NetnsFix::Recreate,
            };
            plan.netns.push((sb.id.clone(), fix));
        }
        for ep in state.endpoints_of_sandbox(&sb.id) {
            if !state.networks.iter().any(|n| n.id == ep.network_id) {
                continue;
            }
            known_ifs.extend(ep.host_ifname.as_deref());
            if ep.host_ifname.is_some() {
                programmed.insert(IpAddr::V4(ep.ip));
                programmed.extend(ep.ip6.map(IpAddr::V6));
            }
            let present = seen.endpoints.get(&ep.id).copied();
            let fix = match present {
                // A recreated namespace is empty: a host veth still there leads
                // into the old one (kept alive elsewhere), so it is made anew.
                Some(i) if recreated && ep.host_ifname.is_some() => {
                    EndpointFix::Recreate { stale_index: Some(i) }
                }
                Some(i) => {
                    if ep.host_ifname.is_some() {
                        kept.insert(i);
                    }
                    EndpointFix::Keep { index: i }
                }
                // A runtime's container side is the runtime's to make.
                None if sb.owner.is_some() => EndpointFix::Gone,
                None => EndpointFix::Recreate { stale_index: None },
            };
            plan.endpoints.push((ep.id.clone(), fix));
        }
    }
    for link in &seen.links {
        let prefixed = names::OWNED_PREFIXES.iter().any(|p| link.name.starts_with(p));
        // A pair whose sandbox end was never moved (a create killed right
        // after making it, maybe before its host end was marked).
        let half_made = link.name.starts_with(names::TEMP_PEER_PREFIX);
        if half_made || (prefixed && link.alias == OWNER_ALIAS && !known_ifs.contains(link.name.as_str())) {
            plan.delete_links.push((link.index, link.name.clone()));
        }
    }
    let known_pins: HashSet<String> = known_ifs.iter().map(|k| pin_name(k)).collect();
    plan.detach_pins = seen
        .pins
        .iter()
        // (The uplink's XDP link comes and goes with --xdp, at its attach.)
        .filter(|p| {
            // (A sandbox namespace's `lo` link goes with its resolver, below.)
            !known_pins.contains(*p)
                && !p.starts_with(CGROUP_LINK_PREFIX)
                && !p.starts_with(XDP_LINK_PREFIX)
                && !p.starts_with(DNS_LINK_PREFIX)
        })
        .cloned()
        .collect();
    // Entries of recreated endpoints get new indexes: only kept ones stay.
    plan.stale_entries = seen.entry_indexes.iter().copied().filter(|i| !kept.contains(i)).collect();
    plan.stale_locals = seen
        .local_entries
        .iter()
        .filter(|(ip, i)| !kept.contains(i) && !programmed.contains(ip))
        .map(|(ip, _)| *ip)
        .collect();
    plan.stale_subnets = seen.subnets.iter().copied().filter(|s| !subnets.contains(s)).collect();
    plan
}

impl Engine {
    /// Reads what reconcile compares with the store.
    async fn observe(&self, state: &State) -> Result<Observed> {
        // The host's links, read once: host-side interfaces are found here
        // by name (no netlink request per endpoint).
        let mut seen = Observed { links: self.host.links().await?, ..Observed::default() };
        let host_index: HashMap<&str, u32> = seen.links.iter().map(|l| (l.name.as_str(), l.index)).collect();
        for sb in state.sandboxes.iter().filter(|s| s.owns_netns) {
            let live_pid = sb.pid.filter(|p| process::alive(*p, sb.pid_start));
            seen.netns.insert(
                sb.id.clone(),
                NetnsSeen { pinned: netns::is_pinned(Path::new(&sb.netns)), live_pid },
            );
        }
        for sb in &state.sandboxes {
            // Where the sandbox's interfaces can be seen now (none if its namespace is lost).
            let ns_path = match seen.netns.get(&sb.id) {
                None => Some(PathBuf::from(&sb.netns)),
                Some(NetnsSeen { pinned: true, .. }) => Some(PathBuf::from(&sb.netns)),
                Some(NetnsSeen { live_pid: Some(pid), .. }) => {
                    Some(PathBuf::from(format!("/proc/{pid}/ns/net")))
                }
                Some(_) => None,
            };
            for ep in state.endpoints_of_sandbox(&sb.id) {
                let present = match (&ep.host_ifname, &ns_path) {
                    (Some(h), _) => host_index.get(h.as_str()).copied(),
                    (None, Some(p)) => match Netlink::in_netns(p) {
                        Ok(nl) => nl.link_index(&ep.ifname).await?.map(|_| 0),
                        Err(_) => None,
                    },
                    (None, None) => None,
                };
                if let Some(i) = present {
                    seen.endpoints.insert(ep.id.clone(), i);
                }
            }
        }
        seen.pins = self.dp.programs.pinned_links();
        seen.entry_indexes = self.dp.endpoints.indexes();
        seen.local_entries = self.dp.endpoints.local_entries();
        seen.subnets = self.dp.endpoints.subnets();
        Ok(seen)
    }

    /// Makes the kernel match the store: bridges, addresses, namespaces,
    /// veths, BPF entries and links; removes our interfaces the store does
    /// not know. Reports (and keeps going past) individual failures.
    /// Returns how many pinned links were moved to this start's programs.
    pub async fn reconcile(&self) -> Result<u64> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        netns::pin_current(&self.paths.host_netns_file())?;
        // Pinned links of the previous start run this start's programs from now on.
        let moved = match self.dp.programs.adopt_pinned_links() {
            Ok(0) => 0,
            Ok(n) => {
                tracing::info!(links = n, "pinned links now run this start's programs");
                n as u64
            }
            Err(e) => {
                tracing::warn!(error = %e, "updating pinned links");
                0
            }
        };
        let seen = self.observe(&state).await?;
        let plan = plan_reconcile(&state, &seen, self.uplink.as_deref());
        for net in &state.networks {
            if let Err(e) = drivers::create_network(&self.host, net).await {
                tracing::warn!(network = %net.name, error = %e, "reconcile network");
            }
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                self.dp.endpoints.set_subnet(ipam.subnet, net.num, ipam.gateway, net.datapath_flags())?;
            }
            if let (true, Some(ipam6)) = (net.is_bridge(), &net.ipam6) {
                if let Err(e) = super::network::enable_ipv6_forwarding() {
                    tracing::warn!(network = %net.name, error = %e, "reconcile network");
                }
                self.dp.endpoints.set_subnet6(ipam6.subnet, net.num, ipam6.gateway, net.datapath_flags6())?;
            }
        }
        for (id, fix) in &plan.netns {
            let Some(sb) = state.sandbox(id) else { continue };
            let path = PathBuf::from(&sb.netns);
            match fix {
                NetnsFix::Repin { pid } => {
                    tracing::info!(sandbox = %sb.name, "re-pinning the namespace of the running process");
                    netns::pin_from(&path, &PathBuf::from(format!("/proc/{pid}/ns/net")))?;
                }
                NetnsFix::Recreate => {
                    tracing::warn!(sandbox = %sb.name, "network namespace was lost; recreating it");
                    netns::create(&path)?;
                    let nl = Netlink::in_netns(&path)?;
                    let lo = nl.require_index("lo").await?;
                    nl.set_up(lo).await?;
                }
            }
        }
        // Each host-side interface's bridge now, by index.
        let masters: HashMap<u32, Option<u32>> = seen.links.iter().map(|l| (l.index, l.master)).collect();
        for (id, fix) in &plan.endpoints {
            let Some(ep) = state.endpoints.iter().find(|e| &e.id == id) else { continue };
            let (Some(net), Some(sb)) =
                (state.networks.iter().find(|n| n.id == ep.network_id), state.sandbox(&ep.sandbox_id))
            else {
                continue;
            };
            if let Err(e) = self.fix_endpoint(net, sb, ep, fix, &masters).await {
                tracing::warn!(sandbox = %sb.name, network = %net.name, error = %e, "reconcile endpoint");
            }
        }
        self.remove_orphan_files(&state);
        for (index, name) in &plan.delete_links {
            tracing::info!(interface = %name, "removing interface unknown to the store");
            let _ = self.host.delete(*index).await;
        }
        // Resolvers listen where the redirects left by the last run point.
        let earlier = std::sync::Arc::new(self.dp.dns.entries());
        for sb in &state.sandboxes {
            self.serve_dns_at(&state, sb, &earlier);
        }
        let served = self.dns.cookies();
        for c in self.dp.dns.cookies() {
            if !served.contains(&c)
                && let Err(e) = self.dp.dns.remove(c)
            {
                tracing::warn!(error = %e, "reconcile resolver redirects");
            }
        }
        // Names answered in the kernel: only in namespaces served now.
        for c in self.dp.programs.dns_lo_cookies() {
            if !served.contains(&c) {
                self.detach_dns_lo(c);
            }
        }
        match self.sync_kernel_dns(&state) {
            Ok(crate::datapath::dns::Synced { written: 0, removed: 0 }) => {}
            Ok(s) => tracing::info!(written = s.written, removed = s.removed, "kernel DNS names put right"),
            Err(e) => tracing::warn!(error = %e, "reconcile kernel DNS names"),
        }
        self.reconcile_publications(&state).await?;
        // Firewall rules are in force before the API answers.
        match self.sync_firewall(&state) {
            Ok((0, 0)) => {}
            Ok((written, removed)) => {
                tracing::info!(written, removed, "firewall rules put back in the datapath")
            }
            Err(e) => tracing::warn!(error = %e, "reconcile firewall rules"),
        }
        self.sync_lb().await;
        self.program_config().await?;
        self.dp.programs.attach_socket_hooks(&self.paths.cgroup)?;
        self.refresh_host_ips(&state).await?;
        let mut errors = Vec::new();
        for name in &plan.detach_pins {
            errors.extend(self.dp.programs.detach_veth(name).err());
        }
        let eps = &self.dp.endpoints;
        for idx in &plan.stale_entries {
            errors.extend(eps.remove(*idx).err());
        }
        for ip in &plan.stale_locals {
            errors.extend(eps.remove_local(*ip).err());
        }
        for s in &plan.stale_subnets {
            errors.extend(eps.remove_subnet(*s).err());
        }
        let subnets6: std::collections::HashSet<_> = state
            .networks
            .iter()
            .filter(|n| n.is_bridge())
            .filter_map(|n| n.ipam6.as_ref().map(|i| i.subnet))
            .collect();
        for s in eps.subnets6().into_iter().filter(|s| !subnets6.contains(s)) {
            errors.extend(eps.remove_subnet6(s).err());
        }
        for e in errors {
            tracing::warn!(error = %e, "reconcile: removing stale datapath state");
        }
        self.retire_stale_links().await?;
        Ok(moved)
    }

    /// Applies one endpoint's step of the plan.
    async fn fix_endpoint(
        &self,
        net: &Network,
        sb: &Sandbox,
        ep: &Endpoint,
        fix: &EndpointFix,
        masters: &HashMap<u32, Option<u32>>,
    ) -> Result<()> {
        let path = Path::new(&sb.netns);
        let index = match fix {
            EndpointFix::Keep { index } => {
                // A recreated bridge has lost its ports: plug the veth back in.
                if let (Some(_), true, Some(dev)) = (&ep.host_ifname, net.is_bridge(), &net.device)
                    && let Some(br) = self.host.link_index(dev).await?
                    && masters.get(index).copied().flatten() != Some(br)
                {
                    self.host.set_master(*index, br).await?;
                }
                *index
            }
            EndpointFix::Gone => {
                tracing::warn!(sandbox = %sb.name, network = %net.name, "a container endpoint's interface is gone; restart the container in its runtime");
                return Ok(());
            }
            EndpointFix::Recreate { stale_index } => {
                if let Some(i) = stale_index {
                    let _ = self.host.delete(*i).await;
                } else {
                    tracing::warn!(sandbox = %sb.name, network = %net.name, "endpoint interface missing; recreating it");
                }
                if let Ok(nl) = Netlink::in_netns(path) {
                    let _ = nl.delete_by_name(&ep.ifname).await;
                }
                if let Some(h) = &ep.host_ifname
                    && let Err(e) = self.dp.programs.detach_veth(h)
                {
                    tracing::warn!(interface = %h, error = %e, "reconcile: dropping a dead link pin");
                }
                let first = ep.ifname == "eth0";
                drivers::attach(&self.host, net, ep, path, first).await?
            }
        };
        if ep.host_ifname.is_some() {
            self.program_endpoint(net, ep, index)?;
        }
        Ok(())
    }

    /// Namespace files and sandbox directories no record owns: what a
    /// create interrupted before its commit (kill -9) left behind.
    fn remove_orphan_files(&self, state: &State) {
        let owned: HashSet<PathBuf> = state.sandboxes.iter().map(|s| PathBuf::from(&s.netns)).collect();
        if let Ok(dir) = std::fs::read_dir(self.paths.netns_dir()) {
            for e in dir.flatten() {
                let path = e.path();
                if path == self.paths.host_netns_file() || owned.contains(&path) {
                    continue;
                }
                match netns::remove(&path) {
                    Ok(()) => {
                        tracing::warn!(file = %path.display(), "removed a namespace file no sandbox owns")
                    }
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove an orphan namespace file")
                    }
                }
            }
        }
        let ids: HashSet<&str> = state.sandboxes.iter().map(|s| s.id.as_str()).collect();
        if let Ok(dir) = std::fs::read_dir(self.paths.state_dir.join("sandboxes")) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if ids.contains(name.as_str()) {
                    continue;
                }
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => {
                        tracing::warn!(dir = %e.path().display(), "removed a sandbox directory no sandbox owns")
                    }
                    Err(err) => {
                        tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove an orphan sandbox directory")
                    }
                }
            }
        }
    }

    /// Detaches what an earlier generation of this daemon left attached
    /// where this start cannot see its pins, and says so in the log.
    async fn retire_stale_links(&self) -> Result<()> {
        let (interfaces, cookie) = self.datapath_scope().await?;
        let retired = self.dp.programs.retire_stale_links(&interfaces, &self.paths.cgroup, cookie)?;
        for r in &retired {
            tracing::warn!(
                link = r.link_id,
                program = %r.program,
                program_id = r.program_id,
                on = %r.target,
                "detached a BPF link left by an earlier run of this daemon"
            );
        }
        if !retired.is_empty() {
            tracing::warn!(links = retired.len(), "earlier generations of the datapath removed");
        }
        Ok(())
    }

    /// Our programs as the kernel has them attached (for `stats`).
    pub async fn attachments(&self) -> Result<Vec<crate::datapath::Attachment>> {
        let (interfaces, cookie) = self.datapath_scope().await?;
        self.dp.programs.attachments(&interfaces, &self.paths.cgroup, cookie)
    }

    /// Where this daemon's programs may be attached: the interfaces of its
    /// namespace (ifindex, name), and the netns cookie its socket hooks serve.
    async fn datapath_scope(&self) -> Result<(Vec<(u32, String)>, u64)> {
        let interfaces = self.host.links().await?.into_iter().map(|l| (l.index, l.name)).collect();
        Ok((interfaces, crate::sys::netns::current_cookie()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::state_with;

    fn link(index: u32, name: &str, ours: bool) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            kind: "veth".into(),
            alias: if ours { OWNER_ALIAS.into() } else { String::new() },
            ..Default::default()
        }
    }

    #[test]
    fn what_the_store_does_not_know_is_planned_for_removal_and_nothing_else() {
        let st = state_with(&[('a', "eth0", "10.9.0.2")]);
        let seen = Observed {
            endpoints: HashMap::from([("ep-a-eth0".to_string(), 5)]),
            links: vec![
                link(2, "up0", false),
                link(3, "br-test", true),
                link(5, "vetha", true),
                link(9, "vethdead", true),
                link(10, "vethother", false),
                link(11, "dppabc", false),
            ],
            pins: vec!["veth_a".into(), "vetha".into(), "vethdead".into(), "cgroup_connect4".into()],
            entry_indexes: vec![5, 9],
            local_entries: vec![("10.9.0.2".parse().expect("ip"), 5), ("10.9.0.9".parse().expect("ip"), 9)],
            subnets: vec!["10.9.0.0/29".parse().expect("net"), "10.99.0.0/24".parse().expect("net")],
            ..Default::default()
        };
        let plan = plan_reconcile(&st, &seen, Some("up0"));
        assert_eq!(plan.netns, Vec::<(String, NetnsFix)>::new());
        assert_eq!(plan.endpoints, [("ep-a-eth0".to_string(), EndpointFix::Keep { index: 5 })]);
        // Ours and unknown, and a half-made pair; someone else's veth stays.
        assert_eq!(plan.delete_links, [(9, "vethdead".to_string()), (11, "dppabc".to_string())]);
        assert_eq!(plan.detach_pins, ["veth_a".to_string(), "vethdead".to_string()]);
        assert_eq!(plan.stale_entries, [9]);
        assert_eq!(plan.stale_locals, ["10.9.0.9".parse::<IpAddr>().expect("ip")]);
        assert_eq!(plan.stale_subnets, ["10.99.0.0/24".parse::<Ipv4Network>().expect("net")]);
    }

    #[test]
    fn lost_namespaces_and_missing_interfaces_are_planned_anew() {
        let mut st =
            state_with(&[('a', "eth0", "10.9.0.2"), ('b', "eth0", "10.9.0.3"), ('c', "eth0", "10.9.0.4")]);
        for sb in &mut st.sandboxes {
            sb.owns_netns = true;
        }
        let seen = Observed {
            netns: HashMap::from([
                // a: lost, its host veth still there (leading into the old namespace).
                ("a".repeat(64), NetnsSeen { pinned: false, live_pid: None }),
                // b: unmounted but its process holds it.
                ("b".repeat(64), NetnsSeen { pinned: false, live_pid: Some(4242) }),
                ("c".repeat(64), NetnsSeen { pinned: true, live_pid: None }),
            ]),
            // c's interface is missing.
            endpoints: HashMap::from([("ep-a-eth0".to_string(), 5), ("ep-b-eth0".to_string(), 6)]),
            entry_indexes: vec![5, 6],
            local_entries: vec![("10.9.0.2".parse().expect("ip"), 5), ("10.9.0.3".parse().expect("ip"), 6)],
            ..Default::default()
        };
        let plan = plan_reconcile(&st, &seen, None);
        assert_eq!(
            plan.netns,
            [("a".repeat(64), NetnsFix::Recreate), ("b".repeat(64), NetnsFix::Repin { pid: 4242 })]
        );
        assert_eq!(
            plan.endpoints,
            [
                ("ep-a-eth0".to_string(), EndpointFix::Recreate { stale_index: Some(5) }),
                ("ep-b-eth0".to_string(), EndpointFix::Keep { index: 6 }),
                ("ep-c-eth0".to_string(), EndpointFix::Recreate { stale_index: None }),
            ]
        );
        // a's old entry goes (its new interface gets a new one); its address
        // is written anew, so its local entry is not removed after.
        assert_eq!(plan.stale_entries, [5]);
        assert_eq!(plan.stale_locals, Vec::<IpAddr>::new());
        assert_eq!(plan.delete_links, Vec::<(u32, String)>::new());
    }
}
