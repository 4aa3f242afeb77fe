//! Start-up reconciliation of the kernel to the store.
use std::collections::HashSet;
use std::path::PathBuf;

use super::*;
use crate::domain::names;
use crate::drivers;
use crate::error::Result;
use crate::sys::netlink::Netlink;
use crate::sys::netns;
use crate::sys::process;

impl Engine {
    /// Makes the kernel match the store: bridges, addresses, namespaces,
    /// veths, BPF entries and links; removes our interfaces the store does
    /// not know. Reports (and keeps going past) individual failures.
    pub async fn reconcile(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        netns::pin_current(&self.paths.host_netns_file())?;
        // Pinned links of the previous start run this start's programs from now on.
        match self.dp.programs.adopt_pinned_links() {
            Ok(0) => {}
            Ok(n) => tracing::info!(links = n, "pinned links now run this start's programs"),
            Err(e) => tracing::warn!(error = %e, "updating pinned links"),
        }
        let mut known_ifs: HashSet<String> = HashSet::new();
        let mut subnets = HashSet::new();
        for net in &state.networks {
            if let Err(e) = drivers::create_network(&self.host, net).await {
                tracing::warn!(network = %net.name, error = %e, "reconcile network");
            }
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                subnets.insert(ipam.subnet);
                self.dp.endpoints.set_subnet(ipam.subnet, net.num, ipam.gateway, net.datapath_flags())?;
            }
            if let (true, Some(dev)) = (net.is_bridge(), &net.device) {
                known_ifs.insert(dev.clone());
            }
        }
        let mut live_indexes = HashSet::new();
        for sb in &state.sandboxes {
            let path = PathBuf::from(&sb.netns);
            let live_pid = sb.pid.filter(|p| process::alive(*p, sb.pid_start));
            if sb.owns_netns && !netns::is_pinned(&path) && live_pid.is_some() {
                // The mount holding it went away (e.g. the previous daemon ran in
                // a private mount namespace) but the process still holds it.
                let src = PathBuf::from(format!("/proc/{}/ns/net", live_pid.unwrap_or_default()));
                tracing::info!(sandbox = %sb.name, "re-pinning the namespace of the running process");
                netns::pin_from(&path, &src)?;
            }
            let recreated = sb.owns_netns && !netns::is_pinned(&path);
            if recreated {
                tracing::warn!(sandbox = %sb.name, "network namespace was lost; recreating it");
                netns::create(&path)?;
                let nl = Netlink::in_netns(&path)?;
                let lo = nl.require_index("lo").await?;
                nl.set_up(lo).await?;
            }
            let eps: Vec<&Endpoint> = state.endpoints_of_sandbox(&sb.id).collect();
            for ep in eps {
                let Some(net) = state.networks.iter().find(|n| n.id == ep.network_id) else {
                    continue;
                };
                if let Some(h) = &ep.host_ifname {
                    known_ifs.insert(h.clone());
                }
                let mut present = match &ep.host_ifname {
                    Some(h) => self.host.link_index(h).await?,
                    None => Netlink::in_netns(&path)?.link_index(&ep.ifname).await?.map(|_| 0),
                };
                // A recreated namespace is empty: a host veth still there leads
                // into the old one (kept alive elsewhere), so it is made anew.
                if recreated && let (Some(i), Some(_)) = (present, &ep.host_ifname) {
                    let _ = self.host.delete(i).await;
                    present = None;
                }
                let hidx = match present {
                    Some(i) => {
                        // A recreated bridge has lost its ports: plug the veth back in.
                        if let (true, Some(dev)) = (net.is_bridge(), &net.device)
                            && let Some(br) = self.host.link_index(dev).await?
                        {
                            self.host.set_master(i, br).await?;
                        }
                        i
                    }
                    None => {
                        tracing::warn!(sandbox = %sb.name, network = %net.name, "endpoint interface missing; recreating it");
                        if let Ok(nl) = Netlink::in_netns(&path) {
                            let _ = nl.delete_by_name(&ep.ifname).await;
                        }
                        if let Some(h) = &ep.host_ifname
                            && let Err(e) = self.dp.programs.detach_veth(h)
                        {
                            tracing::warn!(interface = %h, error = %e, "reconcile: dropping a dead link pin");
                        }
                        let first = ep.ifname == "eth0";
                        match drivers::attach(&self.host, net, ep, &path, first).await {
                            Ok(i) => i,
                            Err(e) => {
                                tracing::warn!(sandbox = %sb.name, error = %e, "recreate endpoint");
                                continue;
                            }
                        }
                    }
                };
                if ep.host_ifname.is_some() {
                    live_indexes.insert(hidx);
                    if let Err(e) = self.program_endpoint(net, ep, hidx) {
                        tracing::warn!(sandbox = %sb.name, error = %e, "program endpoint");
                    }
                }
            }
        }
        self.remove_orphan_files(&state);
        // Interfaces we made (our prefixes and our alias) that the store does not know.
        for link in self.host.links().await? {
            let prefixed = names::OWNED_PREFIXES.iter().any(|p| link.name.starts_with(p));
            // A pair whose sandbox end was never moved (a create killed
            // right after making it, maybe before its host end was marked).
            let half_made = link.name.starts_with(names::TEMP_PEER_PREFIX);
            if half_made
                || (prefixed
                    && link.alias == crate::sys::netlink::OWNER_ALIAS
                    && !known_ifs.contains(&link.name))
            {
                tracing::info!(interface = %link.name, "removing interface unknown to the store");
                let _ = self.host.delete(link.index).await;
            }
        }
        for sb in &state.sandboxes {
            self.serve_dns(&state, sb);
        }
        let served = self.dns.cookies();
        for c in self.dp.dns.cookies() {
            if !served.contains(&c)
                && let Err(e) = self.dp.dns.remove(c)
            {
                tracing::warn!(error = %e, "reconcile resolver redirects");
            }
        }
        self.reconcile_publications(&state).await?;
        self.sync_lb().await;
        if let Some(up) = &self.uplink {
            known_ifs.insert(up.clone());
        }
        self.program_config().await?;
        self.dp.programs.attach_socket_hooks(&self.paths.cgroup)?;
        self.refresh_host_ips(&state).await?;
        let mut errors = Vec::new();
        for name in self.dp.programs.pinned_links() {
            let known = known_ifs.iter().any(|k| crate::datapath::programs::pin_name(k) == name);
            if !known && !name.starts_with(crate::datapath::programs::CGROUP_LINK_PREFIX) {
                errors.extend(self.dp.programs.detach_veth(&name).err());
            }
        }
        let eps = &self.dp.endpoints;
        for idx in eps.indexes().into_iter().filter(|i| !live_indexes.contains(i)) {
            errors.extend(eps.remove(idx).err());
        }
        for (ip, _) in eps.local_entries().into_iter().filter(|(_, i)| !live_indexes.contains(i)) {
            errors.extend(eps.remove_local(ip).err());
        }
        for s in eps.subnets().into_iter().filter(|s| !subnets.contains(s)) {
            errors.extend(eps.remove_subnet(s).err());
        }
        for e in errors {
            tracing::warn!(error = %e, "reconcile: removing stale datapath state");
        }
        self.retire_stale_links().await
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
