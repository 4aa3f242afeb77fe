//! tcx ingress on the uplink: packets for published ports are DNATed to
//! their sandbox, and replies to egress flows get their sandbox destination
//! back; both are redirected straight into the sandbox
//! (`bpf_redirect_peer`), skipping the bridge and the host stack.
//! Everything else goes on.
//!
//! IPv6 the same way for ports published on `::` (`DP_SERVICES6`,
//! `DP_HOST_IPS6`, `DP_CT6`).
//!
//! Maps: `DP_SERVICES`, `DP_HOST_IPS`, `DP_SUBNETS`, `DP_SUBNETS6`, `DP_CT`, `DP_CONFIG`, `DP_METRICS`,
//! `DP_SERVICES6`, `DP_HOST_IPS6`, `DP_CT6`.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, programs::TcContext};
use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{
    Backend6, CT_DIR_DNAT, CT_DIR_SNAT_REPLY, CT_FLAG_NAT46, CtEntry6, Direction, DropReason, NET_FLAG_ROUTED, PROTO_TCP,
    PROTO_UDP, VXLAN_PORT, nat46_client, v4_of_mapped,
};

use crate::{
    conntrack, firewall, icmp46,
    maps::{CONFIG, SUBNETS, SUBNETS6},
    nat::{self, End},
    parse::{self, Flow, Flow6},
    redirect, service,
};

const NEXT: i32 = TC_ACT_UNSPEC;

#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    // Each family in a function of its own (BPF-to-BPF calls), so the
    // IPv6 path's call chain does not add to the IPv4 path's frame.
    if !parse::is_ipv6(ctx) {
        ingress4(ctx)
    } else if parse::is_icmp6_error(ctx) {
        // An error about a NAT46 flow is translated from here, next to
        // the parse rather than under it (stack).
        match icmp6_error(ctx) {
            icmp46::NAT46_ERROR => icmp46::error_to_sandbox(ctx),
            v => v,
        }
    } else {
        // NAT46 translation called from here, next to the IPv6 path
        // rather than under it: their frames together pass BPF's 512 bytes.
        // (Only a verdict comes back: a map pointer returned through the
        // caller's stack reaches the verifier as a plain number.)
        match ingress6(ctx) {
            nat::NAT46_PENDING => nat::nat46_forward(ctx, Direction::ToSandbox),
            v => v,
        }
    }
}

/// IPv4 (and anything else not IPv6) from outside.
#[inline(never)]
fn ingress4(ctx: &TcContext) -> i32 {
    let Some(flow) = parse::l4_flow(ctx) else { return icmp_error(ctx) };
    // The overlay's own VXLAN packets (UDP 4789 to this host, in a
    // cluster) go straight on to the VXLAN socket: no published port can
    // be there, and nothing here is to be tracked.
    if flow.proto == PROTO_UDP
        && flow.dport == VXLAN_PORT.to_be()
        && CONFIG.get(0).is_some_and(|c| c.vxlan_ifindex != 0)
    {
        return NEXT;
    }
    // Garbage flags on a flow of ours (tracked, or to a published port) go
    // before they can move any state; the host's own traffic is not ours to judge.
    if !conntrack::valid_tcp_flags(&flow) && (conntrack::tracked(&flow) || service::lookup(&flow).is_some()) {
        return verdict(ctx, DropReason::InvalidPacket);
    }
    // A connection opening to a published port is tracked anew (both
    // entries rewritten), whatever is left of an earlier one on its tuple.
    let fresh = if conntrack::opens(&flow) { service::lookup(&flow) } else { None };
    let tracked = if fresh.is_some() { None } else { conntrack::lookup(&flow) };
    let (target, reason) = match tracked {
        Some(e) if e.dir == CT_DIR_DNAT => {
            if firewall::denied(flow.saddr, flow.dport, flow.proto, e.ifindex) {
                return verdict(ctx, DropReason::FirewallDeny);
            }
            (e, DropReason::NatPublished)
        }
        Some(e) if e.dir == CT_DIR_SNAT_REPLY => (e, DropReason::NatEgressReply),
        Some(_) => return NEXT,
        None => {
            let Some(b) = fresh.or_else(|| service::lookup(&flow)) else {
                return direct_access(ctx, flow.daddr);
            };
            // The firewall's rules before any state is made.
            if firewall::denied(flow.saddr, flow.dport, flow.proto, b.ifindex) {
                return verdict(ctx, DropReason::FirewallDeny);
            }
            // From outside, only a SYN opens a TCP flow: bare ACK/FIN/RST
            // packets must not fill the table.
            if flow.proto == PROTO_TCP && !conntrack::opens(&flow) {
                return verdict(ctx, DropReason::CtNoFlow);
            }
            let e = conntrack::dnat_entry(&b);
            // SAFETY: the skb pointer is valid for this program run.
            let uplink = unsafe { (*ctx.skb.skb).ifindex };
            if conntrack::track_dnat(&flow, &e, uplink).is_err() {
                return verdict(ctx, DropReason::CtInsertFailed);
            }
            (e, DropReason::NatPublished)
        }
    };
    if nat::rewrite(ctx, &flow, End::Destination, target.addr, target.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::to_sandbox(ctx, target.ifindex, target.mac, reason, Direction::ToSandbox)
}

/// An ICMP error about an egress flow or a published port's reply (port
/// unreachable, fragmentation needed, time exceeded): translated back and
/// handed to the sandbox.
#[inline(always)]
fn icmp_error(ctx: &TcContext) -> i32 {
    let Some(e) = parse::icmp_error(ctx) else {
        return match parse::ipv4_daddr(ctx) {
            // Broken headers addressed to the host or a sandbox.
            Some(daddr) if parse::malformed(ctx) && (service::is_host(daddr) || SUBNETS.get(Key::new(32, daddr)).is_some()) => {
                verdict(ctx, DropReason::InvalidPacket)
            }
            Some(daddr) => direct_access(ctx, daddr),
            None => NEXT,
        };
    };
    // The embedded packet is one we sent; its reply direction is tracked.
    let reply = Flow {
        saddr: e.inner.daddr,
        daddr: e.inner.saddr,
        sport: e.inner.dport,
        dport: e.inner.sport,
        ..e.inner
    };
    let Some(ct) = conntrack::lookup(&reply) else { return NEXT };
    // About an egress flow, or about a published port's reply (whose
    // quoted source is the host's port: the sandbox's is put back).
    let reason = match ct.dir {
        CT_DIR_SNAT_REPLY => DropReason::NatEgressReply,
        CT_DIR_DNAT if ct.ifindex != 0 => DropReason::NatPublished,
        _ => return NEXT,
    };
    if nat::rewrite_icmp_error(ctx, &e, ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::to_sandbox(ctx, ct.ifindex, ct.mac, reason, Direction::ToSandbox)
}

/// A packet from outside to a sandbox address that no published port or
/// tracked flow accounts for (a client routing the subnet via the host):
/// dropped, unless the network is `gateway_mode_ipv4=routed` (Docker 28's
/// rule). The gateway is the host's own address and goes on.
#[inline(always)]
fn direct_access(ctx: &TcContext, daddr: [u8; 4]) -> i32 {
    match SUBNETS.get(Key::new(32, daddr)) {
        Some(n) if n.gateway != daddr && n.flags & NET_FLAG_ROUTED == 0 => {
            verdict(ctx, DropReason::PolicyDirectAccess)
        }
        _ => NEXT,
    }
}

/// IPv6 from outside: a port published over IPv6 is DNATed to its
/// sandbox's IPv6 address (the client's address kept) and redirected into
/// it, as for IPv4; replies to egress get their sandbox destination back
/// (NAT66); the next packets of a flow follow its entry; a packet for a
/// sandbox that nothing accounts for is refused.
#[inline(never)]
fn ingress6(ctx: &TcContext) -> i32 {
    let Some(flow) = parse::l4_flow6(ctx) else {
        // No flow of ours (neighbour discovery, other protocols): the
        // direct-access rule alone.
        return match parse::ipv6_daddr(ctx) {
            Some(daddr) => direct_access6(ctx, &daddr),
            None => NEXT,
        };
    };
    if !conntrack::valid_flags(flow.proto, flow.tcp_flags)
        && (conntrack::tracked6(&flow) || service::lookup6(&flow).is_some())
    {
        return verdict(ctx, DropReason::InvalidPacket);
    }
    let fresh = if conntrack::opens6(&flow) { service::lookup6(&flow) } else { None };
    let tracked = if fresh.is_some() { None } else { conntrack::lookup6(&flow) };
    let (target, reason) = match tracked {
        Some(e) if e.dir == CT_DIR_DNAT => {
            if firewall::denied6(&flow.saddr, flow.dport, flow.proto, e.ifindex) {
                return verdict(ctx, DropReason::FirewallDeny);
            }
            (e, DropReason::NatPublished)
        }
        Some(e) if e.dir == CT_DIR_SNAT_REPLY => (e, DropReason::NatEgressReply),
        Some(_) => return NEXT,
        None => {
            let Some(b) = fresh.or_else(|| service::lookup6(&flow)) else {
                return direct_access6(ctx, &flow.daddr);
            };
            if firewall::denied6(&flow.saddr, flow.dport, flow.proto, b.ifindex) {
                return verdict(ctx, DropReason::FirewallDeny);
            }
            if flow.proto == PROTO_TCP && !conntrack::opens6(&flow) {
                return verdict(ctx, DropReason::CtNoFlow);
            }
            // SAFETY: the skb pointer is valid for this program run.
            let uplink = unsafe { (*ctx.skb.skb).ifindex };
            // A sandbox with only IPv4 (its address v4-mapped): NAT46.
            let tracked = if v4_of_mapped(&b.addr).is_some() {
                nat46_track(&flow, &b, uplink)
            } else {
                conntrack::track_dnat6(&flow, b.addr, b.port, b.ifindex, b.mac, uplink)
            };
            match tracked {
                Ok(e) => (e, DropReason::NatPublished),
                Err(_) => return verdict(ctx, DropReason::CtInsertFailed),
            }
        }
    };
    if target.flags & CT_FLAG_NAT46 != 0 {
        return nat::NAT46_PENDING;
    }
    if nat::rewrite6(ctx, &flow, End::Destination, &target.addr, target.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::to_sandbox(ctx, target.ifindex, target.mac, reason, Direction::ToSandbox)
}

/// Tracks a new NAT46 flow (a function of its own: its frame is not
/// added to the translation's).
#[inline(never)]
fn nat46_track(flow: &Flow6, b: &Backend6, uplink: u32) -> Result<&'static CtEntry6, i32> {
    conntrack::track_dnat46(flow, b, nat46_client(&flow.saddr), (uplink, [0; 6]))
}


/// An ICMPv6 error about an egress flow or a published port's reply
/// (packet too big, unreachable, time exceeded): translated back and
/// handed to the sandbox, so its path MTU discovery works through NAT66
/// and behind published ports. Anything else goes to the direct
/// access rule. A function of its own (a BPF-to-BPF call, on errors only).
#[inline(never)]
fn icmp6_error(ctx: &TcContext) -> i32 {
    let Some(e) = parse::icmp6_error(ctx) else { return NEXT };
    // The embedded packet is one we sent; its reply direction is tracked.
    let reply = Flow6 {
        proto: e.proto,
        saddr: e.inner_daddr,
        daddr: e.inner_saddr,
        sport: e.inner_dport,
        dport: e.inner_sport,
        l4_off: 0,
        tcp_flags: 0,
    };
    // About an egress flow, or a published port's reply (NAT46: the
    // error changes family too).
    let (ct, reason) = match conntrack::lookup6(&reply) {
        Some(ct) if ct.dir == CT_DIR_SNAT_REPLY => (ct, DropReason::NatEgressReply),
        Some(ct) if ct.dir == CT_DIR_DNAT && ct.flags & CT_FLAG_NAT46 != 0 => return icmp46::NAT46_ERROR,
        Some(ct) if ct.dir == CT_DIR_DNAT => (ct, DropReason::NatPublished),
        Some(_) => return NEXT,
        // About nothing we sent: to a sandbox, that is direct access.
        None => return direct_access6(ctx, &e.outer_daddr),
    };
    if nat::rewrite_icmp6_error(ctx, &e, &ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::to_sandbox(ctx, ct.ifindex, ct.mac, reason, Direction::ToSandbox)
}

/// The same rule for IPv6: a packet from outside to a sandbox of a
/// dual-stack network is dropped unless the network is routed — no
/// unpublished port is reachable over IPv6 (the gap Docker's ip6tables
/// rules long left open). The gateway is the host's and goes on.
#[inline(always)]
fn direct_access6(ctx: &TcContext, daddr: &[u8; 16]) -> i32 {
    match SUBNETS6.get(Key::new(128, *daddr)) {
        Some(n) if n.gateway != *daddr && n.flags & NET_FLAG_ROUTED == 0 => {
            verdict(ctx, DropReason::PolicyDirectAccess)
        }
        _ => NEXT,
    }
}

#[inline(always)]
fn verdict(ctx: &TcContext, reason: DropReason) -> i32 {
    redirect::verdict(ctx, reason, Direction::ToSandbox)
}
