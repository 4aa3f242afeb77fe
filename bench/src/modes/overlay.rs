//! Overlay networks across hosts, measured:
//!
//! - data path: a client on host A and a server on host B, three ways, in
//!   interleaved rounds — dataplane's overlay (VXLAN in BPF, etcd),
//!   the limit (two namespaces joined by plain kernel VXLAN devices with a
//!   static remote, bridges, no BPF, nothing else), and the underlay with
//!   no encapsulation;
//! - control plane: seconds from `run` on host A until a sandbox on host B
//!   reaches the new sandbox (p50/p99);
//! - scale: N daemons on one LAN each running sandboxes on one overlay
//!   network: writes to etcd, watch events, convergence time, memory.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::etcd::Etcd;
use dataplane_tests::{Host, Netns, sh, unique, veth_pair};
use serde_json::{Value, json};

use super::{Container, Mode, Serve, must, tune_client};
use crate::{measure, report};

/// Runs `dataplane ARGS` on `h`, failing with its output.
fn dp(h: &Host, args: &[&str]) -> anyhow::Result<String> {
    let o = h.dp(args);
    anyhow::ensure!(o.status.success(), "dataplane {args:?}: {}", dataplane_tests::text(&o).trim());
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn started(etcd: &Etcd, tag: &str, last: u8) -> anyhow::Result<Host> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut h = etcd.host_unstarted(tag, last);
        h.daemon_args.extend(["--log-level".to_string(), "warn".to_string()]);
        h.start();
        h
    }))
    .map_err(|_| anyhow::anyhow!("a dataplane daemon did not start"))
}

/// Overlay address of sandbox `name` on `net`.
fn ip_of(h: &Host, name: &str, net: &str) -> anyhow::Result<String> {
    let v: Value = serde_json::from_str(&dp(h, &["inspect", name])?)?;
    v[0]["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("{name} has no address on {net}"))
}

/// Whether `ns` reaches `ip` (one ping, 200 ms).
fn reaches(ns: &str, ip: &str) -> bool {
    sh(&["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "0.2", ip]).status.success()
}

/// dataplane's overlay between two hosts: the mode (client sandbox on
/// host 1 → server sandbox on host 2), the hosts, and the server's
/// namespace (a sandbox of host 2, which watches host 1's new sandboxes).
fn ours(etcd: &Etcd) -> anyhow::Result<(Mode, Host, Host, String)> {
    let h1 = started(etcd, "ovb1", 11)?;
    let h2 = started(etcd, "ovb2", 12)?;
    dp(&h1, &["network", "create", "-d", "overlay", "--subnet", "10.60.0.0/24", "bench"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dp(&h2, &["network", "ls"])?.contains(" bench ") {
        anyhow::ensure!(Instant::now() < deadline, "the overlay network did not reach host 2");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Named namespaces, adopted: the harness's tools run in them by name.
    let client = Netns::new("ovc");
    let mut server = Container::new("ovs");
    dp(&h1, &["create", "--name", "client", "--network", "bench", "--netns", &client.path()])?;
    dp(&h2, &["create", "--name", "server", "--network", "bench", "--netns", &server.ns.path()])?;
    server.serve(Serve::All)?;
    tune_client(&client.name)?;
    let addr = ip_of(&h2, "server", "bench")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reaches(&client.name, &addr) {
        anyhow::ensure!(Instant::now() < deadline, "the client never reached the server across hosts");
    }
    let server_ns = server.ns.name.clone();
    let mode = Mode::new("overlay-dataplane", &client.name, &addr).keep(server).keep(client);
    Ok((mode, h1, h2, server_ns))
}

/// Two hosts on a LAN of their own (a bridge in a third namespace, as the
/// overlay's hosts have): `a` 10.252.0.1 and `b` 10.252.0.2.
struct TwoHosts {
    a: Netns,
    b: Netns,
    _lan: Netns,
}

fn two_hosts(tag: &str) -> anyhow::Result<TwoHosts> {
    let lan = Netns::new(&format!("{tag}l"));
    must(&["ip", "-n", &lan.name, "link", "add", "lan0", "type", "bridge"])?;
    must(&["ip", "-n", &lan.name, "link", "set", "lan0", "up"])?;
    let (a, b) = (Netns::new(&format!("{tag}a")), Netns::new(&format!("{tag}b")));
    for (ns, ip) in [(&a, "10.252.0.1/24"), (&b, "10.252.0.2/24")] {
        let far = unique("l");
        veth_pair("lan", &ns.name, &far, &lan.name);
        must(&["ip", "-n", &lan.name, "link", "set", &far, "master", "lan0", "up"])?;
        must(&["ip", "-n", &ns.name, "addr", "add", ip, "dev", "lan"])?;
        must(&["ip", "-n", &ns.name, "link", "set", "lan", "up"])?;
    }
    Ok(TwoHosts { a, b, _lan: lan })
}

/// The limit: a container namespace behind a bridge on each host, the
/// bridges joined by kernel VXLAN devices (VNI 42, the other host as their
/// static remote: one FDB entry), MTU 1450 as ours. No BPF, no netfilter rule.
fn plain_vxlan() -> anyhow::Result<Mode> {
    let hosts = two_hosts("vx")?;
    let (a, b) = (&hosts.a, &hosts.b);
    let client = Netns::new("vxc");
    let mut server = Container::new("vxs");
    for (host, local, remote, c, ip) in [
        (a, "10.252.0.1", "10.252.0.2", &client.name, "10.61.0.2/24"),
        (b, "10.252.0.2", "10.252.0.1", &server.ns.name, "10.61.0.3/24"),
    ] {
        let h = |args: &[&str]| {
            let mut full = vec!["ip", "-n", &host.name];
            full.extend_from_slice(args);
            must(&full)
        };
        h(&["link", "add", "br0", "type", "bridge"])?;
        h(&[
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "42",
            "local",
            local,
            "remote",
            remote,
            "dstport",
            "4789",
            "nolearning",
        ])?;
        h(&["link", "set", "vx0", "master", "br0", "up"])?;
        h(&["link", "set", "br0", "up"])?;
        let port = unique("p");
        veth_pair(&port, &host.name, "eth0", c);
        h(&["link", "set", &port, "mtu", "1450", "master", "br0", "up"])?;
        must(&["ip", "-n", c, "link", "set", "eth0", "mtu", "1450"])?;
        must(&["ip", "-n", c, "addr", "add", ip, "dev", "eth0"])?;
        must(&["ip", "-n", c, "link", "set", "eth0", "up"])?;
    }
    server.serve(Serve::All)?;
    tune_client(&client.name)?;
    Ok(Mode::new("overlay-vxlan", &client.name, "10.61.0.3").keep(server).keep(client).keep(hosts))
}

/// The underlay itself: host to host, no encapsulation.
fn underlay() -> anyhow::Result<Mode> {
    let hosts = two_hosts("ul")?;
    let (a, b) = (&hosts.a, &hosts.b);
    let mut procs = super::Procs::default();
    let child = Command::new("ip")
        .args(["netns", "exec", &b.name, "sh", "-c", &Serve::All.command()])
        // A group of its own: iperf3 runs in the background of this shell.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    procs.0.push(child);
    super::wait_listening(&["ip", "netns", "exec", &b.name], Serve::All.ports())?;
    tune_client(&a.name)?;
    let client = a.name.clone();
    Ok(Mode::new("underlay", &client, "10.252.0.2").keep(procs).keep(hosts))
}

/// Seconds from `run` on host 1 until a sandbox on host 2 reaches the new one.
fn control_plane(h1: &Host, observer: &str, n: usize) -> anyhow::Result<Value> {
    let mut secs = Vec::new();
    for i in 0..n {
        let name = format!("cp{i}");
        let t = Instant::now();
        dp(h1, &["run", "-d", "--name", &name, "--network", "bench", "sleep", "infinity"])?;
        let ip = ip_of(h1, &name, "bench")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !reaches(observer, &ip) {
            anyhow::ensure!(Instant::now() < deadline, "{name} never became reachable from host 2");
        }
        secs.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = secs.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize];
    Ok(json!({ "sandboxes": n, "p50_s": pct(0.5), "p99_s": pct(0.99), "max_s": pct(1.0) }))
}

/// etcd's current revision (every write adds one).
fn revision(etcd: &Etcd) -> anyhow::Result<i64> {
    let o = etcd.etcdctl(&["endpoint", "status", "-w", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout)?;
    v[0]["Status"]["header"]["revision"].as_i64().ok_or_else(|| anyhow::anyhow!("no revision in {v}"))
}

fn rss_mib(h: &Host) -> f64 {
    let Some(pid) = h.daemon_pid() else { return 0.0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// `hosts` daemons, `per_host` sandboxes each on one overlay network.
fn scale(hosts: usize, per_host: usize) -> anyhow::Result<Value> {
    let etcd = Etcd::lan(1);
    let mut hs = Vec::new();
    for i in 0..hosts {
        hs.push(started(&etcd, &format!("ovk{i}"), 20 + i as u8)?);
    }
    let rss_idle: f64 = hs.iter().map(rss_mib).sum::<f64>() / hosts as f64;
    let rev0 = revision(&etcd)?;
    dp(&hs[0], &["network", "create", "-d", "overlay", "--subnet", "10.62.0.0/22", "scale"])?;
    let rev_net = revision(&etcd)?;
    let t = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let runs: Vec<_> = hs
            .iter()
            .enumerate()
            .map(|(i, h)| {
                s.spawn(move || -> anyhow::Result<()> {
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !dp(h, &["network", "ls"])?.contains(" scale ") {
                        anyhow::ensure!(Instant::now() < deadline, "the network did not reach host {i}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    for j in 0..per_host {
                        dp(
                            h,
                            &[
                                "run",
                                "-d",
                                "--name",
                                &format!("s{i}x{j}"),
                                "--network",
                                "scale",
                                "sleep",
                                "infinity",
                            ],
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for r in runs {
            r.join().map_err(|_| anyhow::anyhow!("a host's runs panicked"))??;
        }
        Ok(())
    })?;
    let created = t.elapsed().as_secs_f64();
    // Converged: every host's resolver answers the last sandbox of every other host.
    let last: Vec<String> = (0..hosts).map(|i| format!("s{i}x{}", per_host - 1)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    'wait: loop {
        anyhow::ensure!(Instant::now() < deadline, "the hosts did not converge");
        for (i, h) in hs.iter().enumerate() {
            let asker = format!("s{i}x0");
            for name in &last {
                let o = h.exec(&asker, &["dig", "+short", "+time=1", "+tries=1", name]);
                if String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue 'wait;
                }
            }
        }
        break;
    }
    let converged = t.elapsed().as_secs_f64();
    let rev1 = revision(&etcd)?;
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/dataplane/v1/"]);
    let keys = String::from_utf8_lossy(&keys.stdout).lines().filter(|l| !l.is_empty()).count();
    let writes = rev1 - rev_net;
    Ok(json!({
        "hosts": hosts,
        "sandboxes_per_host": per_host,
        "network_create_writes": rev_net - rev0,
        "writes": writes,
        "writes_per_sandbox": writes as f64 / (hosts * per_host) as f64,
        "watch_events_delivered": writes * hosts as i64,
        "keys": keys,
        "seconds_to_create_all": created,
        // Until every host's resolver answered every host's last sandbox
        // (asked in turn: an upper bound).
        "seconds_to_converge": converged,
        "daemon_rss_mib_idle": rss_idle,
        "daemon_rss_mib_loaded": hs.iter().map(rss_mib).sum::<f64>() / hosts as f64,
    }))
}

/// The measured phase.
pub fn overlay(rounds: u32, secs: f64, quick: bool) -> anyhow::Result<Value> {
    let etcd = Etcd::lan(3);
    let (ours, h1, h2, observer) = ours(&etcd)?;
    let modes = [ours, plain_vxlan()?, underlay()?];
    for m in &modes {
        measure::latency_and_rate(m, super::ECHO_PORT, 0.5)?;
    }
    let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for m in &modes {
            for (metric, v) in measure::datapath(m, secs)? {
                samples.entry((m.name.to_string(), metric)).or_default().push(v);
            }
        }
    }
    let results = crate::aggregate(samples);
    let ratios = report::ratios(&results, "overlay-dataplane", &["overlay-vxlan", "underlay"]);
    let cp = control_plane(&h1, &observer, if quick { 10 } else { 100 })?;
    drop(modes);
    drop((h1, h2, etcd));
    let scale = scale(10, if quick { 3 } else { 10 })?;
    Ok(json!({ "modes": results, "ratios": ratios, "control_plane": cp, "scale": scale }))
}
