//! Isolation between bridge networks, judged on packets leaving a sandbox.
//!
//! Maps: `DP_ENDPOINTS` (which network the sending sandbox is on),
//! `DP_SUBNETS` and `DP_SUBNETS6` (which network owns the destination).
//! A packet from a sandbox to an address inside another bridge network's
//! subnet is dropped, except to that network's gateway (a host address, as
//! Docker allows).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dataplane_common::{DropReason, NET_FLAG_INTERNAL, NET_FLAG_NO_ICC};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::{Ipv4Hdr, Ipv6Hdr},
};

use crate::{
    maps::{ENDPOINTS, SUBNETS, SUBNETS6},
    packet::ptr_at,
};

#[inline(always)]
pub fn check_isolation(ctx: &TcContext) -> DropReason {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return DropReason::InvalidPacket;
    };
    // SAFETY: ptr_at checked the bounds.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == EtherType::Ipv6 as u16 {
        return check_ipv6(ctx);
    }
    if ether_type != EtherType::Ipv4 as u16 {
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
    // The gateway is a host address: reachable from every network.
    if target.gateway == dst {
        return DropReason::Forwarded;
    }
    if target.net_id != me.net_id {
        return DropReason::PolicyNetworkIsolation;
    }
    if me.flags & NET_FLAG_NO_ICC != 0 {
        return DropReason::PolicyIcc;
    }
    DropReason::Forwarded
}

/// IPv6 from a sandbox, judged as IPv4 is: to another network's subnet
/// (`DP_SUBNETS6`) dropped, except its gateway; with ICC off, to another
/// sandbox of its own network dropped — its global address, or its
/// interface's link-local one (`fe80::`, which every sandbox has, IPv6
/// network or not); out of an `--internal` network dropped. Multicast
/// (neighbour discovery, MLD) goes on.
#[inline(always)]
pub fn check_ipv6(ctx: &TcContext) -> DropReason {
    if ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN).is_none() {
        return DropReason::InvalidPacket;
    }
    // The destination copied by the kernel into two words: read from the
    // packet as sixteen bytes, the compiler kept each in a register of its
    // own, spilled to 128 bytes of stack.
    let Ok(words) = ctx.load::<[u64; 2]>(EthHdr::LEN + 24) else {
        return DropReason::InvalidPacket;
    };
    let [first, second, ..] = words[0].to_ne_bytes();
    if first == 0xff {
        return DropReason::Forwarded;
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return pointers valid for this program run.
    let Some(me) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return DropReason::Forwarded;
    };
    let no_icc = me.flags & NET_FLAG_NO_ICC != 0;
    // fe80::/10: the link, i.e. the sandbox's own network.
    if first == 0xfe && second & 0xc0 == 0x80 {
        return if no_icc { DropReason::PolicyIcc } else { DropReason::Forwarded };
    }
    // SAFETY: both are 16 plain bytes.
    let dst: [u8; 16] = unsafe { core::mem::transmute(words) };
    match SUBNETS6.get(Key::new(128, dst)) {
        // SAFETY: as above.
        Some(t) if unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(t.gateway) } == words => {
            DropReason::Forwarded
        }
        Some(t) if t.net_id != me.net_id => DropReason::PolicyNetworkIsolation,
        Some(_) if no_icc => DropReason::PolicyIcc,
        Some(_) => DropReason::Forwarded,
        None if me.flags & NET_FLAG_INTERNAL != 0 => DropReason::PolicyInternal,
        None => DropReason::Forwarded,
    }
}
