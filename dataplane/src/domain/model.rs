//! Domain types kept in the store: networks, sandboxes, endpoints.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

pub const DRIVER_BRIDGE: &str = "bridge";
pub const DRIVER_MACVLAN: &str = "macvlan";
pub const DRIVER_HOST: &str = "host";
pub const DRIVER_NULL: &str = "null";

/// Option keys (Docker's names).
pub mod opt {
    pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
    pub const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
    pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
    pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
    pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
    pub const MTU: &str = "com.docker.network.driver.mtu";
    pub const GATEWAY_MODE_IPV4: &str = "com.docker.network.bridge.gateway_mode_ipv4";
    pub const PARENT: &str = "parent";
    pub const MACVLAN_MODE: &str = "macvlan_mode";
    /// `lb=vip`: every network alias gets a virtual IP balanced in BPF.
    pub const LB: &str = "lb";
}

/// A network: driver + IPAM config + options.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// RFC 3339 creation time.
    pub created: String,
    /// Small numeric id used in BPF maps (unique per daemon).
    pub num: u32,
    pub ipam: Option<Ipam>,
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
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Ipam {
    pub subnet: Ipv4Network,
    pub ip_range: Option<Ipv4Network>,
    pub gateway: Ipv4Addr,
    pub aux: BTreeMap<String, Ipv4Addr>,
}

/// How a sandbox is networked.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum NetworkMode {
    /// Attached to networks through endpoints (bridge/macvlan networks).
    Networks,
    Host,
    None,
    /// Shares the namespace of another sandbox (its id).
    Container(String),
}

/// A published-port request as given with `-p`, parsed (see [`crate::domain::ports`]).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: String,
    pub host_port_start: u16,
    pub host_port_end: u16,
    pub container_port_start: u16,
    pub container_port_end: u16,
    pub proto: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum SandboxState {
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
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
    pub expose: Vec<String>,
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
}

/// One published port, resolved: host address and port → container port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortBinding {
    /// IPv4 host address; 0.0.0.0 means every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    /// tcp or udp.
    pub proto: String,
    /// Published as `[::1]` (kept as 127.0.0.1 in the datapath, where the
    /// socket hooks map ::1).
    #[serde(default)]
    pub v6_loopback: bool,
}

impl PortBinding {
    /// The host address as the user wrote it.
    pub fn host_ip_text(&self) -> String {
        if self.v6_loopback { "::1".to_string() } else { self.host_ip.to_string() }
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
    pub mac: [u8; 6],
    pub aliases: Vec<String>,
}

impl Network {
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }
    pub fn is_bridge(&self) -> bool {
        self.driver == DRIVER_BRIDGE
    }
    /// `NET_FLAG_*` bits the datapath enforces for this network's endpoints.
    pub fn datapath_flags(&self) -> u32 {
        let mut f = 0;
        if self.internal {
            f |= dataplane_common::NET_FLAG_INTERNAL;
        }
        if self.options.get(opt::ENABLE_IP_MASQUERADE).is_some_and(|v| v == "false") {
            f |= dataplane_common::NET_FLAG_NO_MASQUERADE;
        }
        if self.options.get(opt::ENABLE_ICC).is_some_and(|v| v == "false") {
            f |= dataplane_common::NET_FLAG_NO_ICC;
        }
        // Docker's gateway modes: `routed` (no NAT, direct access),
        // `nat-unprotected` (NAT, and direct access too); `nat` is the default.
        match self.options.get(opt::GATEWAY_MODE_IPV4).map(String::as_str) {
            Some("routed") => {
                f |= dataplane_common::NET_FLAG_ROUTED | dataplane_common::NET_FLAG_NO_MASQUERADE
            }
            Some("nat-unprotected") => f |= dataplane_common::NET_FLAG_ROUTED,
            _ => {}
        }
        f
    }

    /// `com.docker.network.driver.mtu`, when set (validated at create: 68–65535).
    pub fn mtu(&self) -> Option<u32> {
        self.options.get(opt::MTU).and_then(|v| v.parse().ok())
    }

    /// Whether aliases on this network are balanced through virtual IPs.
    pub fn balances_aliases(&self) -> bool {
        self.options.get(opt::LB).is_some_and(|v| v == "vip")
    }

    /// Networks whose sandboxes get endpoints (and so support connect).
    pub fn has_endpoints(&self) -> bool {
        self.driver == DRIVER_BRIDGE || self.driver == DRIVER_MACVLAN
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
