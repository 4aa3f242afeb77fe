//! Alias load balancing, measured like for like: new connections per
//! second from a client sandbox to a VIP with one backend against that
//! backend directly (the cost of balancing), and to a VIP over three
//! backends against DNS round robin over the same three (the name resolved
//! for every connection, on a plain network: the benefit), in interleaved
//! rounds; how the flows spread over the backends (`lb list`);
//! and how many flows of the other backends move when one of N leaves,
//! computed on the daemon's own Maglev tables and the BPF flow hash.

use std::collections::BTreeMap;

use dataplane_common::{LB_TABLE_SIZE, flow_hash};
use dataplane_tests::Host;
use serde_json::{Value, json};

use super::{ECHO_PORT, bench_bin, wait_listening};
use crate::report;

const BACKENDS: usize = 3;

/// Connections per second from sandbox `client` to `addr`, one sample.
fn conns(h: &Host, addr: &str, secs: f64) -> anyhow::Result<f64> {
    let bin = bench_bin();
    let target = format!("{addr}:{ECHO_PORT}");
    let o = h
        .exec("client", &["env", "RUST_BACKTRACE=0", &bin, "conns", &target, "--seconds", &secs.to_string()]);
    let v: Value = serde_json::from_slice(&o.stdout)
        .map_err(|e| anyhow::anyhow!("conns to {target}: {e}: {}", dataplane_tests::text(&o)))?;
    v["per_second"].as_f64().ok_or_else(|| anyhow::anyhow!("conns to {target}: no rate in {v}"))
}

/// The measured phase: `rounds` interleaved samples of VIP and direct.
pub fn alias_lb(rounds: u32, secs: f64) -> anyhow::Result<Value> {
    let (h, _ext) = std::panic::catch_unwind(|| Host::with_external_args("alb", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let ok = |args: &[&str]| -> anyhow::Result<String> {
        let o = h.dp(args);
        anyhow::ensure!(o.status.success(), "dataplane {args:?}: {}", dataplane_tests::text(&o).trim());
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    ok(&["network", "create", "--subnet", "10.77.0.0/24", "-o", "lb=vip", "lbbench"])?;
    let serve = format!("exec {} serve {ECHO_PORT}", bench_bin());
    for i in 0..BACKENDS {
        let name = format!("b{i}");
        ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "lbbench",
            "--network-alias",
            "svc",
            "sh",
            "-c",
            &serve,
        ])?;
        let key = h.inspect(&name)["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
        wait_listening(&["nsenter", &format!("--net={key}")], &[ECHO_PORT])?;
    }
    // The same three on a plain network, where their alias resolves to all
    // three in turn (DNS round robin); and a fourth backend alone behind an alias.
    ok(&["network", "create", "--subnet", "10.78.0.0/24", "rrbench"])?;
    for i in 0..BACKENDS {
        ok(&["network", "connect", "--alias", "rrsvc", "rrbench", &format!("b{i}")])?;
    }
    ok(&[
        "run",
        "-d",
        "--name",
        "solo",
        "--network",
        "lbbench",
        "--network-alias",
        "one",
        "sh",
        "-c",
        &serve,
    ])?;
    let key = h.inspect("solo")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    wait_listening(&["nsenter", &format!("--net={key}")], &[ECHO_PORT])?;
    ok(&["run", "-d", "--name", "client", "--network", "lbbench", "sleep", "infinity"])?;
    ok(&["network", "connect", "rrbench", "client"])?;
    // The client reuses TIME_WAIT ports, as the external client of the other phases does.
    let key = h.inspect("client")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    for kv in ["net.ipv4.tcp_tw_reuse=1", "net.ipv4.ip_local_port_range=1024 65000"] {
        let o = dataplane_tests::sh(&["nsenter", &format!("--net={key}"), "sysctl", "-qw", kv]);
        anyhow::ensure!(
            o.status.success(),
            "sysctl {kv} in the client sandbox: {}",
            dataplane_tests::text(&o)
        );
    }
    let rows: Value = serde_json::from_str(&ok(&["lb", "list", "--format", "json"])?)?;
    let vip_of = |alias: &str| -> anyhow::Result<String> {
        rows.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["Alias"] == alias)
            .and_then(|r| r["Vip"].as_str())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no VIP of {alias} in {rows}"))
    };
    let (vip, vip_one) = (vip_of("svc")?, vip_of("one")?);
    let direct = h.ip_of("solo", "lbbench");
    // Warm-up, then interleaved rounds.
    let targets = [vip.as_str(), "rrsvc", vip_one.as_str(), direct.as_str()];
    for t in targets {
        conns(&h, t, 1.0)?;
    }
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..rounds {
        for (t, out) in targets.iter().zip(samples.iter_mut()) {
            out.push(conns(&h, t, secs)?);
        }
    }
    let [via_vip, dns_rr, vip_single, to_one] = samples;
    let rows: Value = serde_json::from_str(&ok(&["lb", "list", "--format", "json"])?)?;
    let svc =
        rows.as_array().into_iter().flatten().find(|r| r["Alias"] == "svc").cloned().unwrap_or_default();
    let flows: BTreeMap<String, u64> = svc["Backends"]
        .as_array()
        .map(|bs| {
            bs.iter()
                .map(|b| (b["Sandbox"].as_str().unwrap_or("").to_string(), b["Flows"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let (lo, hi) = (flows.values().min().copied().unwrap_or(0), flows.values().max().copied().unwrap_or(0));
    let stat = |v: Vec<f64>| report::stat("new_connections", v);
    let (vip_stat, rr_stat, single_stat, direct_stat) =
        (stat(via_vip), stat(dns_rr), stat(vip_single), stat(to_one));
    let over = |a: &report::Stat, b: &report::Stat| if b.median > 0.0 { a.median / b.median } else { 0.0 };
    Ok(json!({
        "backends": BACKENDS,
        "via_vip": vip_stat,
        "dns_round_robin": rr_stat,
        "via_vip_one_backend": single_stat,
        "direct": direct_stat,
        "vip_over_dns_round_robin": over(&vip_stat, &rr_stat),
        "vip_one_backend_over_direct": over(&single_stat, &direct_stat),
        "flows_per_backend": flows,
        "max_over_min_flows": if lo > 0 { hi as f64 / lo as f64 } else { 0.0 },
        "flows_moved_when_one_leaves": disruption(),
    }))
}

/// Share of the *other* backends' flows that change backend when one of N
/// leaves, over 60,000 synthetic flows, for N = 3, 5, 10, 20, 50.
fn disruption() -> Value {
    let place = |t: &dataplane_common::LbTable| -> Vec<u32> {
        (0..60_000u32)
            .map(|i| {
                let (c, port) = ((i / 20_000) as u8, (32768 + i % 20_000) as u16);
                t.slots[flow_hash([10, 77, 1, c], [10, 77, 0, 200], port.to_be(), 80u16.to_be(), 6) as usize
                    % LB_TABLE_SIZE]
            })
            .collect()
    };
    let mut out = serde_json::Map::new();
    for n in [3u32, 5, 10, 20, 50] {
        let all: Vec<(String, u32)> = (0..n).map(|i| (format!("endpoint-{i}"), 100 + i)).collect();
        let gone = all[n as usize / 2].1;
        let rest: Vec<_> = all.iter().filter(|(_, v)| *v != gone).cloned().collect();
        let (before, after) =
            (place(&dataplane::datapath::lb::maglev(&all)), place(&dataplane::datapath::lb::maglev(&rest)));
        let others: Vec<_> = before.iter().zip(&after).filter(|(b, _)| **b != gone).collect();
        let moved = others.iter().filter(|(b, a)| b != a).count() as f64 / others.len().max(1) as f64;
        out.insert(n.to_string(), json!(moved * 100.0));
    }
    Value::Object(out)
}
