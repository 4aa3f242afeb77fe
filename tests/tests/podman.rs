//! Real Podman 4.3 (CNI backend) on dataplane networks through the
//! `dataplane-cni` plugin: published ports in BPF, names through our
//! resolver, isolation between networks, restart and removal.

use dataplane_tests::monitor::Monitor;
use dataplane_tests::podman::Podman;
use dataplane_tests::{Host, PeerEcho, text};

fn curl(ext: &dataplane_tests::Netns, url: &str) -> String {
    text(&ext.run(&["curl", "-s", "-m", "5", url]))
}

#[test]
fn podman_containers_publish_resolve_and_stay_isolated_on_dataplane_networks() {
    let (mut h, ext) = Host::with_external("pod");
    h.dp_ok(&["network", "create", "--subnet", "10.96.0.0/24", "dpnet"]);
    h.dp_ok(&["network", "create", "--subnet", "10.96.1.0/24", "other"]);
    let links_before = h.links();
    let pm = Podman::new(&h);
    pm.add_network(&h, "dpnet");
    pm.add_network(&h, "other");
    let id =
        pm.run_detached("web", "dpnet", &["-p", "8080:80"], &["httpd", "-f", "-v", "-p", "80", "-h", "/www"]);
    let sandbox_key =
        pm.ok(&["inspect", "web", "--format", "{{.NetworkSettings.SandboxKey}}"]).trim().to_string();
    assert!(std::path::Path::new(&sandbox_key).exists(), "podman's namespace {sandbox_key}");
    // Reachable from outside through the BPF publication, the client's address kept.
    assert!(curl(&ext, "http://192.0.2.1:8080/index.html").contains("hello from podman"));
    let logs = text(&pm.podman(&["logs", "web"]));
    assert!(logs.contains("192.0.2.2"), "httpd saw the client's own address: {logs}");
    // …and no firewall rule for it.
    for (tool, args) in [("iptables-save", vec![]), ("nft", vec!["list", "ruleset"])] {
        let mut full = vec![tool];
        full.extend(args);
        let rules = text(&h.run(&full));
        assert!(!rules.contains("8080"), "{tool}: {rules}");
    }
    // dataplane sees the runtime's container.
    let ps = h.dp_ok(&["ps"]);
    assert!(ps.contains(&format!("(cni {})", &id[..12])) && ps.contains("web"), "{ps}");
    let ip = h.ip_of("web", "dpnet");
    assert_eq!(ip, "10.96.0.2");
    assert!(h.dp_ok(&["ct", "list"]).contains("10.96.0.2"), "ct list shows the published flow");
    assert!(h.dp_ok(&["network", "inspect", "dpnet"]).contains("web"));
    // A second container resolves it by name through our resolver.
    let rootfs = pm.rootfs();
    let mut client = vec!["run", "--rm", "--network", "dpnet"];
    client.extend_from_slice(dataplane_tests::podman::ULIMITS);
    let get = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 2 10.96.0.2 80";
    let script = format!("cat /etc/resolv.conf; nslookup web; wget -q -O - http://web/index.html; {get}");
    client.extend_from_slice(&["--rootfs", &rootfs, "sh", "-c", &script]);
    let out = pm.ok(&client);
    assert!(out.contains("nameserver 127.0.0.11"), "{out}");
    assert!(out.contains("10.96.0.2") && out.matches("hello from podman").count() == 2, "{out}");
    // A container on another network cannot reach it, but reaches outside.
    let _echo = PeerEcho::start(&ext, "tcp", 80);
    pm.run_detached("far", "other", &[], &["sleep", "300"]);
    let isolated_before = h.drops("POLICY_NETWORK_ISOLATION");
    let mon = Monitor::start(&h);
    let blocked = pm.exec("far", &["sh", "-c", get]);
    assert!(!text(&blocked).contains("hello"), "{}", text(&blocked));
    assert!(
        h.drops("POLICY_NETWORK_ISOLATION") > isolated_before,
        "counted as an isolation drop: {}",
        h.dp_ok(&["stats"])
    );
    // monitor names both containers.
    let ev = mon.expect(
        |v| v["Reason"] == "POLICY_NETWORK_ISOLATION",
        || {
            pm.exec("far", &["sh", "-c", get]);
        },
    );
    assert_eq!(
        (ev["SourceSandbox"].as_str(), ev["DestinationSandbox"].as_str()),
        (Some("far"), Some("web")),
        "{ev}"
    );
    drop(mon);
    let out = text(&pm.exec("far", &["sh", "-c", "nc -w 3 192.0.2.2 80 </dev/null"]));
    assert!(out.contains("peer=192.0.2.1"), "masqueraded to the uplink: {out}");
    // Restart keeps it working (a DEL and an ADD).
    pm.ok(&["restart", "-t", "0", "web"]);
    assert!(curl(&ext, "http://192.0.2.1:8080/index.html").contains("hello from podman"));
    assert_eq!(h.ip_of("web", "dpnet"), "10.96.0.2");
    // The daemon killed and started again: the published port and names keep working.
    h.kill_daemon();
    assert!(
        curl(&ext, "http://192.0.2.1:8080/index.html").contains("hello from podman"),
        "while the daemon is away"
    );
    h.start();
    assert!(curl(&ext, "http://192.0.2.1:8080/index.html").contains("hello from podman"));
    let out = text(&pm.exec("far", &["nslookup", "far"]));
    assert!(out.contains("10.96.1.2"), "the resolver is back: {out}");
    // rm -f leaves nothing: no record, no interface, no namespace.
    pm.ok(&["rm", "-f", "-t", "0", "web", "far"]);
    assert_eq!(h.sandbox_names(), Vec::<String>::new());
    assert_eq!(h.links(), links_before);
    assert!(!std::path::Path::new(&sandbox_key).exists(), "{sandbox_key} is gone");
    assert!(!curl(&ext, "http://192.0.2.1:8080/index.html").contains("hello"));
}

#[test]
fn podman_containers_get_ipv6_on_a_dual_stack_dataplane_network() {
    let (h, ext) = Host::with_external("pod6");
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    h.dp_ok(&["network", "create", "--ipv6", "--subnet", "10.96.2.0/24", "--subnet", "fd00:96::/64", "dual"]);
    let links_before = h.links();
    let pm = Podman::new(&h);
    pm.add_network(&h, "dual");
    pm.run_detached("web6", "dual", &["-p", "8081:80"], &["httpd", "-f", "-v", "-p", "80", "-h", "/www"]);
    // Podman reports the IPv6 address dataplane gave (its record), with the gateway.
    let ours = h.ip6_of("web6", "dual");
    assert!(ours.starts_with("fd00:96::"), "{ours}");
    let theirs =
        pm.ok(&["inspect", "web6", "--format", "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}"]);
    assert_eq!(theirs.trim(), ours);
    let route = text(&pm.exec("web6", &["ip", "-6", "route", "show", "default"]));
    assert!(route.contains("via fd00:96::1"), "{route}");
    // From outside over IPv6: published in BPF, the client's address kept.
    let url = "http://[fd00:ffff::1]:8081/index.html";
    let got = text(&ext.run(&["curl", "-g", "-s", "-m", "5", url]));
    assert!(got.contains("hello from podman"), "{got}");
    let logs = text(&pm.podman(&["logs", "web6"]));
    assert!(logs.contains("fd00:ffff::2"), "httpd saw the client's own IPv6 address: {logs}");
    // A second container reaches it over IPv6, by address and by name (AAAA).
    pm.run_detached("cli6", "dual", &[], &["sleep", "300"]);
    let ping = pm.exec("cli6", &["ping", "-6", "-c", "1", "-W", "2", &ours]);
    assert!(ping.status.success(), "{}", text(&ping));
    let ns = text(&pm.exec("cli6", &["nslookup", "web6"]));
    assert!(ns.contains(&ours), "AAAA through our resolver: {ns}");
    // rm -f leaves nothing.
    pm.ok(&["rm", "-f", "-t", "0", "web6", "cli6"]);
    assert_eq!(h.sandbox_names(), Vec::<String>::new());
    assert_eq!(h.links(), links_before);
    let gone = text(&ext.run(&["curl", "-g", "-s", "-m", "3", url]));
    assert!(!gone.contains("hello"), "{gone}");
}
