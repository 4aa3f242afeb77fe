//! Published ports (`-p`): an external client reaches a sandbox through the
//! host's uplink address, the sandbox sees the client's real address, and
//! the mapping, conflicts and clean-up behave as Docker's do.

use dataplane_tests::{Host, Netns, sh, text};

/// A TCP server in sandbox `name` on `port` that answers each connection
/// with the peer address it sees.
fn tcp_peer_echo(h: &Host, name: &str, port: u16, extra: &[&str]) {
    let listen = format!("TCP-LISTEN:{port},fork,reuseaddr");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["socat", &listen, "SYSTEM:echo peer=$SOCAT_PEERADDR"]);
    h.dp_ok(&args);
    wait_listening(h, name, port, "tcp");
}

/// A UDP server in sandbox `name` on `port` answering each datagram with the
/// peer address it sees.
fn udp_peer_echo(h: &Host, name: &str, port: u16, extra: &[&str]) {
    let server = dataplane_tests::udp_echo_command(port, "udp-peer={addr}");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend(server.iter().map(String::as_str));
    h.dp_ok(&args);
    wait_listening(h, name, port, "udp");
}

fn wait_listening(h: &Host, name: &str, port: u16, proto: &str) {
    let flag = if proto == "udp" { "-uln" } else { "-tln" };
    for _ in 0..100 {
        let ss = String::from_utf8_lossy(&h.exec(name, &["ss", flag]).stdout).into_owned();
        if ss.contains(&format!(":{port} ")) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{name} never listened on {port}/{proto}");
}

/// Connects from `from` to `addr` over TCP and returns what the server said.
fn tcp_ask(from: &Netns, addr: &str) -> std::process::Output {
    from.run(&["socat", "-t", "3", "-T", "3", "-", &format!("TCP:{addr},connect-timeout=3")])
}

#[test]
fn external_client_reaches_published_tcp_and_udp_ports_with_its_own_address() {
    let (h, ext) = Host::with_external("pub");
    h.dp_ok(&["network", "create", "--subnet", "10.93.0.0/24", "web"]);
    tcp_peer_echo(&h, "srv", 80, &["--network", "web", "-p", "8080:80"]);
    let o = tcp_ask(&ext, "192.0.2.1:8080");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "peer=192.0.2.2",
        "the sandbox must see the client's address"
    );

    // UDP request/response through a published port.
    udp_peer_echo(&h, "dns", 53, &["--network", "web", "-p", "5353:53/udp"]);
    let o = ext.run(&["sh", "-c", "echo q | socat -t 3 -T 3 - UDP:192.0.2.1:5353"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "udp-peer=192.0.2.2", "{}", text(&o));

    // Docker's `port` output and inspect's Ports (`[::]` too: served over
    // IPv6 by NAT46, as Docker's proxy does).
    assert_eq!(h.dp_ok(&["port", "srv"]), "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n");
    assert_eq!(h.dp_ok(&["port", "srv", "80"]), "0.0.0.0:8080\n[::]:8080\n");
    assert_eq!(h.dp_ok(&["port", "dns"]), "53/udp -> 0.0.0.0:5353\n53/udp -> [::]:5353\n");
    let ports = h.inspect("srv")["NetworkSettings"]["Ports"].clone();
    assert_eq!(ports["80/tcp"][0]["HostPort"], "8080");
    let stats = h.dp_ok(&["stats"]);
    assert!(stats.contains("NAT_PUBLISHED") && stats.contains("NAT_REPLY"), "{stats}");
    assert!(h.drops("NAT_PUBLISHED") >= 2 && h.drops("NAT_REPLY") >= 2, "{stats}");

    // No iptables/nftables rule and no proxy process were involved.
    let nft = String::from_utf8_lossy(&h.run(&["nft", "list", "ruleset"]).stdout).into_owned();
    assert!(!nft.contains("8080"), "nftables has our port: {nft}");

    // rm unpublishes: the port answers no more.
    h.dp_ok(&["rm", "-f", "srv"]);
    assert!(!tcp_ask(&ext, "192.0.2.1:8080").status.success(), "port still answers after rm");
}

#[test]
fn free_ports_ranges_and_expose() {
    let (h, ext) = Host::with_external("rng");
    // -p CPORT picks a free host port; -P publishes every --expose port.
    tcp_peer_echo(&h, "a", 80, &["-p", "80", "--expose", "81", "-P"]);
    let ports = h.dp_ok(&["port", "a"]);
    let hp = ports
        .lines()
        .find(|l| l.starts_with("80/tcp"))
        .and_then(|l| l.rsplit(':').next())
        .expect("80/tcp mapped");
    let hp: u16 = hp.trim().parse().expect("host port");
    assert!(hp >= 1024, "{ports}");
    assert!(ports.contains("81/tcp -> 0.0.0.0:"), "{ports}");
    let o = tcp_ask(&ext, &format!("192.0.2.1:{hp}"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "peer=192.0.2.2", "{}", text(&o));
    // 1:1 ranges.
    h.dp_ok(&["run", "-d", "--name", "r", "-p", "8000-8002:90-92", "sleep", "300"]);
    assert_eq!(
        h.dp_ok(&["port", "r"]),
        "90/tcp -> 0.0.0.0:8000\n90/tcp -> [::]:8000\n91/tcp -> 0.0.0.0:8001\n91/tcp -> [::]:8001\n\
         92/tcp -> 0.0.0.0:8002\n92/tcp -> [::]:8002\n"
    );
    // One container port, any free port of a host range (8000 is taken).
    h.dp_ok(&["run", "-d", "--name", "any", "-p", "8000-8010:80", "sleep", "300"]);
    assert_eq!(h.dp_ok(&["port", "any"]), "80/tcp -> 0.0.0.0:8003\n80/tcp -> [::]:8003\n");
    // A port only exposed is not reachable from outside.
    tcp_peer_echo(&h, "exp", 7000, &["--expose", "7000"]);
    assert!(!tcp_ask(&ext, "192.0.2.1:7000").status.success(), "exposed-only port answered");
    assert_eq!(h.inspect("exp")["NetworkSettings"]["Ports"]["7000/tcp"], serde_json::Value::Null);
}

#[test]
fn conflicts_are_refused_and_leave_nothing() {
    let (h, _ext) = Host::with_external("cfl");
    h.dp_ok(&["run", "-d", "--name", "first", "-p", "8080:80", "sleep", "300"]);
    let before = (h.sandbox_names(), h.links(), h.netns_files());
    let err = h.dp_err(&["run", "-d", "--name", "second", "-p", "8080:80", "sleep", "300"]);
    assert!(err.contains("port is already allocated"), "{err}");
    // A port held by a process on the host is refused too.
    let mut holder = std::process::Command::new("nsenter")
        .arg(format!("--net={}", h.ns.path()))
        .args(["socat", "TCP-LISTEN:9090,reuseaddr", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("holder");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = h.dp_err(&["run", "-d", "--name", "third", "-p", "9090:80", "sleep", "300"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(err.contains("already in use"), "{err}");
    // Nothing half-made: no sandbox, veth or namespace for the refused ones.
    assert_eq!(before, (h.sandbox_names(), h.links(), h.netns_files()));
    // And a published port is held: a host process cannot take it.
    let o = h.run(&["socat", "-T", "1", "TCP-LISTEN:8080", "-"]);
    assert!(!o.status.success() && text(&o).contains("Address already in use"), "{}", text(&o));
    // Over IPv6 too (its one reservation socket is dual-stack).
    let o = h.run(&["socat", "-T", "1", "TCP6-LISTEN:8080,ipv6only=1", "-"]);
    assert!(!o.status.success() && text(&o).contains("Address already in use"), "{}", text(&o));
    // Unsupported forms say so.
    assert!(h.dp_err(&["run", "-d", "-p", "8081:80/sctp", "true"]).contains("SCTP"));
    let err = h.dp_err(&["run", "-d", "-p", "[2001:db8::1]:8082:80", "true"]);
    assert!(err.contains("[2001:db8::1]:8082/tcp: the address is not one of the host's"), "{err}");
    let _ = sh;
}

#[test]
fn published_ports_survive_a_daemon_restart() {
    let (mut h, ext) = Host::with_external("prs");
    tcp_peer_echo(&h, "s", 80, &["-p", "8080:80"]);
    h.kill_daemon();
    // Pinned maps and links keep serving while the daemon is down.
    let o = tcp_ask(&ext, "192.0.2.1:8080");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "peer=192.0.2.2", "{}", text(&o));
    h.start();
    let o = tcp_ask(&ext, "192.0.2.1:8080");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "peer=192.0.2.2", "{}", text(&o));
    assert_eq!(h.dp_ok(&["port", "s"]), "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n");
    // The reservation is taken again after the restart.
    let o = h.run(&["socat", "-T", "1", "TCP-LISTEN:8080", "-"]);
    assert!(text(&o).contains("Address already in use"), "{}", text(&o));
}

fn ct(h: &Host) -> Vec<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["ct", "list", "--format", "json"])).expect("ct json");
    v.as_array().cloned().unwrap_or_default()
}

#[test]
fn conntrack_lists_expires_and_is_flushed_with_the_sandbox() {
    let (h, ext) = Host::with_external_args("ct", &["--ct-udp-timeout", "2"]);
    udp_peer_echo(&h, "u", 53, &["-p", "5353:53/udp"]);
    tcp_peer_echo(&h, "t", 80, &["-p", "8080:80"]);
    let o = ext.run(&["sh", "-c", "echo q | socat -t 3 -T 3 - UDP:192.0.2.1:5353,sourceport=41000"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "udp-peer=192.0.2.2", "{}", text(&o));
    let rows = ct(&h);
    let udp: Vec<_> = rows.iter().filter(|r| r["Proto"] == "udp").collect();
    assert_eq!(udp.len(), 2, "one entry per direction: {rows:?}");
    assert!(
        udp.iter().any(|r| r["Source"] == "192.0.2.2:41000"
            && r["Nat"].as_str().is_some_and(|n| n.starts_with("dnat to 172.17.0.2:53"))),
        "{udp:?}"
    );
    let table = h.dp_ok(&["ct", "list"]);
    assert!(table.starts_with("PROTO") && table.contains("reply from 192.0.2.1:5353"), "{table}");
    // UDP flows expire after the (shortened) idle timeout; GC runs every 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ct(&h).iter().any(|r| r["Proto"] == "udp") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!ct(&h).iter().any(|r| r["Proto"] == "udp"), "udp flow never expired");
    let stats: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("json");
    assert!(stats["Conntrack"]["Expired"].as_u64().unwrap_or(0) >= 2, "{stats}");
    // A TCP flow; rm of its sandbox forgets it.
    let o = tcp_ask(&ext, "192.0.2.1:8080");
    assert!(o.status.success(), "{}", text(&o));
    assert!(ct(&h).iter().any(|r| r["Proto"] == "tcp"));
    h.dp_ok(&["rm", "-f", "t"]);
    assert!(!ct(&h).iter().any(|r| r["Proto"] == "tcp"), "rm left conntrack entries");
    // ct flush empties the table.
    let o = ext.run(&["sh", "-c", "echo q | socat -t 3 -T 3 - UDP:192.0.2.1:5353"]);
    assert!(o.status.success());
    assert!(!ct(&h).is_empty());
    assert!(h.dp_ok(&["ct", "flush"]).contains("flushed"));
    assert!(ct(&h).is_empty());
}

/// Clients reuse source ports (TIME_WAIT reuse): a connection opening on a
/// tuple still tracked as closing is a new flow, with a new flow's state
/// and timeout, not the old one's.
#[test]
fn a_reused_client_port_starts_a_fresh_flow() {
    let (h, ext) = Host::with_external("reuse");
    // Answers with the peer address, then waits for the client to hang up.
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "-p",
        "8080:80",
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        "SYSTEM:echo peer=$SOCAT_PEERADDR; cat >/dev/null",
    ]);
    wait_listening(&h, "srv", 80, "tcp");
    let client = "TCP:192.0.2.1:8080,sourceport=42000,reuseaddr,connect-timeout=3";
    let o = ext.run(&["sh", "-c", &format!("echo q | socat -t 3 -T 3 - {client}")]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "peer=192.0.2.2", "{}", text(&o));
    let mine = |rows: &[serde_json::Value]| -> Vec<String> {
        rows.iter()
            .filter(|r| {
                r["Proto"] == "tcp"
                    && (r["Source"] == "192.0.2.2:42000" || r["Destination"] == "192.0.2.2:42000")
            })
            .map(|r| r["State"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let closing = mine(&ct(&h));
    assert!(closing.len() == 2 && closing.iter().all(|s| s == "FIN" || s == "CLOSE"), "{closing:?}");
    // The client's TIME_WAIT may be reused after a second.
    ext.run(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ns, script) = (ext.name.clone(), format!("sleep 6 | socat -t 8 -T 10 - {client}"));
    let second = std::thread::spawn(move || sh(&["ip", "netns", "exec", &ns, "sh", "-c", &script]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut states = Vec::new();
    while std::time::Instant::now() < deadline {
        states = mine(&ct(&h));
        if states.len() == 2 && states.iter().all(|s| s == "ESTABLISHED") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = second.join().expect("second client");
    assert_eq!(states, ["ESTABLISHED", "ESTABLISHED"], "the reopened flow kept the old state");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "peer=192.0.2.2", "{}", text(&out));
}

#[test]
fn hairpin_reaches_other_sandboxes_and_itself() {
    let (h, _ext) = Host::with_external("hp");
    h.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "web"]);
    tcp_peer_echo(&h, "srv", 80, &["--network", "web", "-p", "8080:80"]);
    h.dp_ok(&["run", "-d", "--name", "cli", "sleep", "300"]);
    let ask = |from: &str, target: &str| {
        let o =
            h.exec(from, &["socat", "-t", "3", "-T", "3", "-", &format!("TCP:{target},connect-timeout=3")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    // Another sandbox (even on another network) through the host's address: its own address is kept.
    let cli_ip = h.ip_of("cli", "bridge");
    assert_eq!(ask("cli", "192.0.2.1:8080"), format!("peer={cli_ip}"));
    // Through a gateway address too (every host address answers for 0.0.0.0).
    assert_eq!(ask("cli", "172.17.0.1:8080"), format!("peer={cli_ip}"));
    // The sandbox reaching its own published port: it sees the gateway, as with Docker.
    assert_eq!(ask("srv", "192.0.2.1:8080"), "peer=10.97.0.1");
    // UDP over the hairpin path.
    udp_peer_echo(&h, "u", 53, &["-p", "5353:53/udp"]);
    let mut udp = String::new();
    for _ in 0..3 {
        let o = h.exec("cli", &["sh", "-c", "echo q | socat -t 3 -T 3 - UDP:192.0.2.1:5353"]);
        udp = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !udp.is_empty() {
            break;
        }
    }
    assert_eq!(udp, format!("udp-peer={cli_ip}"));
    // A large transfer over the hairpin path arrives intact.
    let blob = format!("/tmp/dp-hairpin-blob-{}", h.ns.name);
    let serve = format!(
        "head -c 20000000 /dev/urandom > {blob} && sha256sum < {blob} > {blob}.sum && socat TCP-LISTEN:9000,reuseaddr,fork OPEN:{blob},rdonly"
    );
    h.dp_ok(&["run", "-d", "--name", "blob", "-p", "9000:9000", "sh", "-c", &serve]);
    wait_listening(&h, "blob", 9000, "tcp");
    let want = std::fs::read_to_string(format!("{blob}.sum")).unwrap_or_default().trim().to_string();
    let got = h.exec("cli", &["sh", "-c", "socat -T 10 -u TCP:192.0.2.1:9000 - | sha256sum"]);
    let _ = std::fs::remove_file(&blob);
    let _ = std::fs::remove_file(format!("{blob}.sum"));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), want, "{}", text(&got));
}

#[test]
fn host_processes_reach_published_ports_without_a_proxy() {
    let (h, ext) = Host::with_external("loc");
    tcp_peer_echo(&h, "srv", 80, &["-p", "8080:80"]);
    udp_peer_echo(&h, "u", 53, &["-p", "5353:53/udp"]);
    let gw = "peer=172.17.0.1";
    for target in ["TCP:127.0.0.1:8080", "TCP:192.0.2.1:8080", "TCP:127.0.0.9:8080", "TCP6:[::1]:8080"] {
        let o = h.run(&["socat", "-t", "3", "-T", "3", "-", &format!("{target},connect-timeout=3")]);
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), gw, "{target}: {}", text(&o));
    }
    // The application sees the address it asked for, not the sandbox's.
    let py = r#"
import socket
s = socket.create_connection(("127.0.0.1", 8080), timeout=3)
print(s.getpeername())
s6 = socket.create_connection(("::1", 8080), timeout=3)
print(s6.getpeername()[:2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.sendto(b"q", ("127.0.0.1", 5353))
data, peer = u.recvfrom(100)
print(peer, data.decode().strip())
"#;
    let o = h.run(&["python3", "-c", py]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "('127.0.0.1', 8080)\n('::1', 8080)\n('127.0.0.1', 5353) udp-peer=172.17.0.1\n",
        "{}",
        text(&o)
    );
    // Published on [::1] only.
    tcp_peer_echo(&h, "six", 81, &["-p", "[::1]:8081:81"]);
    assert_eq!(h.dp_ok(&["port", "six"]), "81/tcp -> [::1]:8081\n");
    let o = h.run(&["socat", "-t", "3", "-T", "3", "-", "TCP6:[::1]:8081,connect-timeout=3"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), gw, "{}", text(&o));
    // Other network namespaces are untouched: their 127.0.0.1:8080 is their own.
    let o = ext.run(&["socat", "-T", "2", "-", "TCP:127.0.0.1:8080,connect-timeout=2"]);
    assert!(!o.status.success(), "the hook acted outside the daemon's namespace: {}", text(&o));
    // No proxy: nothing listens on the published port in the host namespace.
    let ss = String::from_utf8_lossy(&h.run(&["ss", "-tlnp"]).stdout).into_owned();
    assert!(!ss.contains(":8080"), "{ss}");
}

#[test]
fn published_ports_follow_disconnect_and_connect() {
    let (mut h, ext) = Host::with_external("pdc");
    h.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "n4"]);
    h.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "n5"]);
    tcp_peer_echo(&h, "rc1", 80, &["--network", "n4", "-p", "8501:80"]);
    h.dp_ok(&["run", "-d", "--name", "cli", "--network", "n5", "sleep", "600"]);
    let reached = |h: &Host| {
        let o = tcp_ask(&ext, "192.0.2.1:8501");
        let outside = String::from_utf8_lossy(&o.stdout).trim() == "peer=192.0.2.2";
        let o = h.exec("cli", &["socat", "-t", "3", "-T", "3", "-", "TCP:192.0.2.1:8501,connect-timeout=3"]);
        let hairpin = String::from_utf8_lossy(&o.stdout).starts_with("peer=");
        (outside, hairpin)
    };
    assert_eq!(reached(&h), (true, true), "published port before any change");
    let listed = "80/tcp -> 0.0.0.0:8501\n80/tcp -> [::]:8501\n";
    assert_eq!(h.dp_ok(&["port", "rc1"]), listed);

    // No network left: the port answers nowhere, and says so.
    h.dp_ok(&["network", "disconnect", "n4", "rc1"]);
    assert_eq!(reached(&h), (false, false), "a disconnected sandbox still reached");
    assert_eq!(h.dp_ok(&["port", "rc1"]), "", "port lists what the kernel does not do");
    // The host port stays the sandbox's.
    let o = h.run(&["socat", "-T", "1", "TCP-LISTEN:8501", "-"]);
    assert!(text(&o).contains("Address already in use"), "{}", text(&o));

    // Back on the network: the port follows the new endpoint.
    h.dp_ok(&["network", "connect", "n4", "rc1"]);
    assert_eq!(reached(&h), (true, true), "disconnect + connect blackholed the port");
    assert_eq!(h.dp_ok(&["port", "rc1"]), listed);

    // Onto a second network, off the first: the port moves to the endpoint left.
    h.dp_ok(&["network", "connect", "n5", "rc1"]);
    h.dp_ok(&["network", "disconnect", "n4", "rc1"]);
    assert_eq!(reached(&h), (true, true), "the port did not move to the remaining network");
    assert_eq!(h.dp_ok(&["port", "rc1"]), listed);
    h.kill_daemon();
    h.start();
    assert_eq!(reached(&h), (true, true), "the moved port broke across a restart");
    assert_eq!(h.dp_ok(&["port", "rc1"]), listed);
    let o = h.run(&["socat", "-T", "1", "TCP-LISTEN:8501", "-"]);
    assert!(text(&o).contains("Address already in use"), "reservation lost: {}", text(&o));
}

/// Conntrack rows of flows to host port `port`: the forward direction (to
/// it) and the reply direction (restored to it).
fn ct_rows_on(h: &Host, port: u16) -> Vec<serde_json::Value> {
    let suffix = format!(":{port}");
    ct(h)
        .into_iter()
        .filter(|r| {
            r["Destination"].as_str().is_some_and(|d| d.ends_with(&suffix))
                || r["Nat"].as_str().is_some_and(|n| n.starts_with("reply from") && n.ends_with(&suffix))
        })
        .collect()
}

#[test]
fn only_a_syn_opens_a_flow_and_unanswered_flows_expire_soon() {
    let (h, ext) = Host::with_external_args("ctf", &["--ct-unreplied-timeout", "2"]);
    tcp_peer_echo(&h, "srv", 80, &["-p", "8080:80"]);
    // A backend that never answers: its own firewall drops everything.
    h.dp_ok(&["run", "-d", "--name", "quiet", "-p", "8081:80", "sleep", "600"]);
    let q = h.exec(
        "quiet",
        &["nft", "add table inet f; add chain inet f in { type filter hook input priority 0; policy drop; }"],
    );
    assert!(q.status.success(), "{}", text(&q));

    let (no_flow, invalid) = (h.drops("CT_NO_FLOW"), h.drops("INVALID_PACKET"));
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    const SYN: u8 = 0x02;
    for port in [8080, 8081] {
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 20000, ACK, 50);
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 21000, FIN | ACK, 20);
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 22000, RST, 20);
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 23000, 0, 10);
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 24000, SYN | FIN, 10);
        dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", port, 25000, FIN, 10);
    }
    assert_eq!(
        ct_rows_on(&h, 8080).len() + ct_rows_on(&h, 8081).len(),
        0,
        "bare segments opened flows: {:?}",
        ct(&h)
    );
    assert_eq!(h.drops("CT_NO_FLOW") - no_flow, 2 * (50 + 20 + 20), "ACK, FIN|ACK and RST without a flow");
    assert_eq!(h.drops("INVALID_PACKET") - invalid, 2 * (10 + 10 + 10), "NULL, SYN|FIN and FIN alone");

    // A real connection still opens, and is answered: not UNREPLIED.
    let (ns, script) = (ext.name.clone(), "sleep 3 | socat -t 5 -T 8 - TCP:192.0.2.1:8080");
    let held =
        std::thread::spawn(move || dataplane_tests::sh(&["ip", "netns", "exec", &ns, "sh", "-c", script]));
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let rows = ct_rows_on(&h, 8080);
    assert_eq!(rows.len(), 2, "{rows:?} of {:?}", ct(&h));
    assert!(rows.iter().all(|r| r["State"] != "UNREPLIED"), "an answered flow: {rows:?}");
    let o = held.join().expect("client");
    assert!(String::from_utf8_lossy(&o.stdout).contains("peer=192.0.2.2"), "{}", text(&o));

    // A SYN the backend never answers is tracked as unreplied and goes soon
    // (--ct-unreplied-timeout 2 here; 30 s by default), not in 2 minutes.
    dataplane_tests::send_tcp_segments(&ext, "192.0.2.1", 8081, 26000, SYN, 1);
    let rows = ct_rows_on(&h, 8081);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r["State"] == "UNREPLIED"), "{rows:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !ct_rows_on(&h, 8081).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the unreplied flow did not expire: {:?}",
            ct_rows_on(&h, 8081)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

#[test]
fn unpublished_ports_are_not_reachable_through_a_route_unless_the_network_is_routed() {
    let (h, ext) = Host::with_external("rtd");
    h.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "natnet"]);
    h.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.98.0.0/24",
        "-o",
        "com.docker.network.bridge.gateway_mode_ipv4=routed",
        "routednet",
    ]);
    assert!(
        h.dp_err(&["network", "create", "-o", "com.docker.network.bridge.gateway_mode_ipv4=open", "x"])
            .contains("must be nat")
    );
    // A client that routes the sandbox subnets via the host.
    for net in ["10.97.0.0/24", "10.98.0.0/24"] {
        assert!(ext.run(&["ip", "route", "add", net, "via", "192.0.2.1"]).status.success());
    }
    udp_peer_echo(&h, "u1", 5300, &["--network", "natnet", "-p", "8053:5300/udp"]);
    tcp_peer_echo(&h, "t1", 80, &["--network", "natnet"]);
    tcp_peer_echo(&h, "r1", 80, &["--network", "routednet"]);
    let (u1, t1, r1) = (h.ip_of("u1", "natnet"), h.ip_of("t1", "natnet"), h.ip_of("r1", "routednet"));
    let udp = |addr: &str| {
        let o = ext.run(&["sh", "-c", &format!("echo q | socat -t 2 -T 2 - UDP:{addr}")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let ping = |ip: &str| ext.run(&["ping", "-c", "1", "-W", "1", ip]).status.success();

    let before = h.drops("POLICY_DIRECT_ACCESS");
    assert_eq!(udp(&format!("{u1}:5300")), "", "an unpublished UDP port answered through a route");
    assert!(!tcp_ask(&ext, &format!("{t1}:80")).status.success(), "an unpublished TCP port answered");
    assert!(!ping(&t1), "a sandbox answered ping from outside");
    assert!(h.drops("POLICY_DIRECT_ACCESS") >= before + 3, "direct access was not counted");
    // What is meant to be reachable still is: the published port, the host's gateway address…
    assert!(udp("192.0.2.1:8053").starts_with("udp-peer=192.0.2.2"), "the published port broke");
    assert!(ping("10.97.0.1"), "the gateway is the host's address");
    // …and everything on a routed network, with the client's own address.
    let o = tcp_ask(&ext, &format!("{r1}:80"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "peer=192.0.2.2", "{}", text(&o));
    assert!(ping(&r1), "a routed network's sandbox must answer ping");
}

#[test]
fn publishing_past_the_open_file_limit_is_refused_and_leaves_nothing() {
    let (mut h, _ext) = Host::with_external_unstarted("fdl");
    // A daemon with a small open-file limit (each published port holds a socket).
    let mut launcher = std::process::Command::new("prlimit");
    launcher.args(["--nofile=1200:1200", "nsenter", &format!("--net={}", h.ns.path())]);
    h.launch(launcher);
    h.dp_ok(&["run", "-d", "--name", "many", "-p", "20000-20500:20000-20500", "sleep", "600"]);
    let names = h.sandbox_names();
    let err = h.dp_err(&["run", "-d", "--name", "more", "-p", "21000-21500:21000-21500", "sleep", "600"]);
    assert!(err.contains("each holds an open file of the daemon, whose limit is 1200"), "{err}");
    assert_eq!(h.sandbox_names(), names, "the refused sandbox was kept");
    // Its ports were released, and the daemon still has files for its own work.
    let o =
        h.run(&["python3", "-c", "import socket; socket.socket().bind(('0.0.0.0', 21000)); print('bound')"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "bound", "{}", text(&o));
    h.dp_ok(&["run", "-d", "--name", "after", "-p", "8080:80", "sleep", "600"]);
    assert_eq!(h.dp_ok(&["port", "after"]), "80/tcp -> 0.0.0.0:8080\n80/tcp -> [::]:8080\n");
}
