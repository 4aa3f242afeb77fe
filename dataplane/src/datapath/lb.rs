//! Alias load balancing in the datapath: the Maglev table of each virtual
//! IP (DP_LB), each IPv6 VIP's IPv4 sibling whose table it shares (DP_LB6)
//! with the backends' IPv6 addresses (DP_ADDR6), and new flows per (VIP,
//! backend) (DP_LB_STATS; an IPv6 flow counts under the IPv4 VIP).
//!
//! Maglev tables (Eisenbud et al., NSDI 2016):
//! every backend walks the table in its own permutation (offset and skip
//! from two hashes of its stable id) and the backends take turns claiming
//! free slots, so each owns an almost equal share and a backend leaving
//! moves few slots of the others. The BPF side indexes the table with the
//! flow hash ([`dataplane_common::flow_hash`]).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData, PerCpuHashMap};
use dataplane_common::{LB_TABLE_SIZE, LbStatKey, LbTable, MAP_ADDR6, MAP_LB, MAP_LB_STATS, MAP_LB6};

use super::write::{erase, put};
use super::{lock, map_err, take};
use crate::error::Result;

pub struct LoadBalancer {
    tables: Mutex<HashMap<MapData, [u8; 4], LbTable>>,
    stats: Mutex<PerCpuHashMap<MapData, LbStatKey, u64>>,
    v6: Mutex<HashMap<MapData, [u8; 16], [u8; 4]>>,
    addr6: Mutex<HashMap<MapData, [u8; 4], [u8; 16]>>,
}

impl LoadBalancer {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(LoadBalancer {
            tables: Mutex::new(take(ebpf, MAP_LB)?),
            stats: Mutex::new(take(ebpf, MAP_LB_STATS)?),
            v6: Mutex::new(take(ebpf, MAP_LB6)?),
            addr6: Mutex::new(take(ebpf, MAP_ADDR6)?),
        })
    }

    /// Balances IPv6 VIP `vip6` with the table of `vip`.
    pub fn set6(&self, vip6: Ipv6Addr, vip: Ipv4Addr) -> Result<()> {
        put(&mut *lock(&self.v6), vip6.octets(), vip.octets()).map_err(map_err(format!("insert VIP {vip6}")))
    }

    pub fn remove6(&self, vip6: Ipv6Addr) -> Result<()> {
        erase(&mut *lock(&self.v6), vip6.octets()).map_err(map_err(format!("remove VIP {vip6}")))
    }

    /// IPv6 VIPs balanced now, with their IPv4 sibling.
    pub fn vips6(&self) -> std::collections::HashMap<Ipv6Addr, Ipv4Addr> {
        lock(&self.v6)
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (Ipv6Addr::from(k), Ipv4Addr::from(v)))
            .collect()
    }

    /// Records backend `ip`'s IPv6 address.
    pub fn set_addr6(&self, ip: Ipv4Addr, ip6: Ipv6Addr) -> Result<()> {
        put(&mut *lock(&self.addr6), ip.octets(), ip6.octets())
            .map_err(map_err(format!("insert the IPv6 address of backend {ip}")))
    }

    pub fn remove_addr6(&self, ip: Ipv4Addr) -> Result<()> {
        erase(&mut *lock(&self.addr6), ip.octets())
            .map_err(map_err(format!("remove the IPv6 address of backend {ip}")))
    }

    /// Backends' IPv6 addresses recorded now.
    pub fn addrs6(&self) -> std::collections::HashMap<Ipv4Addr, Ipv6Addr> {
        lock(&self.addr6)
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (Ipv4Addr::from(k), Ipv6Addr::from(v)))
            .collect()
    }

    /// Installs (or atomically replaces) the table of a virtual IP.
    pub fn set(&self, vip: Ipv4Addr, table: &LbTable) -> Result<()> {
        put(&mut *lock(&self.tables), vip.octets(), table).map_err(map_err(format!("insert VIP {vip}")))
    }

    /// Forgets a virtual IP and its flow counters.
    pub fn remove(&self, vip: Ipv4Addr) -> Result<()> {
        erase(&mut *lock(&self.tables), vip.octets()).map_err(map_err(format!("remove VIP {vip}")))?;
        let mut stats = lock(&self.stats);
        let doomed: Vec<LbStatKey> =
            stats.keys().filter_map(|k| k.ok()).filter(|k| k.vip == vip.octets()).collect();
        for k in doomed {
            erase(&mut *stats, k).map_err(map_err(format!("remove flow counters of VIP {vip}")))?;
        }
        Ok(())
    }

    /// Virtual IPs currently balanced.
    pub fn vips(&self) -> Vec<Ipv4Addr> {
        lock(&self.tables).keys().filter_map(|k| k.ok()).map(Ipv4Addr::from).collect()
    }

    /// New flows per (VIP, backend address), summed over CPUs.
    pub fn stats(&self) -> std::collections::HashMap<(Ipv4Addr, Ipv4Addr), u64> {
        lock(&self.stats)
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| ((Ipv4Addr::from(k.vip), Ipv4Addr::from(k.backend)), v.iter().sum()))
            .collect()
    }
}

fn hash(seed: u64, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    seed.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// The table for `backends` (stable id, value stored in its slots — the
/// backend's address, see [`LbTable`]). The order of `backends` does not matter.
pub fn maglev(backends: &[(String, u32)]) -> LbTable {
    let mut table =
        LbTable { backends: backends.len() as u32, size: LB_TABLE_SIZE as u32, slots: [0; LB_TABLE_SIZE] };
    if backends.is_empty() {
        return table;
    }
    let mut sorted: Vec<&(String, u32)> = backends.iter().collect();
    sorted.sort();
    let m = LB_TABLE_SIZE as u64;
    let perm: Vec<(u64, u64)> =
        sorted.iter().map(|(id, _)| (hash(1, id) % m, hash(2, id) % (m - 1) + 1)).collect();
    let mut next = vec![0u64; sorted.len()];
    let mut taken = vec![false; LB_TABLE_SIZE];
    let mut filled = 0;
    while filled < LB_TABLE_SIZE {
        for (i, (offset, skip)) in perm.iter().enumerate() {
            let mut c = ((offset + next[i] * skip) % m) as usize;
            while taken[c] {
                next[i] += 1;
                c = ((offset + next[i] * skip) % m) as usize;
            }
            taken[c] = true;
            table.slots[c] = sorted[i].1;
            next[i] += 1;
            filled += 1;
            if filled == LB_TABLE_SIZE {
                break;
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use dataplane_common::flow_hash;

    use super::*;

    fn backends(n: u32) -> Vec<(String, u32)> {
        (0..n).map(|i| (format!("endpoint-{i}"), 100 + i)).collect()
    }

    /// The backend each of `flows` client ports lands on.
    fn place(t: &LbTable, flows: u32) -> Vec<u32> {
        (0..flows)
            .map(|i| {
                let (client, port) = ((i / 20_000) as u8, (32768 + i % 20_000) as u16);
                let h = flow_hash([10, 1, 0, 9 + client], [10, 1, 0, 200], port.to_be(), 80u16.to_be(), 6);
                t.slots[h as usize % LB_TABLE_SIZE]
            })
            .collect()
    }

    #[test]
    fn three_backends_share_3000_connections_evenly() {
        let t = maglev(&backends(3));
        let mut count: HashMap<u32, u32> = HashMap::new();
        for b in place(&t, 3000) {
            *count.entry(b).or_default() += 1;
        }
        assert_eq!(count.len(), 3);
        for (b, n) in count {
            assert!((900..=1100).contains(&n), "backend {b} got {n} of 3000");
        }
    }

    /// Share of the flows of *other* backends that move when one backend
    /// of `n` leaves (Maglev's disruption), over 60,000 flows.
    fn disruption(n: u32) -> f64 {
        let all = backends(n);
        let before = place(&maglev(&all), 60_000);
        let gone = all[n as usize / 2].1;
        let rest: Vec<_> = all.iter().filter(|(_, v)| *v != gone).cloned().collect();
        let after = place(&maglev(&rest), 60_000);
        let others: Vec<(u32, u32)> = before.into_iter().zip(after).filter(|(b, _)| *b != gone).collect();
        others.iter().filter(|(b, a)| b != a).count() as f64 / others.len() as f64
    }

    #[test]
    fn one_backend_leaving_moves_few_other_flows() {
        for n in [3, 5, 10, 20, 50] {
            let d = disruption(n);
            println!("{n} backends, one leaves: {:.2}% of the other flows move", d * 100.0);
            assert!(d <= 0.015, "{n} backends: {:.2}% moved", d * 100.0);
        }
    }

    #[test]
    fn order_of_backends_does_not_matter_and_empty_is_empty() {
        let mut b = backends(4);
        let t1 = maglev(&b);
        b.reverse();
        assert_eq!(t1.slots, maglev(&b).slots);
        assert_eq!(maglev(&[]).backends, 0);
    }
}
