//! In-kernel alias load balancing: the Maglev table of a virtual IP and the
//! flow hash that indexes it (the same function in BPF and in userspace
//! tests, so distribution and disruption are measured on the real thing).

/// `DP_LB`: virtual IP (network byte order) → [`LbTable`].
pub const MAP_LB: &str = "DP_LB";
pub const MAX_LB: u32 = 1024;
/// `DP_LB6`: IPv6 virtual IP → the IPv4 VIP of the same alias, whose
/// table it shares (the backends' IPv6 addresses are in `DP_ADDR6`).
pub const MAP_LB6: &str = "DP_LB6";
/// `DP_ADDR6`: a local endpoint's IPv4 address → its IPv6 address (on
/// dual-stack networks).
pub const MAP_ADDR6: &str = "DP_ADDR6";
/// `DP_LB_STATS`: per-CPU new flows per (VIP, backend).
pub const MAP_LB_STATS: &str = "DP_LB_STATS";
pub const MAX_LB_STATS: u32 = 16_384;

/// Slots of a Maglev table: a prime well above any backend count, so that
/// removing one backend moves few flows of the others.
pub const LB_TABLE_SIZE: usize = 16_381;

/// A VIP's lookup table: each slot holds a backend's IPv4 address (the
/// bytes in network order, read as a native u32): a sandbox of this host
/// is found in `DP_LOCAL`, one of another host's in `DP_REMOTE`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LbTable {
    /// Live backends; 0 means none (new flows are dropped, counted).
    pub backends: u32,
    /// Slots in use: [`LB_TABLE_SIZE`] (read at run time, so the verifier
    /// sees the bounds check on the index).
    pub size: u32,
    pub slots: [u32; LB_TABLE_SIZE],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbStatKey {
    pub vip: [u8; 4],
    pub backend: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<LbStatKey>() == 8);

#[inline(always)]
const fn mix(mut h: u32) -> u32 {
    // murmur3's finalizer.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// An IPv6 address folded to 32 bits for [`flow_hash`].
#[inline(always)]
pub const fn fold6(a: &[u8; 16]) -> [u8; 4] {
    [
        a[0] ^ a[4] ^ a[8] ^ a[12],
        a[1] ^ a[5] ^ a[9] ^ a[13],
        a[2] ^ a[6] ^ a[10] ^ a[14],
        a[3] ^ a[7] ^ a[11] ^ a[15],
    ]
}

/// Hash of a flow's 5-tuple (addresses as in the packet, ports in network
/// byte order as read from it).
#[inline(always)]
pub const fn flow_hash(saddr: [u8; 4], daddr: [u8; 4], sport: u16, dport: u16, proto: u8) -> u32 {
    let mut h = mix(u32::from_ne_bytes(saddr) ^ 0x9e37_79b9);
    h = mix(h ^ (((sport as u32) << 16) | dport as u32));
    h = mix(h ^ u32::from_ne_bytes(daddr));
    mix(h ^ proto as u32)
}
