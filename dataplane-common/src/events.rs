//! Drop and policy events for `dataplane monitor`: the BPF programs write
//! one [`Event`] per dropped packet into a ring buffer, only while a monitor
//! listens (`DP_MONITOR[0] != 0`) and at most [`EVENTS_PER_SECOND`] per CPU,
//! so forwarding never pays for it.

/// `DP_EVENTS`: ring buffer of [`Event`].
pub const MAP_EVENTS: &str = "DP_EVENTS";
/// Bytes of the ring buffer (a power of two, a multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;
/// `DP_MONITOR`: one u32, non-zero while a monitor listens.
pub const MAP_MONITOR: &str = "DP_MONITOR";
/// `DP_EVENT_RATE`: per-CPU [`EventRate`].
pub const MAP_EVENT_RATE: &str = "DP_EVENT_RATE";
/// Events each CPU may emit per second; the rest are only counted.
pub const EVENTS_PER_SECOND: u32 = 1_000;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns() when the packet was dropped.
    pub ts_ns: u64,
    /// [`crate::DropReason`] as u32.
    pub reason: u32,
    /// [`crate::Direction`] as u32.
    pub dir: u32,
    /// Interface the program ran on.
    pub ifindex: u32,
    /// IP protocol (0 when the packet was not IPv4).
    pub proto: u8,
    pub _pad: [u8; 3],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Network byte order (ICMP: the echo identifier).
    pub sport: u16,
    pub dport: u16,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<Event>() == 40);

/// One CPU's budget: events sent in the current one-second window, and
/// events suppressed since the daemon loaded the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventRate {
    pub window_start_ns: u64,
    pub sent: u64,
    pub suppressed: u64,
}
