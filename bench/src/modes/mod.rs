//! The systems under test. Each is built on namespaces of its own with the
//! same shape — an "external" client namespace behind the uplink of a
//! "host" namespace, containers behind the host — and torn down on drop.
//! Every system can start containers with published ports its own way
//! ([`System::container`]), which is what the control-plane and scaling
//! runs measure.

mod alias_lb;
mod bare;
mod cni;
mod ct_capacity;
mod ct_scale;
pub mod dns;
mod docker;
mod firewall;
mod iptables;
mod ipv6;
mod netavark;
mod ours;
mod overlay;
mod restart;
mod routed;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dataplane_tests::{Netns, sh};

pub use alias_lb::alias_lb;
pub use bare::bare;
pub use cni::{cni, cni_dataplane};
pub use ct_capacity::ct_capacity;
pub use ct_scale::ct_scale;
pub use dns::dns;
pub use docker::{docker, docker_dataplane};
pub use firewall::firewall;
pub use iptables::{docker_iptables, docker_proxy};
pub use ipv6::ipv6;
pub use netavark::netavark;
pub use ours::{dataplane, dataplane_localhost, memory};
pub use overlay::overlay;
pub use restart::restart;
pub use routed::routed;

/// Ports the servers listen on (and that are published).
pub const IPERF_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7000;
/// Host ports handed out to extra published ports (scaling, control plane).
pub const EXTRA_PORT_BASE: u16 = 20000;

/// The uplink addresses every topology uses.
pub const HOST_IP: &str = "192.0.2.1";
pub const EXTERNAL_IP: &str = "192.0.2.2";

/// One published port: host port → container port.
#[derive(Clone, Copy, Debug)]
pub struct PortMap {
    pub host: u16,
    pub container: u16,
    pub proto: &'static str,
}

/// What a new container runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Serve {
    /// Nothing (it only holds published ports).
    Nothing,
    /// The echo server (request/response and connection-rate runs).
    Echo,
    /// iperf3 and the echo server.
    All,
}

impl Serve {
    /// The shell command a container runs for this.
    pub fn command(self) -> String {
        self.command_with(&bench_bin())
    }

    /// The same, with the harness binary at `bench`.
    pub fn command_with(self, bench: &str) -> String {
        match self {
            Serve::Nothing => "exec sleep infinity".into(),
            Serve::Echo => format!("exec {bench} serve {ECHO_PORT}"),
            Serve::All => format!("iperf3 -s -p {IPERF_PORT} & exec {bench} serve {ECHO_PORT}"),
        }
    }

    pub fn ports(self) -> &'static [u16] {
        match self {
            Serve::Nothing => &[],
            Serve::Echo => &[ECHO_PORT],
            Serve::All => &[IPERF_PORT, ECHO_PORT],
        }
    }
}

/// A networking system that can start containers with published ports.
pub trait System {
    /// Starts a container running `serve` with `ports` published; returns
    /// the seconds from the request to published ports in force (the
    /// system's own publishing step, networking of the container included).
    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64>;

    /// The host namespace (where a peer's iptables rules live).
    fn host_ns(&self) -> String;
}

/// Rules in the nat and filter tables of namespace `ns` (`iptables-save`).
pub fn iptables_rules(ns: &str) -> usize {
    let o = sh(&["ip", "netns", "exec", ns, "iptables-save"]);
    String::from_utf8_lossy(&o.stdout).lines().filter(|l| l.starts_with("-A ")).count()
}

/// One mode, ready to be measured.
pub struct Mode {
    pub name: &'static str,
    /// Namespace the clients run in.
    pub client: String,
    /// Address the clients connect to.
    pub addr: String,
    /// The system, for scaling and control-plane runs (None: `bare`,
    /// which publishes nothing).
    pub system: Option<Box<dyn System>>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Mode {
    pub fn new(name: &'static str, client: &str, addr: &str) -> Mode {
        Mode { name, client: client.into(), addr: addr.into(), system: None, _keep: Vec::new() }
    }

    pub fn with_system(mut self, s: Box<dyn System>) -> Mode {
        self.system = Some(s);
        self
    }

    pub fn keep(mut self, thing: impl std::any::Any) -> Mode {
        self._keep.push(Box::new(thing));
        self
    }
}

pub fn netavark_bin() -> &'static str {
    netavark::NETAVARK
}

pub fn bench_bin() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "dataplane-bench".into())
}

/// The ports the main server container publishes (same on every mode).
pub fn main_ports() -> Vec<PortMap> {
    vec![
        PortMap { host: IPERF_PORT, container: IPERF_PORT, proto: "tcp" },
        PortMap { host: IPERF_PORT, container: IPERF_PORT, proto: "udp" },
        PortMap { host: ECHO_PORT, container: ECHO_PORT, proto: "tcp" },
    ]
}

/// `n` TCP ports from `first`, each published on the same number.
pub fn extra_ports(first: u16, n: u16) -> Vec<PortMap> {
    (0..n).map(|i| PortMap { host: first + i, container: first + i, proto: "tcp" }).collect()
}

/// Processes killed (and reaped) on drop, before their namespaces go;
/// with their process group when they lead one (what a shell started in the
/// background, e.g. `iperf3 -s &`, goes too).
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // A negative pid is the group; nothing happens if the child leads none.
            let group = format!("-{}", c.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A container of a peer system: a namespace and what runs in it.
pub struct Container {
    /// Declared first: processes die before the namespace is deleted.
    pub procs: Procs,
    pub ns: Netns,
}

impl Container {
    pub fn new(tag: &str) -> Container {
        Container { procs: Procs::default(), ns: Netns::new(tag) }
    }

    /// Starts `serve` inside and waits until it listens.
    pub fn serve(&mut self, serve: Serve) -> anyhow::Result<()> {
        if serve == Serve::Nothing {
            return Ok(());
        }
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns.name, "sh", "-c", &serve.command()])
            // A group of its own: iperf3 runs in the background of this shell.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the servers")?;
        self.procs.0.push(child);
        wait_listening(&["ip", "netns", "exec", &self.ns.name], serve.ports())
    }
}

/// The containers a system started, kept until it goes.
pub trait Kept {
    /// Keeps `c`; returns `secs` (what starting it took).
    fn kept(&mut self, c: Container, secs: f64) -> f64;
}

impl Kept for Vec<Container> {
    fn kept(&mut self, c: Container, secs: f64) -> f64 {
        self.push(c);
        secs
    }
}

/// Waits until `ss -tln`, run under `prefix`, shows every port of `ports`.
pub fn wait_listening(prefix: &[&str], ports: &[u16]) -> anyhow::Result<()> {
    let mut cmd: Vec<&str> = prefix.to_vec();
    cmd.extend_from_slice(&["ss", "-tln"]);
    for _ in 0..200 {
        let ss = String::from_utf8_lossy(&sh(&cmd).stdout).into_owned();
        if ports.iter().all(|p| ss.contains(&format!(":{p} "))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("servers never listened on {ports:?}")
}

/// Runs a command, failing with its output when it fails.
pub fn must(args: &[&str]) -> anyhow::Result<String> {
    let o = sh(args);
    if !o.status.success() {
        bail!("{} failed: {}", args.join(" "), dataplane_tests::text(&o).trim());
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs a command with `input` on its stdin; returns its stdout.
pub fn must_with_input(cmd: &mut Command, input: &[u8]) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!("{shown} failed: {}", dataplane_tests::text(&o).trim());
    }
    Ok(o.stdout)
}

/// Seconds `f` takes.
pub fn timed(f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Lets a client namespace open connections back to back: TIME_WAIT reuse
/// and a wide port range (otherwise the connection-rate test measures port
/// exhaustion, not the datapath).
pub fn tune_client(ns: &str) -> anyhow::Result<()> {
    must(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])?;
    must(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])?;
    Ok(())
}

/// The external client namespace and the host namespace of a peer, joined
/// by the uplink veth (`up0` 192.0.2.1 in the host, `ext0` 192.0.2.2
/// outside), with forwarding on in the host.
pub struct PeerHost {
    pub ext: Netns,
    pub host: Netns,
}

impl PeerHost {
    pub fn new(tag: &str) -> anyhow::Result<PeerHost> {
        let ext = Netns::new(&format!("{tag}x"));
        let host = Netns::new(&format!("{tag}h"));
        let up = dataplane_tests::unique("up");
        dataplane_tests::veth_pair(&up, &host.name, "ext0", &ext.name);
        let h = |args: &[&str]| {
            let mut full = vec!["ip", "-n", &host.name];
            full.extend_from_slice(args);
            must(&full)
        };
        h(&["link", "set", &up, "name", "up0"])?;
        h(&["addr", "add", &format!("{HOST_IP}/24"), "dev", "up0"])?;
        h(&["link", "set", "up0", "up"])?;
        must(&["ip", "-n", &ext.name, "addr", "add", &format!("{EXTERNAL_IP}/24"), "dev", "ext0"])?;
        must(&["ip", "-n", &ext.name, "link", "set", "ext0", "up"])?;
        must(&["ip", "netns", "exec", &host.name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        tune_client(&ext.name)?;
        Ok(PeerHost { ext, host })
    }

    /// Runs a command in the host namespace.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.host.name];
        full.extend_from_slice(args);
        must(&full)
    }
}

/// Builds a peer mode: its system, with the main server container started.
pub fn peer_mode(
    name: &'static str,
    client: &str,
    addr: &str,
    mut system: Box<dyn System>,
) -> anyhow::Result<Mode> {
    system.container(&main_ports(), Serve::All)?;
    Ok(Mode::new(name, client, addr).with_system(system))
}
