//! Connection tracking shared by DNAT (published ports) and SNAT (egress):
//! one LRU entry per direction, inserted both or neither.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use aya_ebpf::macros::map;
use aya_ebpf::maps::PerCpuArray;
use dataplane_common::{
    Backend, Backend6, CT_DIR_DNAT, CT_DIR_REPLY, CT_DIR_ROUTED, CT_DIR_SNAT, CT_DIR_SNAT_REPLY, CT_FLAG_HAIRPIN_SELF, CT_FLAG_NAT46, CT_FLAG_SEEN, CT_STATE_CLOSE,
    CT_STATE_ESTABLISHED, CT_STATE_FIN, CT_STATE_NONE, CT_STATE_SYN, CtEntry, CtEntry6, CtKey, CtKey6, PROTO_TCP,
};

use crate::{
    maps::{CT, CT6, NAT46},
    parse::{Flow, Flow6},
};

/// Map update flag: fail if the key exists (claims a SNAT port atomically).
const BPF_NOEXIST: u64 = 1;
/// How many random SNAT ports to try when the original one is taken.
const SNAT_TRIES: u32 = 16;

/// The key of the packet's own direction.
#[inline(always)]
pub fn key(flow: &Flow) -> CtKey {
    CtKey::between(flow.proto, (flow.saddr, flow.sport), (flow.daddr, flow.dport))
}

/// The key of replies to `flow` sent from `from` to `to`.
#[inline(always)]
fn reply(flow: &Flow, from: ([u8; 4], u16), to: ([u8; 4], u16)) -> CtKey {
    CtKey::between(flow.proto, from, to)
}

/// The key of the other direction of an untranslated flow.
#[inline(always)]
fn reversed(flow: &Flow) -> CtKey {
    reply(flow, (flow.daddr, flow.dport), (flow.saddr, flow.sport))
}

/// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const URG: u8 = 0x20;

/// Whether a TCP packet's flags are a combination an endpoint sends (as
/// Linux's conntrack judges them; PSH, ECE and CWR do not matter): no
/// flags at all, SYN with FIN or RST, FIN without ACK and the like are
/// garbage, dropped as INVALID_PACKET.
#[inline(always)]
pub fn valid_tcp_flags(flow: &Flow) -> bool {
    valid_flags(flow.proto, flow.tcp_flags)
}

/// [`valid_tcp_flags`] of a packet of protocol `proto` with TCP flags `flags`.
#[inline(always)]
pub fn valid_flags(proto: u8, tcp_flags: u8) -> bool {
    if proto != PROTO_TCP {
        return true;
    }
    const SYN_URG: u8 = SYN | URG;
    const SYN_ACK: u8 = SYN | ACK;
    const RST_ACK: u8 = RST | ACK;
    const FIN_ACK: u8 = FIN | ACK;
    const FIN_ACK_URG: u8 = FIN | ACK | URG;
    const ACK_URG: u8 = ACK | URG;
    matches!(
        tcp_flags & (FIN | SYN | RST | ACK | URG),
        SYN | SYN_URG | SYN_ACK | RST | RST_ACK | FIN_ACK | FIN_ACK_URG | ACK | ACK_URG
    )
}

/// The TCP state after a packet with `flags` (SYN → ESTABLISHED on the
/// first ACK without SYN; FIN and RST move forward, never back, except
/// that a SYN on a closing tuple starts it over: clients reuse ports
/// (TIME_WAIT reuse), and the new connection must not inherit the old
/// one's short closing timeout).
#[inline(always)]
fn next_state(state: u16, flags: u8) -> u16 {
    if flags & RST != 0 {
        CT_STATE_CLOSE
    } else if flags & SYN != 0 && state >= CT_STATE_FIN {
        CT_STATE_SYN
    } else if flags & FIN != 0 {
        if state < CT_STATE_FIN { CT_STATE_FIN } else { state }
    } else if state <= CT_STATE_SYN && flags & ACK != 0 && flags & SYN == 0 {
        CT_STATE_ESTABLISHED
    } else if state == CT_STATE_NONE {
        CT_STATE_SYN
    } else {
        state
    }
}

/// Whether `flow` is a TCP client opening a connection (SYN without ACK).
/// Such a packet is a new flow even when its tuple is still tracked: the
/// client reused a port, and the old entries (or what is left of them
/// after a half-done expiry) must not steer it.
#[inline(always)]
pub fn opens(flow: &Flow) -> bool {
    flow.proto == PROTO_TCP && flow.tcp_flags & (SYN | ACK) == SYN
}

/// Whether this packet's tuple is tracked (nothing is updated).
#[inline(always)]
pub fn tracked(flow: &Flow) -> bool {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { CT.get(key(flow)) }.is_some()
}

/// An entry of either family, as a packet going through it updates it.
trait Touch {
    /// Seen now; for TCP, moved along the state machine by `tcp_flags`.
    fn touch(&mut self, proto: u8, tcp_flags: u8);
}

macro_rules! touch {
    ($entry:ty) => {
        impl Touch for $entry {
            #[inline(always)]
            fn touch(&mut self, proto: u8, tcp_flags: u8) {
                self.last_seen = unsafe { bpf_ktime_get_ns() };
                self.flags |= CT_FLAG_SEEN;
                if proto == PROTO_TCP {
                    self.state = next_state(self.state, tcp_flags);
                }
            }
        }
    };
}
touch!(CtEntry);
touch!(CtEntry6);

/// The entry for this packet (any direction), refreshed and, for TCP,
/// moved along the state machine.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<CtEntry> {
    let e = CT.get_ptr_mut(key(flow))?;
    // SAFETY: pointer into the map value, valid for this program run.
    unsafe { (*e).touch(flow.proto, flow.tcp_flags) };
    // SAFETY: as above.
    Some(unsafe { *e })
}

/// A connection opening directly to `flow.daddr` (not translated): a reply
/// entry left on the reversed tuple by an earlier translated flow (a VIP or
/// a hairpin to that backend, from the same client port) would rewrite this
/// connection's replies, so it goes.
#[inline(always)]
pub fn forget_stale_reply(flow: &Flow) {
    let reverse = reversed(flow);
    // SAFETY: map lookups return values valid for this program run.
    if unsafe { CT.get(reverse) }.is_some_and(|e| e.dir == CT_DIR_REPLY) {
        let _ = CT.remove(reverse);
    }
}

/// Initial state of a new entry.
#[inline(always)]
fn initial_state(flow: &Flow) -> u16 {
    if flow.proto == PROTO_TCP { next_state(CT_STATE_NONE, flow.tcp_flags) } else { CT_STATE_NONE }
}

/// The DNAT entry leading to a published port's backend.
#[inline(always)]
pub fn dnat_entry(b: &Backend) -> CtEntry {
    CtEntry {
        dir: CT_DIR_DNAT,
        addr: b.addr,
        port: b.port,
        state: 0,
        ifindex: b.ifindex,
        mac: b.mac,
        flags: 0,
        last_seen: 0,
    }
}

#[inline(always)]
fn entry(dir: u32, addr: [u8; 4], port: u16, ifindex: u32, mac: [u8; 6], now: u64, state: u16) -> CtEntry {
    CtEntry { dir, addr, port, state, ifindex, mac, flags: 0, last_seen: now }
}

/// Second half of tracking a flow: the entry of the direction that opened
/// it (marked SEEN: its first packet is going through), after the reply
/// entry at `reverse`, which goes again if this one cannot be inserted.
#[inline(always)]
fn insert_forward(flow: &Flow, mut fwd: CtEntry, reverse: CtKey) -> Result<CtEntry, i32> {
    fwd.flags |= CT_FLAG_SEEN;
    if let Err(e) = CT.insert(key(flow), fwd, 0) {
        let _ = CT.remove(reverse);
        return Err(e);
    }
    Ok(fwd)
}

/// Tracks a hairpin flow: a sandbox (behind veth `client_ifindex`, MAC
/// `client_mac`) reaching a published port of a sandbox on this host.
/// When the backend is the client itself, its source is rewritten to
/// `gateway` (so the sandbox does not receive a packet from itself) and
/// the reply is keyed on that address. Both entries or neither.
#[inline(always)]
pub fn track_hairpin(
    flow: &Flow,
    dnat: &CtEntry,
    client_ifindex: u32,
    client_mac: [u8; 6],
    gateway: Option<[u8; 4]>,
) -> Result<CtEntry, i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let state = initial_state(flow);
    let (reply_to, flags) = match gateway {
        Some(gw) => (gw, CT_FLAG_HAIRPIN_SELF),
        None => (flow.saddr, 0),
    };
    let reverse = reply(flow, (dnat.addr, dnat.port), (reply_to, flow.sport));
    let mut back = entry(CT_DIR_REPLY, flow.daddr, flow.dport, client_ifindex, client_mac, now, state);
    back.flags = flags;
    CT.insert(reverse, back, 0)?;
    let mut fwd = entry(CT_DIR_DNAT, dnat.addr, dnat.port, dnat.ifindex, dnat.mac, now, state);
    fwd.flags = flags;
    insert_forward(flow, fwd, reverse)
}

/// Tracks a new DNAT flow: `flow` arrives for `dnat`; replies come back from
/// the backend and leave through `reply_ifindex` with the original
/// destination restored as their source. Both entries or neither.
#[inline(always)]
pub fn track_dnat(flow: &Flow, dnat: &CtEntry, reply_ifindex: u32) -> Result<(), i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let reverse = reply(flow, (dnat.addr, dnat.port), (flow.saddr, flow.sport));
    CT.insert(
        reverse,
        entry(CT_DIR_REPLY, flow.daddr, flow.dport, reply_ifindex, [0; 6], now, initial_state(flow)),
        0,
    )?;
    let fwd = entry(CT_DIR_DNAT, dnat.addr, dnat.port, dnat.ifindex, dnat.mac, now, initial_state(flow));
    insert_forward(flow, fwd, reverse).map(|_| ())
}

/// Tracks a sandbox's own flow that leaves without NAT (masquerade off):
/// the answers, addressed to the sandbox itself, are let in from outside
/// by the reply entry. Both entries or neither.
#[inline(always)]
pub fn track_routed(flow: &Flow, veth_ifindex: u32, mac: [u8; 6]) -> Result<(), i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let reverse = reversed(flow);
    let back = entry(CT_DIR_SNAT_REPLY, flow.saddr, flow.sport, veth_ifindex, mac, now, initial_state(flow));
    CT.insert(reverse, back, 0)?;
    let fwd = entry(CT_DIR_ROUTED, flow.saddr, flow.sport, 0, [0; 6], now, initial_state(flow));
    insert_forward(flow, fwd, reverse).map(|_| ())
}

/// Tracks a new egress flow from a sandbox (behind host-side veth
/// `veth_ifindex`, MAC `mac`): picks a source port on `nat_addr` — the
/// original one when free, else random ones in `[min, max]` — and inserts
/// both entries. Returns the SNAT entry.
#[inline(always)]
pub fn track_snat(
    flow: &Flow,
    nat_addr: [u8; 4],
    min: u16,
    max: u16,
    uplink: u32,
    veth_ifindex: u32,
    mac: [u8; 6],
) -> Result<CtEntry, i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let back = entry(CT_DIR_SNAT_REPLY, flow.saddr, flow.sport, veth_ifindex, mac, now, initial_state(flow));
    let span = (max as u32).saturating_sub(min as u32) + 1;
    let mut port = flow.sport;
    for i in 0..SNAT_TRIES {
        if i > 0 {
            let r = unsafe { bpf_get_prandom_u32() } % span;
            port = ((min as u32 + r) as u16).to_be();
        }
        // ICMP echo replies carry the identifier in both "port" fields.
        let from_port = if flow.proto == dataplane_common::PROTO_ICMP { port } else { flow.dport };
        let reverse = reply(flow, (flow.daddr, from_port), (nat_addr, port));
        if CT.insert(reverse, back, BPF_NOEXIST).is_ok() {
            let fwd = entry(CT_DIR_SNAT, nat_addr, port, uplink, [0; 6], now, initial_state(flow));
            return insert_forward(flow, fwd, reverse);
        }
    }
    Err(-1)
}

// ----- IPv6 -----------------------------------------------------------------
//
// IPv6 tuples and entries are large (40 and 48 bytes): built on the stack,
// a flow's two keys and two entries (and the compiler's copies of them)
// took most of the 512 bytes BPF allows a call chain. They are built in a
// per-CPU scratch cell instead and inserted from there.

/// Where a new IPv6 flow's keys and entries are put together.
#[repr(C)]
pub struct Scratch6 {
    fwd_key: CtKey6,
    rev_key: CtKey6,
    fwd: CtEntry6,
    back: CtEntry6,
}

#[map]
static CT6_SCRATCH: PerCpuArray<Scratch6> = PerCpuArray::with_max_entries(1, 0);

/// The key of an IPv6 packet's own direction.
#[inline(always)]
fn key6(flow: &Flow6) -> CtKey6 {
    CtKey6::between(flow.proto, (flow.saddr, flow.sport), (flow.daddr, flow.dport))
}

/// Whether an IPv6 TCP packet opens a connection (SYN without ACK).
#[inline(always)]
pub fn opens6(flow: &Flow6) -> bool {
    flow.proto == PROTO_TCP && flow.tcp_flags & (SYN | ACK) == SYN
}

/// Whether this IPv6 packet's tuple is tracked (nothing is updated).
#[inline(always)]
pub fn tracked6(flow: &Flow6) -> bool {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { CT6.get(key6(flow)) }.is_some()
}

/// The IPv6 entry of this packet's tuple as it is (nothing updated).
#[inline(always)]
pub fn entry6(flow: &Flow6) -> Option<&'static CtEntry6> {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { CT6.get(key6(flow)) }
}

/// The IPv6 entry for this packet (any direction), refreshed and, for
/// TCP, moved along the state machine, as [`lookup`]. The entry itself (in
/// the map, valid for this program run), not a copy.
#[inline(always)]
pub fn lookup6(flow: &Flow6) -> Option<&'static CtEntry6> {
    let e = CT6.get_ptr_mut(key6(flow))?;
    // SAFETY: pointer into the map value, valid for this program run; the
    // program only reads it after this update.
    unsafe {
        (*e).touch(flow.proto, flow.tcp_flags);
        Some(&*e)
    }
}

/// The scratch cell with the flow's own key and both entries started:
/// the reply entry (`back`: `dir`, target, where replies go) and the
/// forward one (`fwd`: `fwd_dir`, target, where the flow goes), both in
/// the flow's initial state, the forward one marked SEEN.
#[inline(always)]
fn begin6(
    flow: &Flow6,
    back: (u32, [u8; 16], u16, u32, [u8; 6]),
    fwd: (u32, [u8; 16], u16, u32, [u8; 6]),
) -> Option<&'static mut Scratch6> {
    let s = CT6_SCRATCH.get_ptr_mut(0)?;
    let now = unsafe { bpf_ktime_get_ns() };
    let state = if flow.proto == PROTO_TCP { next_state(CT_STATE_NONE, flow.tcp_flags) } else { CT_STATE_NONE };
    // SAFETY: this CPU's cell, used by this program run only.
    let s = unsafe { &mut *s };
    s.fwd_key = key6(flow);
    fill6(&mut s.back, back, now, state);
    fill6(&mut s.fwd, fwd, now, state);
    s.fwd.flags = CT_FLAG_SEEN;
    Some(s)
}

#[inline(always)]
fn fill6(e: &mut CtEntry6, (dir, addr, port, ifindex, mac): (u32, [u8; 16], u16, u32, [u8; 6]), now: u64, state: u16) {
    e.dir = dir;
    e.state = state;
    e.flags = 0;
    e.addr = addr;
    e.port = port;
    e.mac = mac;
    e.ifindex = ifindex;
    e._pad = 0;
    e.last_seen = now;
}

/// Inserts the scratch cell's reply entry at `rev_key` (with `flags`),
/// then the forward one; both or neither. Returns the forward entry.
#[inline(always)]
// By reference on purpose: by value, the map helpers' arguments are
// copied to the stack, which the scratch cell is there to spare.
#[allow(clippy::needless_borrows_for_generic_args)]
fn commit6(s: &'static mut Scratch6, flags: u64) -> Result<&'static CtEntry6, i32> {
    CT6.insert(&s.rev_key, &s.back, flags)?;
    if let Err(e) = CT6.insert(&s.fwd_key, &s.fwd, 0) {
        let _ = CT6.remove(&s.rev_key);
        return Err(e);
    }
    Ok(&s.fwd)
}

/// Tracks a new IPv6 DNAT flow to `(addr, port)` behind veth `ifindex`
/// (MAC `mac`); replies leave through `reply_ifindex` with the original
/// destination restored as their source. Both entries or neither.
#[inline(always)]
pub fn track_dnat6(
    flow: &Flow6,
    addr: [u8; 16],
    port: u16,
    ifindex: u32,
    mac: [u8; 6],
    reply_ifindex: u32,
) -> Result<&'static CtEntry6, i32> {
    let back = (CT_DIR_REPLY, flow.daddr, flow.dport, reply_ifindex, [0; 6]);
    let s = begin6(flow, back, (CT_DIR_DNAT, addr, port, ifindex, mac)).ok_or(-1)?;
    s.rev_key = CtKey6::between(flow.proto, (addr, port), (flow.saddr, flow.sport));
    commit6(s, 0)
}

/// Tracks a new NAT46 flow: IPv6 client `flow` of a port published by a
/// sandbox with only IPv4 (`b`, its address v4-mapped), to which the client
/// appears as `client4`. The forward entry (IPv6 tuple) leads to the
/// sandbox; the reply entry, keyed by the sandbox's IPv4 reply tuple in
/// v4-mapped form, back to the host address and port the client used —
/// out of the uplink (MAC zero) or, for a sandbox client, into its veth —
/// the client itself kept in `DP_NAT46`. Refused when another client's live
/// flow holds that reply tuple (two clients hashed to one address, using
/// the same port towards the same backend).
#[inline(always)]
#[allow(clippy::needless_borrows_for_generic_args)] // see commit6
pub fn track_dnat46(
    flow: &Flow6,
    b: &Backend6,
    client4: [u8; 4],
    (reply_ifindex, reply_mac): (u32, [u8; 6]),
) -> Result<&'static CtEntry6, i32> {
    let back = (CT_DIR_REPLY, flow.daddr, flow.dport, reply_ifindex, reply_mac);
    let s = begin6(flow, back, (CT_DIR_DNAT, b.addr, b.port, b.ifindex, b.mac)).ok_or(-1)?;
    s.back.flags = CT_FLAG_NAT46;
    s.fwd.flags |= CT_FLAG_NAT46;
    // The reply key in place (built on the stack, its bytes would spill).
    s.rev_key.proto = flow.proto;
    s.rev_key._pad = [0; 3];
    s.rev_key.saddr = b.addr;
    s.rev_key.sport = b.port;
    s.rev_key.daddr = [0; 16];
    s.rev_key.daddr[10] = 0xff;
    s.rev_key.daddr[11] = 0xff;
    s.rev_key.daddr[12..].copy_from_slice(&client4);
    s.rev_key.dport = flow.sport;
    // SAFETY: map lookups return values valid for this program run.
    if let Some(other) = unsafe { NAT46.get(&s.rev_key) }
        && !same6(other, &flow.saddr)
        && unsafe { CT6.get(&s.rev_key) }.is_some()
    {
        return Err(-17);
    }
    NAT46.insert(&s.rev_key, &flow.saddr, 0)?;
    commit6(s, 0)
}

/// Whether two IPv6 addresses are equal, compared a word at a time.
#[inline(always)]
fn same6(a: &[u8; 16], b: &[u8; 16]) -> bool {
    // SAFETY: i < 4: each word is inside both arrays.
    let w = |x: &[u8; 16], i: usize| unsafe { core::ptr::read_unaligned(x.as_ptr().add(4 * i).cast::<u32>()) };
    (0..4).all(|i| w(a, i) == w(b, i))
}

/// Tracks an IPv6 hairpin flow, as [`track_hairpin`]: a sandbox (veth
/// `client_ifindex`, MAC `client_mac`) reaching a port published over IPv6
/// by sandbox `b` here; to itself, its source becomes `gateway`.
#[inline(always)]
pub fn track_hairpin6(
    flow: &Flow6,
    b: &Backend6,
    client_ifindex: u32,
    client_mac: [u8; 6],
    gateway: Option<[u8; 16]>,
) -> Result<&'static CtEntry6, i32> {
    let back = (CT_DIR_REPLY, flow.daddr, flow.dport, client_ifindex, client_mac);
    let s = begin6(flow, back, (CT_DIR_DNAT, b.addr, b.port, b.ifindex, b.mac)).ok_or(-1)?;
    let reply_to = match gateway {
        Some(gw) => {
            s.back.flags = CT_FLAG_HAIRPIN_SELF;
            s.fwd.flags |= CT_FLAG_HAIRPIN_SELF;
            gw
        }
        None => flow.saddr,
    };
    s.rev_key = CtKey6::between(flow.proto, (b.addr, b.port), (reply_to, flow.sport));
    commit6(s, 0)
}

/// Tracks a sandbox's own IPv6 flow that leaves without NAT, as
/// [`track_routed`]. Both entries or neither.
#[inline(always)]
pub fn track_routed6(flow: &Flow6, veth_ifindex: u32, mac: [u8; 6]) -> Result<(), i32> {
    let back = (CT_DIR_SNAT_REPLY, flow.saddr, flow.sport, veth_ifindex, mac);
    let s = begin6(flow, back, (CT_DIR_ROUTED, flow.saddr, flow.sport, 0, [0; 6])).ok_or(-1)?;
    s.rev_key = CtKey6::between(flow.proto, (flow.daddr, flow.dport), (flow.saddr, flow.sport));
    commit6(s, 0).map(|_| ())
}

/// Tracks a new IPv6 egress flow masqueraded to `nat_addr` (NAT66), as
/// [`track_snat`]: the sandbox's own port when free, else random ones in
/// `[min, max]`. Returns the SNAT entry.
#[inline(always)]
#[allow(clippy::needless_borrows_for_generic_args)] // see commit6
pub fn track_snat6(
    flow: &Flow6,
    nat_addr: [u8; 16],
    range: (u16, u16),
    uplink: u32,
    veth_ifindex: u32,
    mac: [u8; 6],
) -> Result<&'static CtEntry6, i32> {
    let back = (CT_DIR_SNAT_REPLY, flow.saddr, flow.sport, veth_ifindex, mac);
    let s = begin6(flow, back, (CT_DIR_SNAT, nat_addr, flow.sport, uplink, [0; 6])).ok_or(-1)?;
    let span = (range.1 as u32).saturating_sub(range.0 as u32) + 1;
    let mut port = flow.sport;
    for i in 0..SNAT_TRIES {
        if i > 0 {
            let r = unsafe { bpf_get_prandom_u32() } % span;
            port = ((range.0 as u32 + r) as u16).to_be();
        }
        // ICMPv6 echo replies carry the identifier in both "port" fields.
        let from_port = if flow.proto == dataplane_common::PROTO_ICMP6 { port } else { flow.dport };
        s.rev_key = CtKey6::between(flow.proto, (flow.daddr, from_port), (nat_addr, port));
        if CT6.insert(&s.rev_key, &s.back, BPF_NOEXIST).is_ok() {
            s.fwd.port = port;
            if let Err(e) = CT6.insert(&s.fwd_key, &s.fwd, 0) {
                let _ = CT6.remove(&s.rev_key);
                return Err(e);
            }
            return Ok(&s.fwd);
        }
    }
    Err(-1)
}
