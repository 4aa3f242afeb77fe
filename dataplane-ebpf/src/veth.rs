//! tcx ingress on every host-side veth (packets leaving a sandbox):
//! tracked flows first (replies of published ports, egress SNAT, hairpin),
//! then isolation between networks for new flows, then new hairpin flows
//! (a published port reached through a host address, DNATed here and
//! redirected into the backend with `bpf_redirect_peer`) and new egress
//! (SNAT to the uplink address, out with `bpf_redirect_neigh`). Traffic to
//! other networks, the host and the gateway goes on to the stack.
//!
//! IPv6: replies of ports published over IPv6 (`DP_CT6`) leave as from the
//! host; egress is masqueraded to the uplink's IPv6 address (NAT66,
//! `DP_UPLINK6`) unless the network is routed; isolation and ICC are
//! judged as for IPv4 (`DP_SUBNETS6`); an overlay sandbox on another host
//! (`DP_REMOTE6`) is reached through VXLAN, its neighbour solicitations
//! answered here.
//!
//! Maps: `DP_ENDPOINTS`, `DP_LOCAL`, `DP_SUBNETS`, `DP_SUBNETS6`, `DP_HOST_IPS`, `DP_CONFIG`, `DP_CT`, `DP_CT6`,
//! `DP_LB`, `DP_METRICS`.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dataplane_common::{
    Backend, Backend6, CT_DIR_DNAT, CT_DIR_REPLY, CT_DIR_ROUTED, CT_DIR_SNAT, CT_FLAG_HAIRPIN_SELF, CtEntry, CtEntry6, Direction, DropReason,
    NET_FLAG_INTERNAL, NET_FLAG_NO_MASQUERADE, NET_FLAG_ROUTED, PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP,
    CT_FLAG_NAT46, CtKey6, is_nat46_client, nat46_client, v4_mapped, v4_of_mapped,
};

use crate::{
    conntrack, icmp46, lb,
    maps::{CONFIG, ENDPOINTS, HOST_IPS, HOST_IPS6, LOCAL, NAT46, REMOTE, REMOTE6, SUBNETS, SUBNETS6, UPLINK6},
    nat::{self, End},
    overlay,
    parse::{self, Flow, Flow6},
    policy, redirect, service,
};

#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    // Each family, and each IPv6 step, in a function of its own
    // (BPF-to-BPF calls): inlined together, their tuples and entries need
    // more than the 512 bytes of stack BPF allows a call chain.
    if parse::is_ipv6(ctx) {
        // NAT46 translation called from here, next to the IPv6 path
        // rather than under it: their frames together pass 512 bytes.
        return match ingress6(ctx) {
            nat::NAT46_PENDING => nat::nat46_forward(ctx, Direction::FromSandbox),
            v => v,
        };
    }
    // A reply to an IPv6 client of a NAT46 flow (its IPv4 stand-in as
    // destination), or an ICMP error about its packet; other traffic to
    // that prefix goes on as any.
    if parse::ipv4_daddr(ctx).is_some_and(is_nat46_client) {
        if let Some(v) = nat46_reply(ctx) {
            return v;
        }
        match icmp46::error_to_client(ctx) {
            icmp46::NOT_NAT46 => {}
            v => return v,
        }
    }
    ingress4(ctx)
}

/// IPv4 (and ARP, and anything else not IPv6) from a sandbox.
#[inline(never)]
fn ingress4(ctx: &TcContext) -> i32 {
    if let Some(v) = overlay::arp_proxy(ctx) {
        return v;
    }
    let flow = parse::l4_flow(ctx);
    // Tracked flows were allowed when they started (a reply may cross
    // networks: a published port reached through a host address).
    if let Some(f) = &flow {
        match conntrack::lookup(f) {
            Some(ct) if ct.dir == CT_DIR_REPLY => return reply(ctx, f, &ct),
            Some(ct) if ct.dir == CT_DIR_ROUTED => return verdict(ctx, DropReason::Forwarded),
            Some(ct) if ct.dir == CT_DIR_SNAT => {
                return send_out(ctx, f, ct.addr, ct.port, ct.ifindex, DropReason::NatEgress);
            }
            // A connection opening on a tuple still tracked as hairpin is
            // a new flow (port reuse): checked and tracked anew below.
            Some(ct) if ct.dir == CT_DIR_DNAT && !conntrack::opens(f) => {
                return hairpin_forward(ctx, f, &ct, DropReason::NatPublished);
            }
            _ => {}
        }
    }
    let reason = policy::check_isolation(ctx);
    if !reason.is_pass() {
        return verdict(ctx, reason);
    }
    let Some(flow) = flow else {
        return verdict(ctx, DropReason::Forwarded);
    };
    // A virtual IP: the Maglev slot of the flow names the backend (ICMP
    // goes on to the host, which holds the VIP and answers pings).
    if flow.proto != PROTO_ICMP {
        match lb::pick_flow(&flow) {
            lb::Pick::Backend(b) => return new_hairpin(ctx, &flow, &b, DropReason::LbForwarded),
            lb::Pick::NoBackend => return verdict(ctx, DropReason::LbNoBackend),
            lb::Pick::NotVip => {}
        }
    }
    match service::lookup(&flow) {
        Some(b) => new_hairpin(ctx, &flow, &b, DropReason::NatPublished),
        None => egress(ctx, &flow),
    }
}

/// A sandbox reaches a published port (of another sandbox or its own)
/// through a host address: DNAT it here, as the uplink would.
#[inline(always)]
fn new_hairpin(ctx: &TcContext, flow: &Flow, b: &Backend, reason: DropReason) -> i32 {
    // As from outside: only a well-formed SYN opens a TCP flow.
    if !conntrack::valid_tcp_flags(flow) {
        return verdict(ctx, DropReason::InvalidPacket);
    }
    if flow.proto == PROTO_TCP && !conntrack::opens(flow) {
        return verdict(ctx, DropReason::CtNoFlow);
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return values valid for this program run.
    let Some(me) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return verdict(ctx, DropReason::Forwarded);
    };
    let gateway = if b.addr == flow.saddr {
        match SUBNETS.get(Key::new(32, flow.saddr)) {
            Some(n) => Some(n.gateway),
            None => return verdict(ctx, DropReason::Forwarded),
        }
    } else {
        None
    };
    let dnat = conntrack::dnat_entry(b);
    match conntrack::track_hairpin(flow, &dnat, ifindex, me.mac, gateway) {
        Ok(ct) => hairpin_forward(ctx, flow, &ct, reason),
        Err(_) => verdict(ctx, DropReason::CtInsertFailed),
    }
}

/// Forward direction of a hairpin flow: DNAT (and, to itself, SNAT to the
/// gateway), then straight into the backend sandbox.
#[inline(always)]
fn hairpin_forward(ctx: &TcContext, flow: &Flow, ct: &CtEntry, reason: DropReason) -> i32 {
    if nat::rewrite(ctx, flow, End::Destination, ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    // A backend on another host: through the tunnel.
    if ct.ifindex == 0 {
        // SAFETY: map lookups return values valid for this program run.
        return match unsafe { REMOTE.get(ct.addr) } {
            Some(r) => overlay::encap_as(ctx, r, reason),
            None => verdict(ctx, DropReason::LbNoBackend),
        };
    }
    if ct.flags & CT_FLAG_HAIRPIN_SELF != 0 {
        let Some(n) = SUBNETS.get(Key::new(32, flow.saddr)) else {
            return verdict(ctx, DropReason::NatRewriteFailed);
        };
        if nat::rewrite(ctx, flow, End::Source, n.gateway, flow.sport).is_err() {
            return verdict(ctx, DropReason::NatRewriteFailed);
        }
    }
    into_sandbox(ctx, ct.ifindex, ct.mac, reason)
}

/// Reply of a published-port flow: source restored; back to a sandbox
/// (hairpin) or out of the uplink.
#[inline(always)]
fn reply(ctx: &TcContext, flow: &Flow, ct: &CtEntry) -> i32 {
    if ct.mac == [0; 6] {
        return send_out(ctx, flow, ct.addr, ct.port, ct.ifindex, DropReason::NatReply);
    }
    if nat::rewrite(ctx, flow, End::Source, ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    // To itself: the reply went to the gateway; give it back its own address.
    if ct.flags & CT_FLAG_HAIRPIN_SELF != 0
        && nat::rewrite(ctx, flow, End::Destination, flow.saddr, flow.dport).is_err()
    {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    into_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply)
}

/// Redirects to the peer of host-side veth `ifindex`.
#[inline(always)]
fn into_sandbox(ctx: &TcContext, ifindex: u32, mac: [u8; 6], reason: DropReason) -> i32 {
    redirect::to_sandbox(ctx, ifindex, mac, reason, Direction::FromSandbox)
}

/// A new flow from a sandbox: SNAT it if it leaves the host.
#[inline(always)]
fn egress(ctx: &TcContext, flow: &Flow) -> i32 {
    // Our networks, the gateway and the host's own addresses stay on this host.
    if SUBNETS.get(Key::new(32, flow.daddr)).is_some() || unsafe { HOST_IPS.get(flow.daddr) }.is_some() {
        if conntrack::opens(flow) {
            conntrack::forget_stale_reply(flow);
        }
        // Another sandbox of this network (isolation let it through):
        // handed over here, so no host firewall policy on the bridge
        // (br_netfilter, FORWARD DROP) can come between them.
        // SAFETY: map lookups return values valid for this program run.
        if let Some(t) = unsafe { LOCAL.get(flow.daddr) } {
            // SAFETY: the skb pointer is valid for this program run.
            let me = unsafe { (*ctx.skb.skb).ifindex };
            if t.ifindex != me {
                return redirect::to_neighbour(ctx, t.ifindex, t.mac, Direction::FromSandbox);
            }
        }
        // An overlay sandbox on another host: VXLAN toward it.
        // SAFETY: map lookups return values valid for this program run.
        if let Some(r) = unsafe { REMOTE.get(flow.daddr) } {
            return overlay::encap(ctx, r);
        }
        return verdict(ctx, DropReason::Forwarded);
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return values valid for this program run.
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return verdict(ctx, DropReason::Forwarded);
    };
    if ep.flags & NET_FLAG_INTERNAL != 0 {
        return verdict(ctx, DropReason::PolicyInternal);
    }
    if ep.flags & NET_FLAG_NO_MASQUERADE != 0 {
        // Routed as is; tracked so the answers may come back in (direct
        // access from outside is refused on the uplink otherwise).
        if ep.flags & NET_FLAG_ROUTED == 0 && conntrack::track_routed(flow, ifindex, ep.mac).is_err() {
            return verdict(ctx, DropReason::CtInsertFailed);
        }
        return verdict(ctx, DropReason::Forwarded);
    }
    let Some(cfg) = CONFIG.get(0) else { return verdict(ctx, DropReason::Forwarded) };
    if cfg.uplink_ifindex == 0 {
        return verdict(ctx, DropReason::Forwarded);
    }
    let (ip, min, max, uplink, mac) =
        (cfg.uplink_ip, cfg.snat_port_min, cfg.snat_port_max, cfg.uplink_ifindex, ep.mac);
    match conntrack::track_snat(flow, ip, min, max, uplink, ifindex, mac) {
        Ok(ct) => send_out(ctx, flow, ct.addr, ct.port, ct.ifindex, DropReason::NatEgress),
        Err(_) => verdict(ctx, DropReason::NatPortExhausted),
    }
}

/// A sandbox reaching a port that an IPv4-only sandbox publishes, through
/// the host's IPv6 address (NAT46 hairpin): tracked here, with the replies
/// going back into this sandbox.
#[inline(never)]
fn nat46_hairpin(ctx: &TcContext, flow: &Flow6, b: &Backend6) -> i32 {
    if !conntrack::valid_flags(flow.proto, flow.tcp_flags) {
        return verdict(ctx, DropReason::InvalidPacket);
    }
    if flow.proto == PROTO_TCP && !conntrack::opens6(flow) {
        return verdict(ctx, DropReason::CtNoFlow);
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return values valid for this program run.
    let Some(me) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return verdict(ctx, DropReason::Forwarded);
    };
    match conntrack::track_dnat46(flow, b, nat46_client(&flow.saddr), (ifindex, me.mac)) {
        Ok(_) => nat::NAT46_PENDING,
        Err(_) => verdict(ctx, DropReason::CtInsertFailed),
    }
}

/// NAT46 outbound: a sandbox's IPv4 reply to an IPv6 client becomes IPv6,
/// from the host address and port the client used, and leaves through the
/// uplink (or, to a sandbox client, goes into it). None when the packet
/// belongs to no NAT46 flow.
#[inline(never)]
fn nat46_reply(ctx: &TcContext) -> Option<i32> {
    let flow = parse::l4_flow(ctx)?;
    if flow.proto != PROTO_TCP && flow.proto != PROTO_UDP {
        return None;
    }
    let mapped = Flow6 {
        proto: flow.proto,
        saddr: v4_mapped(flow.saddr),
        daddr: v4_mapped(flow.daddr),
        sport: flow.sport,
        dport: flow.dport,
        l4_off: flow.l4_off,
        tcp_flags: flow.tcp_flags,
    };
    let ct = conntrack::lookup6(&mapped)?;
    if ct.dir != CT_DIR_REPLY || ct.flags & CT_FLAG_NAT46 == 0 {
        return None;
    }
    let key = CtKey6::between(flow.proto, (mapped.saddr, flow.sport), (mapped.daddr, flow.dport));
    // SAFETY: map lookups return values valid for this program run.
    let Some(client) = (unsafe { NAT46.get(key) }) else {
        return Some(verdict(ctx, DropReason::CtNoFlow));
    };
    if nat::to_ipv6(ctx, &flow, &ct.addr, client, ct.port).is_err() {
        return Some(verdict(ctx, DropReason::NatRewriteFailed));
    }
    if ct.mac != [0; 6] {
        return Some(into_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply));
    }
    Some(redirect::out_of(ctx, ct.ifindex, DropReason::NatReply, Direction::FromSandbox))
}

/// IPv6 from a sandbox: tracked flows first (replies of ports published
/// over IPv6 leave as from the host, NAT66 egress keeps its port), then
/// isolation, then new egress.
#[inline(never)]
fn ingress6(ctx: &TcContext) -> i32 {
    // Neighbour discovery and the like: judged by the policy alone, but
    // a solicitation for an overlay sandbox on another host is answered.
    let Some(flow) = parse::l4_flow6(ctx) else {
        return match overlay::ndp_proxy(ctx) {
            overlay::NOT_SOLICITATION => verdict(ctx, policy::check_ipv6(ctx)),
            v => v,
        };
    };
    let flow = &flow;
    match conntrack::lookup6(flow) {
        // A reply leaving through the uplink, or (hairpin) into a sandbox.
        Some(ct) if ct.dir == CT_DIR_REPLY && ct.mac == [0; 6] => {
            return send_out6(ctx, flow, ct, DropReason::NatReply);
        }
        Some(ct) if ct.dir == CT_DIR_REPLY => return reply6(ctx, flow, ct),
        Some(ct) if ct.dir == CT_DIR_SNAT => return send_out6(ctx, flow, ct, DropReason::NatEgress),
        Some(ct) if ct.dir == CT_DIR_ROUTED => return verdict(ctx, DropReason::Forwarded),
        // A connection opening on a tuple still tracked is a new flow (port reuse).
        Some(ct) if ct.dir == CT_DIR_DNAT && ct.flags & CT_FLAG_NAT46 != 0 && !conntrack::opens6(flow) => {
            return nat::NAT46_PENDING;
        }
        Some(ct) if ct.dir == CT_DIR_DNAT && !conntrack::opens6(flow) => {
            return hairpin_forward6(ctx, flow, ct, DropReason::NatPublished);
        }
        _ => {}
    }
    let reason = policy::check_ipv6(ctx);
    if !reason.is_pass() {
        return verdict(ctx, reason);
    }
    // A virtual IP (ICMPv6 goes on to the host, which holds the VIP).
    if flow.proto != PROTO_ICMP6 {
        match lb::pick_flow6(flow) {
            lb::Pick6::Backend(b) => {
                return match new_hairpin6(ctx, flow, &b) {
                    Ok(ct) => hairpin_forward6(ctx, flow, ct, DropReason::LbForwarded),
                    Err(reason) => verdict(ctx, reason),
                };
            }
            lb::Pick6::NoBackend => return verdict(ctx, DropReason::LbNoBackend),
            lb::Pick6::NotVip => {}
        }
    }
    let Some(b) = service::lookup6(flow) else {
        // An overlay sandbox on another host (isolation let it through): VXLAN toward it.
        // SAFETY: map lookups return values valid for this program run.
        if let Some(r) = unsafe { REMOTE6.get(flow.daddr) } {
            return overlay::encap(ctx, r);
        }
        return match egress6(ctx, flow) {
            Ok(ct) => send_out6(ctx, flow, ct, DropReason::NatEgress),
            Err(reason) => verdict(ctx, reason),
        };
    };
    // A port whose sandbox has only IPv4: NAT46 hairpin.
    if v4_of_mapped(&b.addr).is_some() {
        return nat46_hairpin(ctx, flow, &b);
    }
    match new_hairpin6(ctx, flow, &b) {
        Ok(ct) => hairpin_forward6(ctx, flow, ct, DropReason::NatPublished),
        Err(reason) => verdict(ctx, reason),
    }
}

/// A sandbox reaches a port published over IPv6 (of another sandbox or its
/// own) through a host address: tracked here, as the uplink would (to
/// itself, its source becomes the gateway).
#[inline(never)]
fn new_hairpin6(ctx: &TcContext, flow: &Flow6, b: &Backend6) -> Result<&'static CtEntry6, DropReason> {
    if !conntrack::valid_flags(flow.proto, flow.tcp_flags) {
        return Err(DropReason::InvalidPacket);
    }
    if flow.proto == PROTO_TCP && !conntrack::opens6(flow) {
        return Err(DropReason::CtNoFlow);
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return values valid for this program run.
    let Some(me) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return Err(DropReason::Forwarded);
    };
    let gateway = if b.addr == flow.saddr {
        match SUBNETS6.get(Key::new(128, flow.saddr)) {
            Some(n) => Some(n.gateway),
            None => return Err(DropReason::Forwarded),
        }
    } else {
        None
    };
    conntrack::track_hairpin6(flow, b, ifindex, me.mac, gateway).map_err(|_| DropReason::CtInsertFailed)
}

/// Forward direction of an IPv6 hairpin flow: DNAT (and, to itself, SNAT
/// to the gateway), then straight into the backend sandbox.
#[inline(never)]
fn hairpin_forward6(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6, reason: DropReason) -> i32 {
    if nat::rewrite6(ctx, flow, End::Destination, &ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    // A backend on another host: through the tunnel.
    if ct.ifindex == 0 {
        // SAFETY: map lookups return values valid for this program run.
        return match unsafe { REMOTE6.get(ct.addr) } {
            Some(r) => overlay::encap_as(ctx, r, reason),
            None => verdict(ctx, DropReason::LbNoBackend),
        };
    }
    if ct.flags & CT_FLAG_HAIRPIN_SELF != 0 {
        let Some(n) = SUBNETS6.get(Key::new(128, flow.saddr)) else {
            return verdict(ctx, DropReason::NatRewriteFailed);
        };
        if nat::rewrite6(ctx, flow, End::Source, &n.gateway, flow.sport).is_err() {
            return verdict(ctx, DropReason::NatRewriteFailed);
        }
    }
    into_sandbox(ctx, ct.ifindex, ct.mac, reason)
}

/// Reply of an IPv6 hairpin flow: source restored, back into the sandbox
/// that opened it.
#[inline(never)]
fn reply6(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6) -> i32 {
    if nat::rewrite6(ctx, flow, End::Source, &ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    // To itself: the reply went to the gateway; give it back its own address.
    if ct.flags & CT_FLAG_HAIRPIN_SELF != 0
        && nat::rewrite6(ctx, flow, End::Destination, &flow.saddr, flow.dport).is_err()
    {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    into_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply)
}

/// A new IPv6 flow from a sandbox: masqueraded to the uplink's IPv6
/// address (NAT66) when it leaves the host from a NATed network (the
/// SNAT entry is returned for the caller to send the packet out: no
/// deeper call chain); a network with masquerade off is tracked so its
/// answers come back in; a routed one goes on untouched (`Err` holds the
/// verdict, passing or not).
#[inline(never)]
fn egress6(ctx: &TcContext, flow: &Flow6) -> Result<&'static CtEntry6, DropReason> {
    // Our networks and the host's own addresses stay on this host.
    // SAFETY: map lookups return values valid for this program run.
    if SUBNETS6.get(Key::new(128, flow.daddr)).is_some() || unsafe { HOST_IPS6.get(flow.daddr) }.is_some() {
        return Err(DropReason::Forwarded);
    }
    // The source network's IPv6 gateway mode (its own, gateway_mode_ipv6).
    let Some(net) = SUBNETS6.get(Key::new(128, flow.saddr)) else {
        return Err(DropReason::Forwarded);
    };
    if net.flags & NET_FLAG_INTERNAL != 0 {
        return Err(DropReason::PolicyInternal);
    }
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: map lookups return values valid for this program run.
    let Some(ep) = (unsafe { ENDPOINTS.get(ifindex) }) else {
        return Err(DropReason::Forwarded);
    };
    if net.flags & NET_FLAG_NO_MASQUERADE != 0 {
        if net.flags & NET_FLAG_ROUTED == 0 && conntrack::track_routed6(flow, ifindex, ep.mac).is_err() {
            return Err(DropReason::CtInsertFailed);
        }
        return Err(DropReason::Forwarded);
    }
    let (Some(cfg), Some(nat_addr)) = (CONFIG.get(0), UPLINK6.get(0)) else {
        return Err(DropReason::Forwarded);
    };
    if cfg.uplink_ifindex == 0 || *nat_addr == [0; 16] {
        return Err(DropReason::Forwarded);
    }
    let range = (cfg.snat_port_min, cfg.snat_port_max);
    conntrack::track_snat6(flow, *nat_addr, range, cfg.uplink_ifindex, ifindex, ep.mac)
        .map_err(|_| DropReason::NatPortExhausted)
}

/// Rewrites an IPv6 source to the entry's address and port, and
/// redirects out of its interface (neighbour lookup in the kernel).
#[inline(never)]
fn send_out6(ctx: &TcContext, flow: &Flow6, ct: &CtEntry6, reason: DropReason) -> i32 {
    if nat::rewrite6(ctx, flow, End::Source, &ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::out_of(ctx, ct.ifindex, reason, Direction::FromSandbox)
}

/// Rewrites the source and redirects out of `ifindex` (neighbour lookup in the kernel).
#[inline(always)]
fn send_out(ctx: &TcContext, flow: &Flow, addr: [u8; 4], port: u16, ifindex: u32, reason: DropReason) -> i32 {
    if nat::rewrite(ctx, flow, End::Source, addr, port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    redirect::out_of(ctx, ifindex, reason, Direction::FromSandbox)
}

#[inline(always)]
fn verdict(ctx: &TcContext, reason: DropReason) -> i32 {
    redirect::verdict(ctx, reason, Direction::FromSandbox)
}
