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
use crate::sys::console;

#[derive(Args)]
#[command(after_help = "Example:\n  dataplane exec web ping -c 1 172.17.0.3")]
pub struct ExecArgs {
    /// Set an environment variable: KEY=VALUE, or KEY to pass this shell's value.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// Run as USER[:GROUP] or UID[:GID] (default: the sandbox's --user, else root).
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Keep stdin open: this terminal's input goes to the command (without it: /dev/null).
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a pseudo-terminal (Ctrl-C, Ctrl-Z and the window size reach it).
    #[arg(short, long)]
    tty: bool,
    /// Working directory of the command.
    #[arg(short, long)]
    workdir: Option<String>,
    name: String,
    /// The command and its arguments (everything from the command on is its own).
    #[arg(required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

/// Why exec did not run the command, and Docker's exit code for it.
enum Failed {
    /// The sandbox or the daemon (no such sandbox, not reachable): 1.
    Before(anyhow::Error),
    /// The command: not found 127, not executable 126.
    Start(String, u8),
}

pub fn run(socket: &Path, a: &ExecArgs) -> ExitCode {
    match exec(socket, a) {
        Ok(code) => code,
        Err(Failed::Before(e)) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
        Err(Failed::Start(msg, code)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

fn exec(socket: &Path, a: &ExecArgs) -> Result<ExitCode, Failed> {
    let mut cmd = prepare(socket, a).map_err(Failed::Before)?;
    let program = &a.command[0];
    let start_error = |e: std::io::Error| match e.raw_os_error() {
        Some(nix::libc::ENOENT) => {
            Failed::Start(format!("exec: {program:?}: executable file not found in $PATH"), 127)
        }
        Some(nix::libc::EACCES) => Failed::Start(format!("exec: {program:?}: permission denied"), 126),
        _ => Failed::Start(format!("exec {program}: {e}"), 126),
    };
    let status = if a.tty {
        with_terminal(&mut cmd, a.interactive).map_err(|e| match e {
            TtyError::Spawn(e) => start_error(e),
            TtyError::Setup(e) => Failed::Before(e),
        })?
    } else {
        if !a.interactive {
            cmd.stdin(std::process::Stdio::null());
        }
        cmd.status().map_err(start_error)?
    };
    let code = status
        .code()
        .unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0));
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

enum TtyError {
    Setup(anyhow::Error),
    Spawn(std::io::Error),
}

/// Runs `cmd` on a new pseudo-terminal: this terminal raw, input copied
/// in (with `stdin`), output copied out, window size changes passed on;
/// returns once the command has ended and its output is read.
fn with_terminal(cmd: &mut std::process::Command, stdin: bool) -> Result<std::process::ExitStatus, TtyError> {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let setup = |e: nix::Error| TtyError::Setup(anyhow::anyhow!("a pseudo-terminal for exec: {e}"));
    let pty = console::open_pty().map_err(setup)?;
    if let Some((rows, cols)) = console::size_of(std::io::stdout().as_fd()) {
        let _ = console::set_size(pty.master.as_fd(), rows, cols);
    }
    let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(|e| TtyError::Setup(e.into()));
    cmd.stdin(std::process::Stdio::from(dup(&pty.slave)?))
        .stdout(std::process::Stdio::from(dup(&pty.slave)?))
        .stderr(std::process::Stdio::from(dup(&pty.slave)?));
    // SAFETY: only system calls between fork and exec (after the namespace joins set above).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            console::take_controlling_terminal()?;
            Ok(())
        });
    }
    let raw = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        console::RawMode::enter(std::io::stdin().as_fd())
    } else {
        None
    };
    let mut child = cmd.spawn().map_err(TtyError::Spawn)?;
    // Ours closed: the terminal ends with the command and what it started.
    drop(pty.slave);
    let master = std::fs::File::from(pty.master);
    let done = Arc::new(AtomicBool::new(false));
    if stdin {
        let mut to = master.try_clone().map_err(|e| TtyError::Setup(e.into()))?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut input = std::io::stdin().lock();
            while let Ok(n) = input.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    {
        let m = master.try_clone().map_err(|e| TtyError::Setup(e.into()))?;
        std::thread::spawn(move || {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGWINCH);
            // Only this thread takes SIGWINCH (blocked here, waited for).
            if set.thread_block().is_err() {
                return;
            }
            while set.wait().is_ok() {
                if let Some((rows, cols)) = console::size_of(std::io::stdout().as_fd()) {
                    let _ = console::set_size(m.as_fd(), rows, cols);
                }
            }
        });
    }
    let out = {
        let done = Arc::clone(&done);
        let mut from = master;
        std::thread::spawn(move || {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut buf = [0u8; 16 << 10];
            let mut stdout = std::io::stdout().lock();
            loop {
                let ready = {
                    let mut fds = [PollFd::new(from.as_fd(), PollFlags::POLLIN)];
                    poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0)
                };
                if ready == 0 {
                    // Nothing for 100 ms after the command ended: its output is read.
                    if done.load(Ordering::Relaxed) {
                        break;
                    }
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdout.write_all(&buf[..n]).and_then(|()| stdout.flush()).is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };
    let status = child.wait().map_err(TtyError::Spawn)?;
    done.store(true, Ordering::Relaxed);
    let _ = out.join();
    drop(raw);
    Ok(status)
}

/// The command, set to join the sandbox's namespaces and become its user.
fn prepare(socket: &Path, a: &ExecArgs) -> anyhow::Result<std::process::Command> {
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
    let workdir = match &a.workdir {
        Some(w) if !Path::new(w).is_dir() => anyhow::bail!("--workdir {w}: no such directory"),
        Some(w) => Some(
            std::ffi::CString::new(w.as_str())
                .map_err(|_| anyhow::anyhow!("--workdir {w:?}: contains NUL"))?,
        ),
        None => None,
    };
    // SAFETY: runs in the forked child before exec, only making system calls.
    unsafe {
        cmd.pre_exec(move || {
            setns(net.as_fd(), CloneFlags::CLONE_NEWNET)?;
            for (f, flag) in &extra {
                setns(f.as_fd(), *flag)?;
            }
            // After joining the mount namespace, which moved us to its root.
            if let Some(w) = &workdir {
                nix::unistd::chdir(w.as_c_str())?;
            }
            if let Some(id) = &identity {
                crate::sys::process::become_user(id)?;
            }
            Ok(())
        });
    }
    Ok(cmd)
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
