//! The controller: every mutation of networks, sandboxes and endpoints. Each
//! one validates first, then changes the kernel, then commits one store
//! transaction; if any step fails, what was done is undone, so a failed
//! request leaves no interface, map entry or record behind.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::bpf::{Datapath, MetricRow};
use crate::drivers;
use crate::error::{Error, Result};
use crate::ipam::{self, IpamRequest};
use crate::model::*;
use crate::names;
use crate::netlink::Netlink;
use crate::netns;
use crate::paths::Paths;
use crate::ports;
use crate::process;
use crate::store::{State, Store};

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
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn lock_dp(dp: &Mutex<Datapath>) -> std::sync::MutexGuard<'_, Datapath> {
    dp.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    pub fn new(
        paths: Paths,
        uplink: Option<String>,
        store: Store,
        host: Netlink,
        dp: Datapath,
    ) -> Arc<Self> {
        Arc::new(Engine {
            paths,
            uplink,
            store,
            host,
            dp: Mutex::new(dp),
            lock: tokio::sync::Mutex::new(()),
            exits: Mutex::new(HashMap::new()),
        })
    }

    pub fn state(&self) -> Result<State> {
        self.store.state()
    }

    pub fn metrics(&self) -> Result<Vec<MetricRow>> {
        lock_dp(&self.dp).metrics()
    }

    // ----- networks -------------------------------------------------------

    /// Creates the predefined networks on first start.
    pub async fn ensure_predefined(&self) -> Result<()> {
        let state = self.store.state()?;
        if state.network("bridge").is_none() {
            let mut options = BTreeMap::new();
            options.insert(opt::BRIDGE_NAME.into(), DEFAULT_BRIDGE_DEVICE.into());
            options.insert(opt::DEFAULT_BRIDGE.into(), "true".into());
            options.insert(opt::ENABLE_ICC.into(), "true".into());
            options.insert(opt::ENABLE_IP_MASQUERADE.into(), "true".into());
            options.insert(opt::HOST_BINDING_IPV4.into(), "0.0.0.0".into());
            options.insert(opt::MTU.into(), "1500".into());
            let req = NetworkCreate {
                name: "bridge".into(),
                driver: DRIVER_BRIDGE.into(),
                ipam: IpamRequest {
                    subnet: Some("172.17.0.0/16".into()),
                    gateway: Some("172.17.0.1".into()),
                    ..Default::default()
                },
                options,
                ..Default::default()
            };
            self.create_network_inner(req, true).await?;
        }
        for (name, driver) in [("host", DRIVER_HOST), ("none", DRIVER_NULL)] {
            if state.network(name).is_none() {
                let req = NetworkCreate {
                    name: name.into(),
                    driver: driver.into(),
                    ..Default::default()
                };
                self.create_network_inner(req, true).await?;
            }
        }
        Ok(())
    }

    pub async fn create_network(&self, req: NetworkCreate) -> Result<String> {
        self.create_network_inner(req, false).await
    }

    async fn create_network_inner(&self, req: NetworkCreate, predefined: bool) -> Result<String> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        if !names::valid_name(&req.name) {
            return Err(Error::InvalidName { name: req.name });
        }
        if state.network(&req.name).is_some_and(|n| n.name == req.name) {
            return Err(Error::NetworkExists(req.name));
        }
        let driver = if req.driver.is_empty() {
            DRIVER_BRIDGE.to_string()
        } else {
            req.driver.clone()
        };
        match driver.as_str() {
            DRIVER_BRIDGE | DRIVER_MACVLAN => {}
            DRIVER_HOST | DRIVER_NULL if predefined => {}
            DRIVER_HOST | DRIVER_NULL => {
                return Err(Error::Unsupported(format!(
                    "only one instance of \"{driver}\" network is allowed"
                )));
            }
            "ipvlan" => return Err(self.ipvlan_unsupported(req.options.get(opt::PARENT)).await),
            other => return Err(Error::UnknownDriver(other.to_string())),
        }
        let id = names::new_id();
        let mut options = req.options.clone();
        let device = match driver.as_str() {
            DRIVER_BRIDGE => {
                let dev = options
                    .get(opt::BRIDGE_NAME)
                    .cloned()
                    .unwrap_or_else(|| names::bridge_name(&id));
                if !names::valid_ifname(&dev) {
                    return Err(Error::invalid(
                        opt::BRIDGE_NAME,
                        &dev,
                        "not a valid interface name (1-15 characters)",
                    ));
                }
                if state
                    .networks
                    .iter()
                    .any(|n| n.is_bridge() && n.device.as_deref() == Some(&dev))
                {
                    return Err(Error::Conflict(format!(
                        "bridge device {dev} is used by another network"
                    )));
                }
                if !predefined && self.host.link_index(&dev).await?.is_some() {
                    return Err(Error::Conflict(format!(
                        "an interface named {dev} already exists on the host"
                    )));
                }
                Some(dev)
            }
            DRIVER_MACVLAN => options.get(opt::PARENT).cloned(),
            _ => None,
        };
        for key in [opt::ENABLE_ICC, opt::ENABLE_IP_MASQUERADE] {
            if let Some(v) = options.get(key)
                && v != "true"
                && v != "false"
            {
                return Err(Error::invalid(
                    "option",
                    format!("{key}={v}"),
                    "must be true or false",
                ));
            }
        }
        let ipam = if driver == DRIVER_BRIDGE || driver == DRIVER_MACVLAN {
            let mut taken: Vec<_> = state
                .networks
                .iter()
                .filter(|n| n.is_bridge() || driver == DRIVER_BRIDGE)
                .filter_map(|n| n.ipam.as_ref().map(|i| (i.subnet, n.name.clone())))
                .collect();
            if req.ipam.subnet.is_none() {
                // An automatic subnet must not shadow a network the host already routes to.
                for r in self.host.ipv4_route_prefixes().await? {
                    taken.push((r, format!("host route {r}")));
                }
            }
            Some(ipam::plan(&req.ipam, &taken)?)
        } else {
            None
        };
        if driver == DRIVER_MACVLAN {
            options
                .entry(opt::MACVLAN_MODE.into())
                .or_insert_with(|| "bridge".into());
        }
        let net = Network {
            id: id.clone(),
            name: req.name.clone(),
            driver,
            created: now(),
            num: state.networks.iter().map(|n| n.num).max().unwrap_or(0) + 1,
            ipam,
            internal: req.internal,
            options,
            labels: req.labels.clone(),
            device,
            predefined,
        };
        drivers::create_network(&self.host, &net)
            .await
            .inspect_err(|_| {
                // A half-made bridge must not survive.
            })?;
        let undo = async {
            let _ = drivers::delete_network(&self.host, &net).await;
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                lock_dp(&self.dp).remove_subnet(ipam.subnet);
            }
        };
        let res = (|| -> Result<()> {
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                lock_dp(&self.dp).set_subnet(ipam.subnet, net.num, ipam.gateway)?;
            }
            let tx = self.store.begin()?;
            tx.put_network(&net)?;
            tx.commit()
        })();
        if let Err(e) = res {
            undo.await;
            return Err(e);
        }
        tracing::info!(network = %net.name, id = %net.short_id(), driver = %net.driver, "network created");
        Ok(id)
    }

    /// "Check, don't assume": ask the kernel for an ipvlan link and report what it says.
    async fn ipvlan_unsupported(&self, parent: Option<&String>) -> Error {
        let probe = self
            .host
            .probe_link_kind("ipvlan", parent.map(String::as_str).unwrap_or("lo"))
            .await;
        match probe {
            Ok(false) => Error::Unsupported(
                "driver ipvlan is not available: this kernel lacks ipvlan support (CONFIG_IPVLAN)"
                    .into(),
            ),
            _ => Error::Unsupported("driver ipvlan is not implemented by dataplane yet".into()),
        }
    }

    pub async fn remove_network(&self, id_or_name: &str) -> Result<String> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let net = state.require_network(id_or_name)?.clone();
        if net.predefined {
            return Err(Error::PredefinedNetwork(net.name));
        }
        if state.endpoints_of_network(&net.id).next().is_some() {
            return Err(Error::NetworkInUse {
                name: net.name,
                id: net.id,
            });
        }
        let tx = self.store.begin()?;
        tx.del_network(&net.id)?;
        drivers::delete_network(&self.host, &net).await?;
        if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
            lock_dp(&self.dp).remove_subnet(ipam.subnet);
        }
        tx.commit()?;
        tracing::info!(network = %net.name, "network removed");
        Ok(net.id)
    }

    /// Removes every user network without endpoints; returns their names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let state = self.store.state()?;
        let mut removed = Vec::new();
        for n in state.networks.iter().filter(|n| !n.predefined) {
            if state.endpoints_of_network(&n.id).next().is_none()
                && self.remove_network(&n.id).await.is_ok()
            {
                removed.push(n.name.clone());
            }
        }
        Ok(removed)
    }

    // ----- endpoints ------------------------------------------------------

    /// Plans, plugs and records one endpoint. On error nothing is left.
    async fn add_endpoint(
        &self,
        state: &State,
        net: &Network,
        sb: &Sandbox,
        ip: Option<&str>,
        aliases: &[String],
        tx: &crate::store::Tx,
    ) -> Result<Endpoint> {
        let ipam = net.ipam.as_ref().ok_or_else(|| {
            Error::Unsupported(format!("network {} has no address pool", net.name))
        })?;
        if net.driver == DRIVER_MACVLAN && net.device.is_none() {
            return Err(Error::Unsupported(format!(
                "network {} is an --internal macvlan network without parent: it cannot have endpoints",
                net.name
            )));
        }
        let used: HashSet<Ipv4Addr> = state.endpoints_of_network(&net.id).map(|e| e.ip).collect();
        let ip = match ip {
            Some(s) if !s.is_empty() => {
                let ip: Ipv4Addr = s
                    .parse()
                    .map_err(|_| Error::invalid("ip", s, "not an IPv4 address"))?;
                ipam::check_requested(ipam, ip, &used, &net.name)?;
                ip
            }
            _ => ipam::allocate(ipam, &used, &net.name)?,
        };
        let taken: HashSet<String> = state
            .endpoints_of_sandbox(&sb.id)
            .map(|e| e.ifname.clone())
            .collect();
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !taken.contains(n))
            .unwrap_or_default();
        let first = taken.is_empty();
        let ep = Endpoint {
            id: names::new_id(),
            network_id: net.id.clone(),
            sandbox_id: sb.id.clone(),
            ifname,
            host_ifname: net.is_bridge().then(names::host_veth_name),
            ip,
            mac: names::mac_for_ip(ip),
            aliases: aliases.to_vec(),
        };
        tx.put_endpoint(&ep, &net.name)?;
        let hidx = drivers::attach(&self.host, net, &ep, Path::new(&sb.netns), first).await?;
        if let Err(e) = self.program_endpoint(net, &ep, hidx) {
            let _ = drivers::detach(&self.host, net, &ep, Path::new(&sb.netns)).await;
            return Err(e);
        }
        Ok(ep)
    }

    /// Puts a bridge endpoint into the BPF endpoint table and attaches the veth program.
    fn program_endpoint(&self, net: &Network, ep: &Endpoint, host_index: u32) -> Result<()> {
        let Some(host_if) = &ep.host_ifname else {
            return Ok(());
        };
        let mut dp = lock_dp(&self.dp);
        dp.set_endpoint(host_index, net.num, ep.ip, ep.mac)?;
        if let Err(e) = dp.attach_veth(host_if) {
            dp.remove_endpoint(host_index);
            return Err(e);
        }
        Ok(())
    }

    async fn remove_endpoint(&self, net: &Network, ep: &Endpoint, netns: &Path) -> Result<()> {
        if let Some(host_if) = &ep.host_ifname {
            if let Some(idx) = self.host.link_index(host_if).await? {
                lock_dp(&self.dp).remove_endpoint(idx);
            }
            lock_dp(&self.dp).detach_veth(host_if);
        }
        drivers::detach(&self.host, net, ep, netns).await
    }

    pub async fn connect(
        &self,
        net_ref: &str,
        sb_ref: &str,
        ip: Option<&str>,
        aliases: &[String],
    ) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let net = state.require_network(net_ref)?.clone();
        let sb = state.require_sandbox(sb_ref)?.clone();
        match &sb.mode {
            NetworkMode::Host => return Err(Error::HostNetworkConnect),
            NetworkMode::None => {
                return Err(Error::Conflict(format!(
                    "container {} uses --network none and cannot be connected to a network",
                    sb.name
                )));
            }
            NetworkMode::Container(_) => {
                return Err(Error::Conflict(
                    "container sharing network namespace with another container or host cannot be connected to any other network".into(),
                ));
            }
            NetworkMode::Networks => {}
        }
        if !net.has_endpoints() {
            return Err(Error::HostNetworkConnect);
        }
        if state
            .endpoints
            .iter()
            .any(|e| e.sandbox_id == sb.id && e.network_id == net.id)
        {
            return Err(Error::AlreadyConnected {
                sandbox: sb.name,
                network: net.name,
            });
        }
        if !aliases.is_empty() && net.name == "bridge" {
            return Err(Error::Conflict(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
        let tx = self.store.begin()?;
        let ep = self
            .add_endpoint(&state, &net, &sb, ip, aliases, &tx)
            .await?;
        if let Err(e) = tx.commit() {
            let _ = self.remove_endpoint(&net, &ep, Path::new(&sb.netns)).await;
            return Err(e);
        }
        tracing::info!(network = %net.name, sandbox = %sb.name, ip = %ep.ip, "connected");
        Ok(())
    }

    pub async fn disconnect(&self, net_ref: &str, sb_ref: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let net = state.require_network(net_ref)?.clone();
        let sb = state.require_sandbox(sb_ref)?.clone();
        if sb.mode == NetworkMode::Host || net.driver == DRIVER_HOST {
            return Err(Error::HostNetworkConnect);
        }
        let ep = state
            .endpoints
            .iter()
            .find(|e| e.sandbox_id == sb.id && e.network_id == net.id)
            .ok_or_else(|| Error::NotConnected {
                sandbox: sb.name.clone(),
                network: net.name.clone(),
            })?
            .clone();
        let tx = self.store.begin()?;
        tx.del_endpoint(&ep)?;
        self.remove_endpoint(&net, &ep, Path::new(&sb.netns))
            .await?;
        tx.commit()?;
        tracing::info!(network = %net.name, sandbox = %sb.name, "disconnected");
        Ok(())
    }

    // ----- sandboxes ------------------------------------------------------

    pub async fn create_sandbox(&self, req: SandboxCreate) -> Result<Created> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let id = names::new_id();
        let name = match &req.name {
            Some(n) if !n.is_empty() => {
                let n = n.trim_start_matches('/').to_string();
                if !names::valid_name(&n) {
                    return Err(Error::InvalidName { name: n });
                }
                if state.sandboxes.iter().any(|s| s.name == n) {
                    return Err(Error::SandboxExists(n));
                }
                n
            }
            _ => format!("sandbox_{}", &id[..8]),
        };
        let mut warnings = Vec::new();
        let ports = req
            .publish
            .iter()
            .map(|p| ports::parse_publish(p))
            .collect::<Result<Vec<_>>>()?;
        let expose = req
            .expose
            .iter()
            .map(|p| ports::parse_expose(p))
            .collect::<Result<Vec<_>>>()?
            .concat();
        if let Some(h) = &req.hostname
            && (h.is_empty()
                || h.len() > 63
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        {
            return Err(Error::invalid(
                "hostname",
                h,
                "must be 1-63 characters of [a-zA-Z0-9.-]",
            ));
        }
        let (mode, net) = match req.network.as_str() {
            "" | "default" => (NetworkMode::Networks, state.network("bridge").cloned()),
            "host" => (NetworkMode::Host, None),
            "none" => (NetworkMode::None, None),
            other if other.starts_with("container:") => {
                let target = &other["container:".len()..];
                let t = state.require_sandbox(target)?;
                (NetworkMode::Container(t.id.clone()), None)
            }
            other => {
                let n = state.require_network(other)?;
                match n.driver.as_str() {
                    DRIVER_HOST => (NetworkMode::Host, None),
                    DRIVER_NULL => (NetworkMode::None, None),
                    _ => (NetworkMode::Networks, Some(n.clone())),
                }
            }
        };
        match &mode {
            NetworkMode::Host if (!ports.is_empty() || req.publish_all) => {
                warnings
                    .push("Published ports are discarded when using host network mode".to_string());
            }
            NetworkMode::Container(_) => {
                if !ports.is_empty() || req.publish_all {
                    return Err(Error::Conflict(
                        "port publishing and the container type network mode".into(),
                    ));
                }
                if req.hostname.is_some() {
                    return Err(Error::Conflict("hostname and the network mode".into()));
                }
            }
            _ => {}
        }
        let user_defined = net.as_ref().is_some_and(|n| !n.predefined);
        if !req.aliases.is_empty() && !user_defined {
            return Err(Error::Conflict(
                "network-scoped alias is supported only for containers in user defined networks"
                    .into(),
            ));
        }
        if req.ip.as_deref().is_some_and(|s| !s.is_empty()) && !user_defined {
            return Err(Error::Conflict(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        let (netns_path, owns) = match (&mode, &req.netns_path) {
            (NetworkMode::Container(t), _) => {
                let t = state
                    .sandboxes
                    .iter()
                    .find(|s| &s.id == t)
                    .map(|s| s.netns.clone())
                    .unwrap_or_default();
                (PathBuf::from(t), false)
            }
            (NetworkMode::Host, _) => (self.paths.host_netns_file(), false),
            (_, Some(p)) if !p.is_empty() => {
                let p = PathBuf::from(p);
                if !netns::is_pinned(&p) && !p.starts_with("/proc") {
                    return Err(Error::invalid(
                        "netns",
                        p.display(),
                        "not a network namespace file",
                    ));
                }
                (p, false)
            }
            _ => (self.paths.netns_file(&id), true),
        };
        let ports = if mode == NetworkMode::Host {
            Vec::new()
        } else {
            ports
        };
        let sb = Sandbox {
            id: id.clone(),
            name,
            hostname: match (&req.hostname, &mode) {
                (Some(h), _) => h.clone(),
                // Docker: host-mode containers carry the host's name.
                (None, NetworkMode::Host) => nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| id[..12].to_string()),
                (None, _) => id[..12].to_string(),
            },
            created: now(),
            mode: mode.clone(),
            netns: netns_path.display().to_string(),
            owns_netns: owns,
            cmd: req.cmd.clone(),
            state: SandboxState::Created,
            pid: None,
            pid_start: None,
            ports,
            expose,
            publish_all: req.publish_all && mode != NetworkMode::Host,
            auto_remove: req.auto_remove,
        };
        // Kernel side: namespace, loopback, endpoint.
        if owns {
            netns::create(&netns_path)?;
        }
        let res = async {
            if owns {
                let nl = Netlink::in_netns(&netns_path)?;
                let lo = nl.require_index("lo").await?;
                nl.set_up(lo).await?;
            }
            let tx = self.store.begin()?;
            tx.put_sandbox(&sb)?;
            let ep = match &net {
                Some(n) => Some(
                    self.add_endpoint(&state, n, &sb, req.ip.as_deref(), &req.aliases, &tx)
                        .await?,
                ),
                None => None,
            };
            if let Err(e) = tx.commit() {
                if let (Some(n), Some(ep)) = (&net, &ep) {
                    let _ = self.remove_endpoint(n, ep, &netns_path).await;
                }
                return Err(e);
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            if owns {
                let _ = netns::remove(&netns_path);
            }
            return Err(e);
        }
        tracing::info!(sandbox = %sb.name, id = %sb.short_id(), "sandbox created");
        Ok(Created { id, warnings })
    }

    /// Writes the sandbox's /etc files and starts its process.
    pub async fn start(self: &Arc<Self>, sb_ref: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let mut sb = state.require_sandbox(sb_ref)?.clone();
        if sb.state == SandboxState::Running
            && sb.pid.is_some_and(|p| process::alive(p, sb.pid_start))
        {
            return Ok(());
        }
        if sb.cmd.is_empty() {
            return Err(Error::invalid(
                "command",
                &sb.name,
                "this sandbox has no command to start",
            ));
        }
        if let NetworkMode::Container(t) = &sb.mode {
            let running = state
                .sandboxes
                .iter()
                .any(|s| &s.id == t && s.state == SandboxState::Running);
            if !netns::is_pinned(Path::new(&sb.netns)) && !running {
                return Err(Error::Conflict(format!(
                    "cannot join network of a non running container: {t}"
                )));
            }
        }
        let dir = self.paths.sandbox_dir(&sb.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create dir", dir.display(), e))?;
        let resolv = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        std::fs::write(&resolv, host_resolv)
            .map_err(|e| Error::io("write", resolv.display(), e))?;
        let mut h =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for ep in state.endpoints_of_sandbox(&sb.id) {
            h.push_str(&format!("{}\t{}\n", ep.ip, sb.hostname));
        }
        std::fs::write(&hosts, h).map_err(|e| Error::io("write", hosts.display(), e))?;
        let launch = process::Launch {
            cmd: sb.cmd.clone(),
            netns: (sb.mode != NetworkMode::Host).then(|| PathBuf::from(&sb.netns)),
            hostname: sb.hostname.clone(),
            resolv_conf: resolv,
            hosts,
            log: self.paths.log_file(&sb.id),
        };
        let mut child = process::spawn(&launch)?;
        let pid = child.id();
        sb.pid = Some(pid);
        sb.pid_start = process::start_time(pid);
        sb.state = SandboxState::Running;
        let tx = self.store.begin()?;
        tx.put_sandbox(&sb)?;
        if let Err(e) = tx.commit() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let (tx_exit, _) = watch::channel(None);
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sb.id.clone(), tx_exit.clone());
        let engine = Arc::clone(self);
        let id = sb.id.clone();
        tokio::spawn(async move {
            let status = tokio::task::spawn_blocking(move || child.wait()).await;
            let code = match status {
                Ok(Ok(s)) => s.code().unwrap_or_else(|| {
                    128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
                }),
                _ => -1,
            };
            engine.on_exit(&id, pid, code).await;
            tx_exit.send_replace(Some(code));
        });
        tracing::info!(sandbox = %sb.name, pid, "started");
        Ok(())
    }

    async fn on_exit(self: &Arc<Self>, id: &str, pid: u32, code: i32) {
        let auto_remove = {
            let _g = self.lock.lock().await;
            let Ok(state) = self.store.state() else {
                return;
            };
            let Some(mut sb) = state.sandbox(id).cloned() else {
                return;
            };
            if sb.pid != Some(pid) {
                return;
            }
            sb.state = SandboxState::Exited(code);
            sb.pid = None;
            sb.pid_start = None;
            if let Ok(tx) = self.store.begin()
                && tx.put_sandbox(&sb).is_ok()
            {
                let _ = tx.commit();
            }
            tracing::info!(sandbox = %sb.name, code, "exited");
            sb.auto_remove
        };
        if auto_remove && let Err(e) = self.remove_sandbox(id, true).await {
            tracing::warn!(sandbox = id, error = %e, "auto-remove failed");
        }
    }

    /// Waits for the sandbox's process to exit; returns its exit code.
    pub async fn wait(&self, sb_ref: &str) -> Result<i32> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        let rx = self
            .exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sb.id)
            .map(|t| t.subscribe());
        if let Some(mut rx) = rx {
            loop {
                if let Some(code) = *rx.borrow() {
                    return Ok(code);
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }
        // Not our child (started before a restart): poll.
        loop {
            let state = self.store.state()?;
            match state.sandbox(&sb.id) {
                None => return Ok(0),
                Some(s) => match (&s.state, s.pid) {
                    (SandboxState::Exited(c), _) => return Ok(*c),
                    (SandboxState::Created, _) => return Ok(0),
                    (SandboxState::Running, Some(p)) if !process::alive(p, s.pid_start) => {
                        return Ok(0);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(100)).await,
                },
            }
        }
    }

    pub async fn stop(&self, sb_ref: &str) -> Result<()> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        if let Some(pid) = sb.pid {
            process::stop(pid, sb.pid_start, STOP_GRACE).await;
        }
        // The reaper records the exit of our own children; after a restart we do.
        let _g = self.lock.lock().await;
        if let Some(mut cur) = self.store.state()?.sandbox(&sb.id).cloned()
            && cur.state == SandboxState::Running
        {
            cur.state = SandboxState::Exited(143);
            cur.pid = None;
            cur.pid_start = None;
            let tx = self.store.begin()?;
            tx.put_sandbox(&cur)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub async fn remove_sandbox(&self, sb_ref: &str, force: bool) -> Result<String> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        let running = sb.pid.is_some_and(|p| process::alive(p, sb.pid_start));
        if running && !force {
            return Err(Error::SandboxRunning(sb.name));
        }
        if let Some(pid) = sb.pid {
            process::stop(pid, sb.pid_start, Duration::from_secs(0)).await;
        }
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let Some(sb) = state.sandbox(&sb.id).cloned() else {
            return Ok(sb.id);
        };
        let tx = self.store.begin()?;
        let netns_path = PathBuf::from(&sb.netns);
        let mut first_err = None;
        for ep in state.endpoints_of_sandbox(&sb.id) {
            tx.del_endpoint(ep)?;
            if let Some(net) = state.networks.iter().find(|n| n.id == ep.network_id)
                && let Err(e) = self.remove_endpoint(net, ep, &netns_path).await
            {
                tracing::warn!(sandbox = %sb.name, error = %e, "endpoint cleanup");
                first_err.get_or_insert(e);
            }
        }
        if sb.owns_netns {
            netns::remove(&netns_path)?;
        }
        let _ = std::fs::remove_dir_all(self.paths.sandbox_dir(&sb.id));
        tx.del_sandbox(&sb.id)?;
        tx.commit()?;
        self.exits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sb.id);
        tracing::info!(sandbox = %sb.name, "removed");
        Ok(sb.id)
    }

    /// The live state of a sandbox (a recorded Running whose process is gone reads Exited).
    pub fn effective_state(sb: &Sandbox) -> SandboxState {
        match (&sb.state, sb.pid) {
            (SandboxState::Running, Some(p)) if !process::alive(p, sb.pid_start) => {
                SandboxState::Exited(0)
            }
            (s, _) => s.clone(),
        }
    }

    // ----- reconcile ------------------------------------------------------

    /// Makes the kernel match the store: bridges, addresses, namespaces,
    /// veths, BPF entries and links; removes our interfaces the store does
    /// not know. Reports (and keeps going past) individual failures.
    pub async fn reconcile(&self) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        netns::pin_current(&self.paths.host_netns_file())?;
        let mut known_ifs: HashSet<String> = HashSet::new();
        let mut subnets = HashSet::new();
        for net in &state.networks {
            if let Err(e) = drivers::create_network(&self.host, net).await {
                tracing::warn!(network = %net.name, error = %e, "reconcile network");
            }
            if let (true, Some(ipam)) = (net.is_bridge(), &net.ipam) {
                subnets.insert(ipam.subnet);
                lock_dp(&self.dp).set_subnet(ipam.subnet, net.num, ipam.gateway)?;
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
            if sb.owns_netns && !netns::is_pinned(&path) {
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
                let present = match &ep.host_ifname {
                    Some(h) => self.host.link_index(h).await?,
                    None => Netlink::in_netns(&path)?
                        .link_index(&ep.ifname)
                        .await?
                        .map(|_| 0),
                };
                let hidx = match present {
                    Some(i) => {
                        // A recreated bridge has lost its ports: plug the veth back in.
                        if let (true, Some(dev)) = (net.is_bridge(), &net.device) {
                            if let Some(br) = self.host.link_index(dev).await? {
                                self.host.set_master(i, br).await?;
                            }
                        }
                        i
                    }
                    None => {
                        tracing::warn!(sandbox = %sb.name, network = %net.name, "endpoint interface missing; recreating it");
                        if let Ok(nl) = Netlink::in_netns(&path) {
                            let _ = nl.delete_by_name(&ep.ifname).await;
                        }
                        if let Some(h) = &ep.host_ifname {
                            lock_dp(&self.dp).detach_veth(h);
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
        // Interfaces with our prefixes that the store does not know.
        for (idx, name, _) in self.host.links().await? {
            let ours = names::OWNED_PREFIXES.iter().any(|p| name.starts_with(p));
            if ours && !known_ifs.contains(&name) {
                tracing::info!(interface = %name, "removing interface unknown to the store");
                let _ = self.host.delete(idx).await;
            }
        }
        let mut dp = lock_dp(&self.dp);
        for name in dp.pinned_links() {
            if !known_ifs.contains(&name) {
                dp.detach_veth(&name);
            }
        }
        for idx in dp.endpoint_indexes()? {
            if !live_indexes.contains(&idx) {
                dp.remove_endpoint(idx);
            }
        }
        for s in dp.subnet_keys()? {
            if !subnets.contains(&s) {
                dp.remove_subnet(s);
            }
        }
        Ok(())
    }
}
