//! Firewall rules on crafted frames at the uplink: no rule leaves a
//! published port open; the most specific kind of rule decides (network
//! and port, network, port, any) and within it the longest prefix; a deny
//! added later cuts an open flow; IPv6 clients are judged by their own
//! rules; drops are counted as FIREWALL_DENY.

mod common;

use std::collections::HashMap;

use common::*;
use dataplane::datapath::firewall::{FwEntry, entries};
use dataplane_common::{DropReason, FW_ALLOW, FW_DENY, FwRule};

const HOST: [u8; 4] = [192, 0, 2, 1];
const BACKEND: [u8; 4] = [10, 1, 0, 2];
const FRIEND: [u8; 4] = [203, 0, 113, 5];
const STRANGER: [u8; 4] = [198, 51, 100, 9];

fn rule(
    action: u32,
    id: u32,
    from: &str,
    net: u32,
    port: Option<u16>,
    proto: Option<u8>,
) -> Vec<(FwEntry, FwRule)> {
    entries(from.parse().expect("cidr"), net, port, proto)
        .into_iter()
        .map(|e| (e, FwRule { action, id }))
        .collect()
}

/// A sandbox on network 1 behind veth `LO` with HOST:8080/tcp published to it.
fn published(tag: &str) -> Fixture {
    let f = fixture(tag);
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, BACKEND, 0);
    f.host_ips(&[HOST]);
    f.publish(HOST, 8080, TCP, BACKEND, 80, LO);
    f
}

#[test]
fn the_most_specific_rule_decides_for_every_packet_to_a_published_port() {
    let f = published("fw");
    let syn = |src: [u8; 4], sport: u16| f.uplink(&tcp((src, sport), (HOST, 8080), SYN)).0;
    assert_eq!(syn(STRANGER, 40000), REDIRECT, "no rule: open");

    // Everyone out, one /24 in on port 8080: the port rule beats the any rule.
    let mut want: HashMap<FwEntry, FwRule> = HashMap::new();
    want.extend(rule(FW_DENY, 1, "0.0.0.0/0", 0, None, None));
    want.extend(rule(FW_ALLOW, 2, "203.0.113.0/24", 0, Some(8080), Some(TCP)));
    f.dp.firewall.sync(&want).expect("rules");
    assert_eq!(syn(FRIEND, 40001), REDIRECT);
    assert_eq!(syn(STRANGER, 40002), DROP);
    assert_eq!(f.count(DropReason::FirewallDeny), 1);
    // An open flow is cut when a deny for its client arrives (every packet is judged).
    assert_eq!(f.uplink(&tcp((FRIEND, 40001), (HOST, 8080), ACK)).0, REDIRECT);
    want.extend(rule(FW_DENY, 3, "203.0.113.5/32", 0, Some(8080), Some(TCP)));
    f.dp.firewall.sync(&want).expect("rules");
    assert_eq!(f.uplink(&tcp((FRIEND, 40001), (HOST, 8080), ACK)).0, DROP, "the longest prefix of its kind");
    assert_eq!(f.count(DropReason::FirewallDeny), 2);
    // A rule for the sandbox's network beats a port rule for every network.
    want.retain(|_, r| r.id != 3);
    want.extend(rule(FW_DENY, 4, "203.0.113.0/24", 1, None, None));
    f.dp.firewall.sync(&want).expect("rules");
    assert_eq!(syn(FRIEND, 40003), DROP, "(network) beats (port)");
    // …and one for its network and port beats that.
    want.extend(rule(FW_ALLOW, 5, "203.0.113.0/25", 1, Some(8080), Some(TCP)));
    f.dp.firewall.sync(&want).expect("rules");
    assert_eq!(syn(FRIEND, 40004), REDIRECT, "(network, port) beats (network)");
    // Rules for another network do not apply.
    want.clear();
    want.extend(rule(FW_DENY, 6, "0.0.0.0/0", 2, None, None));
    assert_eq!(f.dp.firewall.sync(&want).expect("rules").1, 4, "the others removed");
    assert_eq!(syn(STRANGER, 40005), REDIRECT);

    // IPv6 clients, by IPv6 prefixes.
    let (host6, friend6, stranger6) = (v6("2001:db8::1"), v6("2001:db8:98::7"), v6("2001:db8:99::7"));
    f.host_ips6(&[host6]);
    let mapped: [u8; 16] = std::net::Ipv4Addr::from(BACKEND).to_ipv6_mapped().octets();
    f.publish6([0; 16], 8080, TCP, mapped, 80, LO);
    want.extend(rule(FW_DENY, 7, "2001:db8:99::/48", 0, Some(8080), None));
    f.dp.firewall.sync(&want).expect("rules");
    let syn6 = |src: [u8; 16]| f.uplink(&l4_frame6(TCP, (src, 41000), (host6, 8080), SYN, b"")).0;
    assert_eq!(syn6(stranger6), DROP);
    assert_eq!(syn6(friend6), REDIRECT, "NAT46 to the IPv4-only sandbox");
    assert_eq!(f.count(DropReason::FirewallDeny), 4);
    // No rules: the gate closes, everything open again.
    f.dp.firewall.sync(&HashMap::new()).expect("none");
    assert_eq!(syn(STRANGER, 40006), REDIRECT);
}

/// XDP verdicts.
const XDP_DROP: i32 = 1;
const XDP_PASS: i32 = 2;

#[test]
fn xdp_drops_what_the_firewall_denies_and_passes_the_rest_to_tcx() {
    let f = published("fwxdp");
    let xdp = |src: [u8; 4], dport: u16| f.run("dp_uplink_xdp", &tcp((src, 40000), (HOST, dport), SYN)).0;
    // No rules: everything passes (one array read).
    assert_eq!(xdp(STRANGER, 8080), XDP_PASS);
    let mut want: HashMap<FwEntry, FwRule> = HashMap::new();
    want.extend(rule(FW_DENY, 1, "0.0.0.0/0", 0, None, None));
    want.extend(rule(FW_ALLOW, 2, "203.0.113.0/24", 0, Some(8080), Some(TCP)));
    f.dp.firewall.sync(&want).expect("rules");
    assert_eq!(xdp(STRANGER, 8080), XDP_DROP, "denied: dropped in the driver");
    assert_eq!(f.count(DropReason::FirewallDeny), 1);
    assert_eq!(xdp(FRIEND, 8080), XDP_PASS, "allowed: on to tcx");
    assert_eq!(xdp(STRANGER, 9999), XDP_PASS, "not a published port: not the firewall's");
    let udp_frame = udp((STRANGER, 5353), (HOST, 53), b"q");
    assert_eq!(f.run("dp_uplink_xdp", &udp_frame).0, XDP_PASS);
    // IPv6 clients too.
    let (host6, stranger6) = (v6("2001:db8::1"), v6("2001:db8:99::7"));
    f.host_ips6(&[host6]);
    let mapped: [u8; 16] = std::net::Ipv4Addr::from(BACKEND).to_ipv6_mapped().octets();
    f.publish6([0; 16], 8080, TCP, mapped, 80, LO);
    want.extend(rule(FW_DENY, 3, "2001:db8:99::/48", 0, Some(8080), None));
    f.dp.firewall.sync(&want).expect("rules");
    let v = f.run("dp_uplink_xdp", &l4_frame6(TCP, (stranger6, 41000), (host6, 8080), SYN, b"")).0;
    assert_eq!(v, XDP_DROP);
    assert_eq!(f.count(DropReason::FirewallDeny), 2);
}
