//! Aggregation (median, min–max), ratios against the peers, the goals the
//! issue sets, and the Markdown rendering of `report.json`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

/// What is measured on the data path: name, unit, higher is better.
pub const METRICS: [(&str, &str, bool); 8] = [
    ("tcp_1_stream", "Gbit/s", true),
    ("tcp_4_streams", "Gbit/s", true),
    ("cpu_s_per_gb", "CPU-s/GB", false),
    ("udp_64b", "kpps", true),
    ("udp_64b_loss", "%", false),
    ("rr_p50", "µs", false),
    ("rr_p99", "µs", false),
    ("new_connections", "conn/s", true),
];

/// Modes whose client is outside the host, and the localhost pair.
pub const EXTERNAL: [&str; 9] = [
    "dataplane",
    "bare",
    "routed",
    "docker-iptables",
    "netavark",
    "cni",
    "cni-dataplane",
    "docker",
    "docker-dataplane",
];
pub const LOCALHOST: [&str; 2] = ["dataplane-localhost", "docker-proxy"];
/// The iptables-based peers (the goals compare against the best of them).
pub const IPTABLES_PEERS: [&str; 4] = ["docker-iptables", "netavark", "cni", "docker"];

#[derive(Serialize, Clone, Debug)]
pub struct Stat {
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

pub fn unit_of(metric: &str) -> (&'static str, bool) {
    METRICS.iter().find(|(n, _, _)| *n == metric).map(|(_, u, h)| (*u, *h)).unwrap_or(("", true))
}

pub fn stat(metric: &str, mut samples: Vec<f64>) -> Stat {
    let (unit, higher_is_better) = unit_of(metric);
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => samples[n / 2],
        _ => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
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

/// `ours/peer` of the medians of every metric both have.
pub fn ratios(results: &Value, ours: &str, peers: &[&str]) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let Some(o) = results.get(ours).and_then(Value::as_object) else { return out };
    for peer in peers {
        let Some(t) = results.get(*peer).and_then(Value::as_object) else { continue };
        let r: BTreeMap<String, f64> = o
            .iter()
            .filter_map(|(k, s)| {
                let theirs = t.get(k)?["median"].as_f64().filter(|m| *m > 0.0)?;
                Some((k.clone(), s["median"].as_f64()? / theirs))
            })
            .collect();
        out.insert(format!("{ours}/{peer}"), r);
    }
    out
}

fn median(r: &Value, mode: &str, metric: &str) -> Option<f64> {
    r["modes"][mode][metric]["median"].as_f64()
}

/// The best iptables peer's median for `metric` (highest or lowest).
fn best_peer(r: &Value, metric: &str) -> Option<f64> {
    let (_, hib) = unit_of(metric);
    let v = IPTABLES_PEERS.iter().filter_map(|p| median(r, p, metric));
    if hib { v.reduce(f64::max) } else { v.reduce(f64::min) }
}

/// The goals, each with the measured ratio and whether it is met.
/// The most queries/s of aardvark-dns and Docker's resolver for query set `set`.
fn best_dns_peer(dns: &Value, set: &str) -> Option<f64> {
    ["aardvark-dns", "docker"]
        .iter()
        .filter_map(|p| dns[*p][set]["qps"].as_f64())
        .fold(None, |best: Option<f64>, q| Some(best.map_or(q, |b| b.max(q))))
}

pub fn goals(r: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut goal = |what: &str, value: Option<f64>, target: f64, at_least: bool| {
        let met = value.map(|v| if at_least { v >= target } else { v <= target });
        out.push(json!({ "goal": what, "value": value, "target": target, "at_least": at_least, "met": met }));
    };
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let ours = |m: &str| median(r, "dataplane", m);
    // Against `routed` (the hop every published port pays: plain IP
    // forwarding, no NAT, no rule), on every metric: ÷ bare measures the
    // topology (one veth pair), not us.
    for (m, label, at_least) in [
        ("tcp_1_stream", "TCP 1 stream", true),
        ("tcp_4_streams", "TCP 4 streams", true),
        ("cpu_s_per_gb", "CPU per GB", false),
        ("udp_64b", "UDP 64 B", true),
        ("rr_p50", "RR p50", false),
        ("rr_p99", "RR p99", false),
        ("new_connections", "new connections", true),
    ] {
        goal(&format!("{label} ÷ routed"), ratio(ours(m), median(r, "routed", m)), 1.0, at_least);
    }
    goal("UDP 64 B ÷ best iptables peer", ratio(ours("udp_64b"), best_peer(r, "udp_64b")), 1.4, true);
    goal(
        "new connections ÷ best iptables peer",
        ratio(ours("new_connections"), best_peer(r, "new_connections")),
        1.5,
        true,
    );
    let scaled = r["scaling"]["dataplane"].as_array().and_then(|steps| {
        let last = steps.last()?;
        let first = steps.first()?;
        ratio(last["new_connections"]["median"].as_f64(), first["new_connections"]["median"].as_f64())
    });
    goal("new connections, most published ports ÷ none", scaled, 0.95, true);
    let publish_1000 = r["control_plane"]["dataplane"]["1000"].as_f64();
    goal("seconds to publish 1,000 ports", publish_1000, 0.2, false);
    let local = |m: &str| ratio(median(r, "dataplane-localhost", m), median(r, "docker-proxy", m));
    goal("localhost TCP ÷ docker-proxy", local("tcp_1_stream"), 1.2, true);
    goal("localhost RR p50 ÷ docker-proxy", local("rr_p50"), 0.65, false);
    goal("localhost UDP 64 B ÷ docker-proxy", local("udp_64b"), 3.0, true);
    goal(
        "run -d with 400,000 conntrack entries ÷ with none",
        r["ct_scale"]["run_full_over_empty"].as_f64(),
        1.2,
        false,
    );
    // Real Docker containers: on our network driver vs Docker's own bridge.
    let dd = |m: &str| ratio(median(r, "docker-dataplane", m), median(r, "docker", m));
    goal("Docker on dataplane: TCP 1 stream ÷ Docker's bridge", dd("tcp_1_stream"), 1.0, true);
    goal("Docker on dataplane: RR p50 ÷ Docker's bridge", dd("rr_p50"), 1.0, false);
    goal("Docker on dataplane: UDP 64 B ÷ Docker's bridge", dd("udp_64b"), 1.3, true);
    goal("Docker on dataplane: new connections ÷ Docker's bridge", dd("new_connections"), 1.0, true);
    // IPv6: the same published port against Docker's ip6tables shape; and
    // IPv4 against the build before (no regression: within 5%).
    let v6 = |m: &str| r["ipv6"]["ratios"]["dataplane/docker-iptables"][m].as_f64();
    goal("IPv6: TCP 1 stream ÷ docker-iptables (ip6tables)", v6("tcp_1_stream"), 1.0, true);
    goal("IPv6: UDP 64 B ÷ docker-iptables (ip6tables)", v6("udp_64b"), 1.4, true);
    goal("IPv6: new connections ÷ docker-iptables (ip6tables)", v6("new_connections"), 1.0, true);
    let ba = |m: &str| r["ipv6"]["ipv4_before_after"]["ratios"]["dataplane/dataplane-before"][m].as_f64();
    goal("IPv4 after ÷ before: TCP 1 stream", ba("tcp_1_stream"), 0.95, true);
    goal("IPv4 after ÷ before: UDP 64 B", ba("udp_64b"), 0.95, true);
    goal("IPv4 after ÷ before: RR p50", ba("rr_p50"), 1.05, false);
    goal("IPv4 after ÷ before: new connections", ba("new_connections"), 0.95, true);
    // Across hosts: our overlay against two namespaces joined by plain kernel VXLAN.
    let ov = |m: &str| r["overlay"]["ratios"]["overlay-dataplane/overlay-vxlan"][m].as_f64();
    goal("overlay: TCP 1 stream ÷ plain VXLAN", ov("tcp_1_stream"), 0.95, true);
    goal("overlay: TCP 4 streams ÷ plain VXLAN", ov("tcp_4_streams"), 0.95, true);
    goal("overlay: UDP 64 B ÷ plain VXLAN", ov("udp_64b"), 0.95, true);
    goal("overlay: RR p50 ÷ plain VXLAN", ov("rr_p50"), 1.05, false);
    goal("overlay: RR p99 ÷ plain VXLAN", ov("rr_p99"), 1.05, false);
    goal("overlay: new connections ÷ plain VXLAN", ov("new_connections"), 0.95, true);
    let cp = |mode: &str| r["control_plane"][mode]["1000"].as_f64();
    goal(
        "Docker publishing 1,000 ports: Docker's bridge ÷ on dataplane",
        ratio(cp("docker"), cp("docker-dataplane")),
        100.0,
        true,
    );
    // The CNI harness: dataplane-cni against bridge + host-local + portmap.
    let cn = |m: &str| ratio(median(r, "cni-dataplane", m), median(r, "cni", m));
    goal("CNI: dataplane-cni TCP 1 stream ÷ bridge+portmap", cn("tcp_1_stream"), 1.0, true);
    goal("CNI: dataplane-cni RR p50 ÷ bridge+portmap", cn("rr_p50"), 1.0, false);
    goal("CNI: dataplane-cni UDP 64 B ÷ bridge+portmap", cn("udp_64b"), 1.3, true);
    goal("CNI: dataplane-cni new connections ÷ bridge+portmap", cn("new_connections"), 1.0, true);
    goal(
        "CNI ADD with 1,000 port mappings: portmap ÷ dataplane-cni",
        ratio(cp("cni"), cp("cni-dataplane")),
        100.0,
        true,
    );
    goal(
        "new connections during a SYN flood that fills conntrack ÷ before it",
        r["ct_capacity"]["during_over_before"].as_f64(),
        0.9,
        true,
    );
    // Alias load balancing like for like.
    let lb = &r["alias_lb"];
    goal(
        "LB: VIP with one backend ÷ that backend directly",
        lb["vip_one_backend_over_direct"].as_f64(),
        0.95,
        true,
    );
    goal(
        "LB: VIP over 3 ÷ DNS round robin over the same 3",
        lb["vip_over_dns_round_robin"].as_f64(),
        1.0,
        true,
    );
    // Name resolution against the better of aardvark-dns and Docker's
    // resolver, for each query set.
    let dns = &r["dns"];
    for crate::modes::dns::Set { label: set, what, .. } in &crate::modes::dns::SETS {
        goal(
            &format!("DNS: {what} q/s ÷ the best peer (aardvark-dns, Docker)"),
            ratio(dns["dataplane"][set]["qps"].as_f64(), best_dns_peer(dns, set)),
            3.0,
            true,
        );
        goal(&format!("DNS: {what} p99 (ms)"), dns["dataplane"][set]["p99_ms"].as_f64(), 1.0, false);
    }
    goal(
        "DNS: names q/s with 500 more sandboxes ÷ without",
        dns["larger_store_qps_ratio"].as_f64(),
        0.9,
        true,
    );
    // Restart at scale: kill -9 and start with 1,000 sandboxes and 10,000
    // published ports (moby#34906: Docker users report 15–20 minutes).
    let rs = &r["restart"];
    goal("restart: seconds to READY (sd_notify)", rs["ready_s"].as_f64(), 2.0, false);
    goal("restart: seconds to reconciled", rs["reconciled_s"].as_f64(), 10.0, false);
    let writes = match (rs["reconcile_netlink_writes"].as_f64(), rs["reconcile_bpf_writes"].as_f64()) {
        (Some(a), Some(b)) => Some(a + b),
        _ => None,
    };
    goal("restart: writes reconcile makes on a healthy host", writes, 0.0, false);
    goal("restart: established connections broken", rs["held"]["broken"].as_f64(), 0.0, false);
    out
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) if x >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.2}"),
        None => "–".into(),
    }
}

fn cell(s: &Value) -> String {
    if s.is_null() {
        return "–".into();
    }
    format!("{} ({}–{})", f(&s["median"]), f(&s["min"]), f(&s["max"]))
}

fn table(s: &mut String, r: &Value, modes: &[&str], ratio_keys: &[String]) {
    let present: Vec<&str> = modes.iter().copied().filter(|m| !r["modes"][*m].is_null()).collect();
    s.push_str("| metric |");
    for m in &present {
        s.push_str(&format!(" {m} |"));
    }
    for k in ratio_keys {
        s.push_str(&format!(" {k} |"));
    }
    s.push_str(&format!("\n|---|{}\n", "---|".repeat(present.len() + ratio_keys.len())));
    for (metric, unit, hib) in METRICS {
        s.push_str(&format!("| {metric} ({unit}, {}) |", if hib { "↑" } else { "↓" }));
        for m in &present {
            s.push_str(&format!(" {} |", cell(&r["modes"][*m][metric])));
        }
        for k in ratio_keys {
            s.push_str(&format!(" {} |", f(&r["ratios"][k][metric])));
        }
        s.push('\n');
    }
}

pub fn markdown(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    s.push_str(&format!(
        "Benchmark of {} ({} rounds × {} s per measurement, medians with min–max): kernel {}, {} × {}; {}\n\n",
        m["date"].as_str().unwrap_or(""),
        r["rounds"],
        r["seconds_per_measurement"],
        m["kernel"].as_str().unwrap_or(""),
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["pinning"].as_str().unwrap_or("not pinned"),
    ));
    s.push_str("**Published port, client outside the host** (↑ higher is better, ↓ lower is better)\n\n");
    let ext_ratios: Vec<String> = r["ratios"]
        .as_object()
        .map(|o| o.keys().filter(|k| k.starts_with("dataplane/")).cloned().collect())
        .unwrap_or_default();
    table(&mut s, r, &EXTERNAL, &ext_ratios);
    s.push_str(&format!(
        "\nModes: `routed` is client ↔ router ↔ server with plain IP forwarding (the hop a published port \
         pays; the goals compare against it), `bare` one veth pair (the topology's limit). RR p50/p99 are \
         exact percentiles of every transaction of a measurement ({} transactions per measurement for \
         dataplane, median).\n",
        f(&r["modes"]["dataplane"]["rr_samples"]["median"]),
    ));
    if LOCALHOST.iter().any(|m| !r["modes"][*m].is_null()) {
        s.push_str("\n**Localhost: host process → 127.0.0.1:published port**\n\n");
        table(&mut s, r, &LOCALHOST, &["dataplane-localhost/docker-proxy".to_string()]);
    }
    if let Some(seen) = r["client_address_seen"].as_object().filter(|o| !o.is_empty()) {
        s.push_str("\nClient address the server sees: ");
        let parts: Vec<String> =
            seen.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect();
        s.push_str(&parts.join(", "));
        s.push('\n');
    }
    if let Some(sc) = r["scaling"].as_object().filter(|o| !o.is_empty()) {
        s.push_str(
            "\n**Scaling: a container published after N other ports** (RR p50 µs ↓, new connections/s ↑)\n\n",
        );
        s.push_str("| mode | published ports | rr_p50 | new_connections |\n|---|---|---|---|\n");
        for (mode, steps) in sc {
            for st in steps.as_array().into_iter().flatten() {
                s.push_str(&format!(
                    "| {mode} | {} | {} | {} |\n",
                    st["published_ports"],
                    cell(&st["rr_p50"]),
                    cell(&st["new_connections"])
                ));
            }
        }
    }
    if let Some(cp) = r["control_plane"].as_object().filter(|o| !o.is_empty()) {
        let ns: Vec<String> = cp
            .values()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut ns: Vec<String> = ns;
        ns.sort_by_key(|n| n.parse::<u32>().unwrap_or(0));
        s.push_str(
            "\n**Control plane: seconds to start a container with N published ports** (↓)\n\n| mode |",
        );
        for n in &ns {
            s.push_str(&format!(" N = {n} |"));
        }
        s.push_str(&format!("\n|---|{}\n", "---|".repeat(ns.len())));
        for (mode, v) in cp {
            s.push_str(&format!("| {mode} |"));
            for n in &ns {
                s.push_str(&format!(" {} |", f(&v[n.as_str()])));
            }
            s.push('\n');
        }
    }
    if let Some(mem) = r["memory"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let mem = &Value::Object(mem.clone());
        s.push_str(&format!(
            "\n**Daemon memory**: {} MiB resident idle, {} MiB with {} sandboxes (created in {} s)\n",
            f(&mem["rss_mib_idle"]),
            f(&mem["rss_mib_loaded"]),
            mem["sandboxes"],
            f(&mem["seconds_to_create"])
        ));
    }
    if let Some(lb) = r["alias_lb"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let lb = &Value::Object(lb.clone());
        let mut moved: Vec<(u64, String)> = lb["flows_moved_when_one_leaves"]
            .as_object()
            .map(|o| o.iter().map(|(n, v)| (n.parse().unwrap_or(0), format!("{n}: {}%", f(v)))).collect())
            .unwrap_or_default();
        moved.sort();
        let moved = moved.into_iter().map(|(_, t)| t).collect::<Vec<_>>().join(", ");
        s.push_str(&format!(
            "\n**Alias load balancing** (new connections/s from a client sandbox, medians; like for like)\n\n\
             | comparison | through the VIP | baseline | VIP ÷ baseline |\n|---|---|---|---|\n\
             | one backend: VIP vs that backend directly (the cost of balancing) | {} | {} | {} |\n\
             | {} backends: VIP vs DNS round robin over the same ones, name resolved per connection (the benefit) | {} | {} | {} |\n\
             \nFlows per backend through the VIP (max ÷ min {}):\n\n| backend | flows |\n|---|---|\n",
            f(&lb["via_vip_one_backend"]["median"]),
            f(&lb["direct"]["median"]),
            f(&lb["vip_one_backend_over_direct"]),
            lb["backends"],
            f(&lb["via_vip"]["median"]),
            f(&lb["dns_round_robin"]["median"]),
            f(&lb["vip_over_dns_round_robin"]),
            f(&lb["max_over_min_flows"]),
        ));
        for (b, n) in lb["flows_per_backend"].as_object().into_iter().flatten() {
            s.push_str(&format!("| {b} | {n} |\n"));
        }
        s.push_str(&format!("\nFlows of the other backends moved when one of N leaves: {moved}\n"));
    }
    if let Some(cc) = r["ct_capacity"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let cc = &Value::Object(cc.clone());
        s.push_str(&format!(
            "\n**Conntrack at capacity**: a SYN flood from the external namespace (random never-answering \
             sources) fills the IPv4 flow table through a published port ({} of {} entries, filled in {} s) \
             while a legitimate client there opens connections to the same port: {} conn/s before, {} during \
             (÷ {}), {} after; insert failures {} (the table is LRU: the oldest entries make room); back to 90% \
             of its rate {} s after the flood\n",
            f(&cc["entries_when_measured"]),
            cc["ipv4_table"],
            f(&cc["seconds_to_fill"]),
            f(&cc["conns_before"]),
            f(&cc["conns_during"]),
            f(&cc["during_over_before"]),
            f(&cc["conns_after"]),
            f(&cc["insert_failed"]),
            f(&cc["recovery_seconds"]),
        ));
    }
    if let Some(ct) = r["ct_scale"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let ct = &Value::Object(ct.clone());
        s.push_str(&format!(
            "\n**Conntrack at scale** ({} entries written into the table in {} s): `run -d` {} ms with them vs {} ms \
             without (÷ {}); `rm -f` {} ms vs {} ms; daemon CPU per GC pass {} s with them, {} s without (the \
             daemon's own figure for its last pass: {} CPU-s in {} s)\n",
            ct["entries"],
            f(&ct["fill_seconds"]),
            f(&ct["run_ms_full"]["median"]),
            f(&ct["run_ms_empty"]["median"]),
            f(&ct["run_full_over_empty"]),
            f(&ct["rm_ms_full"]["median"]),
            f(&ct["rm_ms_empty"]["median"]),
            f(&ct["gc_cpu_seconds_per_pass_full"]),
            f(&ct["gc_cpu_seconds_per_pass_empty"]),
            f(&ct["last_gc_cpu_seconds"]),
            f(&ct["last_gc_seconds"]),
        ));
    }
    if let Some(dns) = r["dns"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let dns = &Value::Object(dns.clone());
        // A phase measured again alone and put into the report says when.
        let when = dns["measured_at"].as_str().map(|t| format!("measured {t}; ")).unwrap_or_default();
        s.push_str(&format!(
            "\n**Name resolution** ({when}{} names of each kind; most q/s `dnsperf -c 4` gets with one sending thread or two, the better for each system, with its loss; \
             p50/p99 of every answer at a fixed {} q/s; ↑ q/s, ↓ ms)\n\n\
             | query set | dataplane q/s | lost % | p50 / p99 ms | aardvark-dns q/s | lost % | p50 / p99 ms | Docker q/s | lost % | p50 / p99 ms | q/s ÷ best peer |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n",
            f(&dns["names"]),
            f(&dns["latency_rate_qps"]),
        ));
        for crate::modes::dns::Set { label: set, what, .. } in &crate::modes::dns::SETS {
            let (o, a, d) = (&dns["dataplane"][set], &dns["aardvark-dns"][set], &dns["docker"][set]);
            let best = match (o["qps"].as_f64(), best_dns_peer(dns, set)) {
                (Some(o), Some(b)) if b > 0.0 => json!(o / b),
                _ => Value::Null,
            };
            s.push_str(&format!(
                "| {what} | {} | {} | {} / {} | {} | {} | {} / {} | {} | {} | {} / {} | {} |\n",
                f(&o["qps"]),
                f(&o["lost_pct"]),
                f(&o["p50_ms"]),
                f(&o["p99_ms"]),
                f(&a["qps"]),
                f(&a["lost_pct"]),
                f(&a["p50_ms"]),
                f(&a["p99_ms"]),
                f(&d["qps"]),
                f(&d["lost_pct"]),
                f(&d["p50_ms"]),
                f(&d["p99_ms"]),
                f(&best),
            ));
        }
        let big = &dns["dataplane_larger_store"];
        s.push_str(&format!(
            "\nWith {} more sandboxes in the store (another network): names {} q/s, p99 {} ms \
             (÷ before: {}).\n",
            f(&big["sandboxes_added"]),
            f(&big["sets"]["names"]["qps"]),
            f(&big["sets"]["names"]["p99_ms"]),
            f(&dns["larger_store_qps_ratio"]),
        ));
    }
    if let Some(v6) = r["ipv6"].as_object().filter(|o| !o.is_empty()) {
        let v6 = Value::Object(v6.clone());
        s.push_str("\n**Published port over IPv6, client outside the host** (Docker's ip6tables rule shape as the peer)\n\n");
        let keys = ["dataplane/docker-iptables".to_string(), "dataplane/bare".to_string()];
        table(&mut s, &v6, &["dataplane", "docker-iptables", "bare"], &keys);
        if let Some(seen) = v6["client_address_seen"].as_object().filter(|o| !o.is_empty()) {
            let parts: Vec<String> =
                seen.iter().map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?"))).collect();
            s.push_str(&format!("\nClient address the server sees: {}\n", parts.join(", ")));
        }
        let ba = &v6["ipv4_before_after"];
        if ba["modes"].is_object() {
            s.push_str(&format!(
                "\n**IPv4 before and after** (this build's `dataplane` vs `{}`, interleaved)\n\n",
                ba["before"].as_str().unwrap_or("?")
            ));
            table(
                &mut s,
                ba,
                &["dataplane", "dataplane-before"],
                &["dataplane/dataplane-before".to_string()],
            );
        } else if let Some(why) = ba["not_measured"].as_str() {
            s.push_str(&format!("\nIPv4 before and after: not measured ({why})\n"));
        }
    }
    if let Some(rs) = r["restart"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let rs = &Value::Object(rs.clone());
        let v = |k: &str| f(&rs[k]);
        s.push_str(&format!(
            "\n**Restart at scale**: {} sandboxes publishing {} ports (created in {} s), {} connections \
             through published ports exchanging a byte every 5 ms; the daemon killed (`kill -9`), down 1 s, \
             started again\n\n| metric | value |\n|---|---|\n\
             | seconds from start to READY (sd_notify) | {} |\n\
             | seconds from start to reconciled (`STATUS=reconciled`) | {} |\n\
             | writes reconcile made (netlink + BPF) | {} + {} |\n\
             | pinned program links moved to the new start's programs | {} |\n\
             | connections broken | {} of {} |\n\
             | longest wait for one echo on any connection (ms) | {} |\n\
             | daemon memory before / after (MiB resident) | {} / {} |\n",
            rs["sandboxes"],
            rs["published_ports"],
            v("seconds_to_create"),
            rs["held"]["flows"],
            v("ready_s"),
            v("reconciled_s"),
            v("reconcile_netlink_writes"),
            v("reconcile_bpf_writes"),
            v("program_links"),
            rs["held"]["broken"],
            rs["held"]["flows"],
            f(&rs["held"]["max_gap_ms"]),
            v("rss_mib_before"),
            v("rss_mib_after"),
        ));
    }
    if let Some(fw) = r["firewall"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let fw = &Value::Object(fw.clone());
        s.push_str(
            "\n**Firewall: a denied client floods a published UDP port** (64-byte frames from one socket; the rule judged \
             in tcx alone, or dropped by `--xdp` in the uplink veth's native XDP; medians)\n\n\
             | metric | tcx | xdp | xdp ÷ tcx |\n|---|---|---|---|\n",
        );
        for (metric, label) in [
            ("dropped_kpps", "denied packets dropped (kpps)"),
            ("sent_kpps", "packets the client sent (kpps)"),
            ("cpu_s_per_million_drops", "busy CPU s per million drops (whole machine, sender included)"),
            ("tcp_allowed_gbps", "TCP to an allowed published port (Gbit/s)"),
        ] {
            let m = |mode: &str| f(&fw["modes"][mode][metric]["median"]);
            s.push_str(&format!(
                "| {label} | {} | {} | {} |\n",
                m("tcx"),
                m("xdp"),
                f(&fw["ratios"]["xdp/tcx"][metric])
            ));
        }
    }
    if let Some(ov) = r["overlay"].as_object().filter(|o| !o.is_empty()) {
        // Indexed as a Value: a key an older report lacks reads as null.
        let ov = &Value::Object(ov.clone());
        s.push_str(
            "\n**Overlay across hosts** (client sandbox on host A, server on host B, hosts on one LAN bridge; \
             medians)\n\n| metric | dataplane overlay | plain kernel VXLAN | underlay | overlay ÷ VXLAN |\n\
             |---|---|---|---|---|\n",
        );
        for (metric, unit, _) in METRICS {
            let m = |mode: &str| f(&ov["modes"][mode][metric]["median"]);
            s.push_str(&format!(
                "| {metric} ({unit}) | {} | {} | {} | {} |\n",
                m("overlay-dataplane"),
                m("overlay-vxlan"),
                m("underlay"),
                f(&ov["ratios"]["overlay-dataplane/overlay-vxlan"][metric]),
            ));
        }
        let cp = &ov["control_plane"];
        let sc = &ov["scale"];
        s.push_str(&format!(
            "\n`run` on host A to reachable from host B: p50 {} s, p99 {} s ({} sandboxes). {} daemons × {} \
             sandboxes on one overlay network: {} etcd writes ({} per sandbox), {} watch events delivered, {} keys, \
             all created in {} s, every host answering every host's last sandbox after {} s; daemon RSS {} MiB \
             idle, {} MiB loaded\n",
            f(&cp["p50_s"]),
            f(&cp["p99_s"]),
            cp["sandboxes"],
            sc["hosts"],
            sc["sandboxes_per_host"],
            sc["writes"],
            f(&sc["writes_per_sandbox"]),
            sc["watch_events_delivered"],
            sc["keys"],
            f(&sc["seconds_to_create_all"]),
            f(&sc["seconds_to_converge"]),
            f(&sc["daemon_rss_mib_idle"]),
            f(&sc["daemon_rss_mib_loaded"]),
        ));
    }
    if let Some(g) = r["goals"].as_array() {
        s.push_str("\n**Goals**\n\n| goal | target | measured | met |\n|---|---|---|---|\n");
        for x in g {
            let cmp = if x["at_least"].as_bool().unwrap_or(true) { "≥" } else { "≤" };
            let met = match x["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            s.push_str(&format!(
                "| {} | {cmp} {} | {} | {met} |\n",
                x["goal"].as_str().unwrap_or(""),
                x["target"],
                x["value"].as_f64().map_or("–".to_string(), |v| format!("{v:.3}"))
            ));
        }
    }
    if let Some(u) = r["unavailable"].as_object().filter(|u| !u.is_empty()) {
        s.push_str("\n**Not measured**\n\n");
        for (what, why) in u {
            s.push_str(&format!("- {what}: {}\n", why.as_str().unwrap_or("")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_sample_counts() {
        let s = stat("tcp_1_stream", vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.unit), (2.0, 1.0, 3.0, "Gbit/s"));
        assert_eq!(stat("rr_p50", vec![4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert!(!stat("rr_p50", vec![1.0]).higher_is_better);
    }

    #[test]
    fn ratios_and_goals_compare_medians() {
        let modes = json!({
            "dataplane": { "udp_64b": { "median": 180.0 }, "rr_p50": { "median": 70.0 } },
            "bare": { "udp_64b": { "median": 200.0 }, "rr_p50": { "median": 70.0 } },
            "routed": { "udp_64b": { "median": 170.0 }, "rr_p50": { "median": 80.0 } },
            "netavark": { "udp_64b": { "median": 100.0 } },
            "cni": { "udp_64b": { "median": 120.0 } },
        });
        let r = ratios(&modes, "dataplane", &["bare", "netavark", "docker"]);
        assert_eq!(r["dataplane/bare"]["udp_64b"], 0.9);
        assert_eq!(r["dataplane/netavark"]["udp_64b"], 1.8);
        assert!(!r["dataplane/netavark"].contains_key("rr_p50"), "a metric the peer lacks has no ratio");
        assert!(!r.contains_key("dataplane/docker"), "a peer not measured has no ratios");
        let dns = json!({
            "dataplane": { "names": { "qps": 90.0 } },
            "aardvark-dns": { "names": { "qps": 20.0 } },
            "docker": { "names": { "qps": 30.0 } },
        });
        let report = json!({ "modes": modes, "dns": dns });
        let g = goals(&report);
        let find = |name: &str| g.iter().find(|x| x["goal"] == name).cloned().unwrap_or_default();
        // 180 / max(100, 120) = 1.5 against the best iptables peer.
        assert_eq!(find("UDP 64 B ÷ best iptables peer")["value"], 1.5);
        assert_eq!(find("UDP 64 B ÷ best iptables peer")["met"], true);
        // The data-path goals are against `routed`: 70 / 80 ≤ 1.0, 180 / 170 ≥ 1.0.
        assert_eq!(find("RR p50 ÷ routed")["met"], true);
        assert_eq!(find("UDP 64 B ÷ routed")["met"], true);
        assert!(find("RR p50 ÷ bare").is_null(), "no goal is stated against bare any more");
        // DNS against the better peer: 90 / max(20, 30) = 3.0.
        assert_eq!(find("DNS: sandbox names q/s ÷ the best peer (aardvark-dns, Docker)")["value"], 3.0);
        assert!(
            find("localhost TCP ÷ docker-proxy")["met"].is_null(),
            "not measured is neither met nor missed"
        );
    }
}
