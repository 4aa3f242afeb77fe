//! `dataplane firewall`: who may reach published ports from outside,
//! enforced in BPF on the uplink, tried from two client namespaces with
//! different addresses on the host's LAN.

use dataplane_tests::monitor::Monitor;
use dataplane_tests::{Host, Netns, sh_ok, unique, veth_pair};

/// A LAN (a bridge in its own namespace) with the host on it at
/// 192.0.2.1 and two clients at 192.0.2.10 and 192.0.2.20.
fn lan(daemon_args: &[&str]) -> (Host, Netns, Netns, Netns) {
    let lan = Netns::new("fwlan");
    sh_ok(&["ip", "-n", &lan.name, "link", "add", "lan0", "type", "bridge"]);
    sh_ok(&["ip", "-n", &lan.name, "link", "set", "lan0", "up"]);
    let mut h = Host::new("fw", &lan, Some("lan0"), "192.0.2.1/24");
    h.daemon_args = ["--uplink", "up0"].iter().chain(daemon_args).map(|a| a.to_string()).collect();
    h.start();
    let client = |addr: &str| {
        let ns = Netns::new("fwc");
        let (near, far) = (unique("c"), unique("l"));
        veth_pair(&near, &ns.name, &far, &lan.name);
        sh_ok(&["ip", "-n", &lan.name, "link", "set", &far, "master", "lan0", "up"]);
        sh_ok(&["ip", "-n", &ns.name, "addr", "add", addr, "dev", &near]);
        sh_ok(&["ip", "-n", &ns.name, "link", "set", &near, "up"]);
        ns
    };
    let (c1, c2) = (client("192.0.2.10/24"), client("192.0.2.20/24"));
    (h, lan, c1, c2)
}

/// What the server behind host port `port` says to `ns` (its peer), or "".
fn ask(ns: &Netns, port: u16) -> String {
    let target = format!("TCP:192.0.2.1:{port},connect-timeout=2");
    String::from_utf8_lossy(&ns.run(&["socat", "-T", "2", "-", &target]).stdout).trim().to_string()
}

fn serve(h: &Host, name: &str, net: &str, publish: &str) {
    let echo = "SYSTEM:echo peer=$SOCAT_PEERADDR";
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        net,
        "-p",
        publish,
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        echo,
    ]);
}

/// `firewall ls` as (ID, the rest of the line).
fn rules(h: &Host) -> Vec<String> {
    h.dp_ok(&["firewall", "ls"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn firewall_rules_decide_who_reaches_published_ports_and_survive_a_restart() {
    let (mut h, _lan, c1, c2) = lan(&[]);
    h.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "front"]);
    h.dp_ok(&["network", "create", "--subnet", "10.98.1.0/24", "back"]);
    serve(&h, "web", "front", "8080:80");
    serve(&h, "db", "back", "5432:80");
    // Before any rule: both clients reach both ports (their own address kept).
    for _ in 0..20 {
        if ask(&c1, 8080).starts_with("peer=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10");
    assert_eq!(ask(&c2, 8080), "peer=192.0.2.20");
    assert_eq!(ask(&c2, 5432), "peer=192.0.2.20");

    // DOCKER-USER's most copied pattern, on one port: everyone out, one host in.
    let deny = h.dp_ok(&["firewall", "deny", "--from", "0.0.0.0/0", "--port", "8080"]);
    let allow = h.dp_ok(&["firewall", "allow", "--from", "192.0.2.10", "--port", "8080/tcp"]);
    assert_eq!((deny.trim(), allow.trim()), ("1", "2"), "the new rules' IDs");
    let denied_before = h.drops("FIREWALL_DENY");
    let mon = Monitor::start(&h);
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10", "the allowed client");
    assert_eq!(ask(&c2, 8080), "", "the other client");
    assert!(h.drops("FIREWALL_DENY") > denied_before, "counted as its own drop reason");
    let ev = mon.expect(
        |v| v["Reason"] == "FIREWALL_DENY",
        || {
            ask(&c2, 8080);
        },
    );
    assert_eq!(ev["Source"].as_str().map(|s| s.starts_with("192.0.2.20")), Some(true), "{ev}");
    drop(mon);
    // Another port is not concerned.
    assert_eq!(ask(&c2, 5432), "peer=192.0.2.20");
    // A rule for one network's ports.
    h.dp_ok(&["firewall", "deny", "--from", "192.0.2.20/32", "--network", "back"]);
    assert_eq!(ask(&c2, 5432), "", "back's port, denied to c2");
    assert_eq!(ask(&c1, 5432), "peer=192.0.2.10", "back's port, open to c1");
    let listed = rules(&h);
    assert_eq!(
        listed,
        [
            "1 DENY from 0.0.0.0/0 to port 8080 (tcp and udp)",
            "2 ALLOW from 192.0.2.10/32 to port 8080/tcp",
            "3 DENY from 192.0.2.20/32 to every published port of network back",
        ],
        "{listed:?}"
    );

    // Bad input: a clear error naming the problem, nothing changed.
    for (args, says) in [
        (vec!["firewall", "deny", "--from", "10.0.0.1/33"], "not an address"),
        (vec!["firewall", "deny", "--from", "10.0.0.1/8"], "did you mean 10.0.0.0/8?"),
        (vec!["firewall", "deny", "--from", "0.0.0.0/0", "--port", "70000"], "not a port number"),
        (vec!["firewall", "deny", "--from", "0.0.0.0/0", "--port", "80/sctp"], "tcp or udp"),
        (vec!["firewall", "deny", "--from", "0.0.0.0/0", "--network", "nosuch"], "network nosuch not found"),
        (
            vec!["firewall", "allow", "--from", "0.0.0.0/0", "--port", "8080/udp"],
            "firewall rule 1 already matches",
        ),
        (vec!["firewall", "rm", "99"], "no firewall rule 99"),
    ] {
        let err = h.dp_err(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(rules(&h), listed, "a refusal changed the rules");
    // A network a rule names is not removed (a new one could take its number).
    h.dp_ok(&["network", "create", "--subnet", "10.98.2.0/24", "spare"]);
    h.dp_ok(&["firewall", "deny", "--from", "198.51.100.0/24", "--network", "spare"]);
    let err = h.dp_err(&["network", "rm", "spare"]);
    assert!(err.contains("network spare is named by firewall rule(s) 4"), "{err}");
    h.dp_ok(&["firewall", "rm", "4"]);
    h.dp_ok(&["network", "rm", "spare"]);
    assert_eq!(rules(&h), listed);

    // kill -9 and start: the rules hold throughout and after.
    h.kill_daemon();
    assert_eq!(ask(&c2, 8080), "", "while the daemon is away");
    h.start();
    assert_eq!(rules(&h), listed);
    assert_eq!(ask(&c2, 8080), "");
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10");

    // Removing the deny opens the port again.
    h.dp_ok(&["firewall", "rm", "1"]);
    assert_eq!(ask(&c2, 8080), "peer=192.0.2.20");
    h.dp_ok(&["firewall", "rm", "2", "3"]);
    assert!(rules(&h).is_empty());
    assert_eq!(ask(&c2, 5432), "peer=192.0.2.20");
}

/// Whether an XDP program is attached to the host's uplink in the driver.
fn xdp_on_uplink(h: &Host) -> bool {
    let link = String::from_utf8_lossy(&h.run(&["ip", "-d", "link", "show", "up0"]).stdout).into_owned();
    link.contains("xdp ") || link.contains("prog/xdp")
}

#[test]
fn with_xdp_the_uplinks_driver_drops_what_the_rules_deny() {
    let (mut h, _lan, c1, c2) = lan(&["--xdp"]);
    h.dp_ok(&["network", "create", "--subnet", "10.98.3.0/24", "front"]);
    serve(&h, "web", "front", "8080:80");
    assert!(xdp_on_uplink(&h), "no XDP program on up0: {}", h.daemon_log_tail());
    for _ in 0..20 {
        if ask(&c2, 8080).starts_with("peer=") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ask(&c2, 8080), "peer=192.0.2.20", "XDP passes what no rule denies");
    h.dp_ok(&["firewall", "deny", "--from", "192.0.2.20"]);
    let before = h.drops("FIREWALL_DENY");
    assert_eq!(ask(&c2, 8080), "", "denied");
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10", "the other client");
    assert!(h.drops("FIREWALL_DENY") > before, "counted");
    // kill -9 and start with --xdp again: the pinned XDP link takes the new
    // program (one program on the link, denies still dropped).
    h.kill_daemon();
    h.start();
    assert!(xdp_on_uplink(&h), "XDP gone after a restart: {}", h.daemon_log_tail());
    assert_eq!(ask(&c2, 8080), "", "denied after the restart");
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10");
    // Started without --xdp: the XDP program goes, tcx keeps judging.
    h.kill_daemon();
    h.daemon_args.retain(|a| a != "--xdp");
    h.start();
    assert!(!xdp_on_uplink(&h), "XDP still on up0 without --xdp");
    assert_eq!(ask(&c2, 8080), "", "denied by tcx");
    assert_eq!(ask(&c1, 8080), "peer=192.0.2.10");
}
