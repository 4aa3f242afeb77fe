//! Sending queries the embedded resolver does not own to the host's
//! resolvers (the `nameserver` lines of the host's resolv.conf), from the
//! daemon's own namespace — so a loopback resolver such as systemd-resolved
//! works. The query goes out as the client sent it, over the same transport.
//!
//! Answers with data are kept in a [`Cache`] for as long as their records'
//! TTLs say (at most [`MAX_TTL`]), and given again with the TTLs counted
//! down; nothing else is kept (no negative caching).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Message, ResponseCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream may take before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest UDP answer accepted from upstream.
const MAX_UDP: usize = 4096;

/// The resolvers named by a resolv.conf (at most three, as libc reads them),
/// skipping our own 127.0.0.11.
pub fn upstreams(resolv_conf: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    parse_nameservers(&text)
}

fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| *a != IpAddr::from(super::RESOLVER_ADDR))
        .map(|a| SocketAddr::new(a, 53))
        .take(3)
        .collect()
}

/// Asks each upstream in turn; the first answer wins.
pub async fn forward(raw: &[u8], protocol: Protocol, upstreams: &[SocketAddr]) -> Option<Message> {
    for up in upstreams {
        let res = match protocol {
            Protocol::Tcp => tokio::time::timeout(UPSTREAM_TIMEOUT, over_tcp(raw, *up)).await,
            _ => tokio::time::timeout(UPSTREAM_TIMEOUT, over_udp(raw, *up)).await,
        };
        match res {
            Ok(Ok(bytes)) => match Message::from_vec(&bytes) {
                Ok(m) => return Some(m),
                Err(e) => tracing::debug!(upstream = %up, error = %e, "bad answer from upstream"),
            },
            Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
            Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
        }
    }
    None
}

async fn over_udp(raw: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(raw).await?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query (same ID) counts.
        if n >= 2 && raw.len() >= 2 && buf[..2] == raw[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn over_tcp(raw: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    let len = u16::try_from(raw.len()).map_err(|_| std::io::Error::other("query too long"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(raw).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The longest an upstream's answer is kept, whatever its TTL says.
pub const MAX_TTL: u32 = 3600;
/// How many answers the cache holds at most.
pub const CACHE_ENTRIES: usize = 10_000;

/// What makes two forwarded queries the same question to the same servers:
/// answers differ with DNSSEC OK and Checking Disabled, and with the
/// resolvers asked (a sandbox's `--dns`, or the host's).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The question's name, lowercased.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
    pub upstreams: Vec<SocketAddr>,
}

struct Kept {
    answer: Message,
    at: Instant,
    /// Seconds it is good for from `at`: the least TTL of its records.
    ttl: u32,
}

/// Upstream answers by question, each kept for its TTL; bounded to
/// [`CACHE_ENTRIES`] (a full cache drops what expired, and takes nothing
/// new until something has).
pub struct Cache {
    entries: Mutex<Entries>,
    capacity: usize,
}

struct Entries {
    kept: HashMap<Key, Kept>,
    /// When expired entries were last dropped (at most once a second).
    swept: Instant,
}

impl Default for Cache {
    fn default() -> Self {
        Cache::new(CACHE_ENTRIES)
    }
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache { entries: Mutex::new(Entries { kept: HashMap::new(), swept: Instant::now() }), capacity }
    }

    /// The answer kept for `key`, its TTLs lowered by the seconds since it
    /// came; none once the least of them has run out.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Message> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let kept = e.kept.get(key)?;
        let age = u32::try_from(now.saturating_duration_since(kept.at).as_secs()).unwrap_or(u32::MAX);
        if age >= kept.ttl {
            e.kept.remove(key);
            return None;
        }
        let mut answer = kept.answer.clone();
        drop(e);
        for r in answer.answers.iter_mut().chain(&mut answer.authorities).chain(&mut answer.additionals) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(answer)
    }

    /// Keeps `answer` to `key` when it may be: a complete NOERROR answer
    /// with records, whose least TTL is not 0. Returns how many answers are
    /// kept then (expired ones included until swept).
    pub fn put(&self, key: Key, answer: &Message, now: Instant) -> usize {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ttl) = cacheable_ttl(answer) else { return e.kept.len() };
        if e.kept.len() >= self.capacity && !e.kept.contains_key(&key) {
            if now.saturating_duration_since(e.swept) < Duration::from_secs(1) {
                return e.kept.len();
            }
            e.swept = now;
            e.kept.retain(|_, k| now.saturating_duration_since(k.at).as_secs() < u64::from(k.ttl));
            if e.kept.len() >= self.capacity {
                return e.kept.len();
            }
        }
        let mut answer = answer.clone();
        answer.edns = None;
        e.kept.insert(key, Kept { answer, at: now, ttl });
        e.kept.len()
    }

    /// How many answers are kept (expired ones included until swept).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).kept.len()
    }
}

/// How long `answer` may be kept: the least TTL of its records, at most
/// [`MAX_TTL`]; none for errors, truncated or empty answers and TTL 0.
fn cacheable_ttl(answer: &Message) -> Option<u32> {
    let m = &answer.metadata;
    if m.response_code != ResponseCode::NoError || m.truncation || answer.answers.is_empty() {
        return None;
    }
    let least =
        answer.answers.iter().chain(&answer.authorities).chain(&answer.additionals).map(|r| r.ttl).min()?;
    (least > 0).then_some(least.min(MAX_TTL))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::rr::rdata::A;
    use hickory_server::proto::rr::{Name, RData, Record};

    fn answer(ttls: &[u32]) -> Message {
        let mut m = Message::response(7, hickory_server::proto::op::OpCode::Query);
        let name = Name::from_ascii("www.example.").expect("valid name");
        for (i, ttl) in ttls.iter().enumerate() {
            let last = u8::try_from(i + 1).expect("few records");
            m.answers.push(Record::from_rdata(name.clone(), *ttl, RData::A(A::new(192, 0, 2, last))));
        }
        m
    }

    fn key(name: &str) -> Key {
        Key {
            name: name.to_string(),
            qtype: 1,
            qclass: 1,
            dnssec_ok: false,
            checking_disabled: false,
            upstreams: vec!["192.0.2.53:53".parse().expect("valid literal")],
        }
    }

    #[test]
    fn an_answer_is_kept_for_its_least_ttl_and_given_with_the_ttls_counted_down() {
        let cache = Cache::new(10);
        let t0 = Instant::now();
        cache.put(key("www.example."), &answer(&[300, 60]), t0);
        let got = cache.get(&key("www.example."), t0 + Duration::from_secs(20)).expect("kept");
        assert_eq!(got.answers.iter().map(|r| r.ttl).collect::<Vec<_>>(), vec![280, 40]);
        assert_eq!(got.answers.len(), 2);
        // Another question, or the same one to other resolvers, is not it.
        assert!(cache.get(&key("other.example."), t0).is_none());
        let elsewhere = Key {
            upstreams: vec!["198.51.100.53:53".parse().expect("valid literal")],
            ..key("www.example.")
        };
        assert!(cache.get(&elsewhere, t0).is_none());
        let dnssec = Key { dnssec_ok: true, ..key("www.example.") };
        assert!(cache.get(&dnssec, t0).is_none());
        // Gone once the shortest TTL has run out.
        assert!(cache.get(&key("www.example."), t0 + Duration::from_secs(59)).is_some());
        assert!(cache.get(&key("www.example."), t0 + Duration::from_secs(60)).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn only_complete_answers_with_data_and_a_ttl_are_kept() {
        let cache = Cache::new(10);
        let t0 = Instant::now();
        cache.put(key("zero."), &answer(&[0]), t0);
        cache.put(key("empty."), &answer(&[]), t0);
        let mut nx = answer(&[]);
        nx.metadata.response_code = ResponseCode::NXDomain;
        cache.put(key("nx."), &nx, t0);
        let mut servfail = answer(&[30]);
        servfail.metadata.response_code = ResponseCode::ServFail;
        cache.put(key("servfail."), &servfail, t0);
        let mut truncated = answer(&[30]);
        truncated.metadata.truncation = true;
        cache.put(key("tc."), &truncated, t0);
        assert_eq!(cache.len(), 0);
        // The pair: a plain answer is kept, its TTL capped at MAX_TTL.
        cache.put(key("long."), &answer(&[86_400]), t0);
        let at = t0 + Duration::from_secs(u64::from(MAX_TTL) - 1);
        assert_eq!(cache.get(&key("long."), at).map(|m| m.answers[0].ttl), Some(86_400 - MAX_TTL + 1));
        assert!(cache.get(&key("long."), t0 + Duration::from_secs(u64::from(MAX_TTL))).is_none());
    }

    #[test]
    fn a_full_cache_takes_nothing_new_until_entries_expire() {
        let cache = Cache::new(2);
        let t0 = Instant::now() + Duration::from_secs(5);
        cache.put(key("a."), &answer(&[10]), t0);
        cache.put(key("b."), &answer(&[100]), t0);
        cache.put(key("c."), &answer(&[100]), t0 + Duration::from_secs(2));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("c."), t0 + Duration::from_secs(2)).is_none());
        // Once a.'s TTL ran out, c. takes its place.
        cache.put(key("c."), &answer(&[100]), t0 + Duration::from_secs(11));
        assert!(cache.get(&key("c."), t0 + Duration::from_secs(12)).is_some());
        assert!(cache.get(&key("b."), t0 + Duration::from_secs(12)).is_some());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.11\n\
                    search corp.example lab.example\noptions edns0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let got = parse_nameservers(text);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse().expect("valid literal"),
                "[fe80::1]:53".parse().expect("valid literal"),
                "10.0.0.1:53".parse().expect("valid literal")
            ]
        );
        assert_eq!(crate::domain::etc::search_domains(text), vec!["corp.example", "lab.example"]);
    }
}
