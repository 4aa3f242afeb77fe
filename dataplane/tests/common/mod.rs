//! What the BPF packet tests share: a datapath loaded into a bpffs
//! directory of its own (no interface is touched), and one small packet
//! builder and parser with checksum checks. Programs run on crafted frames
//! through BPF_PROG_TEST_RUN; the skb arrives on `lo` (ifindex 1).
#![allow(dead_code)]

use std::net::Ipv4Addr;

use dataplane::datapath::Datapath;
use dataplane::datapath::endpoints::EndpointEntry;
use dataplane::datapath::services::Published;
use dataplane_common::{Backend, Backend6, Config, DropReason, ServiceKey, ServiceKey6};

/// tcx verdicts.
pub const NEXT: i32 = -1;
pub const DROP: i32 = 2;
/// TC_ACT_REDIRECT: handed to another interface (bpf_redirect_peer / _neigh).
pub const REDIRECT: i32 = 7;
/// The ifindex test-run skbs arrive on (loopback).
pub const LO: u32 = 1;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// A datapath in a private bpffs directory, removed with it.
pub struct Fixture {
    pub dp: Datapath,
    pins: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// Loads the datapath (root needed: the test fails, never skips, without it).
pub fn fixture(tag: &str) -> Fixture {
    assert!(
        std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n"),
        "this test loads BPF programs: run it as root (cargo xtask test)"
    );
    // One directory per fixture: tests of one binary run in parallel threads
    // (one pid), and two fixtures of one tag must not share pinned maps.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/dataplane-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pins);
    let dp =
        Datapath::load(&pins, Default::default()).expect("load BPF (needs root, bpffs, a kernel with tcx)");
    Fixture { dp, pins }
}

impl Fixture {
    /// The program's verdict and the frame as it left the program.
    pub fn run(&self, prog: &str, frame: &[u8]) -> (i32, Vec<u8>) {
        self.dp.programs.test_run(prog, frame).expect("BPF_PROG_TEST_RUN")
    }

    pub fn veth(&self, frame: &[u8]) -> (i32, Vec<u8>) {
        self.run(dataplane::datapath::programs::PROG_VETH_INGRESS, frame)
    }

    pub fn uplink(&self, frame: &[u8]) -> (i32, Vec<u8>) {
        self.run(dataplane::datapath::programs::PROG_UPLINK_INGRESS, frame)
    }

    /// Packets counted under `reason`, all directions.
    pub fn count(&self, reason: DropReason) -> u64 {
        self.dp
            .metrics
            .read()
            .expect("metrics")
            .iter()
            .filter(|m| m.reason == reason)
            .map(|m| m.packets)
            .sum()
    }

    /// A bridge network `net` with `subnet` (gateway .1) and `flags`.
    pub fn network(&self, net: u32, subnet: &str, flags: u32) {
        let s: ipnetwork::Ipv4Network = subnet.parse().expect("subnet");
        let gw = Ipv4Addr::from(u32::from(s.network()) + 1);
        self.dp.endpoints.set_subnet(s, net, gw, flags).expect("subnet");
    }

    /// A network's IPv6 subnet (gateway `::1` of it).
    pub fn network6(&self, net: u32, subnet: &str, flags: u32) {
        let s: ipnetwork::Ipv6Network = subnet.parse().expect("subnet");
        let gw = std::net::Ipv6Addr::from(u128::from(s.network()) + 1);
        self.dp.endpoints.set_subnet6(s, net, gw, flags).expect("subnet6");
    }

    /// An endpoint: veth `ifindex`, address `ip` on network `net`.
    pub fn endpoint(&self, ifindex: u32, net: u32, ip: [u8; 4], flags: u32) {
        self.dp
            .endpoints
            .set(EndpointEntry { ifindex, net_num: net, ip: ip.into(), ip6: None, mac: mac_of(ip), flags })
            .expect("endpoint");
    }

    /// Publishes `host:hport/proto` to `backend:port` behind veth `ifindex`.
    pub fn publish(&self, host: [u8; 4], hport: u16, proto: u8, backend: [u8; 4], port: u16, ifindex: u32) {
        let key = ServiceKey { addr: host, port: hport.to_be(), proto, _pad: 0 };
        let b = Backend {
            addr: backend,
            port: port.to_be(),
            _pad: 0,
            ifindex,
            mac: mac_of(backend),
            _pad2: [0; 2],
        };
        self.dp.services.set(&Published { v4: vec![(key, b)], v6: Vec::new() }).expect("service");
    }

    /// Publishes `[host]:hport/proto` (`::`: every host address) to
    /// `[backend]:port` behind veth `ifindex`.
    pub fn publish6(
        &self,
        host: [u8; 16],
        hport: u16,
        proto: u8,
        backend: [u8; 16],
        port: u16,
        ifindex: u32,
    ) {
        let key = ServiceKey6 { addr: host, port: hport.to_be(), proto, _pad: 0 };
        let b = Backend6 {
            addr: backend,
            port: port.to_be(),
            _pad: 0,
            ifindex,
            mac: [0x02, 0x42, 0, 0, 0, 0x66],
            _pad2: [0; 2],
        };
        self.dp.services.set(&Published { v4: Vec::new(), v6: vec![(key, b)] }).expect("service6");
    }

    /// The host's IPv6 addresses (`::` publications answer there).
    pub fn host_ips6(&self, ips: &[[u8; 16]]) {
        let ips: Vec<(std::net::Ipv6Addr, u32)> = ips.iter().map(|ip| ((*ip).into(), LO)).collect();
        self.dp.services.set_host_ips(&[], &ips).expect("host ips6");
    }

    /// The host's addresses (0.0.0.0 publications answer there).
    pub fn host_ips(&self, ips: &[[u8; 4]]) {
        let ips: Vec<(Ipv4Addr, u32)> = ips.iter().map(|ip| (Ipv4Addr::from(*ip), LO)).collect();
        self.dp.services.set_host_ips(&ips, &[]).expect("host ips");
    }

    /// Egress SNAT through `uplink_ip` (the uplink is `lo` here).
    pub fn uplink_config(&self, uplink_ip: [u8; 4]) {
        let cfg = Config {
            uplink_ifindex: LO,
            uplink_ip,
            snat_port_min: 61000,
            snat_port_max: 65535,
            ..Default::default()
        };
        self.dp.config.set(cfg).expect("config");
    }

    /// Conntrack rows as `ct list` would show them: (source, destination, state).
    pub fn flows(&self) -> Vec<(String, String, &'static str)> {
        self.dp
            .conntrack
            .flows()
            .expect("flows")
            .v4
            .iter()
            .map(|f| {
                let ep = |a: [u8; 4], p: u16| format!("{}:{}", Ipv4Addr::from(a), u16::from_be(p));
                (
                    ep(f.key.saddr, f.key.sport),
                    ep(f.key.daddr, f.key.dport),
                    dataplane::datapath::conntrack::state_name(f.key.proto, &f.entry, f.partner.as_ref()),
                )
            })
            .collect()
    }
}

/// The MAC dataplane gives an address (02:42 + the address).
pub fn mac_of(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x42, ip[0], ip[1], ip[2], ip[3]]
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum()
}

/// The Internet checksum of `data` (with an initial partial sum).
fn checksum(initial: u32, data: &[u8]) -> u16 {
    !fold(initial + sum16(data))
}

fn pseudo(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + len as u32
}

/// An IPv4 packet (header + `l4`) with a valid header checksum.
pub fn ip_packet(src: [u8; 4], dst: [u8; 4], proto: u8, mut l4: Vec<u8>) -> Vec<u8> {
    // L4 checksum (TCP at 16, UDP at 6, ICMP at 2).
    let at = match proto {
        TCP => Some(16),
        UDP => Some(6),
        ICMP => Some(2),
        _ => None,
    };
    if let Some(at) = at {
        l4[at] = 0;
        l4[at + 1] = 0;
        let initial = if proto == ICMP { 0 } else { pseudo(src, dst, proto, l4.len()) };
        let c = checksum(initial, &l4);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let total = (20 + l4.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(0, &ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&l4);
    ip
}

/// An Ethernet frame around an IPv4 packet.
pub fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], ip: Vec<u8>) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f
}

const OUTSIDE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];

/// A TCP segment in a frame (no payload).
pub fn tcp(src: ([u8; 4], u16), dst: ([u8; 4], u16), flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&1000u32.to_be_bytes());
    l4.extend_from_slice(&(if flags & ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    frame(OUTSIDE_MAC, mac_of(dst.0), ip_packet(src.0, dst.0, TCP, l4))
}

/// A UDP datagram in a frame.
pub fn udp(src: ([u8; 4], u16), dst: ([u8; 4], u16), payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    frame(OUTSIDE_MAC, mac_of(dst.0), ip_packet(src.0, dst.0, UDP, l4))
}

/// An ICMP echo request in a frame.
pub fn ping(src: [u8; 4], dst: [u8; 4], id: u16) -> Vec<u8> {
    let mut l4 = vec![8, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&[0, 1, b'p', b'i', b'n', b'g']);
    frame(OUTSIDE_MAC, mac_of(dst), ip_packet(src, dst, ICMP, l4))
}

/// An ICMP error (`kind`, `code`) from `src` to `dst` quoting the IP header
/// and first 8 bytes of `quoted` (a frame), with `mtu` for "fragmentation needed".
pub fn icmp_error(src: [u8; 4], dst: [u8; 4], kind: u8, code: u8, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let mut l4 = vec![kind, code, 0, 0, 0, 0];
    l4.extend_from_slice(&mtu.to_be_bytes());
    l4.extend_from_slice(&quoted[14..14 + 28]);
    frame(OUTSIDE_MAC, mac_of(dst), ip_packet(src, dst, ICMP, l4))
}

/// What a frame says, read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub proto: u8,
    /// TCP/UDP ports, or the ICMP echo identifier in both.
    pub sport: u16,
    pub dport: u16,
}

pub fn parse(f: &[u8]) -> Parsed {
    let ip = &f[14..];
    let l4 = &ip[20..];
    let (sport, dport) = match ip[9] {
        ICMP => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        _ => (u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]])),
    };
    Parsed {
        dst_mac: f[0..6].try_into().expect("mac"),
        src: ip[12..16].try_into().expect("src"),
        dst: ip[16..20].try_into().expect("dst"),
        proto: ip[9],
        sport,
        dport,
    }
}

/// Whether the IPv4 header checksum and the L4 checksum (TCP, UDP with one,
/// ICMP — for ICMP errors also the quoted IP header's) are right.
pub fn checksums_ok(f: &[u8]) -> bool {
    let ip = &f[14..];
    let len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let (src, dst, proto) = (ip[12..16].try_into().expect("src"), ip[16..20].try_into().expect("dst"), ip[9]);
    let header_ok = fold(sum16(&ip[..20])) == 0xffff;
    let l4 = &ip[20..len];
    let l4_ok = match proto {
        TCP => fold(pseudo(src, dst, TCP, l4.len()) + sum16(l4)) == 0xffff,
        UDP => {
            u16::from_be_bytes([l4[6], l4[7]]) == 0
                || fold(pseudo(src, dst, UDP, l4.len()) + sum16(l4)) == 0xffff
        }
        ICMP => {
            let quoted_ok = !matches!(l4[0], 3 | 11) || fold(sum16(&l4[8..28])) == 0xffff;
            fold(sum16(l4)) == 0xffff && quoted_ok
        }
        _ => true,
    };
    header_ok && l4_ok
}

/// An IPv6 address from its text.
pub fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>().expect("IPv6 address").octets()
}

fn pseudo6(src: [u8; 16], dst: [u8; 16], proto: u8, len: usize) -> u32 {
    sum16(&src) + sum16(&dst) + u32::from(proto) + len as u32
}

/// An IPv6 TCP segment (no payload) or UDP datagram (`payload`) in a frame,
/// with a valid checksum.
pub fn l4_frame6(
    proto: u8,
    src: ([u8; 16], u16),
    dst: ([u8; 16], u16),
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&src.1.to_be_bytes());
    l4.extend_from_slice(&dst.1.to_be_bytes());
    let at = if proto == TCP {
        l4.extend_from_slice(&1000u32.to_be_bytes());
        l4.extend_from_slice(&(if flags & ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
        l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        16
    } else {
        l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(payload);
        6
    };
    let c = checksum(pseudo6(src.0, dst.0, proto, l4.len()), &l4);
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0x42, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x99, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[proto, 64]);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&l4);
    f
}

/// (source, destination, source port, destination port) of an IPv6 frame,
/// and whether its transport checksum is right.
pub fn parse6(f: &[u8]) -> ([u8; 16], [u8; 16], u16, u16, bool) {
    let ip = &f[14..];
    let src: [u8; 16] = ip[8..24].try_into().expect("src");
    let dst: [u8; 16] = ip[24..40].try_into().expect("dst");
    let l4 = &ip[40..];
    let ok = fold(pseudo6(src, dst, ip[6], l4.len()) + sum16(l4)) == 0xffff;
    (src, dst, u16::from_be_bytes([l4[0], l4[1]]), u16::from_be_bytes([l4[2], l4[3]]), ok)
}

/// An ICMPv6 message `body` (type, code, checksum left zero, the rest)
/// from `src` to `dst` with hop limit `hops`, its checksum set, from MAC `mac`.
pub fn icmp6_frame(src: [u8; 16], dst: [u8; 16], hops: u8, mac: [u8; 6], body: &[u8]) -> Vec<u8> {
    let mut l4 = body.to_vec();
    let c = checksum(pseudo6(src, dst, 58, l4.len()), &l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, src[13], src[14], src[15]];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, hops]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    f
}

/// Whether the ICMPv6 checksum of an IPv6 frame is right.
pub fn icmp6_checksum_ok(f: &[u8]) -> bool {
    let ip = &f[14..];
    let src: [u8; 16] = ip[8..24].try_into().expect("src");
    let dst: [u8; 16] = ip[24..40].try_into().expect("dst");
    fold(pseudo6(src, dst, 58, ip[40..].len()) + sum16(&ip[40..])) == 0xffff
}

/// An ICMPv6 error (`kind`, `code`, `mtu` for packet too big) from `src`
/// to `dst` quoting the IPv6 packet of frame `quoted`, with a valid checksum.
pub fn icmp6_error_frame(
    src: [u8; 16],
    dst: [u8; 16],
    kind: u8,
    code: u8,
    mtu: u32,
    quoted: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![kind, code, 0, 0];
    l4.extend_from_slice(&mtu.to_be_bytes());
    l4.extend_from_slice(&quoted[14..]);
    let c = checksum(pseudo6(src, dst, 58, l4.len()), &l4);
    l4[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x02, 0x42, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x99, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&l4);
    f
}

/// Of an ICMPv6 error frame: (outer destination, embedded source, embedded
/// source port, whether the ICMPv6 checksum is right).
pub fn parse_icmp6_error(f: &[u8]) -> ([u8; 16], [u8; 16], u16, bool) {
    let ip = &f[14..];
    let src: [u8; 16] = ip[8..24].try_into().expect("src");
    let dst: [u8; 16] = ip[24..40].try_into().expect("dst");
    let icmp = &ip[40..];
    let ok = fold(pseudo6(src, dst, 58, icmp.len()) + sum16(icmp)) == 0xffff;
    let inner = &icmp[8..];
    let inner_src: [u8; 16] = inner[8..24].try_into().expect("inner src");
    (dst, inner_src, u16::from_be_bytes([inner[40], inner[41]]), ok)
}
