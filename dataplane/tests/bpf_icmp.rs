//! ICMP errors about egress flows on crafted frames: port unreachable,
//! fragmentation needed (its MTU kept) and time exceeded, addressed to the
//! uplink address and quoting the SNATed packet, are handed to the sandbox
//! with the outer destination and the quoted source translated back and
//! every checksum (outer IP, ICMP, quoted IP header) valid. Errors about
//! nothing we track are left to the host.

mod common;

use common::*;

const HOST: [u8; 4] = [192, 0, 2, 1];
const REMOTE: [u8; 4] = [198, 51, 100, 9];
const ROUTER: [u8; 4] = [198, 51, 100, 254];
const SANDBOX: [u8; 4] = [10, 1, 0, 3];

/// The quoted packet's source address and port.
fn quoted_source(frame: &[u8]) -> ([u8; 4], u16) {
    let inner = &frame[14 + 20 + 8..];
    (inner[12..16].try_into().expect("src"), u16::from_be_bytes([inner[20], inner[21]]))
}

#[test]
fn icmp_errors_about_egress_flows_reach_the_sandbox_translated() {
    let f = fixture("icmp-errors");
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, SANDBOX, 0);
    f.uplink_config(HOST);

    let (verdict, sent) = f.veth(&udp((SANDBOX, 5000), (REMOTE, 53), b"query"));
    assert_eq!(verdict, REDIRECT);
    assert_eq!(parse(&sent).src, HOST, "the error will quote the SNATed packet");
    let (verdict, out) = f.uplink(&icmp_error(REMOTE, HOST, 3, 3, 0, &sent));
    assert_eq!(verdict, REDIRECT, "port unreachable into the sandbox");
    let p = parse(&out);
    assert_eq!((p.src, p.dst, p.proto), (REMOTE, SANDBOX, ICMP));
    assert_eq!(quoted_source(&out), (SANDBOX, 5000), "the quoted packet is the sandbox's own");
    assert!(checksums_ok(&out), "outer IP, ICMP and quoted IP checksums");

    let (verdict, sent) = f.veth(&tcp((SANDBOX, 40000), (REMOTE, 443), SYN));
    assert_eq!(verdict, REDIRECT);
    let (verdict, out) = f.uplink(&icmp_error(ROUTER, HOST, 3, 4, 1400, &sent));
    assert_eq!(verdict, REDIRECT, "fragmentation needed into the sandbox");
    assert_eq!(parse(&out).dst, SANDBOX);
    assert_eq!(quoted_source(&out), (SANDBOX, 40000));
    assert_eq!(u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]), 1400, "the MTU is kept");
    assert!(checksums_ok(&out));

    let (verdict, out) = f.uplink(&icmp_error(ROUTER, HOST, 11, 0, 0, &sent));
    assert_eq!(verdict, REDIRECT, "time exceeded into the sandbox");
    assert_eq!(quoted_source(&out), (SANDBOX, 40000));
    assert!(checksums_ok(&out));

    // About a flow nobody tracks: the host's business, untouched.
    let stranger = tcp((HOST, 41000), (REMOTE, 443), SYN);
    let frame = icmp_error(REMOTE, HOST, 3, 3, 0, &stranger);
    let (verdict, out) = f.uplink(&frame);
    assert_eq!(verdict, NEXT);
    assert_eq!(out, frame);
}

#[test]
fn icmp_errors_about_a_published_ports_replies_reach_its_sandbox_translated() {
    let f = fixture("icmp-published");
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, SANDBOX, 0);
    f.host_ips(&[HOST]);
    f.publish(HOST, 8080, TCP, SANDBOX, 80, LO);
    // A client opens the port; the sandbox answers (from the host's port).
    let (verdict, _) = f.uplink(&tcp((REMOTE, 40000), (HOST, 8080), SYN));
    assert_eq!(verdict, REDIRECT);
    let (verdict, reply) = f.veth(&tcp((SANDBOX, 80), (REMOTE, 40000), SYN | ACK));
    assert_eq!(verdict, REDIRECT);
    assert_eq!(quoted_source(&icmp_error(ROUTER, HOST, 3, 4, 1400, &reply)), (HOST, 8080));
    // A router on the way cannot carry it: fragmentation needed, about the
    // reply as sent (from the host's port), reaches the sandbox about its own.
    let (verdict, out) = f.uplink(&icmp_error(ROUTER, HOST, 3, 4, 1400, &reply));
    assert_eq!(verdict, REDIRECT, "into the publishing sandbox");
    let p = parse(&out);
    assert_eq!((p.src, p.dst, p.proto), (ROUTER, SANDBOX, ICMP));
    assert_eq!(quoted_source(&out), (SANDBOX, 80), "the quoted packet is the sandbox's own");
    assert_eq!(u16::from_be_bytes([out[14 + 20 + 6], out[14 + 20 + 7]]), 1400, "the MTU is kept");
    assert!(checksums_ok(&out));
}

#[test]
fn icmp_errors_of_nat46_flows_change_family_both_ways() {
    let f = fixture("icmp-nat46");
    let (host, client, router) = (v6("2001:db8::1"), v6("2001:db8:99::7"), v6("2001:db8:ff::1"));
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, SANDBOX, 0);
    f.host_ips6(&[host]);
    let mapped: [u8; 16] = std::net::Ipv4Addr::from(SANDBOX).to_ipv6_mapped().octets();
    f.publish6([0; 16], 8080, TCP, mapped, 80, LO);
    f.publish6([0; 16], 8053, UDP, mapped, 53, LO);
    let stand_in = dataplane_common::nat46_client(&client);
    let (verdict, _) = f.uplink(&l4_frame6(TCP, (client, 40000), (host, 8080), SYN, b""));
    assert_eq!(verdict, REDIRECT);
    let (verdict, reply) = f.veth(&tcp((SANDBOX, 80), (stand_in, 40000), SYN | ACK));
    assert_eq!((verdict, parse6(&reply)), (REDIRECT, (host, client, 8080, 40000, true)));

    // A router cannot carry the translated reply: its packet too big
    // reaches the sandbox as "fragmentation needed", 20 bytes smaller (the
    // IPv4 header is), about the reply as the sandbox sent it.
    let (verdict, out) = f.uplink(&icmp6_error_frame(router, host, 2, 0, 1400, &reply));
    assert_eq!(verdict, REDIRECT, "into the sandbox");
    assert_eq!(u16::from_be_bytes([out[12], out[13]]), 0x0800, "an IPv4 frame");
    let p = parse(&out);
    assert_eq!((p.src, p.dst, p.proto), (dataplane_common::nat46_client(&router), SANDBOX, ICMP));
    assert_eq!((out[34], out[35]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1380, "the IPv6 MTU less 20");
    assert_eq!(quoted_source(&out), (SANDBOX, 80), "the quoted packet is the sandbox's own");
    let inner = &out[14 + 20 + 8..];
    assert_eq!((&inner[16..20], u16::from_be_bytes([inner[22], inner[23]])), (&stand_in[..], 40000));
    assert!(checksums_ok(&out), "outer IPv4, ICMP and quoted header checksums");
    // Time exceeded changes type; parameter problem is not translated.
    let (verdict, out) = f.uplink(&icmp6_error_frame(router, host, 3, 0, 0, &reply));
    assert_eq!((verdict, out[34], out[35], checksums_ok(&out)), (REDIRECT, 11, 0, true));
    let (verdict, _) = f.uplink(&icmp6_error_frame(router, host, 4, 0, 0, &reply));
    assert_ne!(verdict, REDIRECT, "parameter problem: not translated");

    // The sandbox's port unreachable about a client's UDP datagram reaches
    // the client as ICMPv6, from the host address it used, about its own packet.
    let (verdict, got) = f.uplink(&l4_frame6(UDP, (client, 5353), (host, 8053), 0, b"query"));
    assert_eq!(verdict, REDIRECT);
    let (verdict, back) = f.veth(&icmp_error(SANDBOX, stand_in, 3, 3, 0, &got));
    assert_eq!(verdict, REDIRECT, "out of the uplink");
    assert_eq!(u16::from_be_bytes([back[12], back[13]]), 0x86dd, "an IPv6 frame");
    assert_eq!(
        (&back[22..38], back[14 + 40], back[14 + 41]),
        (&host[..], 1, 4),
        "port unreachable from the host"
    );
    assert_eq!(parse_icmp6_error(&back), (client, client, 5353, true), "about the client's own datagram");
    let quoted = &back[14 + 40 + 8..];
    assert_eq!((&quoted[24..40], u16::from_be_bytes([quoted[42], quoted[43]])), (&host[..], 8053));
    // An error to another address of that prefix (not the quoted packet's
    // sender), or about no NAT46 flow: not translated.
    let (_, out) = f.veth(&icmp_error(SANDBOX, [100, 64, 0, 9], 3, 3, 0, &got));
    assert_eq!(u16::from_be_bytes([out[12], out[13]]), 0x0800, "still IPv4");
    let other = udp(([100, 64, 0, 9], 5353), (SANDBOX, 53), b"query");
    let (_, out) = f.veth(&icmp_error(SANDBOX, [100, 64, 0, 9], 3, 3, 0, &other));
    assert_eq!(u16::from_be_bytes([out[12], out[13]]), 0x0800, "still IPv4");
}
