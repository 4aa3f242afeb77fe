//! The BPF datapath. [`programs`] loads the object, attaches and pins the
//! programs ([`generations`] retires those of earlier runs); every other
//! module owns one family of maps — it takes them out of the loaded object
//! and is the only code that touches them:
//!
//! | module        | maps                                   | concern                                   |
//! |---------------|----------------------------------------|-------------------------------------------|
//! | [`endpoints`] | DP_ENDPOINTS, DP_LOCAL, DP_SUBNETS     | which veth is which endpoint, on which network |
//! | [`overlay`]   | DP_REMOTE                              | overlay addresses on other hosts (VXLAN)  |
//! | [`services`]  | DP_SERVICES, DP_HOST_IPS               | published ports and where they answer     |
//! | [`conntrack`] | DP_CT                                  | tracked flows, their timeouts and GC      |
//! | [`lb`]        | DP_LB, DP_LB6, DP_ADDR6, DP_LB_STATS   | Maglev tables of alias VIPs (both families) |
//! | [`dns`]       | DP_DNS, DP_DNS_NETS, DP_DNS_NAMES      | 127.0.0.11:53 redirection per namespace; names answered in the kernel |
//! | [`events`]    | DP_EVENTS, DP_MONITOR, DP_EVENT_RATE   | drop events for `dataplane monitor`       |
//! | [`metrics`]   | DP_METRICS                             | counters by verdict and direction         |
//! | [`config`]    | DP_CONFIG                              | uplink, SNAT ports, the daemon's netns    |
//! | [`firewall`]  | DP_FIREWALL, DP_FIREWALL6, DP_FIREWALL_RULES | who may reach published ports       |
//!
//! Every owner changes its maps through [`write::put`] and [`write::erase`]:
//! a value already in place is not written again, and each change is
//! counted (a restart reports how many it made).
//!
//! Each owner holds its own short lock (or none, where the kernel map is the
//! synchronisation), so no request waits behind another concern's map work.

use std::path::Path;
use std::sync::Arc;

use aya::Ebpf;
use aya::maps::{Map, MapError};

use crate::error::{Error, Result};

pub mod config;
pub mod conntrack;
pub mod dns;
pub mod endpoints;
pub mod events;
pub mod firewall;
mod generations;
pub mod lb;
pub mod metrics;
pub mod overlay;
pub mod programs;
pub mod services;
pub mod sys;
pub mod write;

pub use generations::Attachment;

/// Every part of the loaded datapath.
pub struct Datapath {
    pub programs: programs::Programs,
    pub endpoints: endpoints::Endpoints,
    pub overlay: overlay::Overlay,
    pub services: services::Services,
    pub conntrack: Arc<conntrack::Conntrack>,
    pub lb: lb::LoadBalancer,
    pub dns: dns::DnsRedirect,
    pub dns_names: dns::DnsNames,
    pub events: events::Events,
    pub metrics: metrics::Metrics,
    pub config: config::ConfigMap,
    pub firewall: firewall::Firewall,
}

impl Datapath {
    /// Loads the programs (reusing maps pinned under `bpffs`) and hands each
    /// map to its owner.
    pub fn load(bpffs: &Path, ct_timeouts: conntrack::Timeouts) -> Result<Self> {
        let mut ebpf = programs::load(bpffs)?;
        Ok(Datapath {
            endpoints: endpoints::Endpoints::take(&mut ebpf)?,
            overlay: overlay::Overlay::take(&mut ebpf)?,
            services: services::Services::take(&mut ebpf)?,
            conntrack: Arc::new(conntrack::Conntrack::take(&mut ebpf, ct_timeouts)?),
            lb: lb::LoadBalancer::take(&mut ebpf)?,
            dns: dns::DnsRedirect::take(&mut ebpf)?,
            dns_names: dns::DnsNames::take(&mut ebpf)?,
            events: events::Events::take(&mut ebpf)?,
            metrics: metrics::Metrics::take(&mut ebpf)?,
            config: config::ConfigMap::take(&mut ebpf)?,
            firewall: firewall::Firewall::take(&mut ebpf)?,
            programs: programs::Programs::new(ebpf, bpffs),
        })
    }
}

/// Takes map `name` out of the loaded object as `T`.
pub(crate) fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| Error::BpfObject(format!("map {name} is missing from the object")))?;
    T::try_from(map).map_err(|source| Error::Map { what: name.to_string(), source })
}

/// An error of map work described by `what`.
pub(crate) fn map_err(what: impl std::fmt::Display) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { what: what.to_string(), source }
}

/// A removal whose key was already gone is not an error.
pub(crate) fn removed(res: std::result::Result<(), MapError>) -> std::result::Result<(), MapError> {
    match res {
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

/// A std mutex whose poisoning (a panic while held) is not our concern:
/// the kernel map behind it is always consistent.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
