//! Overlay addresses on other hosts (DP_REMOTE): where a sandbox's packet
//! to each goes — the host's underlay address and the network's VNI.

use std::collections::HashMap as StdMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{MAP_REMOTE, RemoteTarget};

use super::{lock, map_err, removed, take};
use crate::error::Result;

pub struct Overlay {
    remote: Mutex<HashMap<MapData, [u8; 4], RemoteTarget>>,
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
        Ok(Overlay { remote: Mutex::new(take(ebpf, MAP_REMOTE)?) })
    }

    /// Makes the map hold exactly `want`; writes only what differs.
    /// Returns how many entries were written and removed.
    pub fn sync(&self, want: &StdMap<Ipv4Addr, RemoteEntry>) -> Result<(usize, usize)> {
        let mut map = lock(&self.remote);
        let have: StdMap<Ipv4Addr, RemoteTarget> =
            map.iter().filter_map(|r| r.ok()).map(|(k, v)| (Ipv4Addr::from(k), v)).collect();
        let mut written = 0;
        for (ip, e) in want {
            let v = RemoteTarget { underlay: e.underlay.octets(), vni: e.vni, mac: e.mac, _pad: [0; 2] };
            if have.get(ip) != Some(&v) {
                map.insert(ip.octets(), v, 0)
                    .map_err(map_err(format!("insert remote overlay address {ip}")))?;
                written += 1;
            }
        }
        let mut gone = 0;
        for ip in have.keys().filter(|ip| !want.contains_key(ip)) {
            removed(map.remove(&ip.octets()))
                .map_err(map_err(format!("remove remote overlay address {ip}")))?;
            gone += 1;
        }
        Ok((written, gone))
    }
}
