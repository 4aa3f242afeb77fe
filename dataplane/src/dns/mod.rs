//! The embedded resolver: Docker's 127.0.0.11, without iptables. For each
//! sandbox on a user-defined network the daemon opens a UDP socket and a TCP
//! listener on 127.0.0.11 *inside the sandbox's namespace*, on ports of
//! their own, and serves them with hickory's server; the cgroup socket hooks
//! send the sandbox's 127.0.0.11:53 to those ports (`DP_DNS`, keyed by the
//! namespace's cookie), so port 53 stays free for the sandbox's own servers.
//! Every query is answered from a fresh store snapshot, so stopped or
//! removed sandboxes vanish from answers at once.
//!
//! - A for an alias of an `lb=vip` network: its virtual IP (balanced in
//!   BPF); AAAA its IPv6 VIP on a dual-stack network.
//! - A: sandbox names, hostnames, network aliases and IDs (12+ characters)
//!   of live sandboxes sharing a user-defined network with the asker; several
//!   addresses are all returned, rotated per query (round robin). TTL [`TTL`].
//! - AAAA for those names: their IPv6 addresses on dual-stack networks,
//!   rotated as A answers are; no data for a name with none.
//! - PTR for their addresses (`in-addr.arpa` and `ip6.arpa`): `NAME.NETWORK`.
//! - Anything else: forwarded to the host's resolvers ([`forward`]) unless
//!   every network of the asker is `--internal`, or the name is a single
//!   label (those are ours or nobody's): then NXDOMAIN. Answers with data
//!   are kept for their TTL and given again from memory.

mod forward;
pub mod view;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, PTR};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::domain::model::Sandbox;
use crate::domain::state::State;
use crate::error::{Error, Result};
use view::{Found, View};

/// Where sandboxes find the resolver (inside their own namespace).
pub const RESOLVER_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// TTL of our answers: short, so a client that caches still follows
/// sandboxes coming and going within seconds.
pub const TTL: u32 = dataplane_common::DNS_TTL;
/// Idle TCP connections are closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(5);

/// The state as of the last commit, which the store publishes: queries
/// are answered from it in memory, never by reading the store.
pub type StateView = tokio::sync::watch::Receiver<Arc<State>>;

struct Shared {
    state: StateView,
    /// Queries by kind and outcome, and their latency (`/metrics`).
    metrics: crate::telemetry::DnsMetrics,
    /// The host's resolv.conf: upstream resolvers and search domains.
    host_resolv_conf: PathBuf,
    /// Round-robin position per name.
    rotation: Mutex<HashMap<String, usize>>,
    /// The index of the latest store snapshot a query saw (made again on
    /// the first query after the store changes).
    index: Mutex<Option<(Arc<State>, Arc<view::Index>)>>,
    /// Whether a sandbox's process runs (by id and pid), as read from /proc, for [`LIVENESS_TTL`].
    liveness: Mutex<HashMap<(String, u32), (std::time::Instant, bool)>>,
    /// The host's resolvers as last read from `host_resolv_conf`, with the
    /// file's modification time and length then.
    upstreams: Mutex<Option<(FileStamp, Vec<SocketAddr>)>>,
    /// Upstream answers, kept for their TTLs.
    cache: forward::Cache,
}

/// What tells a changed file from the one read before.
type FileStamp = (std::time::SystemTime, u64);

/// How long a sandbox's liveness, read from /proc, is taken as true (a
/// sandbox that just died may be answered this much longer; our answers'
/// TTL is longer still).
const LIVENESS_TTL: Duration = Duration::from_secs(1);

impl Shared {
    /// Whether `sb` is up: the store's word, and for a running sandbox its
    /// process as read from /proc (at most once per [`LIVENESS_TTL`]).
    fn is_live(&self, sb: &Sandbox) -> bool {
        let (crate::domain::model::SandboxState::Running, Some(pid)) = (&sb.state, sb.pid) else {
            return sb.is_live();
        };
        let now = std::time::Instant::now();
        let key = (sb.id.clone(), pid);
        let mut cache = self.liveness.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, live)) = cache.get(&key)
            && now.duration_since(*at) < LIVENESS_TTL
        {
            return *live;
        }
        if cache.len() > 65_536 {
            cache.retain(|_, (at, _)| now.duration_since(*at) < LIVENESS_TTL);
        }
        let live = sb.is_live();
        cache.insert(key, (now, live));
        live
    }

    /// The host's resolvers: resolv.conf is read and parsed again only
    /// when its modification time or length changed (a stat per forwarded
    /// query instead of a read and a parse).
    fn host_upstreams(&self) -> Vec<SocketAddr> {
        let stamp = std::fs::metadata(&self.host_resolv_conf).and_then(|m| Ok((m.modified()?, m.len()))).ok();
        let mut cached = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some((had, servers)), Some(now)) = (&*cached, stamp)
            && *had == now
        {
            return servers.clone();
        }
        let servers = forward::upstreams(&self.host_resolv_conf);
        *cached = stamp.map(|s| (s, servers.clone()));
        servers
    }

    /// The index of snapshot `state`.
    fn index_of(&self, state: &Arc<State>) -> Arc<view::Index> {
        let mut cached = self.index.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some((s, ix)) if Arc::ptr_eq(s, state) => Arc::clone(ix),
            _ => {
                let ix = Arc::new(view::Index::new(state));
                *cached = Some((Arc::clone(state), Arc::clone(&ix)));
                ix
            }
        }
    }
}

/// The resolvers of all sandboxes, one server per sandbox namespace.
pub struct Dns {
    shared: Arc<Shared>,
    servers: Mutex<HashMap<String, (Server<Handler>, Listening)>>,
}

/// Where a sandbox's resolver listens: its namespace's cookie and the ports
/// (host byte order) at 127.0.0.11 in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listening {
    pub netns_cookie: u64,
    pub udp_port: u16,
    pub tcp_port: u16,
}

impl Dns {
    pub fn new(state: StateView, host_resolv_conf: PathBuf, metrics: crate::telemetry::DnsMetrics) -> Self {
        Dns {
            shared: Arc::new(Shared {
                state,
                metrics,
                host_resolv_conf,
                rotation: Mutex::new(HashMap::new()),
                index: Mutex::new(None),
                liveness: Mutex::new(HashMap::new()),
                upstreams: Mutex::new(None),
                cache: forward::Cache::default(),
            }),
            servers: Mutex::new(HashMap::new()),
        }
    }

    /// The resolv.conf a sandbox on a user-defined network gets: our
    /// resolver, the host's search domains (or `--dns-search`), `ndots:0`
    /// and `--dns-option`s.
    pub fn sandbox_resolv_conf(&self, search: &[String], options: &[String]) -> String {
        let host = std::fs::read_to_string(&self.shared.host_resolv_conf).unwrap_or_default();
        crate::domain::etc::resolv_conf(
            "# Generated by dataplane: the embedded resolver.\n",
            &[std::net::IpAddr::V4(RESOLVER_ADDR)],
            &host,
            search,
            &["ndots:0"],
            options,
        )
    }

    /// Serves 127.0.0.11 (UDP and TCP, ports of its own) inside the
    /// namespace at `netns` for sandbox `sandbox_id`; returns where, for the
    /// socket hooks. Serving twice returns the first. Must run inside the
    /// daemon's runtime. `earlier`: the ports served before, by namespace
    /// cookie (a restarted daemon listens where its redirect already points
    /// when it can, so the redirect stays as it is).
    pub fn attach(
        &self,
        sandbox_id: &str,
        netns: &Path,
        earlier: &Arc<HashMap<u64, (u16, u16)>>,
    ) -> Result<Listening> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, l)) = servers.get(sandbox_id) {
            return Ok(*l);
        }
        let shown = netns.display().to_string();
        let earlier = Arc::clone(earlier);
        let (udp, tcp, cookie) = crate::sys::netns::run_in(netns, move || -> std::io::Result<_> {
            // The namespace's cookie, from the UDP socket before it is bound,
            // picks the ports served before.
            let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            let (udp_port, tcp_port) =
                earlier.get(&crate::sys::netns::socket_cookie(&udp)?).copied().unwrap_or_default();
            let udp = std::net::UdpSocket::from(freebind(udp, udp_port)?);
            udp.set_nonblocking(true)?;
            let tcp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            let tcp = freebind(tcp, tcp_port)?;
            tcp.listen(128)?;
            let tcp = std::net::TcpListener::from(tcp);
            tcp.set_nonblocking(true)?;
            let cookie = crate::sys::netns::socket_cookie(&udp)?;
            Ok((udp, tcp, cookie))
        })?
        .map_err(|e| Error::io("listen on 127.0.0.11 in", &shown, e))?;
        let listening = Listening {
            netns_cookie: cookie,
            udp_port: udp.local_addr().map_err(|e| Error::io("resolver address in", &shown, e))?.port(),
            tcp_port: tcp.local_addr().map_err(|e| Error::io("resolver address in", &shown, e))?.port(),
        };
        let udp = tokio::net::UdpSocket::from_std(udp).map_err(|e| Error::io("register", &shown, e))?;
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| Error::io("register", &shown, e))?;
        let mut server =
            Server::new(Handler { sandbox: sandbox_id.to_string(), shared: Arc::clone(&self.shared) });
        server.register_socket(udp);
        server.register_listener(tcp, TCP_IDLE, 16);
        servers.insert(sandbox_id.to_string(), (server, listening));
        tracing::debug!(sandbox = sandbox_id, ?listening, "resolver listening");
        Ok(listening)
    }

    /// Closes the sandbox's resolver sockets (its tasks are aborted);
    /// returns where it listened.
    pub fn detach(&self, sandbox_id: &str) -> Option<Listening> {
        let server = self.servers.lock().unwrap_or_else(|p| p.into_inner()).remove(sandbox_id);
        server.map(|(s, l)| {
            s.shutdown_token().cancel();
            l
        })
    }

    /// Every resolver being served: sandbox id and namespace cookie.
    pub fn served(&self) -> Vec<(String, u64)> {
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(id, (_, l))| (id.clone(), l.netns_cookie))
            .collect()
    }

    /// Namespace cookies of every resolver being served.
    pub fn cookies(&self) -> Vec<u64> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner()).values().map(|(_, l)| l.netns_cookie).collect()
    }
}

/// A socket bound to the resolver's address even if no interface holds it
/// yet (IP_FREEBIND): a runtime may bring the namespace's `lo` up after its
/// network plugin ran; the resolver answers from the moment it does. On
/// `port` if it is free (0: any).
fn freebind(s: socket2::Socket, port: u16) -> std::io::Result<socket2::Socket> {
    s.set_freebind_v4(true)?;
    if s.r#type()? == socket2::Type::STREAM {
        // The last run's connections may linger in TIME_WAIT on the port.
        s.set_reuse_address(true)?;
    }
    let bound = s.bind(&SocketAddr::from((RESOLVER_ADDR, port)).into());
    match bound {
        Err(e) if port != 0 && e.raw_os_error() == Some(nix::libc::EADDRINUSE) => {
            s.bind(&SocketAddr::from((RESOLVER_ADDR, 0)).into())?
        }
        other => other?,
    }
    Ok(s)
}

/// Serves the queries of one sandbox.
struct Handler {
    sandbox: String,
    shared: Arc<Shared>,
}

/// What to do with a query.
enum Reply {
    Records(Vec<Record>),
    NxDomain,
    /// To these resolvers (the asker's `--dns`), or the host's when none.
    Forward(Vec<SocketAddr>),
}

impl Handler {
    fn decide(&self, state: &State, index: &view::Index, name: &Name, qtype: RecordType) -> Reply {
        let live = |sb: &Sandbox| self.shared.is_live(sb);
        let view = View::new(state, index, &self.sandbox, &live);
        let text = view::normalize(&name.to_ascii());
        let forwardable = view.may_forward(&self.sandbox);
        let forward = || {
            Reply::Forward(
                view.sandbox(&self.sandbox)
                    .map(|s| s.dns.iter().map(|ip| SocketAddr::new(*ip, 53)).collect())
                    .unwrap_or_default(),
            )
        };
        if qtype == RecordType::PTR
            && let Some(ip) = view::parse_reverse(&text)
        {
            return match view.reverse(ip) {
                Found::Ptr(n) => match Name::from_ascii(format!("{n}.")) {
                    Ok(target) => {
                        Reply::Records(vec![Record::from_rdata(name.clone(), TTL, RData::PTR(PTR(target)))])
                    }
                    Err(_) => Reply::NxDomain,
                },
                _ if forwardable && !view.in_own_subnet(ip) => forward(),
                _ => Reply::NxDomain,
            };
        }
        let vip = view.vip(&text);
        let found = match vip {
            Some((vip, _)) => Found::Addrs(vec![vip]),
            None => view.lookup(&text),
        };
        let turn = |key: String| {
            let mut rot = self.shared.rotation.lock().unwrap_or_else(|p| p.into_inner());
            let c = rot.entry(key).or_insert(0);
            *c = c.wrapping_add(1);
            *c - 1
        };
        match found {
            Found::Addrs(addrs) if qtype == RecordType::A => {
                let n = turn(text);
                Reply::Records(
                    view::rotate(addrs, n)
                        .into_iter()
                        .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(ip))))
                        .collect(),
                )
            }
            Found::Addrs(_) if qtype == RecordType::AAAA => {
                let addrs = match vip {
                    Some((_, vip6)) => vip6.into_iter().collect(),
                    None => view.lookup6(&text),
                };
                let n = turn(format!("{text}/6"));
                Reply::Records(
                    view::rotate(addrs, n)
                        .into_iter()
                        .map(|ip| Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(ip))))
                        .collect(),
                )
            }
            // Ours, but no data of that type.
            Found::Addrs(_) | Found::Ptr(_) => Reply::Records(Vec::new()),
            Found::Unknown if forwardable && text.contains('.') => forward(),
            Found::Unknown => Reply::NxDomain,
        }
    }
}

fn failed(meta: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header { metadata: meta, counts: HeaderCounts::default() })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> ResponseInfo {
        let t0 = std::time::Instant::now();
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let builder = MessageResponseBuilder::from_message_request(request);
        let Ok(info) = request.request_info() else {
            meta.response_code = ResponseCode::FormErr;
            self.shared.metrics.observe("other", "formerr", false, t0.elapsed());
            return rh.send_response(builder.build_no_records(meta)).await.unwrap_or_else(|_| failed(meta));
        };
        let name: Name = info.query.name().clone().into();
        let qtype = info.query.query_type();
        let kind = match qtype {
            RecordType::A => "a",
            RecordType::AAAA => "aaaa",
            RecordType::PTR => "ptr",
            _ => "other",
        };
        let state = Arc::clone(&self.shared.state.borrow());
        let index = self.shared.index_of(&state);
        let reply = self.decide(&state, &index, &name, qtype);
        let (mut outcome, mut forwarded) = match &reply {
            Reply::Records(r) if r.is_empty() => ("nodata", false),
            Reply::Records(_) => ("answered", false),
            Reply::NxDomain => ("nxdomain", false),
            Reply::Forward(_) => ("forwarded", true),
        };
        let sent = match reply {
            Reply::Records(records) => {
                meta.authoritative = true;
                rh.send_response(builder.build(meta, records.iter(), [], [], [])).await
            }
            Reply::NxDomain => {
                meta.authoritative = true;
                meta.response_code = ResponseCode::NXDomain;
                rh.send_response(builder.build_no_records(meta)).await
            }
            Reply::Forward(own) => {
                let upstreams = if own.is_empty() { self.shared.host_upstreams() } else { own };
                let key = forward::Key {
                    name: info.query.name().to_string(),
                    qtype: u16::from(qtype),
                    qclass: u16::from(info.query.query_class()),
                    dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
                    checking_disabled: request.metadata.checking_disabled,
                    upstreams,
                };
                let kept = self.shared.cache.get(&key, std::time::Instant::now());
                if kept.is_some() {
                    // Answered from memory: counted with the local answers' latency.
                    (outcome, forwarded) = ("cached", false);
                }
                let asked = match kept {
                    Some(m) => Some(m),
                    None => forward::forward(request.as_slice(), request.protocol(), &key.upstreams)
                        .await
                        .inspect(|m| {
                            let kept = self.shared.cache.put(key.clone(), m, std::time::Instant::now());
                            self.shared.metrics.cached_answers(kept);
                        }),
                };
                match asked {
                    Some(m) => {
                        let mut up = m.metadata;
                        up.id = meta.id;
                        rh.send_response(builder.build(
                            up,
                            m.answers.iter(),
                            m.authorities.iter(),
                            [],
                            m.additionals.iter(),
                        ))
                        .await
                    }
                    None => {
                        outcome = "upstream_failed";
                        meta.response_code = ResponseCode::ServFail;
                        rh.send_response(builder.build_no_records(meta)).await
                    }
                }
            }
        };
        self.shared.metrics.observe(kind, outcome, forwarded, t0.elapsed());
        sent.unwrap_or_else(|e| {
            tracing::debug!(sandbox = %self.sandbox, error = %e, "cannot send DNS answer");
            failed(meta)
        })
    }
}
