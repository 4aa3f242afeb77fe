//! Overlay networks across hosts on a real etcd cluster (three members,
//! Debian's etcd-server 3.4) and real traffic: each host is a namespace on
//! an underlay LAN running its own daemon; VXLAN is done in BPF.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dataplane_tests::etcd::Etcd;
use dataplane_tests::{Host, text};

/// Waits (bounded) until `cond` holds; whether it did.
fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that every one of `hosts` has every network of `nets` within 5 s.
fn networks_reach(hosts: &[&Host], nets: &[&str]) {
    for h in hosts {
        assert!(
            eventually(Duration::from_secs(5), || {
                let names = h.network_names();
                nets.iter().all(|n| names.contains(&n.to_string()))
            }),
            "the overlay networks {nets:?} did not reach {}: {:?}",
            h.ns.name,
            h.network_names()
        );
    }
}

fn sleeper(h: &Host, name: &str, net: &str) {
    h.dp_ok(&["run", "-d", "--name", name, "--network", net, "sleep", "600"]);
}

/// A sandbox `sink` on `web` taking one TCP connection on `port` and
/// writing `digest` of what it got to its log.
fn start_sink(h: &Host, port: u16, digest: &str) {
    let cmd = format!("socat -u TCP-LISTEN:{port},reuseaddr - | {digest}");
    h.dp_ok(&["run", "-d", "--name", "sink", "--network", "web", "sh", "-c", &cmd]);
}

/// `dig +short NAME` from sandbox `from`.
fn dig(h: &Host, from: &str, name: &str) -> Vec<String> {
    let o = h.exec(from, &["dig", "+short", "+time=2", "+tries=1", name]);
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// Sends `bytes` random bytes from sandbox `from` to socat address `to`
/// (TCP); returns their md5sum line.
fn send_random(h: &Host, from: &str, bytes: usize, to: &str) -> String {
    let f = h.dir.join(format!("overlay-tx-{from}"));
    let f = f.display();
    let script = format!(
        "head -c {bytes} /dev/urandom > {f} && socat -u OPEN:{f} {to},connect-timeout=5 && md5sum < {f}"
    );
    let send = h.exec(from, &["sh", "-c", &script]);
    assert!(send.status.success(), "{}", text(&send));
    String::from_utf8_lossy(&send.stdout).trim().to_string()
}

#[test]
fn an_overlay_network_spans_hosts_with_vxlan_in_bpf() {
    let etcd = Etcd::lan(3);
    let h1 = etcd.host("ov1", 11);
    let h2 = etcd.host("ov2", 12);
    let h3 = etcd.host("ov3", 13);
    let t = Instant::now();
    h1.dp_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.77.0.0/24",
        "--ip-range",
        "10.77.0.128/25",
        "--gateway",
        "10.77.0.254",
        "web",
    ]);
    networks_reach(&[&h2, &h3], &["web"]);
    eprintln!("network on every host after {:?}", t.elapsed());
    let inspect: serde_json::Value =
        serde_json::from_str(&h3.dp_ok(&["network", "inspect", "web"])).expect("json");
    assert_eq!(inspect[0]["Scope"], "global", "{inspect}");
    assert_eq!(inspect[0]["Driver"], "overlay", "{inspect}");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24", "{inspect}");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Gateway"], "10.77.0.254", "{inspect}");

    // Every sandbox also answers to the alias `all`.
    for (h, n) in [(&h1, "a"), (&h2, "b"), (&h3, "c")] {
        h.dp_ok(&["run", "-d", "--name", n, "--network", "web", "--network-alias", "all", "sleep", "600"]);
    }
    let (a, b, c) = (h1.ip_of("a", "web"), h2.ip_of("b", "web"), h3.ip_of("c", "web"));
    let distinct: BTreeSet<_> = [&a, &b, &c].into_iter().collect();
    assert_eq!(distinct.len(), 3, "addresses {a} {b} {c}");
    // --ip-range and --gateway hold on every host.
    for ip in [&a, &b, &c] {
        assert!(
            ip.starts_with("10.77.0.")
                && ip.rsplit('.').next().and_then(|o| o.parse::<u8>().ok()) >= Some(128),
            "{ip}"
        );
    }
    let route = text(&h2.exec("b", &["ip", "route", "show", "default"]));
    assert!(route.contains("via 10.77.0.254"), "{route}");
    // The sandbox MTU leaves room for VXLAN's 50 bytes.
    let link = text(&h1.exec("a", &["ip", "-o", "link", "show", "eth0"]));
    assert!(link.contains(" mtu 1450 "), "{link}");

    // Across hosts by address, both ways, once the others' endpoints arrived.
    assert!(
        eventually(Duration::from_secs(5), || h1.ping("a", &b)),
        "a (host 1) cannot ping b (host 2) at {b}"
    );
    assert!(h2.ping("b", &a), "b cannot ping a");
    assert!(h3.ping("c", &a) && h1.ping("a", &c), "host 3 and host 1 do not reach each other");
    // The packets went through the BPF tunnel path, counted.
    assert!(h1.drops("OVERLAY_ENCAP") > 0 && h2.drops("OVERLAY_DECAP") > 0);
    // By name, through each host's embedded DNS.
    assert!(
        eventually(Duration::from_secs(5), || dig(&h1, "a", "b") == [b.clone()]),
        "{:?}",
        dig(&h1, "a", "b")
    );
    assert_eq!(dig(&h2, "b", "c"), [c]);
    assert!(h3.exec("c", &["ping", "-c", "1", "-W", "2", "a"]).status.success(), "c cannot ping a by name");
    // An alias held on three hosts: every host's resolver answers all three (round robin).
    let all: BTreeSet<String> = dig(&h2, "b", "all").into_iter().collect();
    assert_eq!(all, [a.clone(), b.clone(), h3.ip_of("c", "web")].into_iter().collect::<BTreeSet<_>>());

    // UDP across hosts, with the sender's own address seen.
    let mut udp = vec!["run", "-d", "--name", "uecho", "--network", "web"];
    let server = dataplane_tests::udp_echo_command(5353, "peer={addr}");
    udp.extend(server.iter().map(String::as_str));
    h3.dp_ok(&udp);
    let uecho = h3.ip_of("uecho", "web");
    assert!(
        eventually(Duration::from_secs(5), || {
            let o = h1.exec("a", &["sh", "-c", &format!("echo hi | socat -T 2 - UDP:{uecho}:5353")]);
            text(&o).contains(&format!("peer={a}"))
        }),
        "no UDP answer across hosts"
    );

    // TCP across hosts: 20 MB, checksummed on both ends.
    start_sink(&h2, 5001, "md5sum");
    let sink = h2.ip_of("sink", "web");
    let sent = send_random(&h1, "a", 20_000_000, &format!("TCP:{sink}:5001"));
    let received = || String::from_utf8_lossy(&h2.dp(&["logs", "sink"]).stdout).trim().to_string();
    assert!(
        eventually(Duration::from_secs(10), || received() == sent),
        "received {:?}, sent {sent}",
        received()
    );
}

#[test]
fn overlay_networks_are_isolated_unique_and_reach_out_through_their_own_host() {
    let etcd = Etcd::lan(3);
    let h1 = etcd.host("ovi1", 11);
    let h2 = etcd.host("ovi2", 12);
    let h3 = etcd.host("ovi3", 13);
    h1.dp_ok(&["network", "create", "-d", "overlay", "web"]);
    h2.dp_ok(&["network", "create", "-d", "overlay", "other"]);
    h3.dp_ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    h1.dp_ok(&["network", "create", "-d", "overlay", "--internal", "inner"]);
    h2.dp_ok(&["network", "create", "--subnet", "10.88.0.0/24", "local"]);
    networks_reach(&[&h1, &h2, &h3], &["web", "other", "quiet", "inner"]);
    // Automatic subnets are distinct /24s of 10.0.0.0/8, as Docker's swarm gives.
    let subnets: BTreeSet<String> = ["web", "other", "quiet", "inner"]
        .iter()
        .map(|n| {
            let v: serde_json::Value =
                serde_json::from_str(&h2.dp_ok(&["network", "inspect", n])).expect("json");
            v[0]["IPAM"]["Config"][0]["Subnet"].as_str().expect("subnet").to_string()
        })
        .collect();
    assert_eq!(subnets.len(), 4, "{subnets:?}");

    sleeper(&h1, "a", "web");
    sleeper(&h2, "b", "web");
    sleeper(&h2, "o", "other");
    sleeper(&h2, "x", "local");
    sleeper(&h1, "q1", "quiet");
    sleeper(&h2, "q2", "quiet");
    sleeper(&h1, "i1", "inner");
    sleeper(&h3, "i3", "inner");
    let ip = |h: &Host, n: &str, net: &str| h.ip_of(n, net);
    let (b, o, x) = (ip(&h2, "b", "web"), ip(&h2, "o", "other"), ip(&h2, "x", "local"));
    // Same network across hosts: reachable; another overlay network: dropped, counted.
    assert!(eventually(Duration::from_secs(5), || h1.ping("a", &b)), "a cannot reach b");
    let before = h1.drops("POLICY_NETWORK_ISOLATION");
    assert!(!h1.ping("a", &o), "a (web) reached o (other) on another host");
    assert!(h1.drops("POLICY_NETWORK_ISOLATION") > before, "the isolation drop was not counted");
    // …and shown by `monitor`, naming the sandbox of the other host.
    let mon = dataplane_tests::monitor::Monitor::start(&h1);
    let ev = mon.expect(
        |v| v["Reason"] == "POLICY_NETWORK_ISOLATION",
        || {
            h1.exec("a", &["ping", "-c", "1", "-W", "1", &o]);
        },
    );
    assert_eq!(
        (ev["SourceSandbox"].as_str(), ev["DestinationSandbox"].as_str()),
        (Some("a"), Some("o")),
        "{ev}"
    );
    drop(mon);
    // An overlay sandbox and a bridge sandbox on one host: isolated too.
    assert!(h2.ping("b", &ip(&h1, "a", "web")), "b cannot reach a");
    let before = h2.drops("POLICY_NETWORK_ISOLATION");
    assert!(!h2.ping("b", &x), "b (overlay) reached x (bridge) on its host");
    assert!(h2.drops("POLICY_NETWORK_ISOLATION") > before);
    // ICC off across hosts: dropped at the sender, counted; the names still resolve.
    let q2 = ip(&h2, "q2", "quiet");
    assert!(eventually(Duration::from_secs(5), || dig(&h1, "q1", "q2") == [q2.clone()]));
    let before = h1.drops("POLICY_ICC");
    assert!(!h1.ping("q1", &q2), "ICC is off, yet q1 reached q2");
    assert!(h1.drops("POLICY_ICC") > before);
    // --internal: across hosts yes, out of the cluster no.
    let i3 = ip(&h3, "i3", "inner");
    assert!(eventually(Duration::from_secs(5), || h1.ping("i1", &i3)), "i1 cannot reach i3");
    assert!(!h1.ping("i1", "10.251.0.1"), "an --internal overlay sandbox reached the LAN");

    // Egress leaves through the sandbox's own host, SNATed to its address.
    let _echo = dataplane_tests::PeerEcho::start(&etcd.lan, "tcp", 7070);
    let said = text(&h2.exec("b", &["socat", "-T", "3", "-", "TCP:10.251.0.1:7070,connect-timeout=3"]));
    assert!(said.contains("peer=10.251.0.12/"), "{said}");
    // -p publishes on the host the sandbox runs on.
    h3.dp_ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "--network",
        "web",
        "-p",
        "8080:80",
        "socat",
        "TCP-LISTEN:80,fork,reuseaddr",
        "SYSTEM:echo published",
    ]);
    let o = etcd.lan.run(&["socat", "-T", "3", "-", "TCP:10.251.0.13:8080,connect-timeout=3"]);
    assert!(text(&o).contains("published"), "{}", text(&o));

    // Concurrent runs on every host: every address distinct.
    std::thread::scope(|s| {
        for (h, tag) in [(&h1, "p"), (&h2, "r"), (&h3, "s")] {
            s.spawn(move || {
                for i in 0..10 {
                    let name = format!("{tag}{i}");
                    let o = h.dp(&["run", "-d", "--name", &name, "--network", "web", "sleep", "600"]);
                    if !o.status.success() {
                        let log: Vec<String> = h
                            .daemon_log()
                            .lines()
                            .filter(|l| l.contains("claim"))
                            .map(String::from)
                            .collect();
                        panic!("{name}: {}\n{}", text(&o), log.join("\n"));
                    }
                }
            });
        }
    });
    let mut seen = BTreeSet::new();
    for (h, tag) in [(&h1, "p"), (&h2, "r"), (&h3, "s")] {
        for i in 0..10 {
            assert!(seen.insert(h.ip_of(&format!("{tag}{i}"), "web")), "an address was handed out twice");
        }
    }
    assert_eq!(seen.len(), 30);

    // prune leaves the cluster's networks alone, even unused ones.
    h1.dp_ok(&["network", "create", "-d", "overlay", "spare"]);
    networks_reach(&[&h3], &["spare"]);
    h3.dp_ok(&["network", "prune", "-f"]);
    assert!(
        h1.network_names().contains(&"spare".to_string()),
        "prune on another host removed an overlay network"
    );
    h3.dp_ok(&["network", "rm", "spare"]);
    // rm is refused while any host has a sandbox on the network, naming the hosts.
    let e = h3.dp_err(&["network", "rm", "inner"]);
    assert!(e.contains("active endpoints"), "{e}");
    // --ip is honoured cluster-wide: taken elsewhere, refused here.
    let e = h3.dp_err(&["run", "-d", "--name", "dup", "--network", "web", "--ip", &b, "sleep", "600"]);
    assert!(e.contains("Address already in use"), "{e}");
    // Addresses come back on rm: b's address can be taken again (on another host).
    h2.dp_ok(&["rm", "-f", "b"]);
    h3.dp_ok(&["run", "-d", "--name", "b2", "--network", "web", "--ip", &b, "sleep", "600"]);
    for (h, n) in [(&h1, "i1"), (&h3, "i3")] {
        h.dp_ok(&["rm", "-f", n]);
    }
    h2.dp_ok(&["network", "rm", "inner"]);
    for h in [&h1, &h3] {
        assert!(
            eventually(Duration::from_secs(5), || !h.network_names().contains(&"inner".to_string())),
            "the removed overlay network stayed on {}",
            h.ns.name
        );
    }
    let keys = etcd.etcdctl(&["get", "--prefix", "--keys-only", "/dataplane/v1/endpoints/"]);
    assert!(keys.status.success(), "{}", text(&keys));
    let n = String::from_utf8_lossy(&keys.stdout).lines().filter(|l| !l.is_empty()).count();
    // web: a, b2, pub and the 30; other: o; quiet: q1, q2.
    assert_eq!(n, 1 + 1 + 1 + 30 + 1 + 2, "{}", text(&keys));
}

/// Bytes the sink sandbox `name` on `h` reported (`wc -c` of what it got).
fn sunk(h: &Host, name: &str) -> String {
    String::from_utf8_lossy(&h.dp(&["logs", name]).stdout).trim().to_string()
}

#[test]
fn overlay_traffic_survives_a_daemon_kill_a_host_death_and_etcd_outages() {
    let mut etcd = Etcd::lan(3);
    let mut h1 = etcd.host("ovf1", 11);
    let mut h2 = etcd.host("ovf2", 12);
    let mut h3 = etcd.host("ovf3", 13);
    h1.dp_ok(&["network", "create", "-d", "overlay", "web"]);
    networks_reach(&[&h2, &h3], &["web"]);
    sleeper(&h1, "a", "web");
    sleeper(&h3, "c", "web");
    start_sink(&h2, 5002, "wc -c");
    let sink = h2.ip_of("sink", "web");
    let c = h3.ip_of("c", "web");
    assert!(eventually(Duration::from_secs(5), || h1.ping("a", &sink)), "a cannot reach the sink");

    // kill -9 of host 1's daemon during a transfer from it: the pinned
    // datapath carries it on; the restarted daemon reconciles from etcd.
    h1.dp_ok(&[
        "run",
        "-d",
        "--name",
        "src",
        "--network",
        "web",
        "sh",
        "-c",
        &format!(
            "for i in $(seq 40); do head -c 1000000 /dev/zero; sleep 0.1; done | socat -u - TCP:{sink}:5002"
        ),
    ]);
    std::thread::sleep(Duration::from_millis(800));
    h1.kill_daemon();
    std::thread::sleep(Duration::from_secs(2));
    h1.start();
    assert!(
        eventually(Duration::from_secs(20), || sunk(&h2, "sink") == "40000000"),
        "the transfer did not complete: {:?} bytes",
        sunk(&h2, "sink")
    );
    // Its endpoints stayed in the cluster throughout (the lease was kept).
    assert!(h1.ping("a", &c) && h3.ping("c", &h1.ip_of("a", "web")));

    // One etcd member of three down: mutations and new reachability work.
    etcd.kill(0);
    sleeper(&h1, "d", "web");
    let d = h1.ip_of("d", "web");
    assert!(eventually(Duration::from_secs(5), || h3.ping("c", &d)), "c cannot reach d with one member down");
    etcd.start(0);

    // Host 3 dies: within the lease TTL + 2 s its sandboxes are gone from
    // the others' tunnels, names and peers.
    assert!(dig(&h1, "a", "c") == [c.clone()] && h1.ping("a", &c));
    let peers = |h: &Host| h.dp_ok(&["network", "inspect", "web"]);
    assert!(peers(&h1).contains("10.251.0.13"), "{}", peers(&h1));
    // (Its daemon killed, its namespace and every process in it gone.)
    h3.kill_daemon();
    let t = Instant::now();
    drop(h3);
    assert!(
        eventually(Duration::from_secs(7), || !peers(&h1).contains("10.251.0.13")
            && dig(&h1, "a", "c").is_empty()),
        "host 3 still known after {:?}: {}",
        t.elapsed(),
        peers(&h1)
    );
    eprintln!("a dead host left the others after {:?}", t.elapsed());
    assert!(!h1.ping("a", &c), "traffic still went to the dead host");

    // All of etcd down: the traffic between the hosts flows on, overlay
    // mutations fail naming the store, bridge networks are unaffected.
    etcd.wait_healthy(Duration::from_secs(20));
    for i in 0..3 {
        etcd.kill(i);
    }
    assert!(h1.ping("a", &sink) && h2.ping("sink", &d), "traffic stopped with the store");
    let e = h2.dp_err(&["run", "-d", "--name", "e", "--network", "web", "sleep", "600"]);
    assert!(e.contains("cluster store (etcd)") && e.contains("10.251.0.2:2379"), "{e}");
    assert!(!h2.sandbox_names().contains(&"e".to_string()), "a failed run left a sandbox");
    // A daemon (re)started while the store is away starts, without the cluster for now.
    h2.kill_daemon();
    h2.start();
    let e = h2.dp_err(&["run", "-d", "--name", "e", "--network", "web", "sleep", "600"]);
    assert!(e.contains("cluster store (etcd)") && e.contains("10.251.0.2:2379"), "{e}");
    h2.dp_ok(&["network", "create", "--subnet", "10.89.0.0/24", "plain"]);
    h2.dp_ok(&["run", "-d", "--name", "p1", "--network", "plain", "sleep", "600"]);
    h2.dp_ok(&["run", "-d", "--name", "p2", "--network", "plain", "sleep", "600"]);
    assert!(h2.ping("p1", &h2.ip_of("p2", "plain")), "a bridge network broke with the store");

    // etcd back: the watches resume without a restart.
    for i in 0..3 {
        etcd.start(i);
    }
    etcd.wait_healthy(Duration::from_secs(30));
    assert!(
        eventually(Duration::from_secs(15), || h2
            .dp(&["run", "-d", "--name", "e", "--network", "web", "sleep", "600"])
            .status
            .success()),
        "no overlay run after the store came back"
    );
    let e = h2.ip_of("e", "web");
    // Host 2 joined again, its earlier sandbox still reached from host 1.
    assert!(h1.ping("a", &sink), "host 2's sink is not reached after it joined again");
    assert!(
        eventually(Duration::from_secs(10), || h1.ping("a", &e)),
        "a new sandbox is not reached after the outage"
    );
    assert!(eventually(Duration::from_secs(5), || dig(&h1, "a", "e") == [e.clone()]));
}

#[test]
fn alias_vips_balance_over_backends_on_every_host() {
    use dataplane_tests::http::{CLIENT, HOLDER, SERVER, counts, try_counts, wait_for};
    let etcd = Etcd::lan(3);
    let h1 = etcd.host("ovl1", 11);
    let h2 = etcd.host("ovl2", 12);
    let h3 = etcd.host("ovl3", 13);
    h2.dp_ok(&["network", "create", "-d", "overlay", "-o", "lb=vip", "lbov"]);
    networks_reach(&[&h1, &h3], &["lbov"]);
    let server = h1.dir.join("server.py");
    std::fs::write(&server, SERVER).expect("server script");
    let server = server.display().to_string();
    for (h, n) in [(&h1, "w1"), (&h2, "w2"), (&h3, "w3")] {
        h.dp_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            "lbov",
            "--network-alias",
            "web",
            "python3",
            &server,
            n,
        ]);
    }
    sleeper(&h1, "client", "lbov");
    sleeper(&h3, "client", "lbov");
    // One VIP for the alias, the same on every host, answered by each host's DNS.
    let vip = |h: &Host| dig(h, "client", "web");
    assert!(
        eventually(Duration::from_secs(5), || vip(&h1).len() == 1 && vip(&h1) == vip(&h3)),
        "{:?} {:?}",
        vip(&h1),
        vip(&h3)
    );
    let script = h1.dir.join("client.py");
    std::fs::write(&script, CLIENT).expect("client script");
    assert!(
        eventually(Duration::from_secs(20), || try_counts(&h1, &script, "30").is_ok_and(|c| c.len() == 3)),
        "not all three hosts' backends answered: {:?}",
        try_counts(&h1, &script, "30")
    );
    // 600 connections from host 1: the three hosts' backends share them.
    let got = counts(&h1, &script, "600");
    eprintln!("600 connections from host 1 through the VIP: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["w1", "w2", "w3"], "{got:?}");
    assert!(got.values().all(|c| (140..=260).contains(c)), "{got:?}");
    assert_eq!(counts(&h3, &script, "60").len(), 3, "host 3's clients reach every backend too");
    let rows: serde_json::Value =
        serde_json::from_str(&h1.dp_ok(&["lb", "list", "--format", "json"])).expect("lb json");
    assert_eq!(rows[0]["Backends"].as_array().map(Vec::len), Some(3), "{rows}");

    // Held connections, then host 3's backend stops: new flows avoid it,
    // held flows to the others keep their backend.
    let holder = h1.dir.join("holder.py");
    std::fs::write(&holder, HOLDER).expect("holder script");
    let out = h1.dir.join("held").display().to_string();
    h1.dp_ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "lbov",
        "python3",
        &holder.display().to_string(),
        &out,
    ]);
    let first: Vec<String> =
        serde_json::from_str(&wait_for(std::path::Path::new(&format!("{out}.first")), "held connections"))
            .expect("first");
    assert!(first.iter().any(|n| n != "w3"), "{first:?}");
    h3.dp_ok(&["stop", "w3"]);
    assert!(
        eventually(Duration::from_secs(5), || counts(&h1, &script, "60").keys().cloned().collect::<Vec<_>>()
            == ["w1", "w2"]),
        "host 3's stopped backend still gets flows"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&h1.dp_ok(&["lb", "list", "--format", "json"])).expect("lb json");
    let w3 = rows[0]["Backends"].as_array().expect("backends").iter().find(|b| b["Sandbox"] == "w3").cloned();
    assert_eq!(w3.map(|b| b["Live"].clone()), Some(serde_json::Value::Bool(false)), "{rows}");
    // Its DNS name goes with it everywhere; the others' stay.
    assert!(dig(&h1, "client", "w3").is_empty() && dig(&h1, "client", "w2").len() == 1);
    std::fs::write(format!("{out}.go"), "").expect("go");
    let second: Vec<(String, String)> =
        serde_json::from_str(&wait_for(std::path::Path::new(&format!("{out}.second")), "second round"))
            .expect("second");
    for (before, now) in second.iter().filter(|(b, _)| b != "w3") {
        assert_eq!(before, now, "a held connection changed or broke: {second:?}");
    }
}

fn ping6(h: &Host, from: &str, to: &str) -> bool {
    h.exec(from, &["ping", "-6", "-c", "1", "-W", "2", to]).status.success()
}

#[test]
fn a_dual_stack_overlay_network_carries_ipv6_across_hosts() {
    let etcd = Etcd::lan(1);
    let h1 = etcd.host("ov61", 11);
    let h2 = etcd.host("ov62", 12);
    h1.dp_ok(&["network", "create", "-d", "overlay", "--ipv6", "--subnet", "10.78.0.0/24", "web6"]);
    h2.dp_ok(&["network", "create", "-d", "overlay", "--ipv6", "other6"]);
    networks_reach(&[&h1, &h2], &["web6", "other6"]);
    // One IPv6 subnet (a ULA /64 chosen by its creator) on every host.
    let subnet6 = |h: &Host, n: &str| {
        let v: serde_json::Value = serde_json::from_str(&h.dp_ok(&["network", "inspect", n])).expect("json");
        assert_eq!(v[0]["EnableIPv6"], true, "{v}");
        let six: Vec<String> = v[0]["IPAM"]["Config"]
            .as_array()
            .expect("config")
            .iter()
            .filter_map(|c| c["Subnet"].as_str())
            .filter(|s| s.contains(':'))
            .map(str::to_string)
            .collect();
        assert_eq!(six.len(), 1, "{v}");
        six[0].clone()
    };
    let (web6, other6) = (subnet6(&h1, "web6"), subnet6(&h2, "other6"));
    assert_eq!(subnet6(&h2, "web6"), web6);
    assert_eq!(subnet6(&h1, "other6"), other6);
    assert!(web6.starts_with("fd") && web6.ends_with("/64") && web6 != other6, "{web6} {other6}");

    sleeper(&h1, "a", "web6");
    sleeper(&h2, "b", "web6");
    sleeper(&h2, "o", "other6");
    let (a6, b6, o6) = (h1.ip6_of("a", "web6"), h2.ip6_of("b", "web6"), h2.ip6_of("o", "other6"));
    assert!(!a6.is_empty() && !b6.is_empty() && a6 != b6, "{a6} {b6}");
    // Each IPv6 address sits at its IPv4 address's place in the subnet.
    let last =
        |h: &Host, n: &str| h.ip_of(n, "web6").rsplit('.').next().expect("octet").parse::<u16>().expect("n");
    assert!(a6.ends_with(&format!("::{:x}", last(&h1, "a"))), "{a6}");
    assert!(b6.ends_with(&format!("::{:x}", last(&h2, "b"))), "{b6}");

    // Across hosts over IPv6, both ways: neighbour discovery answered in
    // BPF, VXLAN over the IPv4 underlay.
    let ndp_before = h1.drops("ARP_PROXY");
    assert!(eventually(Duration::from_secs(5), || ping6(&h1, "a", &b6)), "a cannot ping6 b at {b6}");
    assert!(ping6(&h2, "b", &a6), "b cannot ping6 a at {a6}");
    assert!(h1.drops("ARP_PROXY") > ndp_before, "no neighbour solicitation answered in BPF");
    assert!(h1.drops("OVERLAY_ENCAP") > 0 && h1.drops("OVERLAY_DECAP") > 0);
    let neigh = text(&h1.exec("a", &["ip", "-6", "neigh", "show", &b6]));
    let b_mac = h2.inspect("b")["NetworkSettings"]["Networks"]["web6"]["MacAddress"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(!b_mac.is_empty() && neigh.contains(&b_mac), "a's neighbour entry for b: {neigh} (b is {b_mac})");
    // Another overlay network's sandbox is not reached over IPv6.
    assert!(!ping6(&h1, "a", &o6), "a reached another network's sandbox over IPv6");

    // Names: AAAA and IPv6 PTR for a sandbox of another host.
    let aaaa = |name: &str| {
        let o = h1.exec("a", &["dig", "+short", "+time=2", "+tries=1", "AAAA", name]);
        text(&o).trim().to_string()
    };
    assert!(eventually(Duration::from_secs(5), || aaaa("b") == b6), "AAAA b: {}", aaaa("b"));
    let ptr = text(&h1.exec("a", &["dig", "+short", "+time=2", "+tries=1", "-x", &b6]));
    assert_eq!(ptr.trim(), "b.web6.", "{ptr}");

    // TCP over IPv6 across hosts: 4 MB, checksummed on both ends.
    let cmd = "socat -u TCP6-LISTEN:5003,reuseaddr - | md5sum";
    h2.dp_ok(&["run", "-d", "--name", "sink6", "--network", "web6", "sh", "-c", cmd]);
    let sink6 = h2.ip6_of("sink6", "web6");
    let sent = send_random(&h1, "a", 4_000_000, &format!("TCP6:[{sink6}]:5003"));
    assert!(
        eventually(Duration::from_secs(10), || sunk(&h2, "sink6") == sent),
        "received {:?}",
        sunk(&h2, "sink6")
    );

    // An IPv6 address is one host's: asking another host for it is refused
    // by name, nothing left; given back when its sandbox goes.
    let e = h2.dp_err(&["run", "-d", "--name", "dup", "--network", "web6", "--ip6", &a6, "sleep", "600"]);
    assert!(e.contains("Address already in use") && e.contains(&a6), "{e}");
    assert!(!h2.sandbox_names().contains(&"dup".to_string()), "a refused run left a sandbox");
    h1.dp_ok(&["rm", "-f", "a"]);
    assert!(
        eventually(Duration::from_secs(5), || h2
            .dp(&["run", "-d", "--name", "dup", "--network", "web6", "--ip6", &a6, "sleep", "600"])
            .status
            .success()),
        "the address of a removed sandbox was not given back"
    );
    sleeper(&h1, "c", "web6");
    assert!(
        eventually(Duration::from_secs(5), || ping6(&h1, "c", &a6)),
        "the address's new holder on host 2 is not reached from host 1"
    );

    // An alias's IPv6 VIP, the same on both hosts, balances over the
    // backends of both: to the other host's through the tunnel.
    h2.dp_ok(&["network", "create", "-d", "overlay", "--ipv6", "-o", "lb=vip", "api6"]);
    networks_reach(&[&h1], &["api6"]);
    dataplane_tests::http::start_backends(&h1, "api6", "web", &["w1"]);
    dataplane_tests::http::start_backends(&h2, "api6", "web", &["w2"]);
    sleeper(&h1, "client", "api6");
    sleeper(&h2, "client", "api6");
    let vip6 = |h: &Host| text(&h.exec("client", &["dig", "+short", "+time=2", "+tries=1", "AAAA", "web"]));
    assert!(
        eventually(Duration::from_secs(5), || {
            let (one, two) = (vip6(&h1), vip6(&h2));
            one.trim().contains(':') && one.lines().count() == 1 && one == two
        }),
        "one IPv6 VIP on both hosts: {:?} {:?}",
        vip6(&h1),
        vip6(&h2)
    );
    let vip6 = vip6(&h1).trim().to_string();
    let vip4 = dig(&h1, "client", "web");
    let octet: u16 = vip4[0].rsplit('.').next().expect("octet").parse().expect("number");
    assert!(vip6.ends_with(&format!("::{octet:x}")), "the IPv6 VIP {vip6} sits at the IPv4 one's {vip4:?}");
    let client = h1.dir.join("client.py");
    std::fs::write(&client, dataplane_tests::http::CLIENT).expect("client script");
    let client = client.display().to_string();
    let count = |h: &Host| -> Result<std::collections::BTreeMap<String, u64>, String> {
        let o = h.exec("client", &["python3", &client, "web", "60", "6"]);
        if !o.status.success() {
            return Err(text(&o));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("{e}: {}", text(&o)))
    };
    for h in [&h1, &h2] {
        assert!(
            eventually(Duration::from_secs(20), || count(h).is_ok_and(|c| c.len() == 2)),
            "60 connections from {} over the IPv6 VIP did not reach both hosts' backends: {:?}",
            h.ns.name,
            count(h)
        );
    }
}
