//! The firewall phase: a client floods a published UDP port that a
//! `dataplane firewall` rule denies it, with the rule judged in tcx alone
//! and with `--xdp` (dropped in the uplink veth's native XDP), interleaved
//! in rounds on one host (the daemon restarted between modes). Reported:
//! packets dropped per second, the machine's busy CPU time per million
//! drops, and TCP throughput to an allowed published port (what XDP on a
//! veth costs the traffic that passes).

use std::collections::BTreeMap;

use dataplane_tests::Host;
use serde_json::{Value, json};

use super::{EXTERNAL_IP, HOST_IP, IPERF_PORT, Mode, Serve, tune_client};

/// The denied port (UDP).
const FLOOD_PORT: u16 = 9999;

fn drops(h: &Host) -> f64 {
    h.drops("FIREWALL_DENY") as f64
}

/// Measures both modes; `quick`: one round of 1 s.
pub fn firewall(rounds: u32, secs: f64) -> anyhow::Result<Value> {
    let (mut host, ext) =
        std::panic::catch_unwind(|| Host::with_external_args("bfw", &["--log-level", "info"]))
            .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    tune_client(&ext.name)?;
    let o = host.dp(&["network", "create", "--subnet", "10.79.0.0/24", "fw"]);
    anyhow::ensure!(o.status.success(), "network create: {}", dataplane_tests::text(&o).trim());
    let iperf = format!("{IPERF_PORT}:{IPERF_PORT}");
    let flood = format!("{FLOOD_PORT}:{FLOOD_PORT}/udp");
    let o = host.dp(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "fw",
        "-p",
        &iperf,
        "-p",
        &flood,
        "sh",
        "-c",
        &Serve::All.command(),
    ]);
    anyhow::ensure!(o.status.success(), "dataplane run: {}", dataplane_tests::text(&o).trim());
    let key = host.inspect("srv")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    super::wait_listening(&["nsenter", &format!("--net={key}")], Serve::All.ports())?;
    let o = host.dp(&["firewall", "deny", "--from", EXTERNAL_IP, "--port", &format!("{FLOOD_PORT}/udp")]);
    anyhow::ensure!(o.status.success(), "firewall deny: {}", dataplane_tests::text(&o).trim());
    let client = Mode::new("client", &ext.name, HOST_IP);
    let bench = super::bench_bin();
    let target = format!("{HOST_IP}:{FLOOD_PORT}");
    let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for (mode, xdp) in [("tcx", false), ("xdp", true)] {
            host.kill_daemon();
            host.daemon_args.retain(|a| a != "--xdp");
            if xdp {
                host.daemon_args.push("--xdp".into());
            }
            host.start();
            let (d0, cpu0) = (drops(&host), crate::measure::busy_cpu_seconds());
            let o = ext.run(&[
                "env",
                "RUST_BACKTRACE=0",
                &bench,
                "flood",
                &target,
                "--seconds",
                &secs.to_string(),
            ]);
            let (d1, cpu1) = (drops(&host), crate::measure::busy_cpu_seconds());
            let sent: Value = serde_json::from_slice(&o.stdout)
                .map_err(|e| anyhow::anyhow!("flood: {e}: {}", dataplane_tests::text(&o)))?;
            let took = sent["seconds"].as_f64().unwrap_or(secs).max(0.001);
            let dropped = d1 - d0;
            let tcp = crate::measure::tcp_gbps(&client, secs)?;
            let cpu = if dropped > 0.0 { (cpu1 - cpu0) / (dropped / 1e6) } else { 0.0 };
            for (metric, v) in [
                ("dropped_kpps", dropped / took / 1000.0),
                ("sent_kpps", sent["sent"].as_f64().unwrap_or(0.0) / took / 1000.0),
                ("cpu_s_per_million_drops", cpu),
                ("tcp_allowed_gbps", tcp),
            ] {
                samples.entry((mode.to_string(), metric)).or_default().push(v);
            }
        }
    }
    let results = crate::aggregate(samples);
    let ratios = crate::report::ratios(&results, "xdp", &["tcx"]);
    Ok(json!({ "modes": results, "ratios": ratios, "denied_port": FLOOD_PORT }))
}
