//! The daemon's error type. Each variant says what failed, with which name;
//! [`Error::status`] maps it to the HTTP status the API returns.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("network {0} not found")]
    NetworkNotFound(String),
    #[error("No such container: {0}")]
    SandboxNotFound(String),
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    #[error("Conflict. The container name \"/{0}\" is already in use")]
    SandboxExists(String),
    #[error("invalid name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    InvalidName { name: String },
    #[error("invalid name {shown}…: {len} characters, at most {max} are allowed")]
    NameTooLong { shown: String, len: usize, max: usize },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput { what: &'static str, value: String, reason: String },
    #[error("plugin \"{0}\" not found: supported drivers are bridge and macvlan")]
    UnknownDriver(String),
    #[error(
        "invalid pool request: Pool overlaps with other one on this address space ({subnet} overlaps network {other})"
    )]
    SubnetOverlap { subnet: String, other: String },
    #[error("no free address in network {network}")]
    PoolExhausted { network: String },
    #[error("no free subnet left in 172.18.0.0/16..172.31.0.0/16 and 192.168.0.0/20..: pass --subnet")]
    NoFreeSubnet,
    #[error("no free /64 left in the host's IPv6 pool {pool}: pass an IPv6 --subnet")]
    NoFreeSubnet6 { pool: String },
    #[error("Address already in use: {ip} in network {network}")]
    AddressInUse { ip: std::net::IpAddr, network: String },
    #[error("Address already in use: {ip} on overlay network {network} is held by a sandbox of host {node}")]
    AddressClaimed { ip: std::net::IpAddr, network: String, node: String },
    #[error("error while removing network: network {name} id {id} has active endpoints on host(s) {nodes}")]
    NetworkInUseElsewhere { name: String, id: String, nodes: String },
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    NetworkInUse { name: String, id: String },
    #[error("{0} is a pre-defined network and cannot be removed")]
    PredefinedNetwork(String),
    #[error("container cannot be disconnected from host network or connected to host network")]
    HostNetworkConnect,
    #[error("container {sandbox} is not connected to network {network}")]
    NotConnected { sandbox: String, network: String },
    #[error("endpoint with name {sandbox} already exists in network {network}")]
    AlreadyConnected { sandbox: String, network: String },
    /// A request that cannot be done as things are (its message says why).
    #[error("{0}")]
    Conflict(String),
    /// Two options of one request that do not go together (Docker's words).
    #[error("conflicting options: {0}")]
    ConflictingOptions(String),
    #[error("no firewall rule {0} (dataplane firewall ls lists them)")]
    FirewallRuleNotFound(u32),
    #[error("firewall rule {id} already matches {what}: remove it first (dataplane firewall rm {id})")]
    FirewallRuleExists { id: u32, what: String },
    #[error(
        "network {name} is named by firewall rule(s) {ids}: remove them first (dataplane firewall rm {ids})"
    )]
    NetworkInFirewall { name: String, ids: String },
    #[error(
        "You cannot remove a running container {0}. Stop the container before attempting removal or force remove"
    )]
    SandboxRunning(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("exec: {0:?}: executable file not found in $PATH")]
    CommandNotFound(String),
    #[error("exec: {0:?}: permission denied")]
    NotExecutable(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("netlink: {op} {target}: {source}")]
    Netlink { op: &'static str, target: String, source: rtnetlink::Error },
    #[error("{op} {target}: {source}")]
    Io { op: &'static str, target: String, source: std::io::Error },
    #[error("{op} {target}: {source}")]
    Sys { op: &'static str, target: String, source: nix::Error },
    #[error("store: {what}: {source}")]
    Store { what: String, source: redb::Error },
    #[error("cluster store (etcd): {what}: {source}")]
    Cluster { what: String, source: etcd_client::Error },
    #[error(
        "store: record {key} cannot be read or written as JSON (a corrupt or foreign state dir?): {source}"
    )]
    StoreRecord { key: String, source: serde_json::Error },
    #[error("store: I/O error: {source}")]
    StoreIo { source: std::io::Error },
    #[error(
        "no space left on device: the state dir {dir} has {free} bytes free; free some space and try again"
    )]
    NoSpace { dir: String, free: u64 },
    /// The embedded BPF object lacks something (a build problem, not a runtime one).
    #[error("bpf: {0}")]
    BpfObject(String),
    #[error("bpf: parse the embedded object: {source}")]
    ObjectParse { source: aya_obj::ParseError },
    #[error("bpf: load the object (needs root with CAP_BPF, bpffs and BTF): {source}")]
    BpfLoad { source: aya::EbpfError },
    #[error("bpf: {what}: {source}")]
    Program { what: String, source: aya::programs::ProgramError },
    #[error("bpf: {what}: {source}")]
    Link { what: String, source: aya::programs::links::LinkError },
    #[error("bpf: pin {what}: {source}")]
    Pin { what: String, source: aya::pin::PinError },
    #[error("bpf map {what}: {source}")]
    Map { what: String, source: aya::maps::MapError },
    #[error("bpf: {what}: {source}")]
    BpfSys { what: String, source: std::io::Error },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// HTTP status, following the Docker Engine API.
    pub fn status(&self) -> u16 {
        match self {
            Error::NetworkNotFound(_) | Error::SandboxNotFound(_) | Error::FirewallRuleNotFound(_) => 404,
            Error::NetworkExists(_)
            | Error::SandboxExists(_)
            | Error::AddressInUse { .. }
            | Error::AddressClaimed { .. }
            | Error::NetworkInUse { .. }
            | Error::NetworkInUseElsewhere { .. }
            | Error::SandboxRunning(_)
            | Error::NotRunning(_)
            | Error::AlreadyConnected { .. }
            | Error::FirewallRuleExists { .. }
            | Error::NetworkInFirewall { .. }
            | Error::SubnetOverlap { .. } => 409,
            Error::InvalidName { .. }
            | Error::NameTooLong { .. }
            | Error::InvalidInput { .. }
            | Error::UnknownDriver(_)
            | Error::PoolExhausted { .. }
            | Error::NoFreeSubnet
            | Error::NoFreeSubnet6 { .. }
            | Error::PredefinedNetwork(_)
            | Error::HostNetworkConnect
            | Error::NotConnected { .. }
            | Error::Conflict(_)
            | Error::ConflictingOptions(_)
            | Error::CommandNotFound(_)
            | Error::NotExecutable(_)
            | Error::Unsupported(_) => 400,
            Error::NoSpace { .. } => 507,
            _ => 500,
        }
    }

    pub fn invalid(what: &'static str, value: impl ToString, reason: impl ToString) -> Self {
        Error::InvalidInput { what, value: value.to_string(), reason: reason.to_string() }
    }

    pub fn io(op: &'static str, target: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io { op, target: target.to_string(), source }
    }

    pub fn sys(op: &'static str, target: impl std::fmt::Display, source: nix::Error) -> Self {
        Error::Sys { op, target: target.to_string(), source }
    }
}
