//! JSON bodies of the API (Docker's field names) and the conversions from
//! the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::model::*;
use crate::domain::names::format_mac;
use crate::domain::state::State;

/// What a removal or disconnect could not undo in the kernel (the daemon
/// retries it at its next start). Sent only when there is something to say:
/// otherwise Docker's empty answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Warnings {
    #[serde(rename = "Warnings", default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    #[serde(rename = "IPRange", skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    pub driver: String,
    pub options: Option<BTreeMap<String, String>>,
    pub config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkCreateRequest {
    pub name: String,
    pub driver: String,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Ipam>,
    pub internal: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: Option<bool>,
    pub options: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreateResponse {
    pub id: String,
    pub warning: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointIpamConfig {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address", skip_serializing_if = "String::is_empty")]
    pub ipv6_address: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    pub aliases: Option<Vec<String>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectRequest {
    pub container: String,
    pub endpoint_config: Option<EndpointConfig>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DisconnectRequest {
    pub container: String,
    pub force: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// Docker's `NetworkResource`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkResource {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: BTreeMap<String, String>,
    pub config_only: bool,
    pub containers: BTreeMap<String, NetworkContainer>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// Overlay networks: the other hosts with sandboxes on it (Docker's
    /// swarm shows the same list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
}

/// A host with sandboxes on an overlay network: its node ID and underlay address.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "PascalCase")]
pub struct Peer {
    pub name: String,
    #[serde(rename = "IP")]
    pub ip: String,
}

/// Docker shows the null driver's network as `null` with name `none`.
pub fn network_resource(state: &State, n: &Network) -> NetworkResource {
    let config4 = n.ipam.as_ref().map(|i| IpamConfig {
        subnet: i.subnet.to_string(),
        ip_range: i.ip_range.map(|r| r.to_string()).unwrap_or_default(),
        gateway: i.gateway.to_string(),
        auxiliary_addresses: i.aux.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
    });
    let config6 = n.ipam6.as_ref().map(|i| IpamConfig {
        subnet: i.subnet.to_string(),
        ip_range: i.ip_range.map(|r| r.to_string()).unwrap_or_default(),
        gateway: i.gateway.to_string(),
        auxiliary_addresses: BTreeMap::new(),
    });
    let config: Vec<IpamConfig> = config4.into_iter().chain(config6).collect();
    let containers = state
        .endpoints_of_network(&n.id)
        .filter_map(|e| {
            let sb = state.sandboxes.iter().find(|s| s.id == e.sandbox_id)?;
            let prefix = n.ipam.as_ref().map(|i| i.subnet.prefix()).unwrap_or(32);
            let prefix6 = n.ipam6.as_ref().map(|i| i.subnet.prefix()).unwrap_or(128);
            Some((
                sb.id.clone(),
                NetworkContainer {
                    name: sb.name.clone(),
                    endpoint_id: e.id.clone(),
                    mac_address: format_mac(&e.mac),
                    ipv4_address: format!("{}/{prefix}", e.ip),
                    ipv6_address: e.ip6.map(|ip| format!("{ip}/{prefix6}")).unwrap_or_default(),
                },
            ))
        })
        .collect();
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: if n.is_overlay() { "global" } else { "local" }.into(),
        driver: n.driver.name().to_string(),
        enable_ipv4: true,
        enable_ipv6: n.ipam6.is_some(),
        ipam: Ipam { driver: "default".into(), options: Some(BTreeMap::new()), config: Some(config) },
        internal: n.internal,
        attachable: false,
        ingress: false,
        config_from: BTreeMap::from([("Network".to_string(), String::new())]),
        config_only: false,
        containers,
        options: n.options.clone(),
        labels: n.labels.clone(),
        peers: n.is_overlay().then(|| {
            let mut peers: Vec<Peer> = state
                .remote_of_network(&n.id)
                .map(|r| Peer { name: r.node.clone(), ip: r.underlay.to_string() })
                .collect();
            peers.sort();
            peers.dedup();
            peers
        }),
    }
}

/// The CNI network configuration list (of CNI `version`) that attaches a
/// runtime's containers to `net` through the `dataplane-cni` plugin, which
/// asks the daemon at `socket`; refused for networks without endpoints.
pub fn cni_conflist(
    net: &NetworkResource,
    socket: &std::path::Path,
    version: &str,
) -> Result<serde_json::Value, String> {
    if !matches!(net.driver.as_str(), "bridge" | "macvlan" | "overlay") {
        return Err(format!(
            "network {} (driver {}) has no endpoints: a CNI attachment needs a bridge, macvlan or overlay network",
            net.name, net.driver
        ));
    }
    Ok(serde_json::json!({
        "cniVersion": version,
        "name": net.name,
        "plugins": [{
            "type": dataplane_cni::PLUGIN_TYPE,
            "network": net.name,
            "socket": socket.display().to_string(),
            "capabilities": { "portMappings": true, "ips": true, "mac": true, "aliases": true },
        }],
    }))
}

// ----- sandboxes ----------------------------------------------------------

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SandboxCreateRequest {
    pub hostname: Option<String>,
    pub cmd: Vec<String>,
    pub network_mode: String,
    pub aliases: Vec<String>,
    #[serde(rename = "IP")]
    pub ip: Option<String>,
    /// `--ip6` on a dual-stack network.
    #[serde(rename = "IP6", skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub expose: Vec<String>,
    pub netns: Option<String>,
    pub auto_remove: bool,
    /// `KEY=VALUE` for the process (Docker's `Config.Env`).
    pub env: Vec<String>,
    /// USER[:GROUP] or UID[:GID] (Docker's `Config.User`).
    pub user: Option<String>,
    /// `max-size=SIZE`, `max-file=N` (Docker's `HostConfig.LogConfig.Config`, as KEY=VALUE).
    pub log_opts: Vec<String>,
    /// Docker's `Config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// Docker's `Config.Tty` and `Config.OpenStdin` (`-t`, `-i`).
    pub tty: bool,
    pub open_stdin: bool,
    /// `--dns`, `--dns-search`, `--dns-option` (Docker's `HostConfig.Dns…`).
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
    /// `--add-host NAME:IP` (Docker's `HostConfig.ExtraHosts`).
    pub extra_hosts: Vec<String>,
    /// `--link NAME[:ALIAS]`.
    pub links: Vec<String>,
    pub mac_address: Option<String>,
    /// `-w` (Docker's `Config.WorkingDir`).
    pub working_dir: Option<String>,
    /// The client's terminal (rows, columns) for `-t` (Docker's `HostConfig.ConsoleSize`).
    pub console_size: Option<(u16, u16)>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxCreateResponse {
    pub id: String,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    pub status_code: i32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxSummary {
    pub id: String,
    pub names: Vec<String>,
    pub command: String,
    pub created: String,
    pub state: String,
    pub status: String,
    pub network_mode: String,
    pub networks: Vec<String>,
    /// Published and exposed ports as `docker ps` shows them
    /// (`0.0.0.0:8080->80/tcp, 53/udp`).
    #[serde(default)]
    pub ports: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// RFC 3339; empty when it never started (ended).
    #[serde(default)]
    pub started_at: String,
    #[serde(default)]
    pub finished_at: String,
    #[serde(default)]
    pub exit_code: i32,
    /// The runtime that owns it (`cni`), and its container ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_id: Option<String>,
}

fn mode_name(state: &State, sb: &Sandbox) -> String {
    match &sb.mode {
        NetworkMode::Host => "host".into(),
        NetworkMode::None => "none".into(),
        NetworkMode::Container(id) => format!("container:{id}"),
        NetworkMode::Networks => state
            .endpoints_of_sandbox(&sb.id)
            .filter_map(|e| state.networks.iter().find(|n| n.id == e.network_id))
            .map(|n| n.name.clone())
            .next()
            .unwrap_or_else(|| "bridge".into()),
    }
}

fn state_words(sb: &Sandbox) -> (String, String, bool, i32) {
    match sb.effective_state() {
        SandboxState::Created => ("created".into(), "Created".into(), false, 0),
        SandboxState::Running => ("running".into(), "Up".into(), true, 0),
        SandboxState::Exited(c) => ("exited".into(), format!("Exited ({c})"), false, c),
    }
}

/// `docker ps`'s PORTS: each binding `HOST_IP:HOST_PORT->PORT/PROTO`,
/// then ports only exposed.
fn ports_column(state: &State, sb: &Sandbox) -> String {
    let published = published_ports(state, sb);
    let mut out = Vec::new();
    let mut exposed = Vec::new();
    if let Some(m) = published.as_object() {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort_by_key(|k| {
            (k.split('/').next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0), k.to_string())
        });
        for k in keys {
            match m[k.as_str()].as_array() {
                Some(list) => {
                    for b in list {
                        let ip = b["HostIp"].as_str().unwrap_or("");
                        let ip = if ip == "::" {
                            ":::".to_string()
                        } else if ip.contains(':') {
                            format!("[{ip}]:")
                        } else {
                            format!("{ip}:")
                        };
                        out.push(format!("{ip}{}->{k}", b["HostPort"].as_str().unwrap_or("")));
                    }
                }
                None => exposed.push(k.clone()),
            }
        }
    }
    out.extend(exposed);
    out.join(", ")
}

pub fn sandbox_summary(state: &State, sb: &Sandbox) -> SandboxSummary {
    let (st, status, _, code) = state_words(sb);
    SandboxSummary {
        id: sb.id.clone(),
        names: vec![format!("/{}", sb.name)],
        command: sb.cmd.join(" "),
        created: sb.created.clone(),
        state: st,
        status,
        network_mode: mode_name(state, sb),
        networks: state
            .endpoints_of_sandbox(&sb.id)
            .filter_map(|e| state.networks.iter().find(|n| n.id == e.network_id))
            .map(|n| n.name.clone())
            .collect(),
        owner: sb.owner.map(|o| o.to_string()),
        runtime_id: sb.runtime_id.clone(),
        ports: ports_column(state, sb),
        labels: sb.labels.clone(),
        started_at: sb.started_at.clone().unwrap_or_default(),
        finished_at: sb.finished_at.clone().unwrap_or_default(),
        exit_code: code,
    }
}

/// Docker's `NetworkSettings.Ports`: `"80/tcp": [{"HostIp", "HostPort"}]`,
/// and `null` for ports only exposed. Bindings show only while a
/// publishing endpoint carries them (what the datapath does).
fn published_ports(state: &State, sb: &Sandbox) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for e in &sb.expose {
        ports.insert(e.to_string(), serde_json::Value::Null);
    }
    let publishing = state.publishing_endpoint(&sb.id);
    // Published over IPv6 too wherever the datapath serves it: to the
    // endpoint's IPv6 address, or by NAT46 to its IPv4 one.
    let served6 = publishing.is_some_and(|ep| ep.host_ifname.is_some());
    for b in sb.bindings.iter().filter(|_| publishing.is_some()) {
        let key = format!("{}/{}", b.container_port, b.proto);
        let mut entries =
            vec![serde_json::json!({"HostIp": b.host_ip_text(), "HostPort": b.host_port.to_string()})];
        // Published on `::` too (Docker 27 lists it as a second binding).
        if served6 && b.ipv6_wildcard() {
            entries.push(serde_json::json!({"HostIp": "::", "HostPort": b.host_port.to_string()}));
        }
        match ports.get_mut(&key) {
            Some(serde_json::Value::Array(list)) => list.extend(entries),
            _ => {
                ports.insert(key, serde_json::Value::Array(entries));
            }
        }
    }
    serde_json::Value::Object(ports)
}

/// Docker's "never" for StartedAt/FinishedAt.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `inspect` of a sandbox, Docker-like.
pub fn sandbox_inspect(state: &State, sb: &Sandbox) -> serde_json::Value {
    let (st, _, running, code) = state_words(sb);
    let mut networks = serde_json::Map::new();
    for e in state.endpoints_of_sandbox(&sb.id) {
        let Some(n) = state.networks.iter().find(|n| n.id == e.network_id) else {
            continue;
        };
        let ipam = n.ipam.as_ref();
        let ipam6 = n.ipam6.as_ref().filter(|_| e.ip6.is_some());
        networks.insert(
            n.name.clone(),
            serde_json::json!({
                "NetworkID": n.id,
                "EndpointID": e.id,
                "Gateway": if n.internal { String::new() } else { ipam.map(|i| i.gateway.to_string()).unwrap_or_default() },
                "IPAddress": e.ip.to_string(),
                "IPPrefixLen": ipam.map(|i| i.subnet.prefix()).unwrap_or(0),
                "IPv6Gateway": if n.internal { String::new() } else { ipam6.map(|i| i.gateway.to_string()).unwrap_or_default() },
                "GlobalIPv6Address": e.ip6.map(|ip| ip.to_string()).unwrap_or_default(),
                "GlobalIPv6PrefixLen": ipam6.map(|i| i.subnet.prefix()).unwrap_or(0),
                "MacAddress": format_mac(&e.mac),
                "Aliases": e.aliases,
                "InterfaceName": e.ifname,
                "HostInterfaceName": e.host_ifname,
            }),
        );
    }
    let exposed: serde_json::Map<String, serde_json::Value> =
        sb.expose.iter().map(|p| (p.to_string(), serde_json::json!({}))).collect();
    let bindings: Vec<serde_json::Value> = sb
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "HostIp": p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                "HostPort": if p.host_port_start == 0 { String::new() } else if p.host_port_start == p.host_port_end { p.host_port_start.to_string() } else { format!("{}-{}", p.host_port_start, p.host_port_end) },
                "ContainerPort": if p.container_port_start == p.container_port_end { p.container_port_start.to_string() } else { format!("{}-{}", p.container_port_start, p.container_port_end) },
                "Proto": p.proto,
            })
        })
        .collect();
    serde_json::json!({
        "Id": sb.id,
        "Name": format!("/{}", sb.name),
        "Created": sb.created,
        "Path": sb.cmd.first().cloned().unwrap_or_default(),
        "Args": sb.cmd.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": st, "Running": running, "Pid": if running { sb.pid.unwrap_or(0) } else { 0 }, "ExitCode": code,
            "StartedAt": sb.started_at.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
            "FinishedAt": sb.finished_at.clone().unwrap_or_else(|| ZERO_TIME.to_string()),
        },
        "Config": {
            "Hostname": sb.hostname,
            "Cmd": sb.cmd,
            "ExposedPorts": exposed,
            "Env": crate::sys::process::environment(&sb.hostname, sb.user.as_deref(), &sb.env),
            "User": sb.user.clone().unwrap_or_default(),
            "Labels": sb.labels,
            "Tty": sb.tty,
            "OpenStdin": sb.open_stdin,
            "WorkingDir": sb.workdir.clone().unwrap_or_default(),
        },
        "HostConfig": {
            "NetworkMode": mode_name(state, sb),
            "PortBindings": bindings,
            "PublishAllPorts": sb.publish_all,
            "Dns": sb.dns.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "DnsSearch": sb.dns_search,
            "DnsOptions": sb.dns_options,
            "ExtraHosts": sb.extra_hosts.iter().map(|x| format!("{}:{}", x.name, x.ip)).collect::<Vec<_>>(),
            "Links": sb.links.iter().map(|(t, a)| {
                let name = state.sandbox(t).map(|s| s.name.clone()).unwrap_or_else(|| t.clone());
                format!("/{name}:/{}/{a}", sb.name)
            }).collect::<Vec<_>>(),
            "LogConfig": {
                "Type": "local-file",
                "Config": sb.log.map(|l| serde_json::json!({"max-size": l.max_size.to_string(), "max-file": l.max_files.to_string()})).unwrap_or_else(|| serde_json::json!({})),
            },
            "AutoRemove": sb.auto_remove,
        },
        "NetworkSettings": {
            "SandboxKey": sb.netns,
            "Ports": published_ports(state, sb),
            "Networks": networks,
        },
    })
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

/// Conntrack gauges in `dataplane stats`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CtSummary {
    /// Entries when the last garbage-collection pass walked the table (at most 5 s ago).
    pub entries: u64,
    pub capacity: u64,
    /// Entries removed by garbage collection since the daemon started.
    pub expired: u64,
    /// CPU seconds the last garbage-collection pass used.
    #[serde(default)]
    pub last_gc_cpu_seconds: f64,
    /// Wall-clock seconds the last garbage-collection pass took.
    #[serde(default)]
    pub last_gc_seconds: f64,
}

impl From<crate::datapath::conntrack::Pressure> for CtSummary {
    fn from(p: crate::datapath::conntrack::Pressure) -> Self {
        CtSummary {
            entries: p.entries,
            capacity: p.capacity,
            expired: p.expired,
            last_gc_cpu_seconds: p.last_gc.cpu.as_secs_f64(),
            last_gc_seconds: p.last_gc.took.as_secs_f64(),
        }
    }
}

/// One counter row of `dataplane stats`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MetricRow {
    pub reason: String,
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
}

impl From<crate::datapath::metrics::Metric> for MetricRow {
    fn from(m: crate::datapath::metrics::Metric) -> Self {
        MetricRow {
            reason: m.reason.name().to_string(),
            direction: m.direction.name().to_string(),
            packets: m.packets,
            bytes: m.bytes,
        }
    }
}

/// `GET /dataplane/stats`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Stats {
    pub metrics: Vec<MetricRow>,
    pub conntrack: CtSummary,
    /// Drop events the per-CPU budget kept from `dataplane monitor`.
    #[serde(default)]
    pub events_suppressed: u64,
    /// Our programs attached in the kernel (interfaces of the daemon's
    /// namespace, socket hooks acting for it).
    #[serde(default)]
    pub programs: Vec<ProgramRow>,
}

/// One of our programs attached in the kernel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProgramRow {
    pub link_id: u32,
    /// Program name as the kernel has it (cut at 15 bytes).
    pub program: String,
    pub program_id: u32,
    /// `tcx ingress of IFACE` or `cgroup DIR`.
    pub target: String,
    /// Whether it runs this daemon start's program.
    pub current: bool,
}

impl From<crate::datapath::Attachment> for ProgramRow {
    fn from(a: crate::datapath::Attachment) -> Self {
        let crate::datapath::Attachment { link_id, program, program_id, target, current } = a;
        ProgramRow { link_id, program, program_id, target, current }
    }
}

/// `GET /dataplane/lb`: one virtual IP.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LbRow {
    pub network: String,
    pub alias: String,
    pub vip: std::net::Ipv4Addr,
    /// Its IPv6 VIP, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip6: Option<std::net::Ipv6Addr>,
    pub backends: Vec<LbBackendRow>,
}

impl From<crate::engine::Vip> for LbRow {
    fn from(v: crate::engine::Vip) -> Self {
        LbRow {
            network: v.network,
            alias: v.alias,
            vip: v.vip,
            vip6: v.vip6,
            backends: v
                .backends
                .into_iter()
                .map(|b| LbBackendRow { sandbox: b.sandbox, ip: b.ip, live: b.live, flows: b.flows })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LbBackendRow {
    pub sandbox: String,
    pub ip: std::net::Ipv4Addr,
    /// In the table now (its sandbox runs).
    pub live: bool,
    /// New flows sent to it through the VIP since the VIP was made.
    pub flows: u64,
}

/// One row of `dataplane ct list`: one direction of a tracked flow.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CtRow {
    pub proto: String,
    pub source: String,
    pub destination: String,
    /// What happens to packets of this direction.
    pub nat: String,
    pub state: String,
    pub idle_seconds: u64,
}

/// The name of an IP protocol number the datapath tracks, if it has one.
fn proto_name(p: u8) -> Option<&'static str> {
    use dataplane_common::{PROTO_ICMP, PROTO_ICMP6, PROTO_TCP, PROTO_UDP};
    match p {
        PROTO_TCP => Some("tcp"),
        PROTO_UDP => Some("udp"),
        PROTO_ICMP => Some("icmp"),
        PROTO_ICMP6 => Some("icmpv6"),
        _ => None,
    }
}

impl CtRow {
    /// The row of flow direction `f`, `now` being CLOCK_MONOTONIC in ns.
    pub fn of<K: crate::datapath::conntrack::CtTuple>(
        f: &crate::datapath::conntrack::FlowDirection<K>,
        now: u64,
    ) -> Self {
        use crate::datapath::conntrack::CtRecord;
        use dataplane_common::{CT_DIR_DNAT, CT_DIR_REPLY, CT_DIR_ROUTED, CT_DIR_SNAT, CT_DIR_SNAT_REPLY};
        let (k, e) = (&f.key, &f.entry);
        // IPv6 endpoints in brackets, as in URLs: [2001:db8::1]:8080; the
        // v4-mapped ends of NAT46 flows as the IPv4 addresses they are.
        let ep = |(a, p): (K::Addr, u16)| {
            std::net::SocketAddr::new(K::ip(a).to_canonical(), u16::from_be(p)).to_string()
        };
        let nat = match e.dir() {
            CT_DIR_DNAT => format!("dnat to {}", ep(e.target())),
            CT_DIR_REPLY => format!("reply from {}", ep(e.target())),
            CT_DIR_SNAT => format!("snat to {}", ep(e.target())),
            CT_DIR_SNAT_REPLY => format!("reply to {}", ep(e.target())),
            CT_DIR_ROUTED => "routed".to_string(),
            other => format!("dir {other}"),
        };
        let (source, destination) = k.ends();
        CtRow {
            proto: proto_name(k.proto()).map_or_else(|| k.proto().to_string(), String::from),
            source: ep(source),
            destination: ep(destination),
            nat,
            state: crate::datapath::conntrack::state_name(k.proto(), e, f.partner.as_ref()).into(),
            idle_seconds: now.saturating_sub(e.last_seen()) / 1_000_000_000,
        }
    }
}

/// One event as the API streams it (a line of JSON).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct MonitorEvent {
    /// When the packet was seen (RFC 3339, UTC).
    #[serde(default)]
    pub time: String,
    /// The same, in nanoseconds of the kernel's monotonic clock (since boot; bpf_ktime_get_ns).
    pub time_ns: u64,
    pub reason: String,
    pub direction: String,
    pub proto: String,
    pub source: String,
    pub destination: String,
    /// Sandbox owning the source / destination address, when one does.
    pub source_sandbox: Option<String>,
    pub destination_sandbox: Option<String>,
}

impl MonitorEvent {
    /// Names the parts of a raw event; sandboxes are found by address in `state`.
    pub fn from_raw(ev: &dataplane_common::Event, state: Option<&State>) -> Self {
        use dataplane_common::{Direction, DropReason, PROTO_TCP, PROTO_UDP};
        use std::net::Ipv4Addr;
        let reason = DropReason::ALL.get(ev.reason as usize).map(|r| r.name()).unwrap_or("UNKNOWN");
        let direction = Direction::ALL.get(ev.dir as usize).map(|d| d.name()).unwrap_or("unknown");
        let proto = match (proto_name(ev.proto), ev.proto) {
            (Some(name), _) => name.to_string(),
            (None, 0) => "other".to_string(),
            (None, p) => format!("ip-proto-{p}"),
        };
        let end = |addr: [u8; 4], port: u16| {
            let ip = Ipv4Addr::from(addr);
            if matches!(ev.proto, PROTO_TCP | PROTO_UDP) {
                format!("{ip}:{}", u16::from_be(port))
            } else {
                ip.to_string()
            }
        };
        // A sandbox of this host, or of another host on an overlay network.
        let owner = |addr: [u8; 4]| {
            let ip = Ipv4Addr::from(addr);
            let st = state?;
            match st.endpoints.iter().find(|e| e.ip == ip) {
                Some(ep) => st.sandboxes.iter().find(|s| s.id == ep.sandbox_id).map(|s| s.name.clone()),
                None => st.remote.iter().find(|r| r.ip == ip).map(|r| r.name.clone()),
            }
        };
        MonitorEvent {
            time: wall_clock(ev.ts_ns),
            time_ns: ev.ts_ns,
            reason: reason.to_string(),
            direction: direction.to_string(),
            proto,
            source: end(ev.saddr, ev.sport),
            destination: end(ev.daddr, ev.dport),
            source_sandbox: owner(ev.saddr),
            destination_sandbox: owner(ev.daddr),
        }
    }

    /// One line for humans, its time first.
    pub fn line(&self) -> String {
        let who = |addr: &str, sb: &Option<String>| match sb {
            Some(n) => format!("{addr} ({n})"),
            None => addr.to_string(),
        };
        let time = chrono::DateTime::parse_from_rfc3339(&self.time)
            .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%dT%H:%M:%S%.6f").to_string())
            .unwrap_or_else(|_| self.time.clone());
        format!(
            "{time} DROP {:<26} {:<7} {:<5} {} -> {}",
            self.reason,
            self.direction,
            self.proto,
            who(&self.source, &self.source_sandbox),
            who(&self.destination, &self.destination_sandbox)
        )
    }
}

/// A time of the kernel's monotonic clock (what BPF programs read) on the
/// wall clock: now, less how long ago it was.
fn wall_clock(monotonic_ns: u64) -> String {
    let now_mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(monotonic_ns);
    let ago =
        chrono::Duration::nanoseconds(now_mono.saturating_sub(monotonic_ns).min(i64::MAX as u64) as i64);
    (chrono::Utc::now() - ago).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The last line of a monitor stream the daemon ends (it is stopping).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct StreamEnd {
    pub end: String,
}

impl StreamEnd {
    pub fn stopping() -> Self {
        StreamEnd { end: "the dataplane daemon is stopping".into() }
    }
}

#[cfg(test)]
mod monitor_tests {
    use dataplane_common::{Direction, DropReason, Event, PROTO_TCP};

    use super::*;

    #[test]
    fn raw_events_are_named() {
        let ev = Event {
            ts_ns: 7,
            reason: DropReason::PolicyIcc as u32,
            dir: Direction::FromSandbox as u32,
            proto: PROTO_TCP,
            saddr: [10, 0, 0, 2],
            daddr: [10, 0, 0, 3],
            sport: 40000u16.to_be(),
            dport: 80u16.to_be(),
            ..Event::default()
        };
        let m = MonitorEvent::from_raw(&ev, None);
        assert_eq!(m.reason, "POLICY_ICC");
        assert_eq!(m.direction, "egress");
        assert_eq!(m.source, "10.0.0.2:40000");
        assert_eq!(m.destination, "10.0.0.3:80");
        assert!(m.line().contains("POLICY_ICC"));
    }
}

/// One host of the cluster (`dataplane node ls`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRow {
    #[serde(rename = "ID")]
    pub id: String,
    pub address: String,
    pub hostname: String,
    pub joined: String,
    /// Registered (its lease is alive).
    pub state: String,
    /// This daemon's own host.
    #[serde(rename = "Self")]
    pub is_self: bool,
}

impl NodeRow {
    pub fn of(n: crate::cluster::Node, me: &str) -> Self {
        NodeRow {
            is_self: n.id == me,
            id: n.id,
            address: n.address.to_string(),
            hostname: n.hostname,
            joined: n.joined,
            state: "ready".into(),
        }
    }
}

/// The JSON of Docker's remote network and IPAM driver protocol (libnetwork
/// `docs/remote.md` and `docs/ipam.md`). Fields Docker may leave out default.
pub mod plugin {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize};

    /// Docker sends `null` for an empty map or list.
    fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// `{"Err": "…"}`: a call that could not be completed.
    #[derive(Debug, Serialize)]
    pub struct Failure {
        #[serde(rename = "Err")]
        pub err: String,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Activated {
        pub implements: Vec<&'static str>,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct NetworkCapabilities {
        pub scope: &'static str,
        pub connectivity_scope: &'static str,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct IpamData {
        pub address_space: String,
        pub pool: String,
        pub gateway: String,
        #[serde(deserialize_with = "nullable")]
        pub aux_addresses: BTreeMap<String, String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct CreateNetwork {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
        #[serde(deserialize_with = "nullable")]
        pub options: serde_json::Map<String, serde_json::Value>,
        #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
        pub ipv4_data: Vec<IpamData>,
        #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
        pub ipv6_data: Vec<IpamData>,
    }

    /// `NetworkID` alone (DeleteNetwork, FreeNetwork).
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct NetworkRef {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct Interface {
        #[serde(skip_serializing_if = "String::is_empty")]
        pub address: String,
        #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
        pub address_ipv6: String,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub mac_address: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct CreateEndpoint {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
        #[serde(rename = "EndpointID")]
        pub endpoint_id: String,
        pub interface: Option<Interface>,
        #[serde(deserialize_with = "nullable")]
        pub options: serde_json::Map<String, serde_json::Value>,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct EndpointCreated {
        #[serde(skip_serializing_if = "Option::is_none")]
        pub interface: Option<Interface>,
    }

    /// `NetworkID` and `EndpointID` (DeleteEndpoint, EndpointOperInfo, Leave,
    /// RevokeExternalConnectivity).
    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct EndpointRef {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
        #[serde(rename = "EndpointID")]
        pub endpoint_id: String,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct OperInfo {
        pub value: BTreeMap<String, String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct Join {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
        #[serde(rename = "EndpointID")]
        pub endpoint_id: String,
        pub sandbox_key: String,
        #[serde(deserialize_with = "nullable")]
        pub options: serde_json::Map<String, serde_json::Value>,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct InterfaceName {
        pub src_name: String,
        pub dst_prefix: &'static str,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct Joined {
        pub interface_name: InterfaceName,
        #[serde(skip_serializing_if = "String::is_empty")]
        pub gateway: String,
        #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
        pub gateway_ipv6: String,
        pub disable_gateway_service: bool,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct ProgramExternalConnectivity {
        #[serde(rename = "NetworkID")]
        pub network_id: String,
        #[serde(rename = "EndpointID")]
        pub endpoint_id: String,
        #[serde(deserialize_with = "nullable")]
        pub options: serde_json::Map<String, serde_json::Value>,
    }

    /// One entry of `com.docker.network.portmap`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct PortMapping {
        pub proto: u8,
        #[serde(rename = "IP")]
        pub ip: String,
        pub port: u16,
        #[serde(rename = "HostIP")]
        pub host_ip: String,
        pub host_port: u16,
        pub host_port_end: u16,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct IpamCapabilities {
        #[serde(rename = "RequiresMACAddress")]
        pub requires_mac_address: bool,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct AddressSpaces {
        pub local_default_address_space: &'static str,
        pub global_default_address_space: &'static str,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct RequestPool {
        pub address_space: String,
        pub pool: String,
        pub sub_pool: String,
        #[serde(deserialize_with = "nullable")]
        pub options: BTreeMap<String, String>,
        #[serde(rename = "V6")]
        pub v6: bool,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct PoolGranted {
        #[serde(rename = "PoolID")]
        pub pool_id: String,
        pub pool: String,
        pub data: BTreeMap<String, String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    pub struct PoolRef {
        #[serde(rename = "PoolID")]
        pub pool_id: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct RequestAddress {
        #[serde(rename = "PoolID")]
        pub pool_id: String,
        pub address: String,
        #[serde(deserialize_with = "nullable")]
        pub options: BTreeMap<String, String>,
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "PascalCase")]
    pub struct AddressGranted {
        pub address: String,
        pub data: BTreeMap<String, String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(rename_all = "PascalCase", default)]
    pub struct ReleaseAddress {
        #[serde(rename = "PoolID")]
        pub pool_id: String,
        pub address: String,
    }

    /// `{}`.
    #[derive(Debug, Serialize)]
    pub struct Empty {}
}

/// `POST /dataplane/firewall`: a rule to add.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FirewallRequest {
    /// `allow` or `deny`.
    pub action: String,
    /// CIDR (or one address).
    pub from: String,
    /// `P` or `P/tcp` / `P/udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// A network's name or ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// `GET /dataplane/firewall`: one rule.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FirewallRow {
    pub id: u32,
    pub action: String,
    pub from: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// The network's ID, if the rule names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// What it matches, in words.
    pub matches: String,
    pub created: String,
}

impl FirewallRow {
    pub fn new(r: crate::domain::model::FirewallRule, matches: String) -> Self {
        FirewallRow {
            id: r.id,
            action: r.action.to_string(),
            from: r.from.to_string(),
            port: r.port,
            proto: r.proto,
            network: r.network,
            matches,
            created: r.created,
        }
    }
}
