//! Alias load balancing on crafted frames: a new flow to a virtual IP goes
//! to the backend the daemon's Maglev table holds in the slot of the flow's
//! hash (the same `flow_hash` userspace computes), keeping the port, with
//! valid checksums; every backend gets flows; the per-backend counters
//! follow; a VIP with no live backend drops, counted.

mod common;

use std::collections::BTreeMap;

use common::*;
use dataplane_common::{DropReason, LB_TABLE_SIZE, flow_hash, fold6};

const VIP: [u8; 4] = [10, 1, 0, 200];
const CLIENT: [u8; 4] = [10, 1, 0, 3];
const BACKENDS: [(u32, [u8; 4]); 3] = [(11, [10, 1, 0, 11]), (12, [10, 1, 0, 12]), (13, [10, 1, 0, 13])];

#[test]
fn flows_to_a_vip_go_to_the_maglev_slot_of_their_hash() {
    let f = fixture("lb-maglev");
    f.network(1, "10.1.0.0/24", 0);
    f.endpoint(LO, 1, CLIENT, 0);
    for (ifindex, ip) in BACKENDS {
        f.endpoint(ifindex, 1, ip, 0);
    }
    // Slots hold the backends' addresses.
    let ids: Vec<(String, u32)> =
        BACKENDS.iter().map(|(i, ip)| (format!("endpoint-{i}"), u32::from_ne_bytes(*ip))).collect();
    let table = dataplane::datapath::lb::maglev(&ids);
    f.dp.lb.set(VIP.into(), &table).expect("VIP");
    let before = f.count(DropReason::LbForwarded);

    let mut per_backend: BTreeMap<[u8; 4], u64> = BTreeMap::new();
    for port in 40000..40300u16 {
        let (verdict, out) = f.veth(&tcp((CLIENT, port), (VIP, 80), SYN));
        assert_eq!(verdict, REDIRECT, "into a backend");
        let slot = flow_hash(CLIENT, VIP, port.to_be(), 80u16.to_be(), TCP) as usize % LB_TABLE_SIZE;
        let want = table.slots[slot].to_ne_bytes();
        assert!(BACKENDS.iter().any(|(_, ip)| *ip == want), "slot {slot} holds a backend");
        let p = parse(&out);
        assert_eq!((p.dst, p.dport, p.src, p.sport), (want, 80, CLIENT, port), "slot {slot}");
        assert_eq!(p.dst_mac, mac_of(want));
        assert!(checksums_ok(&out));
        *per_backend.entry(want).or_default() += 1;
    }
    assert_eq!(per_backend.len(), 3, "every backend gets flows: {per_backend:?}");
    assert_eq!(f.count(DropReason::LbForwarded), before + 300);
    let stats = f.dp.lb.stats();
    for (ip, n) in &per_backend {
        assert_eq!(stats.get(&(VIP.into(), (*ip).into())), Some(n), "new flows counted per backend");
    }

    // The backends are gone: the VIP answers nothing, and says so.
    f.dp.lb.set(VIP.into(), &dataplane::datapath::lb::maglev(&[])).expect("empty table");
    let (verdict, _) = f.veth(&tcp((CLIENT, 41000), (VIP, 80), SYN));
    assert_eq!(verdict, DROP);
    assert_eq!(f.count(DropReason::LbNoBackend), 1);
}

#[test]
fn flows_to_an_ipv6_vip_use_the_table_of_its_ipv4_sibling_at_the_backends_ipv6_addresses() {
    let f = fixture("lb-maglev6");
    f.network(1, "10.1.0.0/24", 0);
    f.network6(1, "fd00:1::/64", 0);
    f.endpoint(LO, 1, CLIENT, 0);
    let (vip6, client6) = (v6("fd00:1::c8"), v6("fd00:1::3"));
    let addr6 = |ip: [u8; 4]| v6(&format!("fd00:1::{}", ip[3]));
    for (ifindex, ip) in BACKENDS {
        f.endpoint(ifindex, 1, ip, 0);
        f.dp.lb.set_addr6(ip.into(), addr6(ip).into()).expect("backend's IPv6 address");
    }
    let ids: Vec<(String, u32)> =
        BACKENDS.iter().map(|(i, ip)| (format!("endpoint-{i}"), u32::from_ne_bytes(*ip))).collect();
    let table = dataplane::datapath::lb::maglev(&ids);
    f.dp.lb.set(VIP.into(), &table).expect("VIP");
    f.dp.lb.set6(vip6.into(), VIP.into()).expect("IPv6 VIP");

    let mut per_backend: BTreeMap<[u8; 16], u64> = BTreeMap::new();
    for port in 40000..40300u16 {
        let (verdict, out) = f.veth(&l4_frame6(TCP, (client6, port), (vip6, 80), SYN, b""));
        assert_eq!(verdict, REDIRECT, "into a backend");
        let (src, dst, sport, dport, ok) = parse6(&out);
        let slot = flow_hash(fold6(&client6), fold6(&vip6), port.to_be(), 80u16.to_be(), TCP) as usize
            % LB_TABLE_SIZE;
        let want = addr6(table.slots[slot].to_ne_bytes());
        assert_eq!((src, dst, sport, dport, ok), (client6, want, port, 80, true), "slot {slot}");
        *per_backend.entry(want).or_default() += 1;
        // The answer comes back from the VIP.
        let (verdict, back) = f.veth(&l4_frame6(TCP, (want, 80), (client6, port), SYN | ACK, b""));
        assert_eq!((verdict, parse6(&back)), (REDIRECT, (vip6, client6, 80, port, true)));
    }
    assert_eq!(per_backend.len(), 3, "every backend gets flows: {per_backend:?}");
    assert_eq!(f.count(DropReason::LbForwarded), 300);
    // Counted under the IPv4 VIP and backend.
    let flows: u64 =
        BACKENDS.iter().filter_map(|(_, ip)| f.dp.lb.stats().get(&(VIP.into(), (*ip).into())).copied()).sum();
    assert_eq!(flows, 300);
    // A backend without an IPv6 address: no backend, counted.
    for (_, ip) in BACKENDS {
        f.dp.lb.remove_addr6(ip.into()).expect("forget");
    }
    let (verdict, _) = f.veth(&l4_frame6(TCP, (client6, 41000), (vip6, 80), SYN, b""));
    assert_eq!(verdict, DROP);
    assert_eq!(f.count(DropReason::LbNoBackend), 1);
    // Not a VIP once removed: on to the host as any address.
    f.dp.lb.remove6(vip6.into()).expect("remove");
    f.veth(&l4_frame6(TCP, (client6, 41001), (vip6, 80), SYN, b""));
    assert_eq!(f.count(DropReason::LbNoBackend), 1);
}
