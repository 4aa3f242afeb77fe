//! Published ports (DP_SERVICES: host address, port and protocol → the
//! endpoint behind them) and the host's own addresses, where ports
//! published on 0.0.0.0 answer (DP_HOST_IPS).

use std::net::Ipv4Addr;
use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{Backend, MAP_HOST_IPS, MAP_SERVICES, ServiceKey};

use super::{lock, map_err, removed, take};
use crate::error::{Error, Result};

pub struct Services {
    services: Mutex<HashMap<MapData, ServiceKey, Backend>>,
    host_ips: Mutex<HashMap<MapData, [u8; 4], u32>>,
}

impl Services {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(Services {
            services: Mutex::new(take(ebpf, MAP_SERVICES)?),
            host_ips: Mutex::new(take(ebpf, MAP_HOST_IPS)?),
        })
    }

    /// Installs (or overwrites in place, with no moment without the port)
    /// published ports, all or none.
    pub fn set(&self, entries: &[(ServiceKey, Backend)]) -> Result<()> {
        let mut m = lock(&self.services);
        for (i, (k, b)) in entries.iter().enumerate() {
            if let Err(e) = m.insert(k, b, 0) {
                for (k, _) in &entries[..i] {
                    if let Err(undo) = removed(m.remove(k)) {
                        tracing::warn!(error = %undo, "cannot undo a published port");
                    }
                }
                return Err(map_err("insert published port")(e));
            }
        }
        Ok(())
    }

    /// Removes published ports; tries every one and reports every failure.
    pub fn remove(&self, keys: &[ServiceKey]) -> Vec<Error> {
        let mut m = lock(&self.services);
        keys.iter()
            .filter_map(|k| {
                removed(m.remove(k)).err().map(|e| {
                    let port = u16::from_be(k.port);
                    map_err(format!("remove published port {}:{port}", Ipv4Addr::from(k.addr)))(e)
                })
            })
            .collect()
    }

    pub fn keys(&self) -> Vec<ServiceKey> {
        lock(&self.services).keys().filter_map(|k| k.ok()).collect()
    }

    /// Replaces the set of host addresses (with the interface holding each)
    /// on which 0.0.0.0 publications answer.
    pub fn set_host_ips(&self, ips: &[(Ipv4Addr, u32)]) -> Result<()> {
        let mut m = lock(&self.host_ips);
        let old: Vec<[u8; 4]> = m.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            if !ips.iter().any(|(ip, _)| ip.octets() == k) {
                removed(m.remove(&k)).map_err(map_err(format!("remove host ip {}", Ipv4Addr::from(k))))?;
            }
        }
        for (ip, idx) in ips {
            m.insert(ip.octets(), idx, 0).map_err(map_err(format!("insert host ip {ip}")))?;
        }
        Ok(())
    }
}
