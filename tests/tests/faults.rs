//! The fault catalogue: what a full disk, a killed daemon, a host firewall
//! policy or garbage on the wire must not do — lose state, leave half-made
//! records or interfaces, or blackhole traffic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane_tests::{Host, sh, sh_ok, text};

/// A size-limited tmpfs mounted over a directory for the length of a test.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        sh_ok(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &dir.display().to_string()]);
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk with a file (dd stops at "No space left on device").
    fn fill(&self) {
        let _ = sh(&["dd", "if=/dev/zero", &format!("of={}", self.filler().display()), "bs=64k"]);
    }

    fn unfill(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", &self.0.display().to_string()]);
    }
}

/// Bytes of a sandbox's output log files.
fn log_bytes(h: &Host, name: &str) -> u64 {
    let id = h.inspect(name)["Id"].as_str().expect("id").to_string();
    let dir = h.state_dir().join("sandboxes").join(id);
    std::fs::read_dir(dir)
        .expect("sandbox dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("output.log"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Every sandbox record has its namespace file and every namespace file its record.
fn records_and_namespaces_agree(h: &Host) {
    let mut keys: Vec<String> = Vec::new();
    for s in h.ps_rows() {
        let name = s["Names"].as_str().expect("name").to_string();
        let key = h.inspect(&name)["NetworkSettings"]["SandboxKey"].as_str().expect("key").to_string();
        let file = Path::new(&key).file_name().expect("file").to_string_lossy().into_owned();
        keys.push(file);
    }
    keys.push("default".into());
    keys.sort();
    assert_eq!(keys, h.netns_files(), "store records and namespace files disagree");
}

#[test]
fn output_logs_are_bounded_and_rotated() {
    let (mut h, _ext) = Host::with_external_unstarted("log");
    h.daemon_args = ["--log-max-size", "64k", "--log-max-file", "2"].map(String::from).to_vec();
    h.start();
    // About 200 KB/s: several rotations within the test, without spinning a CPU.
    h.dp_ok(&["run", "-d", "--name", "noisy", "sh", "-c", "while :; do seq 100000 102000; sleep 0.05; done"]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "small",
        "--log-opt",
        "max-size=8k",
        "--log-opt",
        "max-file=1",
        "sh",
        "-c",
        "yes | head -c 100000; echo last-line; sleep 600",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let noisy = log_bytes(&h, "noisy");
    assert!(((64 << 10)..=2 * (64 << 10)).contains(&noisy), "2 files of 64 KiB at most: {noisy}");
    // `logs` shows what is kept: within the same bound (the sandbox keeps
    // writing, so comparing with the size read a moment earlier would race).
    let logs = h.dp_ok(&["logs", "noisy"]);
    assert!(
        logs.len() as u64 <= 2 * (64 << 10) && logs.lines().last().is_some(),
        "logs show what is kept: {} bytes",
        logs.len()
    );
    assert!(log_bytes(&h, "small") <= 8 << 10, "{}", log_bytes(&h, "small"));
    assert!(h.dp_ok(&["logs", "small"]).ends_with("last-line\n"), "the newest output is kept");
    // The pump outlives a daemon restart with its sandbox, and ends with it.
    h.kill_daemon();
    h.start();
    std::thread::sleep(Duration::from_millis(500));
    let after = h.dp_ok(&["logs", "noisy"]);
    assert!(after.contains("101999"), "output stopped across the restart");
    let file = h.state_dir().join("sandboxes");
    h.dp_ok(&["rm", "-f", "noisy", "small"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = sh(&["pgrep", "-f", &format!("log-pump --file {}", file.display())]);
        if !o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "log pumps outlived their sandboxes: {}", text(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_state_dir_is_refused_clearly_leaves_nothing_and_recovers() {
    let (mut h, _ext) = Host::with_external_unstarted("full");
    let disk = SmallDisk::mount(&h.state_dir(), "24m");
    h.daemon_args = ["--min-free-space", "4m"].map(String::from).to_vec();
    h.start();
    h.dp_ok(&["run", "-d", "--name", "ok", "sleep", "600"]);
    h.dp_ok(&["network", "create", "other"]);
    let ok_ip = h.ip_of("ok", "bridge");
    disk.fill();
    let (links, netns, names) = (h.links(), h.netns_files(), h.sandbox_names());
    let state_dir = h.state_dir().display().to_string();
    for args in [
        &["run", "-d", "--name", "x", "sleep", "600"][..],
        &["network", "create", "full"][..],
        &["rm", "-f", "ok"][..],
        &["network", "connect", "other", "ok"][..],
    ] {
        let err = h.dp_err(args);
        assert!(err.contains("no space left on device") && err.contains(&state_dir), "{args:?}: {err}");
    }
    assert_eq!(
        (h.links(), h.netns_files(), h.sandbox_names()),
        (links, netns, names),
        "a refused request left something"
    );
    assert!(
        h.exec("ok", &["ping", "-c", "1", "-W", "2", "172.17.0.1"]).status.success(),
        "ok stopped working"
    );
    disk.unfill();
    h.dp_ok(&["run", "-d", "--name", "y", "sleep", "600"]);
    h.dp_ok(&["network", "create", "later"]);
    assert_eq!(h.sandbox_names(), ["ok", "y"]);
    assert_eq!(h.ip_of("ok", "bridge"), ok_ip);
    records_and_namespaces_agree(&h);

    // No check up front (--min-free-space 0): requests meet the full disk
    // wherever they write (the sandbox's files, the store; the store's own
    // I/O-error recovery is unit-tested in store.rs with a failing backend).
    // None leaves half a record, and once space is back all works again
    // without a restart.
    h.kill_daemon();
    h.daemon_args = ["--min-free-space", "0"].map(String::from).to_vec();
    h.start();
    disk.fill();
    let mut refused = 0;
    for i in 0..6 {
        let name = format!("f{i}");
        let o = h.dp(&["run", "-d", "--name", &name, "sleep", "600"]);
        if !o.status.success() {
            eprintln!("refused on a full disk: {}", text(&o).trim());
            refused += 1;
            assert!(text(&o).contains("no space left") || text(&o).contains("No space left"), "{}", text(&o));
        }
    }
    assert!(refused > 0, "the full disk refused nothing");
    eprintln!(
        "store on a full disk: {}",
        h.daemon_log().lines().filter(|l| l.contains("store")).collect::<Vec<_>>().join("\n")
    );
    disk.unfill();
    for name in h.sandbox_names().into_iter().filter(|n| n.starts_with('f')) {
        let _ = h.dp(&["rm", "-f", &name]);
    }
    h.dp_ok(&["run", "-d", "--name", "after", "sleep", "600"]);
    assert!(h.sandbox_names().contains(&"after".to_string()));
    records_and_namespaces_agree(&h);
    h.kill_daemon();
    h.start();
    records_and_namespaces_agree(&h);
    assert!(
        h.sandbox_names().contains(&"ok".to_string()) && h.sandbox_names().contains(&"after".to_string())
    );
}

/// Runs the CLI against the daemon at `socket` (from any thread).
fn dp_at(socket: &Path, args: &[String]) -> std::process::Output {
    dataplane_tests::output_bounded(
        std::process::Command::new(dataplane_tests::bin())
            .arg("--socket")
            .arg(socket)
            .args(args)
            .stdin(std::process::Stdio::null()),
    )
}

/// Host-side veths in the host namespace.
fn veths(h: &Host) -> Vec<String> {
    h.links().into_iter().filter(|l| l.starts_with("veth")).collect()
}

/// Every sandbox's endpoints as `inspect` has them: (sandbox, network, interface, host veth).
fn endpoints(h: &Host) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for n in h.sandbox_names() {
        let v = h.inspect(&n);
        for (net, ep) in v["NetworkSettings"]["Networks"].as_object().expect("networks") {
            let s = |k: &str| ep[k].as_str().unwrap_or("").to_string();
            out.push((n.clone(), net.clone(), s("InterfaceName"), s("HostInterfaceName")));
        }
    }
    out
}

/// The daemon killed (-9) among 14 parallel `run -d`, 3 `rm -f` and 3
/// `network connect`, a stray namespace file and sandbox directory planted
/// while it is down: after the restart the store, the namespace files, the
/// veths and the sandboxes' interfaces agree, and every client's answer
/// agrees with the store.
fn kill_9_during_parallel_changes(ip_netns_exec: bool) {
    let (mut h, _ext) = Host::with_external_unstarted(if ip_netns_exec { "k9i" } else { "k9n" });
    let start = |h: &mut Host| if ip_netns_exec { h.start_with_ip_netns_exec() } else { h.start() };
    start(&mut h);
    h.dp_ok(&["network", "create", "--subnet", "10.84.0.0/24", "side"]);
    for i in 0..6 {
        h.dp_ok(&["run", "-d", "--name", &format!("old{i}"), "sleep", "600"]);
    }
    let socket = h.socket.clone();
    let mut requests: Vec<(String, Vec<String>)> = (0..14)
        .map(|i| {
            (
                format!("p{i}"),
                ["run", "-d", "--name", &format!("p{i}"), "sleep", "600"].map(String::from).to_vec(),
            )
        })
        .collect();
    for i in 0..3 {
        requests.push((format!("old{i}"), ["rm", "-f", &format!("old{i}")].map(String::from).to_vec()));
        let n = format!("old{}", i + 3);
        requests.push((n.clone(), ["network", "connect", "side", &n].map(String::from).to_vec()));
    }
    let clients: Vec<std::thread::JoinHandle<(String, Vec<String>, std::process::Output)>> = requests
        .into_iter()
        .map(|(name, args)| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let o = dp_at(&socket, &args);
                (name, args, o)
            })
        })
        .collect();
    // Kill it once a few changes went through, with the others in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.sandbox_names().iter().filter(|n| n.starts_with('p')).count() < 3 {
        assert!(Instant::now() < deadline, "creates did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    h.kill_daemon();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().expect("client")).collect();

    // Leftovers of a create that died before its commit.
    let netns_dir = h.state_dir().join("netns");
    let stray = netns_dir.join("0123456789ab");
    let tmp_ns = dataplane_tests::Netns::new("o");
    std::fs::write(&stray, "").expect("stray file");
    sh_ok(&["mount", "--bind", &tmp_ns.path(), &stray.display().to_string()]);
    drop(tmp_ns);
    let stray_dir = h.state_dir().join("sandboxes").join("f".repeat(64));
    std::fs::create_dir_all(&stray_dir).expect("stray dir");

    start(&mut h);
    let log = h.daemon_log();
    assert!(!stray.exists() && !stray_dir.exists(), "orphans kept: {}", h.daemon_log_tail());
    assert!(log.contains("removed a namespace file no sandbox owns"), "{}", h.daemon_log_tail());
    records_and_namespaces_agree(&h);
    let eps = endpoints(&h);
    let mut host_veths: Vec<String> = eps.iter().map(|e| e.3.clone()).collect();
    host_veths.sort();
    assert_eq!(veths(&h), host_veths, "veths and endpoint records disagree");
    for (sb, net, ifname, _) in &eps {
        assert!(
            h.exec(sb, &["ip", "link", "show", ifname]).status.success(),
            "{sb} has no {ifname} for {net}"
        );
    }
    let names = h.sandbox_names();
    let (mut ok, mut unsure) = (0, 0);
    for (name, args, o) in &answers {
        let said = text(o);
        let exists = names.contains(name);
        let connected = eps.iter().any(|e| &e.0 == name && e.1 == "side");
        let (done, not_done) = match args[0].as_str() {
            "run" => (exists, !exists),
            "rm" => (!exists, exists),
            _ => (connected, !connected),
        };
        if o.status.success() {
            ok += 1;
            assert!(done, "{args:?} was reported done but the store disagrees");
        } else if said.contains("may or may not have been made") {
            unsure += 1;
        } else {
            assert!(not_done, "{args:?} happened although its client was told: {said}");
        }
    }
    // Changes were committed before the kill (the wait above saw them) and not all answered.
    assert!(ok < answers.len(), "the kill raced nothing: {ok} of {} done, {unsure} unsure", answers.len());
    // Everything left works and goes away cleanly.
    for n in &names {
        h.dp_ok(&["rm", "-f", n]);
    }
    assert_eq!(h.netns_files(), ["default"]);
    assert!(veths(&h).is_empty(), "{:?}", veths(&h));
}

#[test]
fn kill_9_during_parallel_creates_rm_and_connect_under_nsenter() {
    kill_9_during_parallel_changes(false);
}

#[test]
fn kill_9_during_parallel_creates_rm_and_connect_under_ip_netns_exec() {
    kill_9_during_parallel_changes(true);
}

/// A TCP server in sandbox `name` answering `word` on port 80.
fn word_server(h: &Host, name: &str, extra: &[&str], word: &str) {
    let answer = format!("SYSTEM:echo {word}");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["socat", "TCP-LISTEN:80,fork,reuseaddr", &answer]);
    h.dp_ok(&args);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&h.exec(name, &["ss", "-tln"]).stdout).contains(":80 ") {
        assert!(Instant::now() < deadline, "{name} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn socat_says(o: std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn host_firewall_policies_do_not_break_us() {
    let (h, ext) = Host::with_external("fw");
    h.dp_ok(&["network", "create", "--subnet", "10.81.0.0/24", "n"]);
    h.dp_ok(&["network", "create", "--subnet", "10.82.0.0/24", "other"]);
    word_server(&h, "a2", &["--network", "n", "-p", "8080:80"], "a2");
    h.dp_ok(&["run", "-d", "--name", "a1", "--network", "n", "sleep", "600"]);
    h.dp_ok(&["run", "-d", "--name", "b1", "--network", "other", "sleep", "600"]);
    let a2 = h.ip_of("a2", "n");
    let b1 = h.ip_of("b1", "other");
    let checks = |h: &Host, what: &str| {
        assert!(h.ping("a1", &a2), "{what}: same-network ping");
        let target = format!("TCP:{a2}:80,connect-timeout=3");
        assert_eq!(
            socat_says(h.exec("a1", &["socat", "-t", "3", "-T", "3", "-", &target])),
            "a2",
            "{what}: same-network TCP"
        );
        assert_eq!(
            socat_says(ext.run(&[
                "socat",
                "-t",
                "3",
                "-T",
                "3",
                "-",
                "TCP:192.0.2.1:8080,connect-timeout=3"
            ])),
            "a2",
            "{what}: published port from outside"
        );
        assert_eq!(
            socat_says(h.run(&["socat", "-t", "3", "-T", "3", "-", "TCP:127.0.0.1:8080,connect-timeout=3"])),
            "a2",
            "{what}: localhost publishing"
        );
        assert_eq!(
            socat_says(
                h.exec("a1", &["socat", "-t", "3", "-T", "3", "-", "TCP:192.0.2.1:8080,connect-timeout=3"])
            ),
            "a2",
            "{what}: hairpin"
        );
        assert!(!h.ping("a1", &b1), "{what}: isolation between networks must hold");
    };
    checks(&h, "no host policy");
    // What dockerd does on any host with Docker: br_netfilter on, FORWARD DROP.
    assert_eq!(
        sh_ok(&["ip", "netns", "exec", &h.ns.name, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"])
            .trim(),
        "1"
    );
    sh_ok(&["ip", "netns", "exec", &h.ns.name, "iptables", "-P", "FORWARD", "DROP"]);
    checks(&h, "FORWARD DROP with br_netfilter");
    // A stateful INPUT policy (loopback and answers accepted, the rest dropped).
    for rule in [
        &["-A", "INPUT", "-i", "lo", "-j", "ACCEPT"][..],
        &["-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"][..],
        &["-P", "INPUT", "DROP"][..],
    ] {
        let mut args = vec!["ip", "netns", "exec", &h.ns.name, "iptables"];
        args.extend_from_slice(rule);
        sh_ok(&args);
    }
    checks(&h, "INPUT DROP with loopback and answers accepted");
    // Rules flushed under us: nothing of ours depended on them.
    sh_ok(&["ip", "netns", "exec", &h.ns.name, "iptables", "-F"]);
    sh_ok(&["ip", "netns", "exec", &h.ns.name, "nft", "flush", "ruleset"]);
    checks(&h, "rules flushed");
}

#[test]
fn malformed_packets_to_us_are_dropped_and_counted() {
    let (h, ext) = Host::with_external("bad");
    word_server(&h, "w", &["-p", "8080:80"], "w");
    let before = h.drops("INVALID_PACKET");
    // A TCP header cut to 10 bytes, a TCP data offset of 2 words, a UDP
    // header cut to 4 bytes, an IPv4 header length of 4 words: all to the
    // host's address, one of them to the published port.
    let mac = sh_ok(&["ip", "netns", "exec", &h.ns.name, "cat", "/sys/class/net/up0/address"]);
    dataplane_tests::send_raw_ipv4(
        &ext,
        mac.trim(),
        r#"ip(6, tcp(40000, 8080, 2)[:10]), ip(6, tcp(40001, 8080, 2, doff=2)), ip(17, b"\x9c\x40\x1f\x90"), ip(6, tcp(40002, 8080, 2), ihl=4)"#,
    );
    let counted = h.drops("INVALID_PACKET") - before;
    assert_eq!(counted, 4, "each malformed packet is dropped and counted");
    assert!(ct(&h).is_empty(), "malformed packets opened flows");
    // Well-formed traffic still flows.
    let o = ext.run(&["socat", "-t", "3", "-T", "3", "-", "TCP:192.0.2.1:8080,connect-timeout=3"]);
    assert_eq!(socat_says(o), "w");
}

fn ct(h: &Host) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["ct", "list", "--format", "json"])).expect("ct json");
    v.as_array().cloned().unwrap_or_default()
}

/// A namespace file someone else mounted again (a runtime, `ip netns
/// attach`) cannot be removed while that mount stays.
struct ExtraMount(String);

impl Drop for ExtraMount {
    fn drop(&mut self) {
        let _ = sh(&["umount", &self.0]);
    }
}

#[test]
fn a_teardown_step_that_fails_is_reported_and_the_sandbox_still_goes() {
    let (mut h, _ext) = Host::with_external("tdw");
    // A clean removal says nothing but the name.
    h.dp_ok(&["run", "-d", "--name", "c0", "sleep", "300"]);
    let o = h.dp(&["rm", "-f", "c0"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stderr).is_empty(), "{}", text(&o));
    h.dp_ok(&["run", "-d", "--name", "c1", "sleep", "300"]);
    let key = h.inspect("c1")["NetworkSettings"]["SandboxKey"].as_str().expect("key").to_string();
    sh_ok(&["mount", "--bind", &key, &key]);
    let extra = ExtraMount(key.clone());
    let o = h.dp(&["rm", "-f", "c1"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "c1");
    assert!(
        err.starts_with("WARNING: removing the network namespace of c1 failed") && err.contains(&key),
        "the failed step is named with its cause: {err}"
    );
    // The record went all the same (it goes first); the file stays while mounted.
    assert!(!h.sandbox_names().contains(&"c1".to_string()));
    assert!(Path::new(&key).exists());
    // Once the other mount is gone, the next start removes what is left.
    drop(extra);
    h.kill_daemon();
    h.start();
    assert!(!Path::new(&key).exists(), "the leftover namespace file outlived a restart");
    assert_eq!(h.netns_files(), ["default"]);
}
