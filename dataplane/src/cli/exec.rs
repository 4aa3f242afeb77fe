//! `dataplane exec NAME COMMAND…`: runs COMMAND in the sandbox's network
//! namespace (and, while its process runs, its UTS and mount namespaces, so
//! hostname and /etc/hosts match), with stdin/stdout/stderr and the exit code
//! passed through. The CLI does this itself: it is root on the same host, and
//! a forked child can join namespaces that a threaded daemon cannot hand over.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use nix::sched::{CloneFlags, setns};

use crate::api::client::{Client, enc};

#[derive(Args)]
#[command(after_help = "Example:\n  dataplane exec web ping -c 1 172.17.0.3")]
pub struct ExecArgs {
    /// Set an environment variable: KEY=VALUE, or KEY to pass this shell's value.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Run as USER[:GROUP] or UID[:GID] (default: the sandbox's --user, else root).
    #[arg(short = 'u', long)]
    user: Option<String>,
    name: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn run(socket: &Path, a: &ExecArgs) -> ExitCode {
    match exec(socket, a) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(126)
        }
    }
}

fn exec(socket: &Path, a: &ExecArgs) -> anyhow::Result<ExitCode> {
    let (info, daemon_pid): (serde_json::Value, u32) = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let client = Client::new(socket.to_path_buf());
        rt.block_on(async {
            let info = client.get(&format!("/dataplane/sandboxes/{}/json", enc(&a.name))).await?;
            anyhow::Ok((info, client.daemon_pid().await?))
        })?
    };
    let netns = info["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    let pid = info["State"]["Pid"].as_u64().unwrap_or(0);
    let net = open_netns(&netns, daemon_pid)?;
    // Join the process's UTS and mount namespaces too, when it runs.
    let extra: Vec<(File, CloneFlags)> = if pid > 0 {
        [("uts", CloneFlags::CLONE_NEWUTS), ("mnt", CloneFlags::CLONE_NEWNS)]
            .into_iter()
            .filter_map(|(n, f)| File::open(format!("/proc/{pid}/ns/{n}")).ok().map(|file| (file, f)))
            .collect()
    } else {
        Vec::new()
    };
    let mut cmd = std::process::Command::new(&a.command[0]);
    cmd.args(&a.command[1..]);
    let mut env: Vec<String> = info["Config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        && let Ok(term) = std::env::var("TERM")
    {
        env.push(format!("TERM={term}"));
    }
    env.extend(super::env_args(&a.env));
    crate::sys::process::check_env(&env).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The sandbox's environment, not the caller's (as `docker exec`): a
    // secret in this shell stays out unless passed with -e.
    crate::sys::process::set_environment(&mut cmd, &env);
    let user = a
        .user
        .clone()
        .or_else(|| info["Config"]["User"].as_str().filter(|u| !u.is_empty()).map(String::from));
    let identity = user
        .as_deref()
        .map(crate::sys::process::resolve_user)
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // An explicit --user brings its own home; otherwise the sandbox's HOME stands.
    if let (Some(id), Some(_)) = (&identity, &a.user) {
        cmd.env("HOME", &id.home);
    }
    // SAFETY: runs in the forked child before exec, only making system calls.
    unsafe {
        cmd.pre_exec(move || {
            setns(net.as_fd(), CloneFlags::CLONE_NEWNET)?;
            for (f, flag) in &extra {
                setns(f.as_fd(), *flag)?;
            }
            if let Some(id) = &identity {
                crate::sys::process::become_user(id)?;
            }
            Ok(())
        });
    }
    let status = cmd.status().map_err(|e| anyhow::anyhow!("exec {}: {e}", a.command[0]))?;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Opens the namespace file. A daemon started with `ip netns exec` lives in a
/// private mount namespace where its bind mounts are invisible to us: then
/// the file is reached through the daemon's own view, /proc/PID/root.
fn open_netns(path: &str, daemon_pid: u32) -> anyhow::Result<File> {
    if crate::sys::netns::is_pinned(Path::new(path)) {
        return File::open(path).map_err(|e| anyhow::anyhow!("opening network namespace {path}: {e}"));
    }
    let via_daemon = format!("/proc/{daemon_pid}/root{path}");
    File::open(&via_daemon)
        .map_err(|e| anyhow::anyhow!("opening network namespace {path} (also as {via_daemon}): {e}"))
}
