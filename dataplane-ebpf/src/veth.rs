//! tcx ingress on every host-side veth (packets leaving a sandbox):
//! isolation between networks, then NAT for tracked flows — replies of
//! published ports (source restored) and egress (source SNATed to the
//! uplink address) — sent straight out of the uplink with
//! `bpf_redirect_neigh`. Traffic to other networks, the host and the
//! gateway goes on to the stack.
//!
//! Maps: `DP_ENDPOINTS`, `DP_SUBNETS`, `DP_HOST_IPS`, `DP_CONFIG`, `DP_CT`, `DP_METRICS`.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect_neigh,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dataplane_common::{
    CT_DIR_REPLY, CT_DIR_SNAT, Direction, DropReason, NET_FLAG_INTERNAL, NET_FLAG_NO_MASQUERADE,
};

use crate::{
    conntrack,
    maps::{CONFIG, ENDPOINTS, HOST_IPS, SUBNETS},
    metrics::count,
    nat::{self, End},
    parse::{self, Flow},
    policy,
};

const NEXT: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT;

#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    let reason = policy::check_isolation(ctx);
    if !reason.is_pass() {
        return verdict(ctx, reason);
    }
    let Some(flow) = parse::l4_flow(ctx) else {
        return verdict(ctx, DropReason::Forwarded);
    };
    match conntrack::lookup(&flow) {
        Some(ct) if ct.dir == CT_DIR_REPLY => {
            send_out(ctx, &flow, ct.addr, ct.port, ct.ifindex, DropReason::NatReply)
        }
        Some(ct) if ct.dir == CT_DIR_SNAT => {
            send_out(ctx, &flow, ct.addr, ct.port, ct.ifindex, DropReason::NatEgress)
        }
        _ => egress(ctx, &flow),
    }
}

/// A new flow from a sandbox: SNAT it if it leaves the host.
#[inline(always)]
fn egress(ctx: &TcContext, flow: &Flow) -> i32 {
    // Our networks, the gateway and the host's own addresses are the stack's business.
    if SUBNETS.get(Key::new(32, flow.daddr)).is_some() || unsafe { HOST_IPS.get(flow.daddr) }.is_some() {
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

/// Rewrites the source and redirects out of `ifindex` (neighbour lookup in the kernel).
#[inline(always)]
fn send_out(ctx: &TcContext, flow: &Flow, addr: [u8; 4], port: u16, ifindex: u32, reason: DropReason) -> i32 {
    if nat::rewrite(ctx, flow, End::Source, addr, port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    count(reason, Direction::FromSandbox, ctx.len());
    // SAFETY: plain helper call; no neighbour parameters (FIB lookup in the kernel).
    let ret = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    if ret < 0 {
        return verdict(ctx, DropReason::RedirectFailed);
    }
    ret as i32
}

#[inline(always)]
fn verdict(ctx: &TcContext, reason: DropReason) -> i32 {
    count(reason, Direction::FromSandbox, ctx.len());
    if reason.is_pass() { NEXT } else { DROP }
}
