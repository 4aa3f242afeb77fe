//! Conntrack at capacity: a SYN flood from the external namespace (random
//! sources of 198.18.0.0/15 that never answer) fills the flow table through
//! a published port while a legitimate client there opens connections to
//! the same port. Reported: the legitimate client's new connections/s
//! before, during and after the flood, the table's fill, insert failures,
//! and how long after the flood the client is back to its rate.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::Host;
use serde_json::{Value, json};

use super::{ECHO_PORT, HOST_IP, Procs, Serve, tune_client, wait_listening};

/// A series' value in the daemon's /metrics.
fn metric(h: &Host, series: &str) -> Option<f64> {
    let socket = h.socket.display().to_string();
    let o = dataplane_tests::sh(&["curl", "-s", "--unix-socket", &socket, "http://d/metrics"]);
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .find(|l| l.split(' ').next() == Some(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// New connections/s of the legitimate client for `secs`.
fn rate(ext: &str, secs: f64) -> anyhow::Result<f64> {
    let target = format!("{HOST_IP}:{ECHO_PORT}");
    let bin = super::bench_bin();
    let o = dataplane_tests::sh(&[
        "ip",
        "netns",
        "exec",
        ext,
        "env",
        "RUST_BACKTRACE=0",
        &bin,
        "conns",
        &target,
        "--seconds",
        &secs.to_string(),
    ]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| anyhow::anyhow!("conns: {e}: {}", dataplane_tests::text(&o)))?;
    v["per_second"].as_f64().ok_or_else(|| anyhow::anyhow!("conns: no rate in {v}"))
}

pub fn ct_capacity(secs: f64) -> anyhow::Result<Value> {
    let (h, ext) = std::panic::catch_unwind(|| Host::with_external_args("ctcap", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    tune_client(&ext.name)?;
    let spec = format!("{ECHO_PORT}:{ECHO_PORT}");
    let o = h.dp(&["run", "-d", "--name", "srv", "-p", &spec, "sh", "-c", &Serve::Echo.command()]);
    anyhow::ensure!(o.status.success(), "dataplane run: {}", dataplane_tests::text(&o).trim());
    let key = h.inspect("srv")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    wait_listening(&["nsenter", &format!("--net={key}")], Serve::Echo.ports())?;
    let capacity = metric(&h, "dataplane_conntrack_capacity");
    let failed0 = metric(&h, "dataplane_conntrack_insert_failed_total").unwrap_or(0.0);
    let before = rate(&ext.name, secs)?;

    // The flood runs until the table is full (its fill read from the GC
    // passes, every 5 s), through the measurement; bounded at 120 s.
    let target = format!("{HOST_IP}:{ECHO_PORT}");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ext.name, &super::bench_bin(), "synflood", &target, "--seconds", "120"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let flood = Procs(vec![cmd.spawn()?]);
    let flood_start = Instant::now();
    let full = 0.95 * f64::from(dataplane_common::MAX_CT);
    let mut entries = 0.0;
    while flood_start.elapsed() < Duration::from_secs(100) {
        std::thread::sleep(Duration::from_secs(1));
        entries = metric(&h, "dataplane_conntrack_entries").unwrap_or(0.0);
        if entries >= full {
            break;
        }
    }
    let fill_seconds = flood_start.elapsed().as_secs_f64();
    let during = rate(&ext.name, secs)?;
    drop(flood);
    let flood_end = Instant::now();
    let failed = metric(&h, "dataplane_conntrack_insert_failed_total").unwrap_or(0.0) - failed0;

    // Recovery: half-second samples until the client is back to 90% of its
    // rate (bounded at 60 s).
    let mut recovered = None;
    let mut after = 0.0;
    while flood_end.elapsed() < Duration::from_secs(60) {
        after = rate(&ext.name, 0.5)?;
        if after >= 0.9 * before {
            recovered = Some(flood_end.elapsed().as_secs_f64());
            break;
        }
    }
    Ok(json!({
        "capacity": capacity,
        "ipv4_table": dataplane_common::MAX_CT,
        "entries_when_measured": entries,
        "seconds_to_fill": fill_seconds,
        "insert_failed": failed,
        "conns_before": before,
        "conns_during": during,
        "during_over_before": if before > 0.0 { during / before } else { 0.0 },
        "conns_after": after,
        "recovery_seconds": recovered,
    }))
}
