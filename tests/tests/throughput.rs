//! Long transfers through every NAT path (catches checksum and GSO mistakes
//! on veth): iperf3 for several seconds, and a file whose checksum must
//! match at both ends. Speeds are printed, never asserted (that is the
//! benchmark harness's job).

use std::process::{Command, Stdio};

use dataplane_tests::{Host, text};

/// Runs an iperf3 client and returns the receiver's bits per second.
fn iperf_bps(out: &std::process::Output) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output is not JSON ({e}): {}", text(out)));
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0)
}

#[test]
fn iperf3_and_file_transfer_through_published_hairpin_and_egress_paths() {
    let (h, ext) = Host::with_external("tput");
    // Path 1: external client → published port.
    h.dp_ok(&["run", "-d", "--name", "srv", "-p", "5201:5201", "iperf3", "-s"]);
    for _ in 0..100 {
        if String::from_utf8_lossy(&h.exec("srv", &["ss", "-tln"]).stdout).contains(":5201 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = ext.run(&["iperf3", "-c", "192.0.2.1", "-p", "5201", "-t", "3", "-J"]);
    assert!(o.status.success(), "published path: {}", text(&o));
    let published = iperf_bps(&o);
    assert!(published > 0.0);
    // Path 3: another sandbox → host address → published port.
    h.dp_ok(&["run", "-d", "--name", "cli", "sleep", "300"]);
    let o = h.exec("cli", &["iperf3", "-c", "192.0.2.1", "-p", "5201", "-t", "3", "-J"]);
    assert!(o.status.success(), "hairpin path: {}", text(&o));
    let hairpin = iperf_bps(&o);
    assert!(hairpin > 0.0);
    // Path 4: sandbox → outside through SNAT.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ext.name, "iperf3", "-s", "-p", "5301"])
        .stdout(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let o = h.exec("cli", &["iperf3", "-c", "192.0.2.2", "-p", "5301", "-t", "3", "-J"]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(o.status.success(), "egress path: {}", text(&o));
    let egress = iperf_bps(&o);
    assert!(egress > 0.0);
    println!(
        "iperf3 (3 s): published {:.2} Gbit/s, hairpin {:.2} Gbit/s, egress {:.2} Gbit/s",
        published / 1e9,
        hairpin / 1e9,
        egress / 1e9
    );

    // A file through the published path, checked at both ends.
    let blob = format!("/tmp/dp-tput-blob-{}", h.ns.name);
    let serve = format!(
        "head -c 30000000 /dev/urandom > {blob} && sha256sum < {blob} > {blob}.sum && socat TCP-LISTEN:9000,reuseaddr,fork OPEN:{blob},rdonly"
    );
    h.dp_ok(&["run", "-d", "--name", "files", "-p", "9000:9000", "sh", "-c", &serve]);
    for _ in 0..200 {
        if String::from_utf8_lossy(&h.exec("files", &["ss", "-tln"]).stdout).contains(":9000 ") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let want = std::fs::read_to_string(format!("{blob}.sum")).unwrap_or_default().trim().to_string();
    let got = ext.run(&["sh", "-c", "socat -T 10 -u TCP:192.0.2.1:9000 - | sha256sum"]);
    let _ = std::fs::remove_file(&blob);
    let _ = std::fs::remove_file(format!("{blob}.sum"));
    assert!(!want.is_empty());
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), want, "{}", text(&got));

    // Every server the test started in a sandbox ends with it: the
    // sandboxes' process groups (iperf3 -s, the socat file server and its
    // forks). (The external iperf3 server was killed and reaped above.)
    let groups: Vec<u64> =
        ["srv", "files"].iter().map(|n| h.inspect(n)["State"]["Pid"].as_u64().expect("pid")).collect();
    assert!(groups.iter().all(|g| !dataplane_tests::group_members(*g).is_empty()), "the servers run");
    drop(h);
    drop(ext);
    for g in groups {
        assert_eq!(dataplane_tests::group_members(g), Vec::<String>::new(), "a server outlived its test");
    }
}

#[test]
fn a_thousand_ports_publish_at_once_without_firewall_rules() {
    let (h, ext) = Host::with_external("k");
    let t0 = std::time::Instant::now();
    h.dp_ok(&["run", "-d", "--name", "many", "-p", "20000-20999:20000-20999", "sleep", "300"]);
    let took = t0.elapsed();
    println!("publishing 1000 ports (run -d, end to end): {took:?}");
    let ports = h.dp_ok(&["port", "many"]);
    assert_eq!(ports.lines().count(), 2000, "0.0.0.0 and [::] for each");
    assert!(ports.contains("20999/tcp -> 0.0.0.0:20999"));
    // One of them, reached from outside (nothing listens: the sandbox refuses, proving the DNAT).
    let o = ext.run(&["socat", "-T", "2", "-", "TCP:192.0.2.1:20500,connect-timeout=2"]);
    assert!(text(&o).contains("Connection refused"), "{}", text(&o));
    // No iptables or nftables rule and no proxy process of ours.
    for cmd in [vec!["iptables-save"], vec!["nft", "list", "ruleset"]] {
        let o = h.run(&cmd);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!out.contains("20500") && !out.contains("172.17.0.2"), "{cmd:?} shows our rules: {out}");
    }
    let ps = String::from_utf8_lossy(&dataplane_tests::sh(&["ps", "-eo", "args"]).stdout).into_owned();
    assert!(!ps.lines().any(|l| l.contains("docker-proxy") || l.contains("20500")), "a proxy process runs");
    // Unpublishing all of them is one rm.
    h.dp_ok(&["rm", "-f", "many"]);
    let o = ext.run(&["socat", "-T", "2", "-", "TCP:192.0.2.1:20500,connect-timeout=2"]);
    assert!(!o.status.success());
}
