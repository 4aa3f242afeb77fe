//! Published-port lookup: (proto, host address, port) → sandbox backend.

use dataplane_common::{Backend, Backend6, ServiceKey, ServiceKey6};

use crate::{
    maps::{HOST_IPS, HOST_IPS6, SERVICES, SERVICES6},
    parse::{Flow, Flow6},
};

/// The backend of a port published on the packet's destination, exactly or
/// on 0.0.0.0 when the destination is one of the host's addresses.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<Backend> {
    published(flow.daddr, flow.dport, flow.proto, false)
}

/// The backend of a port published on `addr:port` (network byte order):
/// the exact address first, then 0.0.0.0 when `addr` is one of the host's
/// addresses — or, with `loopback`, any 127/8 address (host processes).
#[inline(always)]
pub fn published(addr: [u8; 4], port: u16, proto: u8, loopback: bool) -> Option<Backend> {
    let mut key = ServiceKey { addr, port, proto, _pad: 0 };
    // SAFETY: map lookups return values valid for this program run.
    if let Some(b) = unsafe { SERVICES.get(key) } {
        return Some(*b);
    }
    if !(loopback && addr[0] == 127) && !is_host(addr) {
        return None;
    }
    key.addr = [0; 4];
    unsafe { SERVICES.get(key) }.copied()
}

/// Whether `addr` is one of the host's own addresses (uplink, gateways).
#[inline(always)]
pub fn is_host(addr: [u8; 4]) -> bool {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { HOST_IPS.get(addr) }.is_some()
}

/// The backend of a port published over IPv6 on the packet's destination:
/// exactly, or on `::` when the destination is one of the host's addresses.
#[inline(always)]
pub fn lookup6(flow: &Flow6) -> Option<Backend6> {
    published6(&flow.daddr, flow.dport, flow.proto)
}

/// The backend of a port published over IPv6 on `addr:port` (network byte
/// order): the exact address first, then `::` when `addr` is the host's.
#[inline(always)]
pub fn published6(addr: &[u8; 16], port: u16, proto: u8) -> Option<Backend6> {
    let mut key = ServiceKey6 { addr: *addr, port, proto, _pad: 0 };
    // SAFETY: map lookups return values valid for this program run.
    if let Some(b) = unsafe { SERVICES6.get(key) } {
        return Some(*b);
    }
    // SAFETY: as above.
    unsafe { HOST_IPS6.get(addr) }?;
    key.addr = [0; 16];
    // SAFETY: as above.
    unsafe { SERVICES6.get(key) }.copied()
}
