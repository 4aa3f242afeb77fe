//! The embedded resolver at 127.0.0.11: names, aliases with round robin,
//! reverse names, scoping to shared networks, forwarding to the host's
//! resolvers (and not from `--internal` networks), keeping their answers for
//! their TTLs.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use dataplane_tests::{Host, text};

/// `dig +short NAME` (extra flags allowed) from sandbox `from`: the answer lines.
fn dig(h: &Host, from: &str, args: &[&str]) -> Vec<String> {
    let mut cmd = vec!["dig", "+short", "+time=2", "+tries=1"];
    cmd.extend_from_slice(args);
    let o = h.exec(from, &cmd);
    assert!(o.status.success(), "dig {args:?} from {from}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

/// The response code dig reports for `name` from `from` (NOERROR, NXDOMAIN…).
fn status(h: &Host, from: &str, name: &str) -> String {
    let o = h.exec(from, &["dig", "+time=2", "+tries=1", name]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no status from dig {name}: {}", text(&o)))
        .to_string()
}

fn text_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// ICMP echo requests a sandbox's namespace has received so far.
fn echoes_received(h: &Host, name: &str) -> u64 {
    let o = h.exec(name, &["cat", "/proc/net/snmp"]);
    let snmp = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut icmp = snmp.lines().filter(|l| l.starts_with("Icmp:"));
    let (head, vals) = (icmp.next().expect("Icmp header"), icmp.next().expect("Icmp values"));
    let i = head.split_whitespace().position(|f| f == "InEchos").expect("InEchos");
    vals.split_whitespace().nth(i).and_then(|v| v.parse().ok()).expect("InEchos value")
}

#[test]
fn seeds_alias_demo_round_robins_through_the_embedded_dns() {
    let (h, _ext) = Host::with_external("dns");
    h.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "mybridge"]);
    h.dp_ok(&["network", "create", "--subnet", "10.92.0.0/24", "elsewhere"]);
    for n in ["f1", "f2", "f3"] {
        h.dp_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            "mybridge",
            "--network-alias",
            "forever",
            "sleep",
            "300",
        ]);
    }
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "client",
        "--hostname",
        "asker",
        "--network",
        "mybridge",
        "sleep",
        "300",
    ]);
    h.dp_ok(&["run", "-d", "--name", "stranger", "--network", "elsewhere", "sleep", "300"]);
    let ips: BTreeSet<String> = ["f1", "f2", "f3"].iter().map(|n| h.ip_of(n, "mybridge")).collect();

    let resolv = text(&h.exec("client", &["cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    assert!(resolv.contains("options ndots:0"), "{resolv}");
    assert!(resolv.contains("search test.example"), "host search domains are kept: {resolv}");

    // All three addresses, over UDP and TCP, in rotating order.
    let first = dig(&h, "client", &["forever"]);
    assert_eq!(first.iter().cloned().collect::<BTreeSet<_>>(), ips, "dig +short forever");
    assert_eq!(dig(&h, "client", &["+tcp", "forever"]).into_iter().collect::<BTreeSet<_>>(), ips);
    let heads: BTreeSet<String> = (0..3).map(|_| dig(&h, "client", &["forever"])[0].clone()).collect();
    assert_eq!(heads, ips, "successive answers should rotate");

    // Six pings by name reach each sandbox twice.
    let before: Vec<u64> = ["f1", "f2", "f3"].iter().map(|n| echoes_received(&h, n)).collect();
    for _ in 0..6 {
        let o = h.exec("client", &["ping", "-c", "1", "-W", "2", "forever"]);
        assert!(o.status.success(), "ping forever: {}", text(&o));
    }
    let got: Vec<u64> =
        ["f1", "f2", "f3"].iter().zip(&before).map(|(n, b)| echoes_received(&h, n) - b).collect();
    assert_eq!(got, vec![2, 2, 2], "echo requests received by f1, f2, f3");

    // Names, hostnames, IDs and reverse names.
    let f1 = h.ip_of("f1", "mybridge");
    assert_eq!(dig(&h, "client", &["f1"]), vec![f1.clone()]);
    // container:client shares client's namespace, and so its resolver.
    h.dp_ok(&["run", "-d", "--name", "guest", "--network", "container:client", "sleep", "300"]);
    assert_eq!(dig(&h, "guest", &["f1"]), vec![f1.clone()], "from a container:client sandbox");
    assert_eq!(dig(&h, "stranger", &["stranger"]).len(), 1, "own name");
    let client_ip = h.ip_of("client", "mybridge");
    assert_eq!(dig(&h, "f1", &["asker"]), vec![client_ip], "hostname");
    let id = h.inspect("f1")["Id"].as_str().expect("id")[..12].to_string();
    assert_eq!(dig(&h, "client", &[&id]), vec![f1.clone()], "short ID");
    assert_eq!(dig(&h, "client", &["-x", &f1]), vec!["f1.mybridge.".to_string()]);
    assert!(dig(&h, "client", &["AAAA", "f1"]).is_empty(), "no IPv6 addresses");
    assert_eq!(status(&h, "client", "AAAA"), "NXDOMAIN");
    assert_eq!(status(&h, "client", "nosuchname"), "NXDOMAIN");
    // Only networks shared with the asker.
    assert_eq!(status(&h, "stranger", "f1"), "NXDOMAIN");
    assert_eq!(status(&h, "stranger", "forever"), "NXDOMAIN");

    // Stopped and removed sandboxes leave the answers at once.
    h.dp_ok(&["stop", "f3"]);
    assert_eq!(dig(&h, "client", &["forever"]).len(), 2, "after stopping f3");
    assert_eq!(status(&h, "client", "f3"), "NXDOMAIN");
    h.dp_ok(&["rm", "-f", "f2"]);
    assert_eq!(dig(&h, "client", &["forever"]), vec![f1], "after removing f2");

    // `network connect --alias` adds a name on that network.
    h.dp_ok(&["network", "connect", "--alias", "db", "elsewhere", "client"]);
    let client_elsewhere = h.ip_of("client", "elsewhere");
    assert_eq!(dig(&h, "stranger", &["db"]), vec![client_elsewhere.clone()]);
    assert_eq!(dig(&h, "stranger", &["client"]), vec![client_elsewhere]);
    assert_eq!(status(&h, "f1", "db"), "NXDOMAIN", "the alias is scoped to its network");
    let err = h.dp_err(&["network", "connect", "--alias", "bad name!", "mybridge", "stranger"]);
    assert!(err.contains("alias"), "{err}");
}

/// dnsmasq answering `outside.example` in the external namespace; killed on drop.

#[test]
fn unknown_names_go_to_the_hosts_resolver_except_from_internal_networks() {
    let (mut h, ext) = Host::with_external("fwd");
    let _up = dataplane_tests::DnsUpstream::start(&ext);
    h.dp_ok(&["network", "create", "--subnet", "10.93.0.0/24", "open"]);
    h.dp_ok(&["network", "create", "--internal", "--subnet", "10.94.0.0/24", "sealed"]);
    h.dp_ok(&["run", "-d", "--name", "o1", "--network", "open", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "s1", "--network", "sealed", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "s2", "--network", "sealed", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "d1", "sleep", "300"]);

    assert_eq!(dig(&h, "o1", &["outside.example"]), vec!["198.51.100.7"]);
    assert_eq!(dig(&h, "o1", &["+tcp", "outside.example"]), vec!["198.51.100.7"]);
    // Internal: names inside the network work, nothing is forwarded.
    assert_eq!(dig(&h, "s1", &["s2"]), vec![h.ip_of("s2", "sealed")]);
    assert_eq!(status(&h, "s1", "outside.example"), "NXDOMAIN");
    // The default bridge has no embedded DNS: the host's resolv.conf is copied.
    let resolv = text(&h.exec("d1", &["cat", "/etc/resolv.conf"]));
    assert!(resolv.contains("nameserver 192.0.2.2") && !resolv.contains("127.0.0.11"), "{resolv}");
    assert_eq!(dig(&h, "d1", &["outside.example"]), vec!["198.51.100.7"]);

    // Port 53 stays the sandbox's: its own DNS server binds 0.0.0.0:53 (UDP
    // and TCP) next to the embedded resolver, and both answer.
    h.dp_ok(&["run", "-d", "--name", "own", "--network", "open", "sh", "-c",
        "socat UDP-LISTEN:53,fork SYSTEM:'echo own-udp' & exec socat TCP-LISTEN:53,fork SYSTEM:'echo own-tcp'"]);
    let own = h.ip_of("own", "open");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut said = String::new();
    while std::time::Instant::now() < deadline && said != "own-tcp" {
        said = text_of(&h.exec("o1", &["socat", "-T", "2", "-", &format!("TCP:{own}:53,connect-timeout=2")]));
    }
    assert_eq!(said, "own-tcp");
    // UDP: a datagram may meet the server before it listens, or be lost under load; retry (bounded).
    let mut said = String::new();
    for _ in 0..5 {
        said = text_of(&h.exec("o1", &["sh", "-c", &format!("echo q | socat -T 2 - UDP:{own}:53")]));
        if said == "own-udp" {
            break;
        }
    }
    assert_eq!(said, "own-udp");
    assert_eq!(dig(&h, "own", &["o1"]), vec![h.ip_of("o1", "open")]);
    assert_eq!(dig(&h, "own", &["+tcp", "o1"]), vec![h.ip_of("o1", "open")]);

    // A daemon restart opens the resolvers again.
    h.kill_daemon();
    h.start();
    assert_eq!(dig(&h, "s1", &["s2"]), vec![h.ip_of("s2", "sealed")]);
    assert_eq!(dig(&h, "o1", &["outside.example"]), vec!["198.51.100.7"]);
}

#[test]
fn an_unreachable_upstream_does_not_hold_up_local_names() {
    let (h, ext) = Host::with_external("unr");
    let _up = dataplane_tests::DnsUpstream::start(&ext);
    h.dp_ok(&["network", "create", "--subnet", "10.95.0.0/24", "names"]);
    for n in ["a", "b"] {
        h.dp_ok(&["run", "-d", "--name", n, "--network", "names", "sleep", "300"]);
    }
    let b = h.ip_of("b", "names");
    // Reachable first (the pair): the upstream answers.
    assert_eq!(dig(&h, "a", &["outside.example"]), vec!["198.51.100.7"]);
    // Now the host's resolver is an address on the LAN nobody holds:
    // forwarded queries wait out their upstream timeout (2 s) each.
    std::fs::write(h.resolv_conf(), "nameserver 192.0.2.99\n").expect("resolv.conf");
    let mut waiting: Vec<Child> = (0..20)
        .map(|i| {
            Command::new(dataplane_tests::bin())
                .arg("--socket")
                .arg(&h.socket)
                .args(["exec", "a", "dig", "+time=6", "+tries=1", &format!("n{i}.outside.example")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("dig")
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Meanwhile local names answer within dig's 1 s, every time.
    for _ in 0..5 {
        let o = h.exec("a", &["dig", "+short", "+time=1", "+tries=1", "b"]);
        assert_eq!(text_of(&o), b, "a local name stalled behind the unreachable upstream: {}", text(&o));
    }
    // And the forwarded ones did fail (SERVFAIL after the timeout), so the
    // upstream really was out of reach while the local names answered.
    for c in &mut waiting {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while c.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = c.kill();
    }
    let failed = waiting
        .into_iter()
        .filter_map(|c| c.wait_with_output().ok())
        .filter(|o| String::from_utf8_lossy(&o.stdout).contains("status: SERVFAIL"))
        .count();
    assert_eq!(failed, 20, "forwarded queries to an unreachable upstream should fail");
}

#[test]
fn names_are_answered_in_the_kernel_even_while_the_daemon_is_down() {
    let (mut h, ext) = Host::with_external("kdns");
    let _up = dataplane_tests::DnsUpstream::start(&ext);
    h.dp_ok(&["network", "create", "--subnet", "10.93.0.0/24", "kern"]);
    h.dp_ok(&["run", "-d", "--name", "k1", "--network", "kern", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "k2", "--network", "kern", "--network-alias", "svc", "sleep", "300"]);
    let k2 = h.ip_of("k2", "kern");
    let before = h.drops("DNS_ANSWERED");
    assert_eq!(dig(&h, "k1", &["k2"]), vec![k2.clone()]);
    assert_eq!(dig(&h, "k1", &["SVC"]), vec![k2.clone()], "aliases, in any case");
    assert!(h.drops("DNS_ANSWERED") >= before + 2, "A answers for sandbox names come from the kernel");
    // What the kernel does not answer, the daemon still does: AAAA (no
    // data on an IPv4 network), forwarded names, IDs.
    let aaaa = text(&h.exec("k1", &["dig", "+time=2", "+tries=1", "k2", "AAAA"]));
    assert!(aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"), "{aaaa}");
    assert_eq!(dig(&h, "k1", &["outside.example"]), vec!["198.51.100.7"]);
    let id = h.inspect("k2")["Id"].as_str().expect("id")[..12].to_string();
    assert_eq!(dig(&h, "k1", &[&id]), vec![k2.clone()]);
    // A sandbox that stops leaves the kernel's answers at once.
    h.dp_ok(&["run", "-d", "--name", "k3", "--network", "kern", "sleep", "300"]);
    assert_eq!(dig(&h, "k1", &["k3"]), vec![h.ip_of("k3", "kern")]);
    h.dp_ok(&["stop", "-t", "0", "k3"]);
    // (The kernel's copy follows the store within moments: bounded wait.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while status(&h, "k1", "k3") != "NXDOMAIN" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(status(&h, "k1", "k3"), "NXDOMAIN");

    // With the daemon gone, the sandbox's names still resolve...
    let netns = format!("--net={}", h.inspect("k1")["NetworkSettings"]["SandboxKey"].as_str().expect("key"));
    h.kill_daemon();
    // (nsenter keeps the host's resolv.conf: the resolver is named.)
    let dig_down = |name: &str| {
        dataplane_tests::sh(&["nsenter", &netns, "dig", "@127.0.0.11", "+time=1", "+tries=1", name])
    };
    let o = dig_down("k2");
    assert!(text(&o).contains("status: NOERROR") && text(&o).contains(&k2), "{}", text(&o));
    // ...and only those: a name for the daemon gets no answer now (the
    // pair, showing the answer above did not come from the daemon).
    let o = dig_down("outside.example");
    assert!(!text(&o).contains("status: NOERROR"), "answered with no daemon? {}", text(&o));
    h.start();
    assert_eq!(dig(&h, "k1", &["outside.example"]), vec!["198.51.100.7"]);
    assert_eq!(dig(&h, "k1", &["k2"]), vec![k2]);
}

/// dig's answer lines for `name` from `from`: (TTL, address) of each A record.
fn answers_with_ttl(h: &Host, from: &str, name: &str) -> Vec<(u32, String)> {
    let o = h.exec(from, &["dig", "+noall", "+answer", "+time=4", "+tries=1", name]);
    text_of(&o)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| (f[1].parse().ok(), f[4].to_string()))
        })
        .filter_map(|(ttl, a)| Some((ttl?, a)))
        .collect()
}

#[test]
fn forwarded_answers_are_kept_for_their_ttl_and_given_with_it_counted_down() {
    let (h, ext) = Host::with_external("kept");
    let up = dataplane_tests::DnsUpstream::start(&ext);
    h.dp_ok(&["network", "create", "--subnet", "10.96.0.0/24", "kept"]);
    h.dp_ok(&["run", "-d", "--name", "q1", "--network", "kept", "sleep", "300"]);
    // The same network, its own resolver: nobody holds 192.0.2.99.
    h.dp_ok(&["run", "-d", "--name", "q2", "--network", "kept", "--dns", "192.0.2.99", "sleep", "300"]);
    let cached_before = h.metric("dataplane_dns_queries_total", "outcome=\"cached\"").unwrap_or(0.0);

    // The upstream's answers: TTL 300, TTL 2, TTL 0.
    assert_eq!(answers_with_ttl(&h, "q1", "c7.cached.example"), vec![(300, "198.51.100.8".to_string())]);
    assert_eq!(answers_with_ttl(&h, "q1", "brief.cached.example"), vec![(2, "198.51.100.9".to_string())]);
    assert_eq!(answers_with_ttl(&h, "q1", "outside.example"), vec![(0, "198.51.100.7".to_string())]);
    std::thread::sleep(std::time::Duration::from_millis(2100));

    // With the upstream gone, the 300 s answer still comes, from memory,
    // its TTL counted down by the seconds it was kept...
    drop(up);
    let again = answers_with_ttl(&h, "q1", "c7.cached.example");
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].1, "198.51.100.8");
    assert!((290..=298).contains(&again[0].0), "TTL counted down from 300 by about 2 s: {again:?}");
    assert!(
        h.metric("dataplane_dns_queries_total", "outcome=\"cached\"").unwrap_or(0.0) > cached_before,
        "a cached answer is counted as such"
    );
    // c7 is kept (brief's TTL has run out but it stays until asked for again).
    assert!(
        h.metric("dataplane_dns_cached_answers", "").is_some_and(|n| n >= 1.0),
        "the cache's size is shown"
    );
    // ...while an answer whose TTL ran out, and one that had TTL 0, are
    // asked for again, and fail with the upstream gone (the pair).
    assert_eq!(status(&h, "q1", "brief.cached.example"), "SERVFAIL");
    assert_eq!(status(&h, "q1", "outside.example"), "SERVFAIL");
    // A sandbox asking other resolvers (its --dns) does not get the
    // answers the host's gave.
    let o = h.exec("q2", &["dig", "+time=6", "+tries=1", "c7.cached.example"]);
    assert!(text(&o).contains("status: SERVFAIL"), "answered from another resolver's answers: {}", text(&o));
    // Local names are not affected by any of it.
    assert_eq!(dig(&h, "q2", &["q1"]), vec![h.ip_of("q1", "kept")]);
}
