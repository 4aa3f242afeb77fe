//! Name resolution, measured: queries per second and average latency of
//! `dnsperf -c 4` asking a user network's names (A records of N sandboxes,
//! round robin over them), against our embedded resolver from inside a
//! client sandbox (127.0.0.11, reached through the socket hooks) and
//! against aardvark-dns (Podman's resolver, the same names in its config)
//! bound on a gateway address in a namespace of its own, for N = 20 and 220.

use std::io::Write;
use std::process::{Command, Stdio};

use dataplane_tests::{Host, Netns};
use serde_json::{Value, json};

use super::Procs;

const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

/// dnsperf's figures: (queries per second, average latency in ms, lost).
fn dnsperf(out: &std::process::Output) -> anyhow::Result<(f64, f64, f64)> {
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> anyhow::Result<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("dnsperf printed no {label:?}: {}", dataplane_tests::text(out)))
    };
    Ok((field("Queries per second:")?, field("Average Latency (s):")? * 1000.0, field("Queries lost:")?))
}

/// A file of `n` names, one A query each.
fn queries(dir: &std::path::Path, n: usize) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(format!("queries-{n}"));
    let mut f = std::fs::File::create(&path)?;
    for i in 0..n {
        writeln!(f, "s{i} A")?;
    }
    Ok(path)
}

fn ours(n: usize, file: &str, secs: u32) -> anyhow::Result<(f64, f64, f64)> {
    let (h, _ext) = std::panic::catch_unwind(|| Host::with_external_args("dnsb", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let ok = |args: &[&str]| -> anyhow::Result<()> {
        let o = h.dp(args);
        anyhow::ensure!(o.status.success(), "dataplane {args:?}: {}", dataplane_tests::text(&o).trim());
        Ok(())
    };
    ok(&["network", "create", "--subnet", "10.79.0.0/16", "names"])?;
    for i in 0..n {
        ok(&["run", "-d", "--name", &format!("s{i}"), "--network", "names", "sleep", "infinity"])?;
    }
    ok(&["run", "-d", "--name", "client", "--network", "names", "sleep", "infinity"])?;
    let o =
        h.exec("client", &["dnsperf", "-s", "127.0.0.11", "-d", file, "-c", "4", "-l", &secs.to_string()]);
    dnsperf(&o)
}

fn aardvark(n: usize, file: &str, dir: &std::path::Path, secs: u32) -> anyhow::Result<(f64, f64, f64)> {
    let ns = Netns::new("aard");
    let o = ns.run(&["ip", "addr", "add", "10.79.0.1/16", "dev", "lo"]);
    anyhow::ensure!(o.status.success(), "gateway address: {}", dataplane_tests::text(&o));
    let config = dir.join(format!("aardvark-{n}"));
    std::fs::create_dir_all(&config)?;
    let mut f = std::fs::File::create(config.join("names"))?;
    writeln!(f, "10.79.0.1")?;
    for i in 0..n {
        writeln!(f, "{:064x} 10.79.{}.{}  s{i}", i + 1, (i + 2) / 256, (i + 2) % 256)?;
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
    let o = ns.run(&["dnsperf", "-s", "10.79.0.1", "-d", file, "-c", "4", "-l", &secs.to_string()]);
    dnsperf(&o)
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

pub fn dns(quick: bool, secs: f64) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("dataplane-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let secs = (secs.round() as u32).max(1);
    let sizes: &[usize] = if quick { &[20] } else { &[20, 220] };
    let mut out = serde_json::Map::new();
    for &n in sizes {
        let file = queries(&dir, n)?;
        let file = file.display().to_string();
        let (qps, ms, lost) = ours(n, &file, secs)?;
        let peer = aardvark(n, &file, &dir, secs);
        let mut row = json!({
            "dataplane": {"qps": qps, "avg_ms": ms, "lost": lost},
        });
        match peer {
            Ok((q, m, l)) => {
                row["aardvark-dns"] = json!({"qps": q, "avg_ms": m, "lost": l});
                row["qps_ratio"] = json!(if q > 0.0 { qps / q } else { 0.0 });
            }
            Err(e) => row["aardvark-dns"] = json!({"error": format!("{e:#}")}),
        }
        out.insert(n.to_string(), row);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Value::Object(out))
}
