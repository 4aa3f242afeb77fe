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

fn sleeper(h: &Host, name: &str, net: &str) {
    h.dp_ok(&["run", "-d", "--name", name, "--network", net, "sleep", "600"]);
}

/// `dig +short NAME` from sandbox `from`.
fn dig(h: &Host, from: &str, name: &str) -> Vec<String> {
    let o = h.exec(from, &["dig", "+short", "+time=2", "+tries=1", name]);
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

#[test]
fn an_overlay_network_spans_hosts_with_vxlan_in_bpf() {
    let etcd = Etcd::lan(3);
    let h1 = etcd.host("ov1", 11);
    let h2 = etcd.host("ov2", 12);
    let h3 = etcd.host("ov3", 13);
    let t = Instant::now();
    h1.dp_ok(&["network", "create", "-d", "overlay", "--subnet", "10.77.0.0/24", "web"]);
    for h in [&h2, &h3] {
        assert!(
            eventually(Duration::from_secs(5), || h.network_names().contains(&"web".to_string())),
            "the overlay network did not reach {}: {:?}",
            h.ns.name,
            h.network_names()
        );
    }
    eprintln!("network on every host after {:?}", t.elapsed());
    let inspect: serde_json::Value =
        serde_json::from_str(&h3.dp_ok(&["network", "inspect", "web"])).expect("json");
    assert_eq!(inspect[0]["Scope"], "global", "{inspect}");
    assert_eq!(inspect[0]["Driver"], "overlay", "{inspect}");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.77.0.0/24", "{inspect}");

    sleeper(&h1, "a", "web");
    sleeper(&h2, "b", "web");
    sleeper(&h3, "c", "web");
    let (a, b, c) = (h1.ip_of("a", "web"), h2.ip_of("b", "web"), h3.ip_of("c", "web"));
    let distinct: BTreeSet<_> = [&a, &b, &c].into_iter().collect();
    assert_eq!(distinct.len(), 3, "addresses {a} {b} {c}");
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

    // TCP across hosts: 20 MB, checksummed on both ends.
    h2.dp_ok(&[
        "run",
        "-d",
        "--name",
        "sink",
        "--network",
        "web",
        "sh",
        "-c",
        "socat -u TCP-LISTEN:5001,reuseaddr - | md5sum",
    ]);
    let sink = h2.ip_of("sink", "web");
    let file = h1.dir.join("overlay-tx");
    let send = h1.exec(
        "a",
        &["sh", "-c", &format!(
            "head -c 20000000 /dev/urandom > {f} && socat -u OPEN:{f} TCP:{sink}:5001,connect-timeout=5 && md5sum < {f}",
            f = file.display()
        )],
    );
    assert!(send.status.success(), "{}", text(&send));
    let sent = String::from_utf8_lossy(&send.stdout).trim().to_string();
    let received = || String::from_utf8_lossy(&h2.dp(&["logs", "sink"]).stdout).trim().to_string();
    assert!(
        eventually(Duration::from_secs(10), || received() == sent),
        "received {:?}, sent {sent}",
        received()
    );
}
