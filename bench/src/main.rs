//! `dataplane-bench`: measures dataplane and its peers on the same
//! topology, interleaved in rounds, and writes `report.json` and
//! `report.md`. Run it through `cargo xtask bench [--quick]` (as root).
//! Speeds are reported as ratios, never asserted.

mod load;
mod modes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use modes::{ECHO_PORT, IPERF_PORT, Mode};

#[derive(Parser)]
#[command(name = "dataplane-bench", about = "dataplane side by side with iptables-based peers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every mode, measure in interleaved rounds, write the report.
    Run {
        /// 1 s per measurement and 1 round: a smoke test of the harness.
        #[arg(long)]
        quick: bool,
        /// Rounds (each mode measured once per round).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Output directory.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
    },
    /// TCP echo server (runs inside the server namespace).
    Serve { port: u16 },
    /// Request/response latency over one connection; prints JSON.
    Rr {
        addr: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// New-connection rate; prints JSON.
    Conns {
        addr: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// What is measured: name, unit, and whether higher is better.
const METRICS: [(&str, &str, bool); 6] = [
    ("tcp_1_stream", "Gbit/s", true),
    ("tcp_4_streams", "Gbit/s", true),
    ("udp_64b", "kpps", true),
    ("rr_p50", "µs", false),
    ("rr_p99", "µs", false),
    ("new_connections", "conn/s", true),
];

#[derive(Serialize)]
struct Stat {
    unit: &'static str,
    higher_is_better: bool,
    samples: Vec<f64>,
    median: f64,
    min: f64,
    max: f64,
}

fn stat(unit: &'static str, higher_is_better: bool, mut samples: Vec<f64>) -> Stat {
    samples.sort_by(|a, b| a.total_cmp(b));
    let median = if samples.is_empty() {
        0.0
    } else if samples.len() % 2 == 1 {
        samples[samples.len() / 2]
    } else {
        (samples[samples.len() / 2 - 1] + samples[samples.len() / 2]) / 2.0
    };
    Stat {
        unit,
        higher_is_better,
        min: samples.first().copied().unwrap_or(0.0),
        max: samples.last().copied().unwrap_or(0.0),
        median,
        samples,
    }
}

fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    dataplane_tests::sh(&full)
}

fn iperf(m: &Mode, secs: f64, extra: &[&str]) -> anyhow::Result<serde_json::Value> {
    let t = format!("{secs}");
    let port = IPERF_PORT.to_string();
    let mut args = vec!["iperf3", "-c", &m.addr, "-p", &port, "-t", &t, "-J"];
    args.extend_from_slice(extra);
    let o = in_ns(&m.client, &args);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("iperf3 in {}: {}", m.name, dataplane_tests::text(&o)))?;
    if let Some(e) = v.get("error") {
        anyhow::bail!("iperf3 in {}: {e}", m.name);
    }
    Ok(v)
}

fn tool(m: &Mode, what: &str, secs: f64) -> anyhow::Result<serde_json::Value> {
    let bin = std::env::current_exe()?.display().to_string();
    let addr = format!("{}:{ECHO_PORT}", m.addr);
    let o = in_ns(&m.client, &[&bin, what, &addr, "--seconds", &secs.to_string()]);
    serde_json::from_slice(&o.stdout)
        .with_context(|| format!("{what} in {}: {}", m.name, dataplane_tests::text(&o)))
}

/// One sample of every metric for mode `m`.
fn measure(m: &Mode, secs: f64) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let gbps =
        |v: &serde_json::Value| v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9;
    let tcp1 = gbps(&iperf(m, secs, &[])?);
    let tcp4 = gbps(&iperf(m, secs, &["-P", "4"])?);
    let udp = iperf(m, secs, &["-u", "-l", "64", "-b", "0"])?;
    let sum = &udp["end"]["sum"];
    let received = sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
    let kpps = received / sum["seconds"].as_f64().unwrap_or(secs).max(0.001) / 1000.0;
    let rr = tool(m, "rr", secs)?;
    let conns = tool(m, "conns", secs)?;
    Ok(vec![
        ("tcp_1_stream", tcp1),
        ("tcp_4_streams", tcp4),
        ("udp_64b", kpps),
        ("rr_p50", rr["p50_us"].as_f64().unwrap_or(0.0)),
        ("rr_p99", rr["p99_us"].as_f64().unwrap_or(0.0)),
        ("new_connections", conns["per_second"].as_f64().unwrap_or(0.0)),
    ])
}

fn first_line(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or_default()
        .trim()
        .to_string();
    serde_json::json!({
        "kernel": first_line(&["uname", "-r"]),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "date": first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        "tools": {
            "iperf3": first_line(&["iperf3", "--version"]),
            "iptables": first_line(&["iptables", "--version"]),
            "dataplane": first_line(&[&dataplane_tests::bin(), "--version"]),
        },
    })
}

fn run(quick: bool, rounds: u32, seconds: f64, out: PathBuf) -> anyhow::Result<()> {
    dataplane_tests::require_privileges();
    let (rounds, seconds) = if quick { (1, 1.0) } else { (rounds.max(1), seconds) };
    // Build every mode; a peer that cannot run is reported, not dropped.
    let mut modes: Vec<Mode> = Vec::new();
    let mut unavailable = BTreeMap::new();
    type Builder = fn() -> Mode;
    let builders: [(&str, Builder); 3] =
        [("dataplane", modes::dataplane), ("bare", modes::bare), ("docker-iptables", modes::docker_iptables)];
    for (name, build) in builders {
        eprintln!("bench: setting up {name}");
        match std::panic::catch_unwind(build) {
            Ok(m) => modes.push(m),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                unavailable.insert(name.to_string(), why);
            }
        }
    }
    let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        for m in &modes {
            eprintln!("bench: round {round}/{rounds}: {} ({seconds} s per measurement)", m.name);
            match measure(m, seconds) {
                Ok(values) => {
                    for (metric, v) in values {
                        samples.entry((m.name.to_string(), metric)).or_default().push(v);
                    }
                }
                Err(e) => {
                    unavailable.insert(m.name.to_string(), format!("{e:#}"));
                }
            }
        }
    }
    // Aggregate.
    let mut results: BTreeMap<String, BTreeMap<&'static str, Stat>> = BTreeMap::new();
    for ((mode, metric), v) in samples {
        let (_, unit, hib) =
            METRICS.iter().find(|(n, _, _)| *n == metric).copied().unwrap_or((metric, "", true));
        results.entry(mode).or_default().insert(metric, stat(unit, hib, v));
    }
    let mut ratios = BTreeMap::new();
    if let Some(ours) = results.get("dataplane") {
        for (peer, theirs) in results.iter().filter(|(p, _)| p.as_str() != "dataplane") {
            let r: BTreeMap<&str, f64> = ours
                .iter()
                .filter_map(|(k, s)| {
                    theirs.get(k).filter(|t| t.median > 0.0).map(|t| (*k, s.median / t.median))
                })
                .collect();
            ratios.insert(format!("dataplane/{peer}"), r);
        }
    }
    let report = serde_json::json!({
        "machine": machine(),
        "quick": quick,
        "rounds": rounds,
        "seconds_per_measurement": seconds,
        "modes": results,
        "unavailable": unavailable,
        "ratios": ratios,
    });
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&report);
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    println!("bench: wrote {}", out.join("report.json").display());
    drop(modes);
    Ok(())
}

fn markdown(r: &serde_json::Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s.push_str(&format!(
        "Benchmark ({}; {} rounds × {} s): kernel {}, {} × {}\n\n",
        m["date"].as_str().unwrap_or(""),
        r["rounds"],
        r["seconds_per_measurement"],
        m["kernel"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu"].as_str().unwrap_or("")
    ));
    let modes: Vec<&String> = r["modes"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
    s.push_str("| metric |");
    for mode in &modes {
        s.push_str(&format!(" {mode} |"));
    }
    for peer in r["ratios"].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
        s.push_str(&format!(" {peer} |"));
    }
    s.push('\n');
    let cols = modes.len() + r["ratios"].as_object().map(|o| o.len()).unwrap_or(0);
    s.push_str(&format!("|---|{}\n", "---|".repeat(cols)));
    for (metric, unit, hib) in METRICS {
        s.push_str(&format!(
            "| {metric} ({unit}, {}) |",
            if hib { "higher is better" } else { "lower is better" }
        ));
        for mode in &modes {
            let st = &r["modes"][mode.as_str()][metric];
            s.push_str(&format!(
                " {:.2} ({:.2}–{:.2}) |",
                st["median"].as_f64().unwrap_or(0.0),
                st["min"].as_f64().unwrap_or(0.0),
                st["max"].as_f64().unwrap_or(0.0)
            ));
        }
        for (_, ratio) in r["ratios"].as_object().into_iter().flatten() {
            s.push_str(&format!(" {:.3} |", ratio[metric].as_f64().unwrap_or(0.0)));
        }
        s.push('\n');
    }
    if let Some(u) = r["unavailable"].as_object().filter(|u| !u.is_empty()) {
        s.push_str("\nNot measured:\n");
        for (mode, why) in u {
            s.push_str(&format!("- {mode}: {}\n", why.as_str().unwrap_or("")));
        }
    }
    s
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run { quick, rounds, seconds, out } => run(quick, rounds, seconds, out),
        Cmd::Serve { port } => load::serve(port),
        Cmd::Rr { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::rr(&addr, seconds)?)?);
            Ok(())
        }
        Cmd::Conns { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::conns(&addr, seconds)?)?);
            Ok(())
        }
    }
}
