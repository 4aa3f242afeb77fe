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

/// Published ports: [`ServiceKey`] → [`Backend`].
pub const MAP_SERVICES: &str = "DP_SERVICES";
/// Connection tracking (LRU): [`CtKey`] → [`CtEntry`], one entry per direction.
pub const MAP_CT: &str = "DP_CT";
/// The host's own addresses on its uplink (`[u8; 4]` → `u32` ifindex): where
/// ports published on 0.0.0.0 answer.
pub const MAP_HOST_IPS: &str = "DP_HOST_IPS";
/// One [`Config`] at index 0.
pub const MAP_CONFIG: &str = "DP_CONFIG";

pub const MAX_SERVICES: u32 = 65_536;
pub const MAX_CT: u32 = 524_288;
pub const MAX_HOST_IPS: u32 = 64;

/// Maximum number of endpoints (host-side veths) one daemon programs.
pub const MAX_ENDPOINTS: u32 = 16_384;

/// Sandbox address → where its bridge endpoint is ([`LocalTarget`]): a
/// sandbox reaching another of its network is handed over in BPF
/// (`bpf_redirect_peer`), not through the bridge, so the host's netfilter
/// policy (br_netfilter + `FORWARD DROP`, as Docker sets it) never sees it.
pub const MAP_LOCAL: &str = "DP_LOCAL";

/// Value of [`MAP_LOCAL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalTarget {
    /// Host-side veth of the endpoint.
    pub ifindex: u32,
    /// MAC of the sandbox side.
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<LocalTarget>() == 12);
/// IPv6 sandbox address → [`LocalTarget`]: where an overlay packet from
/// another host to that address is delivered.
pub const MAP_LOCAL6: &str = "DP_LOCAL6";
/// VXLAN's IANA port, where every host of a cluster listens (host byte order).
pub const VXLAN_PORT: u16 = 4789;

/// Overlay address on another host → [`RemoteTarget`]: a sandbox's packet
/// to it is encapsulated in VXLAN toward that host.
pub const MAP_REMOTE: &str = "DP_REMOTE";
/// Overlay endpoints on other hosts one daemon knows.
pub const MAX_REMOTE: u32 = 262_144;
/// IPv6 overlay address on another host → [`RemoteTarget`] (as
/// [`MAP_REMOTE`]; the underlay stays IPv4).
pub const MAP_REMOTE6: &str = "DP_REMOTE6";

/// Value of [`MAP_REMOTE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteTarget {
    /// Underlay address of the host, network byte order.
    pub underlay: [u8; 4],
    /// VXLAN network identifier: the overlay network's number on every host.
    pub vni: u32,
    /// MAC of the remote sandbox (what our ARP answers say).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<RemoteTarget>() == 16);

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
    /// `NET_FLAG_*` of the endpoint's network.
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);

/// The network is `--internal`: nothing leaves it.
pub const NET_FLAG_INTERNAL: u32 = 1;
/// `com.docker.network.bridge.enable_ip_masquerade=false`: egress is routed, not SNATed.
pub const NET_FLAG_NO_MASQUERADE: u32 = 2;
/// `com.docker.network.bridge.enable_icc=false`: sandboxes of the network
/// cannot reach each other directly (published ports through the host can).
pub const NET_FLAG_NO_ICC: u32 = 4;
/// `com.docker.network.bridge.gateway_mode_ipv4=routed`: the outside may
/// reach any port of the network's sandboxes through a route to the host
/// (otherwise only published ports and answers to the sandboxes' own flows).
pub const NET_FLAG_ROUTED: u32 = 8;

/// Endpoint flag (not a network's): its host-side veth has a root qdisc
/// (a chained CNI `bandwidth` plugin's TBF, or any shaping an operator
/// added), so packets for the sandbox go out of that veth, through the
/// qdisc, instead of straight into the peer (`bpf_redirect_peer`).
pub const EP_FLAG_SHAPED: u32 = 0x100;

/// One `u32` at index 0: how many endpoint entries carry
/// [`EP_FLAG_SHAPED`]. While it is 0 (no shaping anywhere, the usual
/// case) deliveries skip the endpoint lookup the flag needs.
pub const MAP_SHAPED: &str = "DP_SHAPED";

/// Daemon-wide datapath settings, one entry at index 0 of `DP_CONFIG`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// ifindex of the uplink (0: none; no egress NAT).
    pub uplink_ifindex: u32,
    /// Address egress traffic is SNATed to.
    pub uplink_ip: [u8; 4],
    /// First and last port SNAT may allocate (host byte order).
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// ifindex of the external-mode (collect_md) VXLAN device overlay
    /// packets leave through (0: not in a cluster).
    pub vxlan_ifindex: u32,
    /// Network-namespace cookie of the daemon: the socket hooks act only
    /// on sockets of this namespace (0: they act on none).
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// `DP_DNS`: sandbox netns cookie → the ports the embedded resolver
/// listens on at 127.0.0.11 in that namespace (the socket hooks send
/// 127.0.0.11:53 there, so port 53 stays free for the sandbox's own servers).
pub const MAP_DNS: &str = "DP_DNS";
pub const MAX_DNS: u32 = 16_384;
/// 127.0.0.11, network byte order as a u32 read from `user_ip4`.
pub const RESOLVER_IP: [u8; 4] = [127, 0, 0, 11];

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsPorts {
    /// Network byte order.
    pub udp: u16,
    pub tcp: u16,
}
const _: () = assert!(core::mem::size_of::<DnsPorts>() == 4);

/// `DP_DNS_NAMES`: (network number, query name) → the IPv4 addresses the
/// embedded resolver answers for that name on that network: what the
/// kernel answers A queries from, without waking the daemon (see
/// `dataplane-ebpf`'s `dns_answer`). Names the kernel does not find go on
/// to the resolver's socket as before.
pub const MAP_DNS_NAMES: &str = "DP_DNS_NAMES";
pub const MAX_DNS_NAMES: u32 = 65_536;
/// Longest query name (wire form: length-prefixed labels and the final 0)
/// answered in the kernel; longer ones go to the daemon.
pub const DNS_NAME_MAX: usize = 64;
/// Most addresses one kernel answer carries (more go to the daemon).
pub const DNS_MAX_ADDRS: usize = 8;
/// TTL of the resolver's answers, seconds (the daemon's and the kernel's).
pub const DNS_TTL: u32 = 5;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsNameKey {
    /// The network's number ([`NetworkInfo::net_id`]).
    pub net: u32,
    /// The name in wire form, lowercase, zero-padded.
    pub name: [u8; DNS_NAME_MAX],
}
const _: () = assert!(core::mem::size_of::<DnsNameKey>() == 68);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsAnswer {
    /// Addresses in `addrs` (1..=[`DNS_MAX_ADDRS`]).
    pub count: u32,
    /// Round-robin position: the answer starts at `turn % count`, and each
    /// answer moves it on.
    pub turn: u32,
    pub addrs: [[u8; 4]; DNS_MAX_ADDRS],
}
const _: () = assert!(core::mem::size_of::<DnsAnswer>() == 40);

/// `DP_DNS_NETS`: sandbox netns cookie → the numbers of the user-defined
/// networks whose names the sandbox's resolver answers (0: none).
pub const MAP_DNS_NETS: &str = "DP_DNS_NETS";
/// Networks of one sandbox whose names the kernel answers; a sandbox on
/// more has the rest answered by the daemon.
pub const DNS_MAX_NETS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsNets {
    pub nets: [u32; DNS_MAX_NETS],
}
const _: () = assert!(core::mem::size_of::<DnsNets>() == 16);

/// `name` (dotted, without a trailing dot) in DNS wire form, lowercase,
/// as [`DnsNameKey::name`] holds it; None if it does not fit or has an
/// empty or over-long label.
pub fn dns_wire_name(name: &str) -> Option<[u8; DNS_NAME_MAX]> {
    let mut out = [0u8; DNS_NAME_MAX];
    let mut at = 0;
    for label in name.split('.') {
        let len = label.len();
        if len == 0 || len > 63 || at + 1 + len + 1 > DNS_NAME_MAX {
            return None;
        }
        out[at] = len as u8;
        for (i, b) in label.bytes().enumerate() {
            out[at + 1 + i] = b.to_ascii_lowercase();
        }
        at += 1 + len;
    }
    Some(out)
}

/// Socket-hook translations: which service a socket asked for before its
/// destination was rewritten to a backend (for getpeername and recvmsg).
pub const MAP_SOCK_NAT: &str = "DP_SOCK_NAT";
pub const MAX_SOCK_NAT: u32 = 65_536;

/// A socket (by cookie) and the backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockNatKey {
    pub cookie: u64,
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<SockNatKey>() == 16);

/// What the application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockNatOrig {
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    /// 1 when the application used IPv6 ::1 (restored as such).
    pub v6_loopback: u16,
}
const _: () = assert!(core::mem::size_of::<SockNatOrig>() == 8);

/// `DP_SOCK_NAT6`: as `DP_SOCK_NAT`, for sockets that asked for an IPv6
/// address (a host address or an IPv6 VIP).
pub const MAP_SOCK_NAT6: &str = "DP_SOCK_NAT6";

/// A socket (by cookie) and the IPv6 backend it was sent to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockNatKey6 {
    pub cookie: u64,
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<SockNatKey6>() == 32);

/// What an IPv6 application asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockNatOrig6 {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<SockNatOrig6>() == 24);

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

/// IPv6 subnet (LPM) of every network with IPv6 → [`NetworkInfo6`]
/// (issue 15: filled once networks get IPv6; the policy reads it already).
pub const MAP_SUBNETS6: &str = "DP_SUBNETS6";

/// Value of the IPv6 subnet LPM trie: which network owns a prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkInfo6 {
    /// The network's number, as in [`NetworkInfo::net_id`].
    pub net_id: u32,
    /// `NET_FLAG_*` bits.
    pub flags: u32,
    /// The network's IPv6 gateway (the host's address on the bridge).
    pub gateway: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NetworkInfo6>() == 24);

/// Key data of [`MAP_SUBNETS6`]: an IPv6 address (network byte order).
pub type SubnetKey6 = [u8; 16];

/// IP protocol numbers used in keys.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMP6: u8 = 58;

/// A published port: host address (0.0.0.0 = every host address), port
/// (network byte order) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey>() == 8);

/// Where a published port leads: the sandbox address and port, and the
/// host-side veth whose peer is the sandbox's interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    pub _pad: u16,
    /// ifindex of the host-side veth (redirect_peer target).
    pub ifindex: u32,
    /// MAC of the sandbox interface.
    pub mac: [u8; 6],
    pub _pad2: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Backend>() == 20);

/// A connection-tracking key: the packet's 5-tuple as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);

impl CtKey {
    /// The key of packets of protocol `proto` from `from` to `to`
    /// (address, port in network byte order): every conntrack key, either
    /// direction of a flow, is built here.
    #[inline(always)]
    pub const fn between(proto: u8, from: ([u8; 4], u16), to: ([u8; 4], u16)) -> CtKey {
        CtKey { saddr: from.0, daddr: to.0, sport: from.1, dport: to.1, proto, _pad: [0; 3] }
    }
}

/// Direction of a conntrack entry.
pub const CT_DIR_DNAT: u32 = 0;
pub const CT_DIR_REPLY: u32 = 1;
/// Egress from a sandbox: rewrite the source to the uplink address:port.
pub const CT_DIR_SNAT: u32 = 2;
/// Reply to egress: rewrite the destination back to the sandbox.
pub const CT_DIR_SNAT_REPLY: u32 = 3;
/// A sandbox's own flow that leaves without NAT (masquerade off): its
/// packets go on to the stack unchanged; the reply entry (CT_DIR_SNAT_REPLY
/// to the same address) lets the answers back in.
pub const CT_DIR_ROUTED: u32 = 4;

/// Hairpin of a sandbox to its own published port: the forward direction
/// also gets its source set to the network's gateway, the reply its
/// destination set back to the sandbox.
pub const CT_FLAG_HAIRPIN_SELF: u16 = 1;
/// A packet has gone through this entry. The entry of the direction that
/// did not open the flow starts without it: a flow whose two entries both
/// carry it has seen traffic both ways (Linux's "assured"); until then it
/// is unreplied and expires soon.
pub const CT_FLAG_SEEN: u16 = 2;
/// A NAT46 flow: an IPv6 client of a port published by a sandbox that has
/// only IPv4. Its forward entry is keyed by the IPv6 tuple; its reply entry
/// by the sandbox's IPv4 reply tuple in v4-mapped form (`::ffff:a.b.c.d`),
/// the client's IPv6 address kept in `DP_NAT46` under the same key.
pub const CT_FLAG_NAT46: u16 = 4;

/// `DP_NAT46`: the IPv6 client of each NAT46 flow, by its reply key (LRU:
/// written when a flow starts, read only while its conntrack entry lives).
pub const MAP_NAT46: &str = "DP_NAT46";

/// IPv6 clients of NAT46 flows appear to IPv4-only sandboxes as addresses
/// of 100.64.0.0/10 (RFC 6598's shared address space): 22 bits of a hash
/// of the client's address, so one client always appears as one address.
pub const NAT46_NET: [u8; 4] = [100, 64, 0, 0];
pub const NAT46_PREFIX_LEN: u8 = 10;

/// The IPv4 address IPv6 client `a` appears as to an IPv4-only sandbox.
#[inline(always)]
pub const fn nat46_client(a: &[u8; 16]) -> [u8; 4] {
    let h = crate::lb::flow_hash(crate::lb::fold6(a), NAT46_NET, 0, 0, 0).to_be_bytes();
    [NAT46_NET[0], NAT46_NET[1] | (h[1] & 0x3f), h[2], h[3]]
}

/// Whether `a` is in the NAT46 client prefix.
#[inline(always)]
pub const fn is_nat46_client(a: [u8; 4]) -> bool {
    a[0] == NAT46_NET[0] && a[1] & 0xc0 == NAT46_NET[1]
}

/// `::ffff:a.b.c.d`.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]
}

/// The IPv4 address of a v4-mapped IPv6 address.
#[inline(always)]
pub fn v4_of_mapped(a: &[u8; 16]) -> Option<[u8; 4]> {
    let w = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
    (w(0) == 0 && w(4) == 0 && w(8) == u32::from_ne_bytes([0, 0, 0xff, 0xff]))
        .then_some([a[12], a[13], a[14], a[15]])
}

/// TCP states tracked per entry; each has its own idle timeout.
pub const CT_STATE_NONE: u16 = 0;
pub const CT_STATE_SYN: u16 = 1;
pub const CT_STATE_ESTABLISHED: u16 = 2;
pub const CT_STATE_FIN: u16 = 3;
pub const CT_STATE_CLOSE: u16 = 4;

/// Whether entries of `dir` rewrite the destination (else the source).
pub const fn ct_rewrites_destination(dir: u32) -> bool {
    dir == CT_DIR_DNAT || dir == CT_DIR_SNAT_REPLY
}

/// What to do with packets of a tracked flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// [`CT_DIR_DNAT`]: rewrite the destination to `addr:port`;
    /// [`CT_DIR_REPLY`]: rewrite the source to `addr:port`.
    pub dir: u32,
    pub addr: [u8; 4],
    /// Network byte order.
    pub port: u16,
    /// TCP state (`CT_STATE_*`), 0 for UDP and ICMP.
    pub state: u16,
    /// Where to send the rewritten packet: the backend's host-side veth
    /// (redirect to its peer) or the uplink (redirect with neighbour lookup).
    pub ifindex: u32,
    /// Destination MAC for peer redirects.
    pub mac: [u8; 6],
    /// `CT_FLAG_*`.
    pub flags: u16,
    /// bpf_ktime_get_ns() of the last packet.
    pub last_seen: u64,
}
const _: () = assert!(core::mem::size_of::<CtEntry>() == 32);

/// Key of the subnet LPM trie (the data part; the prefix length is separate).
pub type SubnetKey = [u8; 4];

/// Ports published over IPv6: [`ServiceKey6`] → [`Backend6`] (the
/// sandbox's IPv6 address), as [`MAP_SERVICES`] for IPv4.
pub const MAP_SERVICES6: &str = "DP_SERVICES6";
/// The host's own IPv6 addresses (where ports published on `::` answer):
/// address → ifindex, as [`MAP_HOST_IPS`].
pub const MAP_HOST_IPS6: &str = "DP_HOST_IPS6";
/// Connection tracking of IPv6 flows: [`CtKey6`] → [`CtEntry6`], one LRU
/// entry per direction, as [`MAP_CT`].
pub const MAP_CT6: &str = "DP_CT6";
pub const MAX_CT6: u32 = 131_072;
/// The uplink's IPv6 address (one entry, all zero when it has none):
/// egress over IPv6 from NATed networks is masqueraded to it (NAT66).
pub const MAP_UPLINK6: &str = "DP_UPLINK6";

/// A port published over IPv6: host address (`::` = every host address),
/// port (network byte order) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey6 {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<ServiceKey6>() == 20);

/// Where a port published over IPv6 leads, as [`Backend`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend6 {
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    pub _pad: u16,
    /// ifindex of the host-side veth (redirect_peer target).
    pub ifindex: u32,
    /// MAC of the sandbox interface.
    pub mac: [u8; 6],
    pub _pad2: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Backend6>() == 32);

/// An IPv6 connection-tracking key: the packet's 5-tuple as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey6 {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Network byte order.
    pub sport: u16,
    /// Network byte order.
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey6>() == 40);

impl CtKey6 {
    /// As [`CtKey::between`].
    #[inline(always)]
    pub const fn between(proto: u8, from: ([u8; 16], u16), to: ([u8; 16], u16)) -> CtKey6 {
        CtKey6 { saddr: from.0, daddr: to.0, sport: from.1, dport: to.1, proto, _pad: [0; 3] }
    }
}

/// What to do with packets of a tracked IPv6 flow, as [`CtEntry`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry6 {
    pub dir: u32,
    /// TCP state (`CT_STATE_*`), 0 for UDP.
    pub state: u16,
    /// `CT_FLAG_*`.
    pub flags: u16,
    pub addr: [u8; 16],
    /// Network byte order.
    pub port: u16,
    /// Destination MAC for peer redirects.
    pub mac: [u8; 6],
    pub ifindex: u32,
    pub _pad: u32,
    /// bpf_ktime_get_ns() of the last packet.
    pub last_seen: u64,
}
const _: () = assert!(core::mem::size_of::<CtEntry6>() == 48);

/// Firewall rules for published ports (`dataplane firewall`): an LPM trie
/// whose key leads with the exact part (network, port, protocol; 0 for
/// "any") and ends with the client's address prefix. The datapath looks
/// up, in order, (network, port), (network, any port), (any network,
/// port), (any, any); the first hit decides, the longest prefix within it.
pub const MAP_FIREWALL: &str = "DP_FIREWALL";
pub const MAP_FIREWALL6: &str = "DP_FIREWALL6";
/// How many rules are installed (the datapath's gate: 0 costs one array read).
pub const MAP_FIREWALL_RULES: &str = "DP_FIREWALL_RULES";
pub const MAX_FIREWALL: u32 = 4_096;
/// Bits of a firewall key before the address (network, port, protocol, pad).
pub const FW_EXACT_BITS: u32 = 64;

/// Key data of [`MAP_FIREWALL`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwKey {
    /// The published port's network number (0: any), network byte order.
    pub net: [u8; 4],
    /// The published host port, network byte order (0: any).
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
    pub addr: [u8; 4],
}
const _: () = assert!(core::mem::size_of::<FwKey>() == 12);

/// Key data of [`MAP_FIREWALL6`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FwKey6 {
    pub net: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub _pad: u8,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<FwKey6>() == 24);

/// Value of the firewall maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwRule {
    /// [`FW_ALLOW`] or [`FW_DENY`].
    pub action: u32,
    /// The rule's ID (`firewall ls`).
    pub id: u32,
}
pub const FW_ALLOW: u32 = 1;
pub const FW_DENY: u32 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, every byte an explicit field.
    unsafe impl aya::Pod for super::FwKey {}
    unsafe impl aya::Pod for super::FwKey6 {}
    unsafe impl aya::Pod for super::FwRule {}
    // SAFETY: both are repr(C), Copy, with every byte an explicit field (no padding).
    unsafe impl aya::Pod for super::Endpoint {}
    unsafe impl aya::Pod for super::LocalTarget {}
    unsafe impl aya::Pod for super::RemoteTarget {}
    unsafe impl aya::Pod for super::NetworkInfo {}
    unsafe impl aya::Pod for super::NetworkInfo6 {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for crate::lb::LbTable {}
    unsafe impl aya::Pod for super::DnsPorts {}
    unsafe impl aya::Pod for super::DnsNameKey {}
    unsafe impl aya::Pod for super::DnsAnswer {}
    unsafe impl aya::Pod for super::DnsNets {}
    unsafe impl aya::Pod for crate::events::Event {}
    unsafe impl aya::Pod for crate::events::EventRate {}
    unsafe impl aya::Pod for crate::lb::LbStatKey {}
    unsafe impl aya::Pod for super::CtKey {}
    unsafe impl aya::Pod for super::CtEntry {}
    unsafe impl aya::Pod for super::ServiceKey6 {}
    unsafe impl aya::Pod for super::Backend6 {}
    unsafe impl aya::Pod for super::CtKey6 {}
    unsafe impl aya::Pod for super::CtEntry6 {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::SockNatKey {}
    unsafe impl aya::Pod for super::SockNatOrig {}
}

pub use crate::metrics::Counter;
