//! Connection tracking on crafted frames: a published-port TCP flow moves
//! SYN → ESTABLISHED → FIN → CLOSE in each direction as the packets pass,
//! counts as answered only once both directions carried a packet, a RST
//! closes it, and a new SYN on the same tuple (a reused client port) starts
//! a fresh flow instead of inheriting the old one's state.

mod common;

use common::*;

const HOST: [u8; 4] = [192, 0, 2, 1];
const CLIENT: [u8; 4] = [198, 51, 100, 7];
const BACKEND: [u8; 4] = [10, 1, 0, 2];

/// The state `ct list` shows for the direction `src` → `dst`.
fn state(f: &Fixture, src: &str, dst: &str) -> &'static str {
    let flows = f.flows();
    flows
        .iter()
        .find(|(s, d, _)| s == src && d == dst)
        .map(|(_, _, st)| *st)
        .unwrap_or_else(|| panic!("no flow {src} -> {dst} in {flows:?}"))
}

/// A datapath with `HOST:hport/proto` published to `BACKEND:port`.
fn published(tag: &str, hport: u16, proto: u8, port: u16) -> Fixture {
    let f = fixture(tag);
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(5, 1, BACKEND, 0);
    f.host_ips(&[HOST]);
    f.publish(HOST, hport, proto, BACKEND, port, 5);
    f
}

#[test]
fn tcp_states_follow_the_packets_and_a_reused_tuple_starts_over() {
    let f = published("ct-states", 8080, TCP, 80);
    let (fwd, rev) = (("198.51.100.7:40000", "192.0.2.1:8080"), ("10.1.0.2:80", "198.51.100.7:40000"));
    let from_client = |flags| f.uplink(&tcp((CLIENT, 40000), (HOST, 8080), flags)).0;
    let from_backend = |flags| f.veth(&tcp((BACKEND, 80), (CLIENT, 40000), flags)).0;

    assert_eq!(from_client(SYN), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "UNREPLIED", "nothing came back yet");
    assert_eq!(f.flows().len(), 2, "one entry per direction, both inserted");
    assert_eq!(from_backend(SYN | ACK), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "SYN", "answered, not yet established");
    assert_eq!(from_client(ACK), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "ESTABLISHED");
    assert_eq!(from_backend(ACK), REDIRECT);
    assert_eq!(state(&f, rev.0, rev.1), "ESTABLISHED");
    assert_eq!(from_client(FIN | ACK), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "FIN");
    assert_eq!(state(&f, rev.0, rev.1), "ESTABLISHED", "each direction moves on its own packets");
    assert_eq!(from_backend(RST), REDIRECT);
    assert_eq!(state(&f, rev.0, rev.1), "CLOSE");
    assert_eq!(from_client(ACK), REDIRECT, "a late ACK still belongs to the flow");
    assert_eq!(state(&f, fwd.0, fwd.1), "FIN", "FIN never goes back to ESTABLISHED");

    // The client reuses its port: a new flow, not the closing one.
    assert_eq!(from_client(SYN), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "UNREPLIED");
    assert_eq!(state(&f, rev.0, rev.1), "UNREPLIED");
    assert_eq!(f.flows().len(), 2, "rewritten in place, not added");
    assert_eq!(from_backend(SYN | ACK), REDIRECT);
    assert_eq!(from_client(ACK), REDIRECT);
    assert_eq!(state(&f, fwd.0, fwd.1), "ESTABLISHED");
}

#[test]
fn udp_flows_are_answered_once_both_directions_carried_a_packet() {
    let f = published("ct-udp", 5353, UDP, 53);
    assert_eq!(f.uplink(&udp((CLIENT, 5000), (HOST, 5353), b"q")).0, REDIRECT);
    assert_eq!(state(&f, "198.51.100.7:5000", "192.0.2.1:5353"), "UNREPLIED");
    assert_eq!(f.veth(&udp((BACKEND, 53), (CLIENT, 5000), b"a")).0, REDIRECT);
    assert_eq!(state(&f, "198.51.100.7:5000", "192.0.2.1:5353"), "-", "answered (UDP has no TCP state)");
}
