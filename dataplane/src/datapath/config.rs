//! The datapath's settings (DP_CONFIG): the uplink egress is masqueraded
//! through with its address and SNAT port range, and the daemon's network
//! namespace cookie (the socket hooks act only for its sockets).

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{Array, MapData};
use dataplane_common::{Config, MAP_CONFIG};

use super::{lock, map_err, take};
use crate::error::Result;

pub struct ConfigMap {
    map: Mutex<Array<MapData, Config>>,
}

impl ConfigMap {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(ConfigMap { map: Mutex::new(take(ebpf, MAP_CONFIG)?) })
    }

    pub fn set(&self, cfg: Config) -> Result<()> {
        lock(&self.map).set(0, cfg, 0).map_err(map_err(MAP_CONFIG))
    }
}
