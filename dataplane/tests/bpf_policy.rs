//! Every policy verdict on crafted frames (BPF_PROG_TEST_RUN; no interface
//! is touched), each dropped frame counted under its reason and each "can
//! not" paired with a "can": network isolation, ICC off, `--internal`,
//! direct access from outside, only a SYN opening a flow, TCP flag garbage.

mod common;

use common::*;
use dataplane_common::{DropReason, NET_FLAG_INTERNAL, NET_FLAG_NO_ICC, NET_FLAG_ROUTED};

fn icmp(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    ping(src, dst, 1)
}

#[test]
fn isolation_verdicts_on_crafted_packets() {
    let f = fixture("policy-isolation");
    f.network(1, "10.1.0.0/24", 0);
    f.network(2, "10.2.0.0/24", 0);

    // Not an endpoint yet: nothing is judged.
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 2, 0, 2])).0, NEXT);

    f.endpoint(LO, 1, [10, 1, 0, 2], 0);
    let before = f.count(DropReason::PolicyNetworkIsolation);
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 2, 0, 2])).0, DROP, "other network");
    assert_eq!(f.count(DropReason::PolicyNetworkIsolation), before + 1, "drop counted");
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 1, 0, 3])).0, NEXT, "same network");
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 2, 0, 1])).0, NEXT, "other gateway is the host");
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [192, 0, 2, 9])).0, NEXT, "outside every network");
    let mut arp = icmp([10, 1, 0, 2], [10, 2, 0, 2]);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(f.veth(&arp).0, NEXT, "non-IP is not judged here");
    // (A truncated IPv4 header, counted as INVALID_PACKET, cannot be fed
    // through BPF_PROG_TEST_RUN: the kernel refuses such an skb with EINVAL.)
    // Removing the other network's subnet lifts the drop.
    f.dp.endpoints.remove_subnet("10.2.0.0/24".parse().expect("net")).expect("remove subnet");
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 2, 0, 2])).0, NEXT);
}

#[test]
fn icc_off_drops_between_sandboxes_of_the_network_but_not_to_the_gateway() {
    let f = fixture("policy-icc");
    f.network(1, "10.1.0.0/24", NET_FLAG_NO_ICC);
    f.endpoint(LO, 1, [10, 1, 0, 2], NET_FLAG_NO_ICC);
    assert_eq!(f.veth(&tcp(([10, 1, 0, 2], 40000), ([10, 1, 0, 3], 80), SYN)).0, DROP);
    assert_eq!(f.count(DropReason::PolicyIcc), 1);
    assert_eq!(f.veth(&icmp([10, 1, 0, 2], [10, 1, 0, 1])).0, NEXT, "the gateway stays reachable");
}

/// An ICMPv6 echo request from `src` to `dst` in a frame.
fn ping6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let icmp = [128u8, 0, 0, 0, 0, 1, 0, 1];
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1, 0x02, 0x42, 10, 1, 0, 2, 0x86, 0xdd];
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn icc_off_holds_for_ipv6_link_local_unicast_too() {
    let link_local = |last: u8| {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfe, 0x80]);
        a[15] = last;
        a
    };
    let all_nodes = {
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xff, 0x02]);
        a[15] = 1;
        a
    };
    let f = fixture("policy-icc6");
    f.network(1, "10.1.0.0/24", NET_FLAG_NO_ICC);
    f.network(2, "10.2.0.0/24", 0);
    f.endpoint(LO, 1, [10, 1, 0, 2], NET_FLAG_NO_ICC);
    assert_eq!(f.veth(&ping6(link_local(2), link_local(3))).0, DROP, "another sandbox's fe80::");
    assert_eq!(f.count(DropReason::PolicyIcc), 1);
    assert_eq!(f.veth(&ping6(link_local(2), all_nodes)).0, NEXT, "neighbour discovery goes on");
    // The same sandbox on a network with ICC on: its link-local neighbours are fine.
    f.endpoint(LO, 2, [10, 2, 0, 2], 0);
    assert_eq!(f.veth(&ping6(link_local(2), link_local(3))).0, NEXT);
    assert_eq!(f.count(DropReason::PolicyIcc), 1);
}

#[test]
fn ipv6_between_networks_is_judged_as_ipv4_is() {
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("addr").octets();
    let f = fixture("policy-isolation6");
    f.network(1, "10.1.0.0/24", 0);
    f.network6(1, "fd00:1::/64", 0);
    f.network6(2, "fd00:2::/64", 0);
    f.endpoint(LO, 1, [10, 1, 0, 2], 0);
    let me = v6("fd00:1::2");
    assert_eq!(f.veth(&ping6(me, v6("fd00:2::2"))).0, DROP, "another network's sandbox");
    assert_eq!(f.count(DropReason::PolicyNetworkIsolation), 1);
    assert_eq!(f.veth(&ping6(me, v6("fd00:2::1"))).0, NEXT, "its gateway is the host");
    assert_eq!(f.veth(&ping6(me, v6("fd00:1::3"))).0, NEXT, "its own network");
    assert_eq!(f.veth(&ping6(me, v6("2001:db8::9"))).0, NEXT, "outside every network");
    // ICC off: its own network's sandboxes are dropped, not its gateway or the outside.
    f.network6(1, "fd00:1::/64", NET_FLAG_NO_ICC);
    f.endpoint(LO, 1, [10, 1, 0, 2], NET_FLAG_NO_ICC);
    assert_eq!(f.veth(&ping6(me, v6("fd00:1::3"))).0, DROP);
    assert_eq!(f.count(DropReason::PolicyIcc), 1);
    assert_eq!(f.veth(&ping6(me, v6("fd00:1::1"))).0, NEXT, "the gateway stays reachable");
    assert_eq!(f.veth(&ping6(me, v6("2001:db8::9"))).0, NEXT, "so does the outside");
    // --internal: nothing leaves over IPv6 either.
    f.endpoint(LO, 1, [10, 1, 0, 2], NET_FLAG_INTERNAL);
    assert_eq!(f.veth(&ping6(me, v6("2001:db8::9"))).0, DROP);
    assert_eq!(f.count(DropReason::PolicyInternal), 1);
    assert_eq!(f.veth(&ping6(me, v6("fd00:1::3"))).0, NEXT, "inside: fine");
}

#[test]
fn internal_networks_cannot_leave() {
    let f = fixture("policy-internal");
    f.network(1, "10.1.0.0/24", NET_FLAG_INTERNAL);
    f.endpoint(LO, 1, [10, 1, 0, 2], NET_FLAG_INTERNAL);
    f.uplink_config([192, 0, 2, 1]);
    assert_eq!(f.veth(&udp(([10, 1, 0, 2], 5000), ([198, 51, 100, 9], 53), b"q")).0, DROP);
    assert_eq!(f.count(DropReason::PolicyInternal), 1);
    assert_eq!(f.veth(&udp(([10, 1, 0, 2], 5000), ([10, 1, 0, 7], 53), b"q")).0, NEXT, "inside: fine");
}

#[test]
fn outside_reaches_sandboxes_only_through_published_ports_unless_routed() {
    let f = fixture("policy-direct");
    let (host, client, sandbox) = ([192, 0, 2, 1], [198, 51, 100, 7], [10, 1, 0, 2]);
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(5, 1, sandbox, 0);
    f.host_ips(&[host]);
    f.publish(host, 8080, TCP, sandbox, 80, 5);

    // Routed straight to the sandbox's address: refused, counted.
    assert_eq!(f.uplink(&tcp((client, 40000), (sandbox, 22), SYN)).0, DROP);
    assert_eq!(f.uplink(&udp((client, 5000), (sandbox, 53), b"q")).0, DROP);
    assert_eq!(f.uplink(&icmp(client, sandbox)).0, DROP);
    assert_eq!(f.count(DropReason::PolicyDirectAccess), 3);
    assert_eq!(f.uplink(&icmp(client, [10, 1, 0, 1])).0, NEXT, "the gateway is the host's");
    // Through the published port: fine.
    assert_eq!(f.uplink(&tcp((client, 40001), (host, 8080), SYN)).0, REDIRECT);

    // A routed network (gateway_mode_ipv4=routed) is open to direct access.
    f.network(1, "10.1.0.0/24", NET_FLAG_ROUTED);
    assert_eq!(f.uplink(&tcp((client, 40002), (sandbox, 22), SYN)).0, NEXT);
}

#[test]
fn outside_reaches_no_sandbox_over_ipv6_unless_the_network_is_routed() {
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().expect("addr").octets();
    let f = fixture("policy-direct6");
    f.network6(1, "fd00:1::/64", 0);
    let client = v6("2001:db8::7");
    assert_eq!(f.uplink(&ping6(client, v6("fd00:1::2"))).0, DROP, "a NATed network's sandbox");
    assert_eq!(f.count(DropReason::PolicyDirectAccess), 1);
    assert_eq!(f.uplink(&ping6(client, v6("fd00:1::1"))).0, NEXT, "the gateway is the host's");
    assert_eq!(f.uplink(&ping6(client, v6("2001:db8::1"))).0, NEXT, "the host's own traffic");
    // gateway_mode_ipv6=routed: open to direct access.
    f.network6(1, "fd00:1::/64", NET_FLAG_ROUTED);
    assert_eq!(f.uplink(&ping6(client, v6("fd00:1::2"))).0, NEXT);
    assert_eq!(f.count(DropReason::PolicyDirectAccess), 1);
}

#[test]
fn only_a_syn_opens_a_flow_and_flag_garbage_is_invalid() {
    let f = fixture("policy-syn");
    let (host, client) = ([192, 0, 2, 1], [198, 51, 100, 7]);
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(5, 1, [10, 1, 0, 2], 0);
    f.host_ips(&[host]);
    f.publish(host, 8080, TCP, [10, 1, 0, 2], 80, 5);

    for flags in [ACK, FIN | ACK, RST] {
        assert_eq!(f.uplink(&tcp((client, 40000), (host, 8080), flags)).0, DROP, "flags {flags:#x}");
    }
    assert_eq!(f.count(DropReason::CtNoFlow), 3);
    for flags in [0, SYN | FIN, SYN | RST, FIN] {
        assert_eq!(f.uplink(&tcp((client, 40000), (host, 8080), flags)).0, DROP, "flags {flags:#x}");
    }
    assert_eq!(f.count(DropReason::InvalidPacket), 4);
    assert!(f.flows().is_empty(), "nothing tracked: {:?}", f.flows());
    assert_eq!(f.uplink(&tcp((client, 40000), (host, 8080), SYN)).0, REDIRECT, "a SYN opens it");
    assert_eq!(f.flows().len(), 2);
}

#[test]
fn checksum_checks_catch_a_changed_byte() {
    // The packet tests trust `checksums_ok`: it must fail on a broken frame.
    let good = tcp(([10, 1, 0, 2], 40000), ([10, 1, 0, 3], 80), SYN);
    assert!(checksums_ok(&good));
    for at in [14 + 12, 14 + 20 + 2, 14 + 8] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        assert!(!checksums_ok(&bad), "byte {at} changed");
    }
}
