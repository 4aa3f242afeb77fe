//! The restart phase: a host with many sandboxes and published ports, and
//! connections through some of them exchanging bytes all along; the daemon
//! is killed (`kill -9`) and started again. Reported: seconds from the
//! start to READY (sd_notify) and to reconciled (the daemon's `STATUS=`
//! after its reconcile pass), the writes that pass made, connections broken
//! and the longest stall any of them saw, and the daemon's memory.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane_tests::Host;
use dataplane_tests::hold::Held;
use serde_json::{Value, json};

use super::ours::rss_mib;
use super::{ECHO_PORT, EXTRA_PORT_BASE, Serve, wait_listening};

/// sd_notify messages as they arrive, with when.
struct Notifications {
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notifications {
    fn listen(path: &std::path::Path) -> anyhow::Result<Notifications> {
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        // Ends with the phase (the socket's file goes with the host's dir)
        // or after an hour at most.
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(3600);
            let mut buf = [0u8; 4096];
            while Instant::now() < end && Arc::strong_count(&g) > 1 {
                if let Ok(n) = sock.recv(&mut buf) {
                    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                    g.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), msg));
                }
            }
        });
        Ok(Notifications { got })
    }

    /// When a message containing `what` first arrived after `since`, waiting up to `limit`.
    fn wait(&self, what: &str, since: Instant, limit: Duration) -> Option<(Duration, String)> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            let got = self.got.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((t, m)) = got.iter().find(|(t, m)| *t >= since && m.contains(what)) {
                return Some((t.duration_since(since), m.clone()));
            }
            drop(got);
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The host's uplink address (`HOST_IP`), where the ports are published.
const HOST: [u8; 4] = [192, 0, 2, 1];

/// Dropped packets by series labels (`/metrics`, `verdict="drop"`).
fn drops(h: &Host) -> std::collections::BTreeMap<String, u64> {
    let socket = h.socket.display().to_string();
    let o = dataplane_tests::sh(&["curl", "-s", "--unix-socket", &socket, "http://d/metrics"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("dataplane_packets_total{") && l.contains("verdict=\"drop\""))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels.to_string(), n.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// A `KEY=value` field of an sd_notify STATUS line.
fn field(status: &str, key: &str) -> Option<f64> {
    status.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// `sandboxes` sandboxes publishing `ports` ports in all (ranges of equal
/// size), `flows` of them serving the echo server a held connection uses.
pub fn restart(sandboxes: usize, ports: usize, flows: usize) -> anyhow::Result<Value> {
    anyhow::ensure!(sandboxes > 0 && flows <= sandboxes, "flows must be at most sandboxes");
    let per = (ports / sandboxes).max(1);
    anyhow::ensure!(
        usize::from(EXTRA_PORT_BASE) + per * sandboxes <= 65535,
        "{ports} ports do not fit above {EXTRA_PORT_BASE}"
    );
    let (mut host, ext) = Host::with_external_unstarted("rst");
    host.daemon_args = vec!["--log-level".into(), "info".into()];
    let notify_path = host.dir.join("notify.sock");
    let notes = Notifications::listen(&notify_path)?;
    let env = [("NOTIFY_SOCKET", notify_path.to_str().unwrap_or_default())];
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.start_with_env(&env)))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let bench = super::bench_bin();
    let t = Instant::now();
    let mut targets = Vec::new();
    for i in 0..sandboxes {
        let first = usize::from(EXTRA_PORT_BASE) + i * per;
        let spec = match per {
            1 => format!("{first}:{ECHO_PORT}"),
            _ => format!("{first}-{}:{ECHO_PORT}-{}", first + per - 1, usize::from(ECHO_PORT) + per - 1),
        };
        let serve = if i < flows { Serve::Echo } else { Serve::Nothing };
        let name = format!("r{i}");
        let o =
            host.dp(&["run", "-d", "--name", &name, "-p", &spec, "sh", "-c", &serve.command_with(&bench)]);
        anyhow::ensure!(o.status.success(), "dataplane run {name}: {}", dataplane_tests::text(&o).trim());
        if i < flows {
            targets.push((name, u16::try_from(first)?));
        }
    }
    let seconds_to_create = t.elapsed().as_secs_f64();
    for (name, _) in &targets {
        let key =
            host.inspect(name)["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
        wait_listening(&["nsenter", &format!("--net={key}")], Serve::Echo.ports())?;
    }
    let addrs: Vec<std::net::SocketAddr> =
        targets.iter().map(|(_, p)| std::net::SocketAddr::from((HOST, *p))).collect();
    let held = Held::open(&ext.path(), &addrs)?;
    std::thread::sleep(Duration::from_secs(1));
    let rss_before = rss_mib(&host)?;
    let drops_before = drops(&host);

    host.kill_daemon();
    // Down for a second: the pinned datapath carries the flows alone.
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| host.start_with_env(&env)))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start again"))?;
    let answered = t0.elapsed().as_secs_f64();
    let limit = Duration::from_secs(120);
    let ready = notes.wait("READY=1", t0, limit).map(|(d, _)| d.as_secs_f64());
    let reconciled = notes.wait("reconciled", t0, limit);
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_mib(&host)?;
    let dropped: std::collections::BTreeMap<String, u64> = drops(&host)
        .into_iter()
        .map(|(k, v)| (v.saturating_sub(drops_before.get(&k).copied().unwrap_or(0)), k))
        .filter(|(n, _)| *n > 0)
        .map(|(n, k)| (k, n))
        .collect();
    let held = held.finish();
    let status = reconciled.as_ref().map(|(_, m)| m.clone()).unwrap_or_default();
    Ok(json!({
        "sandboxes": sandboxes,
        "published_ports": per * sandboxes,
        "seconds_to_create": seconds_to_create,
        "ready_s": ready,
        "api_answered_s": answered,
        "reconciled_s": reconciled.as_ref().map(|(d, _)| d.as_secs_f64()),
        "reconcile_netlink_writes": field(&status, "netlink_writes"),
        "reconcile_bpf_writes": field(&status, "bpf_writes"),
        "program_links": field(&status, "program_links"),
        "status": status,
        "held": held,
        "drops_during_restart": dropped,
        "rss_mib_before": rss_before,
        "rss_mib_after": rss_after,
    }))
}
