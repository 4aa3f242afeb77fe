//! The CNI protocol as the `dataplane-cni` plugin and the daemon share it:
//! the network configuration a runtime passes (spec 1.1, and 1.0.0 and
//! 0.4.0), the result and error types, and the one call the plugin makes
//! to the daemon (`POST /dataplane/cni`), which does the work and answers
//! with a result or a CNI error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The specification versions the plugin speaks (configs and results).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// The version `dataplane network cni-config` writes by default.
pub const LATEST_VERSION: &str = "1.1.0";
/// The daemon's API socket when the configuration names none.
pub const DEFAULT_SOCKET: &str = "/run/dataplane/dataplane.sock";
/// The daemon's endpoint for plugin calls.
pub const API_PATH: &str = "/dataplane/cni";
/// The name of the plugin executable (the `type` of its configuration).
pub const PLUGIN_TYPE: &str = "dataplane-cni";

/// Error codes of the specification (0-99) and ours (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The daemon refused or failed the operation (the message says why).
    pub const REFUSED: u32 = 100;
    /// `CHECK` found the attachment not as `ADD` made it.
    pub const CHECK_FAILED: u32 = 101;
}

/// A CNI error result (spec section 5), printed on stdout with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { cni_version: LATEST_VERSION.into(), code, msg: msg.into(), details: String::new() }
    }

    pub fn in_version(mut self, version: &str) -> Self {
        if SUPPORTED_VERSIONS.contains(&version) {
            self.cni_version = version.to_string();
        }
        self
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)
    }
}

/// `CNI_COMMAND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl std::str::FromStr for Command {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("CNI_COMMAND={other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                ));
            }
        })
    }
}

/// One plugin invocation, as the plugin forwards it to the daemon: the
/// parameters from the environment and the configuration from stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    pub command: Command,
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub netns: String,
    #[serde(default)]
    pub ifname: String,
    /// `CNI_ARGS`, as given.
    #[serde(default)]
    pub args: String,
    pub config: Value,
}

/// The daemon's answer to a [`Call`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// Success; ADD returns a result, the other commands nothing.
    Ok(Option<Value>),
    Error(CniError),
}

/// The plugin configuration a runtime passes on stdin (the keys we read).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The dataplane network to attach to.
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's API socket.
    #[serde(default)]
    pub socket: Option<String>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// Capability arguments (CONVENTIONS.md) the plugin honours.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// `<ip>[/<prefix>]`.
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub aliases: Option<Aliases>,
}

/// `aliases`: a list (CONVENTIONS.md), or per network name (what Podman
/// passes, as for the `dnsname` plugin).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Aliases {
    List(Vec<String>),
    PerNetwork(BTreeMap<String, Vec<String>>),
}

impl Aliases {
    /// The aliases for the CNI network `name`.
    pub fn for_network(&self, name: &str) -> Vec<String> {
        match self {
            Aliases::List(l) => l.clone(),
            Aliases::PerNetwork(m) => m.get(name).cloned().unwrap_or_default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// An entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `CNI_ARGS` (`K=V;K=V`) as pairs; an entry without `=` is an error.
pub fn parse_args(args: &str) -> Result<Vec<(String, String)>, String> {
    args.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("CNI_ARGS entry {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

/// Whether `id` is a container ID as the specification allows them.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// An ADD result (spec section 5), written in the configuration's version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path for an interface in the container; empty on the host.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6": in 0.4.0 results only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl CniResult {
    /// The result as version `version` writes it: 0.4.0 has `version` in
    /// each IP; before 1.1.0 interfaces carry no MTU.
    pub fn in_version(mut self, version: &str) -> Self {
        self.cni_version = version.to_string();
        for ip in &mut self.ips {
            ip.version =
                (version == "0.4.0").then(|| if ip.address.contains(':') { "6" } else { "4" }.to_string());
        }
        if version != "1.1.0" {
            for i in &mut self.interfaces {
                i.mtu = None;
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_and_convention_aliases_both_parse() {
        let c: NetConf = serde_json::from_str(
            r#"{"cniVersion":"1.0.0","name":"n","runtimeConfig":{"aliases":{"n":["a","b"],"other":["c"]}}}"#,
        )
        .expect("podman's shape");
        assert_eq!(c.runtime_config.aliases.expect("aliases").for_network("n"), ["a", "b"]);
        let c: NetConf =
            serde_json::from_str(r#"{"cniVersion":"1.1.0","name":"n","runtimeConfig":{"aliases":["x"]}}"#)
                .expect("the convention's shape");
        assert_eq!(c.runtime_config.aliases.expect("aliases").for_network("n"), ["x"]);
    }

    #[test]
    fn args_and_container_ids_are_checked() {
        assert_eq!(
            parse_args("IgnoreUnknown=1;IP=10.0.0.5").expect("args"),
            [("IgnoreUnknown".into(), "1".into()), ("IP".into(), "10.0.0.5".into())]
        );
        assert!(parse_args("IP").is_err());
        assert!(valid_container_id("abc-1.2_3") && !valid_container_id("-a") && !valid_container_id("a/b"));
    }

    #[test]
    fn a_result_is_written_in_the_configs_version() {
        let r = CniResult {
            interfaces: vec![Interface { name: "eth0".into(), mtu: Some(1500), ..Default::default() }],
            ips: vec![IpConfig { address: "10.0.0.2/24".into(), interface: Some(0), ..Default::default() }],
            ..Default::default()
        };
        let old = serde_json::to_value(r.clone().in_version("0.4.0")).expect("json");
        assert_eq!((old["ips"][0]["version"].as_str(), old["interfaces"][0].get("mtu")), (Some("4"), None));
        let new = serde_json::to_value(r.in_version("1.1.0")).expect("json");
        assert_eq!((new["ips"][0].get("version"), new["interfaces"][0]["mtu"].as_u64()), (None, Some(1500)));
    }
}
