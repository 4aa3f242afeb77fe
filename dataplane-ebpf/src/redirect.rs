//! Verdicts and redirects, each counted under its reason and direction.

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use dataplane_common::{Direction, DropReason, EP_FLAG_SHAPED};

use crate::{
    maps::{ENDPOINTS, SHAPED},
    metrics::count,
    nat,
};

/// tcx: let the next program (or the stack) decide.
const NEXT: i32 = TC_ACT_UNSPEC;
const DROP: i32 = TC_ACT_SHOT;

/// Counts the packet; passes reasons go on, the others are dropped.
#[inline(always)]
pub fn verdict(ctx: &TcContext, reason: DropReason, dir: Direction) -> i32 {
    count(reason, dir, ctx.len());
    if reason.is_pass() {
        NEXT
    } else {
        crate::events::dropped(ctx, reason, dir);
        DROP
    }
}

/// Into the sandbox behind host-side veth `ifindex` (its peer), with the
/// sandbox's MAC as destination.
#[inline(always)]
pub fn to_sandbox(ctx: &TcContext, ifindex: u32, mac: [u8; 6], reason: DropReason, dir: Direction) -> i32 {
    if nat::set_macs(ctx, mac).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed, dir);
    }
    into_peer(ctx, ifindex, reason, dir)
}

/// Into the sandbox behind host-side veth `ifindex`, as the bridge would
/// deliver it: only the destination MAC is set (the sender's stays).
#[inline(always)]
pub fn to_neighbour(ctx: &TcContext, ifindex: u32, mac: [u8; 6], dir: Direction) -> i32 {
    if ctx.store(0, &mac, 0).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed, dir);
    }
    into_peer(ctx, ifindex, DropReason::Forwarded, dir)
}

/// As [`to_neighbour`], counted under `reason`.
#[inline(always)]
pub fn to_neighbour_as(ctx: &TcContext, ifindex: u32, mac: [u8; 6], reason: DropReason, dir: Direction) -> i32 {
    if ctx.store(0, &mac, 0).is_err() {
        return verdict(ctx, DropReason::NatRewriteFailed, dir);
    }
    into_peer(ctx, ifindex, reason, dir)
}

/// Counts the packet under `reason` and hands it to the peer of `ifindex`:
/// straight in, or out of `ifindex` when that veth shapes its traffic
/// (its qdisc must see the packet).
#[inline(always)]
fn into_peer(ctx: &TcContext, ifindex: u32, reason: DropReason, dir: Direction) -> i32 {
    count(reason, dir, ctx.len());
    // Only while some veth shapes (an array read otherwise: no hash lookup).
    // SAFETY: map lookups return values valid for this program run.
    let shaped = SHAPED.get(0).is_some_and(|n| *n != 0)
        && unsafe { ENDPOINTS.get(ifindex) }.is_some_and(|e| e.flags & EP_FLAG_SHAPED != 0);
    // SAFETY: plain helper calls; the kernel checks the ifindex.
    let ret = if shaped { unsafe { bpf_redirect(ifindex, 0) } } else { unsafe { bpf_redirect_peer(ifindex, 0) } };
    if ret < 0 {
        return verdict(ctx, DropReason::RedirectFailed, dir);
    }
    ret as i32
}

/// Out of `ifindex`, the kernel resolving the next hop (FIB + neighbour).
#[inline(always)]
pub fn out_of(ctx: &TcContext, ifindex: u32, reason: DropReason, dir: Direction) -> i32 {
    count(reason, dir, ctx.len());
    // SAFETY: plain helper call; no neighbour parameters (FIB lookup in the kernel).
    let ret = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    if ret < 0 {
        return verdict(ctx, DropReason::RedirectFailed, dir);
    }
    ret as i32
}
