//! `dataplane run|create|start|stop|rm|ps|inspect|logs|port`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use std::collections::BTreeMap;

use super::format::Format;
use super::print_table;
use crate::api::client::{Client, enc};
use crate::api::wire::*;

#[derive(Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  dataplane run -d --name web --network mybridge --network-alias forever sleep infinity\n  dataplane run --rm --network none ip addr"
)]
pub struct RunArgs {
    /// Run in the background and print the sandbox id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when its command exits.
    #[arg(long)]
    rm: bool,
    #[command(flatten)]
    sandbox: CreateArgs,
}

#[derive(Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  dataplane create --name later --network mybridge sleep infinity\n  dataplane create --name adopted --netns /run/netns/foo"
)]
pub struct CreateArgs {
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// The sandbox's name (its DNS name on user networks); default: sandbox_ and 8 hex digits.
    #[arg(long, allow_hyphen_values = true)]
    name: Option<String>,
    /// The sandbox's hostname (default: its 12-digit ID).
    #[arg(long, short = 'h', allow_hyphen_values = true)]
    hostname: Option<String>,
    /// NET | host | none | container:NAME (default: bridge).
    #[arg(long, alias = "net", default_value = "", hide_default_value = true)]
    network: String,
    /// Network-scoped alias (user-defined networks only).
    #[arg(long = "network-alias", alias = "net-alias")]
    network_alias: Vec<String>,
    /// IPv4 address on the network (user-defined networks only).
    #[arg(long)]
    ip: Option<String>,
    /// IPv6 address on a dual-stack network (created with --ipv6).
    #[arg(long)]
    ip6: Option<String>,
    /// Publish a port: [IP:][HOST_PORT:]CONTAINER_PORT[/PROTO].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every exposed port on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// Document a port (PORT[-END][/PROTO]); not reachable from outside by itself.
    #[arg(long)]
    expose: Vec<String>,
    /// Adopt an existing network namespace instead of creating one.
    #[arg(long)]
    netns: Option<String>,
    /// Set an environment variable of the process: KEY=VALUE, or KEY to pass this shell's value.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Run the process as USER[:GROUP] or UID[:GID] (default: root).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Output log option: max-size=SIZE (e.g. 10m) or max-file=N (default: the daemon's).
    #[arg(long = "log-opt")]
    log_opt: Vec<String>,
    /// Set a label: KEY=VALUE (`ps --filter label=KEY[=VALUE]` finds it).
    #[arg(short = 'l', long, value_parser = super::key_value)]
    label: Vec<(String, String)>,
    /// Read environment variables from a file (KEY=VALUE or KEY lines; # comments).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Working directory of the process (an absolute path on the host; default /).
    #[arg(short, long)]
    workdir: Option<String>,
    /// A resolver for the sandbox (user networks: the embedded resolver forwards to it).
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// A DNS search domain ("." for none).
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    dns_search: Vec<String>,
    /// A resolv.conf option (ndots:2, timeout:1, …).
    #[arg(long = "dns-option", alias = "dns-opt", value_name = "OPTION")]
    dns_option: Vec<String>,
    /// Add a line to the sandbox's /etc/hosts: NAME:IP (IP may be host-gateway).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// The MAC address of the sandbox's interface on its network.
    #[arg(long = "mac-address", value_name = "MAC")]
    mac_address: Option<String>,
    /// Legacy link to another sandbox on the default bridge: NAME[:ALIAS] in /etc/hosts.
    #[arg(long, value_name = "NAME[:ALIAS]")]
    link: Vec<String>,
    /// Keep stdin open: this terminal's input goes to the process (with -t: a terminal).
    #[arg(short, long)]
    interactive: bool,
    /// Give the process a pseudo-terminal (Ctrl-C, Ctrl-Z and the window size reach it).
    #[arg(short, long)]
    tty: bool,
    /// Command and arguments (the flags before it are ours; everything from the command on is its own).
    #[arg(trailing_var_arg = true)]
    command: Vec<String>,
}

pub async fn create(client: &Client, a: CreateArgs) -> anyhow::Result<ExitCode> {
    run(client, RunArgs { detach: false, rm: false, sandbox: a }, false).await
}

pub async fn run(client: &Client, r: RunArgs, start: bool) -> anyhow::Result<ExitCode> {
    let RunArgs { detach, rm, sandbox: a } = r;
    if start && a.command.is_empty() {
        anyhow::bail!(
            "\"dataplane run\" requires a COMMAND (use \"dataplane create\" for a sandbox without a process)"
        );
    }
    let attached = start && !detach && (a.interactive || a.tty);
    if attached && a.tty && a.interactive && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        anyhow::bail!("the input device is not a TTY (drop -t, or run from a terminal)");
    }
    let (tty, interactive) = (a.tty, a.interactive);
    let req = SandboxCreateRequest {
        hostname: a.hostname,
        cmd: a.command,
        network_mode: a.network,
        aliases: a.network_alias,
        ip: a.ip,
        ip6: a.ip6,
        publish: a.publish,
        publish_all: a.publish_all,
        expose: a.expose,
        netns: a.netns,
        env: {
            let mut env = Vec::new();
            for f in &a.env_file {
                env.extend(super::env_file(f)?);
            }
            env.extend(super::env_args(&a.env));
            env
        },
        user: a.user,
        log_opts: a.log_opt,
        labels: a.label.into_iter().collect(),
        tty: a.tty,
        open_stdin: a.interactive,
        dns: a.dns,
        dns_search: a.dns_search,
        dns_options: a.dns_option,
        extra_hosts: a.add_host,
        links: a.link,
        mac_address: a.mac_address,
        working_dir: a.workdir,
        console_size: if a.tty {
            use std::os::fd::AsFd;
            crate::sys::console::size_of(std::io::stdout().as_fd())
                .or_else(|| crate::sys::console::size_of(std::io::stdin().as_fd()))
        } else {
            None
        },
        // In the foreground the CLI removes it after printing the last output.
        auto_remove: rm && detach,
    };
    let path = match &a.name {
        Some(n) => format!("/dataplane/sandboxes/create?name={}", enc(n)),
        None => "/dataplane/sandboxes/create".to_string(),
    };
    let created: SandboxCreateResponse = client.post(&path, &req).await?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if !start {
        println!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    if let Err(e) = client.post_empty(&format!("/dataplane/sandboxes/{}/start", created.id)).await {
        let _ = client.delete(&format!("/dataplane/sandboxes/{}?force=true", created.id)).await;
        return Err(e);
    }
    if detach {
        println!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    let id = created.id.clone();
    if attached {
        // Attached to its terminal or stdin: the output comes through the pump's socket.
        let info: serde_json::Value = client.get(&format!("/dataplane/sandboxes/{id}/json")).await?;
        let log_path = info["LogPath"].as_str().unwrap_or_default().to_string();
        let daemon_pid = client.daemon_pid().await?;
        // Without a terminal, signals go through the API (a terminal turns Ctrl-C into SIGINT itself).
        let proxy = (!tty).then(|| super::attach::proxy_signals(client, &id));
        let res = super::attach::attach(&log_path, daemon_pid, tty, interactive).await;
        let code = client
            .post::<_, WaitResponse>(&format!("/dataplane/sandboxes/{id}/wait"), &serde_json::json!({}))
            .await;
        if let Some(p) = proxy {
            p.abort();
        }
        if rm {
            let _ = client.delete(&format!("/dataplane/sandboxes/{id}?force=true")).await;
        }
        res?;
        return Ok(ExitCode::from(code?.status_code.clamp(0, 255) as u8));
    }
    // Foreground: stream the output until the command exits; signals go to the process.
    let proxy = super::attach::proxy_signals(client, &id);
    let wait_path = format!("/dataplane/sandboxes/{id}/wait");
    let empty = serde_json::json!({});
    let wait = client.post::<_, WaitResponse>(&wait_path, &empty);
    tokio::pin!(wait);
    let mut printed = 0usize;
    let code = loop {
        tokio::select! {
            r = &mut wait => break r?.status_code,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                printed = print_new(client, &id, printed).await;
            }
        }
    };
    // The log pump may still be writing the last output: read until it stays the same.
    let mut quiet = 0;
    for _ in 0..20 {
        let now = print_new(client, &id, printed).await;
        quiet = if now == printed { quiet + 1 } else { 0 };
        printed = now;
        if quiet >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.abort();
    if rm {
        client.delete(&format!("/dataplane/sandboxes/{id}?force=true")).await?;
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

async fn print_new(client: &Client, id: &str, printed: usize) -> usize {
    use std::io::Write;
    let Ok(text) = client.get_text(&format!("/dataplane/sandboxes/{id}/logs")).await else {
        return printed;
    };
    if text.len() > printed {
        print!("{}", &text[printed..]);
        let _ = std::io::stdout().flush();
    }
    text.len().max(printed)
}

pub async fn each(client: &Client, names: &[String], action: &str) -> anyhow::Result<ExitCode> {
    each_with(client, names, action, "").await
}

/// Posts `action` (with `query`, e.g. `?t=5`) for every name; prints each
/// name done, each error, and fails if any did.
pub async fn each_with(
    client: &Client,
    names: &[String],
    action: &str,
    query: &str,
) -> anyhow::Result<ExitCode> {
    if names.is_empty() {
        anyhow::bail!("\"dataplane {action}\" requires at least 1 argument");
    }
    let (_, failed) = super::each(names, async |n| {
        client.post_empty(&format!("/dataplane/sandboxes/{}/{action}{query}", enc(n))).await?;
        println!("{n}");
        Ok(())
    })
    .await;
    Ok(super::status(failed))
}

/// `wait`: each sandbox's exit code, a line each.
pub async fn wait(client: &Client, names: &[String]) -> anyhow::Result<ExitCode> {
    let (_, failed) = super::each(names, async |n| {
        let w: WaitResponse =
            client.post(&format!("/dataplane/sandboxes/{}/wait", enc(n)), &serde_json::json!({})).await?;
        println!("{}", w.status_code);
        Ok(())
    })
    .await;
    Ok(super::status(failed))
}

pub async fn rm(client: &Client, names: &[String], force: bool) -> anyhow::Result<ExitCode> {
    let q = if force { "?force=true" } else { "" };
    let (_, failed) = super::each(names, async |n| {
        for w in client.delete(&format!("/dataplane/sandboxes/{}{q}", enc(n))).await? {
            eprintln!("WARNING: {w}");
        }
        println!("{n}");
        Ok(())
    })
    .await;
    Ok(super::status(failed))
}

#[derive(Args)]
#[command(
    after_help = "Filters (-f KEY=VALUE, repeatable; one key's values are alternatives, keys all apply):\n  \
    id=PREFIX  name=SUBSTRING  status=created|running|exited  network=NAME|ID  label=KEY[=VALUE]  exited=CODE\n\n\
    Format fields: .ID .Names .Command .CreatedAt .RunningFor .Status .State .Ports .Networks .Labels .Owner .RuntimeID\n\n\
    Examples:\n  dataplane ps -a --filter status=exited -q\n  dataplane rm -f $(dataplane ps -aq)\n  \
    dataplane ps --format 'table {{.Names}}\\t{{.Networks}}\\t{{.Ports}}'"
)]
pub struct PsArgs {
    /// Show all sandboxes (default: running only).
    #[arg(short, long)]
    all: bool,
    /// Only print sandbox IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Filter: id=, name=, status=, network=, label=, exited= (see below).
    #[arg(short, long = "filter", value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Do not truncate IDs and commands.
    #[arg(long)]
    no_trunc: bool,
    /// Show the N sandboxes created last (all states).
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the sandbox created last (all states).
    #[arg(short, long)]
    latest: bool,
    /// table (default), json (one object a line), or a Go template ('table {{.Names}}\t{{.Status}}').
    #[arg(long, default_value = "")]
    format: String,
}

/// One `ps` filter, checked before the daemon is asked.
#[derive(Debug, PartialEq)]
enum Filter {
    Id(String),
    Name(String),
    Status(String),
    Network(String),
    Label(String, Option<String>),
    Exited(i32),
}

fn parse_filter(f: &str) -> anyhow::Result<Filter> {
    let Some((k, v)) = f.split_once('=') else {
        anyhow::bail!("bad format of filter {f:?} (expected name=value)");
    };
    Ok(match k {
        "id" => Filter::Id(v.to_string()),
        "name" => Filter::Name(v.trim_start_matches('/').to_string()),
        "status" => match v {
            "created" | "running" | "exited" | "restarting" | "removing" | "paused" | "dead" => {
                Filter::Status(v.to_string())
            }
            _ => anyhow::bail!(
                "invalid filter 'status={v}': use created, running, exited, restarting, removing, paused or dead"
            ),
        },
        "network" => Filter::Network(v.to_string()),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => Filter::Label(lk.to_string(), Some(lv.to_string())),
            None => Filter::Label(v.to_string(), None),
        },
        "exited" => Filter::Exited(
            v.parse().map_err(|_| anyhow::anyhow!("invalid filter 'exited={v}': not a number"))?,
        ),
        other => anyhow::bail!("invalid filter '{other}': use id, name, status, network, label or exited"),
    })
}

impl Filter {
    fn key(&self) -> u8 {
        match self {
            Filter::Id(_) => 0,
            Filter::Name(_) => 1,
            Filter::Status(_) => 2,
            Filter::Network(_) => 3,
            Filter::Label(..) => 4,
            Filter::Exited(_) => 5,
        }
    }

    fn matches(&self, s: &SandboxSummary, net_ids: &BTreeMap<String, String>) -> bool {
        match self {
            Filter::Id(p) => s.id.starts_with(p.as_str()),
            Filter::Name(n) => s.names.iter().any(|x| x.trim_start_matches('/').contains(n.as_str())),
            Filter::Status(st) => &s.state == st,
            Filter::Network(n) => s.networks.iter().any(|x| {
                x == n
                    || net_ids
                        .get(x)
                        .is_some_and(|id| id == n || (n.len() >= 3 && id.starts_with(n.as_str())))
            }),
            Filter::Label(k, v) => s.labels.get(k).is_some_and(|x| v.as_ref().is_none_or(|v| v == x)),
            Filter::Exited(c) => s.state == "exited" && s.exit_code == *c,
        }
    }
}

/// Docker's words for a duration ("About a minute", "3 hours").
pub(crate) fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    let mins = d.num_minutes();
    let hours = (d.num_seconds() as f64 / 3600.0 + 0.5) as i64;
    match () {
        _ if secs < 1 => "Less than a second".into(),
        _ if secs == 1 => "1 second".into(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if mins == 1 => "About a minute".into(),
        _ if mins < 60 => format!("{mins} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", d.num_hours() / 24 / 365),
    }
}

fn since(now: chrono::DateTime<chrono::Utc>, t: &str) -> Option<chrono::Duration> {
    chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| now - t.with_timezone(&chrono::Utc))
}

/// The `ps` row: the fields a `--format` template reaches, as Docker names them.
fn ps_row(s: &SandboxSummary, now: chrono::DateTime<chrono::Utc>, no_trunc: bool) -> serde_json::Value {
    let command = match (&s.owner, &s.runtime_id) {
        (Some(o), Some(r)) => format!("({o} {})", if no_trunc { r.as_str() } else { &r[..r.len().min(12)] }),
        _ if no_trunc => format!("\"{}\"", s.command),
        _ => {
            let c: Vec<char> = s.command.chars().collect();
            let shown: String =
                if c.len() > 20 { c[..19].iter().collect::<String>() + "…" } else { s.command.clone() };
            format!("\"{shown}\"")
        }
    };
    let status = match s.state.as_str() {
        "running" => match since(now, &s.started_at) {
            Some(d) => format!("Up {}", human_duration(d)),
            None => "Up".into(),
        },
        "exited" => match since(now, &s.finished_at) {
            Some(d) => format!("Exited ({}) {} ago", s.exit_code, human_duration(d)),
            None => format!("Exited ({})", s.exit_code),
        },
        _ => "Created".into(),
    };
    let created = chrono::DateTime::parse_from_rfc3339(&s.created).ok();
    serde_json::json!({
        "ID": if no_trunc { s.id.clone() } else { s.id[..s.id.len().min(12)].to_string() },
        "Names": s.names.iter().map(|n| n.trim_start_matches('/')).collect::<Vec<_>>().join(","),
        "Command": command,
        "CreatedAt": created.map(|c| c.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string()).unwrap_or_default(),
        "RunningFor": created.map(|c| format!("{} ago", human_duration(now - c.with_timezone(&chrono::Utc)))).unwrap_or_default(),
        "Status": status,
        "State": s.state,
        "Ports": s.ports,
        "Networks": s.networks.join(","),
        "Labels": s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Owner": s.owner.clone().unwrap_or_default(),
        "RuntimeID": s.runtime_id.clone().unwrap_or_default(),
    })
}

pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<ExitCode> {
    let filters: Vec<Filter> = a.filter.iter().map(|f| parse_filter(f)).collect::<anyhow::Result<_>>()?;
    let format = Format::parse(&a.format)?;
    // A status filter, --last and --latest look past the running ones, as in Docker.
    let all = a.all
        || a.latest
        || a.last.is_some()
        || filters.iter().any(|f| matches!(f, Filter::Status(_) | Filter::Exited(_)));
    let mut list: Vec<SandboxSummary> = client.get(&format!("/dataplane/sandboxes/json?all={all}")).await?;
    let net_ids: BTreeMap<String, String> = if filters.iter().any(|f| matches!(f, Filter::Network(_))) {
        let nets: Vec<NetworkResource> = client.get("/networks").await?;
        nets.into_iter().map(|n| (n.name, n.id)).collect()
    } else {
        BTreeMap::new()
    };
    list.retain(|s| {
        (0..6u8).all(|k| {
            let of_key: Vec<&Filter> = filters.iter().filter(|f| f.key() == k).collect();
            of_key.is_empty() || of_key.iter().any(|f| f.matches(s, &net_ids))
        })
    });
    // Newest first (the daemon's order); --last N / --latest keep the first N.
    if let Some(n) = a.last.or(a.latest.then_some(1)) {
        list.truncate(n);
    }
    let now = chrono::Utc::now();
    if a.quiet {
        for s in &list {
            println!("{}", if a.no_trunc { s.id.as_str() } else { &s.id[..s.id.len().min(12)] });
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<serde_json::Value> = list.iter().map(|s| ps_row(s, now, a.no_trunc)).collect();
    format.print_list(
        &rows,
        &[
            ("ID", "CONTAINER ID"),
            ("RunningFor", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("RuntimeID", "RUNTIME ID"),
        ],
        |rows| {
            let cells = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    ["ID", "Command", "RunningFor", "Status", "Ports", "Networks", "Names"]
                        .iter()
                        .map(|k| cells(r, k))
                        .collect()
                })
                .collect();
            print_table(
                &["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NETWORKS", "NAMES"],
                &body,
            );
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(client: &Client, names: &[String], format: &str) -> anyhow::Result<ExitCode> {
    let format = Format::parse(format)?;
    let (out, failed) = super::each(names, async |n| {
        client.get::<serde_json::Value>(&format!("/dataplane/sandboxes/{}/json", enc(n))).await
    })
    .await;
    super::print_inspect(&out, &format)?;
    Ok(super::status(failed))
}

#[derive(Args)]
#[command(after_help = "Examples:\n  dataplane logs -f --tail 10 web\n  dataplane logs -t --since 10m web")]
pub struct LogsArgs {
    /// Follow the output until the sandbox's process ends.
    #[arg(short, long)]
    follow: bool,
    /// Lines from the end to show ("all" or a number).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show each line's time (RFC 3339, nanoseconds).
    #[arg(short, long)]
    timestamps: bool,
    /// Only lines since a time: RFC 3339 (2026-12-01T10:00:00Z), Unix seconds, or a duration back from now (10m, 1h30m).
    #[arg(long)]
    since: Option<String>,
    /// Only lines before a time (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    name: String,
}

/// A point in time as `--since`/`--until` take it, as Unix seconds.
pub(crate) fn parse_time(s: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<f64> {
    let t = s.trim();
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp() as f64 + f64::from(dt.timestamp_subsec_nanos()) / 1e9);
    }
    if let Ok(secs) = t.parse::<f64>() {
        return Ok(secs);
    }
    // A Go duration: 1h30m, 10m, 45s, 500ms.
    let mut total = 0f64;
    let mut num = String::new();
    let mut rest = t;
    let bad = || {
        anyhow::anyhow!(
            "invalid time {s:?}: use RFC 3339 (2026-12-01T10:00:00Z), Unix seconds, or a duration such as 10m or 1h30m"
        )
    };
    while !rest.is_empty() {
        let c = rest.chars().next().ok_or_else(bad)?;
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            rest = &rest[1..];
            continue;
        }
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else {
            match c {
                'h' => (3600.0, 1),
                'm' => (60.0, 1),
                's' => (1.0, 1),
                _ => return Err(bad()),
            }
        };
        let n: f64 = num.parse().map_err(|_| bad())?;
        total += n * unit;
        num.clear();
        rest = &rest[len..];
    }
    if !num.is_empty() || t.is_empty() {
        return Err(bad());
    }
    let now_secs = now.timestamp() as f64 + f64::from(now.timestamp_subsec_nanos()) / 1e9;
    Ok(now_secs - total)
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let now = chrono::Utc::now();
    let mut q = vec![format!("timestamps={}", a.timestamps), format!("follow={}", a.follow)];
    if a.tail != "all" {
        let n: usize =
            a.tail.parse().map_err(|_| anyhow::anyhow!("--tail {:?}: use a number or all", a.tail))?;
        q.push(format!("tail={n}"));
    }
    if let Some(s) = &a.since {
        q.push(format!("since={}", parse_time(s, now)?));
    }
    if let Some(u) = &a.until {
        q.push(format!("until={}", parse_time(u, now)?));
    }
    let path = format!("/dataplane/sandboxes/{}/logs?{}", enc(&a.name), q.join("&"));
    client
        .get_stream(
            &path,
            || {},
            |data| {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush()).is_ok()
            },
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Prints published ports as Docker does: `80/tcp -> 0.0.0.0:8080`, or
/// with a PORT[/PROTO] argument just the host addresses.
pub async fn port(client: &Client, name: &str, filter: Option<&str>) -> anyhow::Result<ExitCode> {
    let v: serde_json::Value = client.get(&format!("/dataplane/sandboxes/{}/json", enc(name))).await?;
    let mut lines = Vec::new();
    let want = filter.map(|f| if f.contains('/') { f.to_string() } else { format!("{f}/tcp") });
    if let Some(ports) = v["NetworkSettings"]["Ports"].as_object() {
        let mut keys: Vec<&String> = ports.keys().collect();
        keys.sort_by_key(|k| {
            (k.split('/').next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0), k.to_string())
        });
        for k in keys {
            if want.as_ref().is_some_and(|w| w != k) {
                continue;
            }
            for b in ports[k].as_array().into_iter().flatten() {
                let ip = b["HostIp"].as_str().unwrap_or("");
                let ip = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
                let addr = format!("{ip}:{}", b["HostPort"].as_str().unwrap_or(""));
                lines.push(if want.is_some() { addr } else { format!("{k} -> {addr}") });
            }
        }
    }
    if let (Some(w), true) = (&want, lines.is_empty()) {
        anyhow::bail!("Error: No public port '{w}' published for {name}");
    }
    for l in lines {
        println!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}
