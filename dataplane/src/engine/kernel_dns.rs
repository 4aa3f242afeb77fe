//! The kernel's copy of the resolver's A answers (see `datapath::dns::DnsNames`
//! and the BPF `dns_answer`): rebuilt from each published store snapshot
//! and written where it differs, so a sandbox's queries for the names
//! around it are answered without waking the daemon — and while it is
//! down. The daemon's resolver stays the authority for everything else.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use dataplane_common::{DnsNameKey, dns_wire_name};

use super::Engine;
use crate::datapath::dns::Synced;
use crate::domain::model::{Sandbox, live_in};
use crate::domain::state::State;
use crate::error::Result;

impl Engine {
    /// Puts the `lo` program in the namespace of a sandbox whose resolver
    /// listens there, with the networks whose names it answers (a failure
    /// leaves its queries to the daemon).
    pub(super) fn attach_dns_lo(&self, state: &State, sb: &Sandbox, cookie: u64) {
        let res = self
            .dp
            .programs
            .attach_dns_lo(std::path::Path::new(&sb.netns), cookie)
            .and_then(|()| self.dp.dns_names.set_nets(cookie, &dns_nets(state, &sb.id)));
        if let Err(e) = res {
            tracing::warn!(sandbox = %sb.name, error = %e, "names are answered by the daemon only");
        }
    }

    /// Takes the `lo` program and its networks off namespace `cookie`.
    pub(super) fn detach_dns_lo(&self, cookie: u64) {
        let res = self.dp.dns_names.remove_nets(cookie).and_then(|()| self.dp.programs.detach_dns_lo(cookie));
        if let Err(e) = res {
            tracing::warn!(cookie, error = %e, "cannot take the DNS program off a namespace");
        }
    }

    /// Makes DP_DNS_NAMES and DP_DNS_NETS match `state`: the names of each
    /// user-defined network (liveness as the store has it: the store learns
    /// of a process's exit at once), and the networks of each served sandbox.
    pub(super) fn sync_kernel_dns(&self, state: &State) -> Result<Synced> {
        let index = crate::dns::view::Index::new(state);
        let live = |sb: &Sandbox| live_in(sb, &sb.state);
        let mut want: HashMap<DnsNameKey, Vec<Ipv4Addr>> = HashMap::new();
        for (net, name, addrs) in crate::dns::view::kernel_names(state, &index, &live) {
            if let Some(wire) = dns_wire_name(&name) {
                want.insert(DnsNameKey { net, name: wire }, addrs);
            }
        }
        let done = self.dp.dns_names.sync(&want)?;
        let served = self.dns.served();
        for (id, cookie) in &served {
            self.dp.dns_names.set_nets(*cookie, &dns_nets(state, id))?;
        }
        for cookie in self.dp.dns_names.cookies() {
            if !served.iter().any(|(_, c)| *c == cookie) {
                self.dp.dns_names.remove_nets(cookie)?;
            }
        }
        Ok(done)
    }

    /// Follows the store: each published snapshot (the latest, when several
    /// came meanwhile) is copied to the kernel's names.
    pub fn start_kernel_dns_sync(self: &Arc<Self>) {
        let mut rx = self.store.view();
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let state = rx.borrow_and_update().clone();
                let Some(engine) = me.upgrade() else { return };
                // A few map writes at most (the table is diffed in memory).
                let res = engine.sync_kernel_dns(&state);
                match res {
                    Ok(Synced { written: 0, removed: 0 }) => {}
                    Ok(s) => tracing::debug!(written = s.written, removed = s.removed, "kernel DNS names"),
                    Err(e) => tracing::warn!(error = %e, "kernel DNS names; the daemon answers meanwhile"),
                }
                drop(engine);
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Numbers of the user-defined networks of sandbox `id` (whose names its
/// resolver answers).
fn dns_nets(state: &State, id: &str) -> Vec<u32> {
    state
        .endpoints_of_sandbox(id)
        .filter_map(|ep| state.networks.iter().find(|n| n.id == ep.network_id))
        .filter(|n| !n.predefined)
        .map(|n| n.num)
        .collect()
}
