//! One sample of each metric for a mode: iperf3 for throughput and the
//! small-packet rate (with host CPU time from /proc/stat), the harness's
//! own load tools for latency, connection rate and the client address the
//! server sees.

use anyhow::Context;

use crate::modes::{ECHO_PORT, IPERF_PORT, Mode};

static PIN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Where pinned clients and servers run.
const CLIENT_CPU: &str = "0";
const SERVER_CPU: &str = "1";

/// Pins clients to CPU 0 and servers to CPU 1 from now on (with 2 CPUs or
/// more): the request/response latency no longer depends on where the
/// scheduler happens to put them.
pub fn set_pinning(on: bool) {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    PIN.store(on && cpus >= 2, std::sync::atomic::Ordering::Relaxed);
}

/// How clients and servers are placed, for the report.
pub fn pinning() -> String {
    if PIN.load(std::sync::atomic::Ordering::Relaxed) {
        format!("clients on CPU {CLIENT_CPU}, servers on CPU {SERVER_CPU}")
    } else {
        "not pinned".into()
    }
}

/// Pins every server the harness runs (the echo servers, iperf3) to
/// [`SERVER_CPU`], all their threads.
fn pin_servers() {
    if !PIN.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    for pattern in ["dataplane-bench serve", "iperf3 -s"] {
        let o = dataplane_tests::sh(&["pgrep", "-f", pattern]);
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = dataplane_tests::sh(&["taskset", "-a", "-p", "-c", SERVER_CPU, pid]);
        }
    }
}

fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    // The tools' errors end up in the report: no backtraces in them.
    let mut full = vec!["ip", "netns", "exec", ns, "env", "RUST_BACKTRACE=0"];
    if PIN.load(std::sync::atomic::Ordering::Relaxed) {
        full.extend_from_slice(&["taskset", "-c", CLIENT_CPU]);
    }
    full.extend_from_slice(args);
    dataplane_tests::sh(&full)
}

fn iperf(m: &Mode, secs: f64, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let t = format!("{secs}");
    let port = IPERF_PORT.to_string();
    // iperf3 takes an IPv6 address without brackets.
    let host = m.addr.trim_start_matches('[').trim_end_matches(']');
    let mut args = vec!["iperf3", "-c", host, "-p", &port, "-t", &t, "-J"];
    args.extend_from_slice(extra);
    let o = in_ns(&m.client, &args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("iperf3 in {}: {}", m.name, dataplane_tests::text(&o)))?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("iperf3 in {}: {e}", m.name);
    }
    Ok(v)
}

/// Runs one of the harness's load tools from the mode's client namespace
/// against `port`; returns its JSON.
fn tool(m: &Mode, what: &str, port: u16, secs: f64) -> anyhow::Result<serde_json::Value> {
    let bin = crate::modes::bench_bin();
    let addr = format!("{}:{port}", m.addr);
    let o = in_ns(&m.client, &[&bin, what, &addr, "--seconds", &secs.to_string()]);
    serde_json::from_slice(&o.stdout)
        .with_context(|| format!("{what} in {}: {}", m.name, dataplane_tests::text(&o)))
}

/// Busy CPU time of the whole machine so far, in seconds (all CPUs:
/// everything in /proc/stat's first line but idle and iowait).
pub fn busy_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let busy: f64 = fields.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    // USER_HZ is 100 on every Linux architecture we run on.
    busy / 100.0
}

/// TCP throughput of one stream from the mode's client (Gbit/s).
pub fn tcp_gbps(m: &Mode, secs: f64) -> anyhow::Result<f64> {
    let v = iperf(m, secs, &[])?;
    Ok(v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9)
}

/// One sample of every data-path metric for mode `m`.
pub fn datapath(m: &Mode, secs: f64) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let received = |v: &serde_json::Value, what: &str| v["end"]["sum_received"][what].as_f64().unwrap_or(0.0);
    pin_servers();
    let cpu0 = busy_cpu_seconds();
    let tcp1 = iperf(m, secs, &[])?;
    let tcp4 = iperf(m, secs, &["-P", "4"])?;
    let cpu = busy_cpu_seconds() - cpu0;
    let gb = (received(&tcp1, "bytes") + received(&tcp4, "bytes")) / 1e9;
    let udp = iperf(m, secs, &["-u", "-l", "64", "-b", "0"])?;
    let sum = &udp["end"]["sum"];
    let (sent, lost) = (sum["packets"].as_f64().unwrap_or(0.0), sum["lost_packets"].as_f64().unwrap_or(0.0));
    let kpps = (sent - lost) / sum["seconds"].as_f64().unwrap_or(secs).max(0.001) / 1000.0;
    let rr = tool(m, "rr", ECHO_PORT, secs)?;
    let conns = tool(m, "conns", ECHO_PORT, secs)?;
    Ok(vec![
        ("tcp_1_stream", received(&tcp1, "bits_per_second") / 1e9),
        ("tcp_4_streams", received(&tcp4, "bits_per_second") / 1e9),
        ("cpu_s_per_gb", if gb > 0.0 { cpu / gb } else { 0.0 }),
        ("udp_64b", kpps),
        ("udp_64b_loss", if sent > 0.0 { 100.0 * lost / sent } else { 0.0 }),
        ("rr_p50", rr["p50_us"].as_f64().unwrap_or(0.0)),
        ("rr_p99", rr["p99_us"].as_f64().unwrap_or(0.0)),
        ("rr_samples", rr["transactions"].as_f64().unwrap_or(0.0)),
        ("new_connections", conns["per_second"].as_f64().unwrap_or(0.0)),
    ])
}

/// Latency and connection rate against `port` (the scaling runs).
pub fn latency_and_rate(m: &Mode, port: u16, secs: f64) -> anyhow::Result<Vec<(&'static str, f64)>> {
    pin_servers();
    let rr = tool(m, "rr", port, secs)?;
    let conns = tool(m, "conns", port, secs)?;
    Ok(vec![
        ("rr_p50", rr["p50_us"].as_f64().unwrap_or(0.0)),
        ("new_connections", conns["per_second"].as_f64().unwrap_or(0.0)),
    ])
}

/// The client address the server sees for a connection from the mode's client.
pub fn address_seen(m: &Mode) -> anyhow::Result<String> {
    let bin = crate::modes::bench_bin();
    let addr = format!("{}:{ECHO_PORT}", m.addr);
    let o = in_ns(&m.client, &[&bin, "peer", &addr]);
    anyhow::ensure!(o.status.success(), "peer in {}: {}", m.name, dataplane_tests::text(&o));
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}
