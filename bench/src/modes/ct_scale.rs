//! Conntrack at scale: how long `dataplane run -d` takes with 400,000
//! conntrack entries present against an empty table (interleaved rounds), and what one garbage-
//! collection pass over them costs in CPU time. The entries are written
//! straight into the daemon's pinned DP_CT map (established, answered TCP
//! flows in both directions, as live clients would leave them: nothing
//! expires, every pass walks them all). The CPU per pass comes from the
//! daemon's process CPU time over several GC intervals while it is
//! otherwise idle, which any version of the daemon shows (so the figure
//! before the GC moved off the request path can be taken with an older
//! binary through `DATAPLANE_BIN`), and from the daemon's own report of
//! its last pass where it has one.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use dataplane::datapath::sys;
use dataplane_common::{
    CT_DIR_DNAT, CT_DIR_REPLY, CT_FLAG_SEEN, CT_STATE_ESTABLISHED, CtEntry, CtKey, PROTO_TCP,
};
use dataplane_tests::Host;
use serde_json::{Value, json};

use crate::report;

/// Conntrack entries in the full table (two per flow).
pub const ENTRIES: usize = 400_000;
/// The daemon's GC interval.
const GC_INTERVAL: Duration = Duration::from_secs(5);

/// CLOCK_MONOTONIC in ns, the clock of the entries' timestamps.
fn now_ns() -> u64 {
    dataplane::datapath::conntrack::now_ns()
}

/// `n` entries: `n / 2` established flows of clients in 198.18.0.0/15 to a
/// published port, with their reply directions.
fn entries(n: usize) -> Vec<(CtKey, CtEntry)> {
    let (host, sb) = ([192, 0, 2, 1], [10, 0, 0, 2]);
    let now = now_ns();
    let entry = |dir, addr, port: u16| CtEntry {
        dir,
        addr,
        port: port.to_be(),
        state: CT_STATE_ESTABLISHED,
        ifindex: 0,
        mac: [0; 6],
        flags: CT_FLAG_SEEN,
        last_seen: now,
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..(n / 2) as u32 {
        let client = [198, 18 + ((i >> 16) & 1) as u8, (i >> 8) as u8, i as u8];
        let sport = (1024 + (i >> 17)) as u16;
        let fwd = CtKey {
            saddr: client,
            daddr: host,
            sport: sport.to_be(),
            dport: 8080u16.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        let rev = CtKey {
            saddr: sb,
            daddr: client,
            sport: 80u16.to_be(),
            dport: sport.to_be(),
            proto: PROTO_TCP,
            _pad: [0; 3],
        };
        out.push((fwd, entry(CT_DIR_DNAT, sb, 80)));
        out.push((rev, entry(CT_DIR_REPLY, host, 8080)));
    }
    out
}

/// CPU seconds the process `pid` has used (user + system).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of the line, utime 14 and stime 15.
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = String::from_utf8_lossy(&dataplane_tests::sh(&["getconf", "CLK_TCK"]).stdout)
        .trim()
        .parse()
        .unwrap_or(100.0);
    Ok((ticks(14) + ticks(15)) / hz)
}

/// The daemon's CPU seconds per GC pass, over `passes` GC intervals.
fn cpu_per_pass(h: &Host, passes: u32) -> anyhow::Result<f64> {
    let pid = h.daemon_pid().ok_or_else(|| anyhow::anyhow!("no daemon"))?;
    let before = cpu_seconds(pid)?;
    std::thread::sleep(GC_INTERVAL * passes);
    Ok((cpu_seconds(pid)? - before) / f64::from(passes))
}

/// Milliseconds `run -d` of a sandbox named `name` takes, and its `rm -f`.
fn run_and_rm(h: &Host, name: &str) -> anyhow::Result<(f64, f64)> {
    let ok = |args: &[&str]| -> anyhow::Result<f64> {
        let t = Instant::now();
        let o = h.dp(args);
        anyhow::ensure!(o.status.success(), "dataplane {args:?}: {}", dataplane_tests::text(&o).trim());
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    Ok((ok(&["run", "-d", "--name", name, "sleep", "infinity"])?, ok(&["rm", "-f", name])?))
}

fn stats(h: &Host) -> Value {
    serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).unwrap_or(Value::Null)
}

pub fn ct_scale(quick: bool) -> anyhow::Result<Value> {
    let (h, _ext) = std::panic::catch_unwind(|| Host::with_external_args("cts", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let (n, samples, passes) = if quick { (20_000, 3, 1) } else { (ENTRIES, 21, 3) };
    let pin = h.bpffs.join(dataplane_common::MAP_CT);
    let map = sys::obj_get(&pin).map_err(|e| anyhow::anyhow!("open {}: {e}", pin.display()))?;
    let table = entries(n);
    let keys: Vec<CtKey> = table.iter().map(|(k, _)| *k).collect();
    let fill = || {
        sys::map_update_all(map.as_fd(), &table).map_err(|e| anyhow::anyhow!("fill {}: {e}", pin.display()))
    };
    let empty = || {
        sys::map_delete_all(map.as_fd(), &keys).map_err(|e| anyhow::anyhow!("empty {}: {e}", pin.display()))
    };
    let cpu_empty = cpu_per_pass(&h, passes)?;

    // `run -d` and `rm -f` latencies with the table empty and full, in
    // interleaved rounds spread over several GC intervals (a request that
    // waited for a GC pass would show up in the samples).
    let (mut run_empty, mut rm_empty, mut run_full, mut rm_full) = (vec![], vec![], vec![], vec![]);
    let mut fill_seconds = 0.0;
    for i in 0..samples {
        let (run, rm) = run_and_rm(&h, &format!("e{i}"))?;
        run_empty.push(run);
        rm_empty.push(rm);
        let t = Instant::now();
        fill()?;
        fill_seconds = t.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(300));
        let (run, rm) = run_and_rm(&h, &format!("f{i}"))?;
        run_full.push(run);
        rm_full.push(rm);
        empty()?;
        std::thread::sleep(Duration::from_millis(300));
    }

    fill()?;
    // One batched walk of the full table, as the daemon's GC and `rm` do it.
    let t = Instant::now();
    let walked =
        sys::map_entries::<CtKey, CtEntry>(map.as_fd()).map_err(|e| anyhow::anyhow!("walk: {e}"))?.len();
    let walk_ms = t.elapsed().as_secs_f64() * 1000.0;
    // Wait (bounded) until a GC pass has walked the full table.
    let deadline = Instant::now() + GC_INTERVAL * 4;
    while stats(&h)["Conntrack"]["Entries"].as_u64().unwrap_or(0) < n as u64 {
        anyhow::ensure!(Instant::now() < deadline, "the daemon never counted the {n} entries");
        std::thread::sleep(Duration::from_millis(250));
    }
    let cpu_full = cpu_per_pass(&h, passes)?;
    let last_gc = stats(&h)["Conntrack"].clone();
    let still = stats(&h)["Conntrack"]["Entries"].as_u64().unwrap_or(0);
    empty()?;

    let run_empty = report::stat("run_ms", run_empty);
    let run_full = report::stat("run_ms", run_full);
    let ratio = if run_empty.median > 0.0 { run_full.median / run_empty.median } else { 0.0 };
    Ok(json!({
        "entries": n,
        "fill_seconds": fill_seconds,
        "walk_ms": walk_ms,
        "walked": walked,
        "entries_after": still,
        "run_ms_empty": run_empty,
        "run_ms_full": run_full,
        "run_full_over_empty": ratio,
        "rm_ms_empty": report::stat("run_ms", rm_empty),
        "rm_ms_full": report::stat("run_ms", rm_full),
        "gc_cpu_seconds_per_pass_empty": cpu_empty,
        "gc_cpu_seconds_per_pass_full": cpu_full,
        "last_gc_cpu_seconds": last_gc["LastGcCpuSeconds"],
        "last_gc_seconds": last_gc["LastGcSeconds"],
    }))
}
