//! Bridge networks: the default `bridge`, user networks, connectivity inside
//! a network, and isolation between networks enforced in BPF.

use dataplane_tests::{Host, text};

#[test]
fn default_networks_exist_with_docker_names() {
    let (h, _ext) = Host::with_external("def");
    let mut nets = h.network_names();
    nets.sort();
    assert_eq!(nets, ["bridge", "host", "none"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "bridge"])).expect("inspect json");
    let cfg = &inspect[0]["IPAM"]["Config"][0];
    assert_eq!(cfg["Subnet"], "172.17.0.0/16");
    assert_eq!(cfg["Gateway"], "172.17.0.1");
    assert_eq!(inspect[0]["Driver"], "bridge");
    let addr = String::from_utf8_lossy(&h.run(&["ip", "-br", "addr", "show", "dp0"]).stdout).into_owned();
    assert!(addr.contains("172.17.0.1/16"), "dp0 should carry the gateway: {addr}");
}

#[test]
fn sandboxes_on_one_network_reach_each_other_and_the_gateway() {
    let (h, _ext) = Host::with_external("one");
    // Default bridge.
    h.dp_ok(&["run", "-d", "--name", "a", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "b", "sleep", "300"]);
    let b_ip = h.ip_of("b", "bridge");
    assert!(b_ip.starts_with("172.17.0."), "{b_ip}");
    assert!(h.ping("a", &b_ip), "a cannot ping b on the default bridge");
    // User network with a fixed subnet; addresses handed out in order.
    h.dp_ok(&["network", "create", "--subnet", "10.77.0.0/24", "mynet"]);
    h.dp_ok(&["run", "-d", "--name", "c", "--network", "mynet", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "d", "--network", "mynet", "--ip", "10.77.0.50", "sleep", "300"]);
    assert_eq!(h.ip_of("c", "mynet"), "10.77.0.2");
    assert_eq!(h.ip_of("d", "mynet"), "10.77.0.50");
    assert!(h.ping("c", "10.77.0.50"));
    assert!(h.ping("c", "10.77.0.1"), "gateway unreachable");
    // The sandbox side is eth0 with Docker's MAC, a default route, and lo up.
    let addr =
        String::from_utf8_lossy(&h.exec("c", &["ip", "-o", "link", "show", "eth0"]).stdout).into_owned();
    assert!(addr.contains("02:42:0a:4d:00:02"), "{addr}");
    let routes = String::from_utf8_lossy(&h.exec("c", &["ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 10.77.0.1 dev eth0"), "{routes}");
    // Host side: veth<7 hex> enslaved to br-<12 hex>.
    let net: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "mynet"])).expect("json");
    let id = net[0]["Id"].as_str().expect("id");
    let bridge = format!("br-{}", &id[..12]);
    let ports =
        String::from_utf8_lossy(&h.run(&["ip", "-o", "link", "show", "master", &bridge]).stdout).into_owned();
    assert_eq!(ports.lines().filter(|l| l.contains(": veth")).count(), 2, "{ports}");
    assert_eq!(net[0]["Containers"].as_object().map(|m| m.len()), Some(2));
    // Both carry our alias, which is how reconcile tells ours from Docker's.
    let veth = ports
        .lines()
        .find_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string());
    for dev in [bridge.clone(), veth.expect("a veth")] {
        let d = String::from_utf8_lossy(&h.run(&["ip", "-d", "link", "show", &dev]).stdout).into_owned();
        assert!(d.contains("alias dataplane"), "{dev} lacks our alias: {d}");
    }
}

#[test]
fn networks_are_isolated_in_bpf_and_drops_are_counted() {
    let (h, _ext) = Host::with_external("iso");
    h.dp_ok(&["network", "create", "--subnet", "10.81.0.0/24", "red"]);
    h.dp_ok(&["network", "create", "--subnet", "10.82.0.0/24", "blue"]);
    h.dp_ok(&["run", "-d", "--name", "r1", "--network", "red", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "r2", "--network", "red", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "b1", "--network", "blue", "sleep", "300"]);
    // The host routes between its bridges (ip_forward is on): only BPF stands between them.
    let fwd =
        String::from_utf8_lossy(&h.run(&["sysctl", "-n", "net.ipv4.ip_forward"]).stdout).trim().to_string();
    assert_eq!(fwd, "1");
    assert!(h.ping("r1", "10.81.0.3"), "same network must work");
    let before = h.drops("POLICY_NETWORK_ISOLATION");
    assert!(!h.ping("r1", "10.82.0.2"), "red reached blue");
    assert!(!h.ping("b1", "10.81.0.2"), "blue reached red");
    let after = h.drops("POLICY_NETWORK_ISOLATION");
    assert!(after >= before + 2, "isolation drops not counted: {before} -> {after}");
    // Both directions of `stats` name the reason.
    let stats = h.dp_ok(&["stats"]);
    assert!(stats.contains("POLICY_NETWORK_ISOLATION"), "{stats}");
    // Another network's gateway is a host address: reachable, as in Docker.
    assert!(h.ping("r1", "10.82.0.1"));
    // And the host itself still reaches both.
    assert!(h.run(&["ping", "-c", "1", "-W", "2", "10.82.0.2"]).status.success());
    let _ = text;
}

/// `-o com.docker.network.bridge.enable_icc=false`: sandboxes of that
/// network cannot reach each other (dropped in BPF, counted), while the
/// gateway, published ports through the host and other networks' own
/// traffic are untouched.
#[test]
fn icc_false_keeps_sandboxes_of_a_network_apart() {
    let (h, _ext) = Host::with_external("icc");
    h.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.83.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    h.dp_ok(&["network", "create", "--subnet", "10.84.0.0/24", "chatty"]);
    h.dp_ok(&["run", "-d", "--name", "q1", "--network", "quiet", "sleep", "300"]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "q2",
        "--network",
        "quiet",
        "-p",
        "8080:80",
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        "SYSTEM:echo hello",
    ]);
    h.dp_ok(&["run", "-d", "--name", "c1", "--network", "chatty", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "c2", "--network", "chatty", "sleep", "300"]);
    let before = h.drops("POLICY_ICC");
    assert!(!h.ping("q1", "10.83.0.3"), "q1 reached q2 on an icc=false network");
    assert!(!h.ping("q2", "10.83.0.2"), "q2 reached q1 on an icc=false network");
    assert!(h.drops("POLICY_ICC") >= before + 2, "icc drops not counted");
    assert!(h.ping("q1", "10.83.0.1"), "the gateway must stay reachable");
    assert!(h.ping("c1", "10.84.0.3"), "a network with icc on is untouched");
    // A published port through the host still works between them.
    let mut said = String::new();
    for _ in 0..50 {
        let o = h.exec("q1", &["socat", "-t", "2", "-T", "2", "-", "TCP:192.0.2.1:8080,connect-timeout=2"]);
        said = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if said == "hello" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(said, "hello", "published port through the host from the same icc=false network");
    // Over IPv6 too: the interfaces' link-local addresses (fe80::) reached
    // each other on an icc=false network before; now dropped (counted),
    // while a network with icc on keeps them.
    let ping6 = |from: &str, to: &str, tries: u32| {
        let ll = link_local(&h, to);
        let mut ok = false;
        // The sender's own address may still be in duplicate address detection.
        for _ in 0..tries {
            ok = h.exec(from, &["ping", "-6", "-c", "1", "-W", "1", &format!("{ll}%eth0")]).status.success();
            if ok {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        ok
    };
    link_local(&h, "q1");
    link_local(&h, "c1");
    assert!(ping6("c1", "c2", 10), "link-local IPv6 on a network with icc on");
    let before = h.drops("POLICY_ICC");
    assert!(!ping6("q1", "q2", 2), "q1 reached q2 over IPv6 link-local on an icc=false network");
    assert!(h.drops("POLICY_ICC") > before, "the IPv6 icc drop is counted");
    let inspect: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "quiet"])).expect("json");
    assert_eq!(inspect[0]["Options"]["com.docker.network.bridge.enable_icc"], "false");
}

/// The link-local IPv6 address of `name`'s eth0, once duplicate address
/// detection is done with it (bounded wait).
fn link_local(h: &Host, name: &str) -> String {
    let mut shown = String::new();
    for _ in 0..50 {
        shown = text(&h.exec(name, &["ip", "-6", "addr", "show", "dev", "eth0", "scope", "link"]));
        if !shown.contains("tentative")
            && let Some(a) = shown.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
        {
            return a.split('/').next().unwrap_or(a).to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{name} has no usable link-local address: {shown}");
}

#[test]
fn automatic_subnets_avoid_taken_ones_and_host_routes() {
    let (h, _ext) = Host::with_external("auto");
    // The host already routes 172.18.0.0/16 elsewhere: the first free pool is 172.19.
    assert!(h.run(&["ip", "route", "add", "172.18.0.0/16", "via", "192.0.2.2"]).status.success());
    h.dp_ok(&["network", "create", "a1"]);
    h.dp_ok(&["network", "create", "a2"]);
    let subnet = |n: &str| {
        let v: serde_json::Value = serde_json::from_str(&h.dp_ok(&["network", "inspect", n])).expect("json");
        v[0]["IPAM"]["Config"][0]["Subnet"].as_str().expect("subnet").to_string()
    };
    assert_eq!(subnet("a1"), "172.19.0.0/16");
    assert_eq!(subnet("a2"), "172.20.0.0/16");
    h.dp_ok(&["network", "rm", "a1"]);
    h.dp_ok(&["network", "create", "a3"]);
    assert_eq!(subnet("a3"), "172.19.0.0/16", "a freed subnet is reused");
}

#[test]
fn bridge_name_option_names_the_device() {
    let (h, _ext) = Host::with_external("brn");
    h.dp_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=mybr0",
        "--subnet",
        "10.88.0.0/24",
        "named",
    ]);
    let addr = String::from_utf8_lossy(&h.run(&["ip", "-br", "addr", "show", "mybr0"]).stdout).into_owned();
    assert!(addr.contains("10.88.0.1/24"), "{addr}");
    h.dp_ok(&["run", "-d", "--name", "s", "--network", "named", "sleep", "300"]);
    let ports =
        String::from_utf8_lossy(&h.run(&["ip", "-o", "link", "show", "master", "mybr0"]).stdout).into_owned();
    assert!(ports.contains("veth"), "{ports}");
    let err = h.dp_err(&["network", "create", "-o", "com.docker.network.bridge.name=mybr0", "again"]);
    assert!(err.contains("used by another network"), "{err}");
    h.dp_ok(&["rm", "-f", "s"]);
    h.dp_ok(&["network", "rm", "named"]);
    assert!(!h.links().contains(&"mybr0".to_string()), "bridge not deleted with its network");
}

#[test]
fn the_bridge_keeps_its_mac_as_sandboxes_come_and_go() {
    // A bridge left alone takes the lowest MAC of its ports; sandboxes that
    // cached the old one for the gateway would lose it.
    let (h, _ext) = Host::with_external("brmac");
    h.dp_ok(&["network", "create", "--subnet", "10.85.0.0/24", "steady"]);
    let mac = || {
        let links = text(&h.run(&["ip", "-o", "link", "show", "type", "bridge"]));
        let line = links
            .lines()
            .find(|l| l.contains(": br-"))
            .unwrap_or_else(|| panic!("no br- bridge: {links}"))
            .to_string();
        line.split("link/ether ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or_default().to_string()
    };
    assert_eq!(mac(), "02:42:0a:55:00:01");
    h.dp_ok(&["run", "-d", "--name", "s0", "--network", "steady", "sleep", "300"]);
    assert!(h.ping("s0", "10.85.0.1"));
    for i in 1..6 {
        h.dp_ok(&["run", "-d", "--name", &format!("s{i}"), "--network", "steady", "sleep", "300"]);
        assert_eq!(mac(), "02:42:0a:55:00:01", "after adding s{i}");
    }
    h.dp_ok(&["rm", "-f", "s3", "s4", "s5"]);
    assert_eq!(mac(), "02:42:0a:55:00:01");
    // s0's cached neighbour entry for the gateway still works.
    assert!(h.ping("s0", "10.85.0.1"), "s0 lost the gateway");
}

#[test]
fn the_mtu_option_reaches_the_bridge_veths_and_sandboxes() {
    let (h, _ext) = dataplane_tests::Host::with_external("mtu");
    h.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.83.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "small",
    ]);
    h.dp_ok(&["run", "-d", "--name", "s", "--network", "small", "sleep", "600"]);
    h.dp_ok(&["run", "-d", "--name", "d", "sleep", "600"]);
    let mtu_of = |out: &str| {
        out.split(" mtu ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("").to_string()
    };
    let host =
        |dev: &str| mtu_of(&String::from_utf8_lossy(&h.run(&["ip", "-o", "link", "show", dev]).stdout));
    let inside = |name: &str| {
        mtu_of(&String::from_utf8_lossy(&h.exec(name, &["ip", "-o", "link", "show", "eth0"]).stdout))
    };
    let v = h.inspect("s");
    let net = &v["NetworkSettings"]["Networks"]["small"];
    let veth = net["HostInterfaceName"].as_str().expect("veth");
    let id: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "small"])).expect("json");
    let bridge = format!("br-{}", &id[0]["Id"].as_str().expect("id")[..12]);
    assert_eq!((host(&bridge), host(veth), inside("s")), ("1400".into(), "1400".into(), "1400".into()));
    // The default bridge keeps 1500, and a 1400-byte packet (DF) crosses the small network whole.
    assert_eq!(inside("d"), "1500");
    let gw = "10.83.0.1";
    assert!(h.exec("s", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1372", gw]).status.success());
    assert!(
        !h.exec("s", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1373", gw]).status.success(),
        "bigger than the MTU must not pass with DF"
    );
}
