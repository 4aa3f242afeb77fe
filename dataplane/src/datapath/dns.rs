//! 127.0.0.11:53 redirection (DP_DNS): per sandbox network namespace
//! (its cookie), the ports the embedded resolver listens on there; the
//! socket hooks send the sandbox's DNS queries to them.

use std::sync::Mutex;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{DnsPorts, MAP_DNS};

use super::write::{erase, put};
use super::{lock, map_err, take};
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
        put(&mut *lock(&self.map), cookie, ports)
            .map_err(map_err(format!("insert resolver of netns {cookie}")))
    }

    pub fn remove(&self, cookie: u64) -> Result<()> {
        erase(&mut *lock(&self.map), cookie).map_err(map_err(format!("remove resolver of netns {cookie}")))
    }

    /// Every redirect: namespace cookie → (UDP port, TCP port), host byte order.
    pub fn entries(&self) -> std::collections::HashMap<u64, (u16, u16)> {
        lock(&self.map)
            .iter()
            .filter_map(|r| r.ok())
            .map(|(c, p)| (c, (u16::from_be(p.udp), u16::from_be(p.tcp))))
            .collect()
    }

    /// Namespace cookies with a redirect.
    pub fn cookies(&self) -> Vec<u64> {
        lock(&self.map).keys().filter_map(|k| k.ok()).collect()
    }
}
