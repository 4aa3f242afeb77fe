//! Overlay addresses on other hosts (DP_REMOTE, DP_REMOTE6 for IPv6):
//! where a sandbox's packet to each goes — the host's underlay address and
//! the network's VNI.

use std::collections::HashMap as StdMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{MAP_REMOTE, MAP_REMOTE6, RemoteTarget};

use super::write::{erase, put};
use super::{lock, map_err, take};
use crate::error::Result;

pub struct Overlay {
    remote: Mutex<HashMap<MapData, [u8; 4], RemoteTarget>>,
    remote6: Mutex<HashMap<MapData, [u8; 16], RemoteTarget>>,
}

/// One remote overlay address as the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteEntry {
    pub underlay: Ipv4Addr,
    pub vni: u32,
    pub mac: [u8; 6],
}

impl Overlay {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Overlay {
            remote: Mutex::new(take(ebpf, MAP_REMOTE)?),
            remote6: Mutex::new(take(ebpf, MAP_REMOTE6)?),
        })
    }

    /// Makes the maps hold exactly `want` (IPv4 and IPv6 addresses); writes
    /// only what differs. Returns how many entries were written and removed.
    pub fn sync(&self, want: &StdMap<IpAddr, RemoteEntry>) -> Result<(usize, usize)> {
        let mut v4 = StdMap::new();
        let mut v6 = StdMap::new();
        for (ip, e) in want {
            match ip {
                IpAddr::V4(a) => v4.insert(a.octets(), *e),
                IpAddr::V6(a) => v6.insert(a.octets(), *e),
            };
        }
        let (w4, r4) = sync_map(&mut lock(&self.remote), &v4, |k| Ipv4Addr::from(*k).into())?;
        let (w6, r6) = sync_map(&mut lock(&self.remote6), &v6, |k| Ipv6Addr::from(*k).into())?;
        Ok((w4 + w6, r4 + r6))
    }
}

/// Makes one map hold exactly `want`, writing only what differs.
fn sync_map<K>(
    map: &mut HashMap<MapData, K, RemoteTarget>,
    want: &StdMap<K, RemoteEntry>,
    show: impl Fn(&K) -> IpAddr,
) -> Result<(usize, usize)>
where
    K: aya::Pod + Eq + Hash,
{
    let have: StdMap<K, RemoteTarget> = map.iter().filter_map(|r| r.ok()).collect();
    let mut written = 0;
    for (ip, e) in want {
        let v = RemoteTarget { underlay: e.underlay.octets(), vni: e.vni, mac: e.mac, _pad: [0; 2] };
        if have.get(ip) != Some(&v) {
            put(map, *ip, v).map_err(map_err(format!("insert remote overlay address {}", show(ip))))?;
            written += 1;
        }
    }
    let mut gone = 0;
    for ip in have.keys().filter(|ip| !want.contains_key(ip)) {
        erase(map, ip).map_err(map_err(format!("remove remote overlay address {}", show(ip))))?;
        gone += 1;
    }
    Ok((written, gone))
}
