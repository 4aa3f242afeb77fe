//! Address and port rewrites with incremental checksum updates (the
//! csum-replace helpers, never recomputed by hand: veths carry
//! CHECKSUM_PARTIAL and GSO packets).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use dataplane_common::{PROTO_ICMP, PROTO_ICMP6, PROTO_UDP};

use crate::parse::{Flow, Flow6, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, IP6_DST_OFF, IP6_SRC_OFF, IcmpError, IcmpError6};

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
