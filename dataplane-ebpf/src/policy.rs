//! Isolation between bridge networks (tcx ingress on host-side veths).
//!
//! Maps: `DP_ENDPOINTS` (which network the sending sandbox is on),
//! `DP_SUBNETS` (which network owns the destination), `DP_METRICS`.
//! A packet from a sandbox to an address inside another bridge network's
//! subnet is dropped, except to that network's gateway (a host address, as
//! Docker allows). Everything else continues to the next program / the stack.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dataplane_common::{Direction, DropReason};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    maps::{ENDPOINTS, SUBNETS},
    metrics::count,
    packet::ptr_at,
};

/// tcx verdict: let the next program (or the stack) decide.
const NEXT: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT;

#[inline(always)]
pub fn veth_ingress(ctx: &TcContext) -> i32 {
    let dir = Direction::FromSandbox;
    let len = ctx.len();
    let reason = check_isolation(ctx);
    count(reason, dir, len);
    match reason {
        DropReason::Forwarded => NEXT,
        _ => DROP,
    }
}

#[inline(always)]
fn check_isolation(ctx: &TcContext) -> DropReason {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return DropReason::InvalidPacket;
    };
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return DropReason::Forwarded;
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return DropReason::InvalidPacket;
    };
    // SAFETY: ptr_at checked the bounds.
    let dst = unsafe { (*ip).dst_addr };
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return pointers valid for this program run.
    let Some(me) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        // Not one of ours (yet): leave it to the stack.
        return DropReason::Forwarded;
    };
    let Some(target) = SUBNETS.get(Key::new(32, dst)) else {
        return DropReason::Forwarded;
    };
    if target.net_id == me.net_id || target.gateway == dst {
        return DropReason::Forwarded;
    }
    DropReason::PolicyNetworkIsolation
}
