//! Name resolution under load, with `dnsperf`: the same names served by our
//! embedded resolver (asked from inside a client sandbox at 127.0.0.11,
//! through the socket hooks) and by aardvark-dns (Podman's resolver, the
//! same names in its config, on a gateway address in a namespace of its
//! own). Four query sets of N names each — sandbox names, their aliases,
//! and two of names neither owns, forwarded to an upstream (dnsmasq): one
//! answered with TTL 0, one with TTL 300 — and by
//! Docker's embedded resolver (real dockerd, the same names on a user
//! network, asked from a client container's namespace); measured
//! two ways: the most queries per second `dnsperf -c 4` gets with one
//! sending thread or two, whichever is more for that system (with its
//! loss), and latency percentiles at a fixed 5,000 queries/s from every
//! answer's own latency (`dnsperf -v`). Ours again with many more
//! sandboxes in the store on another network: a query's cost must not grow
//! with the store.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use dataplane_tests::{DnsUpstream, Host, Netns};
use serde_json::{Value, json};

use super::Procs;

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";
/// Offered load of the latency runs (queries per second).
const LATENCY_RATE: u32 = 5000;

/// The name of entry i of a query set.
type NameOf = fn(usize) -> String;

/// A query set: its label in the report, what it is in words, the name of entry i.
pub struct Set {
    pub label: &'static str,
    pub what: &'static str,
    name: NameOf,
}

/// The query sets. The upstream answers `*.outside.example` with TTL 0
/// (every query is a round trip to it) and `c{i}.cached.example` with TTL
/// 300, as real names have (a resolver that keeps answers may give them
/// from memory).
pub const SETS: [Set; 4] = [
    Set { label: "names", what: "sandbox names", name: |i| format!("s{i}") },
    Set { label: "aliases", what: "aliases", name: |i| format!("a{i}") },
    Set { label: "forwarded", what: "forwarded names (TTL 0)", name: |i| format!("f{i}.outside.example") },
    Set {
        label: "forwarded_ttl",
        what: "forwarded names (TTL 300)",
        name: |i| format!("c{i}.cached.example"),
    },
];

/// dnsperf's figures: (queries per second, lost %).
fn throughput(out: &Output) -> anyhow::Result<(f64, f64)> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |label: &str| -> anyhow::Result<String> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::to_string))
            .ok_or_else(|| anyhow::anyhow!("dnsperf printed no {label:?}: {}", dataplane_tests::text(out)))
    };
    let qps: f64 = line("Queries per second:")?.trim().parse()?;
    // "Queries lost:         0 (0.00%)"
    let lost = line("Queries lost:")?;
    let pct = lost
        .split('(')
        .nth(1)
        .and_then(|p| p.trim_end_matches([')', '%']).parse().ok())
        .ok_or_else(|| anyhow::anyhow!("dnsperf's loss: {lost}"))?;
    Ok((qps, pct))
}

/// p50 and p99 (ms) of the answers `dnsperf -v` reported, and how many.
fn latencies(out: &Output) -> anyhow::Result<(f64, f64, usize)> {
    let mut ms: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("> NOERROR"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    anyhow::ensure!(!ms.is_empty(), "dnsperf -v reported no answers: {}", dataplane_tests::text(out));
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() - 1) as f64 * p) as usize];
    Ok((at(0.5), at(0.99), ms.len()))
}

/// A file of `n` queries of one set.
fn queries(dir: &std::path::Path, set: &str, name: NameOf, n: usize) -> anyhow::Result<String> {
    let path = dir.join(format!("{set}-{n}"));
    let mut f = std::fs::File::create(&path)?;
    for i in 0..n {
        writeln!(f, "{} A", name(i))?;
    }
    Ok(path.display().to_string())
}

/// Runs dnsperf (through `run`, which puts it where the resolver is asked
/// from) against `server` for each set; one JSON object per set.
fn measure(
    run: &dyn Fn(&[&str]) -> Output,
    server: &str,
    files: &[(&str, String)],
    secs: u32,
) -> anyhow::Result<Value> {
    let mut out = serde_json::Map::new();
    for (set, file) in files {
        // dnsperf with one sending thread and with two, the better of the
        // two kept for each system: on 2 cores one thread cannot load an
        // answer given in the kernel, and two compete with a userspace
        // server for the CPUs — each system gets the load it answers best.
        let mut best: Option<(f64, f64, u32)> = None;
        for threads in [1u32, 2] {
            let t = threads.to_string();
            let o = run(&["dnsperf", "-s", server, "-d", file, "-c", "4", "-T", &t, "-l", &secs.to_string()]);
            let (qps, lost) = throughput(&o)?;
            if best.is_none_or(|(q, _, _)| qps > q) {
                best = Some((qps, lost, threads));
            }
        }
        let (qps, lost, threads) = best.ok_or_else(|| anyhow::anyhow!("dnsperf was not run"))?;
        let rate = LATENCY_RATE.to_string();
        let o = run(&["dnsperf", "-s", server, "-d", file, "-c", "4", "-l", "2", "-Q", &rate, "-v"]);
        let (p50, p99, answers) = latencies(&o)?;
        out.insert(
            set.to_string(),
            json!({"qps": qps, "lost_pct": lost, "dnsperf_threads": threads, "p50_ms": p50, "p99_ms": p99, "latency_samples": answers}),
        );
    }
    Ok(Value::Object(out))
}

/// `run -d` of entry i on network `names` (name s{i}, alias a{i}), then `tail`.
fn run_named(i: usize, tail: &[&str]) -> Vec<String> {
    let head =
        ["run", "-d", "--name", &format!("s{i}"), "--network", "names", "--network-alias", &format!("a{i}")]
            .map(str::to_string);
    head.into_iter().chain(tail.iter().map(|t| t.to_string())).collect()
}

/// Ours: N sandboxes (names s{i}, aliases a{i}) on one network; measured,
/// then measured again with `more` sandboxes added on another network.
fn ours(n: usize, more: usize, files: &[(&str, String)], secs: u32) -> anyhow::Result<(Value, Value)> {
    let (h, ext) = std::panic::catch_unwind(|| Host::with_external_args("dnsb", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let _upstream = std::panic::catch_unwind(|| DnsUpstream::start(&ext))
        .map_err(|_| anyhow::anyhow!("the upstream resolver did not start"))?;
    let ok = |args: &[&str]| -> anyhow::Result<()> {
        let o = h.dp(args);
        anyhow::ensure!(o.status.success(), "dataplane {args:?}: {}", dataplane_tests::text(&o).trim());
        Ok(())
    };
    ok(&["network", "create", "--subnet", "10.79.0.0/16", "names"])?;
    for i in 0..n {
        let args = run_named(i, &["sleep", "infinity"]);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    ok(&["run", "-d", "--name", "client", "--network", "names", "sleep", "infinity"])?;
    let run = |args: &[&str]| h.exec("client", args);
    let small = measure(&run, "127.0.0.11", files, secs)?;
    ok(&["network", "create", "--subnet", "10.80.0.0/16", "elsewhere"])?;
    for i in 0..more {
        ok(&["run", "-d", "--name", &format!("x{i}"), "--network", "elsewhere", "sleep", "infinity"])?;
    }
    // Let what the creations set off settle (namespaces' teardown work,
    // log pumps starting) before measuring again.
    std::thread::sleep(std::time::Duration::from_secs(5));
    let big = measure(&run, "127.0.0.11", &files[..1], secs)?;
    Ok((small, big))
}

fn aardvark(n: usize, files: &[(&str, String)], dir: &std::path::Path, secs: u32) -> anyhow::Result<Value> {
    let ns = Netns::new("aard");
    for addr in ["10.79.0.1/16", "10.79.255.53/32"] {
        let o = ns.run(&["ip", "addr", "add", addr, "dev", "lo"]);
        anyhow::ensure!(o.status.success(), "address {addr}: {}", dataplane_tests::text(&o));
    }
    // Its upstream (names it does not own), through the namespace's resolv.conf.
    let _upstream = std::panic::catch_unwind(|| DnsUpstream::start_at(&ns, "10.79.255.53"))
        .map_err(|_| anyhow::anyhow!("the upstream resolver did not start"))?;
    let etc = std::path::PathBuf::from(format!("/etc/netns/{}", ns.name));
    std::fs::create_dir_all(&etc)?;
    let _etc = RemoveDir(etc.clone());
    std::fs::write(etc.join("resolv.conf"), "nameserver 10.79.255.53\n")?;
    let config = dir.join(format!("aardvark-{n}"));
    std::fs::create_dir_all(&config)?;
    let mut f = std::fs::File::create(config.join("names"))?;
    writeln!(f, "10.79.0.1")?;
    for i in 0..n {
        writeln!(f, "{:064x} 10.79.{}.{}  s{i},a{i}", i + 1, (i + 2) / 256, (i + 2) % 256)?;
    }
    drop(f);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, AARDVARK, "-c"])
        .arg(&config)
        .args(["-p", "53", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let _server = Procs(vec![cmd.spawn().map_err(|e| anyhow::anyhow!("starting {AARDVARK}: {e}"))?]);
    // It daemonizes (a session of its own) and says where in its pid file:
    // killed by that when this function ends, however it ends.
    let _daemon = Daemon(config.join("aardvark.pid"));
    // Bounded wait until it answers.
    let mut up = false;
    for _ in 0..50 {
        let o = ns.run(&["dig", "+short", "+time=1", "+tries=1", "@10.79.0.1", "s0"]);
        if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
            up = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::ensure!(up, "aardvark-dns never answered");
    measure(&|args: &[&str]| ns.run(args), "10.79.0.1", files, secs)
}

/// Docker's embedded resolver (real dockerd): N containers on a user
/// network (names s{i}, aliases a{i}), a client container whose `--dns` is
/// the upstream; dnsperf in the client's network namespace asks 127.0.0.11
/// (Docker's iptables rules there lead to its resolver).
fn docker(n: usize, files: &[(&str, String)], secs: u32) -> anyhow::Result<Value> {
    let host = super::PeerHost::new("dkdns")?;
    let _upstream = std::panic::catch_unwind(|| DnsUpstream::start(&host.ext))
        .map_err(|_| anyhow::anyhow!("the upstream resolver did not start"))?;
    host.run(&["ip", "link", "add", "dkdns0", "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "172.28.0.1/24", "dev", "dkdns0"])?;
    host.run(&["ip", "link", "set", "dkdns0", "up"])?;
    host.run(&["ip", "route", "add", "default", "via", super::EXTERNAL_IP])?;
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    let daemon = dataplane_tests::docker::Dockerd::start(
        &host.host.path(),
        &dir,
        &["--iptables=true", "--bridge", "dkdns0"],
        None,
    )
    .map_err(anyhow::Error::msg)?;
    super::docker::import(&daemon)?;
    let docker = |args: &[&str]| -> anyhow::Result<String> {
        let o = daemon.docker(args);
        anyhow::ensure!(
            o.status.success(),
            "docker {}: {}",
            args.join(" "),
            dataplane_tests::text(&o).trim()
        );
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    docker(&["network", "create", "--subnet", "10.79.0.0/16", "names"])?;
    let image = super::docker::IMAGE;
    for i in 0..n {
        let args = run_named(i, &[image, "sleep", "1d"]);
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    docker(&[
        "run",
        "-d",
        "--name",
        "client",
        "--network",
        "names",
        "--dns",
        super::EXTERNAL_IP,
        image,
        "sleep",
        "1d",
    ])?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", "client"])?;
    let netns = format!("--net=/proc/{pid}/ns/net");
    let run = |args: &[&str]| {
        let mut full = vec!["nsenter", netns.as_str()];
        full.extend_from_slice(args);
        dataplane_tests::sh(&full)
    };
    let o = run(&["dig", "+short", "+time=2", "+tries=1", "@127.0.0.11", "s0"]);
    anyhow::ensure!(
        !String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "Docker's resolver does not answer: {}",
        dataplane_tests::text(&o)
    );
    let v = measure(&run, "127.0.0.11", files, secs);
    drop(daemon);
    v
}

/// A directory removed on drop.
struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon known by its pid file, killed (and waited for, bounded) on drop.
struct Daemon(std::path::PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(pid) = std::fs::read_to_string(&self.0).ok().and_then(|p| p.trim().parse::<u32>().ok())
        else {
            return;
        };
        let _ = dataplane_tests::sh(&["kill", "-9", &pid.to_string()]);
        for _ in 0..50 {
            if dataplane_tests::process_ended(u64::from(pid)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Our queries per second ÷ a peer's, per query set.
fn qps_ratios(ours: &Value, peer: &Value) -> Value {
    let mut ratios = serde_json::Map::new();
    for Set { label: set, .. } in &SETS {
        if let (Some(a), Some(b)) = (ours[set]["qps"].as_f64(), peer[set]["qps"].as_f64())
            && b > 0.0
        {
            ratios.insert(set.to_string(), json!(a / b));
        }
    }
    Value::Object(ratios)
}

pub fn dns(quick: bool, secs: f64) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("dataplane-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _dir = RemoveDir(dir.clone());
    let secs = (secs.round() as u32).max(1);
    let (n, more) = if quick { (20, 50) } else { (100, 500) };
    anyhow::ensure!(
        n <= DnsUpstream::KEPT_NAMES,
        "the upstream answers {} kept names",
        DnsUpstream::KEPT_NAMES
    );
    let files: Vec<(&str, String)> = SETS
        .iter()
        .map(|set| Ok((set.label, queries(&dir, set.label, set.name, n)?)))
        .collect::<anyhow::Result<_>>()?;
    let (small, big) = ours(n, more, &files, secs)?;
    let mut out = json!({
        "measured_at": crate::first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        "names": n,
        "latency_rate_qps": LATENCY_RATE,
        "dataplane": small,
        "dataplane_larger_store": {"sandboxes_added": more, "sets": big},
    });
    match aardvark(n, &files, &dir, secs) {
        Ok(v) => {
            out["qps_ratio"] = qps_ratios(&out["dataplane"], &v);
            out["aardvark-dns"] = v;
        }
        Err(e) => out["aardvark-dns"] = json!({"error": format!("{e:#}")}),
    }
    match docker(n, &files, secs) {
        Ok(v) => {
            out["qps_ratio_docker"] = qps_ratios(&out["dataplane"], &v);
            out["docker"] = v;
        }
        Err(e) => out["docker"] = json!({"error": format!("{e:#}")}),
    }
    let flat = match (big["names"]["qps"].as_f64(), out["dataplane"]["names"]["qps"].as_f64()) {
        (Some(b), Some(s)) if s > 0.0 => Some(b / s),
        _ => None,
    };
    out["larger_store_qps_ratio"] = json!(flat);
    Ok(out)
}
