//! Docker's remote network and IPAM driver protocol on its own unix socket
//! (`dataplane daemon --docker-plugin-dir`): HTTP POST, JSON bodies of
//! `application/vnd.docker.plugins.v1+json`, failures as `{"Err": "…"}`,
//! unknown calls 404 so dockerd knows what we do not implement.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ipnetwork::Ipv4Network;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::wire::plugin::*;
use crate::domain::names;
use crate::domain::options::Proto;
use crate::engine::{DockerNetwork, DockerPort, Engine};
use crate::error::Error;

const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";
/// Docker's option keys.
const GENERIC: &str = "com.docker.network.generic";
const INTERNAL: &str = "com.docker.network.internal";
const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
const PORTMAP: &str = "com.docker.network.portmap";
const GATEWAY_REQUEST: &str = "com.docker.network.gateway";

type PluginState = State<Arc<Engine>>;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(activate))
        .route("/NetworkDriver.GetCapabilities", post(capabilities))
        .route("/NetworkDriver.CreateNetwork", post(create_network))
        .route("/NetworkDriver.DeleteNetwork", post(delete_network))
        .route("/NetworkDriver.AllocateNetwork", post(allocate_network))
        .route("/NetworkDriver.FreeNetwork", post(free_network))
        .route("/NetworkDriver.CreateEndpoint", post(create_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(oper_info))
        .route("/NetworkDriver.DeleteEndpoint", post(delete_endpoint))
        .route("/NetworkDriver.Join", post(join))
        .route("/NetworkDriver.Leave", post(leave))
        .route("/NetworkDriver.ProgramExternalConnectivity", post(program_external))
        .route("/NetworkDriver.RevokeExternalConnectivity", post(revoke_external))
        .route("/NetworkDriver.DiscoverNew", post(discover))
        .route("/NetworkDriver.DiscoverDelete", post(discover))
        .route("/IpamDriver.GetCapabilities", post(ipam_capabilities))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(address_spaces))
        .route("/IpamDriver.RequestPool", post(request_pool))
        .route("/IpamDriver.ReleasePool", post(release_pool))
        .route("/IpamDriver.RequestAddress", post(request_address))
        .route("/IpamDriver.ReleaseAddress", post(release_address))
        .fallback(unknown)
        .with_state(engine)
}

/// A call's answer: its JSON, or `{"Err"}` with a status that is not 200:
/// 500 for a call understood but not completed (dockerd reads `Err` of any
/// non-200 answer for both drivers, while on a 200 its IPAM client looks
/// for a field named `Error` instead), 400 for a body that does not decode,
/// 404 only for a call we do not implement (dockerd then skips it).
enum Answer {
    Ok(serde_json::Value),
    Failed(StatusCode, String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            Answer::Ok(v) => (StatusCode::OK, v.to_string()),
            Answer::Failed(status, err) => {
                (status, serde_json::to_string(&Failure { err }).unwrap_or_else(|_| "{}".into()))
            }
        };
        let mut r = (status, body).into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        r
    }
}

fn ok<T: Serialize>(v: T) -> Answer {
    match serde_json::to_value(v) {
        Ok(v) => Answer::Ok(v),
        Err(e) => Answer::Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn done<T: Serialize>(method: &str, r: Result<T, Error>) -> Answer {
    match r {
        Ok(v) => ok(v),
        Err(e) => {
            tracing::warn!(method, error = %e, "docker plugin call refused");
            Answer::Failed(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Decodes a call's body (Docker sends none for some calls).
fn body<T: DeserializeOwned + Default>(method: &str, b: &Bytes) -> Result<T, Answer> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| {
        tracing::warn!(method, error = %e, "undecodable docker plugin call");
        Answer::Failed(StatusCode::BAD_REQUEST, format!("{method}: the body does not decode: {e}"))
    })
}

macro_rules! decode {
    ($method:expr, $b:expr) => {
        match body($method, &$b) {
            Ok(v) => v,
            Err(a) => return a,
        }
    };
}

async fn unknown(uri: axum::http::Uri) -> Answer {
    Answer::Failed(StatusCode::NOT_FOUND, format!("{} is not implemented by dataplane", uri.path()))
}

async fn activate() -> Answer {
    ok(Activated { implements: vec!["NetworkDriver", "IpamDriver"] })
}

async fn capabilities() -> Answer {
    ok(NetworkCapabilities { scope: "local", connectivity_scope: "local" })
}

fn parse_cidr_addr(what: &'static str, s: &str) -> Result<Option<Ipv4Addr>, Error> {
    parse_addr(what, s, "not an IPv4 address")
}

fn parse_cidr_addr6(what: &'static str, s: &str) -> Result<Option<std::net::Ipv6Addr>, Error> {
    parse_addr(what, s, "not an IPv6 address")
}

/// The address of `ADDR` or `ADDR/PREFIX`; None when empty.
fn parse_addr<A: std::str::FromStr>(what: &'static str, s: &str, not: &str) -> Result<Option<A>, Error> {
    if s.is_empty() {
        return Ok(None);
    }
    let ip = s.split('/').next().unwrap_or(s);
    ip.parse().map(Some).map_err(|_| Error::invalid(what, s, not))
}

/// `CreateNetwork`, typed: Docker's pool, gateway and aux addresses, its
/// `--internal`, and the `-o` options (strings, as `docker network create
/// -o` gives them).
fn docker_network(r: CreateNetwork) -> Result<DockerNetwork, Error> {
    let mut d = DockerNetwork { id: r.network_id, ..Default::default() };
    if r.ipv4_data.len() > 1 {
        return Err(Error::Unsupported("one IPv4 subnet per dataplane network".into()));
    }
    if let Some(v4) = r.ipv4_data.first() {
        d.pool = Some(
            v4.pool
                .parse::<Ipv4Network>()
                .map_err(|_| Error::invalid("Pool", &v4.pool, "not an IPv4 CIDR"))?,
        );
        d.gateway = parse_cidr_addr("Gateway", &v4.gateway)?;
        for (k, v) in &v4.aux_addresses {
            if let Some(ip) = parse_cidr_addr("AuxAddresses", v)? {
                d.aux.insert(k.clone(), ip);
            }
        }
    }
    if r.ipv6_data.len() > 1 {
        return Err(Error::Unsupported("one IPv6 subnet per dataplane network".into()));
    }
    if let Some(v6) = r.ipv6_data.first() {
        d.pool6 = Some(
            v6.pool
                .parse::<ipnetwork::Ipv6Network>()
                .map_err(|_| Error::invalid("IPv6Data.Pool", &v6.pool, "not an IPv6 CIDR"))?,
        );
        d.gateway6 = parse_cidr_addr6("IPv6Data.Gateway", &v6.gateway)?;
    }
    let flag = |k: &str| r.options.get(k).and_then(serde_json::Value::as_bool).unwrap_or(false);
    d.internal = flag(INTERNAL);
    d.ipv6 = flag(ENABLE_IPV6) || !r.ipv6_data.is_empty();
    if let Some(generic) = r.options.get(GENERIC).and_then(serde_json::Value::as_object) {
        for (k, v) in generic {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            d.options.insert(k.clone(), v);
        }
    }
    Ok(d)
}

async fn create_network(State(e): PluginState, b: Bytes) -> Answer {
    let r: CreateNetwork = decode!("CreateNetwork", b);
    let res = async { e.docker_create_network(docker_network(r)?).await }.await;
    done("CreateNetwork", res.map(|()| Empty {}))
}

async fn delete_network(State(e): PluginState, b: Bytes) -> Answer {
    let r: NetworkRef = decode!("DeleteNetwork", b);
    done("DeleteNetwork", e.docker_delete_network(&r.network_id).await.map(|_| Empty {}))
}

/// Swarm-scope calls: nothing to allocate for a local-scope driver.
async fn allocate_network() -> Answer {
    ok(serde_json::json!({ "Options": {} }))
}

async fn free_network() -> Answer {
    ok(Empty {})
}

async fn create_endpoint(State(e): PluginState, b: Bytes) -> Answer {
    let r: CreateEndpoint = decode!("CreateEndpoint", b);
    let res = async {
        let iface = r.interface.unwrap_or_default();
        let address = parse_cidr_addr("Interface.Address", &iface.address)?;
        let address6 = parse_cidr_addr6("Interface.AddressIPv6", &iface.address_ipv6)?;
        let mac = match iface.mac_address.as_str() {
            "" => None,
            m => Some(
                names::parse_mac(m)
                    .ok_or_else(|| Error::invalid("Interface.MacAddress", m, "not a MAC address"))?,
            ),
        };
        let chosen =
            e.docker_create_endpoint(&r.network_id, &r.endpoint_id, (address, address6), mac).await?;
        // Only what Docker did not give comes back (Docker refuses changes).
        Ok(EndpointCreated {
            interface: chosen.map(|m| Interface { mac_address: names::format_mac(&m), ..Default::default() }),
        })
    }
    .await;
    done("CreateEndpoint", res)
}

async fn oper_info() -> Answer {
    ok(OperInfo { value: BTreeMap::new() })
}

async fn delete_endpoint(State(e): PluginState, b: Bytes) -> Answer {
    let r: EndpointRef = decode!("DeleteEndpoint", b);
    done("DeleteEndpoint", e.docker_delete_endpoint(&r.endpoint_id).await.map(|_| Empty {}))
}

async fn join(State(e): PluginState, b: Bytes) -> Answer {
    let r: Join = decode!("Join", b);
    let res = e.docker_join(&r.endpoint_id, &r.sandbox_key).await.map(|j| Joined {
        interface_name: InterfaceName { src_name: j.src_name, dst_prefix: "eth" },
        gateway: j.gateway.map(|g| g.to_string()).unwrap_or_default(),
        gateway_ipv6: j.gateway6.map(|g| g.to_string()).unwrap_or_default(),
        disable_gateway_service: false,
    });
    done("Join", res)
}

async fn leave(State(e): PluginState, b: Bytes) -> Answer {
    let r: EndpointRef = decode!("Leave", b);
    done("Leave", e.docker_leave(&r.endpoint_id).await.map(|()| Empty {}))
}

/// Docker's port map, typed.
fn docker_ports(options: &serde_json::Map<String, serde_json::Value>) -> Result<Vec<DockerPort>, Error> {
    let Some(v) = options.get(PORTMAP) else { return Ok(Vec::new()) };
    let maps: Vec<PortMapping> = serde_json::from_value(v.clone())
        .map_err(|e| Error::invalid(PORTMAP, v.to_string(), format!("does not decode: {e}")))?;
    maps.into_iter()
        .map(|m| {
            let proto = match m.proto {
                6 => Proto::Tcp,
                17 => Proto::Udp,
                132 => Proto::Sctp,
                other => return Err(Error::invalid("Proto", other, "not tcp, udp or sctp")),
            };
            let host_ip = match m.host_ip.as_str() {
                "" => None,
                s => Some(s.parse::<IpAddr>().map_err(|_| Error::invalid("HostIP", s, "not an IP address"))?),
            };
            Ok(DockerPort {
                proto,
                container_port: m.port,
                host_ip,
                host_port: m.host_port,
                host_port_end: m.host_port_end,
            })
        })
        .collect()
}

async fn program_external(State(e): PluginState, b: Bytes) -> Answer {
    let r: ProgramExternalConnectivity = decode!("ProgramExternalConnectivity", b);
    let res = async {
        let ports = docker_ports(&r.options)?;
        e.docker_publish(&r.endpoint_id, &ports).await
    }
    .await;
    done("ProgramExternalConnectivity", res.map(|()| Empty {}))
}

async fn revoke_external(State(e): PluginState, b: Bytes) -> Answer {
    let r: EndpointRef = decode!("RevokeExternalConnectivity", b);
    done("RevokeExternalConnectivity", e.docker_unpublish(&r.endpoint_id).await.map(|()| Empty {}))
}

/// Node discovery is for global-scope drivers: acknowledged, nothing to do.
async fn discover() -> Answer {
    ok(Empty {})
}

async fn ipam_capabilities() -> Answer {
    ok(IpamCapabilities { requires_mac_address: false })
}

async fn address_spaces() -> Answer {
    ok(AddressSpaces { local_default_address_space: "local", global_default_address_space: "global" })
}

async fn request_pool(State(e): PluginState, b: Bytes) -> Answer {
    let r: RequestPool = decode!("RequestPool", b);
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (pool, sub) = (some(&r.pool), some(&r.sub_pool));
    let res = e.ipam_request_pool(pool.as_deref(), sub.as_deref(), r.v6).await;
    done(
        "RequestPool",
        res.map(|(id, pool)| PoolGranted { pool_id: id, pool: pool.to_string(), data: BTreeMap::new() }),
    )
}

async fn release_pool(State(e): PluginState, b: Bytes) -> Answer {
    let r: PoolRef = decode!("ReleasePool", b);
    done("ReleasePool", e.ipam_release_pool(&r.pool_id).await.map(|()| Empty {}))
}

async fn request_address(State(e): PluginState, b: Bytes) -> Answer {
    let r: RequestAddress = decode!("RequestAddress", b);
    let res = async {
        let want = parse_cidr_addr("Address", &r.address)?;
        let gateway = r.options.get("RequestAddressType").is_some_and(|t| t == GATEWAY_REQUEST);
        e.ipam_request_address(&r.pool_id, want, gateway).await
    }
    .await;
    done(
        "RequestAddress",
        res.map(|(ip, prefix)| AddressGranted { address: format!("{ip}/{prefix}"), data: BTreeMap::new() }),
    )
}

async fn release_address(State(e): PluginState, b: Bytes) -> Answer {
    let r: ReleaseAddress = decode!("ReleaseAddress", b);
    let res = async {
        let ip = parse_cidr_addr("Address", &r.address)?
            .ok_or_else(|| Error::invalid("Address", "", "an address to release is needed"))?;
        e.ipam_release_address(&r.pool_id, ip).await
    }
    .await;
    done("ReleaseAddress", res.map(|()| Empty {}))
}
