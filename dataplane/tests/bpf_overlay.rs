//! The overlay on crafted frames: a sandbox asking ARP for an overlay
//! address of another host is answered in BPF with that sandbox's MAC; its
//! packets to it go to the VXLAN device with that MAC as destination
//! (counted); an address of another overlay network is dropped as
//! isolation (and not answered); a virtual IP balances onto a backend of
//! another host (DNAT, then the tunnel). IPv6: a neighbour solicitation for
//! a remote sandbox is answered in BPF, its packets enter the tunnel, and
//! an IPv6 VIP balances onto a backend of another host.

mod common;

use std::collections::HashMap;

use common::*;
use dataplane::datapath::overlay::RemoteEntry;
use dataplane_common::{Config, DropReason};

const VNI: u32 = 4096;
const OTHER_VNI: u32 = 4097;
const CLIENT: [u8; 4] = [10, 7, 0, 2];
const REMOTE: [u8; 4] = [10, 7, 0, 9];
const ELSEWHERE: [u8; 4] = [10, 8, 0, 9];
const VIP: [u8; 4] = [10, 7, 0, 254];
/// Any ifindex: test runs report the redirect without making it.
const VXLAN_IFINDEX: u32 = 99;

fn overlay_fixture(tag: &str) -> Fixture {
    let f = fixture(tag);
    f.network(VNI, "10.7.0.0/24", 0);
    f.network(OTHER_VNI, "10.8.0.0/24", 0);
    f.endpoint(LO, VNI, CLIENT, 0);
    f.dp.config.set(Config { vxlan_ifindex: VXLAN_IFINDEX, ..Default::default() }).expect("config");
    let remote = |vni| RemoteEntry { underlay: [192, 0, 2, 12].into(), vni, mac: [2, 0x42, 9, 9, 9, 9] };
    let want = HashMap::from([(REMOTE.into(), remote(VNI)), (ELSEWHERE.into(), remote(OTHER_VNI))]);
    assert_eq!(f.dp.overlay.sync(&want).expect("remote"), (2, 0));
    f
}

/// An ARP request from the client for `target`.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac_of(CLIENT));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac_of(CLIENT));
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

#[test]
fn arp_for_a_remote_sandbox_is_answered_in_bpf_and_its_packets_enter_the_tunnel() {
    let f = overlay_fixture("ov-arp");
    let (verdict, out) = f.veth(&arp_request(REMOTE));
    assert_eq!(verdict, REDIRECT, "the reply goes back into the asking sandbox");
    let mac = [2, 0x42, 9, 9, 9, 9];
    assert_eq!(&out[0..6], &mac_of(CLIENT), "to the asker");
    assert_eq!(&out[6..12], &mac, "from the remote sandbox");
    assert_eq!(&out[20..22], &[0, 2], "an ARP reply");
    assert_eq!((&out[22..28], &out[28..32]), (&mac[..], &REMOTE[..]), "sender: the remote sandbox");
    assert_eq!((&out[32..38], &out[38..42]), (&mac_of(CLIENT)[..], &CLIENT[..]), "target: the asker");
    assert_eq!(f.count(DropReason::ArpProxy), 1);
    // The gateway and other networks' addresses are not ours to answer.
    assert_eq!(f.veth(&arp_request([10, 7, 0, 1])).0, NEXT, "the gateway: the bridge answers");
    assert_eq!(f.veth(&arp_request(ELSEWHERE)).0, NEXT, "another overlay network's sandbox");
    assert_eq!(f.count(DropReason::ArpProxy), 1);

    // TCP to the remote sandbox: towards the VXLAN device, its MAC set.
    let (verdict, out) = f.veth(&tcp((CLIENT, 40000), (REMOTE, 80), SYN));
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out);
    assert_eq!((p.dst, p.dport, p.dst_mac), (REMOTE, 80, mac));
    assert!(checksums_ok(&out));
    assert_eq!(f.count(DropReason::OverlayEncap), 1);
    // Another overlay network's sandbox on another host: isolated, counted.
    let (verdict, _) = f.veth(&tcp((CLIENT, 40001), (ELSEWHERE, 80), SYN));
    assert_eq!(verdict, DROP);
    assert_eq!(f.count(DropReason::PolicyNetworkIsolation), 1);
    assert_eq!(f.count(DropReason::OverlayEncap), 1);
}

const CLIENT6: &str = "fd00:7::2";
const REMOTE6: &str = "fd00:7::9";
const ELSEWHERE6: &str = "fd00:8::9";

/// A neighbour solicitation from the client for `target` (multicast, with
/// its link-layer address option, or unicast without).
fn solicitation(target: [u8; 16], with_lladdr: bool) -> Vec<u8> {
    let mut body = vec![135, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&target);
    if with_lladdr {
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&mac_of(CLIENT));
    }
    let dst = if with_lladdr {
        let mut d = v6("ff02::1:ff00:0");
        d[13..].copy_from_slice(&target[13..]);
        d
    } else {
        target
    };
    icmp6_frame(v6(CLIENT6), dst, 255, mac_of(CLIENT), &body)
}

#[test]
fn neighbour_solicitations_for_remote_sandboxes_are_answered_in_bpf_and_ipv6_enters_the_tunnel() {
    let mac = [2, 0x42, 7, 7, 7, 7];
    let f = overlay_fixture6("ov-ndp", mac);
    for with_lladdr in [true, false] {
        let before = f.count(DropReason::ArpProxy);
        let (verdict, out) = f.veth(&solicitation(v6(REMOTE6), with_lladdr));
        assert_eq!(verdict, REDIRECT, "the advertisement goes back into the asking sandbox");
        assert_eq!(
            (&out[0..6], &out[6..12]),
            (&mac_of(CLIENT)[..], &mac[..]),
            "to the asker, from the remote"
        );
        let ip = &out[14..];
        assert_eq!(ip[7], 255, "hop limit of neighbour discovery");
        assert_eq!(
            (&ip[8..24], &ip[24..40]),
            (&v6(REMOTE6)[..], &v6(CLIENT6)[..]),
            "from the target to the asker"
        );
        let nd = &ip[40..];
        assert_eq!((nd[0], nd[1], nd[4]), (136, 0, 0x60), "a solicited advertisement that overrides");
        assert_eq!(&nd[8..24], &v6(REMOTE6), "its target");
        if with_lladdr {
            assert_eq!((nd[24], nd[25], &nd[26..32]), (2, 1, &mac[..]), "the target's link-layer address");
        } else {
            assert_eq!(nd.len(), 24, "no option asked, none given");
        }
        assert!(icmp6_checksum_ok(&out), "ICMPv6 checksum");
        assert_eq!(f.count(DropReason::ArpProxy), before + 1);
    }
    // Another overlay network's sandbox, or this host's gateway: not ours to answer.
    let before = f.count(DropReason::ArpProxy);
    assert_ne!(f.veth(&solicitation(v6(ELSEWHERE6), true)).0, REDIRECT, "another network's sandbox");
    assert_ne!(f.veth(&solicitation(v6("fd00:7::1"), true)).0, REDIRECT, "the gateway");
    assert_eq!(f.count(DropReason::ArpProxy), before);

    // TCP over IPv6 to the remote sandbox: towards the VXLAN device, its MAC set.
    let syn = l4_frame6(TCP, (v6(CLIENT6), 40000), (v6(REMOTE6), 80), SYN, &[]);
    let (verdict, out) = f.veth(&syn);
    assert_eq!(verdict, REDIRECT);
    assert_eq!(&out[0..6], &mac, "to the remote sandbox's MAC");
    let (_, dst, _, dport, ok) = parse6(&out);
    assert!(dst == v6(REMOTE6) && dport == 80 && ok);
    assert_eq!(f.count(DropReason::OverlayEncap), 1);
    // Another overlay network's sandbox: isolated, counted, not encapsulated.
    let syn = l4_frame6(TCP, (v6(CLIENT6), 40001), (v6(ELSEWHERE6), 80), SYN, &[]);
    assert_eq!(f.veth(&syn).0, DROP);
    assert_eq!(f.count(DropReason::PolicyNetworkIsolation), 1);
    assert_eq!(f.count(DropReason::OverlayEncap), 1);
}

/// The overlay fixture with IPv6: the client endpoint dual-stack, the
/// remote sandboxes' IPv6 addresses known (MAC `mac`).
fn overlay_fixture6(tag: &str, mac: [u8; 6]) -> Fixture {
    let f = overlay_fixture(tag);
    f.network6(VNI, "fd00:7::/64", 0);
    f.network6(OTHER_VNI, "fd00:8::/64", 0);
    f.dp.endpoints
        .set(dataplane::datapath::endpoints::EndpointEntry {
            ifindex: LO,
            net_num: VNI,
            ip: CLIENT.into(),
            ip6: Some(CLIENT6.parse().expect("v6")),
            mac: mac_of(CLIENT),
            flags: 0,
        })
        .expect("endpoint");
    let remote = |vni| RemoteEntry { underlay: [192, 0, 2, 12].into(), vni, mac };
    let want = HashMap::from([
        (REMOTE.into(), remote(VNI)),
        (REMOTE6.parse().expect("v6"), remote(VNI)),
        (ELSEWHERE6.parse().expect("v6"), remote(OTHER_VNI)),
    ]);
    f.dp.overlay.sync(&want).expect("remote");
    f
}

#[test]
fn an_ipv6_virtual_ip_balances_onto_a_backend_of_another_host() {
    let mac = [2, 0x42, 7, 7, 7, 7];
    let f = overlay_fixture6("ov-lb6", mac);
    let table = dataplane::datapath::lb::maglev(&[("remote".into(), u32::from_ne_bytes(REMOTE))]);
    f.dp.lb.set(VIP.into(), &table).expect("VIP");
    let vip6: std::net::Ipv6Addr = "fd00:7::fe".parse().expect("v6");
    f.dp.lb.set6(vip6, VIP.into()).expect("VIP6");
    f.dp.lb.set_addr6(REMOTE.into(), REMOTE6.parse().expect("v6")).expect("addr6");
    let syn = l4_frame6(TCP, (v6(CLIENT6), 40000), (vip6.octets(), 80), SYN, &[]);
    let (verdict, out) = f.veth(&syn);
    assert_eq!(verdict, REDIRECT, "into the tunnel");
    assert_eq!(&out[0..6], &mac, "to the remote backend's MAC");
    let (src, dst, _, dport, ok) = parse6(&out);
    assert_eq!((src, dst, dport), (v6(CLIENT6), v6(REMOTE6), 80), "DNAT to the backend's IPv6 address");
    assert!(ok, "TCP checksum");
    assert_eq!(f.count(DropReason::LbForwarded), 1);
    // The flow's next packet follows its tracked entry, through the tunnel too.
    let ack = l4_frame6(TCP, (v6(CLIENT6), 40000), (vip6.octets(), 80), ACK, &[]);
    let (verdict, out) = f.veth(&ack);
    assert_eq!(verdict, REDIRECT);
    assert_eq!(parse6(&out).1, v6(REMOTE6));
    assert_eq!(f.count(DropReason::NatPublished) + f.count(DropReason::LbForwarded), 2);
}

#[test]
fn a_virtual_ip_balances_onto_a_backend_of_another_host() {
    let f = overlay_fixture("ov-lb");
    let table = dataplane::datapath::lb::maglev(&[("remote".into(), u32::from_ne_bytes(REMOTE))]);
    f.dp.lb.set(VIP.into(), &table).expect("VIP");
    let (verdict, out) = f.veth(&tcp((CLIENT, 40000), (VIP, 80), SYN));
    assert_eq!(verdict, REDIRECT, "into the tunnel");
    let p = parse(&out);
    assert_eq!(
        (p.src, p.dst, p.dport, p.dst_mac),
        (CLIENT, REMOTE, 80, [2, 0x42, 9, 9, 9, 9]),
        "DNAT to the backend"
    );
    assert!(checksums_ok(&out));
    assert_eq!(f.count(DropReason::LbForwarded), 1);
    // The next packet of the flow follows its tracked entry, through the tunnel too.
    let (verdict, out) = f.veth(&tcp((CLIENT, 40000), (VIP, 80), ACK));
    assert_eq!(verdict, REDIRECT);
    assert_eq!(parse(&out).dst, REMOTE);
    assert_eq!(f.count(DropReason::NatPublished) + f.count(DropReason::LbForwarded), 2);
}
