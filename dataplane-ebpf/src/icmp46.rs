//! ICMP errors of NAT46 flows, translated between the families (after
//! RFC 7915 §4.2 and §5.2):
//!
//! - In (uplink): an ICMPv6 error about a reply of a NAT46 flow (packet
//!   too big, destination unreachable, time exceeded) becomes an ICMPv4
//!   error to the IPv4-only sandbox, quoting the reply as the sandbox sent
//!   it; the router's address becomes its stand-in in 100.64.0.0/10, as a
//!   client's does. Packet too big becomes "fragmentation needed" with the
//!   MTU 20 bytes smaller (the IPv4 header is), so path MTU discovery works
//!   through the translation.
//! - Out (veth): the sandbox's ICMPv4 error about a NAT46 client's packet
//!   (port unreachable, …) becomes an ICMPv6 error to that client, from the
//!   host address it used, quoting its packet as the client sent it.
//!
//! The translated message quotes the embedded IP header and the first 8
//! bytes of its transport header (all RFC 792 promises); the rest is cut
//! off, the headers are written anew and their checksums computed.
//!
//! Maps: `DP_CT6`, `DP_NAT46`, `DP_METRICS`.

use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_NET,
    helpers::bpf_skb_change_tail,
    programs::TcContext,
};
use dataplane_common::{
    CT_DIR_REPLY, CT_FLAG_NAT46, CtEntry6, CtKey6, Direction, DropReason, nat46_client, v4_mapped, v4_of_mapped,
};

use crate::{
    maps::{CT6, NAT46, SCRATCH},
    parse::{self, IcmpError, IcmpError6},
    redirect,
};

const ETH: usize = 14;
const IP4: usize = 20;
const IP6: usize = 40;
/// ICMP header, and the transport bytes an error quotes.
const HDR: usize = 8;
/// The translated ICMPv4 message: header, quoted IPv4 header, 8 bytes.
const MSG4: usize = HDR + IP4 + HDR;
/// The translated ICMPv6 message: header, quoted IPv6 header, 8 bytes.
const MSG6: usize = HDR + IP6 + HDR;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMP6: u8 = 58;

/// ICMPv6 error (type, code) → ICMPv4; None: not translated.
#[inline(always)]
fn to_icmp4(kind: u8, code: u8) -> Option<(u8, u8)> {
    match (kind, code) {
        // Destination unreachable: port, administratively prohibited, any other.
        (1, 4) => Some((3, 3)),
        (1, 1) => Some((3, 10)),
        (1, _) => Some((3, 1)),
        // Packet too big → fragmentation needed.
        (2, _) => Some((3, 4)),
        (3, c) if c <= 1 => Some((11, c)),
        _ => None,
    }
}

/// ICMPv4 error (type, code) → ICMPv6; None: not translated.
#[inline(always)]
fn to_icmp6(kind: u8, code: u8) -> Option<(u8, u8)> {
    match (kind, code) {
        (3, 3) => Some((1, 4)),
        (3, 4) => Some((2, 0)),
        (3, 9 | 10 | 13) => Some((1, 1)),
        (3, 0 | 1 | 5..=8 | 11 | 12) => Some((1, 0)),
        (11, c) if c <= 1 => Some((3, c)),
        _ => None,
    }
}

/// Bytes of the per-CPU scratch space.
const SCRATCH_LEN: usize = 128;

/// This CPU's scratch space, zeroed: messages are built there, off the
/// stack (BPF's 512 bytes per call chain).
#[inline(always)]
fn scratch() -> Result<&'static mut [u8; SCRATCH_LEN], DropReason> {
    let p = SCRATCH.get_ptr_mut(0).ok_or(DropReason::NatRewriteFailed)?;
    // SAFETY: a per-CPU map value, used by this program run only (programs
    // do not preempt each other on one CPU).
    let buf = unsafe { &mut *p };
    // Word by word: a memset call on a map value does not verify.
    let words = buf.as_mut_ptr() as *mut u64;
    for i in 0..SCRATCH_LEN / 8 {
        // SAFETY: inside the 128-byte value, 8-byte aligned (map values are).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    Ok(buf)
}

/// The Internet checksum of the `N` bytes of `buf` at `at` (a multiple of
/// 4), to be stored as is (in memory order).
#[inline(always)]
fn checksum<const N: usize>(buf: &mut [u8; SCRATCH_LEN], at: usize) -> Result<[u8; 2], DropReason> {
    const { assert!(N.is_multiple_of(4)) };
    if at + N > SCRATCH_LEN {
        return Err(DropReason::NatRewriteFailed);
    }
    // SAFETY: N bytes inside the scratch value (checked above).
    unsafe { crate::packet::checksum(buf.as_ptr().add(at), N as u32) }.ok_or(DropReason::NatRewriteFailed)
}

/// `N` bytes of `buf` at `at`, as an array reference (for a store).
#[inline(always)]
fn part<const N: usize>(buf: &[u8; SCRATCH_LEN], at: usize) -> Result<&[u8; N], DropReason> {
    buf.get(at..at + N).and_then(|s| s.try_into().ok()).ok_or(DropReason::NatRewriteFailed)
}

/// What the uplink's ICMPv6 error step returns for an error about a NAT46
/// flow, so that its program's entry runs [`error_to_sandbox`] next to it
/// rather than under it (BPF's 512 bytes of stack per call chain): never
/// a TC verdict.
pub const NAT46_ERROR: i32 = i32::MIN + 3;

/// Uplink: an ICMPv6 error about the reply of a NAT46 flow → an ICMPv4
/// error into its sandbox.
#[inline(never)]
pub fn error_to_sandbox(ctx: &TcContext) -> i32 {
    let dir = Direction::ToSandbox;
    let Some(e) = parse::icmp6_error(ctx) else { return redirect::verdict(ctx, DropReason::InvalidPacket, dir) };
    // The reply as sent, reversed: the flow's forward (DNAT) key.
    let key = CtKey6::between(e.proto, (e.inner_daddr, e.inner_dport), (e.inner_saddr, e.inner_sport));
    // SAFETY: map lookups return values valid for this program run.
    let Some(ct) = (unsafe { CT6.get(key) }) else { return redirect::verdict(ctx, DropReason::CtNoFlow, dir) };
    match write_ipv4(ctx, &e, ct) {
        0 => redirect::to_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatPublished, dir),
        reason => redirect::verdict(ctx, reason_of(reason), dir),
    }
}

/// A [`DropReason`] carried as a number through a BPF-to-BPF call.
#[inline(always)]
fn reason_of(n: u32) -> DropReason {
    if n == DropReason::InvalidPacket as u32 { DropReason::InvalidPacket } else { DropReason::NatRewriteFailed }
}

/// Rewrites the frame into the ICMPv4 error; 0, or the drop reason.
#[inline(never)]
fn write_ipv4(ctx: &TcContext, e: &IcmpError6, ct: &CtEntry6) -> u32 {
    match error_to_ipv4(ctx, e, ct) {
        Ok(()) => 0,
        Err(r) => r as u32,
    }
}

/// Scratch layout of the ICMPv4 error: the message, then the outer header.
const MSG4_AT: usize = 0;
const OUTER4_AT: usize = 40;

#[inline(always)]
fn error_to_ipv4(ctx: &TcContext, e: &IcmpError6, ct: &CtEntry6) -> Result<(), DropReason> {
    let bad = |_| DropReason::NatRewriteFailed;
    let backend = v4_of_mapped(&ct.addr).ok_or(DropReason::NatRewriteFailed)?;
    let icmp: [u8; HDR] = ctx.load(e.icmp_off).map_err(bad)?;
    let (kind, code) = to_icmp4(icmp[0], icmp[1]).ok_or(DropReason::InvalidPacket)?;
    if (ctx.len() as usize) < e.inner_l4_off + HDR {
        return Err(DropReason::InvalidPacket);
    }
    let buf = scratch()?;
    // The message: type and code (and the MTU, 20 bytes smaller)…
    buf[0] = kind;
    buf[1] = code;
    if kind == 3 && code == 4 {
        let mtu6 = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]);
        let mtu = mtu6.saturating_sub((IP6 - IP4) as u32).min(u32::from(u16::MAX)) as u16;
        buf[6..8].copy_from_slice(&mtu.to_be_bytes());
    }
    // …the reply as the sandbox sent it, from it to the client's stand-in…
    let q = HDR;
    // (aya's load_bytes may read 0 bytes, which does not verify: fixed loads.)
    let quoted: [u8; 8] = ctx.load(e.inner_ip_off).map_err(bad)?;
    let total = u16::from_be_bytes([quoted[4], quoted[5]]).saturating_add(IP4 as u16);
    buf[q + 2..q + 4].copy_from_slice(&total.to_be_bytes());
    buf[q + 8] = quoted[7];
    buf[q] = 0x45;
    buf[q + 6] = 0x40;
    buf[q + 9] = e.proto;
    buf[q + 12..q + 16].copy_from_slice(&backend);
    buf[q + 16..q + 20].copy_from_slice(&nat46_client(&e.inner_daddr));
    let c = checksum::<IP4>(buf, q)?;
    buf[q + 10..q + 12].copy_from_slice(&c);
    // …and its first 8 transport bytes, from the sandbox's port.
    let p = HDR + IP4;
    let l4: [u8; HDR] = ctx.load(e.inner_l4_off).map_err(bad)?;
    buf[p + 2..p + HDR].copy_from_slice(&l4[2..]);
    buf[p..p + 2].copy_from_slice(&ct.port.to_ne_bytes());
    let c = checksum::<MSG4>(buf, MSG4_AT)?;
    buf[2..4].copy_from_slice(&c);
    // The outer header: from the router's stand-in to the sandbox.
    let o = OUTER4_AT;
    let (outer, router): ([u8; 8], [u8; 16]) = (ctx.load(ETH).map_err(bad)?, ctx.load(ETH + 8).map_err(bad)?);
    buf[o] = 0x45;
    buf[o + 2..o + 4].copy_from_slice(&((IP4 + MSG4) as u16).to_be_bytes());
    buf[o + 8] = outer[7];
    buf[o + 9] = PROTO_ICMP;
    buf[o + 12..o + 16].copy_from_slice(&nat46_client(&router));
    buf[o + 16..o + 20].copy_from_slice(&backend);
    let c = checksum::<IP4>(buf, o)?;
    buf[o + 10..o + 12].copy_from_slice(&c);
    // Cut to the quoted part, 6 → 4 (the outer header 20 bytes shorter),
    // then 20 bytes less below it (the quoted header is too).
    // SAFETY: the skb pointer is valid for this program run.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH + IP6 + HDR + IP6 + HDR) as u32, 0) } < 0 {
        return Err(DropReason::NatRewriteFailed);
    }
    ctx.change_proto(ETH_P_IP.to_be(), 0).map_err(bad)?;
    ctx.adjust_room(-((IP6 - IP4) as i32), BPF_ADJ_ROOM_NET, 0).map_err(bad)?;
    ctx.store(12, &ETH_P_IP.to_be(), 0).map_err(bad)?;
    ctx.store(ETH, part::<IP4>(buf, o)?, 0).map_err(bad)?;
    ctx.store(ETH + IP4, part::<MSG4>(buf, MSG4_AT)?, 0).map_err(bad)
}

/// Veth: the sandbox's ICMPv4 error about a packet of a NAT46 client →
/// an ICMPv6 error to that client; [`NOT_NAT46`] when it is about no NAT46 flow.
#[inline(never)]
pub fn error_to_client(ctx: &TcContext) -> i32 {
    let dir = Direction::FromSandbox;
    let Some(e) = parse::icmp_error(ctx) else { return NOT_NAT46 };
    let f = &e.inner;
    // An error goes to the sender of the packet it quotes.
    if e.outer_daddr != f.saddr {
        return NOT_NAT46;
    }
    // The client's packet as the sandbox got it; its reply entry is tracked.
    let key = CtKey6::between(f.proto, (v4_mapped(f.daddr), f.dport), (v4_mapped(f.saddr), f.sport));
    // SAFETY: map lookups return values valid for this program run.
    let Some(ct) = (unsafe { CT6.get(key) }) else { return NOT_NAT46 };
    if ct.dir != CT_DIR_REPLY || ct.flags & CT_FLAG_NAT46 == 0 {
        return NOT_NAT46;
    }
    // SAFETY: as above.
    let Some(client) = (unsafe { NAT46.get(key) }) else { return redirect::verdict(ctx, DropReason::CtNoFlow, dir) };
    match write_ipv6(ctx, &e, ct, client) {
        0 if ct.mac != [0; 6] => redirect::to_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply, dir),
        0 => redirect::out_of(ctx, ct.ifindex, DropReason::NatReply, dir),
        reason => redirect::verdict(ctx, reason_of(reason), dir),
    }
}

/// [`error_to_client`] found no NAT46 flow the error is about (not a TC verdict).
pub const NOT_NAT46: i32 = i32::MIN + 2;

/// Rewrites the frame into the ICMPv6 error to `client`; 0, or the drop reason.
#[inline(never)]
fn write_ipv6(ctx: &TcContext, e: &IcmpError, ct: &CtEntry6, client: &[u8; 16]) -> u32 {
    match error_to_ipv6(ctx, e, ct, client) {
        Ok(()) => 0,
        Err(r) => r as u32,
    }
}

/// Scratch layout of the ICMPv6 error: the pseudo-header, then the message.
const MSG6_AT: usize = IP6;

#[inline(always)]
fn error_to_ipv6(ctx: &TcContext, e: &IcmpError, ct: &CtEntry6, client: &[u8; 16]) -> Result<(), DropReason> {
    let bad = |_| DropReason::NatRewriteFailed;
    let f = &e.inner;
    let icmp: [u8; HDR] = ctx.load(e.icmp_off).map_err(bad)?;
    let (kind, code) = to_icmp6(icmp[0], icmp[1]).ok_or(DropReason::InvalidPacket)?;
    let (outer, quoted): ([u8; 12], [u8; 12]) =
        (ctx.load(ETH).map_err(bad)?, ctx.load(e.inner_ip_off).map_err(bad)?);
    // IP options in either header: not translated.
    if outer[0] != 0x45 || quoted[0] != 0x45 || (ctx.len() as usize) < e.inner_l4_off + HDR {
        return Err(DropReason::InvalidPacket);
    }
    let buf = scratch()?;
    // Pseudo-header: from the host address the client used, to the client.
    buf[..16].copy_from_slice(&ct.addr);
    buf[16..32].copy_from_slice(client);
    buf[34..36].copy_from_slice(&(MSG6 as u16).to_be_bytes());
    buf[39] = PROTO_ICMP6;
    // The message: type and code (and the MTU, 20 bytes larger)…
    let m = MSG6_AT;
    buf[m] = kind;
    buf[m + 1] = code;
    if kind == 2 {
        let mtu4 = u16::from_be_bytes([icmp[6], icmp[7]]);
        let mtu = (u32::from(mtu4) + (IP6 - IP4) as u32).max(1280);
        buf[m + 4..m + 8].copy_from_slice(&mtu.to_be_bytes());
    }
    // …the packet as the client sent it, to the host address and port…
    let q = m + HDR;
    let payload = u16::from_be_bytes([quoted[2], quoted[3]]).saturating_sub(IP4 as u16);
    buf[q] = 0x60;
    buf[q + 4..q + 6].copy_from_slice(&payload.to_be_bytes());
    buf[q + 6] = f.proto;
    buf[q + 7] = quoted[8];
    buf[q + 8..q + 24].copy_from_slice(client);
    buf[q + 24..q + 40].copy_from_slice(&ct.addr);
    // …and its first 8 transport bytes.
    let p = q + IP6;
    let l4: [u8; HDR] = ctx.load(e.inner_l4_off).map_err(bad)?;
    buf[p..p + 2].copy_from_slice(&l4[..2]);
    buf[p + 4..p + HDR].copy_from_slice(&l4[4..]);
    buf[p + 2..p + 4].copy_from_slice(&ct.port.to_ne_bytes());
    let c = checksum::<{ IP6 + MSG6 }>(buf, 0)?;
    buf[m + 2..m + 4].copy_from_slice(&c);
    // Cut to the quoted part, 4 → 6 (the outer header 20 bytes longer),
    // then 20 bytes more below it (the quoted header is too).
    // SAFETY: the skb pointer is valid for this program run.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (ETH + IP4 + HDR + IP4 + HDR) as u32, 0) } < 0 {
        return Err(DropReason::NatRewriteFailed);
    }
    ctx.change_proto(ETH_P_IPV6.to_be(), 0).map_err(bad)?;
    ctx.adjust_room((IP6 - IP4) as i32, BPF_ADJ_ROOM_NET, 0).map_err(bad)?;
    let len = (MSG6 as u16).to_be_bytes();
    ctx.store(12, &ETH_P_IPV6.to_be(), 0).map_err(bad)?;
    ctx.store(ETH, &[0x60u8, 0, 0, 0, len[0], len[1], PROTO_ICMP6, outer[8]], 0).map_err(bad)?;
    ctx.store(ETH + 8, &ct.addr, 0).map_err(bad)?;
    ctx.store(ETH + 24, client, 0).map_err(bad)?;
    ctx.store(ETH + IP6, part::<MSG6>(buf, m)?, 0).map_err(bad)
}
