//! Drop events for `dataplane monitor`: written only while a monitor
//! listens, at most `EVENTS_PER_SECOND` per CPU (the rest are counted as
//! suppressed), into the `DP_EVENTS` ring buffer.
//!
//! Maps: `DP_MONITOR`, `DP_EVENT_RATE`, `DP_EVENTS`.

use aya_ebpf::{helpers::bpf_ktime_get_ns, programs::TcContext};
use dataplane_common::{Direction, DropReason, EVENTS_PER_SECOND, Event};

use crate::{
    maps::{EVENT_RATE, EVENTS, MONITOR},
    parse,
};

const SECOND_NS: u64 = 1_000_000_000;

/// The IPv4 tuple an event carries.
#[derive(Clone, Copy)]
pub struct Tuple {
    pub proto: u8,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
}

/// Reports a dropped packet, if a monitor listens and the budget allows.
/// A function of its own (a BPF-to-BPF call, made on drops only): inlined
/// into every verdict, its event and parsed tuple took stack everywhere.
#[inline(never)]
pub fn dropped(ctx: &TcContext, reason: DropReason, dir: Direction) {
    let tuple = parse::l4_flow(ctx).map(|f| Tuple {
        proto: f.proto,
        saddr: f.saddr,
        daddr: f.daddr,
        sport: f.sport,
        dport: f.dport,
    });
    // SAFETY: the skb pointer is valid for this program run.
    emit(reason, dir, unsafe { (*ctx.skb.skb).ifindex }, tuple);
}

/// Reports a drop on interface `ifindex` (its IPv4 tuple, if it has one),
/// if a monitor listens and this CPU's budget allows.
#[inline(always)]
pub fn emit(reason: DropReason, dir: Direction, ifindex: u32, tuple: Option<Tuple>) {
    match MONITOR.get(0) {
        Some(on) if *on != 0 => {}
        _ => return,
    }
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(rate) = EVENT_RATE.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU cell; only this CPU writes it.
    unsafe {
        if now.wrapping_sub((*rate).window_start_ns) >= SECOND_NS {
            (*rate).window_start_ns = now;
            (*rate).sent = 0;
        }
        if (*rate).sent >= EVENTS_PER_SECOND as u64 {
            (*rate).suppressed += 1;
            return;
        }
        (*rate).sent += 1;
    }
    let mut ev = Event { ts_ns: now, reason: reason as u32, dir: dir as u32, ifindex, ..Event::default() };
    if let Some(t) = tuple {
        ev.proto = t.proto;
        ev.saddr = t.saddr;
        ev.daddr = t.daddr;
        ev.sport = t.sport;
        ev.dport = t.dport;
    }
    let _ = EVENTS.output::<Event>(&ev, 0);
}
