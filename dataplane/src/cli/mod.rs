//! The `dataplane` command line. Thin: parse, call the API, print.

mod attach;
mod ct;
mod exec;
mod firewall;
mod format;
mod info;
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
    Create(sandbox::CreateArgs),
    /// Start the command of created or stopped sandboxes.
    Start {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop sandboxes (SIGTERM, then SIGKILL after the grace time).
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Stop sandboxes and start their command again.
    Restart {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Send a signal to sandboxes' processes.
    Kill {
        /// Signal: a name (KILL, SIGTERM, hup) or a number.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Rename a sandbox (its DNS name follows).
    Rename { name: String, new_name: String },
    /// Block until sandboxes stop; print their exit codes.
    Wait {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Stop a running sandbox first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List sandboxes.
    #[command(alias = "ls")]
    Ps(sandbox::PsArgs),
    /// Show sandboxes as JSON, or through a Go template.
    #[command(
        after_help = "Examples:\n  dataplane inspect web\n  dataplane inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' web\n  dataplane inspect -f '{{json .NetworkSettings.Ports}}' web"
    )]
    Inspect {
        /// A Go template ('{{.State.Pid}}'), or json (the default).
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a sandbox's output.
    Logs(sandbox::LogsArgs),
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
    /// Datapath counters: packets and bytes by verdict and direction, conntrack, programs.
    /// (Not Docker's per-container `stats NAME`: dataplane does not measure CPU or memory.)
    #[command(visible_alias = "datapath-stats")]
    Stats {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Show counters that are still zero too.
        #[arg(short, long)]
        all: bool,
    },
    /// Client and daemon versions.
    Version {
        /// A Go template ('{{.Server.Version}}') or json.
        #[arg(short, long, default_value = "")]
        format: String,
    },
    /// What the daemon runs: sandboxes, networks, kernel features, BPF programs and map fill.
    Info {
        /// A Go template ('{{.Sandboxes.Running}}') or json.
        #[arg(short, long, default_value = "")]
        format: String,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  dataplane completion bash > /etc/bash_completion.d/dataplane\n  dataplane completion zsh > \"${fpath[1]}/_dataplane\"\n  dataplane completion fish > ~/.config/fish/completions/dataplane.fish"
    )]
    Completion { shell: clap_complete::Shell },
    /// (internal) Writes the man pages (dataplane.1, dataplane-run.1, …) into DIR.
    #[command(hide = true)]
    ManPages { dir: PathBuf },
    /// (internal) Copies a sandbox's output from stdin to its bounded log files.
    #[command(hide = true)]
    LogPump {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        max_size: u64,
        #[arg(long)]
        max_files: u32,
        /// Serve attaching clients on this socket (interactive sandboxes).
        #[arg(long)]
        attach: Option<PathBuf>,
        /// stdin is a terminal's master (else the output pipe, with the stdin pipe on fd 3).
        #[arg(long)]
        tty: bool,
    },
}

/// The pump of an interactive sandbox: output on stdin (a terminal's
/// master, which also takes the input; or a pipe, with the stdin pipe on fd 3).
fn log_pump_attached(
    file: &std::path::Path,
    limits: crate::sys::logs::LogLimits,
    socket: &std::path::Path,
    tty: bool,
) -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: fd 0 is ours (the daemon set it up for this process), and so
    // is fd 3 when not a terminal; each is owned once.
    let output = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(0) });
    let input =
        if tty { output.try_clone()? } else { std::fs::File::from(unsafe { OwnedFd::from_raw_fd(3) }) };
    let log = crate::sys::logs::LogWriter::open(file, limits)?;
    crate::sys::console::serve(output, input, tty, log, socket)
}

/// Docker's exit code for its own errors (bad flags, the daemon's refusals).
const EXIT_DOCKER: u8 = 125;

/// A command line clap refused: Docker's words and exit code 125; help
/// and version go to stdout with 0.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let path = command_path();
    let see = format!("See '{path} --help'.");
    match (e.kind(), e.get(ContextKind::InvalidArg)) {
        (ErrorKind::UnknownArgument, Some(ContextValue::String(arg))) => {
            let flag = arg.split('=').next().unwrap_or(arg);
            eprintln!("unknown flag: {flag}\n{see}");
        }
        (ErrorKind::InvalidSubcommand, Some(ContextValue::String(sub))) => {
            eprintln!("{path}: '{sub}' is not a dataplane command.\n{see}");
        }
        _ => {
            let text = e.render().to_string();
            let text = text.trim_end();
            // clap's own usage lines and tips, said once by our "See".
            let main: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.trim_start().starts_with("tip:"))
                .collect();
            eprintln!("{}\n{see}", main.join("\n").trim_end().trim_start_matches("error: "));
        }
    }
    ExitCode::from(EXIT_DOCKER)
}

/// `dataplane network create`: the subcommands typed, for "See '… --help'".
fn command_path() -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = vec!["dataplane".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // The global option's value is not a command.
        if a == "--socket" {
            args.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        let Some(sub) = cmd.find_subcommand(&a).cloned() else { break };
        path.push(sub.get_name().to_string());
        cmd = sub;
    }
    path.join(" ")
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    // `dataplane ps | head` ends quietly, like other Unix tools (Rust
    // ignores SIGPIPE, which turns a closed pipe into a panic on print).
    if !matches!(cli.command, Command::Daemon(_)) {
        // SAFETY: restoring the default disposition, before any thread starts.
        let _ = unsafe {
            nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
        };
    }
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        clap_complete::generate(*shell, &mut Cli::command(), "dataplane", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::ManPages { dir } = &cli.command {
        return match man_pages(dir) {
            Ok(n) => {
                println!("{n} man pages written to {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("man pages: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // `exec` must not start threads before it forks into the sandbox.
    if let Command::Exec(args) = &cli.command {
        return exec::run(&cli.socket, args);
    }
    if let Command::LogPump { file, max_size, max_files, attach, tty } = &cli.command {
        let limits = crate::sys::logs::LogLimits { max_size: *max_size, max_files: *max_files };
        if let Err(e) = crate::sys::process::leave_pin_mounts() {
            eprintln!("log pump: a mount namespace of its own: {e}");
        }
        let result = match attach {
            None => crate::sys::logs::pump(std::io::stdin().lock(), file, limits),
            Some(socket) => log_pump_attached(file, limits, socket, *tty),
        };
        return match result {
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
    // Docker's codes for what went wrong before the process ran: 125 for
    // run/create (127/126 when the command is not found / not executable), 1 elsewhere.
    let runs = matches!(cli.command, Command::Run(_) | Command::Create(_));
    let result = rt.block_on(dispatch(cli));
    // Threads still blocked reaping sandbox processes must not keep us alive.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("{text}");
            ExitCode::from(if runs { exit_code_of_run_error(&text) } else { 1 })
        }
    }
}

/// `docker run`'s exit code for an error of ours: 127 when the command
/// is not found, 126 when it cannot be executed, else 125.
fn exit_code_of_run_error(text: &str) -> u8 {
    if text.contains("executable file not found") {
        127
    } else if text.contains("exec: ") && text.contains("permission denied") {
        126
    } else {
        EXIT_DOCKER
    }
}

/// Writes `dataplane.1` and one page per subcommand (`dataplane-run.1`, …).
fn man_pages(dir: &std::path::Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    use clap::CommandFactory;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let root = Cli::command();
    let mut n = 0;
    let mut todo = vec![(root.get_name().to_string(), root)];
    while let Some((name, mut cmd)) = todo.pop() {
        if cmd.is_hide_set() {
            continue;
        }
        cmd = cmd.display_name(name.clone());
        for sub in cmd.get_subcommands() {
            todo.push((format!("{name}-{}", sub.get_name()), sub.clone()));
        }
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).title(name.to_uppercase()).render(&mut buf)?;
        let path = dir.join(format!("{name}.1"));
        std::fs::write(&path, buf).with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    Ok(n)
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
        Command::Create(a) => sandbox::create(&client, a).await,
        Command::Start { names } => sandbox::each(&client, &names, "start").await,
        Command::Stop { time, names } => {
            sandbox::each_with(&client, &names, "stop", &format!("?t={time}")).await
        }
        Command::Restart { time, names } => {
            sandbox::each_with(&client, &names, "restart", &format!("?t={time}")).await
        }
        Command::Kill { signal, names } => {
            // Refused here, by name, before any sandbox is touched.
            crate::sys::process::parse_signal(&signal).map_err(|e| anyhow::anyhow!("{e}"))?;
            sandbox::each_with(
                &client,
                &names,
                "kill",
                &format!("?signal={}", crate::api::client::enc(&signal)),
            )
            .await
        }
        Command::Rename { name, new_name } => {
            client
                .post_empty(&format!(
                    "/dataplane/sandboxes/{}/rename?name={}",
                    crate::api::client::enc(&name),
                    crate::api::client::enc(&new_name)
                ))
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Wait { names } => sandbox::wait(&client, &names).await,
        Command::Rm { force, names } => sandbox::rm(&client, &names, force).await,
        Command::Ps(a) => sandbox::ps(&client, a).await,
        Command::Inspect { format, names } => sandbox::inspect(&client, &names, &format).await,
        Command::Logs(a) => sandbox::logs(&client, a).await,
        Command::Port { name, port } => sandbox::port(&client, &name, port.as_deref()).await,
        Command::Stats { format, all } => stats::run(&client, &format, all).await,
        Command::Version { format } => info::version(&client, &format).await,
        Command::Info { format } => info::info(&client, &format).await,
        Command::Ct(cmd) => ct::run(&client, cmd).await,
        Command::Lb(cmd) => lb::run(&client, cmd).await,
        Command::Firewall(cmd) => firewall::run(&client, cmd).await,
        Command::Monitor { format } => monitor::run(&client, &format).await,
        Command::Exec(_)
        | Command::LogPump { .. }
        | Command::Completion { .. }
        | Command::ManPages { .. } => {
            unreachable!("handled before the runtime starts")
        }
    }
}

/// Prints inspect results: a JSON array (Docker's default), or one
/// rendered template per object.
/// Does `f` for each of `names` in turn, as Docker's commands that take
/// several names do: a failure is printed and the rest still run. Returns
/// what succeeded, and whether anything failed (exit status 1).
pub(crate) async fn each<T>(
    names: &[String],
    mut f: impl AsyncFnMut(&str) -> anyhow::Result<T>,
) -> (Vec<T>, bool) {
    let mut done = Vec::new();
    let mut failed = false;
    for n in names {
        match f(n).await {
            Ok(v) => done.push(v),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    (done, failed)
}

/// The exit status of a command whose parts may have failed.
pub(crate) fn status(failed: bool) -> ExitCode {
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

pub(crate) fn print_inspect(items: &[serde_json::Value], format: &format::Format) -> anyhow::Result<()> {
    match format {
        format::Format::Template { .. } => {
            for v in items {
                println!("{}", format.one(v)?);
            }
        }
        format::Format::Json | format::Format::Table => println!("{}", serde_json::to_string_pretty(items)?),
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

/// `--env-file`: `KEY=VALUE` lines as given, a bare `KEY` from this shell
/// (left out when unset), blank lines and `#` comments skipped.
pub(crate) fn env_file(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path).with_context(|| format!("--env-file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('=') || l.split('=').next().is_some_and(|k| k.chars().any(char::is_whitespace)) {
            anyhow::bail!("--env-file {} line {}: {line:?} is not KEY=VALUE", path.display(), n + 1);
        }
        out.push(l.to_string());
    }
    Ok(env_args(&out))
}

/// Parses `K=V` (labels, options, aux addresses).
pub(crate) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Prints rows under a header as aligned columns (Docker's tables).
pub(crate) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    all.extend(rows.iter().cloned());
    print!("{}", format::columns(&all));
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn help_of(path: &[&str]) -> String {
        let mut cmd = super::Cli::command();
        for p in path {
            cmd = cmd.find_subcommand(p).unwrap_or_else(|| panic!("no subcommand {p}")).clone();
        }
        cmd.render_long_help().to_string()
    }

    #[test]
    fn network_create_help_lists_every_option_key() {
        use crate::domain::options::{Driver, key};
        let help = help_of(&["network", "create"]);
        for d in [Driver::Bridge, Driver::Macvlan, Driver::Overlay] {
            for k in d.keys().iter().filter(|k| **k != key::DEFAULT_BRIDGE) {
                let shown = k.trim_end_matches("_ipv4").trim_end_matches("_ipv6");
                assert!(help.contains(shown), "{k} of {d} is not in `network create --help`");
            }
        }
    }

    #[test]
    fn every_flag_says_what_it_does() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.is_hide_set() || a.get_id() == "help" || a.get_id() == "version" || a.is_positional() {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} --{}", a.get_id()));
                }
            }
            for s in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "dataplane", &mut missing);
        assert!(missing.is_empty(), "flags without a description: {missing:?}");
    }

    #[test]
    fn create_offers_no_run_only_flags_and_run_shows_no_empty_default() {
        let create = help_of(&["create"]);
        assert!(!create.contains("--detach") && !create.contains("--rm"), "{create}");
        let run = help_of(&["run"]);
        assert!(run.contains("--detach") && run.contains("--rm"));
        assert!(!run.contains("[default: \"\"]"), "{run}");
    }
}
