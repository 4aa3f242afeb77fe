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
