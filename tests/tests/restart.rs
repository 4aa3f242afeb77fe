//! kill -9 and restart: the store is the truth, the kernel is reconciled to
//! it, and BPF enforcement keeps running while the daemon is down.

use dataplane_tests::Host;

#[test]
fn kill_9_and_restart_keeps_state_connectivity_and_enforcement() {
    let (mut h, _ext) = Host::with_external("rst");
    h.dp_ok(&["network", "create", "--subnet", "10.71.0.0/24", "red"]);
    h.dp_ok(&["network", "create", "--subnet", "10.72.0.0/24", "blue"]);
    h.dp_ok(&["run", "-d", "--name", "r1", "--network", "red", "sleep", "600"]);
    h.dp_ok(&["run", "-d", "--name", "r2", "--network", "red", "sleep", "600"]);
    h.dp_ok(&["run", "-d", "--name", "b1", "--network", "blue", "sleep", "600"]);
    let nets_before = h.network_names();
    // What a restart must keep (the times in STATUS move on by themselves).
    let ps_fields = [
        "ps",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Names}} {{.State}} {{.Networks}} {{.Ports}} {{.CreatedAt}}",
    ];
    let ps_before = h.dp_ok(&ps_fields);
    let r2_ip = h.ip_of("r2", "red");
    let r2_veth = h.inspect("r2")["NetworkSettings"]["Networks"]["red"]["HostInterfaceName"]
        .as_str()
        .expect("host veth")
        .to_string();
    let pid_r1 = h.inspect("r1")["State"]["Pid"].as_u64().expect("pid");
    let r1_netns =
        format!("--net={}", h.inspect("r1")["NetworkSettings"]["SandboxKey"].as_str().expect("key"));

    let blue: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "blue"])).expect("json");
    let blue_bridge = format!("br-{}", &blue[0]["Id"].as_str().expect("id")[..12]);

    h.kill_daemon();
    // Enforcement is pinned: isolation holds and same-network traffic flows with no daemon.
    let ping = |target: &str| {
        dataplane_tests::sh(&["nsenter", &r1_netns, "ping", "-c", "1", "-W", "2", target]).status.success()
    };
    assert!(ping(&r2_ip), "same network broke while the daemon was down");
    assert!(!ping("10.72.0.2"), "isolation stopped while the daemon was down");
    // Damage the kernel state while the daemon is away.
    assert!(h.run(&["ip", "link", "del", &blue_bridge]).status.success());
    assert!(h.run(&["ip", "link", "del", &r2_veth]).status.success());
    // Leftovers of ours (marked with our alias), and a Docker-style veth that is not ours.
    for cmd in [
        "ip link add vethdead0 type veth peer name vethdead1",
        "ip link set vethdead0 alias dataplane",
        "ip link add br-0123456789ab type bridge",
        "ip link set br-0123456789ab alias dataplane",
        "ip link add vethf00d123 type veth peer name vethf00d124",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        assert!(h.run(&args).status.success(), "{cmd}");
    }

    h.start();
    assert_eq!(h.network_names(), nets_before);
    let ps_after = h.dp_ok(&ps_fields);
    assert_eq!(ps_before, ps_after, "ps changed across the restart");
    assert_eq!(h.inspect("r1")["State"]["Pid"].as_u64(), Some(pid_r1), "sandbox process was restarted");
    assert_eq!(h.ip_of("r2", "red"), r2_ip);
    assert!(h.links().contains(&r2_veth), "lost veth was not recreated: {:?}", h.links());
    assert!(h.ping("r1", &r2_ip), "connectivity not restored");
    assert!(h.links().contains(&blue_bridge), "lost bridge was not recreated");
    assert!(h.ping("b1", "10.72.0.1"), "recreated bridge lost its port or address");
    let links = h.links();
    assert!(
        !links.iter().any(|l| l.starts_with("vethdead") || l == "br-0123456789ab"),
        "strays kept: {links:?}"
    );
    assert!(links.contains(&"vethf00d123".to_string()), "deleted a veth that is not ours: {links:?}");
    let before = h.drops("POLICY_NETWORK_ISOLATION");
    assert!(!h.ping("r1", "10.72.0.2"));
    assert!(h.drops("POLICY_NETWORK_ISOLATION") > before);
    // The daemon still manages what it had: stop/rm work on pre-restart sandboxes.
    h.dp_ok(&["rm", "-f", "r1"]);
    assert!(dataplane_tests::process_ended(pid_r1), "rm -f left the process running");
}

#[test]
fn daemon_tells_systemd_it_is_ready_and_stops_cleanly_on_ctrl_c() {
    let ext = dataplane_tests::Netns::new("x");
    let mut h = Host::new("ntf", &ext, None, "192.0.2.1/24");
    let (notify, notify_path) = Notify::bind(&h);
    h.start_with_env(&[("NOTIFY_SOCKET", notify_path.as_str())]);
    // First what the start's reconcile pass did, then READY.
    let status = notify.next("STATUS=");
    assert!(status.contains("reconciled in") && status.contains("bpf_writes="), "{status}");
    notify.next("READY=1");
    // A foreground `run` long-polls the daemon; Ctrl-C must still stop it promptly.
    h.dp_ok(&["run", "-d", "--name", "s", "sleep", "300"]);
    let mut waiter = std::process::Command::new(dataplane_tests::bin())
        .arg("--socket")
        .arg(&h.socket)
        .args(["run", "--name", "fg", "sleep", "300"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("foreground run");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(h.signal_daemon("INT"), "daemon did not exit cleanly on SIGINT: {}", h.daemon_log());
    let _ = waiter.kill();
    let _ = waiter.wait();
    assert!(!h.socket.exists(), "socket left behind");
    // The sandbox outlives the daemon and is there when it comes back.
    h.start();
    assert!(h.dp_ok(&["ps"]).contains(" s\n") || h.dp_ok(&["ps"]).lines().any(|l| l.ends_with(" s")));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[test]
fn daemon_in_ip_netns_exec_survives_kill_9() {
    let ext = dataplane_tests::Netns::new("x");
    let mut h = Host::new("ipx", &ext, None, "192.0.2.1/24");
    h.start_with_ip_netns_exec();
    h.dp_ok(&["network", "create", "--subnet", "10.73.0.0/24", "n"]);
    h.dp_ok(&["run", "-d", "--name", "a", "--network", "n", "sleep", "600"]);
    h.dp_ok(&["create", "--name", "b", "--network", "n"]);
    let b_ip = h.ip_of("b", "n");
    // Its namespace files are mounts in the daemon's private mount namespace;
    // exec still reaches them, with and without a process.
    assert!(h.ping("a", &b_ip), "a cannot reach b");
    assert!(h.exec("b", &["ip", "-o", "addr", "show", "eth0"]).status.success());

    h.kill_daemon();
    h.start_with_ip_netns_exec();
    let log = h.daemon_log();
    assert!(log.contains("re-pinning the namespace of the running process"), "{}", tail(&log));
    assert!(log.contains("network namespace was lost; recreating it"), "{}", tail(&log));
    assert_eq!(h.ip_of("b", "n"), b_ip);
    assert!(h.ping("a", &b_ip), "connectivity not restored after restart");
    assert!(h.ping("b", "10.73.0.1"), "b's recreated endpoint does not work");
}

#[test]
fn a_pinned_map_of_another_shape_is_made_anew() {
    // An older release pinned DP_METRICS with fewer drop reasons.
    let ext = dataplane_tests::Netns::new("x");
    let mut h = Host::new("shp", &ext, None, "192.0.2.1/24");
    std::fs::create_dir_all(&h.bpffs).expect("bpffs dir");
    let pin = h.bpffs.join("DP_METRICS");
    let o = dataplane_tests::sh(&[
        "bpftool",
        "map",
        "create",
        &pin.display().to_string(),
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "16",
        "entries",
        "28",
        "name",
        "DP_METRICS",
    ]);
    assert!(o.status.success(), "bpftool map create: {}", dataplane_tests::text(&o));
    h.start();
    let stats = h.dp_ok(&["stats", "--all"]);
    assert!(stats.contains("LB_NO_BACKEND"), "every reason is counted again: {stats}");
    assert!(h.daemon_log().contains("another shape"), "the daemon says why: {}", h.daemon_log_tail());
}

/// A TCP server on port 80 of sandbox `name` answering `word`, published on `hport`.
fn word_server(h: &Host, name: &str, hport: &str, word: &str) {
    let p = format!("{hport}:80");
    let answer = format!("SYSTEM:echo {word}");
    h.dp_ok(&["run", "-d", "--name", name, "-p", &p, "socat", "TCP-LISTEN:80,fork,reuseaddr", &answer]);
    for _ in 0..100 {
        if String::from_utf8_lossy(&h.exec(name, &["ss", "-tln"]).stdout).contains(":80 ") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{name} never listened");
}

/// What a TCP server at `addr` says to a client in namespace `ns`.
fn ask_tcp(ns: &str, addr: &str) -> String {
    let target = format!("TCP:{addr},connect-timeout=3");
    let o = dataplane_tests::sh(&["ip", "netns", "exec", ns, "socat", "-t", "3", "-T", "3", "-", &target]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Programs of ours attached at tcx ingress of `dev`, as `stats` reports them: (name, prog id).
fn tcx_programs(h: &Host, dev: &str) -> Vec<(String, u64)> {
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("stats json");
    let target = format!("tcx ingress of {dev}");
    v["Programs"]
        .as_array()
        .expect("programs")
        .iter()
        .filter(|p| p["Target"] == target.as_str())
        .map(|p| (p["Program"].as_str().unwrap_or("").to_string(), p["ProgramId"].as_u64().unwrap_or(0)))
        .collect()
}

/// Our socket hooks on the cgroup that act for this daemon.
fn cgroup_programs(h: &Host) -> usize {
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("stats json");
    v["Programs"]
        .as_array()
        .expect("programs")
        .iter()
        .filter(|p| p["Target"].as_str().unwrap_or("").starts_with("cgroup "))
        .count()
}

#[test]
fn a_restart_retires_the_datapath_an_earlier_run_left_in_another_mount_namespace() {
    let (mut h, ext) = Host::with_external_unstarted("gen");
    h.start_with_ip_netns_exec();
    // Something keeps the first daemon's private mount namespace, and so its
    // bpffs and pinned links, alive after it dies (a sandbox started by an
    // older release did: it copied that namespace with the pins in it).
    let pid = h.daemon_pid().expect("daemon pid").to_string();
    let holder = KillOnDrop(
        std::process::Command::new("nsenter")
            .args(["-t", &pid, "-m", "sleep", "600"])
            .spawn()
            .expect("mount namespace holder"),
    );
    h.dp_ok(&["run", "-d", "--name", "keep", "sleep", "600"]);
    word_server(&h, "ip1", "5201", "one");
    let host_ns = h.ns.name.clone();
    let outside = || ask_tcp(&ext.name, "192.0.2.1:5201");
    let local = || ask_tcp(&host_ns, "127.0.0.1:5201");
    assert_eq!(outside(), "one");
    assert_eq!(local(), "one");

    h.kill_daemon();
    h.start_with_ip_netns_exec();
    h.dp_ok(&["rm", "-f", "ip1"]);
    // ip1's address goes to a sandbox that serves nothing: an old program steering there fails.
    h.dp_ok(&["run", "-d", "--name", "filler", "sleep", "600"]);
    word_server(&h, "ip2", "5201", "two");
    assert_eq!(outside(), "two", "the old uplink program still steers the port: {}", h.daemon_log_tail());
    assert_eq!(local(), "two", "the old socket hooks still steer the port");
    let on_uplink = tcx_programs(&h, dataplane_tests::UPLINK);
    assert_eq!(on_uplink.len(), 1, "one uplink program, not one per generation: {on_uplink:?}");
    assert_eq!(cgroup_programs(&h), 8, "one set of socket hooks, not one per generation");
    let log = h.daemon_log();
    assert!(log.contains("detached a BPF link left by an earlier run"), "{}", h.daemon_log_tail());
    assert!(log.contains("cgroup"), "the old socket hooks were not named in the log");
    drop(holder);
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_restart_puts_its_new_programs_on_every_existing_interface() {
    let (mut h, ext) = Host::with_external("upg");
    h.dp_ok(&["network", "create", "--subnet", "10.74.0.0/24", "n"]);
    word_server(&h, "w", "5202", "w");
    h.dp_ok(&["run", "-d", "--name", "c", "--network", "n", "sleep", "600"]);
    let veths: Vec<String> = ["w", "c"]
        .iter()
        .map(|s| {
            let v = h.inspect(s);
            let nets = v["NetworkSettings"]["Networks"].as_object().expect("networks").clone();
            nets.values().next().expect("a network")["HostInterfaceName"].as_str().expect("veth").to_string()
        })
        .collect();
    let before_uplink = tcx_programs(&h, dataplane_tests::UPLINK);
    let before_veth: Vec<_> = veths.iter().map(|v| tcx_programs(&h, v)).collect();
    assert_eq!(before_uplink.len(), 1, "{before_uplink:?}");

    // Each start loads its programs anew (a new build would differ in code too).
    h.kill_daemon();
    h.start();
    let after_uplink = tcx_programs(&h, dataplane_tests::UPLINK);
    assert_eq!(after_uplink.len(), 1, "{after_uplink:?}");
    assert_ne!(after_uplink[0].1, before_uplink[0].1, "the uplink kept the old program");
    for (v, before) in veths.iter().zip(&before_veth) {
        let after = tcx_programs(&h, v);
        assert_eq!(after.len(), 1, "{v}: {after:?}");
        assert_ne!(after[0].1, before[0].1, "{v} kept the old program");
    }
    // One generation everywhere: every veth runs the same program.
    let ids: std::collections::HashSet<u64> = veths.iter().map(|v| tcx_programs(&h, v)[0].1).collect();
    assert_eq!(ids.len(), 1, "veths run programs of different loads: {ids:?}");
    let o = ext.run(&["socat", "-t", "3", "-T", "3", "-", "TCP:192.0.2.1:5202,connect-timeout=3"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "w");
    assert!(h.daemon_log().contains("pinned links now run this start's programs"), "{}", h.daemon_log_tail());
}

/// The sd_notify messages a daemon sends to a socket of the test.
struct Notify(std::os::unix::net::UnixDatagram);

impl Notify {
    fn bind(h: &Host) -> (Notify, String) {
        let path = h.dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).expect("timeout");
        (Notify(sock), path.to_str().expect("utf-8 path").to_string())
    }

    /// The next message containing `what` (within 30 s).
    fn next(&self, what: &str) -> String {
        let mut buf = [0u8; 1024];
        for _ in 0..20 {
            let n = self.0.recv(&mut buf).unwrap_or_else(|e| panic!("no sd_notify message with {what}: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(what) {
                return msg;
            }
        }
        panic!("no sd_notify message with {what}");
    }
}

/// Echo servers on port 7000 of `name`, published on host ports `first`…`first+9`.
fn echo_sandbox(h: &Host, name: &str, first: u16, serve: bool) {
    let spec = format!("{first}-{}:7000-7009", first + 9);
    let cmd: &[&str] =
        if serve { &["socat", "TCP-LISTEN:7000,fork,reuseaddr", "PIPE"] } else { &["sleep", "600"] };
    let mut args = vec!["run", "-d", "--name", name, "-p", &spec];
    args.extend_from_slice(cmd);
    h.dp_ok(&args);
    if serve {
        for _ in 0..100 {
            if String::from_utf8_lossy(&h.exec(name, &["ss", "-tln"]).stdout).contains(":7000 ") {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("{name} never listened");
    }
}

#[test]
fn a_restart_of_a_healthy_host_changes_nothing_and_keeps_established_connections() {
    let (mut h, ext) = Host::with_external_unstarted("rsc");
    let (notify, notify_path) = Notify::bind(&h);
    let env = [("NOTIFY_SOCKET", notify_path.as_str())];
    h.start_with_env(&env);
    notify.next("READY=1");
    // Everything reconcile restores: networks of each kind, published
    // ports of both families, VIPs, a firewall rule, resolvers.
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.73.0.0/24", "--subnet", "fd00:73::/64", "dual"]);
    h.dp_ok(&["network", "create", "--subnet", "10.74.0.0/24", "-o", "lb=vip", "lbnet"]);
    for b in ["api1", "api2"] {
        h.dp_ok(&["run", "-d", "--name", b, "--network", "lbnet", "--network-alias", "api", "sleep", "600"]);
    }
    h.dp_ok(&["run", "-d", "--name", "d1", "--network", "dual", "-p", "8080:80", "sleep", "600"]);
    h.dp_ok(&["firewall", "deny", "--from", "198.51.100.0/24", "--port", "8080"]);
    for i in 0..40u16 {
        echo_sandbox(&h, &format!("s{i}"), 30000 + i * 10, i < 4);
    }
    let vip = text_of(&h.exec("api1", &["dig", "+short", "+time=2", "+tries=1", "api"]));
    assert!(vip.starts_with("10.74.0."), "the alias resolves to its VIP: {vip:?}");
    let addrs: Vec<std::net::SocketAddr> =
        (0..4u16).map(|i| std::net::SocketAddr::from(([192, 0, 2, 1], 30000 + i * 10))).collect();
    let held =
        dataplane_tests::hold::Held::open(&ext.path(), &addrs).expect("connections through published ports");
    std::thread::sleep(std::time::Duration::from_millis(500));

    h.kill_daemon();
    std::thread::sleep(std::time::Duration::from_millis(500));
    h.start_with_env(&env);
    let status = notify.next("reconciled");
    notify.next("READY=1");
    assert!(status.contains("netlink_writes=0 bpf_writes=0"), "a healthy host was written to: {status}");
    assert_eq!(h.metric("dataplane_reconcile_writes", "kind=\"bpf\""), Some(0.0));
    assert_eq!(h.metric("dataplane_reconcile_writes", "kind=\"netlink\""), Some(0.0));
    // Every start loads its programs: the pinned links move to them.
    assert!(h.metric("dataplane_reconcile_writes", "kind=\"program_links\"").is_some_and(|n| n > 40.0));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let report = held.finish();
    assert_eq!((report.flows, report.broken), (4, 0), "established connections broke: {report:?}");
    assert!(report.exchanges > 100, "{report:?}");
    // What was there still works: the resolver (on its old port), the VIP, a port.
    assert_eq!(text_of(&h.exec("api2", &["dig", "+short", "+time=2", "+tries=1", "api"])), vip);
    assert!(h.ping("api1", &vip), "the VIP does not answer after the restart");
    let o = ext.run(&["socat", "-t", "2", "-T", "2", "-", "TCP:192.0.2.1:30010,connect-timeout=3"]);
    assert!(o.status.success(), "a published port after the restart: {}", dataplane_tests::text(&o));

    // The pair: on a host that is not right, the pass does write (and repairs).
    let veth = h.inspect("s5")["NetworkSettings"]["Networks"]["bridge"]["HostInterfaceName"]
        .as_str()
        .expect("host veth")
        .to_string();
    h.kill_daemon();
    assert!(h.run(&["ip", "link", "del", &veth]).status.success());
    h.start_with_env(&env);
    let status = notify.next("reconciled");
    assert!(!status.contains("netlink_writes=0 "), "a repair was not counted: {status}");
    assert!(!status.contains("bpf_writes=0 "), "a repair was not counted: {status}");
    assert!(h.links().contains(&veth), "the lost veth was not made again");
    assert!(h.ping("s4", &h.ip_of("s5", "bridge")), "s5 not reachable after the repair");
}

/// Past 512 running sandboxes (tokio's blocking pool), a thread per
/// sandbox waiting for its process left none for anything else: `/metrics`
/// and `info` never answered (found by the restart benchmark). Exits are
/// awaited on pidfds now, with no thread each.
#[test]
fn six_hundred_running_sandboxes_leave_the_daemon_answering() {
    let (h, _ext) = Host::with_external("many");
    const N: usize = 600;
    for i in 0..N {
        h.dp_ok(&["run", "-d", "--name", &format!("m{i}"), "--network", "none", "sleep", "600"]);
    }
    let socket = h.socket.display().to_string();
    let o = h.run(&["curl", "-s", "--max-time", "20", "--unix-socket", &socket, "http://d/metrics"]);
    let body = dataplane_tests::text(&o);
    assert!(o.status.success(), "/metrics did not answer: {body}");
    assert!(body.contains(&format!("dataplane_sandboxes{{state=\"running\"}} {N}")), "{body}");
    assert_eq!(h.dp_ok(&["info", "-f", "{{.Sandboxes.Running}}"]).trim(), N.to_string());
    let pid = h.daemon_pid().expect("daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line");
    assert!(threads < 100, "{threads} daemon threads for {N} sandboxes");
    // The pair: the exits are still seen (awaited, not forgotten).
    h.dp_ok(&["kill", "m7"]);
    assert_eq!(h.dp_ok(&["wait", "m7"]).trim(), "137");
    assert_eq!(h.dp_ok(&["ps", "-a", "--filter", "status=exited", "--format", "{{.Names}}"]).trim(), "m7");
}

fn text_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}
