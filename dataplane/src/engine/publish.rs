//! Publishing ports: expanding `-p`/`-P` into bindings, choosing free host
//! ports, reserving them with bound sockets (so no host process can take
//! them), and programming them into the BPF services map, all or nothing.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use dataplane_common::{Backend, PROTO_TCP, PROTO_UDP, ServiceKey};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};

use super::*;
use crate::error::{Error, Result};

/// Ports egress SNAT picks from when a sandbox's own source port is taken:
/// above the usual host ephemeral range, to keep clear of host sockets.
const SNAT_PORTS: (u16, u16) = (61000, 65535);

/// Docker's fallback when the kernel's range cannot be read.
const EPHEMERAL_FALLBACK: (u16, u16) = (32768, 60999);

/// The IP protocol number the datapath keys published ports by.
fn proto_number(proto: Proto) -> Result<u8> {
    match proto {
        Proto::Tcp => Ok(PROTO_TCP),
        Proto::Udp => Ok(PROTO_UDP),
        Proto::Sctp => Err(Error::Unsupported(if kernel_has_sctp() {
            "publishing SCTP ports is not supported yet (its CRC32c checksum cannot be updated incrementally in BPF)"
                .into()
        } else {
            "publishing SCTP ports is not possible: this kernel has no SCTP support".into()
        })),
    }
}

/// Whether the kernel can make SCTP sockets (asked, not assumed).
fn kernel_has_sctp() -> bool {
    socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        nix::sys::socket::SockProtocol::Sctp,
    )
    .is_ok()
}

/// The host's ephemeral port range (net.ipv4.ip_local_port_range).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
            Some((it.next()?, it.next()?))
        })
        .unwrap_or(EPHEMERAL_FALLBACK)
}

/// Holds `ip:port/proto` with a bound (not listening) socket.
fn reserve(b: &PortBinding) -> Result<OwnedFd> {
    let ty = if b.proto == Proto::Udp { SockType::Datagram } else { SockType::Stream };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::sys("socket", "port reservation", e))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(b.host_ip, b.host_port));
    use std::os::fd::AsRawFd;
    bind(fd.as_raw_fd(), &addr).map_err(|e| {
        Error::Conflict(format!(
            "cannot publish {}:{}/{}: {} on the host",
            b.host_ip,
            b.host_port,
            b.proto,
            if e == nix::Error::EADDRINUSE {
                "the port is already in use".to_string()
            } else {
                e.to_string()
            }
        ))
    })?;
    Ok(fd)
}

/// Open files the daemon keeps for its own work (store, sockets, namespaces,
/// netlink, BPF) beyond port reservations.
const FD_HEADROOM: usize = 256;

/// (open-file limit, reservations that still fit under it), read once per
/// request: every reserved port holds a socket.
fn reservation_budget() -> Option<(u64, usize)> {
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some((soft, soft.saturating_sub(open).saturating_sub(FD_HEADROOM as u64) as usize))
}

fn overlaps(a: &PortBinding, b: &PortBinding) -> bool {
    a.proto == b.proto
        && a.host_port == b.host_port
        && (a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified())
}

impl Engine {
    /// Expands and allocates the sandbox's publications, reserving each host
    /// port as it goes. On error every reservation made here is released.
    pub(super) fn plan_bindings(
        &self,
        state: &State,
        sb: &Sandbox,
    ) -> Result<(Vec<PortBinding>, Vec<OwnedFd>)> {
        let taken: Vec<PortBinding> = state
            .sandboxes
            .iter()
            .filter(|s| s.id != sb.id)
            .flat_map(|s| s.bindings.iter().cloned())
            .collect();
        let mut out: Vec<PortBinding> = Vec::new();
        let mut fds = Vec::new();
        let (eph_lo, eph_hi) = ephemeral_range();
        let budget = reservation_budget();
        // Claims one binding: conflict check against other sandboxes and this
        // one, then the host itself (by binding).
        let claim = |b: PortBinding, out: &mut Vec<PortBinding>, fds: &mut Vec<OwnedFd>| -> Result<()> {
            if let Some((limit, free)) = budget
                && fds.len() >= free
            {
                return Err(Error::Conflict(format!(
                    "cannot publish more than {free} more ports: each holds an open file of the daemon, whose limit is {limit} ({FD_HEADROOM} kept for its own work); publish fewer ports or raise the daemon's LimitNOFILE"
                )));
            }
            if taken.iter().chain(out.iter()).any(|t| overlaps(t, &b)) {
                return Err(Error::Conflict(format!(
                    "Bind for {}:{} failed: port is already allocated",
                    b.host_ip, b.host_port
                )));
            }
            fds.push(reserve(&b)?);
            out.push(b);
            Ok(())
        };
        // Tries each candidate host port until one is free.
        let claim_any = |ip: Ipv4Addr,
                         candidates: &mut dyn Iterator<Item = u16>,
                         cport: u16,
                         proto: Proto,
                         out: &mut Vec<PortBinding>,
                         fds: &mut Vec<OwnedFd>|
         -> Result<()> {
            for hp in candidates {
                let b = PortBinding {
                    host_ip: ip,
                    host_port: hp,
                    container_port: cport,
                    proto,
                    v6_loopback: false,
                };
                if claim(b, out, fds).is_ok() {
                    return Ok(());
                }
            }
            Err(Error::Conflict(format!("no free host port for {cport}/{proto} on {ip}")))
        };
        for spec in &sb.ports {
            proto_number(spec.proto)?;
            // IPv6 host addresses: `::` is every address (as 0.0.0.0 is);
            // `::1` is served through the socket hooks' ::1 → 127.0.0.1 mapping.
            let (ip, v6_loopback): (Ipv4Addr, bool) = match spec.host_ip {
                None => (Ipv4Addr::UNSPECIFIED, false),
                Some(IpAddr::V4(ip)) => (ip, false),
                Some(IpAddr::V6(ip)) if ip.is_unspecified() => (Ipv4Addr::UNSPECIFIED, false),
                Some(IpAddr::V6(ip)) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, true),
                Some(IpAddr::V6(other)) => {
                    return Err(Error::Unsupported(format!(
                        "publishing on IPv6 host address {other} is not supported yet (only :: and ::1)"
                    )));
                }
            };
            let first_new = out.len();
            let cports = spec.container_port_start..=spec.container_port_end;
            let ncont = spec.container_port_end - spec.container_port_start;
            let nhost = spec.host_port_end.saturating_sub(spec.host_port_start);
            if spec.host_port_start == 0 {
                for cp in cports {
                    claim_any(ip, &mut (eph_lo..=eph_hi), cp, spec.proto, &mut out, &mut fds)?;
                }
            } else if ncont == nhost {
                for (i, cp) in cports.enumerate() {
                    let b = PortBinding {
                        host_ip: ip,
                        host_port: spec.host_port_start + i as u16,
                        container_port: cp,
                        proto: spec.proto,
                        v6_loopback: false,
                    };
                    claim(b, &mut out, &mut fds)?;
                }
            } else {
                // One container port, any free port of the host range.
                let mut range = spec.host_port_start..=spec.host_port_end;
                claim_any(ip, &mut range, spec.container_port_start, spec.proto, &mut out, &mut fds)?;
            }
            for b in &mut out[first_new..] {
                b.v6_loopback = v6_loopback;
            }
        }
        if sb.publish_all {
            for e in &sb.expose {
                proto_number(e.proto)?;
                if out.iter().any(|b| b.container_port == e.port && b.proto == e.proto) {
                    continue;
                }
                claim_any(
                    Ipv4Addr::UNSPECIFIED,
                    &mut (eph_lo..=eph_hi),
                    e.port,
                    e.proto,
                    &mut out,
                    &mut fds,
                )?;
            }
        }
        Ok((out, fds))
    }

    /// BPF service entries for `bindings`, leading to endpoint `ep`.
    pub(super) async fn service_entries(
        &self,
        bindings: &[PortBinding],
        ep: &Endpoint,
    ) -> Result<Vec<(ServiceKey, Backend)>> {
        let Some(host_if) = &ep.host_ifname else { return Ok(Vec::new()) };
        let ifindex = self.host.require_index(host_if).await?;
        bindings
            .iter()
            .map(|b| {
                Ok((
                    service_key(b)?,
                    Backend {
                        addr: ep.ip.octets(),
                        port: b.container_port.to_be(),
                        _pad: 0,
                        ifindex,
                        mac: ep.mac,
                        _pad2: [0; 2],
                    },
                ))
            })
            .collect()
    }

    /// Allocates, reserves and programs the sandbox's published ports
    /// through its first bridge endpoint. Returns warnings (ports that are
    /// stored but not reachable). All or nothing.
    pub(super) async fn publish(
        &self,
        state: &State,
        sb: &mut Sandbox,
        ep: Option<&Endpoint>,
        net: Option<&Network>,
    ) -> Result<Vec<String>> {
        if sb.ports.is_empty() && !sb.publish_all {
            return Ok(Vec::new());
        }
        let mut warnings = Vec::new();
        let (bindings, fds) = self.plan_bindings(state, sb)?;
        match (ep, net) {
            (Some(ep), Some(net)) if net.is_bridge() && !net.internal => {
                let entries = self.service_entries(&bindings, ep).await?;
                self.dp.services.set(&entries)?;
            }
            (_, Some(net)) if net.internal => {
                warnings.push(format!("ports are not published: network {} is --internal", net.name))
            }
            _ => warnings.push("ports are not published: the sandbox has no bridge network".into()),
        }
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).insert(sb.id.clone(), fds);
        sb.bindings = bindings;
        Ok(warnings)
    }

    /// Removes the sandbox's services, releases its ports and forgets its
    /// connections.
    pub(super) fn unpublish(&self, sb: &Sandbox, addrs: &[Ipv4Addr]) {
        let mut errors = self.dp.services.remove(&service_keys(&sb.bindings));
        for a in addrs {
            errors.extend(self.dp.conntrack.flush_addr(*a).err());
        }
        for e in errors {
            tracing::warn!(sandbox = %sb.name, error = %e, "unpublishing");
        }
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).remove(&sb.id);
    }

    /// Writes the datapath config (uplink for egress SNAT, the daemon's
    /// netns cookie for the socket hooks) and attaches the uplink program.
    pub(super) async fn program_config(&self) -> Result<()> {
        let mut cfg = dataplane_common::Config {
            netns_cookie: crate::sys::netns::current_cookie()?,
            ..Default::default()
        };
        let uplink = match &self.uplink {
            Some(up) => {
                let idx = self.host.require_index(up).await?;
                if let Some(ip) = self.host.ipv4_addresses(idx).await?.first() {
                    cfg.uplink_ifindex = idx;
                    cfg.uplink_ip = ip.octets();
                    cfg.snat_port_min = SNAT_PORTS.0;
                    cfg.snat_port_max = SNAT_PORTS.1;
                }
                Some(up)
            }
            None => None,
        };
        self.dp.config.set(cfg)?;
        if let Some(up) = uplink {
            self.dp.programs.attach_uplink(up)?;
        }
        Ok(())
    }

    /// Tells BPF the host's own addresses, where ports published on 0.0.0.0
    /// answer: the uplink's, and every bridge network's gateway.
    pub(super) async fn refresh_host_ips(&self, state: &State) -> Result<()> {
        let mut ips = Vec::new();
        if let Some(up) = &self.uplink
            && let Some(idx) = self.host.link_index(up).await?
        {
            ips.extend(self.host.ipv4_addresses(idx).await?.into_iter().map(|ip| (ip, idx)));
        }
        for n in state.networks.iter().filter(|n| n.is_bridge()) {
            if let (Some(ipam), Some(dev)) = (&n.ipam, &n.device)
                && let Some(idx) = self.host.link_index(dev).await?
            {
                ips.push((ipam.gateway, idx));
            }
        }
        self.dp.services.set_host_ips(&ips)
    }

    /// Points the sandbox's published ports at its publishing endpoint
    /// (Docker's gateway endpoint) as the store now has it: after a
    /// connect or disconnect the ports follow the endpoint, and with no
    /// such endpoint they answer nowhere (their host ports stay reserved).
    pub(super) async fn sync_publications(&self, state: &State, sb: &Sandbox) -> Result<()> {
        if sb.bindings.is_empty() {
            return Ok(());
        }
        let entries = match state.publishing_endpoint(&sb.id) {
            Some(ep) => self.service_entries(&sb.bindings, ep).await?,
            None => Vec::new(),
        };
        if entries.is_empty() {
            match self.dp.services.remove(&service_keys(&sb.bindings)).into_iter().next() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        } else {
            // Overwrites in place: no moment without the port.
            self.dp.services.set(&entries)
        }
    }

    /// After a restart: reserve every stored binding again and program the
    /// services map to match the store exactly.
    pub(super) async fn reconcile_publications(&self, state: &State) -> Result<()> {
        let mut desired = Vec::new();
        for sb in state.sandboxes.iter().filter(|s| !s.bindings.is_empty()) {
            let mut fds = Vec::new();
            for b in &sb.bindings {
                match reserve(b) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => tracing::warn!(sandbox = %sb.name, error = %e, "port reservation"),
                }
            }
            self.reservations.lock().unwrap_or_else(|p| p.into_inner()).insert(sb.id.clone(), fds);
            if let Some(ep) = state.publishing_endpoint(&sb.id) {
                desired.extend(self.service_entries(&sb.bindings, ep).await?);
            }
        }
        let keep: HashSet<ServiceKey> = desired.iter().map(|(k, _)| *k).collect();
        let stale: Vec<ServiceKey> =
            self.dp.services.keys().into_iter().filter(|k| !keep.contains(k)).collect();
        for e in self.dp.services.remove(&stale) {
            tracing::warn!(error = %e, "reconcile: removing a stale published port");
        }
        self.dp.services.set(&desired)
    }
}

/// The services-map key of a binding.
fn service_key(b: &PortBinding) -> Result<ServiceKey> {
    Ok(ServiceKey {
        addr: b.host_ip.octets(),
        port: b.host_port.to_be(),
        proto: proto_number(b.proto)?,
        _pad: 0,
    })
}

/// The services-map keys of `bindings`.
fn service_keys(bindings: &[PortBinding]) -> Vec<ServiceKey> {
    bindings.iter().filter_map(|b| service_key(b).ok()).collect()
}
