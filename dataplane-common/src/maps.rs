//! Map names and the key/value types stored in them.
//!
//! Rules (see STYLE.md): `#[repr(C)]`, `Copy`, explicit padding, integers
//! instead of `bool`/enums, and a size assertion per type.

/// ifindex of a host-side veth → [`Endpoint`].
pub const MAP_ENDPOINTS: &str = "DP_ENDPOINTS";
/// IPv4 subnet (LPM) of every bridge network → [`NetworkInfo`].
pub const MAP_SUBNETS: &str = "DP_SUBNETS";
/// Per-CPU packet/byte counters indexed by [`crate::metric_index`].
pub const MAP_METRICS: &str = "DP_METRICS";

/// Maximum number of endpoints (host-side veths) one daemon programs.
pub const MAX_ENDPOINTS: u32 = 16_384;
/// Maximum number of bridge networks.
pub const MAX_SUBNETS: u32 = 4_096;

/// One sandbox attachment as the datapath sees it, keyed by the ifindex of
/// its host-side veth.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    /// Small numeric id of the network (see [`NetworkInfo::net_id`]).
    pub net_id: u32,
    /// IPv4 address, network byte order.
    pub ipv4: [u8; 4],
    /// MAC address of the sandbox side.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 16);

/// Value of the subnet LPM trie: which network owns a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Small numeric id, unique per daemon, stable across restarts (kept in the store).
    pub net_id: u32,
    /// Gateway address (the host's address on the bridge), network byte order.
    /// Traffic to it is host-bound, not forwarded, so isolation lets it through.
    pub gateway: [u8; 4],
    /// `NET_FLAG_*` bits.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<NetworkInfo>() == 12);

/// Key of the subnet LPM trie (the data part; the prefix length is separate).
pub type SubnetKey = [u8; 4];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are repr(C), Copy, with every byte an explicit field (no padding).
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::NetworkInfo {}
    unsafe impl aya::Pod for super::Counter {}
}

pub use crate::metrics::Counter;
