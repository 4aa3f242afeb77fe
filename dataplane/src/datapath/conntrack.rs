//! Connection tracking (DP_CT, and DP_CT6 for IPv6): idle timeouts per protocol and TCP state,
//! garbage collection of expired flows (both directions together) on a
//! thread of its own, and the rows `dataplane ct list` shows.
//!
//! The table is used through a shared fd with no lock (the kernel map is
//! the synchronisation) and walked in batches (one system call per few
//! thousand entries), so neither a GC pass over half a million flows nor
//! a `ct list` holds up a request.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{HashMap, IterableMap, MapData};

use dataplane_common::{
    CT_FLAG_SEEN, CT_STATE_CLOSE, CT_STATE_ESTABLISHED, CT_STATE_FIN, CT_STATE_SYN, CtEntry, CtEntry6, CtKey,
    CtKey6, MAP_CT, MAP_CT6, MAX_CT, MAX_CT6, PROTO_TCP, PROTO_UDP, ct_rewrites_destination,
};

use super::{lock, sys, take};
use crate::error::{Error, Result};

/// Idle timeouts (documented in the README).
pub const TCP_SYN_TIMEOUT: Duration = Duration::from_secs(120);
pub const TCP_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
pub const TCP_FIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const TCP_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
pub const UDP_TIMEOUT: Duration = Duration::from_secs(60);
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(30);
/// A flow that has not seen traffic in both directions (Linux: 30 s for
/// an unanswered SYN, 30 s for unreplied UDP), whatever its TCP state.
pub const UNREPLIED_TIMEOUT: Duration = Duration::from_secs(30);

/// Idle timeouts in force (the daemon's `--ct-*-timeout` flags set two of them).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub tcp_established: Duration,
    pub udp: Duration,
    /// Flows without traffic in both directions yet.
    pub unreplied: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { tcp_established: TCP_ESTABLISHED_TIMEOUT, udp: UDP_TIMEOUT, unreplied: UNREPLIED_TIMEOUT }
    }
}

impl Timeouts {
    /// How long a flow in `state` may stay idle.
    pub fn of(&self, proto: u8, state: u16) -> Duration {
        match (proto, state) {
            (PROTO_TCP, CT_STATE_ESTABLISHED) => self.tcp_established,
            (PROTO_TCP, CT_STATE_FIN) => TCP_FIN_TIMEOUT,
            (PROTO_TCP, CT_STATE_CLOSE) => TCP_CLOSE_TIMEOUT,
            (PROTO_TCP, _) => TCP_SYN_TIMEOUT,
            (PROTO_UDP, _) => self.udp,
            _ => ICMP_TIMEOUT,
        }
    }
}

/// A conntrack key of either family ([`CtKey`], [`CtKey6`]) with its
/// entry type: what the bookkeeping here reads of them.
pub trait CtTuple: Copy + Eq + std::hash::Hash + aya::Pod {
    type Addr: Copy + PartialEq;
    type Entry: CtRecord<Addr = Self::Addr>;
    fn proto(&self) -> u8;
    /// (source, destination), each (address, port in network byte order).
    fn ends(&self) -> ((Self::Addr, u16), (Self::Addr, u16));
    fn between(proto: u8, from: (Self::Addr, u16), to: (Self::Addr, u16)) -> Self;
    fn ip(a: Self::Addr) -> IpAddr;
}

/// A conntrack entry of either family.
pub trait CtRecord: Copy + aya::Pod {
    type Addr: Copy + PartialEq;
    fn dir(&self) -> u32;
    /// The NAT target (address, port in network byte order).
    fn target(&self) -> (Self::Addr, u16);
    fn flags(&self) -> u16;
    fn state(&self) -> u16;
    fn last_seen(&self) -> u64;
}

macro_rules! ct_family {
    ($key:ty, $entry:ty, $addr:ty) => {
        impl CtTuple for $key {
            type Addr = $addr;
            type Entry = $entry;
            fn proto(&self) -> u8 {
                self.proto
            }
            fn ends(&self) -> (($addr, u16), ($addr, u16)) {
                ((self.saddr, self.sport), (self.daddr, self.dport))
            }
            fn between(proto: u8, from: ($addr, u16), to: ($addr, u16)) -> Self {
                <$key>::between(proto, from, to)
            }
            fn ip(a: $addr) -> IpAddr {
                IpAddr::from(a)
            }
        }
        impl CtRecord for $entry {
            type Addr = $addr;
            fn dir(&self) -> u32 {
                self.dir
            }
            fn target(&self) -> ($addr, u16) {
                (self.addr, self.port)
            }
            fn flags(&self) -> u16 {
                self.flags
            }
            fn state(&self) -> u16 {
                self.state
            }
            fn last_seen(&self) -> u64 {
                self.last_seen
            }
        }
    };
}
ct_family!(CtKey, CtEntry, [u8; 4]);
ct_family!(CtKey6, CtEntry6, [u8; 16]);

/// The key of the other direction of the flow `(k, e)` belongs to.
pub fn partner<K: CtTuple>(k: &K, e: &K::Entry) -> K {
    let ((saddr, sport), (daddr, dport)) = k.ends();
    if ct_rewrites_destination(e.dir()) {
        // Packets k.saddr → e (after DNAT) come back as e → k.saddr.
        K::between(k.proto(), e.target(), (saddr, sport))
    } else {
        // Packets leave as e → k.daddr; they come back as k.daddr → e.
        K::between(k.proto(), (daddr, dport), e.target())
    }
}

/// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns().
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Whether a flow has seen traffic in both directions (Linux's "assured"):
/// both entries carry [`CT_FLAG_SEEN`].
pub fn replied<E: CtRecord>(e: &E, p: Option<&E>) -> bool {
    e.flags() & CT_FLAG_SEEN != 0 && p.is_some_and(|p| p.flags() & CT_FLAG_SEEN != 0)
}

/// Whether the direction `(k, e)` of a flow, whose other direction is
/// `p` (if still there), has been idle past its timeout. Until the flow
/// has been answered, the short unreplied timeout holds whatever the TCP
/// state says (a spoofed ACK cannot make a flow ESTABLISHED for a day).
pub fn idle<K: CtTuple>(k: &K, e: &K::Entry, p: Option<&K::Entry>, now: u64, t: &Timeouts) -> bool {
    let last = p.map_or(e.last_seen(), |p| p.last_seen().max(e.last_seen()));
    let state = p.map_or(e.state(), |p| p.state().max(e.state()));
    let timeout =
        if replied(e, p) { t.of(k.proto(), state) } else { t.unreplied.min(t.of(k.proto(), state)) };
    now.saturating_sub(last) > timeout.as_nanos() as u64
}

/// Keys of flows idle past their timeout, both directions of each.
pub fn expired<K: CtTuple>(entries: &[(K, K::Entry)], now: u64, t: &Timeouts) -> Vec<K> {
    // Half a million entries: a fast non-cryptographic hash. Tuples come
    // from traffic, so crafted ones could collide: that would slow only the
    // GC (an idle-class thread), never a request.
    let index: rustc_hash::FxHashMap<K, &K::Entry> = entries.iter().map(|(k, e)| (*k, e)).collect();
    entries
        .iter()
        .filter(|(k, e)| idle(k, e, index.get(&partner(k, e)).copied(), now, t))
        .map(|(k, _)| *k)
        .collect()
}

/// One direction of a tracked flow.
#[derive(Clone, Copy, Debug)]
pub struct FlowDirection<K: CtTuple = CtKey> {
    pub key: K,
    pub entry: K::Entry,
    /// The other direction's entry, if it is still there.
    pub partner: Option<K::Entry>,
}

/// Tracked flows of both families.
#[derive(Clone, Debug, Default)]
pub struct Flows {
    pub v4: Vec<FlowDirection<CtKey>>,
    pub v6: Vec<FlowDirection<CtKey6>>,
}

/// What one garbage-collection pass did.
#[derive(Clone, Copy, Debug, Default)]
pub struct GcPass {
    /// Entries in the table when the pass walked it.
    pub entries: u64,
    /// Entries the pass removed.
    pub removed: u64,
    /// CPU time the pass used.
    pub cpu: Duration,
    /// Wall time the pass took.
    pub took: Duration,
}

/// Conntrack pressure, for `dataplane stats`.
#[derive(Clone, Copy, Debug)]
pub struct Pressure {
    /// Entries at the last GC pass (at most one GC interval old).
    pub entries: u64,
    pub capacity: u64,
    /// Entries removed by GC since the daemon started.
    pub expired: u64,
    /// The last GC pass.
    pub last_gc: GcPass,
}

/// The IPv4 table (DP_CT) and the IPv6 one (DP_CT6), collected together.
pub struct Conntrack {
    map: HashMap<MapData, CtKey, CtEntry>,
    map6: HashMap<MapData, CtKey6, CtEntry6>,
    timeouts: Timeouts,
    expired: AtomicU64,
    last_gc: Mutex<GcPass>,
}

fn ct_err(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::BpfSys { what: format!("{what} ({MAP_CT}, {MAP_CT6})"), source }
}

/// Every entry of the table at `fd` (a batched walk).
fn walk<K: CtTuple>(fd: BorrowedFd<'_>) -> Result<Vec<(K, K::Entry)>> {
    sys::map_entries(fd).map_err(ct_err("walk conntrack"))
}

/// Removes the entries of the table at `fd` that `doomed` picks.
fn remove_where<K: CtTuple>(fd: BorrowedFd<'_>, doomed: impl Fn(&K, &K::Entry) -> bool) -> Result<usize> {
    let keys: Vec<K> = walk::<K>(fd)?.into_iter().filter(|(k, e)| doomed(k, e)).map(|(k, _)| k).collect();
    sys::map_delete_all(fd, &keys).map_err(ct_err("flush conntrack"))
}

/// One GC pass over the table at `fd`: (entries walked, entries removed).
fn gc_table<K: CtTuple>(fd: BorrowedFd<'_>, t: &Timeouts) -> Result<(u64, u64)> {
    let entries = walk::<K>(fd)?;
    let doomed = expired(&entries, now_ns(), t);
    // The walk took a while: a client may have reused a tuple since
    // (TIME_WAIT reuse), so each entry is checked again, with its
    // partner, right before it goes; both directions go together (a
    // half-expired flow would send its next packets down the wrong path).
    let mut removed = 0u64;
    for k in &doomed {
        let Some(e) = sys::map_lookup::<K, K::Entry>(fd, k).map_err(ct_err("read conntrack"))? else {
            continue;
        };
        let pk = partner(k, &e);
        let p = sys::map_lookup::<K, K::Entry>(fd, &pk).map_err(ct_err("read conntrack"))?;
        if !idle(k, &e, p.as_ref(), now_ns(), t) {
            continue;
        }
        removed += u64::from(sys::map_delete(fd, k).map_err(ct_err("expire conntrack"))?);
        if p.is_some() {
            removed += u64::from(sys::map_delete(fd, &pk).map_err(ct_err("expire conntrack"))?);
        }
    }
    Ok((entries.len() as u64, removed))
}

/// Every direction of every flow of the table at `fd`, with its partner.
fn flows_of<K: CtTuple>(fd: BorrowedFd<'_>) -> Result<Vec<FlowDirection<K>>> {
    let entries = walk::<K>(fd)?;
    let index: rustc_hash::FxHashMap<K, &K::Entry> = entries.iter().map(|(k, e)| (*k, e)).collect();
    Ok(entries
        .iter()
        .map(|(k, e)| FlowDirection { key: *k, entry: *e, partner: index.get(&partner(k, e)).map(|p| **p) })
        .collect())
}

impl Conntrack {
    pub(super) fn take(ebpf: &mut Ebpf, timeouts: Timeouts) -> Result<Self> {
        Ok(Conntrack {
            map: take(ebpf, MAP_CT)?,
            map6: take(ebpf, MAP_CT6)?,
            timeouts,
            expired: AtomicU64::new(0),
            last_gc: Mutex::new(GcPass::default()),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.map.map().fd().as_fd()
    }

    fn fd6(&self) -> BorrowedFd<'_> {
        self.map6.map().fd().as_fd()
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Every IPv4 entry (a batched walk).
    pub fn entries(&self) -> Result<Vec<(CtKey, CtEntry)>> {
        walk(self.fd())
    }

    /// Removes every entry of both families; returns how many went.
    pub fn flush(&self) -> Result<usize> {
        Ok(remove_where::<CtKey>(self.fd(), |_, _| true)? + remove_where::<CtKey6>(self.fd6(), |_, _| true)?)
    }

    /// Removes the entries that involve any of `addrs` (either key end or
    /// the NAT target), walking each table once; returns how many went.
    pub fn flush_addrs(&self, addrs: &[IpAddr]) -> Result<usize> {
        fn involves<K: CtTuple>(k: &K, e: &K::Entry, addrs: &[K::Addr]) -> bool {
            let ((s, _), (d, _)) = k.ends();
            addrs.iter().any(|a| s == *a || d == *a || e.target().0 == *a)
        }
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for a in addrs {
            match a {
                // NAT46 flows name an IPv4 address v4-mapped in the IPv6 table.
                IpAddr::V4(a) => {
                    v4.push(a.octets());
                    v6.push(a.to_ipv6_mapped().octets());
                }
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        let mut n = 0;
        if !v4.is_empty() {
            n += remove_where::<CtKey>(self.fd(), |k, e| involves(k, e, &v4))?;
        }
        if !v6.is_empty() {
            n += remove_where::<CtKey6>(self.fd6(), |k, e| involves(k, e, &v6))?;
        }
        Ok(n)
    }

    /// One garbage-collection pass over both tables: removes flows idle
    /// past their timeout.
    pub fn gc_pass(&self) -> Result<GcPass> {
        let (cpu0, t0) = (sys::thread_cpu_time(), Instant::now());
        let (n4, r4) = gc_table::<CtKey>(self.fd(), &self.timeouts)?;
        let (n6, r6) = gc_table::<CtKey6>(self.fd6(), &self.timeouts)?;
        self.expired.fetch_add(r4 + r6, Ordering::Relaxed);
        let pass = GcPass {
            entries: n4 + n6,
            removed: r4 + r6,
            cpu: sys::thread_cpu_time().saturating_sub(cpu0),
            took: t0.elapsed(),
        };
        *lock(&self.last_gc) = pass;
        Ok(pass)
    }

    /// Runs a GC pass every `interval` on a thread of its own (never on an
    /// async worker, never under a lock a request needs); `on_pass` hears
    /// how long each pass took.
    pub fn spawn_gc(
        self: &Arc<Self>,
        interval: Duration,
        on_pass: impl Fn(Duration) + Send + 'static,
    ) -> std::io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new().name("dp-ct-gc".into()).spawn(move || {
            // Collection can wait: the thread runs only on CPU time nothing
            // else wants (SCHED_IDLE), so requests never queue behind it.
            if let Err(e) = sys::schedule_idle() {
                tracing::warn!(error = %e, "the conntrack GC thread keeps the normal scheduling class");
            }
            loop {
                std::thread::sleep(interval);
                let pass = me.gc_pass();
                if let Ok(p) = &pass {
                    on_pass(p.took);
                }
                match pass {
                    Ok(p) if p.removed == 0 => {}
                    Ok(p) => tracing::debug!(expired = p.removed, entries = p.entries, cpu = ?p.cpu, "conntrack gc"),
                    Err(e) => tracing::warn!(error = %e, "conntrack gc"),
                }
            }
        })?;
        Ok(())
    }

    /// Entries, capacity, expired since start, the last GC pass.
    pub fn pressure(&self) -> Pressure {
        let last_gc = *lock(&self.last_gc);
        Pressure {
            entries: last_gc.entries,
            capacity: u64::from(MAX_CT) + u64::from(MAX_CT6),
            expired: self.expired.load(Ordering::Relaxed),
            last_gc,
        }
    }

    /// Every direction of every tracked flow of both families, with the
    /// other direction's entry when it is there.
    pub fn flows(&self) -> Result<Flows> {
        Ok(Flows { v4: flows_of(self.fd())?, v6: flows_of(self.fd6())? })
    }
}

/// The state `ct list` shows for direction `e` of a flow of protocol
/// `proto` whose other direction is `p`.
pub fn state_name<E: CtRecord>(proto: u8, e: &E, p: Option<&E>) -> &'static str {
    match (proto, e.state()) {
        _ if !replied(e, p) => "UNREPLIED",
        (PROTO_TCP, CT_STATE_SYN) => "SYN",
        (PROTO_TCP, CT_STATE_ESTABLISHED) => "ESTABLISHED",
        (PROTO_TCP, CT_STATE_FIN) => "FIN",
        (PROTO_TCP, CT_STATE_CLOSE) => "CLOSE",
        _ => "-",
    }
}

#[cfg(test)]
mod tests {
    use dataplane_common::{CT_DIR_DNAT, CT_DIR_REPLY, CT_DIR_SNAT, CT_DIR_SNAT_REPLY};

    use super::*;

    fn k(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16) -> CtKey {
        CtKey { saddr: s, daddr: d, sport: sp.to_be(), dport: dp.to_be(), proto: PROTO_UDP, _pad: [0; 3] }
    }

    fn e(dir: u32, a: [u8; 4], p: u16, seen: u64) -> CtEntry {
        CtEntry {
            dir,
            addr: a,
            port: p.to_be(),
            state: 0,
            ifindex: 0,
            mac: [0; 6],
            flags: CT_FLAG_SEEN,
            last_seen: seen,
        }
    }

    #[test]
    fn partners_pair_up_both_ways() {
        let client = [192, 0, 2, 2];
        let host = [192, 0, 2, 1];
        let sb = [10, 0, 0, 2];
        // Published port: client → host:8080 DNAT to sb:80; reply sb:80 → client.
        let fwd = (k(client, 5000, host, 8080), e(CT_DIR_DNAT, sb, 80, 0));
        let rev = (k(sb, 80, client, 5000), e(CT_DIR_REPLY, host, 8080, 0));
        assert_eq!(partner(&fwd.0, &fwd.1), rev.0);
        assert_eq!(partner(&rev.0, &rev.1), fwd.0);
        // Egress: sb:4000 → remote:53 SNAT to host:4000; reply remote:53 → host:4000.
        let remote = [198, 51, 100, 1];
        let out = (k(sb, 4000, remote, 53), e(CT_DIR_SNAT, host, 4000, 0));
        let back = (k(remote, 53, host, 4000), e(CT_DIR_SNAT_REPLY, sb, 4000, 0));
        assert_eq!(partner(&out.0, &out.1), back.0);
        assert_eq!(partner(&back.0, &back.1), out.0);
    }

    #[test]
    fn ipv6_partners_pair_up_and_expire_together() {
        let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("addr").octets();
        let (client, host, sb) = (v6("2001:db8::2"), v6("2001:db8::1"), v6("fd00:1::2"));
        let k6 = |s: [u8; 16], sp: u16, d: [u8; 16], dp: u16| {
            CtKey6::between(PROTO_UDP, (s, sp.to_be()), (d, dp.to_be()))
        };
        let e6 = |dir: u32, a: [u8; 16], p: u16, seen: u64| CtEntry6 {
            dir,
            addr: a,
            port: p.to_be(),
            flags: CT_FLAG_SEEN,
            last_seen: seen,
            ..Default::default()
        };
        let s = 1_000_000_000u64;
        let fwd = (k6(client, 5000, host, 8080), e6(CT_DIR_DNAT, sb, 80, 100 * s));
        let rev = (k6(sb, 80, client, 5000), e6(CT_DIR_REPLY, host, 8080, 10 * s));
        assert_eq!(partner(&fwd.0, &fwd.1), rev.0);
        assert_eq!(partner(&rev.0, &rev.1), fwd.0);
        let t = Timeouts::default();
        assert!(expired(&[fwd, rev], 159 * s, &t).is_empty());
        assert_eq!(expired(&[fwd, rev], 161 * s, &t).len(), 2);
    }

    #[test]
    fn a_flow_expires_only_when_both_directions_are_idle() {
        let s = 1_000_000_000u64;
        let client = [192, 0, 2, 2];
        let host = [192, 0, 2, 1];
        let sb = [10, 0, 0, 2];
        let fwd = (k(client, 5000, host, 8080), e(CT_DIR_DNAT, sb, 80, 100 * s));
        let rev = (k(sb, 80, client, 5000), e(CT_DIR_REPLY, host, 8080, 10 * s));
        let entries = vec![fwd, rev];
        // 100 s: the forward direction was seen 0 s ago; nothing expires.
        let t = Timeouts::default();
        assert!(expired(&entries, 100 * s, &t).is_empty());
        // UDP times out 60 s after the last packet of either direction.
        assert_eq!(expired(&entries, 161 * s, &t).len(), 2);
        assert!(expired(&entries, 159 * s, &t).is_empty());
    }

    #[test]
    fn an_unreplied_flow_expires_soon_whatever_its_state() {
        let s = 1_000_000_000u64;
        let (client, host, sb) = ([192, 0, 2, 2], [192, 0, 2, 1], [10, 0, 0, 2]);
        let mut fwd = (k(client, 5000, host, 8080), e(CT_DIR_DNAT, sb, 80, 100 * s));
        let mut rev = (k(sb, 80, client, 5000), e(CT_DIR_REPLY, host, 8080, 100 * s));
        fwd.0.proto = PROTO_TCP;
        rev.0.proto = PROTO_TCP;
        // Spoofed SYN then ACK: ESTABLISHED on the forward side, never answered.
        fwd.1.state = CT_STATE_ESTABLISHED;
        rev.1.flags = 0;
        let t = Timeouts::default();
        assert!(!replied(&fwd.1, Some(&rev.1)));
        assert_eq!(expired(&[fwd, rev], 131 * s, &t).len(), 2, "unreplied: 30 s");
        assert_eq!(state_name(PROTO_TCP, &fwd.1, Some(&rev.1)), "UNREPLIED");
        // Answered: the day-long established timeout holds.
        rev.1.flags = CT_FLAG_SEEN;
        assert!(expired(&[fwd, rev], 131 * s, &t).is_empty());
        assert_eq!(state_name(PROTO_TCP, &fwd.1, Some(&rev.1)), "ESTABLISHED");
    }
}
