//! Egress: sandboxes reach the outside with their source NATed (in BPF) to
//! the uplink address; replies come back; `--internal` and
//! `enable_ip_masquerade=false` behave as in Docker.

use std::process::Command;

use dataplane_tests::{Host, Netns, PeerEcho, text};

fn ask(h: &Host, from: &str, target: &str) -> String {
    // UDP may lose a datagram under load: retry like any UDP client (bounded).
    let tries = if target.starts_with("UDP") { 3 } else { 1 };
    let mut answer = String::new();
    for _ in 0..tries {
        let o = h.exec(from, &["sh", "-c", &format!("echo q | socat -t 3 -T 3 - {target}")]);
        answer = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !answer.is_empty() {
            break;
        }
    }
    answer
}

#[test]
fn sandboxes_reach_the_outside_through_snat() {
    let (h, ext) = Host::with_external("egr");
    let _tcp = PeerEcho::start(&ext, "tcp", 7000);
    let _udp = PeerEcho::start(&ext, "udp", 7001);
    h.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "app"]);
    h.dp_ok(&["run", "-d", "--name", "a", "--network", "app", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "b", "--network", "app", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "d", "sleep", "300"]);
    // TCP and UDP: the outside sees the uplink address, the source port kept when free.
    let tcp = ask(&h, "a", "TCP:192.0.2.2:7000,sourceport=40000");
    assert_eq!(tcp, "peer=192.0.2.1/40000");
    let udp = ask(&h, "d", "UDP:192.0.2.2:7001,sourceport=40001");
    assert_eq!(udp, "peer=192.0.2.1/40001");
    // Same source port from another sandbox to the same server: another port is allocated.
    let tcp_b = ask(&h, "b", "TCP:192.0.2.2:7000,sourceport=40000");
    assert!(tcp_b.starts_with("peer=192.0.2.1/") && tcp_b != tcp, "{tcp_b}");
    // ICMP echo.
    let o = h.exec("a", &["ping", "-c", "2", "-W", "2", "192.0.2.2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(h.drops("NAT_EGRESS") > 0 && h.drops("NAT_EGRESS_REPLY") > 0, "{}", h.dp_ok(&["stats"]));
    // A large transfer through SNAT arrives intact (checksums on veth with GSO).
    let sum = ext.run(&["sh", "-c", "head -c 20000000 /dev/urandom > /tmp/dp-egress-blob-$$ && sha256sum < /tmp/dp-egress-blob-$$ && echo $$"]);
    let out = String::from_utf8_lossy(&sum.stdout).into_owned();
    let mut lines = out.lines();
    let (digest, pid) =
        (lines.next().unwrap_or_default().to_string(), lines.next().unwrap_or_default().to_string());
    let blob = format!("/tmp/dp-egress-blob-{pid}");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ext.name,
            "socat",
            "TCP-LISTEN:7002,reuseaddr",
            &format!("OPEN:{blob},rdonly"),
        ])
        .spawn()
        .expect("file server");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let got = h.exec("a", &["sh", "-c", "socat -T 10 -u TCP:192.0.2.2:7002 - | sha256sum"]);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&blob);
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        digest.trim(),
        "transfer corrupted: {}",
        text(&got)
    );
}

#[test]
fn internal_networks_do_not_leave_and_masquerade_can_be_off() {
    let (h, ext) = Host::with_external("int");
    let _tcp = PeerEcho::start(&ext, "tcp", 7000);
    h.dp_ok(&["network", "create", "--internal", "--subnet", "10.95.0.0/24", "closed"]);
    h.dp_ok(&["run", "-d", "--name", "i1", "--network", "closed", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "i2", "--network", "closed", "sleep", "300"]);
    assert!(h.ping("i1", "10.95.0.3"), "internal sandboxes must reach each other");
    let routes = String::from_utf8_lossy(&h.exec("i1", &["ip", "route"]).stdout).into_owned();
    assert!(!routes.contains("default"), "internal networks get no default route: {routes}");
    // Even with a route added by hand, BPF stops the packet.
    assert!(h.exec("i1", &["ip", "route", "add", "default", "via", "10.95.0.1"]).status.success());
    let before = h.drops("POLICY_INTERNAL");
    assert_eq!(ask(&h, "i1", "TCP:192.0.2.2:7000,connect-timeout=2"), "");
    assert!(h.drops("POLICY_INTERNAL") > before);
    let _ = Netns::path;
    // No publishing from an internal network: a warning, and nothing listens outside.
    let o = h.dp(&[
        "run",
        "-d",
        "--name",
        "i3",
        "--network",
        "closed",
        "-p",
        "8080:80",
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        "SYSTEM:echo hi",
    ]);
    assert!(o.status.success() && text(&o).contains("not published"), "{}", text(&o));
    let o = ext.run(&["socat", "-T", "2", "-", "TCP:192.0.2.1:8080,connect-timeout=2"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("hi"), "published from an internal network");

    // Masquerade off: the outside sees the sandbox's own address (routed back by hand).
    h.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.96.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "plain",
    ]);
    h.dp_ok(&["run", "-d", "--name", "p", "--network", "plain", "sleep", "300"]);
    assert!(ext.run(&["ip", "route", "add", "10.96.0.0/24", "via", "192.0.2.1"]).status.success());
    assert_eq!(ask(&h, "p", "TCP:192.0.2.2:7000,sourceport=41000"), "peer=10.96.0.2/41000");
}

#[test]
fn icmp_errors_reach_the_sandbox_through_snat() {
    let (h, _ext) = Host::with_external("icmperr");
    h.dp_ok(&["run", "-d", "--name", "c", "sleep", "300"]);
    // Nothing listens on 192.0.2.2:9/udp: the outside answers "port
    // unreachable" to the uplink address; the sandbox's socket must see it.
    let py = r#"
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(3)
u.connect(("192.0.2.2", 9))
u.send(b"x")
try:
    u.recv(10)
    print("no error")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;
    let o = h.exec("c", &["python3", "-c", py]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "refused", "{}", text(&o));
}
