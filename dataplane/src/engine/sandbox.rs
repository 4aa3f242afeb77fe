//! Sandboxes: create, start (with the reaper), wait, stop, remove.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::domain::names;
use crate::error::{Error, Result};
use crate::sys::netlink::Netlink;
use crate::sys::netns;
use crate::sys::process;

impl Engine {
    pub async fn create_sandbox(&self, req: SandboxCreate) -> Result<Created> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let id = names::new_id();
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
        process::check_cmd(&req.cmd)?;
        process::check_env(&req.env)?;
        if let Some(u) = req.user.as_deref().filter(|u| !u.is_empty()) {
            process::resolve_user(u)?;
        }
        let log =
            if req.log_opts.is_empty() { None } else { Some(self.log_defaults.with_options(&req.log_opts)?) };
        let mut warnings = Vec::new();
        let ports = req.publish.clone();
        let expose = req.expose.clone();
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
        match &mode {
            NetworkMode::Host if (!ports.is_empty() || req.publish_all) => {
                warnings.push("Published ports are discarded when using host network mode".to_string());
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
                "network-scoped alias is supported only for containers in user defined networks".into(),
            ));
        }
        if req.ip.as_deref().is_some_and(|s| !s.is_empty()) && !user_defined {
            return Err(Error::Conflict(
                "user specified IP address is supported on user defined networks only".into(),
            ));
        }
        let (netns_path, owns) = match (&mode, &req.netns_path) {
            (NetworkMode::Container(t), _) => {
                let t =
                    state.sandboxes.iter().find(|s| &s.id == t).map(|s| s.netns.clone()).unwrap_or_default();
                (PathBuf::from(t), false)
            }
            (NetworkMode::Host, _) => (self.paths.host_netns_file(), false),
            (_, Some(p)) if !p.is_empty() => {
                let p = PathBuf::from(p);
                if !netns::is_pinned(&p) && !p.starts_with("/proc") {
                    return Err(Error::invalid("netns", p.display(), "not a network namespace file"));
                }
                (p, false)
            }
            _ => (self.paths.netns_file(&id), true),
        };
        let ports = if mode == NetworkMode::Host { Vec::new() } else { ports };
        let mut sb = Sandbox {
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
            bindings: Vec::new(),
            env: req.env.clone(),
            user: req.user.clone().filter(|u| !u.is_empty()),
            log,
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
            let ep = match &net {
                Some(n) => {
                    Some(self.add_endpoint(&state, n, &sb, req.ip.as_deref(), &req.aliases, &tx).await?)
                }
                None => None,
            };
            let undo_endpoint = async {
                if let (Some(n), Some(ep)) = (&net, &ep) {
                    let _ = self.remove_endpoint(n, ep, &netns_path).await;
                }
            };
            let published = match self.publish(&state, &mut sb, ep.as_ref(), net.as_ref()).await {
                Ok(w) => w,
                Err(e) => {
                    undo_endpoint.await;
                    return Err(e);
                }
            };
            if let Err(e) = tx.put_sandbox(&sb).and_then(|()| self.store.commit(tx)) {
                self.unpublish(&sb, &[]);
                undo_endpoint.await;
                return Err(e);
            }
            Ok(published)
        }
        .await;
        match res {
            Ok(w) => warnings.extend(w),
            Err(e) => {
                if owns {
                    let _ = netns::remove(&netns_path);
                }
                return Err(e);
            }
        }
        if let Ok(st) = self.store.state() {
            warnings.extend(self.serve_dns(&st, &sb));
        }
        self.sync_lb().await;
        tracing::info!(sandbox = %sb.name, id = %sb.short_id(), "sandbox created");
        Ok(Created { id, warnings })
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
        let resolv_text = if Self::wants_dns(&state, dns_owner) {
            self.dns.sandbox_resolv_conf()
        } else {
            std::fs::read_to_string(&self.host_resolv_conf).unwrap_or_default()
        };
        std::fs::write(&resolv, resolv_text).map_err(|e| Error::io("write", resolv.display(), e))?;
        let mut h = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for ep in state.endpoints_of_sandbox(&sb.id) {
            h.push_str(&format!("{}\t{}\n", ep.ip, sb.hostname));
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
        };
        let mut child = process::spawn(&launch)?;
        let pid = child.id();
        sb.pid = Some(pid);
        sb.pid_start = process::start_time(pid);
        sb.state = SandboxState::Running;
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
            let status = tokio::task::spawn_blocking(move || child.wait()).await;
            let code = match status {
                Ok(Ok(s)) => s
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
            self.store.commit(tx)?;
        }
        self.sync_lb().await;
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
        // The records go first, in one transaction: if that fails (a full
        // disk), the sandbox is still whole; after it, teardown tries every
        // step and what it cannot remove goes at the next reconcile.
        let tx = self.store.begin()?;
        for ep in state.endpoints_of_sandbox(&sb.id) {
            tx.del_endpoint(ep)?;
        }
        tx.del_sandbox(&sb.id)?;
        self.store.commit(tx)?;
        let netns_path = PathBuf::from(&sb.netns);
        let addrs: Vec<Ipv4Addr> = state.endpoints_of_sandbox(&sb.id).map(|e| e.ip).collect();
        self.unpublish(&sb, &addrs);
        for ep in state.endpoints_of_sandbox(&sb.id) {
            if let Some(net) = state.networks.iter().find(|n| n.id == ep.network_id)
                && let Err(e) = self.remove_endpoint(net, ep, &netns_path).await
            {
                tracing::warn!(sandbox = %sb.name, error = %e, "endpoint teardown");
            }
        }
        self.stop_dns(&sb.id);
        if sb.owns_netns
            && let Err(e) = netns::remove(&netns_path)
        {
            tracing::warn!(sandbox = %sb.name, error = %e, "namespace teardown");
        }
        let _ = std::fs::remove_dir_all(self.paths.sandbox_dir(&sb.id));
        self.exits.lock().unwrap_or_else(|p| p.into_inner()).remove(&sb.id);
        self.sync_lb().await;
        tracing::info!(sandbox = %sb.name, "removed");
        Ok(sb.id)
    }
}
