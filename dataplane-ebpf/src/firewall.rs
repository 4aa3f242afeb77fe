//! Firewall rules for published ports (`dataplane firewall`), judged on
//! the uplink for every packet from outside to a published port (new and
//! tracked flows alike: a deny added later cuts flows already open, as a
//! DOCKER-USER rule does). Rules match the client's address prefix, and
//! optionally the host port (with its protocol) and the sandbox's network;
//! the most specific kind of rule that matches decides — (network, port),
//! (network), (port), (any) — and within it the longest prefix.
//!
//! Maps: `DP_FIREWALL`, `DP_FIREWALL6`, `DP_FIREWALL_RULES`, `DP_ENDPOINTS`.

use aya_ebpf::maps::lpm_trie::Key;
use dataplane_common::{FW_DENY, FW_EXACT_BITS, FwKey, FwKey6};

use crate::maps::{ENDPOINTS, FIREWALL, FIREWALL6, FIREWALL_RULES};

/// Whether any rule is installed (one array read when none is).
#[inline(always)]
pub fn active() -> bool {
    FIREWALL_RULES.get(0).is_some_and(|n| *n != 0)
}

/// The network number of the sandbox behind veth `ifindex` (the exact part
/// of a rule's key), or 0.
#[inline(always)]
fn network_of(ifindex: u32) -> [u8; 4] {
    // SAFETY: map lookups return values valid for this program run.
    unsafe { ENDPOINTS.get(ifindex) }.map(|e| e.net_id.to_be_bytes()).unwrap_or([0; 4])
}

/// Whether an IPv4 packet from `saddr` to published host port `port`
/// (network byte order) of protocol `proto`, whose sandbox is behind veth
/// `ifindex`, is denied. With no rule (the usual case) one array read,
/// inline: no call on the published-port path.
#[inline(always)]
pub fn denied(saddr: [u8; 4], port: u16, proto: u8, ifindex: u32) -> bool {
    active() && judge(saddr, port, proto, ifindex)
}

/// [`denied`] for an IPv6 client.
#[inline(always)]
pub fn denied6(saddr: &[u8; 16], port: u16, proto: u8, ifindex: u32) -> bool {
    active() && judge6(saddr, port, proto, ifindex)
}

/// The rule lookups of [`denied`] (a function of its own: their keys'
/// stack is not added to the caller's frame).
#[inline(never)]
fn judge(saddr: [u8; 4], port: u16, proto: u8, ifindex: u32) -> bool {
    let net = network_of(ifindex);
    for (net, port, proto) in [(net, port, proto), (net, 0, 0), ([0; 4], port, proto), ([0; 4], 0, 0)] {
        let key = Key::new(FW_EXACT_BITS + 32, FwKey { net, port, proto, _pad: 0, addr: saddr });
        if let Some(rule) = FIREWALL.get(&key) {
            return rule.action == FW_DENY;
        }
    }
    false
}

/// The rule lookups of [`denied6`].
#[inline(never)]
fn judge6(saddr: &[u8; 16], port: u16, proto: u8, ifindex: u32) -> bool {
    let net = network_of(ifindex);
    for (net, port, proto) in [(net, port, proto), (net, 0, 0), ([0; 4], port, proto), ([0; 4], 0, 0)] {
        let key = Key::new(FW_EXACT_BITS + 128, FwKey6 { net, port, proto, _pad: 0, addr: *saddr });
        if let Some(rule) = FIREWALL6.get(&key) {
            return rule.action == FW_DENY;
        }
    }
    false
}
