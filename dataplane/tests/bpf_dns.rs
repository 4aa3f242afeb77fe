//! A queries answered in the kernel (`dp_dns_lo`, tcx egress on a sandbox
//! namespace's `lo`), on crafted frames: the query to the resolver's port
//! comes back as the answer a DNS client accepts (parsed by hickory), to
//! the asker, rotated per answer, with EDNS when asked with it; everything
//! the kernel does not know or may not answer alone goes on unchanged to
//! the daemon's socket.

mod common;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use common::*;
use dataplane::datapath::programs::PROG_DNS_LO;
use dataplane_common::{DnsNameKey, DropReason, dns_wire_name};
use hickory_server::proto::op::{Message, MessageType, ResponseCode};
use hickory_server::proto::rr::{RData, RecordType};

const CLIENT: [u8; 4] = [127, 0, 0, 1];
const RESOLVER: [u8; 4] = [127, 0, 0, 11];
/// The resolver's own UDP port (the socket hooks send 127.0.0.11:53 there).
const PORT: u16 = 40053;
/// tcx: done, the packet goes on (the answer, out of `lo` and so back in).
const PASS: i32 = 0;
const WEB: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)];

/// The cookie of this test's network namespace (what the program sees).
fn cookie() -> u64 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("socket");
    dataplane::sys::netns::socket_cookie(&s).expect("SO_NETNS_COOKIE")
}

/// A datapath whose resolver for this namespace answers network 1's names
/// (`web` has two addresses, `db` one) and network 2's (`db` again).
fn served(tag: &str) -> Fixture {
    let f = fixture(tag);
    let c = cookie();
    f.dp.dns.set(c, PORT, PORT + 1).expect("ports");
    f.dp.dns_names.set_nets(c, &[1]).expect("nets");
    let key = |net, name| DnsNameKey { net, name: dns_wire_name(name).expect("short name") };
    let names: HashMap<DnsNameKey, Vec<Ipv4Addr>> = [
        (key(1, "web"), WEB.to_vec()),
        (key(1, "db"), vec![Ipv4Addr::new(10, 1, 0, 9)]),
        (key(2, "db"), vec![Ipv4Addr::new(10, 2, 0, 9)]),
    ]
    .into();
    f.dp.dns_names.sync(&names).expect("names");
    f
}

/// A DNS query (ID 0x1234, RD set) for `name` of type `qtype`; with an
/// EDNS OPT record if `edns`.
fn query(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if edns {
        // Root name, OPT, 4096 bytes, no extended rcode or flags, no options.
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    }
    q
}

fn to_resolver(payload: &[u8], port: u16) -> Vec<u8> {
    let mut f = udp((CLIENT, 51000), (RESOLVER, port), payload);
    // `lo` frames carry zero MACs.
    f[..12].fill(0);
    f
}

/// Runs the program; the verdict and the frame it left.
fn run(f: &Fixture, frame: &[u8]) -> (i32, Vec<u8>) {
    f.run(PROG_DNS_LO, frame)
}

/// The answer's DNS message, after checking its IP and UDP headers.
fn answer(out: &[u8]) -> Message {
    let p = parse(out);
    assert_eq!((p.src, p.dst), (RESOLVER, CLIENT), "back to the asker, from the resolver");
    assert_eq!((p.sport, p.dport), (PORT, 51000), "ports swapped");
    assert!(checksums_ok(out), "IP checksum right, UDP checksum right or none");
    let ip_len = usize::from(u16::from_be_bytes([out[16], out[17]]));
    let udp_len = usize::from(u16::from_be_bytes([out[38], out[39]]));
    assert_eq!((14 + ip_len, 34 + udp_len), (out.len(), out.len()), "lengths follow the new size");
    Message::from_vec(&out[42..]).expect("a DNS message a client can read")
}

fn addrs(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0,
            other => panic!("not an A record: {other:?}"),
        })
        .collect()
}

#[test]
fn a_query_for_a_known_name_is_answered_in_place_and_rotated() {
    let f = served("dns-answer");
    let before = f.count(DropReason::DnsAnswered);
    let (verdict, out) = run(&f, &to_resolver(&query("web", 1, false), PORT));
    assert_eq!(verdict, PASS, "the answer goes on through lo, back to the asker");
    let m = answer(&out);
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && m.metadata.recursion_available && m.metadata.recursion_desired);
    assert_eq!(m.queries.len(), 1);
    assert_eq!(m.queries[0].name().to_ascii(), "web.");
    assert_eq!(m.queries[0].query_type(), RecordType::A);
    assert!(m.answers.iter().all(|r| r.ttl == dataplane_common::DNS_TTL && r.name.to_ascii() == "web."));
    let first = addrs(&m);
    assert_eq!(first.len(), 2);
    assert!(m.additionals.is_empty() && m.edns.is_none(), "no EDNS asked, none given");
    assert_eq!(f.count(DropReason::DnsAnswered), before + 1, "counted as answered in the kernel");
    // The next answer starts with the other address (round robin), and
    // a name in capitals is the same name.
    let (verdict, out) = run(&f, &to_resolver(&query("WEB", 1, false), PORT));
    assert_eq!(verdict, PASS);
    let second = addrs(&answer(&out));
    assert_eq!(second, vec![first[1], first[0]], "rotated");
    let mut sorted = second.clone();
    sorted.sort();
    assert_eq!(sorted, WEB.to_vec());
}

#[test]
fn an_edns_query_gets_an_edns_answer() {
    let f = served("dns-edns");
    let (verdict, out) = run(&f, &to_resolver(&query("db", 1, true), PORT));
    assert_eq!(verdict, PASS);
    let m = answer(&out);
    assert_eq!(addrs(&m), vec![Ipv4Addr::new(10, 1, 0, 9)], "network 1's db, the asker's");
    let edns = m.edns.expect("an OPT record in the answer");
    assert_eq!(edns.max_payload(), 1232);
}

#[test]
fn what_the_kernel_cannot_answer_alone_goes_on_to_the_daemon_unchanged() {
    let f = served("dns-pass");
    let c = cookie();
    let unchanged = |frame: Vec<u8>, why: &str| {
        let (verdict, out) = run(&f, &frame);
        assert_eq!(verdict, NEXT, "{why}: should go on to the resolver's socket");
        assert_eq!(out, frame, "{why}: left as it was");
    };
    unchanged(to_resolver(&query("web", 28, false), PORT), "AAAA");
    unchanged(to_resolver(&query("nobody", 1, false), PORT), "a name the kernel does not have");
    unchanged(to_resolver(&query("example.com", 1, false), PORT), "a name to forward");
    unchanged(to_resolver(&query("web", 1, false), PORT + 7), "another port");
    let mut response = query("web", 1, false);
    response[2] |= 0x80;
    unchanged(to_resolver(&response, PORT), "a response, not a query");
    let long = ["abcdefghij"; 6].join(".");
    unchanged(to_resolver(&query(&long, 1, false), PORT), "a name longer than the kernel keeps");
    let mut other_dst = udp((CLIENT, 51000), ([127, 0, 0, 53], PORT), &query("web", 1, false));
    other_dst[..12].fill(0);
    unchanged(other_dst, "not to 127.0.0.11");
    // On two of the asker's networks: the daemon merges the answers.
    f.dp.dns_names.set_nets(c, &[1, 2]).expect("nets");
    unchanged(to_resolver(&query("db", 1, false), PORT), "a name on two networks");
    // The pair: a name on one of them is still answered in the kernel.
    let (verdict, out) = run(&f, &to_resolver(&query("web", 1, false), PORT));
    assert_eq!(verdict, PASS, "web is on network 1 only");
    assert_eq!(addrs(&answer(&out)).len(), 2);
    // A namespace the daemon does not serve: nothing is answered.
    f.dp.dns_names.remove_nets(c).expect("nets");
    unchanged(to_resolver(&query("web", 1, false), PORT), "a namespace without networks");
}
