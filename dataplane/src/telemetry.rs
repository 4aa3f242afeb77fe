//! Prometheus metrics: `GET /metrics` on the API socket and, with
//! `daemon --metrics-addr`, on a TCP address, in the OpenMetrics text
//! format (the `prometheus-client` crate does the encoding).
//!
//! Two kinds of series:
//! - updated as things happen, by their owners: DNS queries (by kind and
//!   outcome, with their latency), API requests (by route and status, with
//!   their duration), conntrack GC passes (their duration);
//! - read at each scrape ([`Scrape`], gathered by the engine): the
//!   datapath's verdict counters by reason and direction, conntrack fill,
//!   NAT port exhaustion, published ports, new flows per VIP and backend,
//!   networks and sandboxes, monitor events suppressed.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `dataplane_packets_total`, `dataplane_bytes_total` | counter | `reason`, `direction` (from the sandbox's point of view), `verdict` (`drop`/`pass`) |
//! | `dataplane_conntrack_entries`, `dataplane_conntrack_capacity` | gauge | |
//! | `dataplane_conntrack_expired_total`, `dataplane_conntrack_insert_failed_total` | counter | |
//! | `dataplane_nat_port_exhausted_total` | counter | |
//! | `dataplane_published_ports` | gauge | `family`, `proto` |
//! | `dataplane_lb_new_flows_total` | counter | `vip`, `backend` |
//! | `dataplane_networks` | gauge | `driver` |
//! | `dataplane_sandboxes` | gauge | `state` (`created`, `running`, `exited`) |
//! | `dataplane_monitor_events_suppressed_total` | counter | |
//! | `dataplane_dns_queries_total` | counter | `kind` (`a`, `aaaa`, `ptr`, `other`), `outcome` (`cached`: a forwarded name answered from the cache; queries the daemon's resolver handled; A answers the kernel gave count as `dataplane_packets_total{reason="DNS_ANSWERED"}`) |
//! | `dataplane_dns_query_duration_seconds` | histogram | `source` (`local`, including answers from the cache; `forwarded`) |
//! | `dataplane_dns_cached_answers` | gauge | (upstream answers kept for their TTL) |
//! | `dataplane_api_requests_total` | counter | `route`, `method`, `status` |
//! | `dataplane_api_request_duration_seconds` | histogram | `route` |
//! | `dataplane_conntrack_gc_duration_seconds` | histogram | |
//! | `dataplane_reconcile_duration_seconds` | gauge | (the start's reconcile pass) |
//! | `dataplane_reconcile_writes` | gauge | `kind` (`netlink`, `bpf`: changes that pass made; `program_links`: links moved to the start's programs) |

use std::net::Ipv4Addr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One datapath counter: a verdict (drop reason) in one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: &'static str,
    pub direction: &'static str,
    /// A drop (not a verdict that passes the packet on).
    pub drop: bool,
    pub packets: u64,
    pub bytes: u64,
}

/// Conntrack fill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtFill {
    pub entries: u64,
    pub capacity: u64,
    pub expired: u64,
}

/// What one scrape reads from the datapath and the store (plain values:
/// this module sees no other layer).
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    pub verdicts: Vec<Verdict>,
    pub conntrack: Option<CtFill>,
    /// Packets counted as conntrack insert failures, and as NAT port exhaustion.
    pub insert_failed: u64,
    pub port_exhausted: u64,
    /// (family, protocol) → published ports.
    pub published: Vec<(&'static str, &'static str, u64)>,
    /// (VIP, backend) → new flows.
    pub lb_flows: Vec<(Ipv4Addr, Ipv4Addr, u64)>,
    /// Driver → networks.
    pub networks: Vec<(String, u64)>,
    /// State → sandboxes.
    pub sandboxes: Vec<(&'static str, u64)>,
    pub suppressed: u64,
}

/// What a DNS query was and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    pub kind: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsSource {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteKind {
    pub kind: &'static str,
}

/// What the start's reconcile pass did (see `dataplane::daemon`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub took: Duration,
    /// Change requests sent over netlink (links, addresses, routes).
    pub netlink_writes: u64,
    /// BPF map entries written or removed, programs attached or detached.
    pub bpf_writes: u64,
    /// Pinned links moved to this start's programs (every start loads its own).
    pub program_links: u64,
}

/// The DNS series, updated by the resolvers.
#[derive(Clone, Debug)]
pub struct DnsMetrics {
    queries: Family<DnsLabels, Counter>,
    latency: Family<DnsSource, Histogram>,
    cached: Gauge,
}

impl DnsMetrics {
    /// One query of `kind` answered with `outcome` after `took`
    /// (`forwarded`: its answer came from an upstream resolver).
    pub fn observe(&self, kind: &'static str, outcome: &'static str, forwarded: bool, took: Duration) {
        self.queries.get_or_create(&DnsLabels { kind, outcome }).inc();
        let source = if forwarded { "forwarded" } else { "local" };
        self.latency.get_or_create(&DnsSource { source }).observe(took.as_secs_f64());
    }

    /// How many upstream answers the resolvers' cache holds now.
    pub fn cached_answers(&self, n: usize) {
        self.cached.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The API series, updated by the API server's middleware.
#[derive(Clone, Debug)]
pub struct ApiMetrics {
    requests: Family<ApiLabels, Counter>,
    latency: Family<RouteLabel, Histogram>,
}

impl ApiMetrics {
    pub fn observe(&self, route: &str, method: &str, status: u16, took: Duration) {
        let labels = ApiLabels { route: route.to_string(), method: method.to_string(), status };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&RouteLabel { route: route.to_string() }).observe(took.as_secs_f64());
    }
}

type ScrapeFn = Box<dyn Fn() -> Option<Scrape> + Send + Sync>;

/// Reads a [`Scrape`] at each scrape, through the function the engine
/// gives once it exists.
struct Scraper {
    source: Arc<OnceLock<ScrapeFn>>,
}

impl std::fmt::Debug for Scraper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scraper").field("bound", &self.source.get().is_some()).finish()
    }
}

/// The registry and the event-driven series.
pub struct Telemetry {
    registry: Registry,
    pub dns: DnsMetrics,
    pub api: ApiMetrics,
    gc: Histogram,
    reconcile_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    reconcile_writes: Family<WriteKind, Gauge>,
    source: Arc<OnceLock<ScrapeFn>>,
}

impl Telemetry {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        // 50 µs … 1.6 s; 1 ms … 8 s.
        let dns = DnsMetrics {
            queries: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.00005, 2.0, 16))),
            cached: Gauge::default(),
        };
        let api = ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 14))),
        };
        let gc = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "dataplane_dns_queries",
            "DNS queries to the embedded resolvers, by record kind and outcome",
            dns.queries.clone(),
        );
        registry.register(
            "dataplane_dns_query_duration_seconds",
            "Time to answer a DNS query, from the resolver's own data or from an upstream",
            dns.latency.clone(),
        );
        registry.register(
            "dataplane_dns_cached_answers",
            "Upstream answers the embedded resolvers keep for their TTL",
            dns.cached.clone(),
        );
        registry.register(
            "dataplane_api_requests",
            "API requests by route, method and status",
            api.requests.clone(),
        );
        registry.register(
            "dataplane_api_request_duration_seconds",
            "API request duration by route",
            api.latency.clone(),
        );
        registry.register(
            "dataplane_conntrack_gc_duration_seconds",
            "Duration of conntrack garbage collection passes",
            gc.clone(),
        );
        let reconcile_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let reconcile_writes = Family::<WriteKind, Gauge>::default();
        registry.register(
            "dataplane_reconcile_duration_seconds",
            "Duration of the reconcile pass of this start (the kernel made to match the store)",
            reconcile_seconds.clone(),
        );
        registry.register(
            "dataplane_reconcile_writes",
            "Changes the reconcile pass of this start made, by kind (0 on a host that was right)",
            reconcile_writes.clone(),
        );
        let source: Arc<OnceLock<ScrapeFn>> = Arc::default();
        registry.register_collector(Box::new(Scraper { source: Arc::clone(&source) }));
        Arc::new(Telemetry { registry, dns, api, gc, reconcile_seconds, reconcile_writes, source })
    }

    /// Gives the function each scrape reads the datapath and store through.
    pub fn bind(&self, scrape: impl Fn() -> Option<Scrape> + Send + Sync + 'static) {
        let _ = self.source.set(Box::new(scrape));
    }

    /// One conntrack GC pass took `took`.
    pub fn observe_gc(&self, took: Duration) {
        self.gc.observe(took.as_secs_f64());
    }

    /// The start's reconcile pass.
    pub fn observe_reconcile(&self, r: Reconciled) {
        self.reconcile_seconds.set(r.took.as_secs_f64());
        for (kind, n) in
            [("netlink", r.netlink_writes), ("bpf", r.bpf_writes), ("program_links", r.program_links)]
        {
            self.reconcile_writes
                .get_or_create(&WriteKind { kind })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Every series, in the OpenMetrics text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A counter (`counter`) or gauge family with one label set per value.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    (name, help, counter): (&str, &str, bool),
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let kind = if counter {
        prometheus_client::metrics::MetricType::Counter
    } else {
        prometheus_client::metrics::MetricType::Gauge
    };
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let e = m.encode_family(&labels)?;
        if counter {
            ConstCounter::new(v).encode(e)?;
        } else {
            ConstGauge::new(v as i64).encode(e)?;
        }
    }
    Ok(())
}

/// One unlabelled value.
fn single(
    encoder: &mut DescriptorEncoder,
    (name, help, counter): (&str, &str, bool),
    v: u64,
) -> Result<(), std::fmt::Error> {
    let no_labels: [(&str, &str); 0] = [];
    family(encoder, (name, help, counter), [(no_labels, v)])
}

impl Collector for Scraper {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.source.get().and_then(|f| f()) else { return Ok(()) };
        let e = &mut encoder;
        let verdict = |m: &Verdict| if m.drop { "drop" } else { "pass" };
        family(
            e,
            (
                "dataplane_packets",
                "Packets by datapath verdict (drop reason), direction from the sandbox's point of view.",
                true,
            ),
            s.verdicts.iter().map(|m| {
                ([("reason", m.reason), ("direction", m.direction), ("verdict", verdict(m))], m.packets)
            }),
        )?;
        family(
            e,
            ("dataplane_bytes", "Bytes by datapath verdict (drop reason) and direction.", true),
            s.verdicts.iter().map(|m| {
                ([("reason", m.reason), ("direction", m.direction), ("verdict", verdict(m))], m.bytes)
            }),
        )?;
        if let Some(ct) = s.conntrack {
            single(
                e,
                (
                    "dataplane_conntrack_entries",
                    "Conntrack entries at the last GC pass (both families).",
                    false,
                ),
                ct.entries,
            )?;
            single(
                e,
                ("dataplane_conntrack_capacity", "Conntrack capacity (both families).", false),
                ct.capacity,
            )?;
            single(
                e,
                (
                    "dataplane_conntrack_expired",
                    "Conntrack entries expired by GC since the daemon started.",
                    true,
                ),
                ct.expired,
            )?;
        }
        single(
            e,
            (
                "dataplane_conntrack_insert_failed",
                "New flows refused because conntrack could not take them.",
                true,
            ),
            s.insert_failed,
        )?;
        single(
            e,
            ("dataplane_nat_port_exhausted", "New egress flows refused for want of a free NAT port.", true),
            s.port_exhausted,
        )?;
        family(
            e,
            ("dataplane_published_ports", "Published ports in the datapath.", false),
            s.published.iter().map(|(family, proto, n)| ([("family", *family), ("proto", *proto)], *n)),
        )?;
        family(
            e,
            ("dataplane_lb_new_flows", "New flows balanced to each backend of each virtual IP.", true),
            s.lb_flows
                .iter()
                .map(|(vip, backend, n)| ([("vip", vip.to_string()), ("backend", backend.to_string())], *n)),
        )?;
        family(
            e,
            ("dataplane_networks", "Networks by driver.", false),
            s.networks.iter().map(|(driver, n)| ([("driver", driver.clone())], *n)),
        )?;
        family(
            e,
            ("dataplane_sandboxes", "Sandboxes by state.", false),
            s.sandboxes.iter().map(|(state, n)| ([("state", *state)], *n)),
        )?;
        single(
            e,
            (
                "dataplane_monitor_events_suppressed",
                "Drop events not reported to monitor clients (per-CPU rate budget).",
                true,
            ),
            s.suppressed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrape_is_encoded_as_openmetrics_series() {
        let t = Telemetry::new();
        // Not bound yet: only the event series, no fake values.
        let before = t.encode().expect("encode");
        assert!(!before.contains("dataplane_packets_total") && before.ends_with("# EOF\n"), "{before}");
        t.bind(|| {
            Some(Scrape {
                verdicts: vec![Verdict {
                    reason: "POLICY_NETWORK_ISOLATION",
                    direction: "egress",
                    drop: true,
                    packets: 3,
                    bytes: 294,
                }],
                insert_failed: 2,
                published: vec![("ipv4", "tcp", 5)],
                lb_flows: vec![("10.0.0.254".parse().expect("ip"), "10.0.0.2".parse().expect("ip"), 7)],
                sandboxes: vec![("running", 4)],
                ..Scrape::default()
            })
        });
        t.dns.observe("aaaa", "answered", false, Duration::from_micros(300));
        t.dns.cached_answers(3);
        t.api.observe("/networks/create", "POST", 201, Duration::from_millis(2));
        let text = t.encode().expect("encode");
        for line in [
            "dataplane_packets_total{reason=\"POLICY_NETWORK_ISOLATION\",direction=\"egress\",verdict=\"drop\"} 3",
            "dataplane_bytes_total{reason=\"POLICY_NETWORK_ISOLATION\",direction=\"egress\",verdict=\"drop\"} 294",
            "dataplane_conntrack_insert_failed_total 2",
            "dataplane_published_ports{family=\"ipv4\",proto=\"tcp\"} 5",
            "dataplane_lb_new_flows_total{vip=\"10.0.0.254\",backend=\"10.0.0.2\"} 7",
            "dataplane_sandboxes{state=\"running\"} 4",
            "dataplane_dns_queries_total{kind=\"aaaa\",outcome=\"answered\"} 1",
            "dataplane_dns_query_duration_seconds_count{source=\"local\"} 1",
            "dataplane_dns_cached_answers 3",
            "dataplane_api_requests_total{route=\"/networks/create\",method=\"POST\",status=\"201\"} 1",
            "# TYPE dataplane_sandboxes gauge",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in:\n{text}");
        }
    }
}
