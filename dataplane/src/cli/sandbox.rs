//! `dataplane run|create|start|stop|rm|ps|inspect|logs|port`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::print_table;
use crate::api::client::{Client, enc};
use crate::api::wire::*;

#[derive(Args)]
#[command(
    disable_help_flag = true,
    after_help = "Examples:\n  dataplane run -d --name web --network mybridge --network-alias forever sleep infinity\n  dataplane run --rm --network none ip addr\n  dataplane create --name adopted --netns /run/netns/foo"
)]
pub struct RunArgs {
    /// Print help (`-h` is --hostname, as in Docker).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Run in the background and print the sandbox id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when its command exits.
    #[arg(long)]
    rm: bool,
    #[arg(long)]
    name: Option<String>,
    #[arg(long, short = 'h')]
    hostname: Option<String>,
    /// NET | host | none | container:NAME (default: bridge).
    #[arg(long, alias = "net", default_value = "")]
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
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn run(client: &Client, a: RunArgs, start: bool) -> anyhow::Result<ExitCode> {
    if start && a.command.is_empty() {
        anyhow::bail!(
            "\"dataplane run\" requires a COMMAND (use \"dataplane create\" for a sandbox without a process)"
        );
    }
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
        env: super::env_args(&a.env),
        user: a.user,
        log_opts: a.log_opt,
        // In the foreground the CLI removes it after printing the last output.
        auto_remove: a.rm && a.detach,
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
    if a.detach {
        println!("{}", created.id);
        return Ok(ExitCode::SUCCESS);
    }
    // Foreground: stream the output until the command exits.
    let id = created.id.clone();
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
    print_new(client, &id, printed).await;
    if a.rm {
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
    if names.is_empty() {
        anyhow::bail!("\"dataplane {action}\" requires at least 1 argument");
    }
    let mut failed = false;
    for n in names {
        match client.post_empty(&format!("/dataplane/sandboxes/{}/{action}", enc(n))).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn rm(client: &Client, names: &[String], force: bool) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for n in names {
        let q = if force { "?force=true" } else { "" };
        match client.delete(&format!("/dataplane/sandboxes/{}{q}", enc(n))).await {
            Ok(warnings) => {
                for w in warnings {
                    eprintln!("WARNING: {w}");
                }
                println!("{n}");
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

pub async fn ps(client: &Client, all: bool, format: &str) -> anyhow::Result<ExitCode> {
    let list: Vec<SandboxSummary> = client.get(&format!("/dataplane/sandboxes/json?all={all}")).await?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&list)?),
        "table" => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|s| {
                    vec![
                        s.id[..12].to_string(),
                        match (&s.owner, &s.runtime_id) {
                            // A runtime's container: whose, and its ID there.
                            (Some(o), Some(r)) => format!("({o} {})", &r[..r.len().min(12)]),
                            _ => format!("\"{}\"", s.command.chars().take(20).collect::<String>()),
                        },
                        s.status.clone(),
                        s.network_mode.clone(),
                        s.names.first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["CONTAINER ID", "COMMAND", "STATUS", "NETWORK", "NAMES"], &rows);
        }
        other => anyhow::bail!("--format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(client: &Client, names: &[String], format: &str) -> anyhow::Result<ExitCode> {
    let mut out = Vec::new();
    for n in names {
        out.push(client.get::<serde_json::Value>(&format!("/dataplane/sandboxes/{}/json", enc(n))).await?);
    }
    super::print_inspect(&out, format)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(client: &Client, name: &str) -> anyhow::Result<ExitCode> {
    print!("{}", client.get_text(&format!("/dataplane/sandboxes/{}/logs", enc(name))).await?);
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
