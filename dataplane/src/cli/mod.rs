//! The `dataplane` command line. Thin: parse, call the API, print.

mod ct;
mod exec;
mod firewall;
mod format;
mod lb;
mod monitor;
mod network;
mod sandbox;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::api::client::Client;
use crate::sys::paths;

#[derive(Parser)]
#[command(
    name = "dataplane",
    version,
    about = "Docker-style container networking whose packet path runs in eBPF",
    after_help = "Examples:\n  dataplane daemon\n  dataplane network create --subnet 10.10.0.0/24 mynet\n  dataplane run -d --name web --network mynet sleep infinity\n  dataplane exec web ip addr\n  dataplane stats"
)]
pub struct Cli {
    /// Daemon socket (also DATAPLANE_SOCKET).
    #[arg(long, global = true, env = paths::SOCKET_ENV, default_value = paths::DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List the hosts (`*` marks this one).
    Ls,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground.
    Daemon(crate::daemon::DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// The hosts of this daemon's cluster (`daemon --cluster-store`).
    #[command(subcommand)]
    Node(NodeCmd),
    /// Create a sandbox and start its command.
    Run(sandbox::RunArgs),
    /// Create a sandbox (network namespace) without starting a process.
    Create(sandbox::RunArgs),
    /// Start the command of created or stopped sandboxes.
    Start { names: Vec<String> },
    /// Stop sandboxes (SIGTERM, then SIGKILL after 10 s).
    Stop { names: Vec<String> },
    /// Remove sandboxes.
    Rm {
        /// Stop a running sandbox first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List sandboxes.
    Ps {
        /// Show all (default: running only).
        #[arg(short, long)]
        all: bool,
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show a sandbox as JSON.
    Inspect {
        /// json, or a template such as '{{.NetworkSettings.SandboxKey}}'.
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a sandbox's output.
    Logs { name: String },
    /// List a sandbox's published ports.
    Port { name: String, port: Option<String> },
    /// Run a command inside a sandbox's namespaces.
    Exec(exec::ExecArgs),
    /// Connection tracking: list or flush the flows the datapath tracks.
    #[command(subcommand)]
    Ct(ct::CtCmd),
    /// Stream drop and policy events live, with reasons and sandbox names.
    Monitor {
        /// Output format: text or json (one object per line).
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Alias load balancing: virtual IPs, backends, flows per backend.
    #[command(subcommand)]
    Lb(lb::LbCmd),
    /// Who may reach published ports from outside (Docker's DOCKER-USER chain).
    #[command(subcommand)]
    Firewall(firewall::FirewallCmd),
    /// Datapath counters (packets and bytes by verdict and direction).
    Stats {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// (internal) Copies a sandbox's output from stdin to its bounded log files.
    #[command(hide = true)]
    LogPump {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        max_size: u64,
        #[arg(long)]
        max_files: u32,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `dataplane ps | head` ends quietly, like other Unix tools (Rust
    // ignores SIGPIPE, which turns a closed pipe into a panic on print).
    if !matches!(cli.command, Command::Daemon(_)) {
        // SAFETY: restoring the default disposition, before any thread starts.
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    // `exec` must not start threads before it forks into the sandbox.
    if let Command::Exec(args) = &cli.command {
        return exec::run(&cli.socket, args);
    }
    if let Command::LogPump { file, max_size, max_files } = &cli.command {
        let limits = crate::sys::logs::LogLimits { max_size: *max_size, max_files: *max_files };
        if let Err(e) = crate::sys::process::leave_pin_mounts() {
            eprintln!("log pump: a mount namespace of its own: {e}");
        }
        return match crate::sys::logs::pump(std::io::stdin().lock(), file, limits) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("log pump for {}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    // The daemon's socket is written from the runtime's workers: there a
    // daemon that dies mid-request must be an error (EPIPE) we report,
    // not a SIGPIPE that ends the CLI without a word.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(|| {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGPIPE);
            let _ =
                nix::sys::signal::pthread_sigmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&set), None);
        })
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dataplane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli));
    // Threads still blocked reaping sandbox processes must not keep us alive.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = Client::new(cli.socket.clone());
    match cli.command {
        Command::Daemon(a) => {
            crate::daemon::main(cli.socket, a).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Network(cmd) => network::run(&client, cmd).await,
        Command::Node(NodeCmd::Ls) => {
            let rows: Vec<crate::api::wire::NodeRow> = client.get("/dataplane/nodes").await?;
            println!("{:<34} {:<16} {:<20} {:<7}", "ID", "ADDRESS", "HOSTNAME", "STATE");
            for r in rows {
                let id = if r.is_self { format!("{} *", r.id) } else { r.id };
                println!("{:<34} {:<16} {:<20} {:<7}", id, r.address, r.hostname, r.state);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(a) => sandbox::run(&client, a, true).await,
        Command::Create(a) => sandbox::run(&client, a, false).await,
        Command::Start { names } => sandbox::each(&client, &names, "start").await,
        Command::Stop { names } => sandbox::each(&client, &names, "stop").await,
        Command::Rm { force, names } => sandbox::rm(&client, &names, force).await,
        Command::Ps { all, format } => sandbox::ps(&client, all, &format).await,
        Command::Inspect { format, names } => sandbox::inspect(&client, &names, &format).await,
        Command::Logs { name } => sandbox::logs(&client, &name).await,
        Command::Port { name, port } => sandbox::port(&client, &name, port.as_deref()).await,
        Command::Stats { format } => stats::run(&client, &format).await,
        Command::Ct(cmd) => ct::run(&client, cmd).await,
        Command::Lb(cmd) => lb::run(&client, cmd).await,
        Command::Firewall(cmd) => firewall::run(&client, cmd).await,
        Command::Monitor { format } => monitor::run(&client, &format).await,
        Command::Exec(_) | Command::LogPump { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Prints inspect results: a JSON array, or one rendered template per object.
pub(crate) fn print_inspect(items: &[serde_json::Value], format: &str) -> anyhow::Result<()> {
    if format == "json" {
        println!("{}", serde_json::to_string_pretty(items)?);
    } else {
        for v in items {
            println!("{}", format::render(format, v)?);
        }
    }
    Ok(())
}

/// `-e` values as Docker reads them: `KEY=VALUE` as given; a bare `KEY`
/// takes this shell's value (and is left out when the shell has none).
pub(crate) fn env_args(args: &[String]) -> Vec<String> {
    args.iter()
        .filter_map(|a| match a.split_once('=') {
            Some(_) => Some(a.clone()),
            None => std::env::var(a).ok().map(|v| format!("{a}={v}")),
        })
        .collect()
}

/// Parses `K=V` (labels, options, aux addresses).
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Prints rows as aligned columns (like Docker's tables).
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
