//! Daemon start-up: open the store, load BPF, reconcile the kernel to the
//! store, serve the API on the unix socket, tell systemd we are ready, and
//! stop cleanly on SIGINT/SIGTERM (leaving pinned BPF state in place).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::ServiceExt;
use axum::extract::Request;
use tower::Layer;

use crate::api::server;
use crate::datapath::Datapath;
use crate::engine::Engine;
use crate::store::Store;
use crate::sys::netlink::Netlink;
use crate::sys::paths::{self, Paths};

/// How often idle conntrack entries are collected.
const CT_GC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// How long open API connections may finish after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

#[derive(clap::Args)]
#[command(after_help = "Example:\n  dataplane daemon --state-dir /var/lib/dataplane --uplink eth0")]
pub struct DaemonArgs {
    /// State directory (store, namespace files, logs).
    #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = paths::DEFAULT_BPFFS)]
    pub bpffs: PathBuf,
    /// cgroup-v2 directory for the socket hooks (default: the cgroup-v2 root).
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// Uplink interface (default: the interface of the default route).
    #[arg(long)]
    pub uplink: Option<String>,
    /// The host's resolv.conf: where the embedded DNS forwards names it does not own.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Idle timeout of UDP flows, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub ct_udp_timeout: u64,
    /// Idle timeout of established TCP flows, in seconds.
    #[arg(long, default_value_t = 86400, value_parser = clap::value_parser!(u64).range(1..))]
    pub ct_tcp_timeout: u64,
    /// Default size at which a sandbox's output log is rotated (`--log-opt max-size` per sandbox).
    #[arg(long, default_value = "10m")]
    pub log_max_size: String,
    /// Default number of output log files kept per sandbox (`--log-opt max-file`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub log_max_file: u32,
    /// Mutations are refused while the state dir's filesystem has less free space than this.
    #[arg(long, default_value = "16m")]
    pub min_free_space: String,
    /// Idle timeout of flows not yet answered (no traffic back), in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub ct_unreplied_timeout: u64,
    /// Serve Docker's network and IPAM plugin protocol on DIR/dataplane.sock,
    /// where dockerd finds it (`docker network create -d dataplane`); "" turns it off.
    #[arg(long, value_name = "DIR", default_value = paths::DEFAULT_DOCKER_PLUGIN_DIR)]
    pub docker_plugin_dir: String,
    /// Join a cluster whose store is etcd: etcd://IP:PORT[,IP:PORT…].
    #[arg(long, value_name = "URL", requires = "cluster_advertise")]
    pub cluster_store: Option<String>,
    /// This host's underlay address, as other hosts reach it (with --cluster-store).
    #[arg(long, value_name = "IP", requires = "cluster_store")]
    pub cluster_advertise: Option<std::net::IpAddr>,
    /// IPv6 on the default `bridge` network too (dual stack, as `network create --ipv6`).
    #[arg(long)]
    pub ipv6: bool,
    /// The default bridge's IPv6 subnet (default: a /64 of the host's ULA prefix).
    #[arg(long, value_name = "CIDR", requires = "ipv6")]
    pub fixed_cidr_v6: Option<String>,
    /// Drop packets that firewall rules deny with XDP in the uplink's driver
    /// (native XDP only), before the kernel allocates them; off by default
    /// (on veth, XDP costs GRO). tcx judges the same rules either way.
    #[arg(long)]
    pub xdp: bool,
    /// Also serve Prometheus metrics (GET /metrics) on this TCP address
    /// (they are always on the API socket). Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// The daemon's command line, checked: logging set up, sizes parsed, paths found; then [`run`].
pub async fn main(socket: PathBuf, a: DaemonArgs) -> anyhow::Result<()> {
    // The resolver library logs every query at info (a log write per query
    // costs more than answering it): at info it says only warnings.
    let spec = match a.log_level.as_str() {
        "info" => "info,hickory_server=warn,hickory_proto=warn".to_string(),
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .map_err(|e| anyhow::anyhow!("--log-level {}: {e}", a.log_level))?;
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cgroup = match a.cgroup {
        Some(c) => c,
        None => paths::default_cgroup().map_err(|e| anyhow::anyhow!("finding the cgroup-v2 root: {e}"))?,
    };
    let docker_plugin = (!a.docker_plugin_dir.is_empty())
        .then(|| PathBuf::from(&a.docker_plugin_dir).join(paths::DOCKER_PLUGIN_SOCKET));
    let paths = Paths { socket, state_dir: a.state_dir, bpffs: a.bpffs, cgroup, docker_plugin };
    let ct_timeouts = crate::datapath::conntrack::Timeouts {
        tcp_established: std::time::Duration::from_secs(a.ct_tcp_timeout),
        udp: std::time::Duration::from_secs(a.ct_udp_timeout),
        unreplied: std::time::Duration::from_secs(a.ct_unreplied_timeout),
    };
    let logs = crate::sys::logs::LogLimits {
        max_size: crate::sys::logs::parse_size(&a.log_max_size)
            .map_err(|e| anyhow::anyhow!("--log-max-size: {e}"))?,
        max_files: a.log_max_file,
    };
    let min_free = match a.min_free_space.as_str() {
        // 0: no check up front (the store still recovers from a full disk).
        "0" => 0,
        v => crate::sys::logs::parse_size(v).map_err(|e| anyhow::anyhow!("--min-free-space: {e}"))?,
    };
    let cluster = match (&a.cluster_store, a.cluster_advertise) {
        (Some(store), Some(ip)) => Some((crate::cluster::parse_store(store)?, ip)),
        _ => None,
    };
    let default_bridge6 = a.ipv6.then(|| crate::domain::ipam6::Ipam6Request {
        subnet: a.fixed_cidr_v6.clone(),
        ..Default::default()
    });
    run(Options {
        paths,
        uplink: a.uplink,
        ct_timeouts,
        resolv_conf: a.resolv_conf,
        logs,
        min_free,
        cluster,
        default_bridge6,
        metrics_addr: a.metrics_addr,
        xdp: a.xdp,
    })
    .await
}

pub struct Options {
    pub paths: Paths,
    pub uplink: Option<String>,
    pub ct_timeouts: crate::datapath::conntrack::Timeouts,
    /// The host's resolv.conf (upstreams of the embedded DNS).
    pub resolv_conf: std::path::PathBuf,
    /// Output log limits of sandboxes that set none.
    pub logs: crate::sys::logs::LogLimits,
    /// Free space the state dir must keep for mutations to go ahead (bytes).
    pub min_free: u64,
    /// The cluster store's endpoints and this host's underlay address.
    pub cluster: Option<(Vec<String>, std::net::IpAddr)>,
    /// The default bridge's IPv6 config (`--ipv6 [--fixed-cidr-v6]`); None: IPv4 only.
    pub default_bridge6: Option<crate::domain::ipam6::Ipam6Request>,
    /// Where Prometheus metrics are served over TCP too (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// XDP on the uplink for firewall denies (`--xdp`).
    pub xdp: bool,
}

/// Each published port holds a socket (the port's reservation): the soft
/// open-file limit goes up to the hard one, as Docker's daemon does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let paths = opts.paths;
    // Bound first: an address that cannot be had stops the start before
    // anything is made.
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-addr {addr}: binding"))?,
        ),
        None => None,
    };
    raise_fd_limit();
    std::fs::create_dir_all(&paths.state_dir)
        .with_context(|| format!("creating state dir {}", paths.state_dir.display()))?;
    // Forwarding between bridges and to the uplink is ours to route; isolation is enforced in BPF.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")?;
    let host = Netlink::current()?;
    let uplink = match opts.uplink {
        Some(u) => {
            host.require_index(&u).await.with_context(|| format!("--uplink {u}"))?;
            Some(u)
        }
        None => match host.default_route_interface().await? {
            Some(idx) => host.links().await?.into_iter().find(|l| l.index == idx).map(|l| l.name),
            None => None,
        },
    };
    let dp = Datapath::load(&paths.bpffs, opts.ct_timeouts).context("loading BPF programs")?;
    let store = Store::open(&paths.db(), &paths.state_dir, opts.min_free).context("opening the store")?;
    let cluster = match opts.cluster {
        Some((endpoints, address)) => {
            let me = crate::cluster::Node {
                id: node_id(&paths.state_dir)?,
                address,
                hostname: nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                joined: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let lease_file = paths.state_dir.join("cluster-lease");
            Some(
                crate::cluster::Cluster::join(&endpoints, me, &lease_file)
                    .await
                    .context("joining the cluster")?,
            )
        }
        None => None,
    };
    let settings = crate::engine::Settings {
        host_resolv_conf: opts.resolv_conf,
        log_defaults: opts.logs,
        cluster,
        default_bridge6: opts.default_bridge6,
        xdp: opts.xdp,
    };
    let engine = Engine::new(paths.clone(), uplink.clone(), store, host, dp, settings);
    // What the kernel already has right is not written again: the writes
    // of this pass are counted (0 on a host that was right).
    let (started, netlink0, bpf0) =
        (std::time::Instant::now(), crate::sys::netlink::writes(), crate::datapath::write::count());
    engine.ensure_predefined().await.context("creating predefined networks")?;
    let program_links = engine.reconcile().await.context("reconciling the kernel to the store")?;
    // Overlay: this host's addresses claimed again, then the others' followed.
    engine.reclaim_overlay().await;
    let done = crate::telemetry::Reconciled {
        took: started.elapsed(),
        netlink_writes: crate::sys::netlink::writes() - netlink0,
        bpf_writes: crate::datapath::write::count() - bpf0,
        program_links,
    };
    engine.telemetry.observe_reconcile(done);
    tracing::info!(
        seconds = format_args!("{:.3}", done.took.as_secs_f64()),
        netlink_writes = done.netlink_writes,
        bpf_writes = done.bpf_writes,
        program_links,
        "kernel reconciled to the store"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
        "reconciled in {:.3} s: netlink_writes={} bpf_writes={} program_links={}",
        done.took.as_secs_f64(),
        done.netlink_writes,
        done.bpf_writes,
        program_links
    ))]);
    engine.start_cluster_sync();
    // The kernel's copy of the resolver's names follows the store.
    engine.start_kernel_dns_sync();
    // Drop events, and expiry of idle flows (LRU eviction only handles pressure).
    engine.start_datapath_tasks(CT_GC_INTERVAL).context("starting the datapath's tasks")?;
    // Veths that shape their traffic (a chained CNI bandwidth plugin) get it through their qdisc.
    engine.watch_shaping().await.context("watching the host's qdiscs")?;

    if let Some(dir) = paths.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(&paths.socket);
    let listener = tokio::net::UnixListener::bind(&paths.socket)
        .with_context(|| format!("binding {}", paths.socket.display()))?;
    std::fs::set_permissions(&paths.socket, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(
        socket = %paths.socket.display(),
        uplink = uplink.as_deref().unwrap_or("none"),
        "dataplane daemon ready"
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);

    let metrics = metrics_listener.map(|l| serve_metrics(l, Arc::clone(&engine)));
    let plugin = match &paths.docker_plugin {
        Some(sock) => Some(serve_docker_plugin(sock, Arc::clone(&engine))?),
        None => None,
    };
    let app =
        tower::util::MapRequestLayer::new(server::strip_version).layer(server::router(Arc::clone(&engine)));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let notify = Arc::clone(&stopping);
    let eng = Arc::clone(&engine);
    let server = axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).with_graceful_shutdown(
        async move {
            shutdown().await;
            eng.begin_stopping();
            notify.notify_one();
        },
    );
    // Long-polling clients (`run` waiting for its command) must not hold the daemon up.
    tokio::select! {
        r = server => r.context("serving the API")?,
        _ = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("clients still connected after {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&paths.socket);
    if let Some(task) = metrics {
        task.abort();
    }
    if let (Some(task), Some(sock)) = (plugin, &paths.docker_plugin) {
        task.abort();
        let _ = std::fs::remove_file(sock);
    }
    // Pins outlive the daemon only where its bpffs mount does: in the
    // host's mount namespace, not in a private one (`ip netns exec`).
    let mnt = |p: &str| std::fs::metadata(p).ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    if mnt("/proc/1/ns/mnt").is_some() && mnt("/proc/1/ns/mnt") == mnt("/proc/self/ns/mnt") {
        tracing::info!(
            bpffs = %paths.bpffs.display(),
            "dataplane daemon stopped; its BPF programs and maps stay pinned: sandboxes keep their datapath until the next start"
        );
    } else {
        tracing::info!(
            bpffs = %paths.bpffs.display(),
            "dataplane daemon stopped; it ran in a mount namespace of its own, so its BPF pins last only while that namespace's bpffs mount does"
        );
    }
    Ok(())
}

/// This host's ID in the cluster: made once, kept in the state dir.
fn node_id(state_dir: &std::path::Path) -> anyhow::Result<String> {
    let file = state_dir.join("node-id");
    if let Ok(id) = std::fs::read_to_string(&file)
        && !id.trim().is_empty()
    {
        return Ok(id.trim().to_string());
    }
    let id = crate::domain::names::new_id()[..32].to_string();
    std::fs::create_dir_all(state_dir)?;
    std::fs::write(&file, &id).with_context(|| format!("writing {}", file.display()))?;
    Ok(id)
}

/// Serves `GET /metrics` on `listener` (`--metrics-addr`) until the daemon stops.
fn serve_metrics(listener: tokio::net::TcpListener, engine: Arc<Engine>) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving Prometheus metrics");
    }
    let app = server::metrics_router(engine);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    })
}

/// Serves Docker's plugin protocol on `sock` until the daemon stops.
fn serve_docker_plugin(
    sock: &std::path::Path,
    engine: Arc<Engine>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(sock);
    let listener = tokio::net::UnixListener::bind(sock)
        .with_context(|| format!("binding the Docker plugin socket {}", sock.display()))?;
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o660))?;
    tracing::info!(socket = %sock.display(), "serving Docker's network and IPAM plugin protocol");
    let app = crate::api::plugin::router(engine);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the Docker plugin socket stopped");
        }
    }))
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
