//! Firewall rules for published ports (DP_FIREWALL, DP_FIREWALL6, and
//! DP_FIREWALL_RULES, the datapath's gate): written whole from the rules
//! the store holds, only what differs.

use std::collections::HashMap as StdMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, LpmTrie, MapData};
use dataplane_common::{
    FW_EXACT_BITS, FwKey, FwKey6, FwRule, MAP_FIREWALL, MAP_FIREWALL_RULES, MAP_FIREWALL6, PROTO_TCP,
    PROTO_UDP,
};
use ipnetwork::IpNetwork;

use super::write::{erase, put};
use super::{lock, map_err, take};
use crate::error::Result;

/// One entry of a rule: the client prefix, the exact part, the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FwEntry {
    pub from: IpNetwork,
    /// The network's number (0: any).
    pub net: u32,
    /// Host port, host byte order (0: any).
    pub port: u16,
    /// `PROTO_TCP`/`PROTO_UDP`, 0 with port 0.
    pub proto: u8,
}

/// The entries a rule makes: one per protocol it names (a port without a
/// protocol means TCP and UDP, as `ufw allow 53` does).
pub fn entries(from: IpNetwork, net: u32, port: Option<u16>, proto: Option<u8>) -> Vec<FwEntry> {
    match (port, proto) {
        (None, _) => vec![FwEntry { from, net, port: 0, proto: 0 }],
        (Some(p), Some(proto)) => vec![FwEntry { from, net, port: p, proto }],
        (Some(p), None) => [PROTO_TCP, PROTO_UDP].map(|proto| FwEntry { from, net, port: p, proto }).to_vec(),
    }
}

pub struct Firewall {
    v4: Mutex<LpmTrie<MapData, FwKey, FwRule>>,
    v6: Mutex<LpmTrie<MapData, FwKey6, FwRule>>,
    rules: Mutex<Array<MapData, u32>>,
}

/// A key's exact part: network, port (network byte order), protocol.
fn exact(e: &FwEntry) -> ([u8; 4], u16, u8) {
    (e.net.to_be_bytes(), e.port.to_be(), e.proto)
}

fn key4(e: &FwEntry, addr: Ipv4Addr, prefix: u8) -> Key<FwKey> {
    let (net, port, proto) = exact(e);
    Key::new(FW_EXACT_BITS + u32::from(prefix), FwKey { net, port, proto, _pad: 0, addr: addr.octets() })
}

fn key6(e: &FwEntry, addr: Ipv6Addr, prefix: u8) -> Key<FwKey6> {
    let (net, port, proto) = exact(e);
    Key::new(FW_EXACT_BITS + u32::from(prefix), FwKey6 { net, port, proto, _pad: 0, addr: addr.octets() })
}

/// The entry a map key stands for.
fn entry_of(net: [u8; 4], port: u16, proto: u8, addr: IpAddr, bits: u32) -> Option<FwEntry> {
    let prefix = u8::try_from(bits.checked_sub(FW_EXACT_BITS)?).ok()?;
    let from = IpNetwork::new(addr, prefix).ok()?;
    Some(FwEntry { from, net: u32::from_be_bytes(net), port: u16::from_be(port), proto })
}

impl Firewall {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Firewall {
            v4: Mutex::new(take(ebpf, MAP_FIREWALL)?),
            v6: Mutex::new(take(ebpf, MAP_FIREWALL6)?),
            rules: Mutex::new(take(ebpf, MAP_FIREWALL_RULES)?),
        })
    }

    /// What the maps hold now.
    pub fn installed(&self) -> StdMap<FwEntry, FwRule> {
        let mut out = StdMap::new();
        for (k, v) in lock(&self.v4).iter().filter_map(|r| r.ok()) {
            let d = k.data();
            out.extend(
                entry_of(d.net, d.port, d.proto, IpAddr::from(d.addr), k.prefix_len()).map(|e| (e, v)),
            );
        }
        for (k, v) in lock(&self.v6).iter().filter_map(|r| r.ok()) {
            let d = k.data();
            out.extend(
                entry_of(d.net, d.port, d.proto, IpAddr::from(d.addr), k.prefix_len()).map(|e| (e, v)),
            );
        }
        out
    }

    /// Makes the maps hold exactly `want`, writing only what differs (the
    /// gate last when rules are added, first when the last goes). Returns
    /// how many entries were written and removed.
    pub fn sync(&self, want: &StdMap<FwEntry, FwRule>) -> Result<(usize, usize)> {
        let have = self.installed();
        let mut written = 0;
        for (e, rule) in want.iter().filter(|(e, r)| have.get(e) != Some(r)) {
            self.put(e, *rule)?;
            written += 1;
        }
        let mut gone = 0;
        for e in have.keys().filter(|e| !want.contains_key(e)) {
            self.remove(e)?;
            gone += 1;
        }
        let n = u32::try_from(want.len()).unwrap_or(u32::MAX);
        put(&mut *lock(&self.rules), 0, n).map_err(map_err(MAP_FIREWALL_RULES))?;
        Ok((written, gone))
    }

    fn put(&self, e: &FwEntry, rule: FwRule) -> Result<()> {
        let what = || format!("insert firewall rule {} for {}", rule.id, e.from);
        match e.from {
            IpNetwork::V4(n) => {
                put(&mut *lock(&self.v4), key4(e, n.network(), n.prefix()), rule).map_err(map_err(what()))
            }
            IpNetwork::V6(n) => {
                put(&mut *lock(&self.v6), key6(e, n.network(), n.prefix()), rule).map_err(map_err(what()))
            }
        }
    }

    fn remove(&self, e: &FwEntry) -> Result<()> {
        let what = || format!("remove the firewall entry for {}", e.from);
        match e.from {
            IpNetwork::V4(n) => {
                erase(&mut *lock(&self.v4), key4(e, n.network(), n.prefix())).map_err(map_err(what()))
            }
            IpNetwork::V6(n) => {
                erase(&mut *lock(&self.v6), key6(e, n.network(), n.prefix())).map_err(map_err(what()))
            }
        }
    }
}
