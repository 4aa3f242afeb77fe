//! The embedded resolver's maps.
//!
//! - 127.0.0.11:53 redirection (DP_DNS): per sandbox network namespace
//!   (its cookie), the ports the embedded resolver listens on there; the
//!   socket hooks send the sandbox's DNS queries to them.
//! - Names answered in the kernel ([`DnsNames`]): DP_DNS_NAMES, (network
//!   number, name) → addresses, and DP_DNS_NETS, namespace cookie → the
//!   networks whose names its `lo` program answers.

use std::sync::Mutex;

use std::collections::HashMap as StdMap;
use std::net::Ipv4Addr;

use aya::Ebpf;
use aya::maps::{HashMap, MapData};
use dataplane_common::{
    DNS_MAX_ADDRS, DNS_MAX_NETS, DnsAnswer, DnsNameKey, DnsNets, DnsPorts, MAP_DNS, MAP_DNS_NAMES,
    MAP_DNS_NETS,
};

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

/// What the kernel answers A queries from: the names of each network and
/// which networks each sandbox namespace sees. The daemon's resolver stays
/// the authority: this is a copy of its answers, rewritten as the store
/// changes (only the entries that differ).
pub struct DnsNames {
    names: Mutex<Names>,
    nets: Mutex<Nets>,
}

struct Nets {
    map: HashMap<MapData, u64, DnsNets>,
    /// What the map holds: the store's every commit compares with this,
    /// not with a map read per namespace.
    held: StdMap<u64, DnsNets>,
}

struct Names {
    map: HashMap<MapData, DnsNameKey, DnsAnswer>,
    /// What the map holds (addresses only: the kernel moves `turn`).
    held: StdMap<DnsNameKey, Vec<[u8; 4]>>,
}

/// Sync counts: entries written and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub written: usize,
    pub removed: usize,
}

impl DnsNames {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map: HashMap<MapData, DnsNameKey, DnsAnswer> = take(ebpf, MAP_DNS_NAMES)?;
        // What an earlier start left is what the map holds now (a restart
        // that finds it right rewrites nothing).
        let held = map
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, a)| (k, a.addrs[..(a.count as usize).min(DNS_MAX_ADDRS)].to_vec()))
            .collect();
        let nets: HashMap<MapData, u64, DnsNets> = take(ebpf, MAP_DNS_NETS)?;
        let nets_held = nets.iter().filter_map(|r| r.ok()).collect();
        Ok(DnsNames {
            names: Mutex::new(Names { map, held }),
            nets: Mutex::new(Nets { map: nets, held: nets_held }),
        })
    }

    /// Makes DP_DNS_NAMES hold exactly `want`: (network number, name as
    /// [`dataplane_common::dns_wire_name`] encodes it) → addresses. Names
    /// with no address or more than the kernel answers are left out (the
    /// daemon answers those).
    pub fn sync(&self, want: &StdMap<DnsNameKey, Vec<Ipv4Addr>>) -> Result<Synced> {
        let mut names = lock(&self.names);
        let Names { map, held } = &mut *names;
        let mut done = Synced::default();
        let want: StdMap<DnsNameKey, Vec<[u8; 4]>> = want
            .iter()
            .filter(|(_, a)| !a.is_empty() && a.len() <= DNS_MAX_ADDRS)
            .map(|(k, a)| (*k, a.iter().map(|ip| ip.octets()).collect()))
            .collect();
        let gone: Vec<DnsNameKey> = held.keys().filter(|k| !want.contains_key(*k)).copied().collect();
        for k in gone {
            erase(map, k).map_err(map_err(format!("remove DNS name of network {}", k.net)))?;
            held.remove(&k);
            done.removed += 1;
        }
        for (k, addrs) in want {
            if held.get(&k) == Some(&addrs) {
                continue;
            }
            let mut value = DnsAnswer { count: addrs.len() as u32, ..DnsAnswer::default() };
            value.addrs[..addrs.len()].copy_from_slice(&addrs);
            put(map, k, value).map_err(map_err(format!("insert DNS name of network {}", k.net)))?;
            held.insert(k, addrs);
            done.written += 1;
        }
        Ok(done)
    }

    /// The kernel answers names of `nets` (network numbers; the first
    /// [`DNS_MAX_NETS`]) for the sandbox namespace `cookie`.
    pub fn set_nets(&self, cookie: u64, nets: &[u32]) -> Result<()> {
        let mut value = DnsNets::default();
        for (slot, n) in value.nets.iter_mut().zip(nets.iter().take(DNS_MAX_NETS)) {
            *slot = *n;
        }
        let mut nets = lock(&self.nets);
        if nets.held.get(&cookie) == Some(&value) {
            return Ok(());
        }
        put(&mut nets.map, cookie, value)
            .map_err(map_err(format!("insert DNS networks of netns {cookie}")))?;
        nets.held.insert(cookie, value);
        Ok(())
    }

    pub fn remove_nets(&self, cookie: u64) -> Result<()> {
        let mut nets = lock(&self.nets);
        erase(&mut nets.map, cookie).map_err(map_err(format!("remove DNS networks of netns {cookie}")))?;
        nets.held.remove(&cookie);
        Ok(())
    }

    /// Namespace cookies with networks.
    pub fn cookies(&self) -> Vec<u64> {
        lock(&self.nets).held.keys().copied().collect()
    }
}
