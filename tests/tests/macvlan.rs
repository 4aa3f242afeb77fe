//! macvlan networks: a LAN namespace on the far side of the parent reaches
//! macvlan sandboxes by IP, and the seeds' two-host example.

use dataplane_tests::{Host, Netns, UPLINK};

#[test]
fn lan_reaches_macvlan_sandboxes() {
    let (h, ext) = Host::with_external("mv");
    h.dp_ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        "192.0.2.2",
        "--ip-range",
        "192.0.2.64/26",
        "-o",
        &format!("parent={UPLINK}"),
        "lan",
    ]);
    h.dp_ok(&["run", "-d", "--name", "m1", "--network", "lan", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "m2", "--network", "lan", "sleep", "300"]);
    let ip1 = h.ip_of("m1", "lan");
    assert_eq!(ip1, "192.0.2.64");
    // The sandbox has its own MAC on the LAN.
    let neigh_ok = ext.run(&["ping", "-c", "1", "-W", "2", &ip1]).status.success();
    assert!(neigh_ok, "LAN cannot reach the macvlan sandbox");
    let neigh = String::from_utf8_lossy(&ext.run(&["ip", "neigh", "show", &ip1]).stdout).into_owned();
    assert!(neigh.contains("02:42:c0:00:02:40"), "{neigh}");
    assert!(h.ping("m1", "192.0.2.2"), "sandbox cannot reach the LAN");
    assert!(h.ping("m1", &h.ip_of("m2", "lan")), "bridge mode: sandboxes reach each other");
    let inspect: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "inspect", "lan"])).expect("json");
    assert_eq!(inspect[0]["Options"]["macvlan_mode"], "bridge");
    assert_eq!(inspect[0]["Options"]["parent"], UPLINK);
    h.dp_ok(&["rm", "-f", "m1", "m2"]);
    h.dp_ok(&["network", "rm", "lan"]);
}

#[test]
fn two_hosts_on_one_lan_with_disjoint_ip_ranges() {
    let lan = Netns::new("lan");
    assert!(lan.run(&["ip", "link", "add", "lan0", "type", "bridge"]).status.success());
    assert!(lan.run(&["ip", "link", "set", "lan0", "up"]).status.success());
    let mut h1 = Host::new("A", &lan, Some("lan0"), "192.168.77.11/24");
    let mut h2 = Host::new("B", &lan, Some("lan0"), "192.168.77.12/24");
    h1.start();
    h2.start();
    for (h, range) in [(&h1, "192.168.77.128/26"), (&h2, "192.168.77.192/26")] {
        h.dp_ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "192.168.77.0/24",
            "--ip-range",
            range,
            "--gateway",
            "192.168.77.1",
            "-o",
            &format!("parent={UPLINK}"),
            "mv",
        ]);
    }
    h1.dp_ok(&["run", "-d", "--name", "c1", "--network", "mv", "sleep", "300"]);
    h2.dp_ok(&["run", "-d", "--name", "c2", "--network", "mv", "sleep", "300"]);
    assert_eq!(h1.ip_of("c1", "mv"), "192.168.77.128");
    assert_eq!(h2.ip_of("c2", "mv"), "192.168.77.192");
    assert!(h1.ping("c1", "192.168.77.192"), "host A's sandbox cannot reach host B's");
    assert!(h2.ping("c2", "192.168.77.128"), "host B's sandbox cannot reach host A's");
}
