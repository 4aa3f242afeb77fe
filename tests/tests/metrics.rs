//! Prometheus metrics: `GET /metrics` on the API socket and on
//! `--metrics-addr`, in the OpenMetrics text format, scraped by a real
//! Prometheus (Debian's 2.42) whose own query API is asked.

use std::time::Duration;

use dataplane_tests::prometheus::Prometheus;
use dataplane_tests::{Host, text};

#[test]
fn prometheus_scrapes_drops_dns_and_api_series_from_the_daemon() {
    let (h, _ext) = Host::with_external_args("prom", &["--metrics-addr", "127.0.0.1:9464"]);
    h.dp_ok(&["network", "create", "--subnet", "10.97.0.0/24", "red"]);
    h.dp_ok(&["network", "create", "--subnet", "10.97.1.0/24", "blue"]);
    for (name, net) in [("a", "red"), ("a2", "red"), ("b", "blue")] {
        h.dp_ok(&["run", "-d", "--name", name, "--network", net, "sleep", "300"]);
    }
    h.dp_ok(&["create", "--name", "web", "--network", "red", "-p", "8080:80", "sleep", "300"]);
    // A blocked cross-network ping (and, the pair, one that gets through).
    assert!(!h.ping("a", &h.ip_of("b", "blue")), "a reached another network");
    assert!(h.ping("a", &h.ip_of("a2", "red")), "a cannot reach its own network");
    // A name the embedded resolver answers: A in the kernel, AAAA (no
    // data on an IPv4 network) by the daemon.
    let dig = text(&h.exec("a", &["dig", "+short", "+time=2", "+tries=1", "a2"]));
    assert_eq!(dig.trim(), h.ip_of("a2", "red"));
    let dig6 = text(&h.exec("a", &["dig", "+time=2", "+tries=1", "a2", "AAAA"]));
    assert!(dig6.contains("status: NOERROR"), "{dig6}");

    // On the API socket: OpenMetrics text, the drop counted by reason and direction.
    let socket = h.socket.display().to_string();
    let head = h.run(&["curl", "-s", "-i", "--unix-socket", &socket, "http://d/metrics"]);
    let head = text(&head);
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        head.contains("# TYPE dataplane_packets counter") && head.trim_end().ends_with("# EOF"),
        "{head}"
    );
    let line = head
        .lines()
        .find(|l| {
            l.starts_with("dataplane_packets_total{")
                && l.contains("reason=\"POLICY_NETWORK_ISOLATION\"")
                && l.contains("direction=\"egress\"")
        })
        .unwrap_or_default();
    assert!(line.contains("verdict=\"drop\""), "{line}");
    let n: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(n >= 1.0, "the blocked ping is counted: {line}");
    for series in [
        "dataplane_conntrack_capacity ",
        "dataplane_sandboxes{state=\"running\"} 3",
        "dataplane_sandboxes{state=\"created\"} 1",
        "dataplane_published_ports{family=\"ipv4\",proto=\"tcp\"} 1",
        "dataplane_published_ports{family=\"ipv4\",proto=\"udp\"} 0",
        "dataplane_networks{driver=\"bridge\"} 3",
        "dataplane_dns_queries_total{kind=\"aaaa\",outcome=\"nodata\"} 1",
        "dataplane_packets_total{reason=\"DNS_ANSWERED\",direction=\"egress\",verdict=\"pass\"} 1",
        "dataplane_api_requests_total{route=\"/networks/create\",method=\"POST\",status=\"201\"} 2",
        "dataplane_dns_query_duration_seconds_bucket{",
    ] {
        assert!(head.contains(series), "no {series} in:\n{head}");
    }

    // A real Prometheus scraping --metrics-addr sees the daemon up and the drop.
    let prom = Prometheus::start(&h.ns, &h.dir, &["127.0.0.1:9464"]);
    let up = prom.wait_for("up{job=\"dataplane\"}", Duration::from_secs(30), |v| v == 1.0);
    assert_eq!(up, Some(1.0), "up: {}", prom.targets());
    let drops = prom.wait_for(
        "sum(dataplane_packets_total{reason=\"POLICY_NETWORK_ISOLATION\"})",
        Duration::from_secs(10),
        |v| v > 0.0,
    );
    assert!(drops.is_some_and(|v| v >= 1.0), "drops seen by Prometheus: {drops:?}");
    // A second blocked ping: the counter Prometheus reads goes up.
    let before = drops.unwrap_or(0.0);
    assert!(!h.ping("b", &h.ip_of("a", "red")));
    let after = prom.wait_for(
        "sum(dataplane_packets_total{reason=\"POLICY_NETWORK_ISOLATION\"})",
        Duration::from_secs(10),
        |v| v > before,
    );
    assert!(after.is_some_and(|v| v > before), "{before} then {after:?}");
    let lookups = prom.query("sum(dataplane_dns_queries_total)");
    assert!(lookups.is_some_and(|v| v >= 1.0), "{lookups:?}");

    // A metrics address that cannot be bound stops the start, naming it.
    let (mut bad, _ext2) = Host::with_external_unstarted("promb");
    bad.daemon_args = vec!["--metrics-addr".into(), "192.0.2.99:9464".into()];
    let err = bad.start_expecting_failure();
    assert!(err.contains("--metrics-addr 192.0.2.99:9464"), "{err}");
}
