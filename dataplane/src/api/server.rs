//! Request handlers and the router. Handlers are thin: decode, call the
//! engine, encode. Errors become `{"message": …}` with Docker's status codes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::API_VERSION;
use super::wire::*;
use crate::domain::ipam::IpamRequest;
use crate::domain::ipam6::Ipam6Request;
use crate::domain::ports;
use crate::engine::{Engine, NetworkCreate, SandboxCreate};
use crate::error::Error;

type AppState = State<Arc<Engine>>;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, Json(ErrorBody { message: self.to_string() })).into_response()
    }
}

type Res<T> = Result<T, Error>;

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route("/networks/{id}", get(inspect_network).delete(remove_network))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route("/dataplane/sandboxes/json", get(list_sandboxes))
        .route("/dataplane/sandboxes/create", post(create_sandbox))
        .route("/dataplane/sandboxes/{id}/json", get(inspect_sandbox))
        .route("/dataplane/sandboxes/{id}/start", post(start_sandbox))
        .route("/dataplane/sandboxes/{id}/stop", post(stop_sandbox))
        .route("/dataplane/sandboxes/{id}/wait", post(wait_sandbox))
        .route("/dataplane/sandboxes/{id}/logs", get(logs))
        .route("/dataplane/sandboxes/{id}", delete(remove_sandbox))
        // What dockerd serves and we do not: said plainly, not half-done.
        .route("/containers", any(not_dockerd))
        .route("/containers/{*rest}", any(not_dockerd))
        .route("/images", any(not_dockerd))
        .route("/images/{*rest}", any(not_dockerd))
        .route("/info", any(not_dockerd))
        .route("/events", any(not_dockerd))
        .route("/dataplane/cni", post(super::cni::call))
        .route("/dataplane/stats", get(stats))
        .route("/dataplane/nodes", get(nodes))
        .route("/dataplane/conntrack", get(ct_list))
        .route("/dataplane/lb", get(lb_list))
        .route("/dataplane/monitor", get(monitor))
        .route("/dataplane/conntrack/flush", post(ct_flush))
        .route("/dataplane/firewall", get(firewall_list).post(firewall_add))
        .route("/dataplane/firewall/{id}", delete(firewall_rm))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&engine.telemetry), count_request))
        .route("/metrics", get(metrics))
        .with_state(engine)
        .layer(axum::middleware::map_response(add_headers))
}

/// Only `GET /metrics`: what `daemon --metrics-addr` serves over TCP.
pub fn metrics_router(engine: Arc<Engine>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(engine)
}

/// `GET /metrics`: every series in the OpenMetrics text format (read on a
/// blocking thread: a scrape walks BPF maps).
async fn metrics(State(e): AppState) -> Response {
    let t = Arc::clone(&e.telemetry);
    match tokio::task::spawn_blocking(move || t.encode()).await {
        Ok(Ok(body)) => {
            ([(axum::http::header::CONTENT_TYPE, crate::telemetry::CONTENT_TYPE)], body).into_response()
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

/// Counts an API request by its route (the pattern, not the path: no
/// label per container name), method and status, with its duration.
async fn count_request(
    State(t): State<Arc<crate::telemetry::Telemetry>>,
    route: axum::extract::MatchedPath,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let (route, method) = (route.as_str().to_string(), req.method().to_string());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    t.api.observe(&route, &method, resp.status().as_u16(), t0.elapsed());
    resp
}

/// Docker's container, image and system routes on our socket: 501 in
/// Docker's error shape, saying what this socket is and how to run
/// containers on our datapath.
async fn not_dockerd(uri: Uri) -> Response {
    let message = format!(
        "{} is not served here: this is dataplane's socket, which manages networks (docker network …) and runs no containers. \
         To run Docker containers on dataplane's datapath, point docker at dockerd and create the network with \
         `docker network create -d dataplane NAME`; to run a process in a sandbox, use `dataplane run`.",
        uri.path()
    );
    (StatusCode::NOT_IMPLEMENTED, Json(ErrorBody { message })).into_response()
}

/// Strips Docker's `/v1.NN` prefix before routing.
pub fn strip_version(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v1.")
        && let Some(i) = rest.find('/')
        && rest[..i].chars().all(|c| c.is_ascii_digit())
    {
        let new_path = rest[i..].to_string();
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        if let Ok(uri) = pq.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    req
}

async fn add_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Server", HeaderValue::from_static("dataplane"));
    resp
}

async fn ping() -> &'static str {
    "OK"
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "KernelVersion": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        "Components": [{"Name": "dataplane", "Version": env!("CARGO_PKG_VERSION")}],
    }))
}

/// Docker's `filters` query: `{"name":{"x":true}}` or `{"name":["x"]}`.
#[derive(Deserialize, Default)]
struct ListQuery {
    filters: Option<String>,
    all: Option<String>,
}

fn parse_filters(raw: &Option<String>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return out };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(raw) else {
        return out;
    };
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let vals: Vec<String> = match val {
                serde_json::Value::Object(m) => m.keys().cloned().collect(),
                serde_json::Value::Array(a) => {
                    a.iter().filter_map(|x| x.as_str().map(String::from)).collect()
                }
                _ => vec![],
            };
            out.insert(k.clone(), vals);
        }
    }
    out
}

async fn list_networks(State(e): AppState, Query(q): Query<ListQuery>) -> Res<Json<Vec<NetworkResource>>> {
    let state = e.state()?;
    let filters = parse_filters(&q.filters);
    let mut nets: Vec<_> = state
        .networks
        .iter()
        .filter(|n| filters.get("name").is_none_or(|v| v.iter().any(|x| n.name.contains(x.as_str()))))
        .filter(|n| filters.get("id").is_none_or(|v| v.iter().any(|x| n.id.starts_with(x.as_str()))))
        .filter(|n| filters.get("driver").is_none_or(|v| v.iter().any(|x| n.driver.name() == x)))
        .map(|n| network_resource(&state, n))
        .collect();
    nets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(nets))
}

async fn inspect_network(State(e): AppState, Path(id): Path<String>) -> Res<Json<NetworkResource>> {
    let state = e.state()?;
    let n = state.network(&id).ok_or(Error::NetworkNotFound(id))?;
    Ok(Json(network_resource(&state, n)))
}

async fn create_network(
    State(e): AppState,
    Json(req): Json<NetworkCreateRequest>,
) -> Res<(StatusCode, Json<NetworkCreateResponse>)> {
    let ipam = req.ipam.unwrap_or_default();
    if !ipam.driver.is_empty() && ipam.driver != "default" {
        return Err(Error::invalid("IPAM driver", &ipam.driver, "only the default IPAM driver is supported"));
    }
    let (ipam_req, ipam6) = split_ipam_configs(ipam.config.unwrap_or_default())?;
    let id = e
        .create_network(NetworkCreate {
            ipam: ipam_req,
            ipv6: req.enable_ipv6 == Some(true),
            ipam6,
            internal: req.internal,
            labels: req.labels.unwrap_or_default(),
            ..NetworkCreate::new(&req.name, &req.driver, req.options.unwrap_or_default())?
        })
        .await?;
    Ok((StatusCode::CREATED, Json(NetworkCreateResponse { id, warning: String::new() })))
}

/// Docker's IPAM configs, at most one per address family: the IPv4 one
/// (a config whose subnet, range or gateway is IPv6 is the IPv6 one), each
/// checked to hold one family only.
fn split_ipam_configs(configs: Vec<IpamConfig>) -> Result<(IpamRequest, Ipam6Request), Error> {
    let given = |s: String| (!s.is_empty()).then_some(s);
    let (mut v4, mut v6) = (None, None);
    for c in configs {
        let fields = [&c.subnet, &c.ip_range, &c.gateway];
        let six = fields.iter().filter(|f| f.contains(':')).count();
        let four = fields.iter().filter(|f| !f.is_empty() && !f.contains(':')).count();
        let shown = fields.iter().filter(|f| !f.is_empty()).map(|f| f.as_str()).collect::<Vec<_>>().join(" ");
        if six > 0 && four > 0 {
            return Err(Error::invalid("IPAM config", shown, "mixes IPv4 and IPv6 values"));
        }
        if six > 0 {
            if !c.auxiliary_addresses.is_empty() {
                return Err(Error::Unsupported(
                    "auxiliary addresses are supported in the IPv4 config only".into(),
                ));
            }
            if v6.is_some() {
                return Err(Error::invalid("IPAM config", shown, "one IPv6 config per network (two given)"));
            }
            v6 = Some(Ipam6Request {
                subnet: given(c.subnet),
                ip_range: given(c.ip_range),
                gateway: given(c.gateway),
            });
        } else {
            if v4.is_some() {
                return Err(Error::invalid("IPAM config", shown, "one IPv4 config per network (two given)"));
            }
            v4 = Some(IpamRequest {
                subnet: given(c.subnet),
                ip_range: given(c.ip_range),
                gateway: given(c.gateway),
                aux: c.auxiliary_addresses,
            });
        }
    }
    Ok((v4.unwrap_or_default(), v6.unwrap_or_default()))
}

async fn remove_network(State(e): AppState, Path(id): Path<String>) -> Res<Response> {
    let removed = e.remove_network(&id).await?;
    Ok(with_warnings(StatusCode::NO_CONTENT, removed.warnings))
}

async fn prune_networks(State(e): AppState) -> Res<Json<serde_json::Value>> {
    let removed = e.prune_networks().await?;
    Ok(Json(serde_json::json!({ "NetworksDeleted": removed })))
}

async fn connect(
    State(e): AppState,
    Path(id): Path<String>,
    Json(req): Json<ConnectRequest>,
) -> Res<StatusCode> {
    let cfg = req.endpoint_config.unwrap_or_default();
    let (ip, ip6) = cfg.ipam_config.map(|c| (c.ipv4_address, c.ipv6_address)).unwrap_or_default();
    let given = |s: String| (!s.is_empty()).then_some(s);
    let (ip, ip6) = (given(ip), given(ip6));
    e.connect(&id, &req.container, ip.as_deref(), ip6.as_deref(), &cfg.aliases.unwrap_or_default()).await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(e): AppState,
    Path(id): Path<String>,
    Json(req): Json<DisconnectRequest>,
) -> Res<Response> {
    let warnings = e.disconnect(&id, &req.container).await?;
    Ok(with_warnings(StatusCode::OK, warnings))
}

/// `status` with no body, or 200 with the warnings when there are any.
fn with_warnings(status: StatusCode, warnings: Vec<String>) -> Response {
    if warnings.is_empty() {
        status.into_response()
    } else {
        (StatusCode::OK, Json(Warnings { warnings })).into_response()
    }
}

async fn list_sandboxes(State(e): AppState, Query(q): Query<ListQuery>) -> Res<Json<Vec<SandboxSummary>>> {
    let state = e.state()?;
    let all = matches!(q.all.as_deref(), Some("1" | "true"));
    let mut out: Vec<_> =
        // Docker's containers are listed by Docker (`docker ps`); a CNI
        // runtime's are listed here, with their container ID.
        state
            .sandboxes
            .iter()
            .filter(|s| s.owner != Some(crate::domain::model::Owner::Docker) && (all || s.is_live()))
            .map(|s| sandbox_summary(&state, s))
            .collect();
    out.sort_by(|a, b| b.created.cmp(&a.created));
    Ok(Json(out))
}

#[derive(Deserialize)]
struct NameQuery {
    name: Option<String>,
}

async fn create_sandbox(
    State(e): AppState,
    Query(q): Query<NameQuery>,
    Json(req): Json<SandboxCreateRequest>,
) -> Res<(StatusCode, Json<SandboxCreateResponse>)> {
    let created = e
        .create_sandbox(SandboxCreate {
            name: q.name,
            hostname: req.hostname,
            network: req.network_mode,
            aliases: req.aliases,
            ip: req.ip,
            ip6: req.ip6,
            publish: req.publish.iter().map(|p| ports::parse_publish(p)).collect::<Result<_, _>>()?,
            publish_all: req.publish_all,
            expose: req
                .expose
                .iter()
                .map(|p| ports::parse_expose(p))
                .collect::<Result<Vec<_>, _>>()?
                .concat(),
            cmd: req.cmd,
            netns_path: req.netns,
            auto_remove: req.auto_remove,
            env: req.env,
            user: req.user,
            log_opts: req.log_opts,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(SandboxCreateResponse { id: created.id, warnings: created.warnings })))
}

async fn inspect_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<Json<serde_json::Value>> {
    let state = e.state()?;
    let sb = state.sandbox(&id).ok_or(Error::SandboxNotFound(id))?;
    Ok(Json(sandbox_inspect(&state, sb)))
}

async fn start_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<StatusCode> {
    e.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stop_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<StatusCode> {
    e.stop(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn wait_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<Json<WaitResponse>> {
    Ok(Json(WaitResponse { status_code: e.wait(&id).await? }))
}

#[derive(Deserialize)]
struct ForceQuery {
    force: Option<String>,
}

async fn remove_sandbox(
    State(e): AppState,
    Path(id): Path<String>,
    Query(q): Query<ForceQuery>,
) -> Res<Response> {
    let force = matches!(q.force.as_deref(), Some("1" | "true"));
    let removed = e.remove_sandbox(&id, force).await?;
    Ok(with_warnings(StatusCode::NO_CONTENT, removed.warnings))
}

async fn logs(State(e): AppState, Path(id): Path<String>) -> Res<String> {
    let state = e.state()?;
    let sb = state.sandbox(&id).ok_or(Error::SandboxNotFound(id))?;
    Ok(crate::sys::logs::read_all(&e.paths.log_file(&sb.id)))
}

async fn nodes(State(e): AppState) -> Res<Json<Vec<NodeRow>>> {
    let (nodes, me) = e.nodes().await?;
    Ok(Json(nodes.into_iter().map(|n| NodeRow::of(n, &me)).collect()))
}

async fn stats(State(e): AppState) -> Res<Json<Stats>> {
    Ok(Json(Stats {
        metrics: e.metrics()?.into_iter().map(MetricRow::from).collect(),
        conntrack: CtSummary::from(e.ct_pressure()),
        events_suppressed: e.events_suppressed()?,
        programs: e.attachments().await?.into_iter().map(ProgramRow::from).collect(),
    }))
}

async fn firewall_list(State(e): AppState) -> Res<Json<Vec<FirewallRow>>> {
    Ok(Json(e.firewall_rules()?.into_iter().map(|(r, m)| FirewallRow::new(r, m)).collect()))
}

async fn firewall_add(
    State(e): AppState,
    Json(req): Json<FirewallRequest>,
) -> Res<(StatusCode, Json<FirewallRow>)> {
    use crate::domain::model::FirewallAction;
    let action = match req.action.as_str() {
        "allow" => FirewallAction::Allow,
        "deny" => FirewallAction::Deny,
        other => return Err(Error::invalid("action", other, "allow or deny")),
    };
    let add = crate::engine::FirewallAdd { action, from: req.from, port: req.port, network: req.network };
    let (rule, matches) = e.firewall_add(add).await?;
    Ok((StatusCode::CREATED, Json(FirewallRow::new(rule, matches))))
}

async fn firewall_rm(State(e): AppState, Path(id): Path<String>) -> Res<StatusCode> {
    let id: u32 = id
        .parse()
        .map_err(|_| Error::invalid("firewall rule ID", &id, "not a number (firewall ls lists them)"))?;
    e.firewall_rm(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ct_list(State(e): AppState) -> Res<Json<Vec<CtRow>>> {
    let now = crate::datapath::conntrack::now_ns();
    let flows = e.ct_flows()?;
    let mut rows: Vec<CtRow> = flows
        .v4
        .iter()
        .map(|f| CtRow::of(f, now))
        .chain(flows.v6.iter().map(|f| CtRow::of(f, now)))
        .collect();
    rows.sort_by(|a, b| (&a.proto, &a.source, &a.destination).cmp(&(&b.proto, &b.source, &b.destination)));
    Ok(Json(rows))
}

async fn lb_list(State(e): AppState) -> Res<Json<Vec<LbRow>>> {
    Ok(Json(e.vips()?.into_iter().map(LbRow::from).collect()))
}

/// Drop and policy events as they happen, one JSON object per line, until
/// the client goes away.
async fn monitor(State(e): AppState) -> Response {
    let sub = e.monitor_subscribe();
    let stop = e.stopping();
    // The stream ends with a last line when the daemon stops, so clients
    // see a clean end of the response instead of a cut connection.
    let stream = futures::stream::unfold((sub, e, stop, false), |(mut sub, e, mut stop, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let ev = tokio::select! {
                r = sub.rx.recv() => Some(r),
                _ = stop.wait_for(|s| *s) => None,
            };
            let Some(ev) = ev else {
                let mut line =
                    serde_json::to_vec(&crate::api::wire::StreamEnd::stopping()).unwrap_or_default();
                line.push(b'\n');
                return Some((Ok::<_, std::convert::Infallible>(line), (sub, e, stop, true)));
            };
            match ev {
                Ok(ev) => {
                    let state = e.state().ok();
                    let m = crate::api::wire::MonitorEvent::from_raw(&ev, state.as_ref());
                    let mut line = serde_json::to_vec(&m).unwrap_or_default();
                    line.push(b'\n');
                    return Some((Ok(line), (sub, e, stop, false)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(missed = n, "monitor client lagging");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    ([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], axum::body::Body::from_stream(stream))
        .into_response()
}

async fn ct_flush(State(e): AppState) -> Res<Json<serde_json::Value>> {
    Ok(Json(serde_json::json!({ "Flushed": e.ct_flush()? })))
}
