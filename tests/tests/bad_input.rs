//! Bad input: a clear error naming the problem, a non-zero exit, and nothing
//! left behind (no link, namespace file, or store record).

use dataplane_tests::{Host, UPLINK};

/// What must not change when a request fails.
#[derive(Debug, PartialEq)]
struct Snapshot {
    links: Vec<String>,
    netns: Vec<String>,
    networks: Vec<String>,
    sandboxes: Vec<String>,
    pinned_links: Vec<String>,
}

fn snapshot(h: &Host) -> Snapshot {
    let mut pinned: Vec<String> = std::fs::read_dir(h.bpffs.join("links"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    pinned.sort();
    let mut networks = h.network_names();
    networks.sort();
    Snapshot {
        links: h.links(),
        netns: h.netns_files(),
        networks,
        sandboxes: h.sandbox_names(),
        pinned_links: pinned,
    }
}

/// Runs `args`, which must fail with a message containing `expect`, and change nothing.
fn refused(h: &Host, args: &[&str], expect: &str) {
    let before = snapshot(h);
    let err = h.dp_err(args);
    assert!(err.contains(expect), "dataplane {args:?}: expected {expect:?} in {err:?}");
    assert_eq!(before, snapshot(h), "dataplane {args:?} left something behind");
}

#[test]
fn bad_networks_are_refused_and_leave_nothing() {
    let (h, _ext) = Host::with_external("badn");
    h.dp_ok(&["network", "create", "--subnet", "10.60.0.0/16", "taken"]);
    refused(&h, &["network", "create", "--subnet", "10.60.1.0/24", "ovl"], "overlaps network taken");
    refused(
        &h,
        &["network", "create", "--subnet", "10.61.0.0/24", "--gateway", "10.62.0.1", "g"],
        "not inside subnet",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "10.61.0.0/24", "--ip-range", "10.61.1.0/25", "r"],
        "not inside subnet",
    );
    refused(
        &h,
        &["network", "create", "--subnet", "10.61.0.0/24", "--aux-address", "x=10.9.9.9", "a"],
        "not inside subnet",
    );
    refused(&h, &["network", "create", "--subnet", "10.61.0.0/33", "bad"], "not an IPv4 CIDR");
    for mtu in ["67", "65536", "jumbo"] {
        let o = format!("com.docker.network.driver.mtu={mtu}");
        refused(&h, &["network", "create", "-o", &o, "m"], "the MTU must be 68 to 65535");
    }
    // Subnets that would break the host: its uplink's LAN, a route, one of its addresses…
    h.run(&["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
    h.run(&["ip", "addr", "add", "203.0.113.7/32", "dev", UPLINK]);
    for (subnet, what) in [
        ("192.0.2.0/24", "route 192.0.2.0/24 dev up0"),
        ("192.0.2.128/25", "route 192.0.2.0/24 dev up0"),
        ("192.0.0.0/16", "route 192.0.2.0/24 dev up0"),
        ("198.51.100.0/25", "route 198.51.100.0/24 dev up0"),
        ("203.0.113.0/24", "address 203.0.113.7 on up0"),
    ] {
        refused(&h, &["network", "create", "--subnet", subnet, "hostnet"], what);
    }
    // …and address blocks no bridge can serve.
    for (subnet, what) in [
        ("127.0.0.0/24", "loopback"),
        ("224.0.0.0/24", "multicast"),
        ("240.0.0.0/24", "reserved"),
        ("255.255.255.0/24", "reserved"),
        ("169.254.0.0/16", "link-local"),
        ("0.0.0.0/8", "this network"),
    ] {
        refused(&h, &["network", "create", "--subnet", subnet, "special"], what);
    }
    // Next to them (the host's neighbours, not its own) is fine.
    h.dp_ok(&["network", "create", "--subnet", "192.0.3.0/24", "near"]);
    h.dp_ok(&["network", "rm", "near"]);
    refused(&h, &["network", "create", "taken"], "already exists");
    refused(&h, &["network", "create", "bad/name"], "invalid name");
    // Not in a cluster: the refusal says what to pass.
    refused(
        &h,
        &["network", "create", "-d", "overlay", "ov"],
        "overlay networks need a cluster: start the daemon with --cluster-store etcd://IP:PORT --cluster-advertise IP",
    );
    refused(&h, &["network", "create", "-d", "vxlan", "vx"], "plugin \"vxlan\" not found");
    refused(&h, &["network", "create", "-d", "ipvlan", "iv"], "lacks ipvlan");
    refused(
        &h,
        &["network", "create", "-d", "macvlan", "--subnet", "10.63.0.0/24", "mvn"],
        "parent=IFACE is required",
    );
    refused(
        &h,
        &["network", "create", "-d", "macvlan", "--subnet", "10.63.0.0/24", "-o", "parent=nosuch0", "mvn"],
        "no such network interface",
    );
    refused(
        &h,
        &[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "10.63.0.0/24",
            "-o",
            &format!("parent={UPLINK}.50"),
            "mvn",
        ],
        "802.1q",
    );
    refused(
        &h,
        &["network", "create", "-o", &format!("com.docker.network.bridge.name={UPLINK}"), "clash"],
        "already exists on the host",
    );
    refused(
        &h,
        &["network", "create", "-o", "com.docker.network.bridge.enable_icc=maybe", "icc"],
        "must be true or false",
    );
    // Unknown -o keys are refused by name (Docker ignores them: this typo
    // would leave ICC on without a word), with the keys the driver knows.
    refused(&h, &["network", "create", "-o", "enable_icc=false", "typo"], "invalid option \"enable_icc\"");
    refused(
        &h,
        &["network", "create", "-o", "enable_icc=false", "typo"],
        "com.docker.network.bridge.enable_icc",
    );
    refused(
        &h,
        &[
            "network",
            "create",
            "-d",
            "macvlan",
            "-o",
            &format!("parent={UPLINK}"),
            "-o",
            "com.docker.network.bridge.enable_icc=false",
            "mvx",
        ],
        "an option of bridge networks; the macvlan driver does not take it",
    );
    // The same option, spelled right, works.
    h.dp_ok(&["network", "create", "-o", "com.docker.network.bridge.enable_icc=false", "typo"]);
    h.dp_ok(&["network", "rm", "typo"]);
    refused(
        &h,
        &[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "10.63.0.0/24",
            "-o",
            &format!("parent={UPLINK}"),
            "-o",
            "macvlan_mode=sideways",
            "mvm",
        ],
        "must be bridge, vepa, private or passthru",
    );
    refused(
        &h,
        &["network", "create", "-o", "com.docker.network.bridge.name=way-too-long-bridge-name", "long"],
        "not a valid interface name",
    );
    refused(&h, &["network", "rm", "nosuch"], "not found");
    refused(&h, &["network", "rm", "bridge"], "pre-defined");
    refused(&h, &["network", "inspect", "nosuch"], "not found");
    // Removing a network that still has endpoints.
    h.dp_ok(&["run", "-d", "--name", "user", "--network", "taken", "sleep", "300"]);
    refused(&h, &["network", "rm", "taken"], "active endpoints");
}

#[test]
fn bad_sandboxes_are_refused_and_leave_nothing() {
    let (h, _ext) = Host::with_external("bads");
    h.dp_ok(&["network", "create", "--subnet", "10.64.0.0/24", "n"]);
    h.dp_ok(&["run", "-d", "--name", "first", "--network", "n", "--ip", "10.64.0.10", "sleep", "300"]);
    refused(&h, &["run", "-d", "--network", "n", "--ip", "10.65.0.5", "sleep", "1"], "not inside subnet");
    refused(
        &h,
        &["run", "-d", "--network", "n", "--ip", "10.64.0.10", "sleep", "1"],
        "Address already in use",
    );
    refused(
        &h,
        &["run", "-d", "--network", "n", "--ip", "10.64.0.1", "sleep", "1"],
        "Address already in use",
    );
    refused(&h, &["run", "-d", "--network", "n", "--ip", "banana", "sleep", "1"], "not an IPv4 address");
    refused(&h, &["run", "-d", "--ip", "172.17.0.9", "sleep", "1"], "user defined networks");
    refused(&h, &["run", "-d", "--name", "first", "sleep", "1"], "already in use");
    refused(&h, &["run", "-d", "--name", "-bad", "sleep", "1"], "invalid name");
    refused(&h, &["run", "-d", "--network", "nosuch", "sleep", "1"], "network nosuch not found");
    refused(&h, &["run", "-d", "-p", "70000:80", "sleep", "1"], "out of range");
    refused(&h, &["run", "-d", "-p", "80:", "sleep", "1"], "container port is missing");
    refused(&h, &["run", "-d", "-p", "abc", "sleep", "1"], "not a port number");
    refused(&h, &["run", "-d", "--expose", "80/icmp", "sleep", "1"], "unknown protocol");
    refused(&h, &["run", "-d", "--network-alias", "x", "sleep", "1"], "user defined networks");
    refused(&h, &["run", "-d", "--name", "nocmd", "/no/such/program"], "executable file not found");
    refused(&h, &["run", "-d"], "requires a COMMAND");
    refused(&h, &["rm", "nosuch"], "No such container");
    refused(&h, &["inspect", "nosuch"], "No such container");
    refused(&h, &["network", "connect", "n", "nosuch"], "No such container");
    refused(&h, &["network", "connect", "nosuch", "first"], "not found");
    refused(&h, &["network", "connect", "host", "first"], "host network");
    refused(&h, &["network", "connect", "none", "first"], "host network");
    refused(&h, &["network", "connect", "--ip", "10.64.0.10", "bridge", "first"], "not inside subnet");
    refused(&h, &["exec", "nosuch", "true"], "No such container");
    // An adopted namespace that already has the interface name the endpoint needs.
    let foreign = dataplane_tests::Netns::new("f");
    dataplane_tests::sh_ok(&[
        "ip",
        "-n",
        &foreign.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "p0",
    ]);
    refused(
        &h,
        &["create", "--name", "adopt", "--network", "n", "--netns", &foreign.path()],
        &format!("the network namespace {} already has an interface named eth0", foreign.path()),
    );
    let long = "a".repeat(129);
    refused(&h, &["run", "-d", "--name", &long, "sleep", "1"], "129 characters, at most 128");
    refused(&h, &["network", "create", &long], "129 characters, at most 128");
    refused(&h, &["run", "-d", "-e", "=nokey", "sleep", "1"], "KEY=VALUE");
    refused(&h, &["run", "-d", "--user", "nosuchuser", "sleep", "1"], "no user \"nosuchuser\"");
    refused(&h, &["run", "-d", "--user", "nobody:nosuchgroup", "sleep", "1"], "no group");
    refused(&h, &["run", "-d", ""], "the program name is empty");
    // What the CLI cannot send, the API refuses at create too (not at start, with a 500).
    for (body, expect) in [
        (r#"{"Cmd":[""]}"#, "the program name is empty"),
        (r#"{"Cmd":["sleep","1\u0000"]}"#, "cannot contain NUL"),
        (r#"{"Cmd":["sleep","1"],"Env":["A\u0000=b"]}"#, "cannot contain NUL"),
    ] {
        let before = snapshot(&h);
        let o = dataplane_tests::sh(&[
            "curl",
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            &h.socket.display().to_string(),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "http://d/dataplane/sandboxes/create",
        ]);
        let out = dataplane_tests::text(&o);
        assert!(out.contains(expect) && out.trim_end().ends_with("400"), "{body}: {out}");
        assert_eq!(before, snapshot(&h), "{body} left something behind");
    }
}
