//! Published ports (DP_SERVICES: host address, port and protocol → the
//! endpoint behind them; DP_SERVICES6 the same over IPv6) and the host's
//! own addresses, where ports published on 0.0.0.0 / `::` answer
//! (DP_HOST_IPS, DP_HOST_IPS6).

use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{
    Backend, Backend6, MAP_HOST_IPS, MAP_HOST_IPS6, MAP_SERVICES, MAP_SERVICES6, ServiceKey, ServiceKey6,
};

use super::write::{erase, put};
use super::{lock, map_err, take};
use crate::error::{Error, Result};

/// The services-map entries of some publications, per address family.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Published {
    pub v4: Vec<(ServiceKey, Backend)>,
    pub v6: Vec<(ServiceKey6, Backend6)>,
}

impl Published {
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn extend(&mut self, other: Published) {
        self.v4.extend(other.v4);
        self.v6.extend(other.v6);
    }
}

/// The services-map keys of some publications, per address family.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PublishedKeys {
    pub v4: Vec<ServiceKey>,
    pub v6: Vec<ServiceKey6>,
}

pub struct Services {
    services: Mutex<HashMap<MapData, ServiceKey, Backend>>,
    services6: Mutex<HashMap<MapData, ServiceKey6, Backend6>>,
    host_ips: Mutex<HashMap<MapData, [u8; 4], u32>>,
    host_ips6: Mutex<HashMap<MapData, [u8; 16], u32>>,
}

/// Inserts every entry or none.
fn insert_all<K: aya::Pod + Eq + Hash, V: aya::Pod>(
    m: &mut HashMap<MapData, K, V>,
    entries: &[(K, V)],
) -> Result<()> {
    for (i, (k, v)) in entries.iter().enumerate() {
        if let Err(e) = put(m, k, v) {
            for (k, _) in &entries[..i] {
                if let Err(undo) = erase(m, k) {
                    tracing::warn!(error = %undo, "cannot undo a published port");
                }
            }
            return Err(map_err("insert published port")(e));
        }
    }
    Ok(())
}

/// Makes a host-address map hold exactly `ips` (address bytes → ifindex).
fn replace_all<const N: usize>(m: &mut HashMap<MapData, [u8; N], u32>, ips: &[([u8; N], u32)]) -> Result<()> {
    let old: Vec<[u8; N]> = m.keys().filter_map(|k| k.ok()).collect();
    for k in old {
        if !ips.iter().any(|(ip, _)| *ip == k) {
            erase(m, k).map_err(map_err("remove a host address"))?;
        }
    }
    for (ip, idx) in ips {
        put(m, ip, idx).map_err(map_err("insert a host address"))?;
    }
    Ok(())
}

impl Services {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Services {
            services: Mutex::new(take(ebpf, MAP_SERVICES)?),
            services6: Mutex::new(take(ebpf, MAP_SERVICES6)?),
            host_ips: Mutex::new(take(ebpf, MAP_HOST_IPS)?),
            host_ips6: Mutex::new(take(ebpf, MAP_HOST_IPS6)?),
        })
    }

    /// Installs (or overwrites in place, with no moment without the port)
    /// published ports of both families, all or none.
    pub fn set(&self, entries: &Published) -> Result<()> {
        insert_all(&mut lock(&self.services), &entries.v4)?;
        if let Err(e) = insert_all(&mut lock(&self.services6), &entries.v6) {
            let keys: Vec<ServiceKey> = entries.v4.iter().map(|(k, _)| *k).collect();
            for undo in self.remove(&PublishedKeys { v4: keys, v6: Vec::new() }) {
                tracing::warn!(error = %undo, "cannot undo a published port");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Removes published ports; tries every one and reports every failure.
    pub fn remove(&self, keys: &PublishedKeys) -> Vec<Error> {
        let mut errors: Vec<Error> = {
            let mut m = lock(&self.services);
            keys.v4
                .iter()
                .filter_map(|k| {
                    erase(&mut *m, k).err().map(|e| {
                        let port = u16::from_be(k.port);
                        map_err(format!("remove published port {}:{port}", Ipv4Addr::from(k.addr)))(e)
                    })
                })
                .collect()
        };
        let mut m = lock(&self.services6);
        errors.extend(keys.v6.iter().filter_map(|k| {
            erase(&mut *m, k).err().map(|e| {
                let port = u16::from_be(k.port);
                map_err(format!("remove published port [{}]:{port}", Ipv6Addr::from(k.addr)))(e)
            })
        }));
        errors
    }

    pub fn keys(&self) -> PublishedKeys {
        PublishedKeys {
            v4: lock(&self.services).keys().filter_map(|k| k.ok()).collect(),
            v6: lock(&self.services6).keys().filter_map(|k| k.ok()).collect(),
        }
    }

    /// Replaces the set of host addresses (with the interface holding each)
    /// on which 0.0.0.0 and `::` publications answer.
    pub fn set_host_ips(&self, ips: &[(Ipv4Addr, u32)], ips6: &[(Ipv6Addr, u32)]) -> Result<()> {
        let v4: Vec<([u8; 4], u32)> = ips.iter().map(|(ip, i)| (ip.octets(), *i)).collect();
        let v6: Vec<([u8; 16], u32)> = ips6.iter().map(|(ip, i)| (ip.octets(), *i)).collect();
        replace_all(&mut lock(&self.host_ips), &v4)?;
        replace_all(&mut lock(&self.host_ips6), &v6)
    }
}
