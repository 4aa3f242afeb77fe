//! Sandboxes: create, start (with the reaper), wait, stop, remove.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::endpoint::{EndpointPlan, plan_endpoint, teardown_warnings};
use super::publish::{PortLimits, PortPlan, plan_ports, reserve_ports};
use super::*;
use crate::domain::etc;
use crate::domain::names;
use crate::domain::state::State;
use crate::error::{Error, Result};
use crate::sys::netlink::Netlink;
use crate::sys::netns;
use crate::sys::process;

/// What creating a sandbox will do, decided from the request and the
/// state alone: the record, its network and endpoint, its port claims, the
/// warnings. Every refusal happens while planning.
#[derive(Debug)]
pub(super) struct SandboxPlan {
    /// The record as it will be stored (its bindings are set once the ports are reserved).
    pub sb: Sandbox,
    pub net: Option<Network>,
    pub endpoint: Option<EndpointPlan>,
    pub ports: PortPlan,
    /// The reserved ports are programmed through the new endpoint (a
    /// non-internal bridge network); otherwise they are only held.
    pub program_ports: bool,
    pub warnings: Vec<String>,
}

/// The refusal for a runtime's container endpoint.
pub(super) fn owned_by(sb: &Sandbox, owner: Owner) -> Error {
    if owner == Owner::Cni {
        return Error::Conflict(format!(
            "{} is a CNI attachment of container {}: its runtime removes it (CNI DEL, e.g. `podman rm`)",
            sb.name,
            sb.runtime_id.as_deref().unwrap_or(&sb.id)
        ));
    }
    Error::Conflict(format!(
        "{} is the endpoint of a {owner} container: manage it with {owner} (`{owner} rm`, `{owner} network disconnect`)",
        sb.name
    ))
}

/// What planning a sandbox needs from outside the store.
#[derive(Clone, Debug)]
pub(super) struct SandboxContext {
    pub id: String,
    pub created: String,
    /// Where a namespace of the sandbox's own is pinned.
    pub own_netns: PathBuf,
    /// The daemon's namespace (`--network host`).
    pub host_netns: PathBuf,
    /// The host's name (Docker gives it to host-mode containers).
    pub host_name: Option<String>,
    pub log: Option<crate::sys::logs::LogLimits>,
    pub ports: PortLimits,
}

/// `--link NAME[:ALIAS]`: the linked sandbox (which must exist and share
/// the default bridge, as Docker's legacy links), its id and alias.
fn plan_links(state: &State, links: &[String], mode: &NetworkMode) -> Result<Vec<(String, String)>> {
    links
        .iter()
        .map(|l| {
            let (target, alias) = match l.split_once(':') {
                Some((t, a)) => (t, a),
                None => (l.as_str(), l.as_str()),
            };
            let t = state
                .sandbox(target)
                .ok_or_else(|| Error::invalid("--link", l, format!("no sandbox named {target}")))?;
            if *mode != NetworkMode::Networks {
                return Err(Error::ConflictingOptions("links and the network mode".into()));
            }
            names::check_name(alias)?;
            Ok((t.id.clone(), alias.trim_start_matches('/').to_string()))
        })
        .collect()
}

/// Plans `create`/`run`: Docker's refusals and the record, the endpoint
/// and the ports. No side effects.
pub(super) fn plan_sandbox(state: &State, req: &SandboxCreate, cx: &SandboxContext) -> Result<SandboxPlan> {
    let id = cx.id.clone();
    let name = match &req.name {
        Some(n) if !n.is_empty() => {
            let n = n.trim_start_matches('/').to_string();
            names::check_name(&n)?;
            if state.sandboxes.iter().any(|s| s.name == n) {
                return Err(Error::SandboxExists(n));
            }
            n
        }
        _ => format!("sandbox_{}", &id[..8]),
    };
    if let Some(h) = &req.hostname
        && (h.is_empty()
            || h.len() > 63
            || !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(Error::invalid("hostname", h, "must be 1-63 characters of [a-zA-Z0-9.-]"));
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
            match n.driver {
                Driver::Host => (NetworkMode::Host, None),
                Driver::Null => (NetworkMode::None, None),
                _ => (NetworkMode::Networks, Some(n.clone())),
            }
        }
    };
    let mut warnings = Vec::new();
    let publishes = !req.publish.is_empty() || req.publish_all;
    match &mode {
        NetworkMode::Host if publishes => {
            warnings.push("Published ports are discarded when using host network mode".to_string());
        }
        NetworkMode::Container(_) => {
            if publishes {
                return Err(Error::ConflictingOptions(
                    "port publishing and the container type network mode".into(),
                ));
            }
            if req.hostname.is_some() {
                return Err(Error::ConflictingOptions("hostname and the network mode".into()));
            }
        }
        _ => {}
    }
    let user_defined = net.as_ref().is_some_and(|n| !n.predefined);
    if !req.aliases.is_empty() && !user_defined {
        return Err(Error::Conflict(
            "network-scoped alias is supported only for containers in user defined networks".into(),
        ));
    }
    let given = |ip: &Option<String>| ip.as_deref().is_some_and(|s| !s.is_empty());
    if (given(&req.ip) || given(&req.ip6)) && !user_defined {
        return Err(Error::Conflict(
            "user specified IP address is supported on user defined networks only".into(),
        ));
    }
    let (netns_path, owns) = match (&mode, &req.netns_path) {
        (NetworkMode::Container(t), _) => {
            let t = state.sandboxes.iter().find(|s| &s.id == t).map(|s| s.netns.clone()).unwrap_or_default();
            (PathBuf::from(t), false)
        }
        (NetworkMode::Host, _) => (cx.host_netns.clone(), false),
        (_, Some(p)) if !p.is_empty() => (PathBuf::from(p), false),
        _ => (cx.own_netns.clone(), true),
    };
    let host_mode = mode == NetworkMode::Host;
    let sb = Sandbox {
        id: id.clone(),
        name,
        hostname: match (&req.hostname, &mode) {
            (Some(h), _) => h.clone(),
            // Docker: host-mode containers carry the host's name.
            (None, NetworkMode::Host) => cx.host_name.clone().unwrap_or_else(|| id[..12].to_string()),
            (None, _) => id[..12].to_string(),
        },
        created: cx.created.clone(),
        mode: mode.clone(),
        netns: netns_path.display().to_string(),
        owns_netns: owns,
        cmd: req.cmd.clone(),
        state: SandboxState::Created,
        pid: None,
        pid_start: None,
        ports: if host_mode { Vec::new() } else { req.publish.clone() },
        expose: req.expose.clone(),
        publish_all: req.publish_all && !host_mode,
        auto_remove: req.auto_remove,
        bindings: Vec::new(),
        env: req.env.clone(),
        user: req.user.clone().filter(|u| !u.is_empty()),
        log: cx.log,
        owner: None,
        runtime_id: None,
        labels: req.labels.clone(),
        started_at: None,
        finished_at: None,
        tty: req.tty,
        open_stdin: req.open_stdin,
        dns: req
            .dns
            .iter()
            .map(|d| d.parse().map_err(|_| Error::invalid("--dns", d, "not an IP address")))
            .collect::<Result<_>>()?,
        dns_search: req.dns_search.clone(),
        dns_options: req.dns_options.clone(),
        extra_hosts: {
            let gateway = state
                .network("bridge")
                .and_then(|b| b.ipam.as_ref())
                .map(|i| std::net::IpAddr::V4(i.gateway));
            req.extra_hosts.iter().map(|h| etc::parse_extra_host(h, gateway)).collect::<Result<_>>()?
        },
        links: plan_links(state, &req.links, &mode)?,
        console_size: req.console_size.filter(|(r, c)| req.tty && *r > 0 && *c > 0),
        workdir: match req.workdir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) if !w.starts_with('/') => {
                return Err(Error::invalid("--workdir", w, "must be an absolute path"));
            }
            other => other.map(String::from),
        },
    };
    etc::check_search(&sb.dns_search)?;
    etc::check_options(&sb.dns_options)?;
    let mut endpoint = match &net {
        Some(n) => Some(plan_endpoint(state, n, &sb, req.ip.as_deref(), req.ip6.as_deref(), &req.aliases)?),
        None => None,
    };
    if let Some(m) = req.mac.as_deref().filter(|m| !m.is_empty()) {
        let mac = names::parse_mac(m)
            .ok_or_else(|| Error::invalid("--mac-address", m, "use six hex pairs, aa:bb:cc:dd:ee:ff"))?;
        if mac[0] & 1 == 1 {
            return Err(Error::invalid("--mac-address", m, "a multicast address cannot be an interface's"));
        }
        let (Some(ep), Some(n)) = (endpoint.as_mut(), &net) else {
            return Err(Error::ConflictingOptions("mac-address and the network mode".into()));
        };
        if state.endpoints.iter().any(|e| e.network_id == n.id && e.mac == mac) {
            return Err(Error::invalid("--mac-address", m, format!("another sandbox on {} has it", n.name)));
        }
        ep.ep.mac = mac;
    }
    let ports = if sb.ports.is_empty() && !sb.publish_all {
        PortPlan::default()
    } else {
        plan_ports(state, &sb, &cx.ports)?
    };
    let program_ports = match &net {
        _ if ports.claims.is_empty() => false,
        Some(n) if n.is_bridge() && !n.internal => true,
        Some(n) if n.internal => {
            warnings.push(format!("ports are not published: network {} is --internal", n.name));
            false
        }
        _ => {
            warnings.push("ports are not published: the sandbox has no bridge network".into());
            false
        }
    };
    Ok(SandboxPlan { sb, net, endpoint, ports, program_ports, warnings })
}

impl Engine {
    pub async fn create_sandbox(&self, req: SandboxCreate) -> Result<Created> {
        let _g = self.lock.lock().await;
        let requested = [&req.ip, &req.ip6].iter().any(|i| i.as_deref().is_some_and(|i| !i.is_empty()));
        super::overlay::planning_again_on_lost_claims(requested, |skip| {
            self.create_sandbox_locked(&req, skip)
        })
        .await
    }

    async fn create_sandbox_locked(&self, req: &SandboxCreate, overlay_skip: u32) -> Result<Created> {
        let state = State { overlay_skip, ..self.store.state()? };
        // What the plan cannot see in the store, checked first.
        process::check_cmd(&req.cmd)?;
        process::check_env(&req.env)?;
        if let Some(u) = req.user.as_deref().filter(|u| !u.is_empty()) {
            process::resolve_user(u)?;
        }
        if let Some(w) = req.workdir.as_deref().filter(|w| !w.is_empty())
            && w.starts_with('/')
            && !Path::new(w).is_dir()
        {
            return Err(Error::invalid("--workdir", w, "no such directory"));
        }
        if let Some(p) = req.netns_path.as_deref().filter(|p| !p.is_empty()) {
            let p = Path::new(p);
            if !netns::is_pinned(p) && !p.starts_with("/proc") {
                return Err(Error::invalid("netns", p.display(), "not a network namespace file"));
            }
        }
        let id = names::new_id();
        let cx = SandboxContext {
            own_netns: self.paths.netns_file(&id),
            host_netns: self.paths.host_netns_file(),
            host_name: nix::unistd::gethostname().ok().map(|h| h.to_string_lossy().into_owned()),
            log: if req.log_opts.is_empty() {
                None
            } else {
                Some(self.log_defaults.with_options(&req.log_opts)?)
            },
            ports: PortLimits::of_host(),
            created: now(),
            id,
        };
        let plan = plan_sandbox(&state, req, &cx)?;
        self.apply_sandbox(&plan).await?;
        let sb = &plan.sb;
        let mut warnings = plan.warnings.clone();
        if let Ok(st) = self.store.state() {
            warnings.extend(self.serve_dns(&st, sb));
        }
        self.sync_lb().await;
        tracing::info!(sandbox = %sb.name, id = %sb.short_id(), "sandbox created");
        Ok(Created { id: sb.id.clone(), warnings })
    }

    /// Applies a sandbox plan: its namespace, endpoint and ports, then the
    /// records in one commit. Each kernel step pushes its reversal; any
    /// failure (the commit's included) rolls all of them back.
    pub(super) async fn apply_sandbox(&self, plan: &SandboxPlan) -> Result<()> {
        let sb = &plan.sb;
        let netns_path = Path::new(&sb.netns);
        let mut undo = Undo::new();
        let res = async {
            if sb.owns_netns {
                netns::create(netns_path)?;
                undo.push(format!("remove namespace {}", netns_path.display()), async move {
                    netns::remove(netns_path)
                });
                let nl = Netlink::in_netns(netns_path)?;
                let lo = nl.require_index("lo").await?;
                nl.set_up(lo).await?;
            }
            let tx = self.store.begin()?;
            if let (Some(net), Some(ep)) = (&plan.net, &plan.endpoint) {
                tx.put_endpoint(&ep.ep, &net.name)?;
                if let Some(with_vips) = &ep.vips {
                    tx.put_network(with_vips)?;
                }
                self.apply_endpoint(net, sb, ep, &mut undo).await?;
            }
            // The sockets hold the ports; dropped on failure, they free them.
            let (bindings, fds) = reserve_ports(&plan.ports)?;
            if let (true, Some(ep)) = (plan.program_ports, &plan.endpoint) {
                let entries = self.service_entries(&bindings, &ep.ep).await?;
                self.dp.services.set(&entries)?;
                let keys = super::publish::keys_of(&entries);
                undo.push("remove the published ports from the datapath", async move {
                    self.dp.services.remove(&keys).into_iter().next().map_or(Ok(()), Err)
                });
            }
            let record = Sandbox { bindings, ..sb.clone() };
            tx.put_sandbox(&record)?;
            self.store.commit(tx)?;
            if !fds.is_empty() {
                self.reservations.lock().unwrap_or_else(|p| p.into_inner()).insert(sb.id.clone(), fds);
            }
            Ok(())
        }
        .await;
        undo.settle(res).await
    }

    /// Writes the sandbox's /etc files and starts its process.
    pub async fn start(self: &Arc<Self>, sb_ref: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let mut sb = state.require_sandbox(sb_ref)?.clone();
        if sb.state == SandboxState::Running && sb.pid.is_some_and(|p| process::alive(p, sb.pid_start)) {
            return Ok(());
        }
        if sb.cmd.is_empty() {
            return Err(Error::invalid("command", &sb.name, "this sandbox has no command to start"));
        }
        if let NetworkMode::Container(t) = &sb.mode {
            let running = state.sandboxes.iter().any(|s| &s.id == t && s.state == SandboxState::Running);
            if !netns::is_pinned(Path::new(&sb.netns)) && !running {
                return Err(Error::Conflict(format!("cannot join network of a non running container: {t}")));
            }
        }
        let dir = self.paths.sandbox_dir(&sb.id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create dir", dir.display(), e))?;
        let resolv = dir.join("resolv.conf");
        let hosts = dir.join("hosts");
        // container:X shares X's namespace, and so X's resolver.
        let dns_owner = match &sb.mode {
            NetworkMode::Container(t) => state.sandboxes.iter().find(|s| &s.id == t).unwrap_or(&sb),
            _ => &sb,
        };
        let host_resolv = std::fs::read_to_string(&self.host_resolv_conf).unwrap_or_default();
        let resolv_text = if Self::wants_dns(&state, dns_owner) {
            // Our resolver; it forwards to --dns when given, else to the host's.
            self.dns.sandbox_resolv_conf(&dns_owner.dns_search, &dns_owner.dns_options)
        } else if dns_owner.dns.is_empty()
            && dns_owner.dns_search.is_empty()
            && dns_owner.dns_options.is_empty()
        {
            host_resolv
        } else {
            let servers =
                if dns_owner.dns.is_empty() { etc::nameservers(&host_resolv) } else { dns_owner.dns.clone() };
            etc::resolv_conf(
                "# Generated by dataplane (--dns).\n",
                &servers,
                &host_resolv,
                &dns_owner.dns_search,
                &[],
                &dns_owner.dns_options,
            )
        };
        std::fs::write(&resolv, resolv_text).map_err(|e| Error::io("write", resolv.display(), e))?;
        let mut h = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for ep in state.endpoints_of_sandbox(&sb.id) {
            h.push_str(&format!("{}\t{}\n", ep.ip, sb.hostname));
        }
        for x in &sb.extra_hosts {
            h.push_str(&format!("{}\t{}\n", x.ip, x.name));
        }
        // Legacy links: the linked sandbox's address on a network both share.
        let mine: Vec<&str> = state.endpoints_of_sandbox(&sb.id).map(|e| e.network_id.as_str()).collect();
        for (target, alias) in &sb.links {
            let Some(t) = state.sandbox(target) else { continue };
            let ep = state.endpoints_of_sandbox(&t.id).find(|e| mine.contains(&e.network_id.as_str()));
            if let Some(ep) = ep {
                let names = if *alias == t.name { t.name.clone() } else { format!("{alias} {}", t.name) };
                h.push_str(&format!("{}\t{names} {}\n", ep.ip, t.hostname));
            }
        }
        std::fs::write(&hosts, h).map_err(|e| Error::io("write", hosts.display(), e))?;
        let identity = sb.user.as_deref().map(process::resolve_user).transpose()?;
        let launch = process::Launch {
            cmd: sb.cmd.clone(),
            env: process::environment(&sb.hostname, sb.user.as_deref(), &sb.env),
            identity,
            netns: (sb.mode != NetworkMode::Host).then(|| PathBuf::from(&sb.netns)),
            hostname: sb.hostname.clone(),
            resolv_conf: resolv,
            hosts,
            log: self.paths.log_file(&sb.id),
            log_limits: sb.log.unwrap_or(self.log_defaults),
            tty: sb.tty,
            stdin: sb.open_stdin,
            workdir: sb.workdir.clone(),
            console_size: sb.console_size,
        };
        let mut child = process::spawn(&launch)?;
        let pid = child.id();
        sb.pid = Some(pid);
        sb.pid_start = process::start_time(pid);
        sb.state = SandboxState::Running;
        sb.started_at = Some(now());
        let tx = self.store.begin()?;
        tx.put_sandbox(&sb)?;
        if let Err(e) = self.store.commit(tx) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let (tx_exit, _) = watch::channel(None);
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).insert(sb.id.clone(), tx_exit.clone());
        let engine = Arc::clone(self);
        let id = sb.id.clone();
        tokio::spawn(async move {
            // Without a thread per sandbox: a blocking wait each would fill
            // the runtime's blocking pool (512) and stall every other use of it.
            let status = process::wait_exit(child).await;
            let code = match status {
                Ok(s) => s
                    .code()
                    .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)),
                _ => -1,
            };
            engine.on_exit(&id, pid, code).await;
            tx_exit.send_replace(Some(code));
        });
        self.sync_lb().await;
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
            sb.finished_at = Some(now());
            if let Ok(tx) = self.store.begin()
                && tx.put_sandbox(&sb).is_ok()
                && let Err(e) = self.store.commit(tx)
            {
                tracing::warn!(sandbox = %sb.name, error = %e, "recording the exit");
            }
            tracing::info!(sandbox = %sb.name, code, "exited");
            sb.auto_remove
        };
        // Its aliases' virtual IPs stop sending it new flows.
        self.sync_lb().await;
        if auto_remove && let Err(e) = self.remove_sandbox(id, true).await {
            tracing::warn!(sandbox = id, error = %e, "auto-remove failed");
        }
    }

    /// Waits for the sandbox's process to exit; returns its exit code.
    pub async fn wait(&self, sb_ref: &str) -> Result<i32> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        let rx = self.exits.lock().unwrap_or_else(|p| p.into_inner()).get(&sb.id).map(|t| t.subscribe());
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

    /// SIGTERM, then SIGKILL after `grace` (None: 10 s, Docker's default).
    pub async fn stop(&self, sb_ref: &str, grace: Option<Duration>) -> Result<()> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        if let Some(pid) = sb.pid {
            process::stop(pid, sb.pid_start, grace.unwrap_or(STOP_GRACE)).await;
        }
        // The reaper records the exit of our own children; after a restart we do.
        let _g = self.lock.lock().await;
        if let Some(mut cur) = self.store.state()?.sandbox(&sb.id).cloned()
            && cur.state == SandboxState::Running
        {
            cur.state = SandboxState::Exited(143);
            cur.pid = None;
            cur.pid_start = None;
            cur.finished_at = Some(now());
            let tx = self.store.begin()?;
            tx.put_sandbox(&cur)?;
            self.store.commit(tx)?;
        }
        self.sync_lb().await;
        Ok(())
    }

    /// `kill -s SIGNAL`: sends the signal to the sandbox's process (its
    /// group leader only, as Docker sends it to the container's PID 1).
    pub async fn kill(&self, sb_ref: &str, signal: &str) -> Result<()> {
        let sig = process::parse_signal(signal)?;
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?;
        match sb.pid {
            Some(pid) if sb.state == SandboxState::Running && process::alive(pid, sb.pid_start) => {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
                    .map_err(|e| Error::sys("kill", &sb.name, e))?;
                tracing::info!(sandbox = %sb.name, signal = %sig, "signalled");
                Ok(())
            }
            _ => Err(Error::NotRunning(sb.name.clone())),
        }
    }

    /// Gives a sandbox another name; its DNS name follows (here and, on an
    /// overlay network, on the other hosts).
    pub async fn rename(&self, sb_ref: &str, new_name: &str) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let mut sb = state.require_sandbox(sb_ref)?.clone();
        if let Some(o) = sb.owner {
            return Err(owned_by(&sb, o));
        }
        let name = new_name.trim_start_matches('/');
        names::check_name(name)?;
        if sb.name == name {
            return Err(Error::invalid("name", name, "it is already the sandbox's name"));
        }
        if state.sandboxes.iter().any(|s| s.name == name) {
            return Err(Error::SandboxExists(name.to_string()));
        }
        let old = std::mem::replace(&mut sb.name, name.to_string());
        let tx = self.store.begin()?;
        tx.put_sandbox(&sb)?;
        self.store.commit(tx)?;
        if let Ok(st) = self.store.state() {
            self.publish_overlay_liveness(&st).await;
        }
        tracing::info!(sandbox = %sb.name, old = %old, "renamed");
        Ok(())
    }

    /// Removes a sandbox. The records go first, in one transaction: if that
    /// fails (a full disk), the sandbox is still whole. Then the kernel
    /// side, every step tried; what could not be undone comes back as
    /// warnings (and goes at the next reconcile).
    pub async fn remove_sandbox(&self, sb_ref: &str, force: bool) -> Result<Removed> {
        let state = self.store.state()?;
        let sb = state.require_sandbox(sb_ref)?.clone();
        if let Some(owner) = sb.owner {
            return Err(owned_by(&sb, owner));
        }
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
            return Ok(Removed { id: sb.id, warnings: Vec::new() });
        };
        let failed = self.remove_sandbox_locked(&state, &sb).await?;
        tracing::info!(sandbox = %sb.name, "removed");
        Ok(Removed { id: sb.id.clone(), warnings: teardown_warnings(&sb.name, failed) })
    }

    /// Removes `sb` (the request lock held): its records in one
    /// transaction, then every kernel step; returns the steps that failed.
    pub(super) async fn remove_sandbox_locked(
        &self,
        state: &State,
        sb: &Sandbox,
    ) -> Result<Vec<(&'static str, Error)>> {
        let tx = self.store.begin()?;
        for ep in state.endpoints_of_sandbox(&sb.id) {
            tx.del_endpoint(ep)?;
        }
        tx.del_sandbox(&sb.id)?;
        self.store.commit(tx)?;
        let netns_path = PathBuf::from(&sb.netns);
        let addrs: Vec<std::net::IpAddr> =
            state.endpoints_of_sandbox(&sb.id).flat_map(Endpoint::addrs).collect();
        let mut failed: Vec<(&'static str, Error)> = Vec::new();
        for e in self.unpublish(sb, &addrs) {
            failed.push(("unpublishing the ports", e));
        }
        for ep in state.endpoints_of_sandbox(&sb.id) {
            if let Some(net) = state.networks.iter().find(|n| n.id == ep.network_id) {
                for e in self.remove_endpoint(net, ep, &netns_path).await {
                    failed.push(("removing an endpoint", e));
                }
            }
        }
        self.stop_dns(&sb.id);
        if sb.owns_netns
            && let Err(e) = netns::remove(&netns_path)
        {
            failed.push(("removing the network namespace", e));
        }
        let dir = self.paths.sandbox_dir(&sb.id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                failed.push(("removing the sandbox directory", Error::io("remove", dir.display(), e)));
            }
            _ => {}
        }
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&sb.id);
        self.sync_lb().await;
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ports::parse_publish;
    use crate::engine::fixtures::{net, state_with};
    use crate::engine::publish::PortClaim;

    fn cx() -> SandboxContext {
        SandboxContext {
            id: "c".repeat(64),
            created: "2026-11-30T00:00:00Z".into(),
            own_netns: "/run/dp/netns/own".into(),
            host_netns: "/run/dp/netns/host".into(),
            host_name: Some("thehost".into()),
            log: None,
            ports: PortLimits { ephemeral: (40000, 40009), budget: Some((1024, 4)) },
        }
    }

    fn req(network: &str, publish: &[&str]) -> SandboxCreate {
        SandboxCreate {
            name: Some("c1".into()),
            network: network.into(),
            publish: publish.iter().map(|p| parse_publish(p).expect("spec")).collect(),
            cmd: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_sandbox_is_planned_whole_before_anything_happens() {
        let st = state_with(&[('a', "eth0", "10.9.0.2")]);
        let p = plan_sandbox(&st, &req("web", &["8080:80", "53/udp"]), &cx()).expect("plan");
        assert_eq!(
            (p.sb.name.as_str(), p.sb.netns.as_str(), p.sb.owns_netns),
            ("c1", "/run/dp/netns/own", true)
        );
        assert_eq!(p.sb.hostname, "c".repeat(12));
        let ep = p.endpoint.as_ref().expect("an endpoint on web");
        assert_eq!(
            (ep.ep.ip.to_string().as_str(), ep.ep.ifname.as_str(), ep.first),
            ("10.9.0.3", "eth0", true)
        );
        assert!(p.program_ports && p.warnings.is_empty(), "{:?}", p.warnings);
        let claims: Vec<_> =
            p.ports.claims.iter().map(|c| (c.host_ports.clone(), c.any, c.container_port)).collect();
        assert_eq!(claims, [(8080..=8080, false, 80), (40000..=40009, true, 53)]);
    }

    #[test]
    fn dockers_refusals_and_warnings_come_from_the_plan() {
        let mut st = state_with(&[('a', "eth0", "10.9.0.2")]);
        st.networks.push(Network { name: "inner".into(), id: "i".repeat(64), internal: true, ..net(false) });
        let refused =
            |r: SandboxCreate| plan_sandbox(&st, &r, &cx()).map(|_| ()).expect_err("refused").to_string();
        assert!(
            refused(SandboxCreate { name: Some("sa".into()), ..req("web", &[]) }).contains("already in use")
        );
        assert!(
            refused(req("container:sa", &["80"]))
                .contains("port publishing and the container type network mode")
        );
        assert!(refused(req("nosuch", &[])).contains("nosuch"));
        assert!(
            refused(SandboxCreate { hostname: Some("a b".into()), ..req("web", &[]) }).contains("hostname")
        );
        assert!(refused(SandboxCreate { ip: Some("10.9.0.2".into()), ..req("web", &[]) }).contains("in use"));
        // Host mode: ports are dropped with Docker's warning; the host's name.
        let p = plan_sandbox(&st, &req("host", &["8080:80"]), &cx()).expect("host mode");
        assert_eq!(
            (p.sb.netns.as_str(), p.sb.owns_netns, p.sb.hostname.as_str()),
            ("/run/dp/netns/host", false, "thehost")
        );
        assert!(p.ports.claims.is_empty() && p.sb.ports.is_empty());
        assert_eq!(p.warnings, ["Published ports are discarded when using host network mode"]);
        // An --internal network holds the ports without programming them.
        let p = plan_sandbox(&st, &req("inner", &["8080:80"]), &cx()).expect("internal");
        assert!(!p.program_ports && p.ports.claims.len() == 1);
        assert_eq!(p.warnings, ["ports are not published: network inner is --internal"]);
    }

    #[test]
    fn ports_are_refused_in_the_plan_when_held_or_past_the_open_file_budget() {
        let mut st = state_with(&[('a', "eth0", "10.9.0.2")]);
        st.sandboxes[0].bindings.push(PortBinding {
            host_ip: std::net::Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
            v6_loopback: false,
            v4_only: false,
            host_ip6: None,
        });
        let refused = |publish: &[&str]| {
            plan_sandbox(&st, &req("web", publish), &cx()).map(|_| ()).expect_err("refused").to_string()
        };
        assert!(
            refused(&["127.0.0.1:8080:80"])
                .ends_with("Bind for 127.0.0.1:8080 failed: port is already allocated")
        );
        assert!(refused(&["9000:80", "9000:81"]).contains("9000 failed: port is already allocated"));
        // udp 8080 is free; the budget (4 more) is not.
        assert!(plan_sandbox(&st, &req("web", &["8080:80/udp"]), &cx()).is_ok());
        assert!(refused(&["9000-9004:80-84"]).contains("cannot publish more than 4 more ports"));
        // IPv6-only bindings: no overlap with 0.0.0.0.
        assert!(plan_sandbox(&st, &req("web", &["[2001:db8::1]:9000-9003:80-83"]), &cx()).is_ok());
        assert!(refused(&["[::ffff:10.0.0.1]:80:80"]).contains("not a unicast IPv6 address of the host"));
        // 8080 is held on 0.0.0.0 and `::`: taken over IPv6 too.
        assert!(
            refused(&["[2001:db8::1]:8080:80"])
                .ends_with("Bind for [2001:db8::1]:8080 failed: port is already allocated")
        );
        // A range for one container port, and -P's exposed ports, are "any" claims.
        let mut r = req("web", &["9000-9009:80"]);
        r.publish_all = true;
        r.expose = vec![Exposed { port: 80, proto: Proto::Tcp }, Exposed { port: 81, proto: Proto::Tcp }];
        let p = plan_sandbox(&st, &r, &cx()).expect("plan");
        let claims: Vec<_> =
            p.ports.claims.iter().map(|c| (c.host_ports.clone(), c.any, c.container_port)).collect();
        assert_eq!(claims, [(9000..=9009, true, 80), (40000..=40009, true, 81)]);
    }

    #[test]
    fn reserving_takes_the_first_port_nobody_holds_and_refuses_a_taken_fixed_one() {
        // A port some host process holds (loopback only, ours for the test).
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let held = holder.local_addr().expect("addr").port();
        let claim = |ports: std::ops::RangeInclusive<u16>, any: bool| PortClaim {
            host_ip: std::net::Ipv4Addr::LOCALHOST,
            host_ports: ports,
            any,
            container_port: 80,
            proto: Proto::Tcp,
            v6_loopback: false,
            v4_only: false,
            host_ip6: None,
        };
        let err = reserve_ports(&PortPlan {
            claims: vec![claim(held..=held, false)],
            taken: vec![],
            runtime_holds: false,
        })
        .expect_err("held by a host process");
        assert!(err.to_string().contains("the port is already in use"), "{err}");
        // The next port is held by another sandbox (in the store): a range skips both.
        let next = held.wrapping_add(1).max(1024);
        let taken = vec![claim(next..=next, false).binding(next)];
        let plan = PortPlan {
            claims: vec![claim(held..=held.saturating_add(20), true)],
            taken,
            runtime_holds: false,
        };
        let (bindings, fds) = reserve_ports(&plan).expect("a free port in the range");
        assert_eq!(fds.len(), 1);
        assert!(bindings[0].host_port != held && bindings[0].host_port != next, "{bindings:?}");
        // Dropping the sockets releases the port.
        let port = bindings[0].host_port;
        drop(fds);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} still held");
    }

    #[test]
    fn reservations_hold_each_family_a_port_is_published_on() {
        let claim = |host_ip6: Option<std::net::Ipv6Addr>, port: u16| PortPlan {
            claims: vec![PortClaim {
                host_ip: std::net::Ipv4Addr::UNSPECIFIED,
                host_ports: port..=port,
                any: false,
                container_port: 80,
                proto: Proto::Tcp,
                v6_loopback: false,
                v4_only: false,
                host_ip6,
            }],
            taken: vec![],
            runtime_holds: false,
        };
        // A host process on 127.0.0.1: 0.0.0.0 + `::` (one dual-stack
        // socket) is refused; `[::1]` alone is not.
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = v4.local_addr().expect("addr").port();
        let err = reserve_ports(&claim(None, port)).expect_err("0.0.0.0 is held");
        assert!(err.to_string().contains(&format!("0.0.0.0:{port} and [::]:{port}")), "{err}");
        let (_, fds) = reserve_ports(&claim(Some(std::net::Ipv6Addr::LOCALHOST), port)).expect("::1 is free");
        assert_eq!(fds.len(), 1);
        // Held on [::1]: a host process cannot take it, over IPv4 it can.
        assert!(std::net::TcpListener::bind(("::1", port)).is_err(), "[::1]:{port} not held");
        drop(v4);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
        // Both families held by the wildcard's one socket.
        drop(fds);
        let free = std::net::TcpListener::bind("[::]:0").expect("bind").local_addr().expect("addr").port();
        let (_, fds) = reserve_ports(&claim(None, free)).expect("free");
        assert_eq!(fds.len(), 1);
        assert!(std::net::TcpListener::bind(("127.0.0.1", free)).is_err(), "0.0.0.0:{free} not held");
        assert!(std::net::TcpListener::bind(("::1", free)).is_err(), "[::]:{free} not held");
        // An address the host does not have.
        let addr = "2001:db8::77".parse().ok();
        let err = reserve_ports(&claim(addr, free)).expect_err("not the host's");
        assert!(err.to_string().contains("not one of the host's"), "{err}");
    }
}
