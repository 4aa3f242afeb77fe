//! Which host-side veth is which endpoint, on which network (DP_ENDPOINTS),
//! the veth and MAC each sandbox address is delivered to directly (DP_LOCAL:
//! same-network traffic never crosses the bridge or netfilter; DP_LOCAL6 for
//! IPv6 addresses, where overlay traffic from other hosts is delivered), and
//! the bridge networks' subnets with their gateway and flags (DP_SUBNETS).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData};
use dataplane_common::{
    EP_FLAG_SHAPED, Endpoint, LocalTarget, MAP_ENDPOINTS, MAP_LOCAL, MAP_LOCAL6, MAP_SHAPED, MAP_SUBNETS,
    MAP_SUBNETS6, NetworkInfo, NetworkInfo6, SubnetKey, SubnetKey6,
};
use ipnetwork::{Ipv4Network, Ipv6Network};

use super::write::{erase, put};
use super::{lock, map_err, take};
use crate::error::Result;

pub struct Endpoints {
    endpoints: Mutex<HashMap<MapData, u32, Endpoint>>,
    /// Host-side veths with a root qdisc (see [`EP_FLAG_SHAPED`]): kept
    /// here too, so an entry written anew keeps the flag.
    shaped: Mutex<std::collections::HashSet<u32>>,
    /// `DP_SHAPED`: how many entries carry the flag (the datapath's gate).
    shaped_count: Mutex<Array<MapData, u32>>,
    locals: Mutex<HashMap<MapData, [u8; 4], LocalTarget>>,
    locals6: Mutex<HashMap<MapData, [u8; 16], LocalTarget>>,
    subnets: Mutex<LpmTrie<MapData, SubnetKey, NetworkInfo>>,
    subnets6: Mutex<LpmTrie<MapData, SubnetKey6, NetworkInfo6>>,
}

/// What the datapath knows of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointEntry {
    /// Host-side veth.
    pub ifindex: u32,
    /// The network's number (isolation compares these).
    pub net_num: u32,
    pub ip: Ipv4Addr,
    /// Its IPv6 address on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
    pub mac: [u8; 6],
    /// `NET_FLAG_*` bits of the network.
    pub flags: u32,
}

fn subnet_key(subnet: Ipv4Network) -> Key<SubnetKey> {
    Key::new(subnet.prefix() as u32, subnet.network().octets())
}

impl Endpoints {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Endpoints {
            endpoints: Mutex::new(take(ebpf, MAP_ENDPOINTS)?),
            shaped: Mutex::default(),
            shaped_count: Mutex::new(take(ebpf, MAP_SHAPED)?),
            locals: Mutex::new(take(ebpf, MAP_LOCAL)?),
            locals6: Mutex::new(take(ebpf, MAP_LOCAL6)?),
            subnets: Mutex::new(take(ebpf, MAP_SUBNETS)?),
            subnets6: Mutex::new(take(ebpf, MAP_SUBNETS6)?),
        })
    }

    /// Records the endpoint and delivers its addresses to its veth; all or none.
    pub fn set(&self, ep: EndpointEntry) -> Result<()> {
        let EndpointEntry { ifindex, net_num, ip, ip6, mac, mut flags } = ep;
        let shaped = lock(&self.shaped);
        if shaped.contains(&ifindex) {
            flags |= EP_FLAG_SHAPED;
        }
        let value = Endpoint { net_id: net_num, ipv4: ip.octets(), mac, _pad: [0; 2], flags };
        let mut endpoints = lock(&self.endpoints);
        put(&mut *endpoints, ifindex, value).map_err(map_err(format!("insert endpoint {ifindex}")))?;
        let local = LocalTarget { ifindex, mac, _pad: [0; 2] };
        let mut locals = lock(&self.locals);
        let written =
            put(&mut *locals, ip.octets(), local).map_err(map_err(format!("insert local delivery of {ip}")));
        let written = written.and_then(|()| match ip6 {
            Some(ip6) => put(&mut *lock(&self.locals6), ip6.octets(), local).map_err(|e| {
                if let Err(undo) = erase(&mut *locals, ip.octets()) {
                    tracing::warn!(%ip, error = %undo, "cannot undo the local delivery");
                }
                map_err(format!("insert local delivery of {ip6}"))(e)
            }),
            None => Ok(()),
        });
        if let Err(e) = written {
            if let Err(undo) = erase(&mut *endpoints, ifindex) {
                tracing::warn!(ifindex, error = %undo, "cannot undo the endpoint entry");
            }
            return Err(e);
        }
        if flags & EP_FLAG_SHAPED != 0 {
            self.count_shaped(&shaped, &endpoints)?;
        }
        Ok(())
    }

    /// Forgets the endpoint of veth `ifindex` and, unless another endpoint
    /// took its address over, the address's delivery.
    pub fn remove(&self, ifindex: u32) -> Result<()> {
        // The veth goes with its entry; its index may name another one later.
        let mut shaped = lock(&self.shaped);
        let was_shaped = shaped.remove(&ifindex);
        let mut endpoints = lock(&self.endpoints);
        let ip = endpoints.get(&ifindex, 0).ok().map(|e| e.ipv4);
        erase(&mut *endpoints, ifindex).map_err(map_err(format!("remove endpoint {ifindex}")))?;
        if was_shaped {
            self.count_shaped(&shaped, &endpoints)?;
        }
        let mut locals = lock(&self.locals);
        if let Some(ip) = ip
            && locals.get(&ip, 0).is_ok_and(|t| t.ifindex == ifindex)
        {
            erase(&mut *locals, ip)
                .map_err(map_err(format!("remove local delivery of {}", Ipv4Addr::from(ip))))?;
        }
        // The IPv6 address is not in the endpoint entry: found by its veth.
        let mut locals6 = lock(&self.locals6);
        let mine: Vec<[u8; 16]> = locals6
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(_, t)| t.ifindex == ifindex)
            .map(|(k, _)| k)
            .collect();
        for ip6 in mine {
            erase(&mut *locals6, ip6)
                .map_err(map_err(format!("remove local delivery of {}", Ipv6Addr::from(ip6))))?;
        }
        Ok(())
    }

    /// Records whether veth `ifindex` shapes its traffic (has a root
    /// qdisc); its endpoint entry, if it has one, follows at once.
    pub fn set_shaped(&self, ifindex: u32, shaped: bool) -> Result<()> {
        let mut set = lock(&self.shaped);
        let changed = if shaped { set.insert(ifindex) } else { set.remove(&ifindex) };
        if !changed {
            return Ok(());
        }
        let mut endpoints = lock(&self.endpoints);
        let Ok(mut e) = endpoints.get(&ifindex, 0) else { return Ok(()) };
        if shaped {
            e.flags |= EP_FLAG_SHAPED;
        } else {
            e.flags &= !EP_FLAG_SHAPED;
        }
        put(&mut *endpoints, ifindex, e)
            .map_err(map_err(format!("mark endpoint {ifindex} shaped={shaped}")))?;
        self.count_shaped(&set, &endpoints)
    }

    /// Writes `DP_SHAPED`: the shaped veths that have an endpoint entry
    /// (the host's own links may have root qdiscs too; they do not count).
    fn count_shaped(
        &self,
        shaped: &std::collections::HashSet<u32>,
        endpoints: &HashMap<MapData, u32, Endpoint>,
    ) -> Result<()> {
        let n = shaped.iter().filter(|i| endpoints.get(i, 0).is_ok()).count();
        put(&mut *lock(&self.shaped_count), 0, u32::try_from(n).unwrap_or(u32::MAX))
            .map_err(map_err(MAP_SHAPED))
    }

    /// The address the endpoint entry of veth `ifindex` delivers to, if any.
    pub fn entry_ip(&self, ifindex: u32) -> Option<Ipv4Addr> {
        lock(&self.endpoints).get(&ifindex, 0).ok().map(|e| Ipv4Addr::from(e.ipv4))
    }

    /// Veth ifindexes in the endpoint table.
    pub fn indexes(&self) -> Vec<u32> {
        lock(&self.endpoints).keys().filter_map(|k| k.ok()).collect()
    }

    /// Addresses in the local-delivery tables, with their veth.
    pub fn local_entries(&self) -> Vec<(IpAddr, u32)> {
        let mut all: Vec<(IpAddr, u32)> = lock(&self.locals)
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (IpAddr::from(k), v.ifindex))
            .collect();
        all.extend(
            lock(&self.locals6).iter().filter_map(|r| r.ok()).map(|(k, v)| (IpAddr::from(k), v.ifindex)),
        );
        all
    }

    pub fn remove_local(&self, ip: IpAddr) -> Result<()> {
        let res = match ip {
            IpAddr::V4(a) => erase(&mut *lock(&self.locals), a.octets()),
            IpAddr::V6(a) => erase(&mut *lock(&self.locals6), a.octets()),
        };
        res.map_err(map_err(format!("remove local delivery of {ip}")))
    }

    /// Records a bridge network's subnet with its gateway and `NET_FLAG_*` bits.
    pub fn set_subnet(&self, subnet: Ipv4Network, net_num: u32, gateway: Ipv4Addr, flags: u32) -> Result<()> {
        let info = NetworkInfo { net_id: net_num, gateway: gateway.octets(), flags };
        put(&mut *lock(&self.subnets), subnet_key(subnet), info)
            .map_err(map_err(format!("insert subnet {subnet}")))
    }

    /// Records a network's IPv6 subnet with its gateway and `NET_FLAG_*` bits.
    pub fn set_subnet6(
        &self,
        subnet: Ipv6Network,
        net_num: u32,
        gateway: Ipv6Addr,
        flags: u32,
    ) -> Result<()> {
        let info = NetworkInfo6 { net_id: net_num, flags, gateway: gateway.octets() };
        let key = Key::new(u32::from(subnet.prefix()), subnet.network().octets());
        put(&mut *lock(&self.subnets6), key, info).map_err(map_err(format!("insert subnet {subnet}")))
    }

    pub fn remove_subnet6(&self, subnet: Ipv6Network) -> Result<()> {
        let key = Key::new(u32::from(subnet.prefix()), subnet.network().octets());
        erase(&mut *lock(&self.subnets6), key).map_err(map_err(format!("remove subnet {subnet}")))
    }

    pub fn remove_subnet(&self, subnet: Ipv4Network) -> Result<()> {
        erase(&mut *lock(&self.subnets), subnet_key(subnet))
            .map_err(map_err(format!("remove subnet {subnet}")))
    }

    /// IPv6 subnets currently in their trie.
    pub fn subnets6(&self) -> Vec<Ipv6Network> {
        lock(&self.subnets6)
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| Ipv6Network::new(Ipv6Addr::from(k.data()), k.prefix_len() as u8).ok())
            .collect()
    }

    /// Subnets currently in the trie.
    pub fn subnets(&self) -> Vec<Ipv4Network> {
        lock(&self.subnets)
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| Ipv4Network::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).ok())
            .collect()
    }
}
