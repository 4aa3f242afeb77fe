//! `dataplane-bench`: measures dataplane and its peers on the same
//! topology, interleaved in rounds, and writes `report.json`, `report.md`
//! and SVG plots. Run it through `cargo xtask bench [--quick]` (as root).
//! Speeds are reported as ratios, never asserted.

mod load;
mod measure;
mod modes;
mod plot;
mod report;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::Command;

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use modes::{ECHO_PORT, EXTRA_PORT_BASE, Mode, PortMap, Serve};

#[derive(Parser)]
#[command(name = "dataplane-bench", about = "dataplane side by side with iptables-based peers")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build every mode, measure in interleaved rounds, write the report.
    Run(RunArgs),
    /// TCP echo server (runs inside a server namespace).
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
    /// Prints the client address the echo server at ADDR sees.
    Peer { addr: String },
    /// Only the name-resolution phase (as root); prints its JSON.
    Dns {
        /// 20 names only, 1 s per measurement.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Only the conntrack-at-scale phase (as root); prints its JSON. With
    /// DATAPLANE_BIN pointing at an older build it measures that one.
    CtScale {
        /// 20,000 entries and fewer samples.
        #[arg(long)]
        quick: bool,
    },
    /// Only the IPv6 phase (as root); prints its JSON.
    Ipv6 {
        #[command(flatten)]
        phase: PhaseArgs,
        /// An older `dataplane` binary: IPv4 measured before (it) and after (this build).
        #[arg(long)]
        before: Option<String>,
    },
    /// UDP flood of 64-byte frames to ADDR (the firewall phase's denied client); prints JSON.
    Flood {
        addr: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Only the firewall phase (as root): denied packets dropped in tcx vs XDP; prints its JSON.
    Firewall {
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// TCP SYNs to ADDR from random never-answering sources (the
    /// conntrack-at-capacity phase's flood); prints JSON.
    Synflood {
        addr: String,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Only the conntrack-at-capacity phase (as root): a legitimate client
    /// during a SYN flood that fills the flow table; prints its JSON.
    CtCapacity {
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Writes report.json (its goals computed again), report.md and the
    /// plots from a report.json (after a change to how they are drawn, or
    /// a phase measured again and put in).
    Render {
        report: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Only the alias load-balancing phase (as root); prints its JSON.
    AliasLb {
        #[command(flatten)]
        phase: PhaseArgs,
    },
    /// Only the restart phase (as root): kill -9 and start with many sandboxes
    /// and published ports; prints its JSON.
    Restart {
        /// 100 sandboxes, 1,000 ports, 5 flows.
        #[arg(long)]
        quick: bool,
        #[arg(long, default_value_t = 1000)]
        sandboxes: usize,
        #[arg(long, default_value_t = 10000)]
        ports: usize,
        #[arg(long, default_value_t = 20)]
        flows: usize,
    },
    /// Only the overlay phase (as root); prints its JSON (with --quick
    /// also 10 control-plane samples, 3 sandboxes per host).
    Overlay {
        #[command(flatten)]
        phase: PhaseArgs,
    },
}

/// Rounds and seconds of a phase run on its own.
#[derive(clap::Args)]
struct PhaseArgs {
    /// 1 round of 1 s.
    #[arg(long)]
    quick: bool,
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Pin clients to CPU 0 and servers to CPU 1, as a full run does by default.
    #[arg(long)]
    pin: bool,
}

impl PhaseArgs {
    /// (rounds, seconds), --quick applied; clients and servers pinned as `--pin` says.
    fn effective(&self) -> (u32, f64) {
        measure::set_pinning(self.pin);
        if self.quick { (1, 1.0) } else { (self.rounds, self.seconds) }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    /// 1 s per measurement, 1 round, 100-port scaling: a smoke test of the harness.
    #[arg(long)]
    quick: bool,
    /// Rounds (each mode measured once per round).
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Only these modes (comma-separated), e.g. dataplane,bare.
    #[arg(long, value_delimiter = ',')]
    modes: Vec<String>,
    /// Skip a scaling step for a mode whose publishing would take longer than this (seconds, estimated).
    #[arg(long, default_value_t = 300.0)]
    publish_limit: f64,
    /// Output directory.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// An older `dataplane` binary (DATAPLANE_BIN form): IPv4 is measured
    /// with it and with this build, interleaved (the IPv6 phase).
    #[arg(long)]
    before: Option<String>,
    /// Pin clients to CPU 0 and servers to CPU 1 (so latency does not
    /// depend on where the scheduler puts them); `--pin false` to not.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pin: bool,
    /// Only the data-path rounds of the modes (no scaling, control plane or
    /// phases): an A/B of a few modes.
    #[arg(long)]
    datapath_only: bool,
}

type Builder = fn() -> anyhow::Result<Mode>;

const BUILDERS: [(&str, Builder); 11] = [
    ("dataplane", modes::dataplane),
    ("bare", modes::bare),
    ("routed", modes::routed),
    ("docker-iptables", modes::docker_iptables),
    ("netavark", modes::netavark),
    ("cni", modes::cni),
    ("cni-dataplane", modes::cni_dataplane),
    ("docker", modes::docker),
    ("docker-dataplane", modes::docker_dataplane),
    ("dataplane-localhost", modes::dataplane_localhost),
    ("docker-proxy", modes::docker_proxy),
];

/// Host ports of the containers the scaling runs measure, one per step.
const PROBE_PORT_BASE: u16 = 8000;
/// Host ports the control-plane runs publish.
const CONTROL_PORT_BASE: u16 = 40000;

/// The one progress line (rewritten in place on a terminal).
struct Progress {
    done: usize,
    total: usize,
    tty: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("bench [{:>3}/{}] {what}", self.done.min(self.total), self.total);
        if self.tty {
            eprint!("\r\x1b[K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

fn first_line(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .map(|o| {
            let out = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&out).lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "kernel": first_line(&["uname", "-r"]),
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "pinning": measure::pinning(),
        "date": first_line(&["date", "-u", "+%Y-%m-%d %H:%M UTC"]),
        "tools": {
            "iperf3": first_line(&["iperf3", "--version"]),
            "iptables": first_line(&["iptables", "--version"]),
            "netavark": first_line(&[modes::netavark_bin(), "--version"]),
            "cni-plugins": first_line(&["dpkg-query", "-W", "-f=${Version}", "containernetworking-plugins"]),
            "docker": first_line(&["dpkg-query", "-W", "-f=${Version}", "docker.io"]),
            "dataplane": first_line(&[&dataplane_tests::bin(), "--version"]),
        },
    })
}

fn aggregate(samples: BTreeMap<(String, &'static str), Vec<f64>>) -> Value {
    let mut results: BTreeMap<String, BTreeMap<&'static str, report::Stat>> = BTreeMap::new();
    for ((mode, metric), v) in samples {
        results.entry(mode).or_default().insert(metric, report::stat(metric, v));
    }
    serde_json::to_value(results).unwrap_or_default()
}

struct Run {
    args: RunArgs,
    rounds: u32,
    seconds: f64,
    progress: Progress,
    unavailable: BTreeMap<String, String>,
}

impl Run {
    fn wanted(&self, name: &str) -> bool {
        self.args.modes.is_empty() || self.args.modes.iter().any(|m| m == name)
    }

    /// Builds every wanted mode; one that cannot run is reported, not dropped.
    fn build(&mut self) -> Vec<Mode> {
        let mut out = Vec::new();
        for (name, build) in BUILDERS {
            if !self.wanted(name) {
                continue;
            }
            self.progress.step(&format!("setting up {name}"));
            match build() {
                Ok(m) => out.push(m),
                Err(e) => {
                    self.unavailable.insert(name.to_string(), format!("{e:#}"));
                }
            }
        }
        out
    }

    /// Every data-path metric of every mode, interleaved in rounds.
    fn datapath(&mut self, modes: &[Mode]) -> Value {
        // A short untimed pass first: the first connections through a
        // fresh topology (neighbour resolution, cold caches) are not its speed.
        for m in modes {
            self.progress.step(&format!("warming up {}", m.name));
            if let Err(e) = measure::latency_and_rate(m, ECHO_PORT, 0.5) {
                self.unavailable.insert(m.name.to_string(), format!("{e:#}"));
            }
        }
        let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
        for round in 1..=self.rounds {
            for m in modes {
                if self.unavailable.contains_key(m.name) {
                    continue;
                }
                self.progress.step(&format!("round {round}/{}: {}", self.rounds, m.name));
                match measure::datapath(m, self.seconds) {
                    Ok(values) => {
                        for (metric, v) in values {
                            samples.entry((m.name.to_string(), metric)).or_default().push(v);
                        }
                    }
                    Err(e) => {
                        self.unavailable.insert(m.name.to_string(), format!("{e:#}"));
                    }
                }
            }
        }
        aggregate(samples)
    }

    /// Latency and connection rate to a container published after 0, 1,000
    /// and 10,000 other ports (100 with --quick), per mode.
    fn scaling(&mut self, modes: &mut [Mode], datapath: &Value) -> Value {
        // Step 0 is measured here too, the same way as the others (not
        // taken from the data-path rounds, whose server also runs iperf3).
        let steps: &[u16] = if self.args.quick { &[0, 100] } else { &[0, 1000, 10000] };
        let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut installed: BTreeMap<String, (u16, f64)> = BTreeMap::new();
        for m in modes.iter().filter(|m| m.system.is_some() && report::EXTERNAL.contains(&m.name)) {
            if !datapath[m.name].is_null() {
                installed.insert(m.name.to_string(), (0, 0.0));
            }
        }
        for (k, &step) in steps.iter().enumerate() {
            let probe = PROBE_PORT_BASE + k as u16;
            let mut ready = Vec::new();
            for (i, m) in modes.iter_mut().enumerate() {
                let Some((have, secs_per_port)) = installed.get(m.name).copied() else { continue };
                let Some(system) = m.system.as_mut() else { continue };
                let add = step - have;
                let estimate = secs_per_port * f64::from(add);
                let key = format!("{} with {step} ports", m.name);
                if estimate > self.args.publish_limit {
                    self.unavailable.insert(
                        key,
                        format!(
                            "publishing {add} more ports would take about {estimate:.0} s \
                             ({secs_per_port:.3} s per port so far; limit --publish-limit {:.0} s)",
                            self.args.publish_limit
                        ),
                    );
                    installed.remove(m.name);
                    continue;
                }
                self.progress.step(&format!("scaling: publishing {add} more ports on {}", m.name));
                let extra = match add {
                    0 => Ok(0.0),
                    _ => system.container(&modes::extra_ports(EXTRA_PORT_BASE + have, add), Serve::Nothing),
                };
                let r = extra.and_then(|secs| {
                    let p = PortMap { host: probe, container: ECHO_PORT, proto: "tcp" };
                    system.container(&[p], Serve::Echo).map(|_| secs)
                });
                match r {
                    Ok(secs) => {
                        installed.insert(m.name.to_string(), (step, secs / f64::from(add.max(1))));
                        ready.push((i, secs));
                    }
                    Err(e) => {
                        self.unavailable.insert(key, format!("{e:#}"));
                        installed.remove(m.name);
                    }
                }
            }
            let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
            for round in 1..=self.rounds {
                for &(i, _) in &ready {
                    let m = &modes[i];
                    self.progress
                        .step(&format!("scaling {step} ports, round {round}/{}: {}", self.rounds, m.name));
                    match measure::latency_and_rate(m, probe, self.seconds) {
                        Ok(values) => {
                            for (metric, v) in values {
                                samples.entry((m.name.to_string(), metric)).or_default().push(v);
                            }
                        }
                        Err(e) => {
                            self.unavailable
                                .insert(format!("{} with {step} ports", m.name), format!("{e:#}"));
                        }
                    }
                }
            }
            let stats = aggregate(samples);
            for &(i, secs) in &ready {
                let m = &modes[i];
                if stats[m.name].is_null() {
                    continue;
                }
                let rules = m.system.as_ref().map(|s| modes::iptables_rules(&s.host_ns())).unwrap_or(0);
                out.entry(m.name.to_string()).or_default().push(json!({
                    "published_ports": step,
                    "rr_p50": stats[m.name]["rr_p50"],
                    "new_connections": stats[m.name]["new_connections"],
                    "publish_seconds": secs,
                    "iptables_rules": rules,
                }));
            }
        }
        serde_json::to_value(out).unwrap_or_default()
    }

    /// Seconds to start a container with N published ports, on a fresh
    /// instance of each system.
    fn control_plane(&mut self) -> Value {
        let ns: &[u16] = if self.args.quick { &[1, 100] } else { &[1, 100, 1000] };
        let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for (name, build) in BUILDERS {
            if !report::EXTERNAL.contains(&name) || name == "bare" || name == "routed" || !self.wanted(name) {
                continue;
            }
            if self.unavailable.contains_key(name) {
                continue;
            }
            self.progress.step(&format!("control plane: {name}"));
            let mut m = match build() {
                Ok(m) => m,
                Err(e) => {
                    self.unavailable.insert(format!("{name} control plane"), format!("{e:#}"));
                    continue;
                }
            };
            let Some(system) = m.system.as_mut() else { continue };
            let mut next = CONTROL_PORT_BASE;
            for &n in ns {
                match system.container(&modes::extra_ports(next, n), Serve::Nothing) {
                    Ok(secs) => {
                        out.entry(name.to_string()).or_default().insert(n.to_string(), secs);
                    }
                    Err(e) => {
                        self.unavailable.insert(format!("{name} publishing {n} ports"), format!("{e:#}"));
                    }
                }
                next += n;
            }
        }
        serde_json::to_value(out).unwrap_or_default()
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    dataplane_tests::require_privileges();
    measure::set_pinning(args.pin);
    let (rounds, seconds) = if args.quick { (1, 1.0) } else { (args.rounds.max(1), args.seconds) };
    let wanted =
        BUILDERS.iter().filter(|(n, _)| args.modes.is_empty() || args.modes.iter().any(|m| m == n)).count();
    let steps = if args.quick { 2 } else { 3 };
    let total = wanted * (2 + rounds as usize + steps * (1 + rounds as usize) + 1) + 8;
    let mut r = Run {
        args,
        rounds,
        seconds,
        progress: Progress { done: 0, total, tty: std::io::stderr().is_terminal() },
        unavailable: BTreeMap::new(),
    };
    let mut modes = r.build();
    let datapath = r.datapath(&modes);
    let mut seen = BTreeMap::new();
    for m in &modes {
        match measure::address_seen(m) {
            Ok(a) => {
                seen.insert(m.name.to_string(), a);
            }
            Err(e) => {
                r.unavailable.insert(format!("{} client address", m.name), format!("{e:#}"));
            }
        }
    }
    let mut ratios = report::ratios(&datapath, "dataplane", &report::EXTERNAL[1..]);
    ratios.extend(report::ratios(&datapath, "dataplane-localhost", &["docker-proxy"]));
    ratios.extend(report::ratios(&datapath, "docker-dataplane", &["docker"]));
    ratios.extend(report::ratios(&datapath, "cni-dataplane", &["cni"]));
    let mut report = json!({
        "machine": machine(),
        "quick": r.args.quick,
        "rounds": rounds,
        "seconds_per_measurement": seconds,
        "modes": datapath,
        "client_address_seen": seen,
        "ratios": ratios,
    });
    // Saved after every phase: a later failure never loses what was measured.
    save(&mut report, &r)?;
    if r.args.datapath_only {
        return Ok(());
    }
    report["scaling"] = guarded(&mut r, "scaling", |r| {
        let v = r.scaling(&mut modes, &report["modes"]);
        drop(modes);
        v
    });
    save(&mut report, &r)?;
    report["control_plane"] = guarded(&mut r, "control plane", Run::control_plane);
    save(&mut report, &r)?;
    if r.wanted("dataplane") {
        r.progress.step("alias load balancing: VIP vs direct");
        report["alias_lb"] = guarded(&mut r, "alias load balancing", |r| {
            modes::alias_lb(r.rounds, r.seconds).unwrap_or_else(|e| {
                r.unavailable.insert("alias load balancing".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("conntrack at scale: run -d with 400,000 entries vs none");
        report["ct_scale"] = guarded(&mut r, "conntrack at scale", |r| {
            modes::ct_scale(r.args.quick).unwrap_or_else(|e| {
                r.unavailable.insert("conntrack at scale".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("conntrack at capacity: a legitimate client during a SYN flood");
        report["ct_capacity"] = guarded(&mut r, "conntrack at capacity", |r| {
            modes::ct_capacity(r.seconds).unwrap_or_else(|e| {
                r.unavailable.insert("conntrack at capacity".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("name resolution: ours vs aardvark-dns");
        report["dns"] = guarded(&mut r, "name resolution", |r| {
            modes::dns(r.args.quick, r.seconds).unwrap_or_else(|e| {
                r.unavailable.insert("name resolution".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("overlay across hosts: ours vs plain kernel VXLAN vs the underlay");
        report["overlay"] = guarded(&mut r, "overlay", |r| {
            modes::overlay(r.rounds, r.seconds, r.args.quick).unwrap_or_else(|e| {
                r.unavailable.insert("overlay".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("IPv6: published port over IPv6, and IPv4 before/after");
        report["ipv6"] = guarded(&mut r, "IPv6", |r| {
            let before = r.args.before.clone();
            modes::ipv6(r.rounds, r.seconds, before.as_deref()).unwrap_or_else(|e| {
                r.unavailable.insert("IPv6".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("firewall: denied packets dropped in tcx vs XDP");
        report["firewall"] = guarded(&mut r, "firewall", |r| {
            modes::firewall(r.rounds, r.seconds).unwrap_or_else(|e| {
                r.unavailable.insert("firewall".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("restart: kill -9 and start with 1,000 sandboxes and 10,000 ports");
        report["restart"] = guarded(&mut r, "restart", |r| {
            let (n, ports, flows) = if r.args.quick { (50, 500, 4) } else { (1000, 10000, 20) };
            modes::restart(n, ports, flows).unwrap_or_else(|e| {
                r.unavailable.insert("restart".into(), format!("{e:#}"));
                Value::Null
            })
        });
        save(&mut report, &r)?;
        r.progress.step("memory: 100 sandboxes");
        report["memory"] = guarded(&mut r, "memory", |r| {
            modes::memory(100).unwrap_or_else(|e| {
                r.unavailable.insert("dataplane memory".into(), format!("{e:#}"));
                Value::Null
            })
        });
    }
    r.progress.finish();
    save(&mut report, &r)?;
    println!("{}", report::markdown(&report));
    println!("bench: wrote {}", r.args.out.display());
    Ok(())
}

/// Runs one phase; a panic in it (a teardown that hangs, say) is reported
/// as the phase not measured instead of ending the run.
fn guarded(r: &mut Run, phase: &str, f: impl FnOnce(&mut Run) -> Value) -> Value {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(r))) {
        Ok(v) => v,
        Err(e) => {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            r.unavailable.insert(phase.to_string(), format!("the phase failed: {why}"));
            Value::Null
        }
    }
}

/// Writes report.json, report.md and the plots as they stand.
fn save(report: &mut Value, r: &Run) -> anyhow::Result<()> {
    report["unavailable"] = serde_json::to_value(&r.unavailable)?;
    report["goals"] = Value::Array(report::goals(report));
    let out = &r.args.out;
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(report)?)?;
    std::fs::write(out.join("report.md"), report::markdown(report))?;
    plot::all(report, out)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(args) => run(args),
        Cmd::Serve { port } => load::serve(port),
        Cmd::Rr { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::rr(&addr, seconds)?)?);
            Ok(())
        }
        Cmd::Conns { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::conns(&addr, seconds)?)?);
            Ok(())
        }
        Cmd::Flood { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::flood(&addr, seconds)?)?);
            Ok(())
        }
        Cmd::Firewall { phase } => {
            dataplane_tests::require_privileges();
            let (rounds, seconds) = phase.effective();
            println!("{}", serde_json::to_string_pretty(&modes::firewall(rounds, seconds)?)?);
            Ok(())
        }
        Cmd::Render { report, out } => {
            let mut r: Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
            // The goals again, from what the report holds now (a phase may
            // have been measured again and put in since).
            r["goals"] = Value::Array(report::goals(&r));
            std::fs::create_dir_all(&out)?;
            std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&r)?)?;
            std::fs::write(out.join("report.md"), report::markdown(&r))?;
            plot::all(&r, &out)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        Cmd::AliasLb { phase } => {
            dataplane_tests::require_privileges();
            let (rounds, seconds) = phase.effective();
            println!("{}", serde_json::to_string_pretty(&modes::alias_lb(rounds, seconds)?)?);
            Ok(())
        }
        Cmd::Synflood { addr, seconds } => {
            println!("{}", serde_json::to_string(&load::syn_flood(&addr, seconds)?)?);
            Ok(())
        }
        Cmd::CtCapacity { seconds } => {
            dataplane_tests::require_privileges();
            println!("{}", serde_json::to_string_pretty(&modes::ct_capacity(seconds)?)?);
            Ok(())
        }
        Cmd::Restart { quick, sandboxes, ports, flows } => {
            dataplane_tests::require_privileges();
            let (s, p, f) = if quick { (100, 1000, 5) } else { (sandboxes, ports, flows) };
            println!("{}", serde_json::to_string_pretty(&modes::restart(s, p, f)?)?);
            Ok(())
        }
        Cmd::Peer { addr } => {
            println!("{}", load::peer(&addr)?);
            Ok(())
        }
        Cmd::Dns { quick, seconds } => {
            dataplane_tests::require_privileges();
            println!("{}", serde_json::to_string_pretty(&modes::dns(quick, seconds)?)?);
            Ok(())
        }
        Cmd::Ipv6 { phase, before } => {
            dataplane_tests::require_privileges();
            let (rounds, seconds) = phase.effective();
            println!("{}", serde_json::to_string_pretty(&modes::ipv6(rounds, seconds, before.as_deref())?)?);
            Ok(())
        }
        Cmd::Overlay { phase } => {
            dataplane_tests::require_privileges();
            let (rounds, seconds) = phase.effective();
            println!("{}", serde_json::to_string_pretty(&modes::overlay(rounds, seconds, phase.quick)?)?);
            Ok(())
        }
        Cmd::CtScale { quick } => {
            dataplane_tests::require_privileges();
            println!("{}", serde_json::to_string_pretty(&modes::ct_scale(quick)?)?);
            Ok(())
        }
    }
}
