//! Published-port lookup: (proto, host address, port) → sandbox backend.

use dataplane_common::{Backend, ServiceKey};

use crate::{
    maps::{HOST_IPS, SERVICES},
    parse::Flow,
};

/// The backend of a port published on the packet's destination, exactly or
/// on 0.0.0.0 when the destination is one of the host's uplink addresses.
#[inline(always)]
pub fn lookup(flow: &Flow) -> Option<Backend> {
    let mut key = ServiceKey { addr: flow.daddr, port: flow.dport, proto: flow.proto, _pad: 0 };
    // SAFETY: map lookups return values valid for this program run.
    if let Some(b) = unsafe { SERVICES.get(key) } {
        return Some(*b);
    }
    unsafe { HOST_IPS.get(flow.daddr) }?;
    key.addr = [0; 4];
    unsafe { SERVICES.get(key) }.copied()
}

/// Whether `addr` is one of the host's own addresses (uplink, gateways).
#[inline(always)]
pub fn is_host(addr: [u8; 4]) -> bool {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { HOST_IPS.get(addr) }.is_some()
}
