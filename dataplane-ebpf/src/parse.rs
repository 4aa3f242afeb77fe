//! Header parsing shared by the programs: the IPv4 TCP/UDP 5-tuple.

use aya_ebpf::programs::TcContext;
use dataplane_common::{PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::packet::ptr_at;

/// Offsets of IPv4 header fields from the start of the frame.
pub const IP_OFF: usize = EthHdr::LEN;
pub const IP_CSUM_OFF: usize = IP_OFF + 10;
pub const IP_SRC_OFF: usize = IP_OFF + 12;
pub const IP_DST_OFF: usize = IP_OFF + 16;

/// Offsets of IPv6 header fields from the start of the frame.
pub const IP6_SRC_OFF: usize = IP_OFF + 8;
pub const IP6_DST_OFF: usize = IP_OFF + 24;
const IP6_LEN: usize = 40;

/// ICMP echo request and reply types.
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// An IPv4 TCP or UDP packet, or ICMP echo (not a non-first fragment).
/// For ICMP echo both "ports" are the echo identifier.
#[derive(Clone, Copy)]
pub struct Flow {
    pub proto: u8,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Network byte order, as on the wire.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    /// TCP flags (0 for UDP and ICMP).
    pub tcp_flags: u8,
}

impl Flow {
    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn csum_off(&self) -> usize {
        match self.proto {
            PROTO_TCP => self.l4_off + 16,
            PROTO_UDP => self.l4_off + 6,
            _ => self.l4_off + 2,
        }
    }
}

/// The destination of an IPv4 packet, whatever it carries.
#[inline(always)]
pub fn ipv4_daddr(ctx: &TcContext) -> Option<[u8; 4]> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, IP_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    Some(unsafe { (*ip).dst_addr })
}

/// Whether the frame carries IPv6.
#[inline(always)]
pub fn is_ipv6(ctx: &TcContext) -> bool {
    // SAFETY: ptr_at checked the bounds.
    ptr_at::<EthHdr>(ctx, 0).is_some_and(|eth| unsafe { (*eth).ether_type } == EtherType::Ipv6 as u16)
}

/// The IPv6 header of an IPv6 frame (bounds checked).
#[inline(always)]
fn ipv6_header(ctx: &TcContext) -> Option<*const network_types::ip::Ipv6Hdr> {
    if !is_ipv6(ctx) {
        return None;
    }
    ptr_at::<network_types::ip::Ipv6Hdr>(ctx, IP_OFF)
}

/// The destination of an IPv6 packet, whatever it carries.
#[inline(always)]
pub fn ipv6_daddr(ctx: &TcContext) -> Option<[u8; 16]> {
    let ip = ipv6_header(ctx)?;
    // SAFETY: ipv6_header checked the bounds.
    Some(unsafe { (*ip).dst_addr })
}

/// An IPv4 packet that claims to carry TCP or UDP (a first fragment, or
/// whole) whose headers are broken: header length under 20 bytes, a TCP or
/// UDP header cut short, a TCP data offset under 5 words. No endpoint sends
/// these; they are dropped and counted as INVALID_PACKET when they are
/// addressed to us.
#[inline(always)]
pub fn malformed(ctx: &TcContext) -> bool {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return false };
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return false;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, IP_OFF) else { return true };
    // SAFETY: ptr_at checked the bounds.
    let (vihl, proto, frags) = unsafe { ((*ip).vihl, (*ip).proto, (*ip).frags) };
    if (proto != PROTO_TCP && proto != PROTO_UDP) || u16::from_be_bytes(frags) & 0x1fff != 0 {
        return false;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN {
        return true;
    }
    let l4_off = IP_OFF + ihl;
    if proto == PROTO_UDP {
        return ptr_at::<[u8; 8]>(ctx, l4_off).is_none();
    }
    match ptr_at::<[u8; 20]>(ctx, l4_off) {
        // SAFETY: ptr_at checked the bounds.
        Some(h) => (unsafe { (*h)[12] }) >> 4 < 5,
        None => true,
    }
}

/// Parses the frame; `None` for anything that is not IPv4 TCP/UDP with ports.
#[inline(always)]
pub fn l4_flow(ctx: &TcContext) -> Option<Flow> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, IP_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    let (vihl, proto, frags, saddr, daddr) =
        unsafe { ((*ip).vihl, (*ip).proto, (*ip).frags, (*ip).src_addr, (*ip).dst_addr) };
    if proto != PROTO_TCP && proto != PROTO_UDP && proto != PROTO_ICMP {
        return None;
    }
    // Fragments after the first carry no ports.
    if u16::from_be_bytes(frags) & 0x1fff != 0 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN {
        return None;
    }
    let l4_off = IP_OFF + ihl;
    if proto == PROTO_ICMP {
        let hdr = ptr_at::<[u8; 8]>(ctx, l4_off)?;
        // SAFETY: ptr_at checked the bounds.
        let h = unsafe { *hdr };
        if h[0] != ICMP_ECHO_REQUEST && h[0] != ICMP_ECHO_REPLY {
            return None;
        }
        let id = u16::from_ne_bytes([h[4], h[5]]);
        return Some(Flow { proto, saddr, daddr, sport: id, dport: id, l4_off, tcp_flags: 0 });
    }
    let (sport, dport, tcp_flags) = ports_and_flags(ctx, proto, l4_off)?;
    Some(Flow { proto, saddr, daddr, sport, dport, l4_off, tcp_flags })
}

/// The ports (network byte order) and TCP flags of the TCP or UDP header
/// at `l4_off`; `None` when it is cut short or (TCP) its data offset is
/// under 5 words — no endpoint sends those (see `malformed`).
#[inline(always)]
fn ports_and_flags(ctx: &TcContext, proto: u8, l4_off: usize) -> Option<(u16, u16, u8)> {
    if proto == PROTO_UDP {
        ptr_at::<[u8; 8]>(ctx, l4_off)?;
    }
    let ports = ptr_at::<[u16; 2]>(ctx, l4_off)?;
    // SAFETY: ptr_at checked the bounds.
    let [sport, dport] = unsafe { *ports };
    if proto != PROTO_TCP {
        return Some((sport, dport, 0));
    }
    let f = ptr_at::<[u8; 2]>(ctx, l4_off + 12)?;
    // SAFETY: ptr_at checked the bounds.
    let [doff, flags] = unsafe { *f };
    if doff >> 4 < 5 {
        return None;
    }
    Some((sport, dport, flags))
}

/// An IPv6 TCP or UDP packet, or ICMPv6 echo (the transport header right
/// after the fixed header: no extension headers). For ICMPv6 echo both
/// "ports" are the echo identifier.
#[derive(Clone, Copy)]
pub struct Flow6 {
    pub proto: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order, as on the wire.
    pub sport: u16,
    pub dport: u16,
    /// Offset of the TCP/UDP header.
    pub l4_off: usize,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
}

impl Flow6 {
    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn csum_off(&self) -> usize {
        match self.proto {
            PROTO_TCP => self.l4_off + 16,
            PROTO_UDP => self.l4_off + 6,
            _ => self.l4_off + 2,
        }
    }
}

/// ICMPv6 echo request and reply types.
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

/// Parses an IPv6 frame; `None` for anything but TCP/UDP with ports and ICMPv6 echo.
#[inline(always)]
pub fn l4_flow6(ctx: &TcContext) -> Option<Flow6> {
    let ip = ipv6_header(ctx)?;
    // SAFETY: ipv6_header checked the bounds.
    let (proto, saddr, daddr) = unsafe { ((*ip).next_hdr, (*ip).src_addr, (*ip).dst_addr) };
    let l4_off = IP_OFF + IP6_LEN;
    if proto == PROTO_ICMP6 {
        let hdr = ptr_at::<[u8; 8]>(ctx, l4_off)?;
        // SAFETY: ptr_at checked the bounds.
        let h = unsafe { *hdr };
        if h[0] != ICMP6_ECHO_REQUEST && h[0] != ICMP6_ECHO_REPLY {
            return None;
        }
        let id = u16::from_ne_bytes([h[4], h[5]]);
        return Some(Flow6 { proto, saddr, daddr, sport: id, dport: id, l4_off, tcp_flags: 0 });
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let (sport, dport, tcp_flags) = ports_and_flags(ctx, proto, l4_off)?;
    Some(Flow6 { proto, saddr, daddr, sport, dport, l4_off, tcp_flags })
}

/// ICMP error types that carry the offending packet.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;

/// An ICMP error (destination unreachable, time exceeded) about a TCP/UDP
/// packet: the outer header and the embedded (offending) packet's tuple.
#[derive(Clone, Copy)]
pub struct IcmpError {
    pub outer_daddr: [u8; 4],
    /// Offset of the ICMP header.
    pub icmp_off: usize,
    /// Offset of the embedded IPv4 header.
    pub inner_ip_off: usize,
    /// Offset of the embedded TCP/UDP header.
    pub inner_l4_off: usize,
    pub inner: Flow,
}

/// Parses an ICMP error whose embedded packet is TCP or UDP.
#[inline(always)]
pub fn icmp_error(ctx: &TcContext) -> Option<IcmpError> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, IP_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    let (vihl, proto, daddr) = unsafe { ((*ip).vihl, (*ip).proto, (*ip).dst_addr) };
    if proto != PROTO_ICMP {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < Ipv4Hdr::LEN {
        return None;
    }
    let icmp_off = IP_OFF + ihl;
    let icmp = ptr_at::<[u8; 8]>(ctx, icmp_off)?;
    // SAFETY: ptr_at checked the bounds.
    let ty = unsafe { (*icmp)[0] };
    if ty != ICMP_DEST_UNREACH && ty != ICMP_TIME_EXCEEDED {
        return None;
    }
    let inner_ip_off = icmp_off + 8;
    let inner = ptr_at::<Ipv4Hdr>(ctx, inner_ip_off)?;
    // SAFETY: ptr_at checked the bounds.
    let (ivihl, iproto, isaddr, idaddr) =
        unsafe { ((*inner).vihl, (*inner).proto, (*inner).src_addr, (*inner).dst_addr) };
    if iproto != PROTO_TCP && iproto != PROTO_UDP {
        return None;
    }
    let iihl = ((ivihl & 0x0f) as usize) * 4;
    if iihl < Ipv4Hdr::LEN {
        return None;
    }
    let inner_l4_off = inner_ip_off + iihl;
    let ports = ptr_at::<[u16; 2]>(ctx, inner_l4_off)?;
    // SAFETY: ptr_at checked the bounds.
    let [sport, dport] = unsafe { *ports };
    Some(IcmpError {
        outer_daddr: daddr,
        icmp_off,
        inner_ip_off,
        inner_l4_off,
        inner: Flow {
            proto: iproto,
            saddr: isaddr,
            daddr: idaddr,
            sport,
            dport,
            l4_off: inner_l4_off,
            tcp_flags: 0,
        },
    })
}

/// ICMPv6 error types that carry the offending packet: destination
/// unreachable, packet too big, time exceeded.
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;

/// An ICMPv6 error about a TCP/UDP packet (no extension headers in either):
/// the outer destination and the embedded packet's tuple.
#[derive(Clone, Copy)]
pub struct IcmpError6 {
    pub outer_daddr: [u8; 16],
    /// Offset of the ICMPv6 header.
    pub icmp_off: usize,
    /// Offset of the embedded IPv6 header.
    pub inner_ip_off: usize,
    /// Offset of the embedded TCP/UDP header.
    pub inner_l4_off: usize,
    pub proto: u8,
    pub inner_saddr: [u8; 16],
    pub inner_daddr: [u8; 16],
    pub inner_sport: u16,
    pub inner_dport: u16,
}

/// Whether the frame carries an ICMPv6 error (a cheap look, before
/// [`icmp6_error`] parses it).
#[inline(always)]
pub fn is_icmp6_error(ctx: &TcContext) -> bool {
    let Some(ip) = ipv6_header(ctx) else { return false };
    // SAFETY: ipv6_header checked the bounds.
    if unsafe { (*ip).next_hdr } != PROTO_ICMP6 {
        return false;
    }
    // SAFETY: as above.
    ptr_at::<u8>(ctx, IP_OFF + IP6_LEN).is_some_and(|k| {
        matches!(unsafe { *k }, ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED)
    })
}

/// Parses an ICMPv6 error frame.
#[inline(always)]
pub fn icmp6_error(ctx: &TcContext) -> Option<IcmpError6> {
    if !is_icmp6_error(ctx) {
        return None;
    }
    let ip = ipv6_header(ctx)?;
    let icmp_off = IP_OFF + IP6_LEN;
    let inner_ip_off = icmp_off + 8;
    let inner = ptr_at::<network_types::ip::Ipv6Hdr>(ctx, inner_ip_off)?;
    // SAFETY: ptr_at checked the bounds.
    let proto = unsafe { (*inner).next_hdr };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let inner_l4_off = inner_ip_off + IP6_LEN;
    let ports = ptr_at::<[u16; 2]>(ctx, inner_l4_off)?;
    // SAFETY: ptr_at checked the bounds.
    let ([inner_sport, inner_dport], outer_daddr, inner_saddr, inner_daddr) =
        unsafe { (*ports, (*ip).dst_addr, (*inner).src_addr, (*inner).dst_addr) };
    Some(IcmpError6 {
        outer_daddr,
        icmp_off,
        inner_ip_off,
        inner_l4_off,
        proto,
        inner_saddr,
        inner_daddr,
        inner_sport,
        inner_dport,
    })
}
