//! 127.0.0.11:53 redirection (DP_DNS): per sandbox network namespace
//! (its cookie), the ports the embedded resolver listens on there; the
//! socket hooks send the sandbox's DNS queries to them.

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{DnsPorts, MAP_DNS};

use super::{lock, map_err, removed, take};
use crate::error::Result;

pub struct DnsRedirect {
    map: Mutex<HashMap<MapData, u64, DnsPorts>>,
}

impl DnsRedirect {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        Ok(DnsRedirect { map: Mutex::new(take(ebpf, MAP_DNS)?) })
    }

    /// Sends 127.0.0.11:53 of namespace `cookie` to the resolver's ports (host byte order).
    pub fn set(&self, cookie: u64, udp: u16, tcp: u16) -> Result<()> {
        let ports = DnsPorts { udp: udp.to_be(), tcp: tcp.to_be() };
        lock(&self.map)
            .insert(cookie, ports, 0)
            .map_err(map_err(format!("insert resolver of netns {cookie}")))
    }

    pub fn remove(&self, cookie: u64) -> Result<()> {
        removed(lock(&self.map).remove(&cookie))
            .map_err(map_err(format!("remove resolver of netns {cookie}")))
    }

    /// Namespace cookies with a redirect.
    pub fn cookies(&self) -> Vec<u64> {
        lock(&self.map).keys().filter_map(|k| k.ok()).collect()
    }
}
