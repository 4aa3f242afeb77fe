//! The CNI plugin's calls (`POST /dataplane/cni`, made by `dataplane-cni`):
//! the configuration and `CNI_ARGS` decoded into an engine request, the
//! engine's answer written as a CNI result of the configuration's version,
//! every failure a CNI error with the specification's code.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use dataplane_cni::{
    Call, CniError, CniResult, Command, Dns, Interface, IpConfig, LATEST_VERSION, NetConf, PortMapping,
    Reply, Route, SUPPORTED_VERSIONS, code, parse_args,
};
use serde_json::Value;

use crate::domain::model::PortSpec;
use crate::domain::names;
use crate::domain::options::Proto;
use crate::engine::{CniAttach, CniAttached, Engine};
use crate::error::Error;

pub async fn call(State(engine): State<Arc<Engine>>, Json(call): Json<Call>) -> Json<Reply> {
    let version = call.config.get("cniVersion").and_then(Value::as_str).unwrap_or(LATEST_VERSION).to_string();
    Json(match serve(&engine, call, &version).await {
        Ok(v) => Reply::Ok(v),
        Err(e) => Reply::Error(e.in_version(&version)),
    })
}

/// The engine's refusal as a CNI error: what the configuration names
/// wrongly is code 7, a cluster store away 11, the rest ours (100).
fn refused(e: Error) -> CniError {
    let code = match &e {
        Error::NetworkNotFound(_) | Error::InvalidInput { .. } | Error::InvalidName { .. } => {
            code::INVALID_CONFIG
        }
        Error::Cluster { .. } => code::TRY_AGAIN_LATER,
        _ => code::REFUSED,
    };
    CniError::new(code, e.to_string())
}

fn invalid(msg: String) -> CniError {
    CniError::new(code::INVALID_CONFIG, msg)
}

async fn serve(engine: &Engine, call: Call, version: &str) -> Result<Option<Value>, CniError> {
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("CNI version {version} is not supported"),
        ));
    }
    let conf: NetConf = serde_json::from_value(call.config.clone())
        .map_err(|e| invalid(format!("the configuration is not one of dataplane-cni: {e}")))?;
    let network = conf.network.clone().filter(|n| !n.is_empty()).ok_or_else(|| {
        invalid("the plugin configuration has no \"network\" key naming the dataplane network".into())
    })?;
    match call.command {
        Command::Add => {
            let attach = attach_request(&call, &conf, network)?;
            let attached = engine.cni_add(attach).await.map_err(refused)?;
            let result = result_of(&attached).in_version(version);
            serde_json::to_value(result).map(Some).map_err(|e| CniError::new(code::REFUSED, e.to_string()))
        }
        Command::Del => {
            for w in engine.cni_del(&call.container_id, &call.ifname).await.map_err(refused)? {
                tracing::warn!(container = %call.container_id, "{w}");
            }
            Ok(None)
        }
        Command::Check => {
            if conf.prev_result.is_none() {
                return Err(invalid("CHECK needs the prevResult of the ADD".into()));
            }
            engine
                .cni_check(&call.container_id, &call.ifname, &call.netns)
                .await
                .map(|()| None)
                .map_err(|e| CniError::new(code::CHECK_FAILED, e.to_string()))
        }
        Command::Status => engine
            .cni_status(&network)
            .map(|()| None)
            .map_err(|e| CniError::new(code::NOT_AVAILABLE, format!("the plugin is not available: {e}"))),
        Command::Gc => {
            let valid = conf.valid_attachments.ok_or_else(|| {
                invalid("GC needs \"cni.dev/valid-attachments\" (the attachments to keep)".into())
            })?;
            let valid: BTreeSet<(String, String)> =
                valid.into_iter().map(|a| (a.container_id, a.ifname)).collect();
            let (_, warnings) = engine.cni_gc(&network, &valid).await.map_err(refused)?;
            for w in warnings {
                tracing::warn!(network = %network, "{w}");
            }
            Ok(None)
        }
        Command::Version => Ok(Some(serde_json::json!({
            "cniVersion": version,
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
    }
}

/// An ADD's request: capability arguments first, `CNI_ARGS` where they
/// are silent (as CONVENTIONS.md says).
fn attach_request(call: &Call, conf: &NetConf, network: String) -> Result<CniAttach, CniError> {
    if conf.prev_result.is_some() {
        return Err(invalid(
            "dataplane-cni makes the container's interface: it must be the first plugin of the list \
             (this configuration carries a prevResult)"
                .into(),
        ));
    }
    let args = parse_args(&call.args).map_err(|m| CniError::new(code::INVALID_ENVIRONMENT, m))?;
    let arg = |key: &str| args.iter().filter(|(k, _)| k == key).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    let rc = &conf.runtime_config;
    let ips = if rc.ips.is_empty() { arg("IP") } else { rc.ips.clone() };
    let (mut ip, mut ip6) = (None, None);
    for text in &ips {
        let addr = text.split_once('/').map_or(text.as_str(), |(a, _)| a);
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if ip.is_none() => ip = Some(v4),
            Ok(IpAddr::V4(_)) => {
                return Err(invalid(format!("ips: more than one IPv4 address ({})", ips.join(", "))));
            }
            Ok(IpAddr::V6(v6)) if ip6.is_none() => ip6 = Some(v6),
            Ok(IpAddr::V6(_)) => {
                return Err(invalid(format!("ips: more than one IPv6 address ({})", ips.join(", "))));
            }
            Err(_) => return Err(invalid(format!("ips: {text:?} is not an IP address"))),
        }
    }
    let mac_text = rc.mac.clone().or_else(|| arg("MAC").into_iter().next());
    let mac = match mac_text {
        Some(m) => {
            Some(names::parse_mac(&m).ok_or_else(|| invalid(format!("mac: {m:?} is not a MAC address")))?)
        }
        None => None,
    };
    let ports = rc.port_mappings.iter().map(port_spec).collect::<Result<Vec<_>, _>>()?;
    Ok(CniAttach {
        container_id: call.container_id.clone(),
        netns: call.netns.clone(),
        ifname: call.ifname.clone(),
        network,
        name: arg("K8S_POD_NAME").into_iter().next(),
        ip,
        ip6,
        mac,
        ports,
        aliases: rc.aliases.as_ref().map(|a| a.for_network(&conf.name)).unwrap_or_default(),
    })
}

fn port_spec(p: &PortMapping) -> Result<PortSpec, CniError> {
    if p.host_port == 0 || p.container_port == 0 {
        return Err(invalid(format!("portMappings: {p:?}: hostPort and containerPort must be 1-65535")));
    }
    let proto = p.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
    let proto = Proto::parse("portMappings protocol", &proto, &proto)
        .map_err(|e| invalid(format!("portMappings: {e}")))?;
    let host_ip = match p.host_ip.as_deref() {
        None | Some("") => None,
        Some(h) => Some(
            h.parse::<IpAddr>()
                .map_err(|_| invalid(format!("portMappings: hostIP {h:?} is not an address")))?,
        ),
    };
    Ok(PortSpec {
        host_ip,
        host_port_start: p.host_port,
        host_port_end: p.host_port,
        container_port_start: p.container_port,
        container_port_end: p.container_port,
        proto,
    })
}

/// The ADD result: the host side (bridge networks), the container's
/// interface, its address with the gateway, the default route, and our
/// resolver when the sandbox has it. The address is given with the
/// network's prefix (what runtimes show as the container's): in the
/// namespace it is a /32 with an on-link route to that subnet, which
/// reaches the same addresses (see `drivers::configure_in_sandbox`).
fn result_of(a: &CniAttached) -> CniResult {
    let ep = &a.endpoint;
    let mut interfaces = Vec::new();
    if let Some(host) = &ep.host_ifname {
        interfaces.push(Interface { name: host.clone(), ..Default::default() });
    }
    interfaces.push(Interface {
        name: ep.ifname.clone(),
        mac: names::format_mac(&ep.mac),
        mtu: a.network.mtu(),
        sandbox: a.sandbox.netns.clone(),
    });
    let (prefix, gateway) = a
        .network
        .ipam
        .as_ref()
        .map_or((32, None), |i| (i.subnet.prefix(), (!a.network.internal).then_some(i.gateway)));
    let gw_text = gateway.map(|g: Ipv4Addr| g.to_string());
    let mut ips = vec![IpConfig {
        version: None,
        address: format!("{}/{prefix}", ep.ip),
        gateway: gw_text.clone(),
        interface: Some(interfaces.len() - 1),
    }];
    let mut routes = Vec::new();
    if a.default_route {
        routes.push(Route { dst: "0.0.0.0/0".into(), gw: gw_text });
    }
    // A dual-stack network: the IPv6 address, and the IPv6 default route
    // where the container has it through this attachment.
    if let (Some(ip6), Some(ipam6)) = (ep.ip6, &a.network.ipam6) {
        let gw6 = (!a.network.internal).then(|| ipam6.gateway.to_string());
        ips.push(IpConfig {
            version: None,
            address: format!("{ip6}/{}", ipam6.subnet.prefix()),
            gateway: gw6.clone(),
            interface: Some(interfaces.len() - 1),
        });
        if a.default_route6 {
            routes.push(Route { dst: "::/0".into(), gw: gw6 });
        }
    }
    CniResult {
        cni_version: LATEST_VERSION.into(),
        ips,
        interfaces,
        routes,
        dns: Dns {
            nameservers: if a.dns { vec!["127.0.0.11".into()] } else { Vec::new() },
            ..Default::default()
        },
    }
}
