//! `dataplane monitor`: drop and policy events streamed live with reason
//! names, addresses and sandbox names.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::monitor::Monitor;
use dataplane_tests::{Host, bin};

#[test]
fn monitor_streams_policy_drops_with_sandbox_names() {
    let (h, _ext) = Host::with_external("mon");
    h.dp_ok(&[
        "network",
        "create",
        "--subnet",
        "10.86.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    h.dp_ok(&["network", "create", "--subnet", "10.87.0.0/24", "other"]);
    h.dp_ok(&["run", "-d", "--name", "q1", "--network", "quiet", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "q2", "--network", "quiet", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "o1", "--network", "other", "sleep", "300"]);
    let q2 = h.ip_of("q2", "quiet");
    let o1 = h.ip_of("o1", "other");
    let mon = Monitor::start(&h);

    let ev = mon.expect(
        |v| v["Reason"] == "POLICY_ICC",
        || {
            h.exec("q1", &["ping", "-c", "1", "-W", "1", &q2]);
        },
    );
    assert_eq!(ev["Proto"], "icmp", "{ev}");
    assert_eq!(ev["Direction"], "egress", "{ev}");
    assert_eq!(ev["SourceSandbox"], "q1", "{ev}");
    assert_eq!(ev["DestinationSandbox"], "q2", "{ev}");
    assert_eq!(ev["Destination"], q2.as_str(), "{ev}");

    // Isolation between networks, with ports.
    let ev = mon.expect(
        |v| v["Reason"] == "POLICY_NETWORK_ISOLATION",
        || {
            h.exec("q1", &["socat", "-T", "1", "-", &format!("TCP:{o1}:8080,connect-timeout=1")]);
        },
    );
    assert_eq!(ev["Proto"], "tcp", "{ev}");
    assert_eq!(ev["Destination"], format!("{o1}:8080").as_str(), "{ev}");
    assert_eq!(ev["DestinationSandbox"], "o1", "{ev}");

    // A flood of dropped packets: at most 1,000 events per second per CPU
    // reach the monitor, the rest are counted as suppressed.
    let stats = |h: &Host| -> serde_json::Value {
        serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("stats json")
    };
    let suppressed_before = stats(&h)["EventsSuppressed"].as_u64().expect("EventsSuppressed");
    let drops_before = h.drops("POLICY_NETWORK_ISOLATION");
    while mon.lines.try_recv().is_ok() {}
    let flood = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nt = time.time()\n\
         for i in range(20000):\n    s.sendto(b'x', ('{o1}', 9999))\nprint(time.time() - t)"
    );
    let o = h.exec("q1", &["python3", "-c", &flood]);
    assert!(o.status.success(), "flood: {}", dataplane_tests::text(&o));
    let secs: f64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap_or(1.0);
    std::thread::sleep(Duration::from_millis(500));
    let mut reported = 0u64;
    while let Ok(line) = mon.lines.recv_timeout(Duration::from_millis(300)) {
        if line.contains("9999") {
            reported += 1;
        }
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let budget = 1000 * cpus * (secs.ceil() as u64 + 1);
    assert!(
        reported > 0 && reported <= budget,
        "{reported} events for 20,000 drops in {secs:.2} s (budget {budget})"
    );
    let suppressed = stats(&h)["EventsSuppressed"].as_u64().expect("EventsSuppressed") - suppressed_before;
    assert!(suppressed > 0, "20,000 drops in {secs:.2} s, none suppressed ({reported} reported)");
    let dropped = h.drops("POLICY_NETWORK_ISOLATION") - drops_before;
    assert!(dropped >= reported + suppressed, "every drop is counted: {dropped} < {reported} + {suppressed}");
}

#[test]
fn a_stopping_daemon_ends_monitor_streams_cleanly() {
    let (mut h, _ext) = Host::with_external("mend");
    let mut child = Command::new(bin())
        .arg("--socket")
        .arg(&h.socket)
        .args(["monitor"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dataplane monitor");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut first = String::new();
    err.read_line(&mut first).expect("monitor banner");
    assert!(first.contains("Listening"), "{first}");
    assert!(h.signal_daemon("TERM"), "the daemon did not stop cleanly: {}", h.daemon_log_tail());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("monitor still running after the daemon stopped");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).expect("stderr");
    assert!(status.success(), "monitor failed: {rest}");
    assert!(rest.contains("monitor ended: the dataplane daemon is stopping"), "{rest}");
    assert!(!rest.contains("unexpected EOF"), "{rest}");
}
