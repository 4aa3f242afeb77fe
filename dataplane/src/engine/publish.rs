//! Publishing ports. Planned: `-p`/`-P` expanded into claims, refused
//! up front when another sandbox holds a port or the daemon's open-file
//! limit would be passed (`plan_ports`, pure). Applied: each port reserved
//! with a bound socket, so no host process can take it, ranges taking their
//! first free port (`reserve_ports`), then programmed into the BPF
//! services map through the sandbox's publishing endpoint.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::fd::OwnedFd;

use dataplane_common::{Backend, Backend6, PROTO_TCP, PROTO_UDP, ServiceKey, ServiceKey6};

use crate::datapath::services::{Published, PublishedKeys};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, socket, sockopt};

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

/// Holds the addresses a binding publishes on with one bound (not
/// listening) socket: its IPv4 address; its IPv6 one (`IPV6_V6ONLY`); or,
/// for a port on every address of both families, `[::]` as a dual-stack
/// socket, which holds 0.0.0.0 too (an IPv4 socket where the host has no
/// IPv6 sockets).
fn reserve(b: &PortBinding) -> Result<OwnedFd> {
    match (b.host_v4(), b.host_v6()) {
        (Some(ip), Some(ip6)) => match reserve_on(b, SocketAddr::from((ip6, b.host_port)), false) {
            Err(Error::Sys { source: nix::Error::EAFNOSUPPORT, .. }) => {
                reserve_on(b, SocketAddr::from((ip, b.host_port)), true)
            }
            other => other,
        },
        (_, Some(ip6)) => reserve_on(b, SocketAddr::from((ip6, b.host_port)), true),
        (_, None) => reserve_on(b, SocketAddr::from((b.host_ip, b.host_port)), true),
    }
}

/// One reservation socket, bound to `addr` (an IPv6 one dual-stack unless
/// `v6_only`).
fn reserve_on(b: &PortBinding, addr: SocketAddr, v6_only: bool) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let ty = if b.proto == Proto::Udp { SockType::Datagram } else { SockType::Stream };
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::sys("socket", "port reservation", e))?;
    let bound = match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => nix::sys::socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6_only)
            .and_then(|()| bind(fd.as_raw_fd(), &SockaddrIn6::from(a))),
    };
    bound.map_err(|e| {
        let shown = if v6_only { addr.to_string() } else { format!("0.0.0.0:{0} and [::]:{0}", addr.port()) };
        Error::Conflict(format!(
            "cannot publish {shown}/{}: {} on the host",
            b.proto,
            match e {
                nix::Error::EADDRINUSE => "the port is already in use".to_string(),
                nix::Error::EADDRNOTAVAIL => "the address is not one of the host's".to_string(),
                other => other.to_string(),
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

/// Whether two bindings hold a common host address and port: per family,
/// the same address or either one's wildcard.
fn overlaps(a: &PortBinding, b: &PortBinding) -> bool {
    let v4 = match (a.host_v4(), b.host_v4()) {
        (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        _ => false,
    };
    let v6 = match (a.host_v6(), b.host_v6()) {
        (Some(x), Some(y)) => x == y || x.is_unspecified() || y.is_unspecified(),
        _ => false,
    };
    a.proto == b.proto && a.host_port == b.host_port && (v4 || v6)
}

/// One host port to claim for one container port: exactly the first port
/// of `host_ports`, or (`any`) the first free one of them.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PortClaim {
    pub host_ip: Ipv4Addr,
    pub host_ports: RangeInclusive<u16>,
    pub any: bool,
    pub container_port: u16,
    pub proto: Proto,
    /// Published on `[::1]` (served as 127.0.0.1 by the socket hooks).
    pub v6_loopback: bool,
    /// An IPv4 host address was named: not published over IPv6.
    pub v4_only: bool,
    /// An IPv6 host address was named: published there only.
    pub host_ip6: Option<Ipv6Addr>,
}

impl PortClaim {
    pub fn binding(&self, host_port: u16) -> PortBinding {
        PortBinding {
            host_ip: self.host_ip,
            host_port,
            container_port: self.container_port,
            proto: self.proto,
            v6_loopback: self.v6_loopback,
            v4_only: self.v4_only,
            host_ip6: self.host_ip6,
        }
    }
}

/// A sandbox's publications, planned: what to claim, and what other
/// sandboxes hold already.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct PortPlan {
    pub claims: Vec<PortClaim>,
    pub taken: Vec<PortBinding>,
    /// The runtime holds the host ports itself (Podman's conmon listens
    /// on them): they are claimed against other sandboxes only, with no
    /// socket of ours, which would keep the runtime from binding them.
    pub runtime_holds: bool,
}

/// What the host allows when publishing: its ephemeral port range, and
/// (open-file limit, reservations that still fit under it).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct PortLimits {
    pub ephemeral: (u16, u16),
    pub budget: Option<(u64, usize)>,
}

impl PortLimits {
    /// Read from the host, once per request.
    pub fn of_host() -> Self {
        PortLimits { ephemeral: ephemeral_range(), budget: reservation_budget() }
    }
}

/// Expands `-p`/`-P` into claims and refuses what cannot be: unsupported
/// protocols and addresses, ports other sandboxes hold, more ports than
/// the daemon's open-file limit allows. No side effects.
pub(super) fn plan_ports(state: &State, sb: &Sandbox, limits: &PortLimits) -> Result<PortPlan> {
    let taken: Vec<PortBinding> =
        state.sandboxes.iter().filter(|s| s.id != sb.id).flat_map(|s| s.bindings.iter().cloned()).collect();
    let (eph_lo, eph_hi) = limits.ephemeral;
    let mut claims: Vec<PortClaim> = Vec::new();
    let add = |c: PortClaim, claims: &mut Vec<PortClaim>| -> Result<()> {
        if !c.any {
            let b = c.binding(*c.host_ports.start());
            let fixed = claims.iter().filter(|o| !o.any).map(|o| o.binding(*o.host_ports.start()));
            if taken.iter().cloned().chain(fixed).any(|t| overlaps(&t, &b)) {
                return Err(already_allocated(&b));
            }
        }
        claims.push(c);
        Ok(())
    };
    for spec in &sb.ports {
        proto_number(spec.proto)?;
        // No address: 0.0.0.0 and `::`. An IPv4 address: IPv4 only. An
        // IPv6 one (`::` every IPv6 address): IPv6 only. `::1` is served
        // through the socket hooks' ::1 → 127.0.0.1 mapping.
        let (host_ip, v6_loopback, v4_only, host_ip6) = match spec.host_ip {
            None => (Ipv4Addr::UNSPECIFIED, false, false, None),
            Some(IpAddr::V4(ip)) => (ip, false, true, None),
            Some(IpAddr::V6(ip)) if ip.is_loopback() => (Ipv4Addr::LOCALHOST, true, false, None),
            Some(IpAddr::V6(ip)) if ip.to_ipv4_mapped().is_some() || ip.is_multicast() => {
                return Err(Error::invalid("host address", ip, "not a unicast IPv6 address of the host"));
            }
            Some(IpAddr::V6(ip)) => (Ipv4Addr::UNSPECIFIED, false, false, Some(ip)),
        };
        let claim = |host_ports: RangeInclusive<u16>, any: bool, container_port: u16| PortClaim {
            host_ip,
            host_ports,
            any,
            container_port,
            proto: spec.proto,
            v6_loopback,
            v4_only,
            host_ip6,
        };
        let cports = spec.container_port_start..=spec.container_port_end;
        let ncont = spec.container_port_end - spec.container_port_start;
        let nhost = spec.host_port_end.saturating_sub(spec.host_port_start);
        if spec.host_port_start == 0 {
            for cp in cports {
                add(claim(eph_lo..=eph_hi, true, cp), &mut claims)?;
            }
        } else if ncont == nhost {
            for (i, cp) in cports.enumerate() {
                let hp = spec.host_port_start + i as u16;
                add(claim(hp..=hp, false, cp), &mut claims)?;
            }
        } else {
            // One container port, any free port of the host range.
            let range = spec.host_port_start..=spec.host_port_end;
            add(claim(range, true, spec.container_port_start), &mut claims)?;
        }
    }
    if sb.publish_all {
        for e in &sb.expose {
            proto_number(e.proto)?;
            if claims.iter().any(|c| c.container_port == e.port && c.proto == e.proto) {
                continue;
            }
            let c = PortClaim {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_ports: eph_lo..=eph_hi,
                any: true,
                container_port: e.port,
                proto: e.proto,
                v6_loopback: false,
                v4_only: false,
                host_ip6: None,
            };
            add(c, &mut claims)?;
        }
    }
    // Every published port holds a socket of the daemon.
    if let Some((limit, free)) = limits.budget
        && claims.len() > free
    {
        return Err(Error::Conflict(format!(
            "cannot publish more than {free} more ports: each holds an open file of the daemon, whose limit is {limit} ({FD_HEADROOM} kept for its own work); publish fewer ports or raise the daemon's LimitNOFILE"
        )));
    }
    Ok(PortPlan { claims, taken, runtime_holds: false })
}

fn already_allocated(b: &PortBinding) -> Error {
    Error::Conflict(format!("Bind for {} failed: port is already allocated", host_addr(b)))
}

/// `ip:port` as Docker prints it (`[ip6]:port` for IPv6).
fn host_addr(b: &PortBinding) -> String {
    match b.host_ip6 {
        Some(ip6) => format!("[{ip6}]:{}", b.host_port),
        None => format!("{}:{}", b.host_ip, b.host_port),
    }
}

/// Claims the planned ports on the host: a bound socket holds each (so no
/// host process can take it); a range gives its first port that no
/// sandbox holds and the host lets us bind. The sockets are the
/// reservation: dropping them (on any later failure) releases every port.
pub(super) fn reserve_ports(plan: &PortPlan) -> Result<(Vec<PortBinding>, Vec<OwnedFd>)> {
    let mut out: Vec<PortBinding> = Vec::new();
    let mut fds = Vec::new();
    for c in &plan.claims {
        let held = |b: &PortBinding, out: &[PortBinding]| {
            plan.taken.iter().chain(out.iter()).any(|t| overlaps(t, b))
        };
        if !c.any {
            let b = c.binding(*c.host_ports.start());
            if held(&b, &out) {
                return Err(already_allocated(&b));
            }
            if !plan.runtime_holds {
                fds.push(reserve(&b)?);
            }
            out.push(b);
            continue;
        }
        let found = c.host_ports.clone().map(|hp| c.binding(hp)).find_map(|b| {
            if held(&b, &out) {
                return None;
            }
            if plan.runtime_holds {
                return Some((b, None));
            }
            reserve(&b).ok().map(|fd| (b, Some(fd)))
        });
        let Some((b, fd)) = found else {
            return Err(Error::Conflict(format!(
                "no free host port for {}/{} on {}",
                c.container_port,
                c.proto,
                c.host_ip6.map_or_else(|| c.host_ip.to_string(), |ip6| ip6.to_string())
            )));
        };
        fds.extend(fd);
        out.push(b);
    }
    Ok((out, fds))
}

impl Engine {
    /// BPF service entries for `bindings`, leading to endpoint `ep`: over
    /// IPv4, and over IPv6 to its IPv6 address — or, when it has none, to
    /// its IPv4 address v4-mapped, which the datapath serves by NAT46.
    pub(super) async fn service_entries(&self, bindings: &[PortBinding], ep: &Endpoint) -> Result<Published> {
        let Some(host_if) = &ep.host_ifname else { return Ok(Published::default()) };
        let ifindex = self.host.require_index(host_if).await?;
        let v4 = bindings
            .iter()
            .filter(|b| b.host_v4().is_some())
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
            .collect::<Result<_>>()?;
        let addr6 = ep.ip6.unwrap_or_else(|| ep.ip.to_ipv6_mapped()).octets();
        let v6 = bindings
            .iter()
            .filter_map(|b| service_key6(b).map(|k| (k, b)))
            .map(|(k, b)| {
                let backend = Backend6 {
                    addr: addr6,
                    port: b.container_port.to_be(),
                    _pad: 0,
                    ifindex,
                    mac: ep.mac,
                    _pad2: [0; 2],
                };
                (k, backend)
            })
            .collect();
        Ok(Published { v4, v6 })
    }

    /// Removes the sandbox's services, releases its ports and forgets its
    /// connections.
    /// Every step is tried; each failure is returned.
    pub(super) fn unpublish(&self, sb: &Sandbox, addrs: &[IpAddr]) -> Vec<Error> {
        let mut errors = self.dp.services.remove(&service_keys(&sb.bindings));
        errors.extend(self.dp.conntrack.flush_addrs(addrs).err());
        self.reservations.lock().unwrap_or_else(|p| p.into_inner()).remove(&sb.id);
        errors
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
        if self.cluster.is_some() {
            // One VXLAN device for every overlay network (the VNI is per packet).
            let idx = match self.host.link_index(VXLAN_DEVICE).await? {
                Some(i) => i,
                None => self.host.create_vxlan_external(VXLAN_DEVICE, VXLAN_PORT).await?,
            };
            self.dp.programs.attach_overlay(VXLAN_DEVICE)?;
            cfg.vxlan_ifindex = idx;
        }
        self.dp.config.set(cfg)?;
        if let Some(up) = uplink {
            self.dp.programs.attach_uplink(up)?;
            // XDP where the driver runs it natively; tcx judges the same
            // rules either way, so a driver without it costs only speed.
            if self.xdp {
                match self.dp.programs.attach_uplink_xdp(up) {
                    Ok(()) => {
                        tracing::info!(uplink = %up, "firewall denies dropped by XDP in the uplink's driver")
                    }
                    Err(e) => {
                        tracing::warn!(uplink = %up, error = %e, "no native XDP on the uplink: the firewall runs in tcx only")
                    }
                }
            } else {
                self.dp.programs.detach_uplink_xdp(up)?;
            }
        }
        Ok(())
    }

    /// Tells BPF the host's own addresses, where ports published on 0.0.0.0
    /// answer: the uplink's, and every bridge network's gateway.
    pub(super) async fn refresh_host_ips(&self, state: &State) -> Result<()> {
        let (mut ips, mut ips6) = (Vec::new(), Vec::new());
        if let Some(up) = &self.uplink
            && let Some(idx) = self.host.link_index(up).await?
        {
            ips.extend(self.host.ipv4_addresses(idx).await?.into_iter().map(|ip| (ip, idx)));
            ips6.extend(
                self.host
                    .ipv6_addresses(idx)
                    .await?
                    .into_iter()
                    .filter(|ip| !ip.is_unicast_link_local())
                    .map(|ip| (ip, idx)),
            );
        }
        // NAT66 masquerades to the uplink's first global IPv6 address.
        self.dp.config.set_uplink6(ips6.first().map(|(ip, _)| *ip))?;
        for n in state.networks.iter().filter(|n| n.is_bridge()) {
            if let Some(dev) = &n.device
                && let Some(idx) = self.host.link_index(dev).await?
            {
                ips.extend(n.ipam.as_ref().map(|i| (i.gateway, idx)));
                ips6.extend(n.ipam6.as_ref().map(|i| (i.gateway, idx)));
            }
        }
        self.dp.services.set_host_ips(&ips, &ips6)
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
            None => Published::default(),
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
        let mut desired = Published::default();
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
        let keep: HashSet<ServiceKey> = desired.v4.iter().map(|(k, _)| *k).collect();
        let keep6: HashSet<ServiceKey6> = desired.v6.iter().map(|(k, _)| *k).collect();
        let now = self.dp.services.keys();
        let stale = PublishedKeys {
            v4: now.v4.into_iter().filter(|k| !keep.contains(k)).collect(),
            v6: now.v6.into_iter().filter(|k| !keep6.contains(k)).collect(),
        };
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

/// The IPv6 services-map key of a binding, if it is published over IPv6
/// (on one address, or on every one: `::`).
fn service_key6(b: &PortBinding) -> Option<ServiceKey6> {
    Some(ServiceKey6 {
        addr: b.host_v6()?.octets(),
        port: b.host_port.to_be(),
        proto: proto_number(b.proto).ok()?,
        _pad: 0,
    })
}

/// The services-map keys of `bindings`, of both families.
pub(super) fn service_keys(bindings: &[PortBinding]) -> PublishedKeys {
    PublishedKeys {
        v4: bindings.iter().filter(|b| b.host_v4().is_some()).filter_map(|b| service_key(b).ok()).collect(),
        v6: bindings.iter().filter_map(service_key6).collect(),
    }
}

/// The keys of `entries`.
pub(super) fn keys_of(entries: &Published) -> PublishedKeys {
    PublishedKeys {
        v4: entries.v4.iter().map(|(k, _)| *k).collect(),
        v6: entries.v6.iter().map(|(k, _)| *k).collect(),
    }
}
