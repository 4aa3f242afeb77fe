//! Address and port rewrites with incremental checksum updates (the
//! csum-replace helpers, never recomputed by hand: veths carry
//! CHECKSUM_PARTIAL and GSO packets).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use dataplane_common::{Direction, DropReason, PROTO_ICMP, PROTO_ICMP6, PROTO_UDP, nat46_client, v4_of_mapped};

use crate::parse::{Flow, Flow6, IP_CSUM_OFF, IP_DST_OFF, IP_OFF, IP_SRC_OFF, IP6_DST_OFF, IP6_SRC_OFF, IcmpError, IcmpError6};

/// Which end of the flow to rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// Rewrites the source or destination address and port of `flow`.
#[inline(always)]
pub fn rewrite(ctx: &TcContext, flow: &Flow, end: End, addr: [u8; 4], port: u16) -> Result<(), i64> {
    let icmp = flow.proto == PROTO_ICMP;
    let (old_addr, old_port, addr_off, port_off) = match end {
        End::Source => (flow.saddr, flow.sport, IP_SRC_OFF, flow.l4_off),
        End::Destination => (flow.daddr, flow.dport, IP_DST_OFF, flow.l4_off + 2),
    };
    // ICMP echo: the "port" is the identifier, and its checksum has no pseudo-header.
    let port_off = if icmp { flow.l4_off + 4 } else { port_off };
    let mangled = if flow.proto == PROTO_UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    let csum = flow.csum_off();
    let from = u32::from_ne_bytes(old_addr) as u64;
    let to = u32::from_ne_bytes(addr) as u64;
    if from != to {
        if !icmp {
            ctx.l4_csum_replace(csum, from, to, BPF_F_PSEUDO_HDR as u64 | mangled | 4)?;
        }
        ctx.l3_csum_replace(IP_CSUM_OFF, from, to, 4)?;
        ctx.store(addr_off, &addr, 0)?;
    }
    if old_port != port {
        ctx.l4_csum_replace(csum, old_port as u64, port as u64, mangled | 2)?;
        ctx.store(port_off, &port, 0)?;
    }
    Ok(())
}

/// Rewrites the source or destination address and port of an IPv6 flow:
/// no IP checksum, and the transport checksum's pseudo-header change
/// applied a 32-bit word at a time.
#[inline(always)]
pub fn rewrite6(ctx: &TcContext, flow: &Flow6, end: End, addr: &[u8; 16], port: u16) -> Result<(), i64> {
    // Addresses by reference, read a word at a time: as sixteen-byte
    // values the compiler kept each byte in a register of its own, spilled
    // to 128 bytes of stack.
    let (old_addr, old_port, addr_off, port_off) = match end {
        End::Source => (&flow.saddr, flow.sport, IP6_SRC_OFF, flow.l4_off),
        End::Destination => (&flow.daddr, flow.dport, IP6_DST_OFF, flow.l4_off + 2),
    };
    // ICMPv6 echo: the "port" is the identifier (its checksum does cover
    // the pseudo-header, unlike ICMP's).
    let port_off = if flow.proto == PROTO_ICMP6 { flow.l4_off + 4 } else { port_off };
    let mangled = if flow.proto == PROTO_UDP { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
    let csum = flow.csum_off();
    if replace_addr6(ctx, csum, old_addr, addr, BPF_F_PSEUDO_HDR as u64 | mangled)? {
        ctx.store(addr_off, addr, 0)?;
    }
    if old_port != port {
        ctx.l4_csum_replace(csum, old_port as u64, port as u64, mangled | 2)?;
        ctx.store(port_off, &port, 0)?;
    }
    Ok(())
}

/// Sets the Ethernet destination (and a locally administered source) for a
/// frame that skips the bridge.
#[inline(always)]
pub fn set_macs(ctx: &TcContext, dst: [u8; 6]) -> Result<(), i64> {
    ctx.store(0, &dst, 0)?;
    // The bridge's MAC is not known here; the sandbox does not check it.
    ctx.store(6, &[0x02u8, 0x42, 0, 0, 0, 1], 0)?;
    Ok(())
}

/// Translates an ICMP error about an egress flow back to the sandbox: the
/// outer destination and the embedded packet's source (address and port)
/// become the sandbox's, with the outer IP, embedded IP and ICMP checksums
/// updated incrementally.
#[inline(always)]
pub fn rewrite_icmp_error(ctx: &TcContext, e: &IcmpError, addr: [u8; 4], port: u16) -> Result<(), i64> {
    let icmp_csum = e.icmp_off + 2;
    let to = u32::from_ne_bytes(addr) as u64;
    // Outer destination (the ICMP checksum does not cover the outer header).
    let outer_from = u32::from_ne_bytes(e.outer_daddr) as u64;
    ctx.l3_csum_replace(IP_CSUM_OFF, outer_from, to, 4)?;
    ctx.store(IP_DST_OFF, &addr, 0)?;
    // Embedded source address: its header checksum, then the ICMP checksum
    // over both changed fields.
    let inner_from = u32::from_ne_bytes(e.inner.saddr) as u64;
    let inner_csum_off = e.inner_ip_off + 10;
    let old_csum: u16 = ctx.load(inner_csum_off)?;
    ctx.l3_csum_replace(inner_csum_off, inner_from, to, 4)?;
    let new_csum: u16 = ctx.load(inner_csum_off)?;
    ctx.store(e.inner_ip_off + 12, &addr, 0)?;
    ctx.l4_csum_replace(icmp_csum, inner_from, to, 4)?;
    ctx.l4_csum_replace(icmp_csum, old_csum as u64, new_csum as u64, 2)?;
    // Embedded source port.
    if e.inner.sport != port {
        ctx.store(e.inner_l4_off, &port, 0)?;
        ctx.l4_csum_replace(icmp_csum, e.inner.sport as u64, port as u64, 2)?;
    }
    Ok(())
}

/// Word `i` (0..4) of an IPv6 address.
#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    // SAFETY: i < 4, so the four bytes are inside the array.
    unsafe { core::ptr::read_unaligned(a.as_ptr().add(i * 4).cast::<u32>()) }
}

/// Updates the checksum at `csum` for an IPv6 address going from `old` to
/// `new` (`flags`: pseudo-header, UDP's mangled zero), a word at a time
/// (as values, 16-byte addresses were spilled to the stack byte by byte);
/// returns whether they differ.
#[inline(always)]
fn replace_addr6(ctx: &TcContext, csum: usize, old: &[u8; 16], new: &[u8; 16], flags: u64) -> Result<bool, i64> {
    let mut changed = false;
    for i in 0..4 {
        let (from, to) = (word(old, i), word(new, i));
        if from != to {
            ctx.l4_csum_replace(csum, from as u64, to as u64, flags | 4)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Translates an ICMPv6 error about an egress flow back to the sandbox, as
/// [`rewrite_icmp_error`]: the outer destination (in the ICMPv6 checksum's
/// pseudo-header) and the embedded packet's source address and port (its
/// payload) become the sandbox's.
#[inline(always)]
pub fn rewrite_icmp6_error(ctx: &TcContext, e: &IcmpError6, addr: &[u8; 16], port: u16) -> Result<(), i64> {
    let csum = e.icmp_off + 2;
    if replace_addr6(ctx, csum, &e.outer_daddr, addr, BPF_F_PSEUDO_HDR as u64)? {
        ctx.store(IP6_DST_OFF, addr, 0)?;
    }
    if replace_addr6(ctx, csum, &e.inner_saddr, addr, 0)? {
        ctx.store(e.inner_ip_off + 8, addr, 0)?;
    }
    if e.inner_sport != port {
        ctx.l4_csum_replace(csum, e.inner_sport as u64, port as u64, 2)?;
        ctx.store(e.inner_l4_off, &port, 0)?;
    }
    Ok(())
}

/// EtherTypes, network byte order.
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// IPv4 header without options, IPv6 fixed header.
const IP4_LEN: usize = 20;
const IP6_HDR_LEN: usize = 40;

/// The checksum difference of the pseudo-header's addresses going from
/// `from` to `to` (sizes in bytes, multiples of 4).
#[inline(always)]
fn csum_diff(from: &[u32], to: &[u32]) -> Result<u64, i64> {
    // SAFETY: both buffers are on this stack, read only, their sizes given.
    let d = unsafe {
        bpf_csum_diff(
            from.as_ptr() as *mut u32,
            (from.len() * 4) as u32,
            to.as_ptr() as *mut u32,
            (to.len() * 4) as u32,
            0,
        )
    };
    if d < 0 { Err(d) } else { Ok(d as u64) }
}

/// An IPv4 header checksum from the header's nonzero 16-bit words.
#[inline(always)]
fn ip4_checksum(words: &[u32]) -> u16 {
    let mut sum = 0u32;
    for w in words {
        sum += *w;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// NAT46, inbound: the IPv6 TCP/UDP packet of `flow` becomes an IPv4 one
/// from `saddr` to `daddr`, destination port `dport` (traffic class, hop
/// limit and payload kept; Don't Fragment set, as IPv6 never fragments on
/// the way). The transport checksum follows incrementally (pseudo-header
/// addresses, port); the IPv4 header is new, its checksum computed.
#[inline(always)]
pub fn to_ipv4(ctx: &TcContext, flow: &Flow6, saddr: [u8; 4], daddr: [u8; 4], dport: u16) -> Result<(), i64> {
    let head: [u8; 8] = ctx.load(IP_OFF)?;
    let old: [u32; 8] = ctx.load(IP6_SRC_OFF)?;
    let new = [u32::from_ne_bytes(saddr), u32::from_ne_bytes(daddr)];
    let diff = csum_diff(&old, &new)?;
    ctx.change_proto(ETH_P_IP.to_be(), 0)?;
    let tos = (head[0] << 4) | (head[1] >> 4);
    let total = (u16::from_be_bytes([head[4], head[5]]) as usize + IP4_LEN) as u16;
    let t = total.to_be_bytes();
    // Version/IHL and TOS, total length, no ID, Don't Fragment, TTL and
    // protocol, the addresses: summed as 16-bit words for the checksum.
    let words = [
        u32::from(u16::from_be_bytes([0x45, tos])),
        u32::from(total),
        0x4000,
        u32::from(u16::from_be_bytes([head[7], flow.proto])),
        u32::from(u16::from_be_bytes([saddr[0], saddr[1]])),
        u32::from(u16::from_be_bytes([saddr[2], saddr[3]])),
        u32::from(u16::from_be_bytes([daddr[0], daddr[1]])),
        u32::from(u16::from_be_bytes([daddr[2], daddr[3]])),
    ];
    let c = ip4_checksum(&words).to_be_bytes();
    ctx.store(IP_OFF, &[0x45, tos, t[0], t[1]], 0)?;
    ctx.store(IP_OFF + 4, &[0u8, 0, 0x40, 0], 0)?;
    ctx.store(IP_OFF + 8, &[head[7], flow.proto, c[0], c[1]], 0)?;
    ctx.store(IP_OFF + 12, &saddr, 0)?;
    ctx.store(IP_OFF + 16, &daddr, 0)?;
    ctx.store(12, &ETH_P_IP.to_be(), 0)?;
    let l4 = IP_OFF + IP4_LEN;
    finish_l4(ctx, flow.proto, l4, diff, (l4 + 2, flow.dport, dport))
}

/// NAT46, outbound: the IPv4 TCP/UDP packet of `flow` (no IP options, not
/// a fragment) becomes an IPv6 one from `saddr` to `daddr`, source port
/// `sport`, as [`to_ipv4`] the other way.
#[inline(always)]
pub fn to_ipv6(ctx: &TcContext, flow: &Flow, saddr: &[u8; 16], daddr: &[u8; 16], sport: u16) -> Result<(), i64> {
    let head: [u8; 12] = ctx.load(IP_OFF)?;
    // Options, or a fragment (offset or more-fragments set): not translated.
    if head[0] != 0x45 || (u16::from_be_bytes([head[6], head[7]]) & 0x3fff) != 0 {
        return Err(-1);
    }
    let old = [u32::from_ne_bytes(flow.saddr), u32::from_ne_bytes(flow.daddr)];
    let w = |a: &[u8; 16], i: usize| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
    let new = [w(saddr, 0), w(saddr, 1), w(saddr, 2), w(saddr, 3), w(daddr, 0), w(daddr, 1), w(daddr, 2), w(daddr, 3)];
    let diff = csum_diff(&old, &new)?;
    ctx.change_proto(ETH_P_IPV6.to_be(), 0)?;
    let payload = (u16::from_be_bytes([head[2], head[3]]) as usize).saturating_sub(IP4_LEN) as u16;
    let p = payload.to_be_bytes();
    let tos = head[1];
    ctx.store(IP_OFF, &[0x60 | (tos >> 4), tos << 4, 0, 0, p[0], p[1], flow.proto, head[8]], 0)?;
    ctx.store(IP6_SRC_OFF, &new, 0)?;
    ctx.store(12, &ETH_P_IPV6.to_be(), 0)?;
    let l4 = IP_OFF + IP6_HDR_LEN;
    finish_l4(ctx, flow.proto, l4, diff, (l4, flow.sport, sport))
}

/// The transport header at `l4` after a family change: the pseudo-header
/// difference `diff` into its checksum, then one port (offset, old, new).
#[inline(always)]
fn finish_l4(ctx: &TcContext, proto: u8, l4: usize, diff: u64, (at, old, new): (usize, u16, u16)) -> Result<(), i64> {
    let (csum, mangled) = l4_csum(proto, l4);
    ctx.l4_csum_replace(csum, 0, diff, BPF_F_PSEUDO_HDR as u64 | mangled)?;
    if old != new {
        ctx.l4_csum_replace(csum, old as u64, new as u64, mangled | 2)?;
        ctx.store(at, &new, 0)?;
    }
    Ok(())
}

/// (checksum offset, mangled-zero flag) of a TCP or UDP header at `l4`.
#[inline(always)]
fn l4_csum(proto: u8, l4: usize) -> (usize, u64) {
    if proto == PROTO_UDP { (l4 + 6, BPF_F_MARK_MANGLED_0 as u64) } else { (l4 + 16, 0) }
}

/// What an IPv6 step returns for a packet of a NAT46 flow (tracked, not yet
/// translated) so that its program's entry runs [`nat46_forward`] next to
/// it rather than under it (their frames together pass BPF's 512 bytes):
/// never a TC verdict.
pub const NAT46_PENDING: i32 = i32::MIN;

/// NAT46, a client's packet of a tracked flow (from outside, or from a
/// sandbox through a host address): it becomes IPv4, from the client's
/// stand-in address to the IPv4-only sandbox, and goes into that sandbox.
/// A function of its own (a BPF-to-BPF call from the program's entry).
#[inline(never)]
pub fn nat46_forward(ctx: &TcContext, dir: Direction) -> i32 {
    let verdict = |reason| crate::redirect::verdict(ctx, reason, dir);
    let Some(flow) = crate::parse::l4_flow6(ctx) else { return verdict(DropReason::NatRewriteFailed) };
    let Some(ct) = crate::conntrack::entry6(&flow) else { return verdict(DropReason::CtNoFlow) };
    let Some(backend) = v4_of_mapped(&ct.addr) else { return verdict(DropReason::NatRewriteFailed) };
    if to_ipv4(ctx, &flow, nat46_client(&flow.saddr), backend, ct.port).is_err() {
        return verdict(DropReason::NatRewriteFailed);
    }
    crate::redirect::to_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatPublished, dir)
}
