//! cgroup-v2 socket hooks: processes of the daemon's own network namespace
//! reach published ports on 127.0.0.1, [::1] and the host's addresses with
//! their destination rewritten once, at connect/sendmsg time — no proxy, no
//! per-packet NAT. getpeername/recvmsg show the application the address it
//! asked for. Sockets of any other namespace (other daemons, sandboxes) are
//! left alone: the netns cookie must match `DP_CONFIG`, except for the
//! embedded resolver's address in sandboxes (see `dns`).
//!
//! Over IPv6 too: ports published on the host's IPv6 addresses and IPv6
//! VIPs (`DP_SOCK_NAT6` remembers what was asked).
//!
//! Maps: `DP_CONFIG`, `DP_SERVICES`, `DP_HOST_IPS`, `DP_SOCK_NAT`, `DP_LB`,
//! `DP_SERVICES6`, `DP_HOST_IPS6`, `DP_LB6`, `DP_SOCK_NAT6`.

use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use dataplane_common::{Backend, PROTO_TCP, PROTO_UDP, SockNatKey, SockNatKey6, SockNatOrig, SockNatOrig6};

use crate::maps::{CONFIG, SOCK_NAT, SOCK_NAT6};

/// Return value that lets the operation go on.
const ALLOW: i32 = 1;
const SOCK_STREAM: u32 = 1;
const SOCK_DGRAM: u32 = 2;
/// ::ffff:0:0/96 prefix word, network byte order.
const V4_MAPPED: u32 = 0x0000_ffffu32.to_be();
const LOOPBACK6_LAST: u32 = 1u32.to_be();

/// Whether this socket belongs to the daemon's namespace.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = CONFIG.get(0) else { return false };
    // SAFETY: plain helper call on the program's context.
    cfg.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == cfg.netns_cookie
}

#[inline(always)]
fn proto(ctx: &SockAddrContext) -> Option<u8> {
    // SAFETY: the context pointer is valid for this program run.
    match unsafe { (*ctx.sock_addr).type_ } {
        SOCK_STREAM => Some(PROTO_TCP),
        SOCK_DGRAM => Some(PROTO_UDP),
        _ => None,
    }
}

/// The backend of a port published on `addr:port` as seen from the host:
/// exact address first, then 0.0.0.0 for loopback and the host's addresses.
#[inline(always)]
fn service(addr: [u8; 4], port: u16, proto: u8) -> Option<Backend> {
    crate::service::published(addr, port, proto, true)
}

/// Records what the socket asked for, keyed by the backend it now goes to.
#[inline(always)]
fn remember(ctx: &SockAddrContext, b: &Backend, orig: SockNatOrig) {
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockNatKey { cookie, addr: b.addr, port: b.port, _pad: 0 };
    let _ = SOCK_NAT.insert(key, orig, 0);
}

#[inline(always)]
fn recall(ctx: &SockAddrContext, addr: [u8; 4], port: u16) -> Option<SockNatOrig> {
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockNatKey { cookie, addr, port, _pad: 0 };
    // SAFETY: map lookups return values valid for this program run.
    unsafe { SOCK_NAT.get(key) }.copied()
}

/// connect4 / sendmsg4: rewrite a published destination to its backend.
#[inline(always)]
pub fn to_backend4(ctx: &SockAddrContext) -> i32 {
    if crate::dns::to_resolver(ctx) || !ours(ctx) {
        return ALLOW;
    }
    let Some(proto) = proto(ctx) else { return ALLOW };
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    let addr = ip.to_ne_bytes();
    // A virtual IP: one backend per socket (its cookie picks the slot).
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let b = match crate::lb::pick(addr, port, (cookie ^ (cookie >> 32)) as u32) {
        crate::lb::Pick::Backend(b) => b,
        crate::lb::Pick::NoBackend => return ALLOW,
        crate::lb::Pick::NotVip => match service(addr, port, proto) {
            Some(b) => b,
            None => return ALLOW,
        },
    };
    remember(ctx, &b, SockNatOrig { addr, port, v6_loopback: 0 });
    // SAFETY: user_ip4/user_port are writable in these hooks.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(b.addr);
        (*sa).user_port = b.port as u32;
    }
    ALLOW
}

/// getpeername4 / recvmsg4: show the address the application asked for.
#[inline(always)]
pub fn from_backend4(ctx: &SockAddrContext) -> i32 {
    if crate::dns::from_resolver(ctx) || !ours(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    if let Some(o) = recall(ctx, ip.to_ne_bytes(), port) {
        // SAFETY: user_ip4/user_port are writable in these hooks.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(o.addr);
            (*sa).user_port = o.port as u32;
        }
    }
    ALLOW
}

/// connect6 / sendmsg6: [::1] and v4-mapped host addresses reach published
/// ports too (the backend as a v4-mapped address on a dual-stack socket);
/// other IPv6 addresses as [`to_backend6_native`] says.
#[inline(always)]
pub fn to_backend6(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let Some(proto) = proto(ctx) else { return ALLOW };
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (w0, w1, w2, w3, port) = unsafe {
        ((*sa).user_ip6[0], (*sa).user_ip6[1], (*sa).user_ip6[2], (*sa).user_ip6[3], (*sa).user_port as u16)
    };
    let (addr, v6_loopback) = if w0 == 0 && w1 == 0 && w2 == 0 && w3 == LOOPBACK6_LAST {
        ([127, 0, 0, 1], 1)
    } else if w0 == 0 && w1 == 0 && w2 == V4_MAPPED {
        (w3.to_ne_bytes(), 0)
    } else {
        return to_backend6_native(ctx, proto, [w0, w1, w2, w3], port);
    };
    let Some(b) = service(addr, port, proto) else { return ALLOW };
    remember(ctx, &b, SockNatOrig { addr, port, v6_loopback });
    // SAFETY: user_ip6/user_port are writable (as 32-bit words) in these hooks.
    unsafe {
        (*sa).user_ip6[0] = 0;
        (*sa).user_ip6[1] = 0;
        (*sa).user_ip6[2] = V4_MAPPED;
        (*sa).user_ip6[3] = u32::from_ne_bytes(b.addr);
        (*sa).user_port = b.port as u32;
    }
    ALLOW
}

/// connect6 / sendmsg6 to an IPv6 address: a port published over IPv6 on
/// the host's addresses, or an IPv6 VIP (one backend per socket), reached
/// at its backend (an IPv4-only sandbox's as a v4-mapped address).
#[inline(always)]
fn to_backend6_native(ctx: &SockAddrContext, proto: u8, words: [u32; 4], port: u16) -> i32 {
    let addr = words6(words);
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let b = match crate::lb::pick6(&addr, port, (cookie ^ (cookie >> 32)) as u32) {
        crate::lb::Pick6::Backend(b) => b,
        crate::lb::Pick6::NoBackend => return ALLOW,
        crate::lb::Pick6::NotVip => match crate::service::published6(&addr, port, proto) {
            Some(b) => b,
            None => return ALLOW,
        },
    };
    let key = SockNatKey6 { cookie, addr: b.addr, port: b.port, _pad: [0; 6] };
    let _ = SOCK_NAT6.insert(key, SockNatOrig6 { addr, port, _pad: [0; 6] }, 0);
    set_addr6(ctx, &b.addr, b.port);
    ALLOW
}

/// Writes the hook's IPv6 address and port.
#[inline(always)]
fn set_addr6(ctx: &SockAddrContext, addr: &[u8; 16], port: u16) {
    let (sa, to) = (ctx.sock_addr, addr_words(addr));
    // SAFETY: user_ip6/user_port are writable (as 32-bit words) in these hooks.
    unsafe {
        (*sa).user_ip6[0] = to[0];
        (*sa).user_ip6[1] = to[1];
        (*sa).user_ip6[2] = to[2];
        (*sa).user_ip6[3] = to[3];
        (*sa).user_port = port as u32;
    }
}

/// An IPv6 address from its four words (as the hooks hold them).
#[inline(always)]
fn words6(w: [u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (w[0].to_ne_bytes(), w[1].to_ne_bytes(), w[2].to_ne_bytes(), w[3].to_ne_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3]]
}

/// The four words of an IPv6 address.
#[inline(always)]
fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    let w = |i: usize| u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]]);
    [w(0), w(1), w(2), w(3)]
}

/// getpeername6 / recvmsg6.
#[inline(always)]
pub fn from_backend6(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (w0, w1, w2, w3, port) = unsafe {
        ((*sa).user_ip6[0], (*sa).user_ip6[1], (*sa).user_ip6[2], (*sa).user_ip6[3], (*sa).user_port as u16)
    };
    // Sent to an IPv6 address (a host address, a VIP): that one shown.
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockNatKey6 { cookie, addr: words6([w0, w1, w2, w3]), port, _pad: [0; 6] };
    // SAFETY: map lookups return values valid for this program run.
    if let Some(o) = unsafe { SOCK_NAT6.get(key) } {
        set_addr6(ctx, &o.addr, o.port);
        return ALLOW;
    }
    if !(w0 == 0 && w1 == 0 && w2 == V4_MAPPED) {
        return ALLOW;
    }
    if let Some(o) = recall(ctx, w3.to_ne_bytes(), port) {
        // SAFETY: user_ip6/user_port are writable (as 32-bit words) in these hooks.
        unsafe {
            if o.v6_loopback != 0 {
                (*sa).user_ip6[2] = 0;
                (*sa).user_ip6[3] = LOOPBACK6_LAST;
            } else {
                (*sa).user_ip6[3] = u32::from_ne_bytes(o.addr);
            }
            (*sa).user_port = o.port as u32;
        }
    }
    ALLOW
}
