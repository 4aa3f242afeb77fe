//! Alias load balancing: a new flow to a virtual IP gets the backend its
//! Maglev slot names (flow hash modulo the table size); conntrack then keeps
//! the flow on it. Sockets of host processes pick a slot at connect time.
//!
//! An IPv6 VIP shares the table of its alias's IPv4 VIP; the backend's
//! IPv6 address comes from `DP_ADDR6`.
//!
//! Maps: `DP_LB`, `DP_LB6`, `DP_ADDR6`, `DP_LOCAL`, `DP_REMOTE`, `DP_LB_STATS`.

use dataplane_common::{Backend, Backend6, LB_TABLE_SIZE, LbStatKey, flow_hash, fold6};

use crate::{
    maps::{ADDR6, LB, LB_STATS, LB6, LOCAL, REMOTE},
    parse::{Flow, Flow6},
};

/// What a destination means for the balancer: `T` is the backend.
pub enum Picked<T> {
    /// Not a virtual IP.
    NotVip,
    /// A virtual IP with no live backend.
    NoBackend,
    Backend(T),
}

pub type Pick = Picked<Backend>;
pub type Pick6 = Picked<Backend6>;

/// The IPv4 address in slot `hash % size` of `vip`'s Maglev table.
#[inline(always)]
fn slot_of(vip: [u8; 4], hash: u32) -> Picked<[u8; 4]> {
    // SAFETY: map lookups return values valid for this program run.
    let Some(table) = (unsafe { LB.get(vip) }) else { return Picked::NotVip };
    if table.backends == 0 || table.size == 0 {
        return Picked::NoBackend;
    }
    let slot = (hash % table.size) as usize;
    if slot >= LB_TABLE_SIZE {
        return Picked::NoBackend;
    }
    match table.slots.get(slot) {
        Some(addr) => Picked::Backend(addr.to_ne_bytes()),
        None => Picked::NoBackend,
    }
}

/// The backend of slot `hash % LB_TABLE_SIZE` of `vip`'s table, keeping the port.
#[inline(always)]
pub fn pick(vip: [u8; 4], port: u16, hash: u32) -> Pick {
    let addr = match slot_of(vip, hash) {
        Picked::Backend(a) => a,
        Picked::NotVip => return Picked::NotVip,
        Picked::NoBackend => return Picked::NoBackend,
    };
    // A sandbox of this host (its veth), or of another host (ifindex 0:
    // the packet goes through the VXLAN tunnel).
    // SAFETY: map lookups return values valid for this program run.
    let (ifindex, mac) = match unsafe { LOCAL.get(addr) } {
        Some(t) => (t.ifindex, t.mac),
        // SAFETY: as above.
        None => match unsafe { REMOTE.get(addr) } {
            Some(r) => (0, r.mac),
            None => return Picked::NoBackend,
        },
    };
    count(vip, addr);
    Picked::Backend(Backend { addr, port, _pad: 0, ifindex, mac, _pad2: [0; 2] })
}

/// The backend of a new packet flow to a virtual IP.
#[inline(always)]
pub fn pick_flow(flow: &Flow) -> Pick {
    pick(flow.daddr, flow.dport, flow_hash(flow.saddr, flow.daddr, flow.sport, flow.dport, flow.proto))
}

/// The backend of a new IPv6 flow to a virtual IP: the slot of the flow's
/// hash in the table of the alias's IPv4 VIP, at the backend's IPv6
/// address (of this host's sandbox, or another host's: ifindex 0).
#[inline(never)]
pub fn pick_flow6(flow: &Flow6) -> Pick6 {
    let hash = flow_hash(fold6(&flow.saddr), fold6(&flow.daddr), flow.sport, flow.dport, flow.proto);
    pick6(&flow.daddr, flow.dport, hash)
}

/// The backend of slot `hash % size` of IPv6 VIP `vip6`'s table (its IPv4
/// sibling's), keeping the port.
#[inline(never)]
pub fn pick6(vip6: &[u8; 16], port: u16, hash: u32) -> Pick6 {
    // SAFETY: map lookups return values valid for this program run.
    let Some(vip) = (unsafe { LB6.get(vip6) }) else { return Picked::NotVip };
    let vip = *vip;
    let Picked::Backend(addr) = slot_of(vip, hash) else { return Picked::NoBackend };
    // SAFETY: as above.
    let Some(addr6) = (unsafe { ADDR6.get(addr) }) else { return Picked::NoBackend };
    // SAFETY: as above.
    let (ifindex, mac) = match unsafe { LOCAL.get(addr) } {
        Some(t) => (t.ifindex, t.mac),
        // SAFETY: as above.
        None => match unsafe { REMOTE.get(addr) } {
            Some(r) => (0, r.mac),
            None => return Picked::NoBackend,
        },
    };
    count(vip, addr);
    Picked::Backend(Backend6 { addr: *addr6, port, _pad: 0, ifindex, mac, _pad2: [0; 2] })
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
