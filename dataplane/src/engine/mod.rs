//! The controller: every mutation of networks, sandboxes and endpoints. Each
//! one validates first, then changes the kernel, then commits one store
//! transaction; if any step fails, what was done is undone, so a failed
//! request leaves no interface, map entry or record behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::bpf::{Datapath, MetricRow};
use crate::error::Result;
use crate::ipam::IpamRequest;
use crate::model::*;
use crate::netlink::Netlink;
use crate::paths::Paths;
use crate::store::{State, Store};

mod endpoint;
mod lb;
mod network;
mod publish;
mod reconcile;
mod sandbox;

/// `network create` as requested.
#[derive(Clone, Debug, Default)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: String,
    pub ipam: IpamRequest,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

/// `create` / `run` as requested.
#[derive(Clone, Debug, Default)]
pub struct SandboxCreate {
    pub name: Option<String>,
    pub hostname: Option<String>,
    /// NET | host | none | container:NAME; empty means the default `bridge`.
    pub network: String,
    pub aliases: Vec<String>,
    pub ip: Option<String>,
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub expose: Vec<String>,
    pub cmd: Vec<String>,
    pub netns_path: Option<String>,
    pub auto_remove: bool,
    pub env: Vec<String>,
    pub user: Option<String>,
    /// `--log-opt KEY=VALUE` (max-size, max-file).
    pub log_opts: Vec<String>,
}

pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

pub const DEFAULT_BRIDGE_DEVICE: &str = "dp0";
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Engine {
    pub paths: Paths,
    pub uplink: Option<String>,
    store: Store,
    host: Netlink,
    dp: Mutex<Datapath>,
    /// Serialises mutations (one writer at a time, like the store).
    lock: tokio::sync::Mutex<()>,
    /// Exit codes of processes this daemon started, for `wait`.
    exits: Mutex<HashMap<String, watch::Sender<Option<i32>>>>,
    /// Sockets holding published host ports, per sandbox id, so that no
    /// process on the host can take them.
    reservations: Mutex<HashMap<String, Vec<std::os::fd::OwnedFd>>>,
    /// Conntrack entries removed by garbage collection since start.
    ct_expired: std::sync::atomic::AtomicU64,
    pub ct_timeouts: crate::conntrack::Timeouts,
    /// The embedded resolvers (127.0.0.11 in each sandbox).
    dns: crate::dns::Dns,
    /// The host's resolv.conf (upstream resolvers; copied to sandboxes on the default bridge).
    host_resolv_conf: std::path::PathBuf,
    /// Drop and policy events for `dataplane monitor`.
    monitor: Arc<crate::monitor::Monitor>,
    /// Output log limits of sandboxes that set none.
    log_defaults: crate::logs::LogLimits,
    /// Set when the daemon begins to stop: long streams (monitor) end cleanly.
    stopping: watch::Sender<bool>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn lock_dp(dp: &Mutex<Datapath>) -> std::sync::MutexGuard<'_, Datapath> {
    dp.lock().unwrap_or_else(|p| p.into_inner())
}

/// The daemon's settings the engine applies.
pub struct Settings {
    pub ct_timeouts: crate::conntrack::Timeouts,
    /// The host's resolv.conf (upstream resolvers; copied to sandboxes on the default bridge).
    pub host_resolv_conf: std::path::PathBuf,
    /// Output log limits of sandboxes that set none.
    pub log_defaults: crate::logs::LogLimits,
}

impl Engine {
    pub fn new(
        paths: Paths,
        uplink: Option<String>,
        store: Store,
        host: Netlink,
        dp: Datapath,
        settings: Settings,
    ) -> Arc<Self> {
        let Settings { ct_timeouts, host_resolv_conf, log_defaults } = settings;
        Arc::new_cyclic(|me: &std::sync::Weak<Engine>| {
            let me = me.clone();
            let state: crate::dns::StateFn =
                Arc::new(move || me.upgrade().and_then(|e| e.store.state().ok()));
            Engine {
                paths,
                uplink,
                store,
                host,
                dp: Mutex::new(dp),
                lock: tokio::sync::Mutex::new(()),
                exits: Mutex::new(HashMap::new()),
                reservations: Mutex::new(HashMap::new()),
                ct_expired: std::sync::atomic::AtomicU64::new(0),
                ct_timeouts,
                dns: crate::dns::Dns::new(state, host_resolv_conf.clone()),
                host_resolv_conf,
                monitor: crate::monitor::Monitor::new(),
                log_defaults,
                stopping: watch::channel(false).0,
            }
        })
    }

    /// Whether a sandbox gets the embedded resolver: it has its own
    /// namespace and an endpoint on a user-defined network.
    fn wants_dns(state: &State, sb: &Sandbox) -> bool {
        sb.mode == NetworkMode::Networks
            && state
                .endpoints_of_sandbox(&sb.id)
                .any(|ep| state.networks.iter().any(|n| n.id == ep.network_id && !n.predefined))
    }

    /// Starts the sandbox's resolver if it should have one; a failure is a
    /// warning (the sandbox works, without names).
    fn serve_dns(&self, state: &State, sb: &Sandbox) -> Option<String> {
        if !Self::wants_dns(state, sb) {
            return None;
        }
        let res = self.dns.attach(&sb.id, std::path::Path::new(&sb.netns)).and_then(|l| {
            lock_dp(&self.dp).set_dns(l.netns_cookie, l.udp_port, l.tcp_port).inspect_err(|_| {
                self.dns.detach(&sb.id);
            })
        });
        res.err().map(|e| {
            tracing::warn!(sandbox = %sb.name, error = %e, "embedded DNS not available");
            format!("embedded DNS not available: {e}")
        })
    }

    /// Stops the sandbox's resolver and its socket-hook redirect.
    fn stop_dns(&self, sandbox_id: &str) {
        if let Some(l) = self.dns.detach(sandbox_id) {
            lock_dp(&self.dp).remove_dns(l.netns_cookie);
        }
    }

    pub fn state(&self) -> Result<State> {
        self.store.state()
    }

    /// Starts the task reading the datapath's drop events.
    pub fn start_monitor(&self) -> Result<()> {
        let ring = lock_dp(&self.dp).take_events()?;
        lock_dp(&self.dp).set_monitor(false)?;
        self.monitor
            .spawn_reader(ring)
            .map_err(|e| crate::error::Error::io("watch", "the event ring buffer", e))
    }

    /// A monitor client: events flow (and the datapath reports them) while it lives.
    pub fn monitor_subscribe(self: &Arc<Self>) -> crate::monitor::Subscription {
        let me = Arc::downgrade(self);
        self.monitor.subscribe(Arc::new(move |on| {
            if let Some(e) = me.upgrade()
                && let Err(err) = lock_dp(&e.dp).set_monitor(on)
            {
                tracing::warn!(error = %err, on, "cannot switch drop events");
            }
        }))
    }

    /// The daemon is stopping: streams end with a last word instead of a cut.
    pub fn begin_stopping(&self) {
        self.stopping.send_replace(true);
    }

    /// Becomes true when the daemon begins to stop.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Events the datapath's per-CPU budget suppressed.
    pub fn events_suppressed(&self) -> Result<u64> {
        lock_dp(&self.dp).events_suppressed()
    }

    pub fn metrics(&self) -> Result<Vec<MetricRow>> {
        lock_dp(&self.dp).metrics()
    }

    /// Removes flows idle past their timeout; returns how many entries went.
    pub fn ct_gc(&self) -> Result<usize> {
        let mut dp = lock_dp(&self.dp);
        let now = crate::conntrack::now_ns();
        let doomed = crate::conntrack::expired(&dp.ct_entries()?, now, &self.ct_timeouts);
        // The walk took a while: a client may have reused a tuple since
        // (TIME_WAIT reuse), so each entry is checked again, with its
        // partner, right before it goes.
        let timeouts = self.ct_timeouts;
        let removed = dp.ct_remove_if(&doomed, |k, e, p| {
            crate::conntrack::idle(k, e, p, crate::conntrack::now_ns(), &timeouts)
        })?;
        self.ct_expired.fetch_add(removed as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    }

    pub fn ct_rows(&self) -> Result<Vec<crate::conntrack::CtRow>> {
        let now = crate::conntrack::now_ns();
        let entries = lock_dp(&self.dp).ct_entries()?;
        let index: HashMap<dataplane_common::CtKey, &dataplane_common::CtEntry> =
            entries.iter().map(|(k, e)| (*k, e)).collect();
        let mut rows: Vec<_> = entries
            .iter()
            .map(|(k, e)| {
                let p = index.get(&crate::conntrack::partner(k, e)).copied();
                crate::conntrack::row(k, e, p, now)
            })
            .collect();
        rows.sort_by(|a, b| {
            (&a.proto, &a.source, &a.destination).cmp(&(&b.proto, &b.source, &b.destination))
        });
        Ok(rows)
    }

    pub fn ct_flush(&self) -> Result<usize> {
        lock_dp(&self.dp).ct_flush()
    }

    /// Conntrack pressure: entries, capacity, expired since start.
    pub fn ct_summary(&self) -> Result<crate::api::types::CtSummary> {
        Ok(crate::api::types::CtSummary {
            entries: lock_dp(&self.dp).ct_entries()?.len() as u64,
            capacity: dataplane_common::MAX_CT as u64,
            expired: self.ct_expired.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}
