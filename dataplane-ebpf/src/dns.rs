//! The embedded resolver's address: in a sandbox namespace the daemon
//! serves 127.0.0.11 on two ports of its own (UDP and TCP); the socket hooks
//! send the sandbox's 127.0.0.11:53 there at connect/sendmsg time and show
//! port 53 again on recvmsg/getpeername. Port 53 stays free for a DNS server
//! of the sandbox's own, as with Docker's iptables redirect.
//!
//! Maps: `DP_DNS` (keyed by the socket's network-namespace cookie).

use aya_ebpf::{EbpfContext, helpers::bpf_get_netns_cookie, programs::SockAddrContext};
use dataplane_common::{DnsPorts, RESOLVER_IP};

use crate::maps::DNS;

const DNS_PORT: u16 = 53u16.to_be();
const SOCK_STREAM: u32 = 1;

/// The resolver ports of the socket's namespace, if the daemon serves it.
#[inline(always)]
fn ports(ctx: &SockAddrContext) -> Option<DnsPorts> {
    // SAFETY: plain helper call on the program's context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: map lookups return values valid for this program run.
    unsafe { DNS.get(cookie) }.copied()
}

/// The resolver's port for this socket's type.
#[inline(always)]
fn port_for(ctx: &SockAddrContext, p: &DnsPorts) -> u16 {
    // SAFETY: the context pointer is valid for this program run.
    if unsafe { (*ctx.sock_addr).type_ } == SOCK_STREAM { p.tcp } else { p.udp }
}

/// connect4 / sendmsg4 to 127.0.0.11:53: to the resolver's own port.
/// Returns whether the address was the resolver's.
#[inline(always)]
pub fn to_resolver(ctx: &SockAddrContext) -> bool {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    if ip.to_ne_bytes() != RESOLVER_IP || port != DNS_PORT {
        return false;
    }
    let Some(p) = ports(ctx) else { return false };
    // SAFETY: user_port is writable in these hooks.
    unsafe { (*sa).user_port = port_for(ctx, &p) as u32 };
    true
}

/// recvmsg4 / getpeername4 from the resolver's own port: show port 53.
#[inline(always)]
pub fn from_resolver(ctx: &SockAddrContext) -> bool {
    let sa = ctx.sock_addr;
    // SAFETY: the context pointer is valid for this program run.
    let (ip, port) = unsafe { ((*sa).user_ip4, (*sa).user_port as u16) };
    if ip.to_ne_bytes() != RESOLVER_IP {
        return false;
    }
    let Some(p) = ports(ctx) else { return false };
    if port != port_for(ctx, &p) {
        return false;
    }
    // SAFETY: user_port is writable in these hooks.
    unsafe { (*sa).user_port = DNS_PORT as u32 };
    true
}
