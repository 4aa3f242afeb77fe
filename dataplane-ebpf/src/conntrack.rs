//! Connection tracking for published ports: one LRU entry per direction,
//! inserted both or neither.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use dataplane_common::{CT_DIR_DNAT, CT_DIR_REPLY, CtEntry, CtKey};

use crate::{maps::CT, parse::Flow};

#[inline(always)]
pub fn key(flow: &Flow) -> CtKey {
    CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        _pad: [0; 3],
    }
}

/// The entry for this packet in direction `dir`, refreshed.
#[inline(always)]
pub fn lookup(flow: &Flow, dir: u32) -> Option<CtEntry> {
    let e = CT.get_ptr_mut(key(flow))?;
    // SAFETY: pointer into the map value, valid for this program run.
    unsafe {
        if (*e).dir != dir {
            return None;
        }
        (*e).last_seen = bpf_ktime_get_ns();
        Some(*e)
    }
}

/// Tracks a new DNAT flow: `flow` arrives for `dnat`; replies come back from
/// the backend and leave through `reply_ifindex` with the original
/// destination restored as their source. Both entries or neither.
#[inline(always)]
pub fn track_dnat(flow: &Flow, dnat: &CtEntry, reply_ifindex: u32) -> Result<(), i32> {
    let now = unsafe { bpf_ktime_get_ns() };
    let reverse = CtKey {
        saddr: dnat.addr,
        daddr: flow.saddr,
        sport: dnat.port,
        dport: flow.sport,
        proto: flow.proto,
        _pad: [0; 3],
    };
    let reply = CtEntry {
        dir: CT_DIR_REPLY,
        addr: flow.daddr,
        port: flow.dport,
        _pad: 0,
        ifindex: reply_ifindex,
        mac: [0; 6],
        _pad2: [0; 2],
        last_seen: now,
    };
    CT.insert(reverse, reply, 0)?;
    let mut fwd = *dnat;
    fwd.dir = CT_DIR_DNAT;
    fwd.last_seen = now;
    if let Err(e) = CT.insert(key(flow), fwd, 0) {
        let _ = CT.remove(reverse);
        return Err(e);
    }
    Ok(())
}
