//! Helpers for the end-to-end tests. Each test builds its own topology:
//! a "host" network namespace running its own daemon (with its own socket,
//! state dir and bpffs dir) and an "external" namespace on the far side of
//! the host's uplink veth. Everything is torn down on drop, even when the
//! test fails. Nothing outside these namespaces is touched.

pub mod cni;
pub mod docker;
pub mod etcd;
pub mod hold;
pub mod http;
pub mod monitor;
pub mod podman;
pub mod prometheus;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Fails (never skips) when the privileged tests cannot run here.
pub fn require_privileges() {
    let uid = euid();
    if uid != 0 {
        panic!(
            "these end-to-end tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_BPF); run them with `cargo xtask test` as root (euid is {uid})"
        );
    }
    if !Path::new(&bin()).exists() {
        panic!("dataplane binary {} is missing: run the tests through `cargo xtask test`", bin());
    }
}

fn euid() -> u32 {
    // `id -u` keeps this crate free of libc/unsafe.
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(u32::MAX)
}

/// Command line of a UDP server on `port` answering every datagram with
/// `reply`, where `{addr}` and `{port}` stand for the sender's address and
/// port. One process, no fork: socat's `UDP-RECVFROM,fork` with `SYSTEM:`
/// loses a reply now and then (its child ends the command's side as soon as
/// the datagram is read, racing the command's output), which made tests
/// flaky without any packet being lost.
pub fn udp_echo_command(port: u16, reply: &str) -> Vec<String> {
    const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(65535)
    s.sendto((sys.argv[2].format(addr=peer[0], port=peer[1]) + "\n").encode(), peer)
"#;
    ["python3", "-c", SERVER, &port.to_string(), reply].iter().map(|s| s.to_string()).collect()
}

/// A server in `ns` (until dropped) answering each TCP connection (or UDP datagram) with the peer it sees.
pub struct PeerEcho(Child);

impl PeerEcho {
    pub fn start(ns: &Netns, proto: &str, port: u16) -> Self {
        let server = match proto {
            "udp" => udp_echo_command(port, "peer={addr}/{port}"),
            "tcp6" => [
                "socat",
                &format!("TCP6-LISTEN:{port},fork,reuseaddr"),
                "SYSTEM:echo peer=$SOCAT_PEERADDR/$SOCAT_PEERPORT",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            _ => [
                "socat",
                &format!("TCP-LISTEN:{port},fork,reuseaddr"),
                "SYSTEM:echo peer=$SOCAT_PEERADDR/$SOCAT_PEERPORT",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(&server)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start echo server");
        let flag = if proto == "udp" { "-uln" } else { "-tln" };
        for _ in 0..100 {
            if String::from_utf8_lossy(&ns.run(&["ss", flag]).stdout).contains(&format!(":{port} ")) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(30));
        }
        PeerEcho(child)
    }
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Path of the dataplane binary under test.
pub fn bin() -> String {
    std::env::var("DATAPLANE_BIN").unwrap_or_else(|_| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/dataplane").display().to_string()
    })
}

/// Longest any single command of a test may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `cmd` to completion, killing it (and failing the test) after
/// [`COMMAND_TIMEOUT`], so a hang never stalls the suite.
pub fn output_bounded(cmd: &mut Command) -> Output {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let pid = child.id().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let (d, t) = (Arc::clone(&done), Arc::clone(&timed_out));
    // A watchdog kills the command if it outlives the limit; the pipes are
    // drained by wait_with_output meanwhile, so large outputs cannot block it.
    std::thread::spawn(move || {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while Instant::now() < deadline {
            if d.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !d.load(Ordering::SeqCst) {
            t.store(true, Ordering::SeqCst);
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("collecting output of {shown}: {e}"));
    done.store(true, Ordering::SeqCst);
    assert!(
        !timed_out.load(Ordering::SeqCst),
        "{shown} did not finish within {COMMAND_TIMEOUT:?}; output: {}",
        text(&out)
    );
    out
}

/// Runs a command; returns its output (never panics on a non-zero exit).
pub fn sh(args: &[&str]) -> Output {
    output_bounded(Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()))
}

/// Runs a command that must succeed; returns stdout.
pub fn sh_ok(args: &[&str]) -> String {
    let o = sh(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Creates a veth pair with end `a` in namespace `ns_a` and end `b` in `ns_b`.
pub fn veth_pair(a: &str, ns_a: &str, b: &str, ns_b: &str) {
    sh_ok(&["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b]);
}

/// A unique short tag for namespace and interface names.
pub fn unique(tag: &str) -> String {
    format!("{tag}{}x{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A plain namespace (an "external" client or a LAN segment), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = unique(tag);
        sh_ok(&["ip", "netns", "add", &name]);
        sh_ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

/// A "host": a namespace running a dataplane daemon, with an uplink veth
/// (`up0`, 192.0.2.1/24 by default) to a peer namespace.
pub struct Host {
    pub ns: Netns,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    pub socket: PathBuf,
    /// Extra `dataplane daemon` flags used by every (re)start.
    pub daemon_args: Vec<String>,
    daemon: Option<Child>,
}

pub const UPLINK: &str = "up0";

impl Host {
    /// A host whose uplink leads to a fresh "external" namespace (`ext0`,
    /// 192.0.2.2/24), which is also its default gateway.
    pub fn with_external(tag: &str) -> (Host, Netns) {
        Self::with_external_args(tag, &[])
    }

    /// Like [`Host::with_external`], with extra daemon flags.
    pub fn with_external_args(tag: &str, daemon_args: &[&str]) -> (Host, Netns) {
        let (mut host, ext) = Self::with_external_unstarted(tag);
        host.daemon_args = daemon_args.iter().map(|a| a.to_string()).collect();
        host.start();
        (host, ext)
    }

    /// Like [`Host::with_external`], with the daemon not started yet.
    pub fn with_external_unstarted(tag: &str) -> (Host, Netns) {
        let ext = Netns::new("x");
        let host = Host::new(tag, &ext, None, "192.0.2.1/24");
        sh_ok(&["ip", "-n", &ext.name, "addr", "add", "192.0.2.2/24", "dev", "ext0"]);
        sh_ok(&["ip", "-n", &ext.name, "link", "set", "ext0", "up"]);
        sh_ok(&["ip", "-n", &host.ns.name, "route", "add", "default", "via", "192.0.2.2"]);
        (host, ext)
    }

    /// A host whose uplink's far end goes into `peer` (enslaved to `bridge`
    /// there if given, named `ext0` otherwise). The daemon is not started.
    pub fn new(tag: &str, peer: &Netns, bridge: Option<&str>, uplink_addr: &str) -> Host {
        require_privileges();
        let ns = Netns::new(&format!("h{tag}"));
        let far = match bridge {
            Some(_) => unique("l"),
            None => "ext0".to_string(),
        };
        let tmp = unique("u");
        veth_pair(&tmp, &ns.name, &far, &peer.name);
        sh_ok(&["ip", "-n", &ns.name, "link", "set", &tmp, "name", UPLINK]);
        sh_ok(&["ip", "-n", &ns.name, "addr", "add", uplink_addr, "dev", UPLINK]);
        sh_ok(&["ip", "-n", &ns.name, "link", "set", UPLINK, "up"]);
        if let Some(br) = bridge {
            sh_ok(&["ip", "-n", &peer.name, "link", "set", &far, "master", br]);
            sh_ok(&["ip", "-n", &peer.name, "link", "set", &far, "up"]);
        }
        let dir = std::env::temp_dir().join(format!("dataplane-test-{}", ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/dataplane-test-{}", ns.name));
        let socket = dir.join("dataplane.sock");
        Host { ns, dir, bpffs, socket, daemon_args: Vec::new(), daemon: None }
    }

    /// The daemon's process id, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Starts the daemon inside the host namespace and waits until it answers.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path())).envs(env.iter().copied());
        self.launch(cmd);
    }

    /// Starts the daemon the way the README's multi-instance example does,
    /// `ip netns exec HOST dataplane daemon …`, which also gives it a private
    /// mount namespace (and its own bpffs instance).
    pub fn start_with_ip_netns_exec(&mut self) {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns.name]);
        self.launch(cmd);
    }

    /// The host resolv.conf the test daemons read: its resolver is in the
    /// external namespace (192.0.2.2), never the machine's own.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("host-resolv.conf")
    }

    /// Runs `launcher … dataplane daemon …` and waits until the API answers
    /// (the launcher must put the daemon into this host's namespace).
    pub fn launch(&mut self, launcher: Command) {
        self.spawn_daemon(launcher);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.dp(&["network", "ls", "-q"]);
            if o.status.success() {
                return;
            }
            if let Some(Some(status)) = self.daemon.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!("daemon exited with {status}: {}", self.daemon_log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not answer within 20 s: {}",
                self.daemon_log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the daemon, which must refuse to start (within 20 s, with a
    /// failing status, never answering); returns its log.
    pub fn start_expecting_failure(&mut self) -> String {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path()));
        self.spawn_daemon(cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Some(status)) = self.daemon.as_mut().map(|c| c.try_wait().ok().flatten()) {
                self.daemon = None;
                assert!(!status.success(), "the daemon exited successfully: {}", self.daemon_log_tail());
                return self.daemon_log();
            }
            assert!(!self.dp(&["network", "ls", "-q"]).status.success(), "the daemon started and answers");
            assert!(
                Instant::now() < deadline,
                "the daemon neither failed nor answered: {}",
                self.daemon_log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn_daemon(&mut self, mut launcher: Command) {
        if !self.resolv_conf().exists() {
            std::fs::write(self.resolv_conf(), "search test.example\nnameserver 192.0.2.2\n")
                .expect("resolv.conf");
        }
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("daemon log");
        let child = launcher
            .arg(bin())
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--bpffs")
            .arg(&self.bpffs)
            // Debug logs help a failing test; daemon_args may override the level.
            .args(if self.daemon_args.iter().any(|a| a == "--log-level") {
                &[][..]
            } else {
                &["--log-level", "debug"][..]
            })
            .arg("--resolv-conf")
            .arg(self.resolv_conf())
            // Never the machine's /run/docker/plugins: a test that wants
            // the Docker plugin names its own directory.
            .args(if self.daemon_args.iter().any(|a| a == "--docker-plugin-dir") {
                &[][..]
            } else {
                &["--docker-plugin-dir", ""][..]
            })
            .args(&self.daemon_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start daemon");
        self.daemon = Some(child);
    }

    /// Sends `signal` (e.g. "INT") to the daemon and waits for it to exit;
    /// returns whether it exited successfully.
    pub fn signal_daemon(&mut self, signal: &str) -> bool {
        let Some(mut c) = self.daemon.take() else {
            return false;
        };
        let _ = sh(&["kill", &format!("-{signal}"), &c.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        false
    }

    /// kill -9 the daemon (sandboxes, interfaces and pinned BPF stay).
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.daemon.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// The last lines of the daemon's log (for failure messages).
    pub fn daemon_log_tail(&self) -> String {
        let log = self.daemon_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs the CLI against this host's daemon.
    pub fn dp(&self, args: &[&str]) -> Output {
        output_bounded(Command::new(bin()).arg("--socket").arg(&self.socket).args(args).stdin(Stdio::null()))
    }

    /// Runs the CLI; it must succeed; returns stdout.
    pub fn dp_ok(&self, args: &[&str]) -> String {
        let o = self.dp(args);
        assert!(o.status.success(), "dataplane {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs the CLI; it must fail; returns stderr+stdout.
    pub fn dp_err(&self, args: &[&str]) -> String {
        let o = self.dp(args);
        assert!(!o.status.success(), "dataplane {args:?} should have failed: {}", text(&o));
        text(&o)
    }

    /// `dataplane exec NAME cmd…`
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.dp(&args)
    }

    pub fn ping(&self, from: &str, ip: &str) -> bool {
        self.exec(from, &["ping", "-c", "1", "-W", "2", ip]).status.success()
    }

    /// Runs a command in the host namespace.
    pub fn run(&self, args: &[&str]) -> Output {
        self.ns.run(args)
    }

    /// Names of the links in the host namespace.
    pub fn links(&self) -> Vec<String> {
        let out = String::from_utf8_lossy(&self.run(&["ip", "-o", "link", "show"]).stdout).into_owned();
        let mut v: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        v.sort();
        v
    }

    /// `inspect NAME` as JSON.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.dp_ok(&["inspect", name])).expect("inspect json");
        v[0].clone()
    }

    /// IPv4 address of `name` on `network`.
    pub fn ip_of(&self, name: &str, network: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no address on {network}"))
            .to_string()
    }

    /// `name`'s IPv6 address on `network`, as inspect shows it ("" without one).
    pub fn ip6_of(&self, name: &str, network: &str) -> String {
        self.inspect(name)["NetworkSettings"]["Networks"][network]["GlobalIPv6Address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Packets counted for a drop reason (both directions).
    pub fn drops(&self, reason: &str) -> u64 {
        let rows: serde_json::Value =
            serde_json::from_str(&self.dp_ok(&["stats", "--format", "json"])).expect("stats json");
        rows["Metrics"]
            .as_array()
            .expect("rows")
            .iter()
            .filter(|r| r["Reason"] == reason)
            .map(|r| r["Packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// The value of series `series` whose labels contain `labels`, as the
    /// daemon's `/metrics` shows it now.
    pub fn metric(&self, series: &str, labels: &str) -> Option<f64> {
        let socket = self.socket.display().to_string();
        let body = text(&self.run(&["curl", "-s", "--unix-socket", &socket, "http://d/metrics"]));
        body.lines()
            .find(|l| {
                (l.starts_with(&format!("{series}{{")) || l.starts_with(&format!("{series} ")))
                    && l.contains(labels)
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Sandbox names in the store.
    pub fn sandbox_names(&self) -> Vec<String> {
        let mut names: Vec<String> =
            self.ps_rows().iter().filter_map(|s| s["Names"].as_str().map(String::from)).collect();
        names.sort();
        names
    }

    /// `ps -a --format json`: one object a line, Docker's fields (ID, Names, State, Networks…).
    pub fn ps_rows(&self) -> Vec<serde_json::Value> {
        json_lines(&self.dp_ok(&["ps", "-a", "--format", "json"]))
    }

    /// Network names in the store.
    pub fn network_names(&self) -> Vec<String> {
        json_lines(&self.dp_ok(&["network", "ls", "--format", "json"]))
            .iter()
            .filter_map(|n| n["Name"].as_str().map(String::from))
            .collect()
    }

    /// Files in the state dir's netns directory (one per live sandbox namespace, plus `default`).
    pub fn netns_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.state_dir().join("netns"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.daemon.is_some() {
            // Stop every sandbox process so nothing keeps a namespace alive.
            for name in std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.sandbox_names()))
                .unwrap_or_default()
            {
                let _ = self.dp(&["rm", "-f", &name]);
            }
        }
        self.kill_daemon();
        // A daemon killed by the test left its sandboxes' processes: every
        // process in this host's namespaces ends with it.
        let mut spaces = vec![PathBuf::from(self.ns.path())];
        if let Ok(d) = std::fs::read_dir(self.state_dir().join("netns")) {
            spaces.extend(d.flatten().map(|e| e.path()));
        }
        kill_processes_in(&spaces);
        if let Ok(d) = std::fs::read_dir(self.state_dir().join("netns")) {
            for e in d.flatten() {
                let _ = sh(&["umount", "-l", &e.path().display().to_string()]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
        // self.ns drops after this, deleting the namespace and every link in it.
    }
}

/// Kills (SIGKILL) every process whose network namespace is one of the
/// namespace files `spaces`.
pub fn kill_processes_in(spaces: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<String> = spaces
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| format!("net:[{}]", m.ino()))
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for pid in dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) else { continue };
        if pid != std::process::id() && inodes.iter().any(|i| ns.as_os_str() == i.as_str()) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
        }
    }
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped
/// by whoever is its parent now).
pub fn process_ended(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z"),
    }
}

/// Processes still alive (not zombies) in process group `pgid`, with their command lines.
pub fn group_members(pgid: u64) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
            // After the command: state, ppid, pgrp.
            (fields.first() != Some(&"Z") && fields.get(2)?.parse::<u64>().ok()? == pgid).then(|| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                format!("{pid}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
        })
        .collect()
}

/// Sends `count` crafted TCP segments (no payload) from namespace `ns` to
/// `dst:dport` with TCP `flags`, from source ports `sport`, `sport+1`, …:
/// a raw socket, so the client's kernel keeps no state for them.
pub fn send_tcp_segments(ns: &Netns, dst: &str, dport: u16, sport: u16, flags: u8, count: u16) {
    const SCRIPT: &str = r#"
import sys
dst, dport, sport, flags, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((dst, 9))
src = probe.getsockname()[0]
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
for i in range(count):
    seg = struct.pack("!HHIIBBHHH", sport + i, dport, 1000 + i, 1 if flags & 0x10 else 0, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    raw.sendto(seg[:16] + struct.pack("!H", c) + seg[18:], (dst, 0))
"#;
    let args = [dport.to_string(), sport.to_string(), flags.to_string(), count.to_string()];
    let script = format!("{PY_CSUM}\n{SCRIPT}");
    let o = ns.run(&["python3", "-c", &script, dst, &args[0], &args[1], &args[2], &args[3]]);
    assert!(o.status.success(), "sending crafted segments: {}", text(&o));
}

/// The Internet checksum, for the Python packet builders below.
const PY_CSUM: &str = r#"
import socket, struct
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff
"#;

/// Sends Ethernet frames carrying the IPv4 packets built by the Python
/// expression list `packets` (each evaluates to bytes; `ip(proto, payload,
/// ihl)` makes a header from 192.0.2.2 to 192.0.2.1, `tcp(sport, dport,
/// flags, doff)` a TCP header) from namespace `ns` straight onto the wire
/// of its `ext0` (AF_PACKET: no kernel fixes them up) to MAC `dst_mac`.
pub fn send_raw_ipv4(ns: &Netns, dst_mac: &str, packets: &str) {
    let script = format!(
        r#"{PY_CSUM}
def ip(proto, payload, ihl=5):
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(payload), 1, 0, 64, proto, 0, socket.inet_aton("192.0.2.2"), socket.inet_aton("192.0.2.1"))
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload
def tcp(sport, dport, flags, doff=5):
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, doff << 4, flags, 65535, 0, 0)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("ext0", 0))
src = open("/sys/class/net/ext0/address").read().strip()
eth = bytes.fromhex("{dst}") + bytes.fromhex(src.replace(":", "")) + b"\x08\x00"
for p in [{packets}]:
    s.send(eth + p)
"#,
        dst = dst_mac.replace(':', "")
    );
    let o = ns.run(&["python3", "-c", &script]);
    assert!(o.status.success(), "sending raw frames: {}", text(&o));
}

/// dnsmasq answering `*.outside.example` with 198.51.100.7 at 192.0.2.2:53
/// in namespace `ns` (the external namespace of [`Host::with_external`]:
/// the host resolver the daemon forwards to). Killed on drop.
pub struct DnsUpstream(Child);

impl DnsUpstream {
    /// How many names `c{i}.cached.example` it answers with TTL 300
    /// (`outside.example` and its subdomains answer with TTL 0;
    /// `brief.cached.example` with TTL 2).
    pub const KEPT_NAMES: usize = 100;

    fn kept_records() -> String {
        let names: Vec<String> = (0..Self::KEPT_NAMES).map(|i| format!("c{i}.cached.example")).collect();
        format!("--host-record={},198.51.100.8,300", names.join(","))
    }

    pub fn start(ns: &Netns) -> DnsUpstream {
        Self::start_at(ns, "192.0.2.2")
    }

    /// The same on `addr` (an address namespace `ns` holds).
    pub fn start_at(ns: &Netns, addr: &str) -> DnsUpstream {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts"])
            .args(["--bind-interfaces", &format!("--listen-address={addr}"), "--port=53"])
            .args(["--address=/outside.example/198.51.100.7", "--pid-file=", "--cache-size=0"])
            .arg(Self::kept_records())
            .arg("--host-record=brief.cached.example,198.51.100.9,2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        // Killed on drop, also when it never answers.
        let up = DnsUpstream(child);
        for _ in 0..50 {
            let at = format!("@{addr}");
            let o = ns.run(&["dig", "+short", "+time=1", "+tries=1", &at, "outside.example"]);
            if String::from_utf8_lossy(&o.stdout).contains("198.51.100.7") {
                return up;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("dnsmasq did not answer in namespace {}", ns.name);
    }
}

impl Drop for DnsUpstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Parses output of one JSON object a line (`ps --format json`, `network ls --format json`).
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}
