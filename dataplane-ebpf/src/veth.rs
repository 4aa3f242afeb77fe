//! tcx ingress on every host-side veth (packets leaving a sandbox): first
//! isolation between networks, then the reply half of published-port flows
//! (source restored to the published address and sent straight out of the
//! uplink with `bpf_redirect_neigh`).
//!
//! Maps: `DP_ENDPOINTS`, `DP_SUBNETS`, `DP_CT`, `DP_METRICS`.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::bpf_redirect_neigh,
    programs::TcContext,
};
use dataplane_common::{CT_DIR_REPLY, Direction, DropReason};

use crate::{
    conntrack,
    metrics::count,
    nat::{self, End},
    parse, policy,
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
    let Some(ct) = conntrack::lookup(&flow, CT_DIR_REPLY) else {
        return verdict(ctx, DropReason::Forwarded);
    };
    if nat::rewrite(ctx, &flow, End::Source, ct.addr, ct.port).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed);
    }
    count(DropReason::NatReply, Direction::FromSandbox, ctx.len());
    // SAFETY: plain helper call; no neighbour parameters (FIB lookup in the kernel).
    let ret = unsafe { bpf_redirect_neigh(ct.ifindex, core::ptr::null_mut(), 0, 0) };
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
