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
        .route("/dataplane/sandboxes/{id}/restart", post(restart_sandbox))
        .route("/dataplane/sandboxes/{id}/kill", post(kill_sandbox))
        .route("/dataplane/sandboxes/{id}/rename", post(rename_sandbox))
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
        .route("/dataplane/info", get(info))
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

fn parse_filters(raw: &Option<String>) -> Res<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw else { return Ok(out) };
    let bad = |reason: String| Error::invalid("filters", raw, reason);
    let v = serde_json::from_str::<serde_json::Value>(raw).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| bad("expected an object of filter names".into()))?;
    for (k, val) in obj {
        let vals: Vec<String> = match val {
            // Docker's form: {"name":{"value":true}}.
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            // The older one: {"name":["value"]}.
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_str().map(String::from))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("the values of {k:?} must be strings")))?,
            _ => return Err(bad(format!("the values of {k:?} must be an object or an array"))),
        };
        out.insert(k.clone(), vals);
    }
    Ok(out)
}

async fn list_networks(State(e): AppState, Query(q): Query<ListQuery>) -> Res<Json<Vec<NetworkResource>>> {
    let state = e.state()?;
    let filters = parse_filters(&q.filters)?;
    if let Some(k) =
        filters.keys().find(|k| !["name", "id", "driver", "label", "scope", "type"].contains(&k.as_str()))
    {
        return Err(Error::invalid("filter", k, "unknown: use name, id, driver, label, scope or type"));
    }
    if let Some(t) =
        filters.get("type").into_iter().flatten().find(|t| !["builtin", "custom"].contains(&t.as_str()))
    {
        return Err(Error::invalid("filter", format!("type={t}"), "use builtin or custom"));
    }
    // Each key's values are alternatives; the keys all apply (Docker's rule).
    let passes =
        |key: &str, test: &dyn Fn(&str) -> bool| filters.get(key).is_none_or(|v| v.iter().any(|x| test(x)));
    let builtin = |n: &NetworkResource| matches!(n.name.as_str(), "bridge" | "host" | "none");
    let mut nets: Vec<_> = state
        .networks
        .iter()
        .map(|n| network_resource(&state, n))
        .filter(|n| passes("name", &|x| n.name.contains(x)))
        .filter(|n| passes("id", &|x| n.id.starts_with(x)))
        .filter(|n| passes("driver", &|x| n.driver == x))
        .filter(|n| passes("scope", &|x| n.scope == x))
        .filter(|n| passes("type", &|x| (x == "builtin") == builtin(n)))
        .filter(|n| {
            passes("label", &|x| match x.split_once('=') {
                Some((k, v)) => n.labels.get(k).is_some_and(|have| have == v),
                None => n.labels.contains_key(x),
            })
        })
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
            labels: req.labels,
            tty: req.tty,
            open_stdin: req.open_stdin,
            dns: req.dns,
            dns_search: req.dns_search,
            dns_options: req.dns_options,
            extra_hosts: req.extra_hosts,
            links: req.links,
            mac: req.mac_address,
            workdir: req.working_dir,
            console_size: req.console_size,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(SandboxCreateResponse { id: created.id, warnings: created.warnings })))
}

async fn inspect_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<Json<serde_json::Value>> {
    let state = e.state()?;
    let sb = state.sandbox(&id).ok_or(Error::SandboxNotFound(id))?;
    let mut v = sandbox_inspect(&state, sb);
    // Docker's LogPath; `run -it` finds the pump's attach.sock beside it.
    v["LogPath"] = serde_json::Value::String(e.paths.log_file(&sb.id).display().to_string());
    Ok(Json(v))
}

async fn start_sandbox(State(e): AppState, Path(id): Path<String>) -> Res<StatusCode> {
    e.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct StopQuery {
    /// Seconds between SIGTERM and SIGKILL (Docker's `t`).
    t: Option<String>,
}

impl StopQuery {
    fn grace(&self) -> Result<Option<std::time::Duration>, Error> {
        match self.t.as_deref() {
            None | Some("") => Ok(None),
            Some(t) => t.parse::<u64>().map(|s| Some(std::time::Duration::from_secs(s))).map_err(|_| {
                Error::invalid("t (seconds before SIGKILL)", t, "not a whole number of seconds")
            }),
        }
    }
}

async fn stop_sandbox(
    State(e): AppState,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Res<StatusCode> {
    e.stop(&id, q.grace()?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_sandbox(
    State(e): AppState,
    Path(id): Path<String>,
    Query(q): Query<StopQuery>,
) -> Res<StatusCode> {
    e.stop(&id, q.grace()?).await?;
    e.start(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct KillQuery {
    signal: Option<String>,
}

async fn kill_sandbox(
    State(e): AppState,
    Path(id): Path<String>,
    Query(q): Query<KillQuery>,
) -> Res<StatusCode> {
    e.kill(&id, q.signal.as_deref().filter(|s| !s.is_empty()).unwrap_or("KILL")).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename_sandbox(
    State(e): AppState,
    Path(id): Path<String>,
    Query(q): Query<NameQuery>,
) -> Res<StatusCode> {
    let name = q.name.unwrap_or_default();
    if name.is_empty() {
        return Err(Error::invalid("name", "", "the new name is missing (?name=NEW)"));
    }
    e.rename(&id, &name).await?;
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

#[derive(Deserialize, Default)]
struct LogsQuery {
    timestamps: Option<String>,
    follow: Option<String>,
    tail: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

fn flag(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true"))
}

/// Unix seconds (fractions allowed) or RFC 3339, as nanoseconds since the epoch.
fn time_param(what: &'static str, v: &Option<String>) -> Result<Option<i64>, Error> {
    let Some(t) = v.as_deref().filter(|t| !t.is_empty()) else { return Ok(None) };
    if let Ok(secs) = t.parse::<f64>() {
        return Ok(Some((secs * 1e9) as i64));
    }
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
        .map(Some)
        .ok_or_else(|| Error::invalid(what, t, "use Unix seconds or RFC 3339"))
}

/// A sandbox's output: all of it as plain text by default; with
/// `timestamps`, `tail`, `since`, `until` the lines chosen; with `follow`
/// a stream that goes on until the sandbox's process ends.
async fn logs(State(e): AppState, Path(id): Path<String>, Query(q): Query<LogsQuery>) -> Res<Response> {
    use crate::domain::model::SandboxState;
    use crate::sys::logs;
    let state = e.state()?;
    let sb = state.sandbox(&id).ok_or(Error::SandboxNotFound(id))?.clone();
    let tail = match q.tail.as_deref() {
        None | Some("" | "all") => None,
        Some(t) => {
            Some(t.parse::<usize>().map_err(|_| Error::invalid("tail", t, "a number of lines or all"))?)
        }
    };
    let select = logs::Select {
        timestamps: flag(&q.timestamps),
        tail,
        since: time_param("since", &q.since)?,
        until: time_param("until", &q.until)?,
    };
    let path = e.paths.log_file(&sb.id);
    let follow = flag(&q.follow);
    let (text, follower) = logs::snapshot(&path, &select, follow);
    if !follow {
        return Ok(text.into_response());
    }
    let stop = e.stopping();
    let engine = Arc::clone(&e);
    // First what is kept, then new lines every 200 ms until the process has
    // ended and its last output is read (or the daemon stops).
    struct Follow {
        first: Option<String>,
        follower: logs::Follower,
        engine: Arc<Engine>,
        stop: tokio::sync::watch::Receiver<bool>,
        sb_id: String,
        path: std::path::PathBuf,
        /// Quiet reads since the process ended (its pump may still be writing its last output).
        quiet_after_end: u8,
    }
    let init =
        Follow { first: Some(text), follower, engine, stop, sb_id: sb.id.clone(), path, quiet_after_end: 0 };
    let stream = futures::stream::unfold(init, |mut f| async move {
        if let Some(t) = f.first.take() {
            return Some((Ok::<_, std::convert::Infallible>(t.into_bytes()), f));
        }
        loop {
            // Read after looking at the state: output written before the
            // process ended is read before the stream ends.
            let running = f
                .engine
                .state()
                .ok()
                .and_then(|st| st.sandbox(&f.sb_id).map(|s| s.effective_state() == SandboxState::Running))
                .unwrap_or(false);
            let new = f.follower.poll(&f.path);
            if !new.is_empty() {
                return Some((Ok(new.into_bytes()), f));
            }
            if !running {
                f.quiet_after_end += 1;
                if f.quiet_after_end > 3 {
                    let rest = f.follower.rest();
                    return (!rest.is_empty()).then(|| (Ok(rest.into_bytes()), f));
                }
            }
            let pause = if running { 200 } else { 100 };
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_millis(pause)) => {}
                _ = f.stop.wait_for(|s| *s) => return None,
            }
        }
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// `dataplane info`: what this daemon runs, and on what kernel.
async fn info(State(e): AppState) -> Res<Json<serde_json::Value>> {
    use crate::domain::model::SandboxState;
    let state = e.state()?;
    let mut by_state = BTreeMap::from([("Running", 0u64), ("Created", 0), ("Exited", 0)]);
    for sb in &state.sandboxes {
        let k = match sb.effective_state() {
            SandboxState::Running => "Running",
            SandboxState::Created => "Created",
            SandboxState::Exited(_) => "Exited",
        };
        *by_state.entry(k).or_default() += 1;
    }
    let mut by_driver: BTreeMap<String, u64> = BTreeMap::new();
    for n in &state.networks {
        *by_driver.entry(n.driver.to_string()).or_default() += 1;
    }
    let attachments = e.attachments().await?;
    let hooked = |kind: &str| attachments.iter().any(|a| a.target.starts_with(kind));
    let mut programs: BTreeMap<String, u64> = BTreeMap::new();
    for a in &attachments {
        *programs.entry(a.program.clone()).or_default() += 1;
    }
    let bpffs = e.paths.bpf_maps_dir().to_path_buf();
    let maps = tokio::task::spawn_blocking(move || crate::datapath::programs::map_fill(&bpffs))
        .await
        .map_err(|err| Error::Internal(format!("reading map fill: {err}")))?;
    let cluster = match e.cluster_node() {
        Some(me) => {
            serde_json::json!({"NodeID": me.id, "Address": me.address.to_string(), "Hostname": me.hostname})
        }
        None => serde_json::Value::Null,
    };
    let feature = |name: &str, found: bool, detail: &str| serde_json::json!({"Name": name, "Found": found, "Detail": detail});
    Ok(Json(serde_json::json!({
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "KernelVersion": nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        "StateDir": e.paths.state_dir.display().to_string(),
        "BpfDir": e.paths.bpffs.display().to_string(),
        "Uplink": e.uplink.clone().unwrap_or_default(),
        "Sandboxes": {
            "Total": state.sandboxes.len(),
            "Running": by_state["Running"],
            "Created": by_state["Created"],
            "Exited": by_state["Exited"],
        },
        "Networks": { "Total": state.networks.len(), "ByDriver": by_driver },
        "Cluster": cluster,
        "KernelFeatures": [
            feature("BTF", std::path::Path::new("/sys/kernel/btf/vmlinux").exists(), "/sys/kernel/btf/vmlinux"),
            feature("tcx", hooked("tcx"), "programs attached to interfaces"),
            feature("cgroup-v2 socket hooks", hooked("cgroup"), &e.paths.cgroup.display().to_string()),
            feature("XDP", hooked("xdp"), "firewall drops on the uplink (daemon --xdp)"),
        ],
        "Conntrack": CtSummary::from(e.ct_pressure()),
        "Programs": programs.into_iter().map(|(p, n)| serde_json::json!({"Program": p, "Attachments": n})).collect::<Vec<_>>(),
        "Maps": maps,
    })))
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
