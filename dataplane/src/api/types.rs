//! JSON bodies of the API (Docker's field names) and the conversions from
//! the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::*;
use crate::names::format_mac;
use crate::store::State;

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
}

/// Docker shows the null driver's network as `null` with name `none`.
pub fn network_resource(state: &State, n: &Network) -> NetworkResource {
    let config = n.ipam.as_ref().map(|i| {
        vec![IpamConfig {
            subnet: i.subnet.to_string(),
            ip_range: i.ip_range.map(|r| r.to_string()).unwrap_or_default(),
            gateway: i.gateway.to_string(),
            auxiliary_addresses: i.aux.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
        }]
    });
    let containers = state
        .endpoints_of_network(&n.id)
        .filter_map(|e| {
            let sb = state.sandboxes.iter().find(|s| s.id == e.sandbox_id)?;
            let prefix = n.ipam.as_ref().map(|i| i.subnet.prefix()).unwrap_or(32);
            Some((
                sb.id.clone(),
                NetworkContainer {
                    name: sb.name.clone(),
                    endpoint_id: e.id.clone(),
                    mac_address: format_mac(&e.mac),
                    ipv4_address: format!("{}/{prefix}", e.ip),
                    ipv6_address: String::new(),
                },
            ))
        })
        .collect();
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: "local".into(),
        driver: n.driver.clone(),
        enable_ipv4: true,
        enable_ipv6: false,
        ipam: Ipam {
            driver: "default".into(),
            options: Some(BTreeMap::new()),
            config: Some(config.unwrap_or_default()),
        },
        internal: n.internal,
        attachable: false,
        ingress: false,
        config_from: BTreeMap::from([("Network".to_string(), String::new())]),
        config_only: false,
        containers,
        options: n.options.clone(),
        labels: n.labels.clone(),
    }
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

pub fn sandbox_summary(state: &State, sb: &Sandbox) -> SandboxSummary {
    let (st, status, _, _) = state_words(sb);
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
    }
}

/// Docker's `NetworkSettings.Ports`: `"80/tcp": [{"HostIp", "HostPort"}]`,
/// and `null` for ports only exposed. Bindings show only while a
/// publishing endpoint carries them (what the datapath does).
fn published_ports(state: &State, sb: &Sandbox) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for e in &sb.expose {
        ports.insert(e.clone(), serde_json::Value::Null);
    }
    let live = state.publishing_endpoint(&sb.id).is_some();
    for b in sb.bindings.iter().filter(|_| live) {
        let key = format!("{}/{}", b.container_port, b.proto);
        let entry = serde_json::json!({"HostIp": b.host_ip_text(), "HostPort": b.host_port.to_string()});
        match ports.get_mut(&key) {
            Some(serde_json::Value::Array(list)) => list.push(entry),
            _ => {
                ports.insert(key, serde_json::Value::Array(vec![entry]));
            }
        }
    }
    serde_json::Value::Object(ports)
}

/// `inspect` of a sandbox, Docker-like.
pub fn sandbox_inspect(state: &State, sb: &Sandbox) -> serde_json::Value {
    let (st, _, running, code) = state_words(sb);
    let mut networks = serde_json::Map::new();
    for e in state.endpoints_of_sandbox(&sb.id) {
        let Some(n) = state.networks.iter().find(|n| n.id == e.network_id) else {
            continue;
        };
        let ipam = n.ipam.as_ref();
        networks.insert(
            n.name.clone(),
            serde_json::json!({
                "NetworkID": n.id,
                "EndpointID": e.id,
                "Gateway": if n.internal { String::new() } else { ipam.map(|i| i.gateway.to_string()).unwrap_or_default() },
                "IPAddress": e.ip.to_string(),
                "IPPrefixLen": ipam.map(|i| i.subnet.prefix()).unwrap_or(0),
                "MacAddress": format_mac(&e.mac),
                "Aliases": e.aliases,
                "InterfaceName": e.ifname,
                "HostInterfaceName": e.host_ifname,
            }),
        );
    }
    let exposed: serde_json::Map<String, serde_json::Value> =
        sb.expose.iter().map(|p| (p.clone(), serde_json::json!({}))).collect();
    let bindings: Vec<serde_json::Value> = sb
        .ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "HostIp": p.host_ip,
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
        "State": { "Status": st, "Running": running, "Pid": if running { sb.pid.unwrap_or(0) } else { 0 }, "ExitCode": code },
        "Config": {
            "Hostname": sb.hostname,
            "Cmd": sb.cmd,
            "ExposedPorts": exposed,
            "Env": crate::process::environment(&sb.hostname, sb.user.as_deref(), &sb.env),
            "User": sb.user.clone().unwrap_or_default(),
        },
        "HostConfig": {
            "NetworkMode": mode_name(state, sb),
            "PortBindings": bindings,
            "PublishAllPorts": sb.publish_all,
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
    pub programs: Vec<crate::datapath::Attachment>,
}

/// `GET /dataplane/lb`: one virtual IP.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LbRow {
    pub network: String,
    pub alias: String,
    pub vip: std::net::Ipv4Addr,
    pub backends: Vec<LbBackendRow>,
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
