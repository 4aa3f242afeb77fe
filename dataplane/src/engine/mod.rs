//! The controller: every mutation of networks, sandboxes and endpoints. Each
//! one validates first, then changes the kernel, then commits one store
//! transaction; if any step fails, what was done is undone, so a failed
//! request leaves no interface, map entry or record behind.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::datapath::Datapath;
use crate::domain::ipam::IpamRequest;
use crate::domain::model::*;
use crate::error::Result;
use crate::store::{State, Store};
use crate::sys::netlink::Netlink;
use crate::sys::paths::Paths;

mod aliases;
mod cni;
mod docker;
mod endpoint;
mod firewall;
#[cfg(test)]
mod fixtures;
mod kernel_dns;
pub use aliases::{Vip, VipBackend};
pub use cni::{CniAttach, CniAttached};
pub use docker::{DockerNetwork, DockerPort, Joined};
pub use firewall::FirewallAdd;
mod network;
mod overlay;
mod publish;
mod reconcile;
mod sandbox;
mod undo;

pub use undo::Undo;

/// `network create` as requested, parsed at the API edge.
#[derive(Clone, Debug)]
pub struct NetworkCreate {
    pub name: String,
    pub driver: Driver,
    pub ipam: IpamRequest,
    /// `--ipv6` (Docker's `EnableIPv6`): a dual-stack network.
    pub ipv6: bool,
    /// The IPv6 `--subnet`, `--ip-range` and `--gateway`, if given.
    pub ipam6: crate::domain::ipam6::Ipam6Request,
    pub internal: bool,
    /// The `-o` options as given (inspect shows them)…
    pub options: BTreeMap<String, String>,
    /// …and as values ([`NetworkCreate::new`] parses them).
    pub driver_options: DriverOptions,
    pub labels: BTreeMap<String, String>,
    /// The runtime making it through its plugin, with its network ID.
    pub origin: Option<(Owner, String)>,
}

impl NetworkCreate {
    /// A request for network `name` with `driver` and `-o` `options`,
    /// refused here if the driver or an option is unknown or malformed.
    pub fn new(name: &str, driver: &str, options: BTreeMap<String, String>) -> Result<Self> {
        let driver = Driver::parse(driver)?;
        let driver_options = DriverOptions::parse(driver, &options)?;
        Ok(NetworkCreate {
            name: name.to_string(),
            driver,
            ipam: IpamRequest::default(),
            ipv6: false,
            ipam6: Default::default(),
            internal: false,
            options,
            driver_options,
            labels: BTreeMap::new(),
            origin: None,
        })
    }
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
    /// `--ip6`: the IPv6 address on a dual-stack network.
    pub ip6: Option<String>,
    /// `-p`, parsed at the API edge.
    pub publish: Vec<PortSpec>,
    pub publish_all: bool,
    /// `--expose`, one entry per port.
    pub expose: Vec<Exposed>,
    pub cmd: Vec<String>,
    pub netns_path: Option<String>,
    pub auto_remove: bool,
    pub env: Vec<String>,
    pub user: Option<String>,
    /// `--log-opt KEY=VALUE` (max-size, max-file).
    pub log_opts: Vec<String>,
    /// `--label KEY=VALUE`.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `-t`, `-i`.
    pub tty: bool,
    pub open_stdin: bool,
    /// `--dns`, `--dns-search`, `--dns-option`, `--add-host NAME:IP`,
    /// `--link NAME[:ALIAS]`, `--mac-address`, `-w`: as given.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    pub extra_hosts: Vec<String>,
    pub links: Vec<String>,
    pub mac: Option<String>,
    pub workdir: Option<String>,
    /// The client's terminal size (rows, columns) for `-t`.
    pub console_size: Option<(u16, u16)>,
}

pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

/// A removal done, with what its teardown could not undo.
pub struct Removed {
    pub id: String,
    pub warnings: Vec<String>,
}

pub const DEFAULT_BRIDGE_DEVICE: &str = "dp0";
/// The host's one VXLAN device (external mode) of every overlay network.
pub const VXLAN_DEVICE: &str = "dp-vxlan";
/// VXLAN's IANA port.
pub const VXLAN_PORT: u16 = dataplane_common::VXLAN_PORT;
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Engine {
    pub paths: Paths,
    pub uplink: Option<String>,
    store: Store,
    host: Netlink,
    /// The BPF datapath: each map family has its own owner (and lock).
    dp: Datapath,
    /// Serialises mutations (one writer at a time, like the store).
    lock: tokio::sync::Mutex<()>,
    /// Exit codes of processes this daemon started, for `wait`.
    exits: Mutex<HashMap<String, watch::Sender<Option<i32>>>>,
    /// Sockets holding published host ports, per sandbox id, so that no
    /// process on the host can take them.
    reservations: Mutex<HashMap<String, Vec<std::os::fd::OwnedFd>>>,
    /// The embedded resolvers (127.0.0.11 in each sandbox).
    dns: crate::dns::Dns,
    /// The host's resolv.conf (upstream resolvers; copied to sandboxes on the default bridge).
    host_resolv_conf: std::path::PathBuf,
    /// Drop and policy events for `dataplane monitor`.
    monitor: Arc<crate::datapath::events::Monitor>,
    /// Output log limits of sandboxes that set none.
    log_defaults: crate::sys::logs::LogLimits,
    /// Set when the daemon begins to stop: long streams (monitor) end cleanly.
    stopping: watch::Sender<bool>,
    cluster: Option<crate::cluster::Cluster>,
    /// The default bridge's IPv6 config asked for at start (None: IPv4 only).
    default_bridge6: Option<crate::domain::ipam6::Ipam6Request>,
    /// Prometheus series (`/metrics`).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// XDP on the uplink (`daemon --xdp`).
    xdp: bool,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// The daemon's settings the engine applies.
pub struct Settings {
    /// The host's resolv.conf (upstream resolvers; copied to sandboxes on the default bridge).
    pub host_resolv_conf: std::path::PathBuf,
    /// Output log limits of sandboxes that set none.
    pub log_defaults: crate::sys::logs::LogLimits,
    /// This host's membership of a cluster (`--cluster-store`), if any.
    pub cluster: Option<crate::cluster::Cluster>,
    /// The default bridge's IPv6 config (`daemon --ipv6 [--fixed-cidr-v6]`).
    pub default_bridge6: Option<crate::domain::ipam6::Ipam6Request>,
    /// Firewall denies dropped by XDP on the uplink too (`daemon --xdp`).
    pub xdp: bool,
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
        let Settings { host_resolv_conf, log_defaults, cluster, default_bridge6, xdp } = settings;
        let telemetry = crate::telemetry::Telemetry::new();
        let dns = crate::dns::Dns::new(store.view(), host_resolv_conf.clone(), telemetry.dns.clone());
        let engine = Arc::new(Engine {
            paths,
            uplink,
            store,
            host,
            dp,
            lock: tokio::sync::Mutex::new(()),
            exits: Mutex::new(HashMap::new()),
            reservations: Mutex::new(HashMap::new()),
            dns,
            host_resolv_conf,
            monitor: crate::datapath::events::Monitor::new(),
            log_defaults,
            cluster,
            default_bridge6,
            stopping: watch::channel(false).0,
            telemetry,
            xdp,
        });
        let me = Arc::downgrade(&engine);
        engine.telemetry.bind(move || me.upgrade().map(|e| e.scrape()));
        engine
    }

    /// What a Prometheus scrape reads: the datapath's counters and fill,
    /// and the store's networks and sandboxes (a part that cannot be read
    /// is left out, not faked).
    fn scrape(&self) -> crate::telemetry::Scrape {
        use dataplane_common::{DropReason, PROTO_TCP, PROTO_UDP};
        let verdicts = self.dp.metrics.read().unwrap_or_default();
        let packets = |r: DropReason| verdicts.iter().filter(|m| m.reason == r).map(|m| m.packets).sum();
        let proto = |p: u8| match p {
            PROTO_TCP => "tcp",
            PROTO_UDP => "udp",
            _ => "other",
        };
        let keys = self.dp.services.keys();
        // Every (family, protocol) row, zero included: a series that
        // appears only once a port is published cannot be graphed from 0.
        let mut published: Vec<(&'static str, &'static str, u64)> =
            vec![("ipv4", "tcp", 0), ("ipv4", "udp", 0), ("ipv6", "tcp", 0), ("ipv6", "udp", 0)];
        let mut add = |family: &'static str, p: &'static str| match published
            .iter_mut()
            .find(|r| r.0 == family && r.1 == p)
        {
            Some(r) => r.2 += 1,
            None => published.push((family, p, 1)),
        };
        keys.v4.iter().for_each(|k| add("ipv4", proto(k.proto)));
        keys.v6.iter().for_each(|k| add("ipv6", proto(k.proto)));
        let mut lb_flows: Vec<_> = self.dp.lb.stats().into_iter().map(|((v, b), n)| (v, b, n)).collect();
        lb_flows.sort();
        // The state the last commit published: a scrape reads no database.
        let state = self.store.published();
        let mut by_driver: std::collections::BTreeMap<String, u64> = Default::default();
        for n in &state.networks {
            *by_driver.entry(n.driver.to_string()).or_default() += 1;
        }
        let mut sandboxes = [("created", 0), ("running", 0), ("exited", 0)];
        for sb in &state.sandboxes {
            let i = match sb.effective_state() {
                SandboxState::Created => 0,
                SandboxState::Running => 1,
                SandboxState::Exited(_) => 2,
            };
            sandboxes[i].1 += 1;
        }
        let ct = self.dp.conntrack.pressure();
        crate::telemetry::Scrape {
            insert_failed: packets(DropReason::CtInsertFailed),
            port_exhausted: packets(DropReason::NatPortExhausted),
            verdicts: verdicts
                .iter()
                .map(|m| crate::telemetry::Verdict {
                    reason: m.reason.name(),
                    direction: m.direction.name(),
                    drop: !m.reason.is_pass(),
                    packets: m.packets,
                    bytes: m.bytes,
                })
                .collect(),
            conntrack: Some(crate::telemetry::CtFill {
                entries: ct.entries,
                capacity: ct.capacity,
                expired: ct.expired,
            }),
            published,
            lb_flows,
            networks: by_driver.into_iter().collect(),
            sandboxes: sandboxes.to_vec(),
            suppressed: self.dp.events.suppressed().unwrap_or(0),
        }
    }

    /// This host as its cluster knows it (None: not in a cluster).
    pub fn cluster_node(&self) -> Option<&crate::cluster::Node> {
        self.cluster.as_ref().map(|c| c.me())
    }

    /// The hosts of this daemon's cluster, and which one is this host.
    pub async fn nodes(&self) -> Result<(Vec<crate::cluster::Node>, String)> {
        let c = self.cluster.as_ref().ok_or_else(|| {
            crate::error::Error::Unsupported(
                "this daemon is not in a cluster: start it with --cluster-store etcd://IP:PORT --cluster-advertise IP"
                    .into(),
            )
        })?;
        Ok((c.nodes().await?, c.me().id.clone()))
    }

    /// Whether a sandbox gets the embedded resolver: it has its own
    /// namespace and an endpoint on a user-defined network.
    fn wants_dns(state: &State, sb: &Sandbox) -> bool {
        // Docker's containers have Docker's resolver (its own 127.0.0.11);
        // a CNI runtime's get ours, as the ADD result tells the runtime.
        sb.owner != Some(Owner::Docker)
            && sb.mode == NetworkMode::Networks
            && state
                .endpoints_of_sandbox(&sb.id)
                .any(|ep| state.networks.iter().any(|n| n.id == ep.network_id && !n.predefined))
    }

    /// Starts the sandbox's resolver if it should have one; a failure is a
    /// warning (the sandbox works, without names).
    fn serve_dns(&self, state: &State, sb: &Sandbox) -> Option<String> {
        self.serve_dns_at(state, sb, &Arc::default())
    }

    /// [`Self::serve_dns`], on the ports of `earlier` (namespace cookie →
    /// ports) where the sandbox had a resolver before.
    fn serve_dns_at(
        &self,
        state: &State,
        sb: &Sandbox,
        earlier: &Arc<std::collections::HashMap<u64, (u16, u16)>>,
    ) -> Option<String> {
        if !Self::wants_dns(state, sb) {
            return None;
        }
        let res = self.dns.attach(&sb.id, std::path::Path::new(&sb.netns), earlier).and_then(|l| {
            self.dp.dns.set(l.netns_cookie, l.udp_port, l.tcp_port).inspect_err(|_| {
                self.dns.detach(&sb.id);
            })?;
            self.attach_dns_lo(state, sb, l.netns_cookie);
            Ok(())
        });
        res.err().map(|e| {
            tracing::warn!(sandbox = %sb.name, error = %e, "embedded DNS not available");
            format!("embedded DNS not available: {e}")
        })
    }

    /// Stops the sandbox's resolver and its socket-hook redirect.
    fn stop_dns(&self, sandbox_id: &str) {
        let Some(l) = self.dns.detach(sandbox_id) else { return };
        self.detach_dns_lo(l.netns_cookie);
        if let Err(e) = self.dp.dns.remove(l.netns_cookie) {
            tracing::warn!(sandbox = %sandbox_id, error = %e, "cannot remove the resolver redirect");
        }
    }

    pub fn state(&self) -> Result<State> {
        self.store.state()
    }

    /// Follows the root qdiscs of the host's links: an endpoint whose veth
    /// gets one (the CNI `bandwidth` plugin's TBF, after our ADD) is then
    /// delivered to through that veth, so the qdisc shapes what reaches
    /// its sandbox; without one, straight into the sandbox as before.
    pub async fn watch_shaping(self: &Arc<Self>) -> Result<()> {
        use futures::StreamExt;
        let (now, mut changes) = crate::sys::netlink::watch_root_qdiscs().await?;
        let apply = |engine: &Engine, q: crate::sys::netlink::RootQdisc| {
            let shaped = q.kind.as_deref().is_some_and(|k| k != "noqueue");
            if let Err(e) = engine.dp.endpoints.set_shaped(q.index, shaped) {
                tracing::warn!(ifindex = q.index, error = %e, "marking a shaped endpoint");
            }
        };
        for q in now {
            apply(self, q);
        }
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(q) = changes.next().await {
                let Some(engine) = engine.upgrade() else { return };
                tracing::debug!(ifindex = q.index, qdisc = ?q.kind, "root qdisc changed");
                apply(&engine, q);
            }
        });
        Ok(())
    }

    /// Starts the task reading the datapath's drop events and the
    /// conntrack garbage collector (a thread of its own).
    pub fn start_datapath_tasks(&self, gc_interval: Duration) -> Result<()> {
        let ring = self.dp.events.take_ring()?;
        self.dp.events.set_reporting(false)?;
        self.monitor
            .spawn_reader(ring)
            .map_err(|e| crate::error::Error::io("watch", "the event ring buffer", e))?;
        let telemetry = Arc::clone(&self.telemetry);
        self.dp
            .conntrack
            .spawn_gc(gc_interval, move |took| telemetry.observe_gc(took))
            .map_err(|e| crate::error::Error::io("start", "the conntrack GC thread", e))
    }

    /// A monitor client: events flow (and the datapath reports them) while it lives.
    pub fn monitor_subscribe(self: &Arc<Self>) -> crate::datapath::events::Subscription {
        let me = Arc::downgrade(self);
        self.monitor.subscribe(Arc::new(move |on| {
            if let Some(e) = me.upgrade()
                && let Err(err) = e.dp.events.set_reporting(on)
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
        self.dp.events.suppressed()
    }

    pub fn metrics(&self) -> Result<Vec<crate::datapath::metrics::Metric>> {
        self.dp.metrics.read()
    }

    pub fn ct_flows(&self) -> Result<crate::datapath::conntrack::Flows> {
        self.dp.conntrack.flows()
    }

    pub fn ct_flush(&self) -> Result<usize> {
        self.dp.conntrack.flush()
    }

    /// Conntrack pressure: entries, capacity, expired since start, the last GC pass.
    pub fn ct_pressure(&self) -> crate::datapath::conntrack::Pressure {
        self.dp.conntrack.pressure()
    }
}
