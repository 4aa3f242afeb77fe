//! The datapath's settings (DP_CONFIG): the uplink egress is masqueraded
//! through with its address and SNAT port range, and the daemon's network
//! namespace cookie (the socket hooks act only for its sockets); the
//! uplink's IPv6 address NAT66 masquerades to (DP_UPLINK6).

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{Array, MapData};
use dataplane_common::{Config, MAP_CONFIG, MAP_UPLINK6};

use super::write::put;
use super::{lock, map_err, take};
use crate::error::Result;

pub struct ConfigMap {
    map: Mutex<Array<MapData, Config>>,
    uplink6: Mutex<Array<MapData, [u8; 16]>>,
}

impl ConfigMap {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(ConfigMap {
            map: Mutex::new(take(ebpf, MAP_CONFIG)?),
            uplink6: Mutex::new(take(ebpf, MAP_UPLINK6)?),
        })
    }

    /// The uplink's IPv6 address egress is masqueraded to; None: no NAT66.
    pub fn set_uplink6(&self, addr: Option<std::net::Ipv6Addr>) -> Result<()> {
        let bytes = addr.map_or([0; 16], |a| a.octets());
        put(&mut *lock(&self.uplink6), 0, bytes).map_err(map_err(MAP_UPLINK6))
    }

    pub fn set(&self, cfg: Config) -> Result<()> {
        put(&mut *lock(&self.map), 0, cfg).map_err(map_err(MAP_CONFIG))
    }
}
