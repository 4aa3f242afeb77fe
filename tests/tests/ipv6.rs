//! Dual-stack networks (`--ipv6`): addresses, routes and inspect fields,
//! IPv6 between sandboxes, isolation and ICC judged over IPv6 in BPF,
//! restart, and bad input refused without leftovers.

use dataplane_tests::http::{CLIENT, start_backends};
use dataplane_tests::{Host, PeerEcho, text};

/// Whether `from` gets an ICMPv6 echo reply from `to`.
fn ping6(h: &Host, from: &str, to: &str) -> bool {
    h.exec(from, &["ping", "-6", "-c", "1", "-W", "2", to]).status.success()
}

fn network(h: &Host, name: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", name])).expect("network inspect json");
    v[0].clone()
}

/// The IPv6 IPAM config of a network, as `network inspect` lists it.
fn config6(net: &serde_json::Value) -> serde_json::Value {
    net["IPAM"]["Config"]
        .as_array()
        .expect("IPAM config")
        .iter()
        .find(|c| c["Subnet"].as_str().is_some_and(|s| s.contains(':')))
        .cloned()
        .unwrap_or_default()
}

#[test]
fn dual_stack_sandboxes_reach_each_other_and_the_gateway_over_ipv6() {
    let (mut h, _ext) = Host::with_external("v6");
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.60.0.0/24", "--subnet", "fd00:60::/64", "dual"]);
    let net = network(&h, "dual");
    assert_eq!(net["EnableIPv6"], true, "{net}");
    let cfg = &net["IPAM"]["Config"];
    assert_eq!(cfg[0]["Subnet"], "10.60.0.0/24", "{cfg}");
    assert_eq!(
        (&cfg[1]["Subnet"], &cfg[1]["Gateway"]),
        (&"fd00:60::/64".into(), &"fd00:60::1".into()),
        "{cfg}"
    );
    // The bridge holds both gateways.
    let bridge = format!("br-{}", &net["Id"].as_str().expect("id")[..12]);
    let addrs = text(&h.run(&["ip", "-br", "addr", "show", &bridge]));
    assert!(addrs.contains("10.60.0.1/24") && addrs.contains("fd00:60::1/64"), "{addrs}");

    h.dp_ok(&["run", "-d", "--name", "a", "--network", "dual", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "b", "--network", "dual", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "c", "--network", "dual", "--ip6", "fd00:60::99", "sleep", "300"]);
    let a = &h.inspect("a")["NetworkSettings"]["Networks"]["dual"];
    assert_eq!(
        (&a["GlobalIPv6Address"], &a["GlobalIPv6PrefixLen"], &a["IPv6Gateway"], &a["IPAddress"]),
        (&"fd00:60::2".into(), &64.into(), &"fd00:60::1".into(), &"10.60.0.2".into()),
        "{a}"
    );
    assert_eq!(h.ip6_of("b", "dual"), "fd00:60::3");
    assert_eq!(h.ip6_of("c", "dual"), "fd00:60::99");
    let containers = &network(&h, "dual")["Containers"];
    let listed: Vec<&str> = containers
        .as_object()
        .expect("containers")
        .values()
        .filter_map(|c| c["IPv6Address"].as_str())
        .collect();
    assert!(listed.contains(&"fd00:60::2/64"), "{containers}");
    // In the namespace: the address (no duplicate address detection: usable
    // at once), the on-link prefix and the default route via the gateway;
    // the MAC stays Docker's, made from the IPv4 address.
    let addr6 = text(&h.exec("a", &["ip", "-6", "addr", "show", "eth0"]));
    let global = addr6.lines().find(|l| l.contains("inet6 fd00:60::2/64")).unwrap_or_default();
    assert!(!global.is_empty() && !global.contains("tentative"), "{addr6}");
    let routes6 = text(&h.exec("a", &["ip", "-6", "route"]));
    assert!(routes6.contains("default via fd00:60::1 dev eth0"), "{routes6}");
    let link = text(&h.exec("a", &["ip", "-o", "link", "show", "eth0"]));
    assert!(link.contains("02:42:0a:3c:00:02"), "{link}");
    // Sandbox to sandbox and to the gateway.
    assert!(ping6(&h, "a", "fd00:60::3"), "a cannot ping6 b");
    assert!(ping6(&h, "b", "fd00:60::99"), "b cannot ping6 c");
    assert!(ping6(&h, "a", "fd00:60::1"), "a cannot ping6 the gateway");
    assert!(h.ping("a", "10.60.0.3"), "IPv4 on the same network");
    // TCP over IPv6 between sandboxes.
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "dual",
        "socat",
        "TCP6-LISTEN:7000,fork",
        "SYSTEM:echo v6-hi",
    ]);
    let srv6 = h.ip6_of("srv", "dual");
    let mut said = String::new();
    for _ in 0..30 {
        said = text(&h.exec("a", &["socat", "-T", "2", "-", &format!("TCP6:[{srv6}]:7000")]));
        if said.trim() == "v6-hi" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(said.trim(), "v6-hi", "TCP over IPv6 between sandboxes");

    // The embedded resolver: AAAA for names and aliases, PTR under ip6.arpa.
    let dig = |args: &[&str]| {
        let mut cmd = vec!["dig", "+short", "+time=2", "+tries=1"];
        cmd.extend_from_slice(args);
        let o = h.exec("a", &cmd);
        assert!(o.status.success(), "dig {args:?}: {}", text(&o));
        let mut lines: Vec<String> = text(&o).lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    assert_eq!(dig(&["AAAA", "b"]), ["fd00:60::3"]);
    assert_eq!(dig(&["A", "b"]), ["10.60.0.3"]);
    assert_eq!(dig(&["-x", "fd00:60::3"]), ["b.dual."]);
    for x in ["x1", "x2"] {
        h.dp_ok(&["run", "-d", "--name", x, "--network", "dual", "--network-alias", "svc", "sleep", "300"]);
    }
    let (x1, x2) = (h.ip6_of("x1", "dual"), h.ip6_of("x2", "dual"));
    assert_eq!(dig(&["AAAA", "svc"]), [x1, x2], "an alias answers every address");
    assert_eq!(dig(&["-x", "fd00:60::1"]), Vec::<String>::new(), "the gateway is nobody's name");
    // connect --ip6 to a second dual-stack network: eth1 with its address.
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:61::/64", "dual2"]);
    h.dp_ok(&["network", "connect", "--ip6", "fd00:61::42", "dual2", "b"]);
    assert_eq!(h.ip6_of("b", "dual2"), "fd00:61::42");
    let b_addr = text(&h.exec("b", &["ip", "-6", "addr", "show", "eth1"]));
    assert!(b_addr.contains("fd00:61::42/64"), "{b_addr}");
    // An automatic subnet is a /64 of the host's ULA /48 (fd00::/8 + 40 random bits).
    h.dp_ok(&["network", "create", "--ipv6", "auto1"]);
    h.dp_ok(&["network", "create", "--ipv6", "auto2"]);
    let (s1, s2) = (config6(&network(&h, "auto1")), config6(&network(&h, "auto2")));
    let (s1, s2) = (s1["Subnet"].as_str().unwrap_or_default(), s2["Subnet"].as_str().unwrap_or_default());
    assert!(s1.starts_with("fd") && s1.ends_with("::/64"), "{s1}");
    let prefix48 = |s: &str| s.split(':').take(3).collect::<Vec<_>>().join(":");
    assert_eq!(prefix48(s1), prefix48(s2), "one /48 per host: {s1} {s2}");
    assert_ne!(s1, s2);
    // An IPv4-only network's sandboxes get no IPv6 address of ours.
    h.dp_ok(&["network", "create", "--subnet", "10.62.0.0/24", "only4"]);
    h.dp_ok(&["run", "-d", "--name", "d4", "--network", "only4", "sleep", "300"]);
    assert_eq!(h.ip6_of("d4", "only4"), "");
    assert_eq!(network(&h, "only4")["EnableIPv6"], false);

    // A restart keeps it all: addresses, routes, reachability, and the ULA prefix.
    h.kill_daemon();
    h.start();
    assert_eq!(h.ip6_of("a", "dual"), "fd00:60::2");
    assert!(ping6(&h, "a", "fd00:60::3"), "after a restart");
    assert!(ping6(&h, "a", "fd00:60::1"), "the gateway after a restart");
    h.dp_ok(&["network", "create", "--ipv6", "auto3"]);
    let s3 = config6(&network(&h, "auto3"));
    let s3 = s3["Subnet"].as_str().unwrap_or_default();
    assert_eq!(prefix48(s3), prefix48(s1), "the host's ULA prefix is kept across restarts");
    // Removal takes the IPv6 gateway with the bridge, and frees the address.
    h.dp_ok(&["rm", "-f", "c"]);
    h.dp_ok(&["run", "-d", "--name", "c2", "--network", "dual", "--ip6", "fd00:60::99", "sleep", "300"]);
    assert_eq!(h.ip6_of("c2", "dual"), "fd00:60::99");
}

#[test]
fn isolation_and_icc_are_judged_over_ipv6_as_over_ipv4() {
    let (h, _ext) = Host::with_external("v6iso");
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.63.0.0/24", "--subnet", "fd00:63::/64", "red"]);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.64.0.0/24", "--subnet", "fd00:64::/64", "blue"]);
    for (name, net) in [("r1", "red"), ("r2", "red"), ("b1", "blue")] {
        h.dp_ok(&["run", "-d", "--name", name, "--network", net, "sleep", "300"]);
    }
    // The host forwards IPv6 between its bridges: only BPF stands between them.
    let fwd = text(&h.run(&["sysctl", "-n", "net.ipv6.conf.all.forwarding"]));
    assert_eq!(fwd.trim(), "1", "a dual-stack network turns IPv6 forwarding on");
    assert!(ping6(&h, "r1", "fd00:63::3"), "same network must work");
    let before = h.drops("POLICY_NETWORK_ISOLATION");
    assert!(!ping6(&h, "r1", "fd00:64::2"), "red reached blue over IPv6");
    assert!(!ping6(&h, "b1", "fd00:63::2"), "blue reached red over IPv6");
    assert!(h.drops("POLICY_NETWORK_ISOLATION") >= before + 2, "IPv6 isolation drops not counted");
    // Connected to both, a sandbox reaches both.
    h.dp_ok(&["network", "connect", "blue", "r2"]);
    assert!(ping6(&h, "b1", &h.ip6_of("r2", "blue")), "r2 on blue");

    // icc=false: the network's sandboxes are kept apart over IPv6 too, the gateway stays reachable.
    let icc = "com.docker.network.bridge.enable_icc=false";
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:65::/64", "-o", icc, "quiet"]);
    h.dp_ok(&["run", "-d", "--name", "q1", "--network", "quiet", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "q2", "--network", "quiet", "sleep", "300"]);
    assert!(ping6(&h, "q1", "fd00:65::1"), "the gateway of an icc=false network");
    let before = h.drops("POLICY_ICC");
    assert!(!ping6(&h, "q1", &h.ip6_of("q2", "quiet")), "q1 reached q2 over IPv6 with icc=false");
    assert!(h.drops("POLICY_ICC") > before, "the IPv6 icc drop is counted");
}

/// The docker-ipv6nat bug: with the host forwarding IPv6, a client that
/// routes a network's subnet via the host reached every port of every
/// sandbox. Here only `gateway_mode_ipv6=routed` networks are reachable
/// that way; the drop is counted.
#[test]
fn sandboxes_are_not_reachable_from_outside_over_ipv6_unless_the_network_is_routed() {
    let (h, ext) = Host::with_external("v6da");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:66::/64", "natted"]);
    let routed = "com.docker.network.bridge.gateway_mode_ipv6=routed";
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:67::/64", "-o", routed, "open"]);
    for net in ["fd00:66::/64", "fd00:67::/64"] {
        ext.run(&["ip", "route", "add", net, "via", "fd00:ffff::1"]);
    }
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "n1",
        "--network",
        "natted",
        "socat",
        "TCP6-LISTEN:7001,fork",
        "SYSTEM:echo n1",
    ]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "r1",
        "--network",
        "open",
        "socat",
        "TCP6-LISTEN:7001,fork",
        "SYSTEM:echo r1",
    ]);
    let ping = |dst: &str| ext.run(&["ping", "-6", "-c", "1", "-W", "2", dst]).status.success();
    // The first packets wait for neighbour discovery on fresh links.
    let ping_soon = |dst: &str| (0..5).any(|_| ping(dst));
    let fetch = |dst: &str| {
        let mut said = String::new();
        for _ in 0..20 {
            said =
                text(&ext.run(&["socat", "-T", "2", "-", &format!("TCP6:[{dst}]:7001,connect-timeout=2")]));
            if !said.trim().is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        said.trim().to_string()
    };
    assert!(ping_soon("fd00:66::1"), "the gateway is the host's own address");
    assert!(ping_soon("fd00:67::2"), "a routed network's sandbox is reachable");
    assert_eq!(fetch("fd00:67::2"), "r1", "a routed network's port");
    let before = h.drops("POLICY_DIRECT_ACCESS");
    assert!(!ping("fd00:66::2"), "a NATed network's sandbox answered from outside over IPv6");
    let said = text(&ext.run(&["socat", "-T", "2", "-", "TCP6:[fd00:66::2]:7001,connect-timeout=2"]));
    assert!(!said.lines().any(|l| l.trim() == "n1"), "an unpublished port was reachable over IPv6: {said}");
    assert!(h.drops("POLICY_DIRECT_ACCESS") >= before + 2, "the direct-access drops are counted");
}

/// `-p 8080:7000` publishes on 0.0.0.0 and [::] (Docker 27): an IPv6
/// client reaches the sandbox's IPv6 address through the host's, TCP and
/// UDP, and the sandbox sees the client's own address; `-p 0.0.0.0:…`
/// stays IPv4 only.
#[test]
fn published_ports_answer_over_ipv6_with_the_client_address_kept() {
    let (mut h, ext) = Host::with_external("v6pub");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.68.0.0/24", "--subnet", "fd00:68::/64", "pub6"]);
    let peer = "SYSTEM:echo $SOCAT_PEERADDR";
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "pub6",
        "-p",
        "8080:7000",
        "-p",
        "0.0.0.0:8082:7000",
        "-p",
        "[fd00:ffff::1]:8083:7000",
        "-p",
        "[::]:8084:7000",
        "socat",
        "TCP6-LISTEN:7000,fork,reuseaddr",
        peer,
    ]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "--network",
        "pub6",
        "-p",
        "8081:7001/udp",
        "socat",
        "UDP6-RECVFROM:7001,fork",
        peer,
    ]);
    let ask = |args: &[&str]| {
        let mut said = String::new();
        for _ in 0..30 {
            let mut cmd = vec!["socat", "-T", "2"];
            cmd.extend_from_slice(args);
            said = text(&ext.run(&cmd));
            if said.contains('[') {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        said
    };
    // socat writes the peer in full: an IPv4 client of the sandbox's
    // dual-stack socket as ::ffff:c000:202.
    const CLIENT6: &str = "[fd00:ffff:0000:0000:0000:0000:0000:0002]";
    const CLIENT4: &str = "ffff:c000:0202]";
    let tcp6 = ask(&["-", "TCP6:[fd00:ffff::1]:8080,connect-timeout=2"]);
    assert!(tcp6.contains(CLIENT6), "TCP over IPv6 with the client's address: {tcp6}");
    let mut udp6 = String::new();
    for _ in 0..30 {
        udp6 = text(&ext.run(&["sh", "-c", "echo q | socat -T 2 - UDP6:[fd00:ffff::1]:8081"]));
        if udp6.contains('[') {
            break;
        }
    }
    assert!(udp6.contains(CLIENT6), "UDP over IPv6 with the client's address: {udp6}");
    let tcp4 = ask(&["-", "TCP4:192.0.2.1:8080,connect-timeout=2"]);
    assert!(tcp4.contains(CLIENT4), "the same port over IPv4: {tcp4}");
    // Named IPv4 address: over IPv4 only.
    assert!(ask(&["-", "TCP4:192.0.2.1:8082,connect-timeout=2"]).contains(CLIENT4));
    let v6_only4 = text(&ext.run(&["socat", "-T", "2", "-", "TCP6:[fd00:ffff::1]:8082,connect-timeout=2"]));
    assert!(!v6_only4.contains(CLIENT6), "-p 0.0.0.0:… answered over IPv6: {v6_only4}");
    // Named IPv6 address, and `[::]`: over IPv6 only, as Docker.
    for port in ["8083", "8084"] {
        let v6 = ask(&["-", &format!("TCP6:[fd00:ffff::1]:{port},connect-timeout=2")]);
        assert!(v6.contains(CLIENT6), "-p [v6]:{port} over IPv6: {v6}");
        let v4 =
            text(&ext.run(&["socat", "-T", "2", "-", &format!("TCP4:192.0.2.1:{port},connect-timeout=2")]));
        assert!(!v4.contains(CLIENT4), "-p [v6]:{port} answered over IPv4: {v4}");
    }
    // An IPv6 address the host does not have: refused, nothing left.
    let err = h.dp_err(&["run", "-d", "--name", "elsewhere", "-p", "[fd00:eeee::1]:8085:80", "sleep", "60"]);
    assert!(
        err.contains("cannot publish [fd00:eeee::1]:8085/tcp: the address is not one of the host's"),
        "{err}"
    );
    assert!(!h.dp_ok(&["ps", "-a"]).contains("elsewhere"));
    // Hairpin over IPv6: a sandbox reaches the port through the host's
    // address with its own address kept; the publishing sandbox reaches
    // itself (its source becomes the network's gateway).
    let hairpin = |from: &str| {
        let mut said = String::new();
        for _ in 0..20 {
            said =
                text(&h.exec(from, &["socat", "-T", "2", "-", "TCP6:[fd00:ffff::1]:8080,connect-timeout=2"]));
            if said.contains('[') {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        said
    };
    let from_dns = hairpin("dns");
    assert!(
        from_dns.contains("[fd00:0068:0000:0000:0000:0000:0000:0003]"),
        "hairpin from another sandbox: {from_dns}"
    );
    let from_self = hairpin("web");
    assert!(
        from_self.contains("[fd00:0068:0000:0000:0000:0000:0000:0001]"),
        "hairpin to itself: {from_self}"
    );
    // A host process through the host's IPv6 address (the socket hooks:
    // no NAT on the path; the sandbox sees the gateway, the host's address
    // on its network), getpeername showing what it asked for.
    let mut from_host = String::new();
    for _ in 0..20 {
        from_host = text(&h.run(&[
            "python3",
            "-c",
            "import socket; s = socket.create_connection(('fd00:ffff::1', 8080), timeout=3); \
             print(s.getpeername()[:2], s.recv(200).decode().strip())",
        ]));
        if from_host.contains("fd00:0068") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        from_host.contains("('fd00:ffff::1', 8080)")
            && from_host.contains("[fd00:0068:0000:0000:0000:0000:0000:0001]"),
        "a host process through the host's IPv6 address: {from_host}"
    );
    // `port` lists both, as Docker 27 does.
    let ports = h.dp_ok(&["port", "web"]);
    assert!(ports.contains("7000/tcp -> 0.0.0.0:8080") && ports.contains("7000/tcp -> [::]:8080"), "{ports}");
    assert!(!ports.contains("[::]:8082"), "-p 0.0.0.0:8082 is IPv4-only: {ports}");
    assert!(
        ports.contains("7000/tcp -> [fd00:ffff::1]:8083") && ports.contains("7000/tcp -> [::]:8084"),
        "{ports}"
    );
    assert!(!ports.contains("0.0.0.0:8083") && !ports.contains("0.0.0.0:8084"), "IPv6-only: {ports}");
    // The flows were counted as published-port NAT, and `ct list` shows them.
    assert!(h.drops("NAT_PUBLISHED") > 0);
    let ct = h.dp_ok(&["ct", "list", "--format", "json"]);
    assert!(ct.contains("[fd00:ffff::2]") && ct.contains("dnat to [fd00:68::2]:7000"), "{ct}");
    // A restart keeps the IPv6 publication.
    h.kill_daemon();
    h.start();
    let again = ask(&["-", "TCP6:[fd00:ffff::1]:8080,connect-timeout=2"]);
    assert!(again.contains(CLIENT6), "after a restart: {again}");
    // Removed: gone over IPv6 too.
    h.dp_ok(&["rm", "-f", "web"]);
    let gone = text(&ext.run(&["socat", "-T", "2", "-", "TCP6:[fd00:ffff::1]:8080,connect-timeout=2"]));
    assert!(!gone.contains(CLIENT6), "a removed sandbox still answered: {gone}");
}

/// Egress over IPv6: from a NATed network the outside sees the host's
/// address (NAT66, the port kept when free); from a routed one, the
/// sandbox's own; ping6 goes out too.
#[test]
fn egress_over_ipv6_is_masqueraded_to_the_hosts_address_unless_routed() {
    let (h, ext) = Host::with_external("v6out");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    let _echo = PeerEcho::start(&ext, "tcp6", 9000);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:6a::/64", "natted6"]);
    let routed = "com.docker.network.bridge.gateway_mode_ipv6=routed";
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:6b::/64", "-o", routed, "routed6"]);
    ext.run(&["ip", "route", "add", "fd00:6b::/64", "via", "fd00:ffff::1"]);
    h.dp_ok(&["run", "-d", "--name", "n", "--network", "natted6", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "r", "--network", "routed6", "sleep", "300"]);
    let fetch = |who: &str| {
        let mut said = String::new();
        for _ in 0..30 {
            said =
                text(&h.exec(who, &["socat", "-T", "2", "-", "TCP6:[fd00:ffff::2]:9000,connect-timeout=2"]));
            if said.contains("peer=") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        said
    };
    let natted = fetch("n");
    assert!(
        natted.contains("peer=[fd00:ffff:0000:0000:0000:0000:0000:0001]"),
        "NAT66 to the host's address: {natted}"
    );
    assert!(h.drops("NAT_EGRESS") > 0, "counted as egress NAT");
    let ct = h.dp_ok(&["ct", "list", "--format", "json"]);
    assert!(ct.contains("snat to [fd00:ffff::1]"), "{ct}");
    let direct = fetch("r");
    assert!(
        direct.contains("peer=[fd00:006b:0000:0000:0000:0000:0000:0002]"),
        "routed: the sandbox's own address: {direct}"
    );
    assert!((0..5).any(|_| ping6(&h, "n", "fd00:ffff::2")), "ping6 through NAT66");
}

/// `daemon --ipv6 --fixed-cidr-v6 CIDR`: the default bridge is dual-stack;
/// started without `--ipv6` it is IPv4-only again; `--ipv6` alone takes a
/// /64 of the host's ULA prefix.
#[test]
fn the_default_bridge_gets_ipv6_from_the_daemons_flags() {
    let (mut h, _ext) = Host::with_external_args("v6def", &["--ipv6", "--fixed-cidr-v6", "fd00:dd::/64"]);
    let bridge = network(&h, "bridge");
    assert_eq!(bridge["EnableIPv6"], true, "{bridge}");
    assert_eq!(config6(&bridge)["Subnet"], "fd00:dd::/64");
    h.dp_ok(&["run", "-d", "--name", "d", "sleep", "300"]);
    assert_eq!(h.ip6_of("d", "bridge"), "fd00:dd::2");
    assert!(ping6(&h, "d", "fd00:dd::1"), "the default bridge's IPv6 gateway");
    let dp0 = text(&h.run(&["ip", "-6", "addr", "show", "dp0"]));
    assert!(dp0.contains("fd00:dd::1/64"), "{dp0}");
    // Without --ipv6 (and no sandbox on it), IPv4 only again, gateway gone.
    h.dp_ok(&["rm", "-f", "d"]);
    h.kill_daemon();
    h.daemon_args.clear();
    h.start();
    assert_eq!(network(&h, "bridge")["EnableIPv6"], false);
    let dp0 = text(&h.run(&["ip", "-6", "addr", "show", "dp0"]));
    assert!(!dp0.contains("fd00:dd::1"), "{dp0}");
    h.dp_ok(&["run", "-d", "--name", "e", "sleep", "300"]);
    assert_eq!(h.ip6_of("e", "bridge"), "");
    h.dp_ok(&["rm", "-f", "e"]);
    // --ipv6 alone: a ULA /64.
    h.kill_daemon();
    h.daemon_args = vec!["--ipv6".into()];
    h.start();
    let auto = config6(&network(&h, "bridge"));
    assert!(auto["Subnet"].as_str().is_some_and(|s| s.starts_with("fd") && s.ends_with("::/64")), "{auto}");
    // A bad --fixed-cidr-v6 stops the daemon with the reason.
    h.kill_daemon();
    let net = format!("--net={}", h.ns.path());
    let o = dataplane_tests::sh(&[
        "nsenter",
        &net,
        &dataplane_tests::bin(),
        "--socket",
        "/nonexistent/x.sock",
        "daemon",
        "--state-dir",
        &h.state_dir().display().to_string(),
        "--bpffs",
        &h.bpffs.display().to_string(),
        "--docker-plugin-dir",
        "",
        "--ipv6",
        "--fixed-cidr-v6",
        "fd00:de::1/64",
    ]);
    assert!(!o.status.success() && text(&o).contains("host bits"), "{}", text(&o));
    let o = dataplane_tests::sh(&[&dataplane_tests::bin(), "daemon", "--fixed-cidr-v6", "fd00:de::/64"]);
    assert!(!o.status.success() && text(&o).contains("--ipv6"), "{}", text(&o));
}

/// Path MTU discovery through NAT66: a router on the way (the external
/// namespace, whose link onward has an MTU of 1280) answers a sandbox's
/// large segment with "packet too big" to the host's address; the uplink
/// program hands it to the sandbox translated, whose kernel lowers its
/// path MTU, and the data gets through.
/// host (fd00:ffff::1) — router (ext, fd00:ffff::2) — a link whose
/// router side has an MTU of 1280 — far (fd00:eeee::2, MTU 1500).
fn behind_a_1280_link(tag: &str) -> (Host, dataplane_tests::Netns, dataplane_tests::Netns) {
    let (h, ext) = Host::with_external(tag);
    let far = dataplane_tests::Netns::new("far");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    ext.run(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
    let (near_end, far_end) = (dataplane_tests::unique("n"), dataplane_tests::unique("f"));
    dataplane_tests::veth_pair(&near_end, &ext.name, &far_end, &far.name);
    ext.run(&["ip", "link", "set", &near_end, "mtu", "1280", "up"]);
    ext.run(&["ip", "addr", "add", "fd00:eeee::1/64", "dev", &near_end, "nodad"]);
    far.run(&["ip", "link", "set", &far_end, "up"]);
    far.run(&["ip", "addr", "add", "fd00:eeee::2/64", "dev", &far_end, "nodad"]);
    far.run(&["ip", "-6", "route", "add", "default", "via", "fd00:eeee::1"]);
    h.run(&["ip", "-6", "route", "add", "fd00:eeee::/64", "via", "fd00:ffff::2"]);
    (h, ext, far)
}

#[test]
fn packet_too_big_reaches_the_sandbox_through_nat66() {
    let (h, _ext, far) = behind_a_1280_link("v6ptb");
    let _sink = dataplane_tests::PeerEcho::start(&far, "tcp6", 9001);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:6c::/64", "ptb"]);
    h.dp_ok(&["run", "-d", "--name", "big", "--network", "ptb", "sleep", "300"]);
    let before = h.exec("big", &["ip", "-6", "route", "get", "fd00:eeee::2"]);
    assert!(!text(&before).contains("mtu 1280"), "{}", text(&before));
    // 20 kB in full-size segments: the first ones are too big for the far link.
    let mut said = String::new();
    for _ in 0..10 {
        said = text(&h.exec(
            "big",
            &[
                "sh",
                "-c",
                "head -c 20000 /dev/zero | socat -T 5 - TCP6:[fd00:eeee::2]:9001,connect-timeout=2",
            ],
        ));
        if said.contains("peer=") {
            break;
        }
    }
    assert!(said.contains("peer=[fd00:ffff:0000:0000:0000:0000:0000:0001]"), "through NAT66: {said}");
    let after = text(&h.exec("big", &["ip", "-6", "route", "get", "fd00:eeee::2"]));
    assert!(after.contains("mtu 1280"), "the sandbox learnt the path MTU: {after}");
    assert!(h.drops("NAT_EGRESS_REPLY") > 0);
}

#[test]
fn bad_ipv6_input_is_refused_and_leaves_nothing_behind() {
    let (h, _ext) = Host::with_external("v6bad");
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "fd00:70::/64", "taken"]);
    h.dp_ok(&["network", "create", "--subnet", "10.71.0.0/24", "plain"]);
    h.dp_ok(&["run", "-d", "--name", "s", "--network", "taken", "sleep", "300"]);
    let links = h.links();
    let nets = h.network_names();
    for (args, says) in [
        (vec!["network", "create", "--ipv6", "--subnet", "fd00:70::/48", "x"], "taken"),
        (vec!["network", "create", "--subnet", "fd00:72::/64", "x"], "needs --ipv6"),
        (
            vec!["network", "create", "--ipv6", "--subnet", "fd00:73::/64", "--gateway", "fd00:74::1", "x"],
            "not inside subnet",
        ),
        (
            vec!["network", "create", "--ipv6", "--subnet", "fd00:75::/64", "--subnet", "fd00:76::/64", "x"],
            "once per address family",
        ),
        (vec!["network", "create", "--ipv6", "--subnet", "fe80::/64", "x"], "link-local"),
        (vec!["network", "create", "--ipv6", "--subnet", "fd00:77::/127", "x"], "/126"),
        (vec!["network", "create", "--ipv6", "--gateway", "fd00:78::1", "x"], "needs an IPv6 --subnet"),
        (vec!["network", "create", "--ipv6", "--subnet", "fd00:79::1/64", "x"], "host bits"),
        (
            vec![
                "network",
                "create",
                "--ipv6",
                "-d",
                "macvlan",
                "--subnet",
                "fd00:7a::/64",
                "-o",
                "parent=nosuchdev",
                "x",
            ],
            "nosuchdev",
        ),
    ] {
        let err = h.dp_err(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(h.network_names(), nets, "a refused network left a record");
    assert_eq!(h.links(), links, "a refused network left an interface");
    let sandboxes = h.sandbox_names();
    for (args, says) in [
        (
            vec!["run", "-d", "--name", "y", "--network", "plain", "--ip6", "fd00:71::5", "sleep", "300"],
            "created without --ipv6",
        ),
        (
            vec!["run", "-d", "--name", "y", "--network", "taken", "--ip6", "fd00:70::2", "sleep", "300"],
            "already in use",
        ),
        (
            vec!["run", "-d", "--name", "y", "--network", "taken", "--ip6", "fd00:71::5", "sleep", "300"],
            "not inside subnet",
        ),
        (
            vec!["run", "-d", "--name", "y", "--network", "taken", "--ip6", "fd00:70::1", "sleep", "300"],
            "gateway",
        ),
        (
            vec!["run", "-d", "--name", "y", "--network", "taken", "--ip6", "banana", "sleep", "300"],
            "not an IPv6 address",
        ),
        (
            vec!["run", "-d", "--name", "y", "--ip6", "fd00:70::5", "sleep", "300"],
            "user defined networks only",
        ),
    ] {
        let err = h.dp_err(&args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(h.sandbox_names(), sandboxes, "a refused sandbox left a record");
    assert_eq!(h.links(), links, "a refused sandbox left an interface");
    // The same requests, corrected, work.
    h.dp_ok(&["run", "-d", "--name", "y", "--network", "taken", "--ip6", "fd00:70::5", "sleep", "300"]);
    assert_eq!(h.ip6_of("y", "taken"), "fd00:70::5");
    let err = h.dp_err(&["network", "connect", "--ip6", "fd00:71::5", "plain", "s"]);
    assert!(err.contains("created without --ipv6"), "{err}");
}

/// macvlan takes an IPv6 subnet too: the LAN (the external namespace, on
/// the far side of the parent) and the sandbox reach each other over IPv6.
#[test]
fn a_dual_stack_macvlan_network_is_reachable_on_the_lan_over_ipv6() {
    let (h, ext) = Host::with_external("v6mv");
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    h.dp_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--ipv6",
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        "192.0.2.2",
        "--ip-range",
        "192.0.2.64/26",
        "--subnet",
        "fd00:ffff::/64",
        "--gateway",
        "fd00:ffff::2",
        "--ip-range",
        "fd00:ffff::100/120",
        "-o",
        &format!("parent={}", dataplane_tests::UPLINK),
        "lan6",
    ]);
    h.dp_ok(&["run", "-d", "--name", "m6", "--network", "lan6", "sleep", "300"]);
    assert_eq!(h.ip6_of("m6", "lan6"), "fd00:ffff::100");
    let routes = text(&h.exec("m6", &["ip", "-6", "route"]));
    assert!(routes.contains("default via fd00:ffff::2"), "{routes}");
    let lan_reaches =
        (0..5).any(|_| ext.run(&["ping", "-6", "-c", "1", "-W", "2", "fd00:ffff::100"]).status.success());
    assert!(lan_reaches, "the LAN cannot reach the macvlan sandbox over IPv6");
    assert!(ping6(&h, "m6", "fd00:ffff::2"), "the sandbox cannot reach its IPv6 gateway on the LAN");
}

/// An `lb=vip` network with IPv6: each alias gets an IPv6 VIP too (AAAA),
/// balanced in BPF over the same Maglev table as its IPv4 VIP.
#[test]
fn an_alias_of_a_dual_stack_lb_network_has_an_ipv6_vip_balanced_in_bpf() {
    let (mut h, _ext) = Host::with_external("v6lb");
    h.dp_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.99.0.0/24",
        "--subnet",
        "fd00:99::/64",
        "-o",
        "lb=vip",
        "lb6",
    ]);
    start_backends(&h, "lb6", "web", &["w1", "w2", "w3"]);
    let client = h.dir.join("client.py");
    std::fs::write(&client, CLIENT).expect("client script");
    let client = client.display().to_string();
    h.dp_ok(&["run", "-d", "--name", "client", "--network", "lb6", "sleep", "600"]);
    // AAAA answers the IPv6 VIP `lb list` shows; A the IPv4 one.
    let dig = |t: &str| text(&h.exec("client", &["dig", "+short", "+time=2", t, "web"])).trim().to_string();
    let rows: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["lb", "list", "--format", "json"])).expect("lb json");
    let vip6 = rows[0]["Vip6"].as_str().unwrap_or_default().to_string();
    assert!(vip6.starts_with("fd00:99::"), "an IPv6 VIP from the subnet: {rows}");
    assert_eq!(dig("AAAA"), vip6);
    assert_eq!(dig("A"), rows[0]["Vip"].as_str().unwrap_or_default());
    for n in ["w1", "w2", "w3"] {
        assert_ne!(h.ip6_of(n, "lb6"), vip6, "the VIP is an address of its own");
    }
    assert!(h.dp_ok(&["lb", "list"]).contains(&format!(", {vip6}")));
    // The host holds the VIP: ping6 answers.
    assert!((0..5).any(|_| ping6(&h, "client", &vip6)), "ping6 the VIP");
    // Host processes reach the IPv6 VIP too (a backend per socket).
    let host_client = format!(
        "import collections, http.client, json\nseen = collections.Counter()\nfor _ in range(60):\n    \
         c = http.client.HTTPConnection('{vip6}', 80, timeout=5)\n    c.request('GET', '/')\n    \
         seen[c.getresponse().read().decode()] += 1\nprint(json.dumps(seen))"
    );
    let mut from_host = String::new();
    for _ in 0..30 {
        from_host = text(&h.run(&["python3", "-c", &host_client]));
        if from_host.contains("w1") && from_host.contains("w2") && from_host.contains("w3") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        ["w1", "w2", "w3"].iter().all(|w| from_host.contains(w)),
        "60 host connections to [{vip6}]:80 over the three backends: {from_host}"
    );
    let count = |h: &Host, n: &str| -> std::collections::BTreeMap<String, u64> {
        let mut last = String::new();
        for _ in 0..30 {
            let o = h.exec("client", &["python3", &client, "web", n, "6"]);
            if o.status.success() {
                return serde_json::from_slice(&o.stdout).expect("client json");
            }
            last = text(&o);
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("client over IPv6: {last}");
    };
    // Every backend listening, then 1,500 connections over IPv6: spread.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while count(&h, "30").len() < 3 {
        assert!(std::time::Instant::now() < deadline, "not all three backends answered over the IPv6 VIP");
    }
    let got = count(&h, "1500");
    eprintln!("1,500 connections through [{vip6}]: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["w1", "w2", "w3"], "{got:?}");
    assert!(got.values().all(|c| (400..=600).contains(c)), "1,500 over three backends: {got:?}");
    assert!(h.drops("LB_FORWARDED") >= 1500, "counted as balanced");
    // A stopped backend leaves the table; after a restart it all holds.
    h.dp_ok(&["stop", "w3"]);
    let got = count(&h, "60");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["w1", "w2"], "{got:?}");
    h.kill_daemon();
    h.start();
    let got = count(&h, "60");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["w1", "w2"], "after a restart: {got:?}");
    // Gone with its network.
    for n in ["w1", "w2", "w3", "client"] {
        h.dp_ok(&["rm", "-f", n]);
    }
    h.dp_ok(&["network", "rm", "lb6"]);
    assert_eq!(h.dp_ok(&["lb", "list", "--format", "json"]).trim(), "[]");
}

/// NAT46 (beyond Docker, which needs its userland proxy for this): a port
/// published by a sandbox with only IPv4 answers over the host's IPv6
/// address, translated in BPF; the sandbox sees the client as an address
/// of 100.64.0.0/10 derived from the client's IPv6 address.
#[test]
fn a_port_of_an_ipv4_only_sandbox_answers_over_ipv6_through_nat46() {
    let (mut h, ext) = Host::with_external("v6n46");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    h.dp_ok(&["network", "create", "--subnet", "10.70.0.0/24", "v4only"]);
    let peer = "SYSTEM:echo $SOCAT_PEERADDR";
    let run = |name: &str, publish: &str, listen: &str, answer: &str| {
        h.dp_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "v4only",
            "-p",
            publish,
            "socat",
            listen,
            answer,
        ]);
    };
    run("web", "8080:7000", "TCP4-LISTEN:7000,fork,reuseaddr", peer);
    run("dns", "8081:7001/udp", "UDP4-RECVFROM:7001,fork", peer);
    run("bulk", "8082:7002", "TCP4-LISTEN:7002,fork,reuseaddr", "SYSTEM:head -c 3000000 /dev/zero");
    run("sink", "8083:7003", "TCP4-LISTEN:7003,fork,reuseaddr", "SYSTEM:wc -c");
    let client =
        dataplane_common::nat46_client(&"fd00:ffff::2".parse::<std::net::Ipv6Addr>().expect("ip").octets());
    let client = std::net::Ipv4Addr::from(client).to_string();
    assert!(client.starts_with("100."), "{client}");
    let ask = |cmd: &str, want: &str| {
        let mut said = String::new();
        for _ in 0..30 {
            said = text(&ext.run(&["sh", "-c", cmd]));
            if said.contains(want) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        said
    };
    // TCP and UDP over IPv6 to the host's address; the sandbox saw the
    // client's stand-in address.
    let tcp = ask("socat -T 2 - TCP6:[fd00:ffff::1]:8080,connect-timeout=2 </dev/null", &client);
    assert!(tcp.contains(&client), "TCP over NAT46: {tcp}");
    let udp = ask("echo q | socat -T 2 - UDP6:[fd00:ffff::1]:8081", &client);
    assert!(udp.contains(&client), "UDP over NAT46: {udp}");
    // And over IPv4, as ever (the client's own address).
    let tcp4 = ask("socat -T 2 - TCP4:192.0.2.1:8080,connect-timeout=2 </dev/null", "192.0.2.2");
    assert!(tcp4.contains("192.0.2.2"), "{tcp4}");
    // Bulk both ways: 3 MB out of the sandbox (IPv4 segments grown into
    // IPv6 ones), 3 MB into it, every byte counted.
    let down = ask("socat -T 5 -u TCP6:[fd00:ffff::1]:8082,connect-timeout=2 - | wc -c", "3000000");
    assert_eq!(down.trim(), "3000000", "from the sandbox over NAT46");
    let up = ask(
        "head -c 3000000 /dev/zero | socat -T 5 -t 5 - TCP6:[fd00:ffff::1]:8083,connect-timeout=2",
        "3000000",
    );
    assert_eq!(up.trim(), "3000000", "into the sandbox over NAT46");
    // A dual-stack sandbox through the host's IPv6 address (hairpin): NAT46 too.
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.71.0.0/24", "--subnet", "fd00:71::/64", "dual"]);
    h.dp_ok(&["run", "-d", "--name", "c6", "--network", "dual", "--ip6", "fd00:71::9", "sleep", "300"]);
    let c6 = std::net::Ipv4Addr::from(dataplane_common::nat46_client(
        &"fd00:71::9".parse::<std::net::Ipv6Addr>().expect("ip").octets(),
    ))
    .to_string();
    let mut hairpin = String::new();
    for _ in 0..30 {
        hairpin =
            text(&h.exec("c6", &["socat", "-T", "2", "-", "TCP6:[fd00:ffff::1]:8080,connect-timeout=2"]));
        if hairpin.contains(&c6) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(hairpin.contains(&c6), "a sandbox through the host's IPv6 address: {hairpin}");
    // Listed as Docker lists it, tracked, counted.
    assert!(h.dp_ok(&["port", "web"]).contains("7000/tcp -> [::]:8080"));
    let ct = h.dp_ok(&["ct", "list"]);
    assert!(ct.contains("[fd00:ffff::2]") && ct.contains(&format!(" {client}:")), "{ct}");
    assert!(!ct.contains("::ffff:"), "NAT46 ends shown as IPv4: {ct}");
    assert!(h.drops("NAT_PUBLISHED") > 0 && h.drops("NAT_REPLY") > 0);
    // Kept across a restart; gone with the sandbox.
    h.kill_daemon();
    h.start();
    let again = ask("socat -T 2 - TCP6:[fd00:ffff::1]:8080,connect-timeout=2 </dev/null", &client);
    assert!(again.contains(&client), "after a restart: {again}");
    h.dp_ok(&["rm", "-f", "web"]);
    let gone =
        text(&ext.run(&["sh", "-c", "socat -T 2 - TCP6:[fd00:ffff::1]:8080,connect-timeout=2 </dev/null"]));
    assert!(!gone.contains(&client), "a removed sandbox answered: {gone}");
    assert!(!h.dp_ok(&["ct", "list"]).contains("8080"), "its flows went with it");
}

/// CNI (Podman, containerd) on a dual-stack network: the attachment gets
/// an IPv6 address (chosen, or asked for with `ips`), the result reports it
/// with its `::/0` route, and the container reaches its gateway over IPv6.
#[test]
fn a_cni_attachment_to_a_dual_stack_network_gets_and_reports_ipv6() {
    use dataplane_tests::{Netns, cni};
    let (h, _ext) = Host::with_external("v6cni");
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.95.1.0/24", "--subnet", "fd00:95::/64", "cni6"]);
    let (a_ns, b_ns) = (Netns::new("c"), Netns::new("c"));
    let a = cni::Attachment::new("a6a6a6a6a6a6a6a6a6a6a6a6", &a_ns.path());
    let conf = cni::config(&h, "1.1.0", "cni6", serde_json::json!({}));
    let added = a.run(&h, "ADD", &conf);
    assert!(added.ok, "{added:?}");
    let r = &added.json;
    let ips: Vec<&str> =
        r["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, ["10.95.1.2/24", "fd00:95::2/64"], "{r}");
    let routes = r["routes"].to_string();
    assert!(routes.contains(r#""dst":"::/0","gw":"fd00:95::1""#), "{r}");
    let addr = text(&a_ns.run(&["ip", "-6", "addr", "show", "eth0"]));
    assert!(addr.contains("inet6 fd00:95::2/64"), "{addr}");
    let ping = a_ns.run(&["ping", "-6", "-c", "1", "-W", "2", "fd00:95::1"]);
    assert!(ping.status.success(), "ping6 the gateway from the CNI container: {}", text(&ping));
    // An address asked for with `ips`, one per family.
    let b = cni::Attachment::new("b6b6b6b6b6b6b6b6b6b6b6b6", &b_ns.path());
    let conf_b = cni::config(
        &h,
        "1.1.0",
        "cni6",
        serde_json::json!({"runtimeConfig": {"ips": ["10.95.1.50", "fd00:95::50"]}}),
    );
    let added_b = b.run(&h, "ADD", &conf_b);
    assert!(added_b.ok, "{added_b:?}");
    assert!(added_b.json["ips"].to_string().contains("fd00:95::50/64"), "{}", added_b.json);
    let ping = b_ns.run(&["ping", "-6", "-c", "1", "-W", "2", "fd00:95::2"]);
    assert!(ping.status.success(), "container to container over IPv6: {}", text(&ping));
    // DEL: gone, and the address free again.
    for (att, c) in [(&a, &conf), (&b, &conf_b)] {
        let del = att.run(&h, "DEL", &cni::with_prev(c, &serde_json::json!({})));
        assert!(del.ok, "{del:?}");
    }
    let net = network(&h, "cni6");
    assert!(net["Containers"].as_object().is_some_and(|c| c.is_empty()), "attachments gone: {net}");
    // The addresses are free again: a new attachment asking for one gets it.
    let again = b.run(&h, "ADD", &conf_b);
    assert!(again.ok && again.json["ips"].to_string().contains("fd00:95::50/64"), "{again:?}");
    let del = b.run(&h, "DEL", &cni::with_prev(&conf_b, &serde_json::json!({})));
    assert!(del.ok, "{del:?}");
}

#[test]
fn icmp_errors_of_nat46_flows_change_family_both_ways() {
    let (h, ext, far) = behind_a_1280_link("v6n46icmp");
    h.dp_ok(&["network", "create", "--subnet", "10.72.0.0/24", "v4only"]);
    let bulk = "SYSTEM:head -c 200000 /dev/zero";
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "bulk",
        "--network",
        "v4only",
        "-p",
        "8090:7004",
        "socat",
        "TCP4-LISTEN:7004,fork,reuseaddr",
        bulk,
    ]);
    h.dp_ok(&["run", "-d", "--name", "mute", "--network", "v4only", "-p", "8091:7005/udp", "sleep", "300"]);
    let client =
        dataplane_common::nat46_client(&"fd00:eeee::2".parse::<std::net::Ipv6Addr>().expect("ip").octets());
    let client = std::net::Ipv4Addr::from(client).to_string();
    let before = text(&h.exec("bulk", &["ip", "-4", "route", "get", &client]));
    assert!(!before.contains("mtu 1260"), "{before}");

    // The client's MSS fits its own link (1500) but not the router's far
    // side: the router's packet too big reaches the IPv4-only sandbox as
    // "fragmentation needed" (MTU 1260: 1280 less the 20 bytes IPv6 adds),
    // it sends smaller segments, and the transfer completes.
    let mut got = String::new();
    for _ in 0..5 {
        got = text(&far.run(&[
            "sh",
            "-c",
            "socat -T 5 -u TCP6:[fd00:ffff::1]:8090,connect-timeout=3 - | wc -c",
        ]));
        if got.trim() == "200000" {
            break;
        }
    }
    assert_eq!(got.trim(), "200000", "the whole transfer through NAT46 and the smaller link");
    let after = text(&h.exec("bulk", &["ip", "-4", "route", "get", &client]));
    assert!(after.contains("mtu 1260"), "the sandbox learnt the path MTU: {after}");

    // A UDP port nobody listens on: the sandbox's port unreachable reaches
    // the IPv6 client as ICMPv6 (its connected socket is refused), where
    // it would otherwise wait in vain.
    let probe = "import socket\n\
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
s.settimeout(3)\n\
s.connect(('fd00:ffff::1', PORT))\n\
s.send(b'x')\n\
try:\n    s.recv(100); print('answer')\n\
except ConnectionRefusedError:\n    print('refused')\n\
except socket.timeout:\n    print('timeout')\n";
    let said = text(&ext.run(&["python3", "-c", &probe.replace("PORT", "8091")]));
    assert_eq!(said.trim(), "refused", "{said}");
    // (A port that answers does: the probe itself works.)
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "echo",
        "--network",
        "v4only",
        "-p",
        "8092:7006/udp",
        "socat",
        "UDP4-RECVFROM:7006,fork",
        "SYSTEM:echo hi",
    ]);
    let mut said = String::new();
    for _ in 0..10 {
        said = text(&ext.run(&["python3", "-c", &probe.replace("PORT", "8092")]));
        if said.trim() == "answer" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(said.trim(), "answer", "{said}");
}
