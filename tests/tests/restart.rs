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
    let ps_before = h.dp_ok(&["ps", "-a", "--format", "json"]);
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
    let ps_after = h.dp_ok(&["ps", "-a", "--format", "json"]);
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
    let notify_path = h.dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("bind notify socket");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    h.start_with_env(&[("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8 path"))]);
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no sd_notify message from the daemon");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
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
    let stats = h.dp_ok(&["stats"]);
    assert!(stats.contains("LB_NO_BACKEND"), "every reason is counted again: {stats}");
    assert!(h.daemon_log().contains("another shape"), "the daemon says why: {}", h.daemon_log_tail());
}
