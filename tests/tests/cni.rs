//! CNI: what a runtime (Podman, containerd, CRI-O) is given to attach its
//! containers to a dataplane network.

use dataplane_tests::{Host, Netns, PeerEcho, cni, text};

#[test]
fn cni_config_prints_a_conflist_for_networks_with_endpoints() {
    let (h, _ext) = Host::with_external("cnic");
    h.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "dpnet"]);
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "cni-config", "dpnet"])).expect("a JSON conflist");
    assert_eq!((v["cniVersion"].as_str(), v["name"].as_str()), (Some("1.1.0"), Some("dpnet")), "{v}");
    let plugin = &v["plugins"][0];
    assert_eq!(
        (plugin["type"].as_str(), plugin["network"].as_str()),
        (Some("dataplane-cni"), Some("dpnet")),
        "{v}"
    );
    assert_eq!(plugin["socket"].as_str(), Some(h.socket.display().to_string().as_str()), "{v}");
    for cap in ["portMappings", "ips", "mac", "aliases"] {
        assert_eq!(plugin["capabilities"][cap], true, "{cap}: {v}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "cni-config", "--cni-version", "1.0.0", "dpnet"]))
            .expect("json");
    assert_eq!(v["cniVersion"], "1.0.0", "{v}");
    let e = h.dp_err(&["network", "cni-config", "--cni-version", "0.2.0", "dpnet"]);
    assert!(e.contains("0.2.0"), "{e}");
    let e = h.dp_err(&["network", "cni-config", "host"]);
    assert!(e.contains("has no endpoints"), "{e}");
    let e = h.dp_err(&["network", "cni-config", "nosuch"]);
    assert!(e.contains("not found"), "{e}");
}

/// A container ID as Podman makes them (64 hex digits).
fn cid(n: u32) -> String {
    format!("{:08x}{n:04x}{}", std::process::id(), "c0ffee".repeat(26).get(..52).unwrap_or_default())
}

fn ps(h: &Host) -> Vec<serde_json::Value> {
    h.ps_rows()
}

/// Links of the host whose name a dataplane endpoint would have.
fn endpoint_links(h: &Host) -> Vec<String> {
    h.links().into_iter().filter(|l| l.starts_with("veth") || l.starts_with("dp")).collect()
}

#[test]
fn cni_version_and_malformed_calls_get_the_specs_errors_and_leave_nothing() {
    let (h, _ext) = Host::with_external("cniv");
    h.dp_ok(&["network", "create", "--subnet", "10.94.2.0/24", "dpnet"]);
    let c = Netns::new("c");
    let before = endpoint_links(&h);
    let plugin = cni::plugin_bin();
    // VERSION, with and without a configuration.
    let v = cni::run_raw(&h, &plugin, &[("CNI_COMMAND", "VERSION")], r#"{"cniVersion":"1.0.0"}"#);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.json["cniVersion"], "1.0.0", "{v:?}");
    assert_eq!(v.json["supportedVersions"], serde_json::json!(["0.4.0", "1.0.0", "1.1.0"]), "{v:?}");
    assert!(cni::run_raw(&h, &plugin, &[("CNI_COMMAND", "VERSION")], "").ok);
    let good = cni::config(&h, "1.1.0", "dpnet", serde_json::json!({}));
    let att = cni::Attachment::new(&cid(1), &c.path());
    let env = |cmd: &'static str| {
        vec![("CNI_COMMAND", cmd), ("CNI_CONTAINERID", att.container_id.as_str()), ("CNI_IFNAME", "eth0")]
    };
    // (environment, stdin, the CNI error code, what its message names)
    type Case<'a> = (Vec<(&'a str, &'a str)>, String, u64, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], good.to_string(), 4, "CNI_COMMAND is not set"),
        (vec![("CNI_COMMAND", "FOO")], good.to_string(), 4, "CNI_COMMAND=\"FOO\""),
        (env("ADD"), "{not json".into(), 6, "not JSON"),
        (env("ADD"), r#"{"name":"x","network":"dpnet"}"#.into(), 7, "cniVersion"),
        (env("ADD"), cni::config(&h, "0.2.0", "dpnet", serde_json::json!({})).to_string(), 1, "0.2.0"),
        (env("ADD"), good.to_string(), 4, "CNI_NETNS is not set"),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "-bad/id"),
                ("CNI_NETNS", &att.netns),
                ("CNI_IFNAME", "eth0"),
            ],
            good.to_string(),
            4,
            "CNI_CONTAINERID",
        ),
        (
            vec![("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", &att.container_id)],
            good.to_string(),
            4,
            "CNI_IFNAME is not set",
        ),
        (
            env("DEL"),
            serde_json::json!({"cniVersion": "1.1.0", "name": "dpnet", "type": "dataplane-cni"}).to_string(),
            7,
            "\"network\"",
        ),
        (
            vec![("CNI_COMMAND", "STATUS")],
            cni::config(&h, "1.0.0", "dpnet", serde_json::json!({})).to_string(),
            1,
            "1.1.0",
        ),
    ];
    for (env, stdin, code, says) in cases {
        let a = cni::run_raw(&h, &plugin, &env, &stdin);
        assert!(!a.ok, "{env:?} {stdin} should fail: {a:?}");
        assert_eq!(a.code(), code, "{env:?} {stdin}: {a:?}");
        assert!(a.msg().contains(says), "{env:?}: {:?} should say {says}", a.msg());
    }
    // What only the daemon can tell: an unknown network, a path that is no
    // namespace, a network without endpoints, bad capability arguments.
    let add = |att: &cni::Attachment, conf: &serde_json::Value| att.run(&h, "ADD", conf);
    let a = add(&att, &cni::config(&h, "1.1.0", "nosuch", serde_json::json!({})));
    assert_eq!((a.ok, a.code()), (false, 7), "{a:?}");
    assert!(a.msg().contains("nosuch"), "{a:?}");
    let a = add(&att, &cni::config(&h, "1.1.0", "host", serde_json::json!({})));
    assert_eq!((a.ok, a.code()), (false, 7), "{a:?}");
    assert!(a.msg().contains("has no endpoints"), "{a:?}");
    let a = add(&cni::Attachment::new(&cid(1), "/etc/hostname"), &good);
    assert_eq!((a.ok, a.code()), (false, 7), "{a:?}");
    assert!(a.msg().contains("not a network namespace"), "{a:?}");
    for (rc, says) in [
        (serde_json::json!({"ips": ["10.99.0.5"]}), "10.99.0.5"),
        (serde_json::json!({"ips": ["nonsense"]}), "not an IP address"),
        (serde_json::json!({"mac": "zz:zz"}), "not a MAC address"),
        (
            serde_json::json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "sctp"}]}),
            "SCTP",
        ),
    ] {
        let a = add(&att, &cni::config(&h, "1.1.0", "dpnet", serde_json::json!({ "runtimeConfig": rc })));
        assert!(!a.ok && a.code() != 0, "{rc}: {a:?}");
        assert!(a.msg().contains(says), "{rc}: {:?} should say {says}", a.msg());
    }
    // A port another attachment holds: refused, and its interface undone.
    let ports = serde_json::json!({"runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}});
    let holder = Netns::new("c");
    let first = cni::Attachment::new(&cid(2), &holder.path());
    let a = add(&first, &cni::config(&h, "1.1.0", "dpnet", ports.clone()));
    assert!(a.ok, "{a:?}");
    let a = add(&att, &cni::config(&h, "1.1.0", "dpnet", ports));
    assert!(!a.ok && a.msg().contains("already allocated"), "{a:?}");
    assert!(!String::from_utf8_lossy(&c.run(&["ip", "link", "show", "eth0"]).stdout).contains("eth0"));
    assert!(first.run(&h, "DEL", &good).ok);
    // Nothing of the failed ADDs is left: no record, no interface.
    assert_eq!(ps(&h), Vec::<serde_json::Value>::new());
    assert_eq!(endpoint_links(&h), before);
}

#[test]
fn cni_add_del_check_gc_and_status_behave_as_the_spec_says() {
    let (mut h, ext) = Host::with_external("cnia");
    h.dp_ok(&["network", "create", "--subnet", "10.94.1.0/24", "dpnet"]);
    let before = endpoint_links(&h);
    let (a_ns, b_ns) = (Netns::new("c"), Netns::new("c"));
    let mut a = cni::Attachment::new(&cid(10), &a_ns.path());
    a.args = "IgnoreUnknown=1;K8S_POD_NAME=web1".into();
    let conf = cni::config(
        &h,
        "1.1.0",
        "dpnet",
        serde_json::json!({"runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "aliases": {"dpnet": ["web"]},
        }}),
    );
    let added = a.run(&h, "ADD", &conf);
    assert!(added.ok, "{added:?}");
    let r = &added.json;
    assert_eq!(r["cniVersion"], "1.1.0", "{r}");
    let ifs = r["interfaces"].as_array().expect("interfaces");
    let i = r["ips"][0]["interface"].as_u64().expect("interface index") as usize;
    assert_eq!(
        (ifs[i]["name"].as_str(), ifs[i]["sandbox"].as_str()),
        (Some("eth0"), Some(a.netns.as_str())),
        "{r}"
    );
    assert!(
        ifs.iter()
            .any(|x| x.get("sandbox").is_none() && x["name"].as_str().is_some_and(|n| n.starts_with("veth"))),
        "{r}"
    );
    assert_eq!(
        (r["ips"][0]["address"].as_str(), r["ips"][0]["gateway"].as_str()),
        (Some("10.94.1.2/24"), Some("10.94.1.1")),
        "{r}"
    );
    assert_eq!(r["routes"][0], serde_json::json!({"dst": "0.0.0.0/0", "gw": "10.94.1.1"}), "{r}");
    assert_eq!(r["dns"]["nameservers"], serde_json::json!(["127.0.0.11"]), "{r}");
    let addr = text(&a_ns.run(&["ip", "-4", "addr", "show", "eth0"]));
    assert!(addr.contains("inet 10.94.1.2/"), "{addr}");
    // The same ADD again: the same result, nothing new.
    let again = a.run(&h, "ADD", &conf);
    assert_eq!(again.json, added.json, "a second ADD answers as the first");
    // ps lists it as the runtime's container.
    let listed = ps(&h);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["Names"].as_str(), listed[0]["Owner"].as_str()),
        (Some("web1"), Some("cni")),
        "{listed:?}"
    );
    assert_eq!(listed[0]["RuntimeID"].as_str(), Some(a.container_id.as_str()), "{listed:?}");
    assert!(h.dp_ok(&["ps"]).contains(&format!("(cni {})", &a.container_id[..12])));
    let inspect = h.dp_ok(&["network", "inspect", "dpnet"]);
    assert!(inspect.contains("web1") && inspect.contains("10.94.1.2"), "{inspect}");
    let e = h.dp_err(&["rm", "-f", "web1"]);
    assert!(e.contains("CNI attachment"), "{e}");
    // The published port, from outside, with the client's address kept.
    let echo = PeerEcho::start(&a_ns, "tcp", 80);
    let seen = ext.run(&["socat", "-T", "3", "-", "TCP:192.0.2.1:8080"]);
    assert!(text(&seen).contains("peer=192.0.2.2"), "{}", text(&seen));
    let flows = h.dp_ok(&["ct", "list"]);
    assert!(flows.contains("10.94.1.2"), "ct list shows the flow: {flows}");
    // A second container resolves the first by name and alias through our resolver.
    // Its lo is down at ADD, as runtimes leave it; brought up afterwards.
    assert!(b_ns.run(&["ip", "link", "set", "lo", "down"]).status.success());
    let mut b = cni::Attachment::new(&cid(11), &b_ns.path());
    b.args = "K8S_POD_NAME=web2".into();
    let conf_b = cni::config(&h, "1.0.0", "dpnet", serde_json::json!({}));
    let added_b = b.run(&h, "ADD", &conf_b);
    assert!(added_b.ok, "{added_b:?}");
    assert!(b_ns.run(&["ip", "link", "set", "lo", "up"]).status.success());
    assert_eq!(
        (added_b.json["cniVersion"].as_str(), added_b.json["ips"][0].get("version")),
        (Some("1.0.0"), None)
    );
    for name in ["web1", "web"] {
        let o = b_ns.run(&["nslookup", "-timeout=2", name, "127.0.0.11"]);
        assert!(text(&o).contains("10.94.1.2"), "{name}: {}", text(&o));
    }
    assert!(b_ns.run(&["ping", "-c", "1", "-W", "2", "10.94.1.2"]).status.success());
    // CHECK: fine as made; precise once the interface is gone.
    let check = a.run(&h, "CHECK", &cni::with_prev(&conf, &added.json));
    assert!(check.ok, "{check:?}");
    drop(echo);
    assert!(a_ns.run(&["ip", "link", "del", "eth0"]).status.success());
    let check = a.run(&h, "CHECK", &cni::with_prev(&conf, &added.json));
    assert!(!check.ok && check.msg().contains("interface eth0 is missing"), "{check:?}");
    // The runtime made the container's namespace anew without a DEL (a
    // crash): ADD there replaces the stale attachment.
    let renewed_ns = Netns::new("c");
    let renewed = cni::Attachment {
        netns: renewed_ns.path(),
        args: a.args.clone(),
        ..cni::Attachment::new(&a.container_id, "")
    };
    let added_again = renewed.run(&h, "ADD", &conf);
    assert!(added_again.ok, "{added_again:?}");
    assert_eq!(added_again.json["interfaces"][1]["sandbox"].as_str(), Some(renewed.netns.as_str()));
    assert_eq!(added_again.json["ips"], added.json["ips"], "its address is free again and taken anew");
    assert_eq!(ps(&h).iter().filter(|s| s["RuntimeID"] == a.container_id.as_str()).count(), 1);
    assert!(renewed.run(&h, "DEL", &conf).ok);
    // DEL: twice, and for an attachment never made.
    assert!(a.run(&h, "DEL", &cni::with_prev(&conf, &added.json)).ok);
    assert!(a.run(&h, "DEL", &conf).ok);
    assert!(cni::Attachment::new(&cid(99), &a_ns.path()).run(&h, "DEL", &conf).ok);
    // DEL once the namespace is gone.
    drop(b_ns);
    let del = b.run(&h, "DEL", &conf_b);
    assert!(del.ok, "{del:?}");
    assert_eq!(ps(&h), Vec::<serde_json::Value>::new());
    assert_eq!(endpoint_links(&h), before);
    // The address and MAC asked for: through CNI_ARGS, or the `ips` and
    // `mac` capabilities (which win over CNI_ARGS).
    let (c_ns, d_ns) = (Netns::new("c"), Netns::new("c"));
    let mut c = cni::Attachment::new(&cid(12), &c_ns.path());
    c.args = "IgnoreUnknown=1;IP=10.94.1.50;MAC=02:00:00:00:00:50".into();
    let mut d = cni::Attachment::new(&cid(13), &d_ns.path());
    d.args = "IP=10.94.1.61".into();
    let plain = cni::config(&h, "1.1.0", "dpnet", serde_json::json!({}));
    let asked = cni::config(
        &h,
        "1.1.0",
        "dpnet",
        serde_json::json!({"runtimeConfig": {"ips": ["10.94.1.60/24"], "mac": "02:00:00:00:00:60"}}),
    );
    for (att, ns, conf, ip, mac) in [
        (&c, &c_ns, &plain, "10.94.1.50", "02:00:00:00:00:50"),
        (&d, &d_ns, &asked, "10.94.1.60", "02:00:00:00:00:60"),
    ] {
        let a = att.run(&h, "ADD", conf);
        assert!(a.ok, "{a:?}");
        assert_eq!(a.json["ips"][0]["address"], format!("{ip}/24"), "{a:?}");
        assert_eq!(a.json["interfaces"][1]["mac"], mac, "{a:?}");
        let link = text(&ns.run(&["ip", "addr", "show", "eth0"]));
        assert!(link.contains(mac) && link.contains(&format!("inet {ip}/")), "{link}");
    }
    // An address another container has: refused, naming it.
    let e_ns = Netns::new("c");
    let mut e = cni::Attachment::new(&cid(14), &e_ns.path());
    e.args = "IP=10.94.1.50".into();
    let refused = e.run(&h, "ADD", &plain);
    assert!(!refused.ok && refused.msg().contains("10.94.1.50"), "{refused:?}");
    // GC keeps the attachments named valid, removes the rest.
    let mut gc = plain.clone();
    gc["cni.dev/valid-attachments"] = serde_json::json!([{"containerID": c.container_id, "ifname": "eth0"}]);
    let done = cni::run_raw(&h, &cni::plugin_bin(), &[("CNI_COMMAND", "GC")], &gc.to_string());
    assert!(done.ok, "{done:?}");
    let left: Vec<_> = ps(&h).iter().filter_map(|s| s["RuntimeID"].as_str().map(String::from)).collect();
    assert_eq!(left, std::slice::from_ref(&c.container_id));
    assert!(!String::from_utf8_lossy(&d_ns.run(&["ip", "link"]).stdout).contains("eth0"));
    // A second attachment of the same container (another network, eth1):
    // one sandbox, two endpoints; its DEL leaves the first.
    h.dp_ok(&["network", "create", "--subnet", "10.94.9.0/24", "second"]);
    let mut c1 = cni::Attachment::new(&c.container_id, &c_ns.path());
    c1.ifname = "eth1".into();
    let second = cni::config(&h, "1.1.0", "second", serde_json::json!({}));
    let two = c1.run(&h, "ADD", &second);
    assert!(two.ok, "{two:?}");
    assert_eq!(two.json["ips"][0]["address"], "10.94.9.2/24", "{two:?}");
    assert!(two.json["routes"].is_null(), "the default route stays on eth0: {two:?}");
    let listed = ps(&h);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let mut nets: Vec<&str> = listed[0]["Networks"].as_str().expect("networks").split(',').collect();
    nets.sort();
    assert_eq!(nets, ["dpnet", "second"], "{listed:?}");
    assert!(text(&c_ns.run(&["ip", "-4", "addr"])).contains("10.94.9.2/"));
    let again = c1.run(&h, "ADD", &cni::config(&h, "1.1.0", "dpnet", serde_json::json!({})));
    assert!(!again.ok && again.msg().contains("already has interface eth1"), "{again:?}");
    assert!(c1.run(&h, "DEL", &second).ok);
    assert_eq!(ps(&h)[0]["Networks"], "dpnet");
    assert!(text(&c_ns.run(&["ip", "-4", "addr"])).contains("10.94.1."), "eth0 stays");
    // STATUS: ready while the daemon answers, 50 once it is gone; other
    // commands ask to try again later.
    let status =
        |h: &Host| cni::run_raw(h, &cni::plugin_bin(), &[("CNI_COMMAND", "STATUS")], &plain.to_string());
    assert!(status(&h).ok, "{:?}", status(&h));
    let s = cni::run_raw(
        &h,
        &cni::plugin_bin(),
        &[("CNI_COMMAND", "STATUS")],
        &cni::config(&h, "1.1.0", "nosuch", serde_json::json!({})).to_string(),
    );
    assert_eq!((s.ok, s.code()), (false, 50), "{s:?}");
    assert!(c.run(&h, "DEL", &plain).ok);
    h.kill_daemon();
    let s = status(&h);
    assert_eq!((s.ok, s.code()), (false, 50), "{s:?}");
    assert!(s.msg().contains("cannot reach the dataplane daemon"), "{s:?}");
    let a2 = c.run(&h, "ADD", &plain);
    assert_eq!((a2.ok, a2.code()), (false, 11), "{a2:?}");
}

/// iperf3's receiver rate (bits per second) from its JSON report.
fn received_bps(out: &std::process::Output) -> f64 {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("iperf3 output is not JSON ({e}): {}", text(out)));
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or_else(|| panic!("no rate: {v}"))
}

#[test]
fn a_chained_bandwidth_plugin_limits_what_reaches_the_container() {
    let (h, ext) = Host::with_external("cnib");
    h.dp_ok(&["network", "create", "--subnet", "10.94.3.0/24", "dpnet"]);
    let (shaped_ns, free_ns) = (Netns::new("c"), Netns::new("c"));
    let ports = |p: u16| serde_json::json!({"runtimeConfig": {"portMappings": [{"hostPort": p, "containerPort": 5201, "protocol": "tcp"}]}});
    // The chain as a runtime runs it: ours, tuning with our result, then
    // bandwidth with tuning's.
    let shaped = cni::Attachment::new(&cid(20), &shaped_ns.path());
    let ours = cni::config(&h, "1.0.0", "dpnet", ports(5201));
    let added = shaped.run(&h, "ADD", &ours);
    assert!(added.ok, "{added:?}");
    let tuning = serde_json::json!({
        "cniVersion": "1.0.0", "name": "dpnet", "type": "tuning", "mtu": 1400, "prevResult": added.json,
    });
    let tuning_plugin = format!("{}/tuning", cni::DEBIAN_PLUGINS);
    let tuned = shaped.run_with(&h, &tuning_plugin, "ADD", &tuning);
    assert!(tuned.ok, "tuning took our result as prevResult: {tuned:?}");
    assert!(text(&shaped_ns.run(&["ip", "link", "show", "eth0"])).contains("mtu 1400"));
    let limit = 20_000_000u64;
    let bw = serde_json::json!({
        "cniVersion": "1.0.0", "name": "dpnet", "type": "bandwidth",
        "ingressRate": limit, "ingressBurst": limit / 10,
        "prevResult": tuned.json,
    });
    let plugin = format!("{}/bandwidth", cni::DEBIAN_PLUGINS);
    let chained = shaped.run_with(&h, &plugin, "ADD", &bw);
    assert!(chained.ok, "bandwidth took the chain's result as prevResult: {chained:?}");
    assert_eq!(chained.json["ips"], added.json["ips"], "{chained:?}");
    let free = cni::Attachment::new(&cid(21), &free_ns.path());
    assert!(free.run(&h, "ADD", &cni::config(&h, "1.0.0", "dpnet", ports(5202))).ok);
    let mut servers = Vec::new();
    for ns in [&shaped_ns, &free_ns] {
        servers.push(
            std::process::Command::new("ip")
                .args(["netns", "exec", &ns.name, "iperf3", "-s", "-p", "5201"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("iperf3 server"),
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rate =
        |port: &str| received_bps(&ext.run(&["iperf3", "-c", "192.0.2.1", "-p", port, "-t", "2", "-J"]));
    let (limited, unlimited) = (rate("5201"), rate("5202"));
    for mut s in servers {
        let _ = s.kill();
        let _ = s.wait();
    }
    eprintln!("shaped {limited} bit/s, unshaped {unlimited} bit/s");
    assert!(limited < limit as f64 * 1.3, "the shaped container receives {limited} bit/s (limit {limit})");
    assert!(unlimited > limit as f64 * 3.0, "the unshaped one is not limited: {unlimited} bit/s");
    // DEL in reverse order, each with the final result.
    let last = |c: &serde_json::Value| cni::with_prev(c, &chained.json);
    assert!(shaped.run_with(&h, &plugin, "DEL", &last(&bw)).ok);
    assert!(shaped.run_with(&h, &tuning_plugin, "DEL", &last(&tuning)).ok);
    assert!(shaped.run(&h, "DEL", &last(&ours)).ok);
}
