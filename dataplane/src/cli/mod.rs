//! The `dataplane` command line. Thin: parse, call the API, print.

mod ct;
mod exec;
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
use crate::paths::{self, Paths};

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
enum Command {
    /// Run the daemon in the foreground.
    Daemon(DaemonArgs),
    /// Manage networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
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

#[derive(clap::Args)]
#[command(after_help = "Example:\n  dataplane daemon --state-dir /var/lib/dataplane --uplink eth0")]
struct DaemonArgs {
    /// State directory (store, namespace files, logs).
    #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// bpffs directory for pinned maps and links.
    #[arg(long, default_value = paths::DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// cgroup-v2 directory for the socket hooks (default: the cgroup-v2 root).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Uplink interface (default: the interface of the default route).
    #[arg(long)]
    uplink: Option<String>,
    /// The host's resolv.conf: where the embedded DNS forwards names it does not own.
    #[arg(long, default_value = "/etc/resolv.conf")]
    resolv_conf: PathBuf,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Idle timeout of UDP flows, in seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    ct_udp_timeout: u64,
    /// Idle timeout of established TCP flows, in seconds.
    #[arg(long, default_value_t = 86400, value_parser = clap::value_parser!(u64).range(1..))]
    ct_tcp_timeout: u64,
    /// Default size at which a sandbox's output log is rotated (`--log-opt max-size` per sandbox).
    #[arg(long, default_value = "10m")]
    log_max_size: String,
    /// Default number of output log files kept per sandbox (`--log-opt max-file`).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    log_max_file: u32,
    /// Mutations are refused while the state dir's filesystem has less free space than this.
    #[arg(long, default_value = "16m")]
    min_free_space: String,
    /// Idle timeout of flows not yet answered (no traffic back), in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    ct_unreplied_timeout: u64,
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
        let limits = crate::logs::LogLimits { max_size: *max_size, max_files: *max_files };
        if let Err(e) = crate::process::leave_pin_mounts() {
            eprintln!("log pump: a mount namespace of its own: {e}");
        }
        return match crate::logs::pump(std::io::stdin().lock(), file, limits) {
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
            let filter = tracing_subscriber::EnvFilter::try_new(&a.log_level)
                .map_err(|e| anyhow::anyhow!("--log-level {}: {e}", a.log_level))?;
            tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
            let cgroup = match a.cgroup {
                Some(c) => c,
                None => {
                    paths::default_cgroup().map_err(|e| anyhow::anyhow!("finding the cgroup-v2 root: {e}"))?
                }
            };
            let paths = Paths { socket: cli.socket, state_dir: a.state_dir, bpffs: a.bpffs, cgroup };
            let ct_timeouts = crate::datapath::conntrack::Timeouts {
                tcp_established: std::time::Duration::from_secs(a.ct_tcp_timeout),
                udp: std::time::Duration::from_secs(a.ct_udp_timeout),
                unreplied: std::time::Duration::from_secs(a.ct_unreplied_timeout),
            };
            let logs = crate::logs::LogLimits {
                max_size: crate::logs::parse_size(&a.log_max_size)
                    .map_err(|e| anyhow::anyhow!("--log-max-size: {e}"))?,
                max_files: a.log_max_file,
            };
            let min_free = match a.min_free_space.as_str() {
                // 0: no check up front (the store still recovers from a full disk).
                "0" => 0,
                v => crate::logs::parse_size(v).map_err(|e| anyhow::anyhow!("--min-free-space: {e}"))?,
            };
            crate::daemon::run(crate::daemon::Options {
                paths,
                uplink: a.uplink,
                ct_timeouts,
                resolv_conf: a.resolv_conf,
                logs,
                min_free,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Network(cmd) => network::run(&client, cmd).await,
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
