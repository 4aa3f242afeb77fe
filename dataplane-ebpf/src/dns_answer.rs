//! The embedded resolver's A answers, given in the kernel. A sandbox's query
//! to 127.0.0.11:53 is sent by the socket hooks (see `dns`) to the
//! resolver's own UDP port on `lo` of the sandbox's namespace; this program,
//! at tcx egress of that `lo`, looks the name up in `DP_DNS_NAMES` under
//! each network the sandbox's resolver answers for (`DP_DNS_NETS`, by the
//! namespace's cookie) and, when exactly one of them has it, turns the query
//! into its answer in place and lets it go on: `lo` delivers it back into
//! the namespace, where the route it already carries (local) takes it to
//! the asker's socket. The daemon never sees the query, and names keep
//! resolving while it is down. (Not a redirect to `lo`'s ingress: that
//! drops the route, and a packet from 127.0.0.11 then meets the martian
//! check unless `route_localnet` is set.)
//!
//! Everything else goes on to the resolver's socket unchanged: other query
//! types, names the map does not have (IDs, forwarded names, long names),
//! a name on several of the sandbox's networks (the daemon merges those),
//! TCP, and anything that is not one plain question.
//!
//! The answer: the query's ID, question and RD bit; AA and RA set; the
//! name's addresses rotated per answer (round robin), TTL [`DNS_TTL`]; an
//! EDNS OPT record (no options) when the query had one. UDP checksum 0
//! (none, as IPv4 allows): the packet never leaves the namespace's `lo`.
//!
//! Maps: `DP_DNS` (the resolver's ports), `DP_DNS_NETS`, `DP_DNS_NAMES`.

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, TC_ACT_UNSPEC},
    helpers::{bpf_get_netns_cookie, bpf_skb_change_tail},
    programs::TcContext,
};
use dataplane_common::{
    DNS_MAX_ADDRS, DNS_MAX_NETS, DNS_NAME_MAX, DNS_TTL, Direction, DnsAnswer, DnsNameKey, DropReason,
    PROTO_UDP, RESOLVER_IP,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    maps::{DNS, DNS_NAMES, DNS_NETS},
    packet::ptr_at,
    parse::{IP_CSUM_OFF, IP_DST_OFF, IP_OFF, IP_SRC_OFF},
    redirect::verdict,
};

const NEXT: i32 = TC_ACT_UNSPEC;
/// tcx: done, the packet goes on (out of `lo`, so back in).
const PASS: i32 = TC_ACT_OK;
const UDP_OFF: usize = IP_OFF + Ipv4Hdr::LEN;
const DNS_OFF: usize = UDP_OFF + 8;
const QNAME_OFF: usize = DNS_OFF + 12;
/// An answer record: a pointer to the question's name, type A, class IN,
/// TTL, length 4, the address.
const RR_LEN: usize = 16;
/// An EDNS OPT record without options.
const OPT_LEN: usize = 11;
/// The UDP payload size our OPT record offers (the DNS flag day's value).
const EDNS_UDP_SIZE: u16 = 1232;

/// tcx egress on a sandbox namespace's `lo`.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> i32 {
    answer(ctx).unwrap_or(NEXT)
}

/// What the answer needs from the query, read before the packet changes.
struct Query {
    saddr: [u8; 4],
    sport: u16,
    dport: u16,
    /// Old IP total length as it lies in memory, for the checksum update.
    tot_len: u16,
    /// The query's RD bit.
    rd: u8,
    /// Whether it carried an EDNS OPT record.
    opt: bool,
    /// Offset just past the question.
    question_end: usize,
}

#[inline(always)]
fn answer(ctx: &TcContext) -> Option<i32> {
    let (q, mut key) = parse(ctx)?;
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: map lookups return values valid for this program run.
    let ports = unsafe { DNS.get(cookie) }?;
    if q.dport != ports.udp {
        return None;
    }
    // SAFETY: as above.
    let nets = unsafe { DNS_NETS.get(cookie) }?.nets;
    // The network that has the name; on several of the asker's networks
    // the daemon merges the answers. (Numbers, not map pointers, are kept
    // across the loop: the verifier follows those.)
    let mut hit = 0u32;
    let mut n = 0;
    while n < DNS_MAX_NETS {
        let net = nets[n];
        if net == 0 {
            break;
        }
        key.net = net;
        if DNS_NAMES.get_ptr_mut(key).is_some() {
            if hit != 0 {
                return None;
            }
            hit = net;
        }
        n += 1;
    }
    if hit == 0 {
        return None;
    }
    key.net = hit;
    let a: *mut DnsAnswer = DNS_NAMES.get_ptr_mut(key)?;
    // SAFETY: the map value stays valid for this program run; `turn` is a
    // hint (a lost update only repeats a rotation), so no atomics.
    let (count, turn) = unsafe { ((*a).count as usize, (*a).turn) };
    if count == 0 || count > DNS_MAX_ADDRS {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*a).turn = turn.wrapping_add(1) };
    let start = turn as usize % count;
    let answers_off = q.question_end;
    let new_len = answers_off + count * RR_LEN + if q.opt { OPT_LEN } else { 0 };
    // SAFETY: plain helper call; the kernel checks the length.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, new_len as u32, 0) } != 0 {
        return None;
    }
    // From here on the packet is the answer; a failed write drops it (the
    // client asks again) rather than letting a half-made one through.
    if write(ctx, &q, a, count, start, new_len).is_none() {
        return Some(verdict(ctx, DropReason::NatRewriteFailed, Direction::FromSandbox));
    }
    crate::metrics::count(DropReason::DnsAnswered, Direction::FromSandbox, ctx.len());
    Some(PASS)
}

/// The query, if this is one we may answer, and its name as a map key
/// (network still 0).
#[inline(always)]
fn parse(ctx: &TcContext) -> Option<(Query, DnsNameKey)> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, IP_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    let (vihl, proto, frags, tot_len, saddr, daddr) =
        unsafe { ((*ip).vihl, (*ip).proto, (*ip).frags, (*ip).tot_len, (*ip).src_addr, (*ip).dst_addr) };
    // A whole UDP datagram to 127.0.0.11 with a plain 20-byte header.
    if vihl != 0x45 || proto != PROTO_UDP || daddr != RESOLVER_IP || u16::from_be_bytes(frags) & 0x3fff != 0 {
        return None;
    }
    let udp = ptr_at::<[u16; 2]>(ctx, UDP_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    let [sport, dport] = unsafe { *udp };
    let hdr = ptr_at::<[u8; 12]>(ctx, DNS_OFF)?;
    // SAFETY: ptr_at checked the bounds.
    let h = unsafe { *hdr };
    // A standard query (QR 0, opcode 0, not truncated), one question, no
    // answers or authorities, at most one additional record (EDNS's OPT).
    let plain = h[2] & 0xfa == 0
        && h[4] == 0
        && h[5] == 1
        && h[6] == 0
        && h[7] == 0
        && h[8] == 0
        && h[9] == 0
        && h[10] == 0
        && h[11] <= 1;
    if !plain {
        return None;
    }
    let mut key = DnsNameKey { net: 0, name: [0; DNS_NAME_MAX] };
    let end = read_name(ctx, &mut key.name)?;
    let question_end = QNAME_OFF + end + 4;
    let qt = ptr_at::<[u8; 4]>(ctx, QNAME_OFF + end)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { *qt } != [0, 1, 0, 1] {
        // Not type A, class IN.
        return None;
    }
    let opt = h[11] == 1;
    if opt {
        // The root name, then type OPT (41).
        let rr = ptr_at::<[u8; 3]>(ctx, question_end)?;
        // SAFETY: ptr_at checked the bounds.
        let rr = unsafe { *rr };
        if rr[0] != 0 || rr[1] != 0 || rr[2] != 41 {
            return None;
        }
    }
    let tot_len = u16::from_ne_bytes(tot_len);
    Some((Query { saddr, sport, dport, tot_len, rd: h[2] & 0x01, opt, question_end }, key))
}

/// Copies the question's name (wire form, lowercased) into `name`; returns
/// its length with the final 0, or None if it is longer than
/// [`DNS_NAME_MAX`], compressed, or cut short.
#[inline(always)]
fn read_name(ctx: &TcContext, name: &mut [u8; DNS_NAME_MAX]) -> Option<usize> {
    let mut label = 0usize;
    let mut i = 0usize;
    while i < DNS_NAME_MAX {
        let p = ptr_at::<u8>(ctx, QNAME_OFF + i)?;
        // SAFETY: ptr_at checked the bounds.
        let mut b = unsafe { *p };
        if i == label {
            if b == 0 {
                return Some(i + 1);
            }
            if b > 63 {
                // A pointer or an extended label type: the daemon's.
                return None;
            }
            label = i + 1 + b as usize;
        } else if b.is_ascii_uppercase() {
            b += b'a' - b'A';
        }
        name[i] = b;
        i += 1;
    }
    None
}

/// Turns the (already resized) packet into the answer.
#[inline(always)]
fn write(ctx: &TcContext, q: &Query, a: *mut DnsAnswer, count: usize, start: usize, new_len: usize) -> Option<()> {
    // IP: back to the asker; the checksum follows the length (a swap of the
    // addresses leaves it as it was).
    let tot_len = ((new_len - IP_OFF) as u16).to_be();
    ctx.store(IP_OFF + 2, &tot_len, 0).ok()?;
    ctx.l3_csum_replace(IP_CSUM_OFF, q.tot_len as u64, tot_len as u64, 2).ok()?;
    ctx.store(IP_SRC_OFF, &RESOLVER_IP, 0).ok()?;
    ctx.store(IP_DST_OFF, &q.saddr, 0).ok()?;
    // UDP: ports swapped, the new length, no checksum.
    let udp_len = ((new_len - UDP_OFF) as u16).to_be();
    ctx.store(UDP_OFF, &[q.dport, q.sport, udp_len, 0u16], 0).ok()?;
    // DNS header after the ID: QR, AA, RD as asked, RA; one question,
    // `count` answers, the OPT record if the query had one.
    let header: [u8; 10] = [0x84 | q.rd, 0x80, 0, 1, 0, count as u8, 0, 0, 0, q.opt as u8];
    ctx.store(DNS_OFF + 2, &header, 0).ok()?;
    let ttl = DNS_TTL.to_be_bytes();
    // Address k goes to answer position (k + start) % count: the map is
    // read at the loop's own index (which the verifier bounds), and the
    // rotation lands in the packet offset (which the helper checks).
    let mut k = 0usize;
    while k < DNS_MAX_ADDRS {
        if k >= count {
            break;
        }
        // SAFETY: the map value stays valid for this program run.
        let addr = unsafe { (*a).addrs[k] };
        let rr: [u8; RR_LEN] = [
            0xc0, 0x0c, 0, 1, 0, 1, ttl[0], ttl[1], ttl[2], ttl[3], 0, 4, addr[0], addr[1], addr[2], addr[3],
        ];
        let pos = (k + start) % count;
        ctx.store(q.question_end + pos * RR_LEN, &rr, 0).ok()?;
        k += 1;
    }
    if q.opt {
        let size = EDNS_UDP_SIZE.to_be_bytes();
        let opt: [u8; OPT_LEN] = [0, 0, 41, size[0], size[1], 0, 0, 0, 0, 0, 0];
        ctx.store(q.question_end + count * RR_LEN, &opt, 0).ok()?;
    }
    Some(())
}
