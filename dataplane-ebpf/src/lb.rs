//! Alias load balancing: a new flow to a virtual IP gets the backend its
//! Maglev slot names (flow hash modulo the table size); conntrack then keeps
//! the flow on it. Sockets of host processes pick a slot at connect time.
//!
//! Maps: `DP_LB`, `DP_LOCAL`, `DP_REMOTE`, `DP_LB_STATS`.

use dataplane_common::{Backend, LB_TABLE_SIZE, LbStatKey, flow_hash};

use crate::{
    maps::{LB, LB_STATS, LOCAL, REMOTE},
    parse::Flow,
};

/// What a destination means for the balancer.
pub enum Pick {
    /// Not a virtual IP.
    NotVip,
    /// A virtual IP with no live backend.
    NoBackend,
    Backend(Backend),
}

/// The backend of slot `hash % LB_TABLE_SIZE` of `vip`'s table, keeping the port.
#[inline(always)]
pub fn pick(vip: [u8; 4], port: u16, hash: u32) -> Pick {
    // SAFETY: map lookups return values valid for this program run.
    let Some(table) = (unsafe { LB.get(vip) }) else { return Pick::NotVip };
    if table.backends == 0 || table.size == 0 {
        return Pick::NoBackend;
    }
    let slot = (hash % table.size) as usize;
    if slot >= LB_TABLE_SIZE {
        return Pick::NoBackend;
    }
    let Some(addr) = table.slots.get(slot) else { return Pick::NoBackend };
    let addr = addr.to_ne_bytes();
    // A sandbox of this host (its veth), or of another host (ifindex 0:
    // the packet goes through the VXLAN tunnel).
    // SAFETY: as above.
    let (ifindex, mac) = match unsafe { LOCAL.get(addr) } {
        Some(t) => (t.ifindex, t.mac),
        // SAFETY: as above.
        None => match unsafe { REMOTE.get(addr) } {
            Some(r) => (0, r.mac),
            None => return Pick::NoBackend,
        },
    };
    let b = Backend { addr, port, _pad: 0, ifindex, mac, _pad2: [0; 2] };
    count(vip, b.addr);
    Pick::Backend(b)
}

/// The backend of a new packet flow to a virtual IP.
#[inline(always)]
pub fn pick_flow(flow: &Flow) -> Pick {
    pick(flow.daddr, flow.dport, flow_hash(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto))
}

/// One more flow for (vip, backend).
#[inline(always)]
fn count(vip: [u8; 4], backend: [u8; 4]) {
    let key = LbStatKey { vip, backend };
    match LB_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it.
        Some(n) => unsafe { *n += 1 },
        None => {
            let _ = LB_STATS.insert(key, 1, 0);
        }
    }
}
