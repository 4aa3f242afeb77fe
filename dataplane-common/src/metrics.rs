//! Drop reasons and directions: a contract with userspace. Every drop in a
//! BPF program counts into `DP_METRICS` at [`metric_index`]`(reason, dir)`.

/// Why the datapath dropped (or, for [`DropReason::Forwarded`], passed) a packet.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not a drop: packet inspected and let through.
    Forwarded = 0,
    /// Destination is a sandbox or subnet of a different bridge network.
    PolicyNetworkIsolation = 1,
    /// Headers could not be read (truncated packet), or TCP flags no
    /// endpoint sends (none, SYN with FIN or RST, FIN without ACK, …).
    InvalidPacket = 2,
    /// Packet arrived on an interface the endpoint table does not know.
    UnknownEndpoint = 3,
    /// Not a drop: destination NAT to a published port's sandbox.
    NatPublished = 4,
    /// Not a drop: reply of a published-port flow, source restored.
    NatReply = 5,
    /// Conntrack table full: a new published-port flow could not be tracked.
    CtInsertFailed = 6,
    /// A checksum or header rewrite failed.
    NatRewriteFailed = 7,
    /// The redirect helper refused the target interface.
    RedirectFailed = 8,
    /// Not a drop: egress SNAT to the uplink address.
    NatEgress = 9,
    /// Not a drop: reply to egress, destination restored.
    NatEgressReply = 10,
    /// Traffic leaving an `--internal` network.
    PolicyInternal = 11,
    /// No free SNAT port for a new egress flow.
    NatPortExhausted = 12,
    /// Sandbox to sandbox on a network with `enable_icc=false`.
    PolicyIcc = 13,
    /// A new flow to a virtual IP whose alias has no live backend.
    LbNoBackend = 14,
    /// A new flow to a virtual IP, sent to the backend its Maglev slot names.
    LbForwarded = 15,
    /// A TCP packet other than a SYN towards a published port or virtual
    /// IP with no tracked flow: only a SYN opens one.
    CtNoFlow = 16,
    /// From outside, through a route to the host, to a sandbox address
    /// (not a published port, not an answer to the sandbox's own flow) on
    /// a network that is not `gateway_mode_ipv4=routed`.
    PolicyDirectAccess = 17,
    /// Not a drop: to an overlay sandbox on another host, encapsulated in VXLAN.
    OverlayEncap = 18,
    /// Not a drop: from another host's overlay sandbox, decapsulated and
    /// delivered into the sandbox.
    OverlayDecap = 19,
    /// Not a drop: an ARP request for an overlay sandbox on another host,
    /// answered on its behalf.
    ArpProxy = 20,
    /// From the VXLAN tunnel to an address no sandbox of this host has.
    OverlayNoEndpoint = 21,
    /// From outside to a published port, refused by a `dataplane firewall`
    /// rule (what Docker's DOCKER-USER chain is for).
    FirewallDeny = 22,
    /// Not a drop: an A query to the embedded resolver, answered in the
    /// kernel from `DP_DNS_NAMES` and turned back to the asker.
    DnsAnswered = 23,
}

/// Number of [`DropReason`] values (the metrics array is sized from it).
pub const DROP_REASON_COUNT: u32 = 24;

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; DROP_REASON_COUNT as usize] = [
        DropReason::Forwarded,
        DropReason::PolicyNetworkIsolation,
        DropReason::InvalidPacket,
        DropReason::UnknownEndpoint,
        DropReason::NatPublished,
        DropReason::NatReply,
        DropReason::CtInsertFailed,
        DropReason::NatRewriteFailed,
        DropReason::RedirectFailed,
        DropReason::NatEgress,
        DropReason::NatEgressReply,
        DropReason::PolicyInternal,
        DropReason::NatPortExhausted,
        DropReason::PolicyIcc,
        DropReason::LbNoBackend,
        DropReason::LbForwarded,
        DropReason::CtNoFlow,
        DropReason::PolicyDirectAccess,
        DropReason::OverlayEncap,
        DropReason::OverlayDecap,
        DropReason::ArpProxy,
        DropReason::OverlayNoEndpoint,
        DropReason::FirewallDeny,
        DropReason::DnsAnswered,
    ];

    /// Stable, user-facing name (shown by `dataplane stats`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Forwarded => "FORWARDED",
            DropReason::PolicyNetworkIsolation => "POLICY_NETWORK_ISOLATION",
            DropReason::InvalidPacket => "INVALID_PACKET",
            DropReason::UnknownEndpoint => "UNKNOWN_ENDPOINT",
            DropReason::NatPublished => "NAT_PUBLISHED",
            DropReason::NatReply => "NAT_REPLY",
            DropReason::CtInsertFailed => "CT_INSERT_FAILED",
            DropReason::NatRewriteFailed => "NAT_REWRITE_FAILED",
            DropReason::RedirectFailed => "REDIRECT_FAILED",
            DropReason::NatEgress => "NAT_EGRESS",
            DropReason::NatEgressReply => "NAT_EGRESS_REPLY",
            DropReason::PolicyInternal => "POLICY_INTERNAL",
            DropReason::NatPortExhausted => "NAT_PORT_EXHAUSTED",
            DropReason::PolicyIcc => "POLICY_ICC",
            DropReason::LbNoBackend => "LB_NO_BACKEND",
            DropReason::LbForwarded => "LB_FORWARDED",
            DropReason::CtNoFlow => "CT_NO_FLOW",
            DropReason::PolicyDirectAccess => "POLICY_DIRECT_ACCESS",
            DropReason::OverlayEncap => "OVERLAY_ENCAP",
            DropReason::OverlayDecap => "OVERLAY_DECAP",
            DropReason::ArpProxy => "ARP_PROXY",
            DropReason::OverlayNoEndpoint => "OVERLAY_NO_ENDPOINT",
            DropReason::FirewallDeny => "FIREWALL_DENY",
            DropReason::DnsAnswered => "DNS_ANSWERED",
        }
    }
}

impl DropReason {
    /// Whether the packet went on (a verdict, not a drop).
    pub const fn is_pass(self) -> bool {
        matches!(
            self,
            DropReason::Forwarded
                | DropReason::NatPublished
                | DropReason::NatReply
                | DropReason::NatEgress
                | DropReason::NatEgressReply
                | DropReason::LbForwarded
                | DropReason::OverlayEncap
                | DropReason::OverlayDecap
                | DropReason::ArpProxy
                | DropReason::DnsAnswered
        )
    }
}

/// Direction of a packet relative to the sandbox.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Leaving the sandbox (tcx ingress on its host-side veth).
    FromSandbox = 0,
    /// Going to the sandbox (e.g. tcx ingress on the uplink).
    ToSandbox = 1,
}

pub const DIRECTION_COUNT: u32 = 2;

impl Direction {
    pub const ALL: [Direction; DIRECTION_COUNT as usize] = [Direction::FromSandbox, Direction::ToSandbox];

    pub const fn name(self) -> &'static str {
        match self {
            Direction::FromSandbox => "egress",
            Direction::ToSandbox => "ingress",
        }
    }
}

/// Size of the metrics array.
pub const METRICS_LEN: u32 = DROP_REASON_COUNT * DIRECTION_COUNT;

/// Index of the (reason, direction) counter in `DP_METRICS`.
#[inline(always)]
pub const fn metric_index(reason: DropReason, dir: Direction) -> u32 {
    reason as u32 * DIRECTION_COUNT + dir as u32
}

/// One per-CPU counter cell.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
