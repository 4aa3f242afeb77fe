//! The IPv6 phase: the data-path metrics of the IPv4 one, over IPv6 from
//! the external namespace to a published port — `dataplane` (a
//! dual-stack network, DNAT in BPF), `docker-iptables` (Docker's ip6tables
//! rule shape: DNAT in the nat DOCKER chain, MASQUERADE, filter FORWARD)
//! and `bare` (one veth pair) — interleaved in rounds. And IPv4 before and
//! after: this build's `dataplane` against an older one (`--before BIN`),
//! the IPv4 metrics interleaved the same way, so a change to the IPv4 path
//! is measured, not assumed.

use std::collections::BTreeMap;
use std::process::Command;

use dataplane_tests::{Host, Netns};
use serde_json::{Value, json};

use super::{Container, Mode, PeerHost, Serve, main_ports, must, must_with_input, ours, tune_client};

const HOST6: &str = "fd00:ffff::1";
const EXTERNAL6: &str = "fd00:ffff::2";
const BRIDGE: &str = "br0";
const SUBNET6: &str = "fd00:31::/64";

/// The three IPv6 modes, measured; and, with `before`, IPv4 before/after.
pub fn ipv6(rounds: u32, secs: f64, before: Option<&str>) -> anyhow::Result<Value> {
    let modes = vec![dataplane6()?, docker_iptables6()?, bare6()?];
    let results = measure_rounds(&modes, rounds, secs)?;
    let seen: BTreeMap<String, String> = modes
        .iter()
        .filter_map(|m| crate::measure::address_seen(m).ok().map(|a| (m.name.to_string(), a)))
        .collect();
    drop(modes);
    let ratios = crate::report::ratios(&results, "dataplane", &["docker-iptables", "bare"]);
    let mut out = json!({ "modes": results, "ratios": ratios, "client_address_seen": seen });
    out["ipv4_before_after"] = match before {
        Some(bin) => before_after(bin, rounds, secs)?,
        None => json!({ "not_measured": "no older build given (--before BIN)" }),
    };
    Ok(out)
}

/// Every data-path metric of every mode, interleaved in rounds, after an
/// untimed warm-up pass.
fn measure_rounds(modes: &[Mode], rounds: u32, secs: f64) -> anyhow::Result<Value> {
    for m in modes {
        crate::measure::latency_and_rate(m, super::ECHO_PORT, 0.5)?;
    }
    let mut samples: BTreeMap<(String, &'static str), Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        for m in modes {
            for (metric, v) in crate::measure::datapath(m, secs)? {
                samples.entry((m.name.to_string(), metric)).or_default().push(v);
            }
        }
    }
    Ok(crate::aggregate(samples))
}

/// This build's daemon against `bin`'s over IPv4, published ports from
/// outside, interleaved.
fn before_after(bin: &str, rounds: u32, secs: f64) -> anyhow::Result<Value> {
    anyhow::ensure!(std::path::Path::new(bin).exists(), "--before {bin}: no such file");
    let now = ours::dataplane()?;
    // The daemon and CLI of the older build for this one mode only.
    let saved = std::env::var("DATAPLANE_BIN").ok();
    // SAFETY: the harness is single-threaded while modes are built.
    unsafe { std::env::set_var("DATAPLANE_BIN", bin) };
    let old = ours::dataplane();
    // SAFETY: as above.
    unsafe {
        match &saved {
            Some(v) => std::env::set_var("DATAPLANE_BIN", v),
            None => std::env::remove_var("DATAPLANE_BIN"),
        }
    }
    let mut old = old?;
    old.name = "dataplane-before";
    let modes = vec![now, old];
    let results = measure_rounds(&modes, rounds, secs)?;
    let ratios = crate::report::ratios(&results, "dataplane", &["dataplane-before"]);
    Ok(json!({ "before": bin, "modes": results, "ratios": ratios }))
}

/// Our daemon with a dual-stack network; the client reaches the published
/// ports at the host's IPv6 address.
fn dataplane6() -> anyhow::Result<Mode> {
    let (host, ext) = std::panic::catch_unwind(|| Host::with_external_args("b6", &["--log-level", "info"]))
        .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    host.run(&["ip", "addr", "add", &format!("{HOST6}/64"), "dev", "up0", "nodad"]);
    must(&["ip", "-n", &ext.name, "addr", "add", &format!("{EXTERNAL6}/64"), "dev", "ext0", "nodad"])?;
    tune_client(&ext.name)?;
    let o = host.dp(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.77.0.0/24",
        "--subnet",
        "fd00:77::/64",
        "b6",
    ]);
    anyhow::ensure!(o.status.success(), "network create: {}", dataplane_tests::text(&o).trim());
    let mut args =
        vec!["run".to_string(), "-d".into(), "--name".into(), "srv".into(), "--network".into(), "b6".into()];
    for s in ours::specs(&main_ports()) {
        args.extend(["-p".to_string(), s]);
    }
    args.extend(["sh".to_string(), "-c".into(), Serve::All.command()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = host.dp(&args);
    anyhow::ensure!(o.status.success(), "dataplane run: {}", dataplane_tests::text(&o).trim());
    let key = host.inspect("srv")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    super::wait_listening(&["nsenter", &format!("--net={key}")], Serve::All.ports())?;
    let client = ext.name.clone();
    Ok(Mode::new("dataplane", &client, &format!("[{HOST6}]")).keep(host).keep(ext))
}

/// Docker's ip6tables rules for a bridge network with one published container.
struct DockerRules6 {
    /// Declared first: the container goes before the host.
    _container: Container,
    _host: PeerHost,
}

fn docker_iptables6() -> anyhow::Result<Mode> {
    let host = PeerHost::new("d6")?;
    let hostns = host.host.name.clone();
    must(&["ip", "-n", &hostns, "addr", "add", &format!("{HOST6}/64"), "dev", "up0", "nodad"])?;
    must(&["ip", "-n", &host.ext.name, "addr", "add", &format!("{EXTERNAL6}/64"), "dev", "ext0", "nodad"])?;
    host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "fd00:31::1/64", "dev", BRIDGE, "nodad"])?;
    host.run(&["ip", "link", "set", BRIDGE, "up"])?;
    host.run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
    let mut c = Container::new("d6c");
    let v = dataplane_tests::unique("d6v");
    dataplane_tests::veth_pair(&v, &hostns, "eth0", &c.ns.name);
    host.run(&["ip", "link", "set", &v, "master", BRIDGE])?;
    host.run(&["ip", "link", "set", &v, "up"])?;
    must(&["ip", "-n", &c.ns.name, "addr", "add", "fd00:31::2/64", "dev", "eth0", "nodad"])?;
    must(&["ip", "-n", &c.ns.name, "link", "set", "eth0", "up"])?;
    must(&["ip", "-n", &c.ns.name, "route", "add", "default", "via", "fd00:31::1"])?;
    must_with_input(
        Command::new("ip").args(["netns", "exec", &hostns, "ip6tables-restore"]),
        super::iptables::base_rules(SUBNET6, "::1/128").as_bytes(),
    )?;
    must_with_input(
        Command::new("ip").args(["netns", "exec", &hostns, "ip6tables-restore", "--noflush"]),
        super::iptables::port_rules("fd00:31::2", &main_ports()).as_bytes(),
    )?;
    c.serve(Serve::All)?;
    let client = host.ext.name.clone();
    Ok(Mode::new("docker-iptables", &client, &format!("[{HOST6}]"))
        .keep(DockerRules6 { _container: c, _host: host }))
}

/// A veth pair over IPv6: the limit.
fn bare6() -> anyhow::Result<Mode> {
    let client = Netns::new("b6c");
    let mut server = Container::new("b6s");
    let a = dataplane_tests::unique("b6a");
    dataplane_tests::veth_pair(&a, &client.name, "eth0", &server.ns.name);
    must(&["ip", "-n", &client.name, "addr", "add", "fd00:250::1/64", "dev", &a, "nodad"])?;
    must(&["ip", "-n", &client.name, "link", "set", &a, "up"])?;
    must(&["ip", "-n", &server.ns.name, "addr", "add", "fd00:250::2/64", "dev", "eth0", "nodad"])?;
    must(&["ip", "-n", &server.ns.name, "link", "set", "eth0", "up"])?;
    server.serve(Serve::All)?;
    tune_client(&client.name)?;
    let name = client.name.clone();
    Ok(Mode::new("bare", &name, "[fd00:250::2]").keep(server).keep(client))
}
