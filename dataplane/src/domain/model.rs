//! Domain types kept in the store: networks, sandboxes, endpoints.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

pub use super::options::{Driver, DriverOptions, Proto};

/// MTU of overlay sandboxes: a 1500-byte underlay less VXLAN's 50 bytes.
pub const OVERLAY_MTU: u32 = 1450;

/// A network: driver + IPAM config + options.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: Driver,
    /// RFC 3339 creation time.
    pub created: String,
    /// Small numeric id used in BPF maps (unique per daemon).
    pub num: u32,
    pub ipam: Option<Ipam>,
    /// The IPv6 config of a dual-stack network (`--ipv6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam6: Option<super::ipam6::Ipam6>,
    pub internal: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Kernel device: the bridge for `bridge`, the parent for `macvlan`.
    pub device: Option<String>,
    /// Created by the daemon itself (bridge, host, none): cannot be removed.
    pub predefined: bool,
    /// Virtual IPs of the network's aliases (`lb=vip` networks), taken from its subnet.
    #[serde(default)]
    pub vips: BTreeMap<String, Ipv4Addr>,
    /// IPv6 virtual IPs of the same aliases, on a dual-stack network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vips6: BTreeMap<String, std::net::Ipv6Addr>,
    /// Who asked for it: None for our own API, `Docker` for a network
    /// dockerd made through the plugin (it has Docker's network ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A container runtime that made a record through its plugin protocol:
/// the record is kept in its name and removed only by it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Owner {
    Docker,
    /// A CNI runtime (Podman, containerd, CRI-O) through `dataplane-cni`.
    Cni,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Owner::Docker => "docker",
            Owner::Cni => "cni",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipam {
    pub subnet: Ipv4Network,
    pub ip_range: Option<Ipv4Network>,
    pub gateway: Ipv4Addr,
    pub aux: BTreeMap<String, Ipv4Addr>,
}

/// How a sandbox is networked.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum NetworkMode {
    /// Attached to networks through endpoints (bridge/macvlan networks).
    #[default]
    Networks,
    Host,
    None,
    /// Shares the namespace of another sandbox (its id).
    Container(String),
}

/// A published-port request as given with `-p`, parsed (see [`crate::domain::ports`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortSpec {
    /// The host address (IPv4 or IPv6); None: every address.
    #[serde(with = "empty_is_none")]
    pub host_ip: Option<std::net::IpAddr>,
    /// 0: any free port.
    pub host_port_start: u16,
    pub host_port_end: u16,
    pub container_port_start: u16,
    pub container_port_end: u16,
    pub proto: Proto,
}

/// A host address stored as text, "" for none (the record shape of earlier versions).
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ip: &Option<std::net::IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&ip.map(|i| i.to_string()).unwrap_or_default())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::IpAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() { Ok(None) } else { text.parse().map(Some).map_err(serde::de::Error::custom) }
    }
}

/// A container port exposed with `--expose` (Docker's `80/tcp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Exposed {
    pub port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for Exposed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

impl Serialize for Exposed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Exposed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (port, proto) = text.split_once('/').unwrap_or((&text, "tcp"));
        Ok(Exposed {
            port: port.parse().map_err(serde::de::Error::custom)?,
            proto: Proto::parse("exposed port", &text, proto).map_err(serde::de::Error::custom)?,
        })
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum SandboxState {
    #[default]
    Created,
    Running,
    Exited(i32),
}

/// Whether a sandbox in state `effective` is live: running, or a bare
/// namespace sandbox with no command (it lives as long as it exists).
pub fn live_in(sb: &Sandbox, effective: &SandboxState) -> bool {
    match effective {
        SandboxState::Running => true,
        SandboxState::Created => sb.cmd.is_empty(),
        SandboxState::Exited(_) => false,
    }
}

/// A sandbox (what the CLI calls a container): a network namespace with
/// optionally a process started in it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub hostname: String,
    pub created: String,
    pub mode: NetworkMode,
    /// Path of the network-namespace file (SandboxKey).
    pub netns: String,
    /// Whether the daemon created the namespace (and so deletes it on `rm`).
    pub owns_netns: bool,
    pub cmd: Vec<String>,
    pub state: SandboxState,
    pub pid: Option<u32>,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to tell a reused PID.
    pub pid_start: Option<u64>,
    pub ports: Vec<PortSpec>,
    pub expose: Vec<Exposed>,
    pub publish_all: bool,
    pub auto_remove: bool,
    /// Published ports as allocated (host port chosen, ranges expanded).
    #[serde(default)]
    pub bindings: Vec<PortBinding>,
    /// `KEY=VALUE` the user passed (`-e`); the process gets these on top of
    /// PATH, HOSTNAME and HOME, and nothing of the daemon's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// `--user`: USER[:GROUP] or UID[:GID] the process runs as (None: root).
    #[serde(default)]
    pub user: Option<String>,
    /// Output log limits (None: the daemon's defaults).
    #[serde(default)]
    pub log: Option<crate::sys::logs::LogLimits>,
    /// Set for the endpoint of a runtime's container (one record per
    /// runtime endpoint, its id the runtime's endpoint ID): no process of
    /// ours, its namespace the runtime's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The runtime's container ID (`CNI_CONTAINERID`) of a CNI sandbox:
    /// one record per container, one endpoint per attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
    /// `--label KEY=VALUE` (Docker's `Config.Labels`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// When its process last started and last ended (RFC 3339): `ps` says
    /// "Up 3 minutes" and "Exited (0) 2 minutes ago" from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `-t`: the process runs on a pseudo-terminal.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// `-i`: its stdin stays open for attaching clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_stdin: bool,
    /// `--dns`: the resolvers its resolv.conf names (on the default
    /// bridge) or its embedded resolver forwards to (user networks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::IpAddr>,
    /// `--dns-search`, `--dns-option`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// `--add-host`, `host-gateway` resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<crate::domain::etc::ExtraHost>,
    /// `--link NAME[:ALIAS]`: the linked sandbox's id and the alias (its name when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(String, String)>,
    /// `-w`: the process's working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `-t`: the terminal's size at start (rows, columns), the client's when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<(u16, u16)>,
}

/// One published port, resolved: host address and port → container port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortBinding {
    /// IPv4 host address; 0.0.0.0 means every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    /// tcp or udp.
    pub proto: Proto,
    /// Published as `[::1]` (kept as 127.0.0.1 in the datapath, where the
    /// socket hooks map ::1).
    #[serde(default)]
    pub v6_loopback: bool,
    /// Published on an IPv4 address the user named (`-p 0.0.0.0:8080:80`):
    /// not on IPv6. Without a host address a port is published on
    /// `0.0.0.0` and `[::]` (Docker 27's rule), the latter where the
    /// publishing endpoint has an IPv6 address.
    #[serde(default)]
    pub v4_only: bool,
    /// Published on this IPv6 address only, not on IPv4: `-p
    /// [2001:db8::1]:8080:80`, or `::` (every IPv6 address of the host)
    /// for `-p [::]:8080:80`, as Docker. `host_ip` is unused then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip6: Option<std::net::Ipv6Addr>,
}

impl PortBinding {
    /// Published on every IPv6 address (`::`) as well: no host address
    /// was named (the publishing endpoint must have IPv6 for it to answer).
    pub fn ipv6_wildcard(&self) -> bool {
        self.host_ip6.is_none() && self.host_ip.is_unspecified() && !self.v4_only && !self.v6_loopback
    }

    /// The IPv4 address it is published on (`[::1]` is served as
    /// 127.0.0.1), if any.
    pub fn host_v4(&self) -> Option<Ipv4Addr> {
        self.host_ip6.is_none().then_some(self.host_ip)
    }

    /// The IPv6 address it is published on in the datapath (`::` for
    /// every one), if any.
    pub fn host_v6(&self) -> Option<std::net::Ipv6Addr> {
        self.host_ip6.or_else(|| self.ipv6_wildcard().then_some(std::net::Ipv6Addr::UNSPECIFIED))
    }

    /// The host address as the user wrote it.
    pub fn host_ip_text(&self) -> String {
        match self.host_ip6 {
            Some(ip6) => ip6.to_string(),
            None if self.v6_loopback => "::1".to_string(),
            None => self.host_ip.to_string(),
        }
    }
}

/// A sandbox's attachment to a network.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub network_id: String,
    pub sandbox_id: String,
    /// Interface name inside the sandbox (`eth0`, `eth1`…).
    pub ifname: String,
    /// Host-side veth (bridge networks only).
    pub host_ifname: Option<String>,
    pub ip: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: [u8; 6],
    pub aliases: Vec<String>,
}

impl Endpoint {
    /// Its addresses: IPv4, and IPv6 on a dual-stack network.
    pub fn addrs(&self) -> Vec<std::net::IpAddr> {
        std::iter::once(self.ip.into()).chain(self.ip6.map(Into::into)).collect()
    }
}

/// An endpoint of an overlay network on another host of the cluster, as
/// that host registered it in the cluster store.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RemoteEndpoint {
    /// The host's node ID and underlay address (where VXLAN goes).
    pub node: String,
    pub underlay: std::net::IpAddr,
    pub network_id: String,
    pub sandbox_id: String,
    /// Names the embedded DNS answers for it: name, hostname, aliases.
    pub name: String,
    pub hostname: String,
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
    /// Its IPv6 address on a dual-stack overlay network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
    pub mac: [u8; 6],
    /// Its sandbox is running (a stopped one keeps its address but gets
    /// no flows through VIPs and no DNS answers, as on its own host).
    #[serde(default = "yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}

impl Network {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
    /// Bridge and overlay networks: a Linux bridge on this host holds the
    /// gateway and the local sandboxes' veths, with the BPF veth program on each.
    pub fn is_bridge(&self) -> bool {
        matches!(self.driver, Driver::Bridge | Driver::Overlay)
    }

    /// A network of the cluster (its record lives in etcd; every host has it).
    pub fn is_overlay(&self) -> bool {
        self.driver == Driver::Overlay
    }

    /// The network's `-o` options, typed (they were checked when it was
    /// created; a record that no longer parses gets the driver's defaults).
    pub fn driver_options(&self) -> DriverOptions {
        DriverOptions::parse(self.driver, &self.options).unwrap_or_else(|e| {
            tracing::warn!(network = %self.name, error = %e, "stored options do not parse; using defaults");
            DriverOptions::parse(self.driver, &Default::default()).unwrap_or(DriverOptions::None)
        })
    }

    /// `NET_FLAG_*` bits the datapath enforces for this network's endpoints.
    pub fn datapath_flags(&self) -> u32 {
        self.flags_with(|b| b.gateway_mode)
    }

    /// The same for the network's IPv6 subnet (`DP_SUBNETS6`): its own
    /// gateway mode (`gateway_mode_ipv6`).
    pub fn datapath_flags6(&self) -> u32 {
        self.flags_with(|b| b.gateway_mode6)
    }

    fn flags_with(
        &self,
        gateway_mode: impl Fn(&super::options::BridgeOptions) -> super::options::GatewayMode,
    ) -> u32 {
        use super::options::GatewayMode;
        let mut f = 0;
        if self.internal {
            f |= dataplane_common::NET_FLAG_INTERNAL;
        }
        if let DriverOptions::Bridge(b) = self.driver_options() {
            if !b.masquerade {
                f |= dataplane_common::NET_FLAG_NO_MASQUERADE;
            }
            if !b.icc {
                f |= dataplane_common::NET_FLAG_NO_ICC;
            }
            // Docker's gateway modes: `routed` (no NAT, direct access),
            // `nat-unprotected` (NAT, and direct access too); `nat` is the default.
            match gateway_mode(&b) {
                GatewayMode::Routed => {
                    f |= dataplane_common::NET_FLAG_ROUTED | dataplane_common::NET_FLAG_NO_MASQUERADE
                }
                GatewayMode::NatUnprotected => f |= dataplane_common::NET_FLAG_ROUTED,
                GatewayMode::Nat => {}
            }
        }
        f
    }

    /// `com.docker.network.driver.mtu`, when set (validated at create: 68–65535).
    pub fn mtu(&self) -> Option<u32> {
        let given = self.driver_options().mtu();
        match self.driver {
            // VXLAN over IPv4 adds 50 bytes (outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8).
            Driver::Overlay => Some(given.unwrap_or(OVERLAY_MTU).min(OVERLAY_MTU)),
            _ => given,
        }
    }

    /// Whether aliases on this network are balanced through virtual IPs.
    pub fn balances_aliases(&self) -> bool {
        self.is_bridge() && super::options::balances_aliases(&self.options)
    }

    /// Networks whose sandboxes get endpoints (and so support connect).
    pub fn has_endpoints(&self) -> bool {
        matches!(self.driver, Driver::Bridge | Driver::Macvlan | Driver::Overlay)
    }
}

impl Sandbox {
    /// The state as it is now: a recorded `Running` whose process has gone
    /// (exited, or the daemon was down when it did) is `Exited`.
    pub fn effective_state(&self) -> SandboxState {
        match (&self.state, self.pid) {
            (SandboxState::Running, Some(p)) if !crate::sys::process::alive(p, self.pid_start) => {
                SandboxState::Exited(0)
            }
            (s, _) => s.clone(),
        }
    }

    /// The one liveness rule (DNS answers for, load balancing sends to and
    /// `ps` lists live sandboxes): see [`live_in`].
    pub fn is_live(&self) -> bool {
        live_in(self, &self.effective_state())
    }

    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
}

/// What a firewall rule does with the packets it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallAction {
    Allow,
    Deny,
}

impl std::fmt::Display for FirewallAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FirewallAction::Allow => "allow",
            FirewallAction::Deny => "deny",
        })
    }
}

/// A rule of `dataplane firewall`: who may reach published ports from
/// outside (Docker users write these into the DOCKER-USER chain).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallRule {
    pub id: u32,
    pub action: FirewallAction,
    /// The clients' address prefix.
    pub from: ipnetwork::IpNetwork,
    /// The published host port (None: every port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp` or `udp` (None with a port: both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Only ports published by sandboxes of this network (its ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub created: String,
}
