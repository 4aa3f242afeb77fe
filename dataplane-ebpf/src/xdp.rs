//! XDP on the uplink (`daemon --xdp`): a client's packet to a published
//! port that a firewall rule denies is dropped in the driver, before the
//! kernel allocates an skb for it — the cheapest place a flood of denied
//! packets can die. Everything else passes on to the tcx program, which
//! judges the same rules again (so the verdict never depends on whether
//! XDP is attached).
//!
//! Maps: `DP_FIREWALL`, `DP_FIREWALL6`, `DP_FIREWALL_RULES`, `DP_SERVICES`,
//! `DP_SERVICES6`, `DP_HOST_IPS`, `DP_HOST_IPS6`, `DP_ENDPOINTS`, `DP_METRICS`, `DP_EVENTS`.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use dataplane_common::{Direction, DropReason, PROTO_TCP, PROTO_UDP};

use crate::{events, firewall, metrics::count, service};

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// `N` bytes at `off`, bounds-checked for the verifier.
#[inline(always)]
fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + N > end {
        return None;
    }
    // SAFETY: in bounds (checked above); packet bytes, any alignment.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const [u8; N]) })
}

#[inline(always)]
pub fn uplink(ctx: &XdpContext) -> u32 {
    if !firewall::active() {
        return xdp_action::XDP_PASS;
    }
    let Some(eth) = bytes::<2>(ctx, 12) else { return xdp_action::XDP_PASS };
    match u16::from_be_bytes(eth) {
        ETH_P_IP => ipv4(ctx),
        ETH_P_IPV6 => ipv6(ctx),
        _ => xdp_action::XDP_PASS,
    }
}

/// Drops the packet as FIREWALL_DENY (counted; an event for monitor).
#[inline(always)]
fn deny(ctx: &XdpContext, tuple: Option<events::Tuple>) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    count(DropReason::FirewallDeny, Direction::ToSandbox, len);
    // SAFETY: the xdp_md pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    events::emit(DropReason::FirewallDeny, Direction::ToSandbox, ifindex, tuple);
    xdp_action::XDP_DROP
}

#[inline(never)]
fn ipv4(ctx: &XdpContext) -> u32 {
    let Some(ip) = bytes::<20>(ctx, ETH_LEN) else { return xdp_action::XDP_PASS };
    let (ihl, proto) = (usize::from(ip[0] & 0x0f) * 4, ip[9]);
    // Later fragments carry no ports: tcx sees them.
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    if ihl < 20 || (proto != PROTO_TCP && proto != PROTO_UDP) || fragment_offset != 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(ports) = bytes::<4>(ctx, ETH_LEN + ihl) else { return xdp_action::XDP_PASS };
    let saddr = [ip[12], ip[13], ip[14], ip[15]];
    let daddr = [ip[16], ip[17], ip[18], ip[19]];
    // Ports as the maps keep them (network byte order, read as they lie).
    let sport = u16::from_ne_bytes([ports[0], ports[1]]);
    let dport = u16::from_ne_bytes([ports[2], ports[3]]);
    let Some(b) = service::published(daddr, dport, proto, false) else { return xdp_action::XDP_PASS };
    if firewall::denied(saddr, dport, proto, b.ifindex) {
        return deny(ctx, Some(events::Tuple { proto, saddr, daddr, sport, dport }));
    }
    xdp_action::XDP_PASS
}

#[inline(never)]
fn ipv6(ctx: &XdpContext) -> u32 {
    let Some(head) = bytes::<8>(ctx, ETH_LEN) else { return xdp_action::XDP_PASS };
    let proto = head[6];
    // Extension headers: left to tcx.
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return xdp_action::XDP_PASS;
    }
    let (Some(saddr), Some(daddr), Some(ports)) =
        (bytes::<16>(ctx, ETH_LEN + 8), bytes::<16>(ctx, ETH_LEN + 24), bytes::<4>(ctx, ETH_LEN + 40))
    else {
        return xdp_action::XDP_PASS;
    };
    let dport = u16::from_ne_bytes([ports[2], ports[3]]);
    let Some(b) = service::published6(&daddr, dport, proto) else { return xdp_action::XDP_PASS };
    if firewall::denied6(&saddr, dport, proto, b.ifindex) {
        return deny(ctx, None);
    }
    xdp_action::XDP_PASS
}
