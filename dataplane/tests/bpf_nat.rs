//! NAT on crafted frames (BPF_PROG_TEST_RUN, no interface touched): DNAT of
//! published ports on the uplink, the reply's source restored on the veth,
//! egress SNAT with the source port kept or, when taken, a random one from
//! the SNAT range, and the egress reply's destination restored — every
//! rewritten frame with valid IP and L4 checksums.

mod common;

use common::*;
use dataplane_common::DropReason;

const HOST: [u8; 4] = [192, 0, 2, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const REMOTE: [u8; 4] = [198, 51, 100, 9];
const BACKEND: [u8; 4] = [10, 1, 0, 2];
/// The backend's host-side veth (the peer redirects go to).
const BACKEND_VETH: u32 = 5;

fn published(f: &Fixture) {
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(BACKEND_VETH, 1, BACKEND, 0);
    f.host_ips(&[HOST]);
    f.publish(HOST, 8080, TCP, BACKEND, 80, BACKEND_VETH);
    f.publish([0; 4], 5353, UDP, BACKEND, 53, BACKEND_VETH);
}

#[test]
fn published_ports_are_dnated_on_the_uplink_and_replies_get_their_source_back() {
    let f = fixture("nat-dnat");
    published(&f);
    let before = f.count(DropReason::NatPublished);

    // TCP to an exact host address.
    let (verdict, out) = f.uplink(&tcp((CLIENT, 40000), (HOST, 8080), SYN));
    assert_eq!(verdict, REDIRECT, "into the backend's veth peer");
    let p = parse(&out);
    assert_eq!(
        (p.src, p.sport, p.dst, p.dport),
        (CLIENT, 40000, BACKEND, 80),
        "DNAT keeps the client's address"
    );
    assert_eq!(p.dst_mac, mac_of(BACKEND));
    assert!(checksums_ok(&out), "IP and TCP checksums after DNAT");
    assert_eq!(f.count(DropReason::NatPublished), before + 1);
    let flows = f.flows();
    assert!(flows.iter().any(|(s, d, _)| s == "198.51.100.7:40000" && d == "192.0.2.1:8080"), "{flows:?}");
    assert!(flows.iter().any(|(s, d, _)| s == "10.1.0.2:80" && d == "198.51.100.7:40000"), "{flows:?}");

    // The backend's answer leaves with the published address as its source.
    let (verdict, out) = f.veth(&tcp((BACKEND, 80), (CLIENT, 40000), SYN | ACK));
    assert_eq!(verdict, REDIRECT, "out of the uplink");
    let p = parse(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (HOST, 8080, CLIENT, 40000));
    assert!(checksums_ok(&out), "IP and TCP checksums after the reverse NAT");

    // UDP published on 0.0.0.0 answers on a host address.
    let (verdict, out) = f.uplink(&udp((CLIENT, 5000), (HOST, 5353), b"query"));
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out);
    assert_eq!((p.dst, p.dport), (BACKEND, 53));
    assert!(checksums_ok(&out), "IP and UDP checksums after DNAT");

    // Not published, not ours: left to the stack, untouched.
    let frame = tcp((CLIENT, 40001), (HOST, 9999), SYN);
    let (verdict, out) = f.uplink(&frame);
    assert_eq!(verdict, NEXT);
    assert_eq!(out, frame);
}

#[test]
fn egress_is_snated_keeping_the_port_when_free_and_replies_come_back() {
    let f = fixture("nat-snat");
    f.network(1, "10.1.0.0/24", 0);
    // The sandbox's veth is the interface test runs arrive on.
    f.endpoint(LO, 1, [10, 1, 0, 3], 0);
    f.uplink_config(HOST);
    let before = f.count(DropReason::NatEgress);

    let (verdict, out) = f.veth(&udp(([10, 1, 0, 3], 5000), (REMOTE, 53), b"q1"));
    assert_eq!(verdict, REDIRECT, "out of the uplink");
    let first = parse(&out);
    assert_eq!((first.src, first.sport, first.dst, first.dport), (HOST, 5000, REMOTE, 53), "port kept");
    assert!(checksums_ok(&out));

    // Another sandbox with the same source port to the same server: the
    // port is taken on the uplink address, a random one of the range is used.
    let (verdict, out) = f.veth(&udp(([10, 1, 0, 4], 5000), (REMOTE, 53), b"q2"));
    assert_eq!(verdict, REDIRECT);
    let second = parse(&out);
    assert_eq!(second.src, HOST);
    assert!((61000..=65535).contains(&second.sport), "collision: port {} from 61000-65535", second.sport);
    assert!(checksums_ok(&out));
    assert_eq!(f.count(DropReason::NatEgress), before + 2);

    // Each answer finds its own sandbox again.
    for (port, sandbox) in [(5000, [10, 1, 0, 3]), (second.sport, [10, 1, 0, 4])] {
        let (verdict, out) = f.uplink(&udp((REMOTE, 53), (HOST, port), b"answer"));
        assert_eq!(verdict, REDIRECT, "into the sandbox");
        let p = parse(&out);
        assert_eq!((p.src, p.sport, p.dst, p.dport), (REMOTE, 53, sandbox, 5000));
        assert!(checksums_ok(&out));
    }

    // ICMP echo: the identifier plays the port.
    let (verdict, out) = f.veth(&ping([10, 1, 0, 3], REMOTE, 777));
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out);
    assert_eq!((p.src, p.sport), (HOST, 777));
    assert!(checksums_ok(&out), "ICMP checksum after SNAT");
}

#[test]
fn a_port_published_over_ipv6_keeps_the_client_and_replies_leave_from_the_host() {
    let f = fixture("nat-published6");
    let (host, client, backend) = (v6("2001:db8::1"), v6("2001:db8:99::7"), v6("fd00:1::2"));
    f.network6(1, "fd00:1::/64", 0);
    f.host_ips6(&[host]);
    f.publish6([0; 16], 8080, TCP, backend, 80, 5);
    f.publish6([0; 16], 8053, UDP, backend, 53, 5);
    // The opening SYN: to the sandbox's address and port, the client's kept.
    let (v, out) = f.uplink(&l4_frame6(TCP, (client, 40000), (host, 8080), SYN, b""));
    assert_eq!(v, REDIRECT);
    assert_eq!(parse6(&out), (client, backend, 40000, 80, true));
    assert_eq!(f.count(DropReason::NatPublished), 1);
    // The reply leaves from the host's address and port.
    let (v, out) = f.veth(&l4_frame6(TCP, (backend, 80), (client, 40000), SYN | ACK, b""));
    assert_eq!(v, REDIRECT);
    assert_eq!(parse6(&out), (host, client, 8080, 40000, true));
    // The next packets follow the entry.
    let (v, out) = f.uplink(&l4_frame6(TCP, (client, 40000), (host, 8080), ACK, b""));
    assert_eq!((v, parse6(&out)), (REDIRECT, (client, backend, 40000, 80, true)));
    // UDP, with its checksum kept right.
    let (v, out) = f.uplink(&l4_frame6(UDP, (client, 5353), (host, 8053), 0, b"query"));
    assert_eq!((v, parse6(&out)), (REDIRECT, (client, backend, 5353, 53, true)));
    // Packet too big about the reply as it left (from the host's port):
    // to the sandbox, about its own packet (its path MTU discovery works).
    let router = v6("2001:db8:77::1");
    let sent = l4_frame6(TCP, (host, 8080), (client, 40000), ACK, b"");
    let (v, ptb) = f.uplink(&icmp6_error_frame(router, host, 2, 0, 1280, &sent));
    assert_eq!((v, parse_icmp6_error(&ptb)), (REDIRECT, (backend, backend, 80, true)), "PTB to the sandbox");
    // No flow is opened by a bare ACK; an address that is not the host's is not published.
    assert_eq!(f.uplink(&l4_frame6(TCP, (client, 40001), (host, 8080), ACK, b"")).0, DROP);
    assert_eq!(f.count(DropReason::CtNoFlow), 1);
    let elsewhere = v6("2001:db8::2");
    assert_eq!(f.uplink(&l4_frame6(TCP, (client, 40002), (elsewhere, 8080), SYN, b"")).0, NEXT);
}

#[test]
fn ipv6_egress_is_masqueraded_to_the_uplinks_address_and_replies_come_back() {
    let f = fixture("nat-egress6");
    let (uplink6, remote, sb) = (v6("2001:db8::1"), v6("2001:db8:99::53"), v6("fd00:1::2"));
    f.network6(1, "fd00:1::/64", 0);
    f.endpoint(LO, 1, [10, 1, 0, 2], 0);
    f.uplink_config(HOST);
    f.dp.config.set_uplink6(Some(uplink6.into())).expect("uplink6");
    // Out: the source becomes the uplink's address, the port kept.
    let (v, out) = f.veth(&l4_frame6(TCP, (sb, 40000), (remote, 443), SYN, b""));
    assert_eq!((v, parse6(&out)), (REDIRECT, (uplink6, remote, 40000, 443, true)));
    assert_eq!(f.count(DropReason::NatEgress), 1);
    // Back: to the sandbox.
    let (v, back) = f.uplink(&l4_frame6(TCP, (remote, 443), (uplink6, 40000), SYN | ACK, b""));
    assert_eq!((v, parse6(&back)), (REDIRECT, (remote, sb, 443, 40000, true)));
    assert_eq!(f.count(DropReason::NatEgressReply), 1);
    // Packet too big from a router on the way, about the packet as it
    // left: translated back to the sandbox (its path MTU discovery works).
    let router = v6("2001:db8:77::1");
    let sent = l4_frame6(TCP, (uplink6, 40000), (remote, 443), ACK, b"");
    let (v, ptb) = f.uplink(&icmp6_error_frame(router, uplink6, 2, 0, 1280, &sent));
    assert_eq!((v, parse_icmp6_error(&ptb)), (REDIRECT, (sb, sb, 40000, true)), "PTB to the sandbox");
    // An error about nothing we track goes on to the host.
    let stray = l4_frame6(TCP, (uplink6, 9), (remote, 443), ACK, b"");
    assert_eq!(f.uplink(&icmp6_error_frame(router, uplink6, 2, 0, 1280, &stray)).0, NEXT);
    // Another sandbox on the same source port gets another port.
    let other = v6("fd00:1::3");
    let (_, out2) = f.veth(&l4_frame6(TCP, (other, 40000), (remote, 443), SYN, b""));
    let (src, _, sport, _, ok) = parse6(&out2);
    assert!(src == uplink6 && sport != 40000 && sport >= 61000 && ok, "{sport}");
    // A routed network (gateway_mode_ipv6=routed) leaves as it is.
    f.network6(
        1,
        "fd00:1::/64",
        dataplane_common::NET_FLAG_ROUTED | dataplane_common::NET_FLAG_NO_MASQUERADE,
    );
    let (v, out3) = f.veth(&l4_frame6(UDP, (sb, 5000), (remote, 53), 0, b"q"));
    assert_eq!((v, parse6(&out3).0), (NEXT, sb));
}

#[test]
fn nat46_turns_an_ipv6_client_into_ipv4_for_a_sandbox_without_ipv6_and_back() {
    let f = fixture("nat46");
    let (host, client) = (v6("2001:db8::1"), v6("2001:db8:99::7"));
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(BACKEND_VETH, 1, BACKEND, 0);
    f.host_ips6(&[host]);
    let mapped: [u8; 16] = std::net::Ipv4Addr::from(BACKEND).to_ipv6_mapped().octets();
    f.publish6([0; 16], 8080, TCP, mapped, 80, BACKEND_VETH);
    f.publish6([0; 16], 8053, UDP, mapped, 53, BACKEND_VETH);
    let stand_in = dataplane_common::nat46_client(&client);
    assert!(dataplane_common::is_nat46_client(stand_in), "{stand_in:?}");
    // The opening SYN becomes IPv4: from the client's stand-in, to the
    // sandbox's address and port, both checksums right.
    let (v, out) = f.uplink(&l4_frame6(TCP, (client, 40000), (host, 8080), SYN, b""));
    assert_eq!(v, REDIRECT);
    assert_eq!(u16::from_be_bytes([out[12], out[13]]), 0x0800, "an IPv4 frame");
    let p = parse(&out);
    assert_eq!((p.src, p.dst, p.sport, p.dport, p.proto), (stand_in, BACKEND, 40000, 80, TCP));
    assert!(checksums_ok(&out), "IPv4 header and TCP checksums");
    assert_eq!(out[14 + 8], 64, "hop limit kept as TTL");
    // The answer becomes IPv6 again: from the host's address and port.
    let (v, back) = f.veth(&tcp((BACKEND, 80), (stand_in, 40000), SYN | ACK));
    assert_eq!(v, REDIRECT);
    assert_eq!(u16::from_be_bytes([back[12], back[13]]), 0x86dd, "an IPv6 frame");
    assert_eq!(parse6(&back), (host, client, 8080, 40000, true));
    // The next packets follow the entry; UDP too.
    let (v, out) = f.uplink(&l4_frame6(TCP, (client, 40000), (host, 8080), ACK, b""));
    assert_eq!((v, parse(&out).dst, checksums_ok(&out)), (REDIRECT, BACKEND, true));
    let (v, out) = f.uplink(&l4_frame6(UDP, (client, 5353), (host, 8053), 0, b"query"));
    let p = parse(&out);
    assert_eq!(
        (v, p.src, p.dst, p.sport, p.dport, checksums_ok(&out)),
        (REDIRECT, stand_in, BACKEND, 5353, 53, true)
    );
    let (v, back) = f.veth(&udp((BACKEND, 53), (stand_in, 5353), b"answer"));
    assert_eq!((v, parse6(&back)), (REDIRECT, (host, client, 8053, 5353, true)));
    assert_eq!(f.count(DropReason::NatPublished), 3);
    // Another address of that prefix with no flow: an ordinary packet.
    let (v, _) = f.veth(&tcp((BACKEND, 80), ([100, 64, 0, 9], 40000), SYN | ACK));
    assert_ne!(v, REDIRECT, "no NAT46 flow, nothing translated");
    // A dual-stack sandbox through the host's IPv6 address (hairpin): the
    // same translation, and the answer goes back into that sandbox.
    let sandbox6 = v6("fd00:1::7");
    f.network6(1, "fd00:1::/64", 0);
    f.endpoint(LO, 1, [10, 1, 0, 7], 0);
    let (v, out) = f.veth(&l4_frame6(TCP, (sandbox6, 41000), (host, 8080), SYN, b""));
    let stand_in = dataplane_common::nat46_client(&sandbox6);
    let p = parse(&out);
    assert_eq!(
        (v, p.src, p.dst, p.sport, p.dport, checksums_ok(&out)),
        (REDIRECT, stand_in, BACKEND, 41000, 80, true)
    );
    let (v, back) = f.veth(&tcp((BACKEND, 80), (stand_in, 41000), SYN | ACK));
    assert_eq!((v, parse6(&back)), (REDIRECT, (host, sandbox6, 8080, 41000, true)));
    let (v, out) = f.veth(&l4_frame6(TCP, (sandbox6, 41000), (host, 8080), ACK, b""));
    assert_eq!((v, parse(&out).dst, checksums_ok(&out)), (REDIRECT, BACKEND, true), "the flow's next packet");
}
