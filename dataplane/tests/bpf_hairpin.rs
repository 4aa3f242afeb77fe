//! Hairpin on crafted frames: a sandbox reaching a published port through
//! a host address is DNATed on its own veth and handed to the backend; to
//! itself, its source becomes the gateway (or its answer would skip the
//! NAT), and the answer gets both ends back.

mod common;

use common::*;
use dataplane_common::DropReason;

const HOST: [u8; 4] = [192, 0, 2, 1];
const GATEWAY: [u8; 4] = [10, 1, 0, 1];
const ME: [u8; 4] = [10, 1, 0, 3];
const OTHER: [u8; 4] = [10, 1, 0, 2];

fn setup(tag: &str) -> Fixture {
    let f = fixture(tag);
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, ME, 0);
    f.endpoint(5, 1, OTHER, 0);
    f.host_ips(&[HOST]);
    f.publish(HOST, 8080, TCP, OTHER, 80, 5);
    f.publish(HOST, 8081, TCP, ME, 81, LO);
    f
}

#[test]
fn a_sandbox_reaches_another_through_a_published_port() {
    let f = setup("hairpin-other");
    let before = f.count(DropReason::NatPublished);
    let (verdict, out) = f.veth(&tcp((ME, 40000), (HOST, 8080), SYN));
    assert_eq!(verdict, REDIRECT, "into the backend");
    let p = parse(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (ME, 40000, OTHER, 80));
    assert_eq!(p.dst_mac, mac_of(OTHER));
    assert!(checksums_ok(&out));
    assert_eq!(f.count(DropReason::NatPublished), before + 1);

    let (verdict, out) = f.veth(&tcp((OTHER, 80), (ME, 40000), SYN | ACK));
    assert_eq!(verdict, REDIRECT, "back into the client sandbox");
    let p = parse(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (HOST, 8080, ME, 40000), "the published address answers");
    assert_eq!(p.dst_mac, mac_of(ME));
    assert!(checksums_ok(&out));
}

#[test]
fn a_sandbox_reaches_itself_through_its_own_published_port() {
    let f = setup("hairpin-self");
    let (verdict, out) = f.veth(&tcp((ME, 40001), (HOST, 8081), SYN));
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out);
    assert_eq!((p.src, p.dst, p.dport), (GATEWAY, ME, 81), "source becomes the gateway");
    assert!(checksums_ok(&out));

    let (verdict, out) = f.veth(&tcp((ME, 81), (GATEWAY, 40001), SYN | ACK));
    assert_eq!(verdict, REDIRECT);
    let p = parse(&out);
    assert_eq!((p.src, p.sport, p.dst, p.dport), (HOST, 8081, ME, 40001), "both ends restored");
    assert!(checksums_ok(&out));
}

#[test]
fn over_ipv6_a_sandbox_reaches_another_and_itself_through_a_published_port() {
    let f = fixture("hairpin6");
    let (host, gw, me, other) = (v6("2001:db8::1"), v6("fd00:1::1"), v6("fd00:1::3"), v6("fd00:1::2"));
    f.network6(1, "fd00:1::/64", 0);
    f.endpoint(LO, 1, ME, 0);
    f.host_ips6(&[host]);
    f.publish6([0; 16], 8080, TCP, other, 80, 5);
    f.publish6([0; 16], 8081, TCP, me, 81, LO);
    // Another sandbox: DNAT only, the client's address kept.
    let (v, out) = f.veth(&l4_frame6(TCP, (me, 40000), (host, 8080), SYN, b""));
    assert_eq!((v, parse6(&out)), (REDIRECT, (me, other, 40000, 80, true)));
    let (v, out) = f.veth(&l4_frame6(TCP, (other, 80), (me, 40000), SYN | ACK, b""));
    assert_eq!(
        (v, parse6(&out)),
        (REDIRECT, (host, me, 8080, 40000, true)),
        "the answer comes from the host"
    );
    // Itself: its source becomes the gateway, and the answer gets both ends back.
    let (v, out) = f.veth(&l4_frame6(TCP, (me, 40001), (host, 8081), SYN, b""));
    assert_eq!((v, parse6(&out)), (REDIRECT, (gw, me, 40001, 81, true)));
    let (v, out) = f.veth(&l4_frame6(TCP, (me, 81), (gw, 40001), SYN | ACK, b""));
    assert_eq!((v, parse6(&out)), (REDIRECT, (host, me, 8081, 40001, true)));
    assert_eq!(f.count(DropReason::NatPublished), 2);
}
