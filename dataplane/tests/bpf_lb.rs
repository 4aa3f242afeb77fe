//! Alias load balancing on crafted frames: a new flow to a virtual IP goes
//! to the backend the daemon's Maglev table holds in the slot of the flow's
//! hash (the same `flow_hash` userspace computes), keeping the port, with
//! valid checksums; every backend gets flows; the per-backend counters
//! follow; a VIP with no live backend drops, counted.

mod common;

use std::collections::BTreeMap;

use common::*;
use dataplane_common::{DropReason, LB_TABLE_SIZE, flow_hash};

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
