//! In-kernel alias load balancing: `-o lb=vip` gives each alias a virtual
//! IP (answered by the embedded DNS) whose new flows are spread by a Maglev
//! table in BPF; conntrack keeps each flow on its backend. Backends serve
//! their own name over HTTP.

use std::path::Path;
use std::time::{Duration, Instant};

use dataplane_tests::http::{CLIENT, HOLDER, SERVER, counts, start_backends, try_counts, wait_for};
use dataplane_tests::{Host, text};

fn lb_rows(h: &Host) -> serde_json::Value {
    serde_json::from_str(&h.dp_ok(&["lb", "list", "--format", "json"])).expect("lb json")
}

#[test]
fn alias_vip_spreads_connections_evenly_and_a_leaving_backend_breaks_no_other_flow() {
    let (h, _ext) = Host::with_external("lb");
    h.dp_ok(&["network", "create", "--subnet", "10.98.0.0/24", "-o", "lb=vip", "lbnet"]);
    start_backends(&h, "lbnet", "web", &["w1", "w2", "w3"]);
    h.dp_ok(&["run", "-d", "--name", "client", "--network", "lbnet", "sleep", "600"]);
    let client_py = h.dir.join("client.py");
    std::fs::write(&client_py, CLIENT).expect("client script");

    // DNS answers the alias with one virtual IP, the one `lb list` shows.
    let o = h.exec("client", &["dig", "+short", "+time=2", "web"]);
    let vip = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let rows = lb_rows(&h);
    assert_eq!(rows[0]["Vip"], vip.as_str(), "dig +short web vs lb list: {rows}");
    assert_eq!(rows[0]["Backends"].as_array().map(Vec::len), Some(3), "{rows}");
    for n in ["w1", "w2", "w3"] {
        assert_ne!(h.ip_of(n, "lbnet"), vip, "the VIP is an address of its own");
    }
    // Every backend listening before counting.
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_counts(&h, &client_py, "30").map_or(0, |c| c.len()) < 3 {
        assert!(Instant::now() < deadline, "not all three backends answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 3,000 short connections: 1,000 ± 10% each.
    let got = counts(&h, &client_py, "3000");
    eprintln!("3,000 connections through {vip}: {got:?}");
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), ["w1", "w2", "w3"], "{got:?}");
    for (n, c) in &got {
        assert!((900..=1100).contains(c), "{n} got {c} of 3000: {got:?}");
    }
    let rows = lb_rows(&h);
    for b in rows[0]["Backends"].as_array().expect("backends") {
        assert!(b["Flows"].as_u64().unwrap_or(0) >= 900, "per-backend flows counted: {b}");
    }

    // Long-lived connections, then w3 stops.
    let holder_py = h.dir.join("holder.py");
    std::fs::write(&holder_py, HOLDER).expect("holder script");
    let out = h.dir.join("held");
    let out_s = out.display().to_string();
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "lbnet",
        "python3",
        &holder_py.display().to_string(),
        &out_s,
    ]);
    let first: Vec<String> =
        serde_json::from_str(&wait_for(Path::new(&format!("{out_s}.first")), "held connections"))
            .expect("first");
    assert!(first.iter().any(|n| n != "w3"), "no held connection on w1/w2: {first:?}");
    h.dp_ok(&["stop", "w3"]);
    let rows = lb_rows(&h);
    let w3 = rows[0]["Backends"].as_array().expect("backends").iter().find(|b| b["Sandbox"] == "w3").cloned();
    assert_eq!(w3.map(|b| b["Live"].clone()), Some(serde_json::Value::Bool(false)), "{rows}");

    // New connections go to the two left, evenly enough.
    let after = counts(&h, &client_py, "300");
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), ["w1", "w2"], "{after:?}");
    assert!(after.values().all(|c| *c >= 100), "{after:?}");
    // Held connections to w1 and w2 still answer, from the same backend.
    std::fs::write(format!("{out_s}.go"), "").expect("go");
    let second: Vec<(String, String)> =
        serde_json::from_str(&wait_for(Path::new(&format!("{out_s}.second")), "second round"))
            .expect("second");
    for (before, now) in second.iter().filter(|(b, _)| b != "w3") {
        assert_eq!(before, now, "a held connection changed or broke: {second:?}");
    }

    // Host processes reach the VIP too (socket hook), ICMP to the VIP is answered.
    let o = h.run(&["curl", "-s", "--max-time", "3", &format!("http://{vip}/")]);
    let said = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(said == "w1" || said == "w2", "host → VIP: {}", text(&o));
    assert!(h.ping("client", &vip), "the VIP answers ping");

    // Disconnecting a backend takes it out of the table too.
    h.dp_ok(&["network", "disconnect", "lbnet", "w2"]);
    let left = counts(&h, &client_py, "60");
    assert_eq!(left.keys().cloned().collect::<Vec<_>>(), ["w1"], "{left:?}");

    // The last backend gone: DNS stops answering the alias, new flows are dropped (counted).
    h.dp_ok(&["stop", "w1"]);
    let o = h.exec("client", &["dig", "+short", "+time=2", "web"]);
    assert!(String::from_utf8_lossy(&o.stdout).trim().is_empty(), "{}", text(&o));
    let before = h.drops("LB_NO_BACKEND");
    let o = h.exec("client", &["curl", "-s", "--max-time", "2", &format!("http://{vip}/")]);
    assert!(!o.status.success(), "connected to a VIP without backends");
    assert!(h.drops("LB_NO_BACKEND") > before, "no-backend drops counted");
}

#[test]
fn lb_option_is_checked() {
    let (h, _ext) = Host::with_external("lbo");
    let err = h.dp_err(&["network", "create", "-o", "lb=random", "x1"]);
    assert!(err.contains("lb=random"), "{err}");
    let err = h.dp_err(&["network", "create", "-d", "macvlan", "-o", "parent=up0", "-o", "lb=vip", "x2"]);
    assert!(err.contains("bridge"), "{err}");
    assert!(!h.network_names().iter().any(|n| n.starts_with('x')));
}

#[test]
fn a_direct_connection_after_a_vip_one_from_the_same_port_works() {
    let (h, _ext) = Host::with_external("lbd");
    h.dp_ok(&["network", "create", "--subnet", "10.99.0.0/24", "-o", "lb=vip", "one"]);
    let server_py = h.dir.join("server.py");
    std::fs::write(&server_py, SERVER).expect("server script");
    let server = server_py.display().to_string();
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "w1",
        "--network",
        "one",
        "--network-alias",
        "web",
        "python3",
        &server,
        "w1",
    ]);
    h.dp_ok(&["run", "-d", "--name", "client", "--network", "one", "sleep", "600"]);
    let vip = lb_rows(&h)[0]["Vip"].as_str().expect("vip").to_string();
    let w1 = h.ip_of("w1", "one");
    // The same client port, first through the VIP, then straight to the backend.
    let get = |addr: &str| {
        let cmd = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | socat -t 3 -T 3 - TCP:{addr}:80,sourceport=41000,reuseaddr,connect-timeout=3"
        );
        let o = h.exec("client", &["sh", "-c", &cmd]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !get(&vip).ends_with("w1") {
        assert!(Instant::now() < deadline, "w1 never answered through the VIP");
        std::thread::sleep(Duration::from_millis(200));
    }
    let direct = get(&w1);
    assert!(direct.ends_with("w1"), "direct after VIP from port 41000: {direct:?}");
    assert!(get(&vip).ends_with("w1"), "and through the VIP again");
}
