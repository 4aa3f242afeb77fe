//! Starting a sandbox's process inside its namespaces, and checking on it.
//!
//! The child joins the sandbox's network namespace, gets its own UTS
//! namespace (hostname) and mount namespace (its own /etc/resolv.conf and
//! /etc/hosts bind-mounted from the sandbox dir), and its own session. Its
//! output goes straight to a log file, so it outlives a daemon restart.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, Result};

/// PATH a sandbox process starts with (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Checks a command at create time: a program name, no NUL anywhere.
pub fn check_cmd(cmd: &[String]) -> Result<()> {
    if cmd.first().is_some_and(|p| p.is_empty()) {
        return Err(Error::invalid("command", format!("{cmd:?}"), "the program name is empty"));
    }
    if let Some(bad) = cmd.iter().find(|a| a.contains('\0')) {
        return Err(Error::invalid("command", bad, "arguments cannot contain NUL"));
    }
    Ok(())
}

/// Checks `-e` entries: `KEY=VALUE`, KEY non-empty, no NUL.
pub fn check_env(env: &[String]) -> Result<()> {
    for e in env {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() && !e.contains('\0') => {}
            Some(_) if e.contains('\0') => {
                return Err(Error::invalid("environment variable", e, "cannot contain NUL"));
            }
            _ => {
                return Err(Error::invalid(
                    "environment variable",
                    e,
                    "must be KEY=VALUE with a non-empty KEY",
                ));
            }
        }
    }
    Ok(())
}

/// A process identity: uid, gid, home directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Resolves `--user` (USER[:GROUP] or UID[:GID], names from the host's
/// passwd and group databases), as Docker does.
pub fn resolve_user(spec: &str) -> Result<Identity> {
    use nix::unistd::{Group, Uid, User};
    let bad = |why: String| Error::invalid("user", spec, why);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(bad("use USER[:GROUP] or UID[:GID]".into()));
    }
    let user = match u.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => Some(
            User::from_name(u)
                .map_err(|e| bad(format!("looking it up: {e}")))?
                .ok_or_else(|| bad(format!("no user {u:?} in the host's passwd database")))?,
        ),
    };
    let uid = match (&user, u.parse::<u32>()) {
        (Some(p), _) => p.uid.as_raw(),
        (None, Ok(n)) => n,
        (None, Err(_)) => return Err(bad("unknown user".into())),
    };
    let gid = match g {
        None => user.as_ref().map(|p| p.gid.as_raw()).unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => Group::from_name(g)
                .map_err(|e| bad(format!("looking up group {g:?}: {e}")))?
                .ok_or_else(|| bad(format!("no group {g:?} in the host's group database")))?
                .gid
                .as_raw(),
        },
    };
    let home = user.map(|p| p.dir.display().to_string()).unwrap_or_else(|| "/".into());
    Ok(Identity { uid, gid, home })
}

/// The whole environment of a sandbox process: PATH, HOSTNAME and HOME,
/// then what the user passed (which may override them). Nothing of the
/// daemon's own environment.
pub fn environment(hostname: &str, user: Option<&str>, extra: &[String]) -> Vec<String> {
    let home = user.and_then(|u| resolve_user(u).ok()).map(|i| i.home).unwrap_or_else(|| "/root".into());
    let mut env =
        vec![format!("PATH={DEFAULT_PATH}"), format!("HOSTNAME={hostname}"), format!("HOME={home}")];
    for e in extra {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        env.retain(|x| x.split_once('=').map_or(x.as_str(), |(k, _)| k) != key);
        env.push(e.clone());
    }
    env
}

/// Gives `cmd` exactly the `KEY=VALUE` entries of `env`, nothing inherited.
pub fn set_environment(cmd: &mut Command, env: &[String]) {
    cmd.env_clear();
    cmd.envs(env.iter().filter_map(|e| e.split_once('=')));
}

/// Drops root for `id` (groups, gid, then uid). Only system calls: safe
/// between fork and exec.
pub fn become_user(id: &Identity) -> nix::Result<()> {
    let gid = nix::unistd::Gid::from_raw(id.gid);
    nix::unistd::setgroups(&[gid])?;
    nix::unistd::setgid(gid)?;
    nix::unistd::setuid(nix::unistd::Uid::from_raw(id.uid))
}

pub struct Launch {
    pub cmd: Vec<String>,
    /// Every environment variable of the process (see [`environment`]).
    pub env: Vec<String>,
    /// Who the process runs as (None: root).
    pub identity: Option<Identity>,
    /// Network namespace to join (None: stay in the daemon's, for host mode).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// Files bind-mounted over /etc/resolv.conf and /etc/hosts.
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub log: PathBuf,
    pub log_limits: crate::sys::logs::LogLimits,
    /// `-t`: a pseudo-terminal for stdin, stdout and stderr.
    pub tty: bool,
    /// `-i`: stdin kept open (a pipe, or the terminal), fed through `attach.sock`.
    pub stdin: bool,
    /// `-w`: the working directory (default: /).
    pub workdir: Option<String>,
    /// `-t`: the terminal's size (rows, columns) before the process starts.
    pub console_size: Option<(u16, u16)>,
}

/// Where the log pump of an interactive sandbox serves attaching clients:
/// beside its log.
pub fn attach_socket(log: &Path) -> PathBuf {
    log.with_file_name("attach.sock")
}

/// The process's ends of its stdio, and the pump's.
struct Stdio3 {
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    /// Whether the process takes its terminal as controlling terminal.
    tty: bool,
}

/// Mount points of namespace pins (nsfs) and BPF filesystems in the
/// caller's mount namespace. A process that copies the daemon's mount
/// namespace (a sandbox, a log pump) detaches them in its copy: otherwise
/// it would keep other sandboxes' namespaces and the daemon's pinned maps
/// and links alive after they are removed, or after a daemon run in a
/// private mount namespace is gone.
pub fn pin_mounts() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            let point = left.split_whitespace().nth(4)?;
            (fstype == "nsfs" || fstype == "bpf").then(|| PathBuf::from(unescape_mount_path(point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(char::from(b)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// For a process of ours that needs no namespace pins (the log pump): a
/// mount namespace of its own without them.
pub fn leave_pin_mounts() -> nix::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    for p in pin_mounts() {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
    Ok(())
}

/// Starts the log pump for `l.log` (see [`crate::sys::logs`]) and makes
/// the process's stdio: output through a pipe into the pump (stdin
/// /dev/null); with `-i` a stdin pipe whose write end the pump holds; with
/// `-t` a pseudo-terminal whose master the pump holds. An interactive
/// pump serves `attach.sock` (see [`crate::sys::console`]).
fn start_log_pump(l: &Launch) -> Result<Stdio3> {
    let sys = |what: &'static str| move |e: nix::Error| Error::sys(what, "sandbox output", e);
    // (pump's stdin, pump's fd 3, the process's stdio)
    let (pump_in, pump_fd3, stdio): (OwnedFd, Option<OwnedFd>, Stdio3) = if l.tty {
        let pty = crate::sys::console::open_pty().map_err(sys("open a pseudo-terminal"))?;
        if let Some((rows, cols)) = l.console_size {
            crate::sys::console::set_size(pty.master.as_fd(), rows, cols)
                .map_err(sys("size the terminal"))?;
        }
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| Error::io("dup terminal", l.log.display(), e));
        let (a, b) = (dup(&pty.slave)?, dup(&pty.slave)?);
        (
            pty.master,
            None,
            Stdio3 {
                stdin: Stdio::from(pty.slave),
                stdout: Stdio::from(a),
                stderr: Stdio::from(b),
                tty: true,
            },
        )
    } else {
        let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        let wr2 = wr.try_clone().map_err(|e| Error::io("dup log pipe", l.log.display(), e))?;
        let (stdin, fd3) = if l.stdin {
            let (in_rd, in_wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
            (Stdio::from(in_rd), Some(in_wr))
        } else {
            (Stdio::null(), None)
        };
        (rd, fd3, Stdio3 { stdin, stdout: Stdio::from(wr), stderr: Stdio::from(wr2), tty: false })
    };
    let mut pump = Command::new("/proc/self/exe");
    pump.arg("log-pump")
        .arg("--file")
        .arg(&l.log)
        .arg("--max-size")
        .arg(l.log_limits.max_size.to_string())
        .arg("--max-files")
        .arg(l.log_limits.max_files.to_string());
    if l.tty || l.stdin {
        pump.arg("--attach").arg(attach_socket(&l.log));
    }
    if l.tty {
        pump.arg("--tty");
    }
    pump.env_clear().stdin(Stdio::from(pump_in)).stdout(Stdio::null()).stderr(Stdio::null());
    let fd3 = pump_fd3.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: between fork and exec only system calls: the stdin pipe's
    // write end onto fd 3, a session of its own, then a second fork whose
    // parent exits at once, so the pump is init's child (reaped there,
    // never a zombie of the daemon) and the exec (or its failure) is
    // reported through the grandchild.
    unsafe {
        pump.pre_exec(move || {
            if let Some(fd) = fd3
                && nix::libc::dup2(fd, 3) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            nix::unistd::setsid()?;
            match nix::unistd::fork()? {
                nix::unistd::ForkResult::Parent { .. } => nix::libc::_exit(0),
                nix::unistd::ForkResult::Child => Ok(()),
            }
        });
    }
    let mut child = pump.spawn().map_err(|e| Error::io("start log pump", l.log.display(), e))?;
    // The intermediate process ends at once.
    let _ = child.wait();
    drop(pump);
    drop(pump_fd3);
    Ok(stdio)
}

/// Spawns the process; returns the child (the caller reaps it).
pub fn spawn(l: &Launch) -> Result<Child> {
    let program = l.cmd.first().ok_or_else(|| Error::invalid("command", "", "empty command"))?;
    let stdio = start_log_pump(l)?;
    let netns = match &l.netns {
        Some(p) => Some(File::open(p).map_err(|e| Error::io("open netns", p.display(), e))?),
        None => None,
    };
    if l.hostname.contains('\0') {
        return Err(Error::invalid("hostname", &l.hostname, "contains NUL"));
    }
    let hostname = std::ffi::OsString::from(l.hostname.clone());
    let mounts: Vec<(PathBuf, &'static str)> =
        [(l.resolv_conf.clone(), "/etc/resolv.conf"), (l.hosts.clone(), "/etc/hosts")]
            .into_iter()
            .filter(|(_, target)| Path::new(target).exists())
            .collect();
    let tty = stdio.tty;
    let workdir = match &l.workdir {
        Some(w) => Some(
            std::ffi::CString::new(w.as_str()).map_err(|_| Error::invalid("workdir", w, "contains NUL"))?,
        ),
        None => None,
    };
    let mut cmd = Command::new(program);
    cmd.args(&l.cmd[1..]).stdin(stdio.stdin).stdout(stdio.stdout).stderr(stdio.stderr);
    set_environment(&mut cmd, &l.env);
    let identity = l.identity.clone();
    let pins = pin_mounts();
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // system calls on data prepared above (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if let Some(f) = &netns {
                setns(f.as_fd(), CloneFlags::CLONE_NEWNET)?;
            }
            unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)?;
            nix::unistd::sethostname(&hostname)?;
            // Keep our mounts from propagating back to the host.
            mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
            // Its copy must not keep other namespaces or the daemon's BPF pins alive.
            for p in &pins {
                let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            }
            for (src, target) in &mounts {
                mount(Some(src.as_path()), *target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            }
            nix::unistd::setsid()?;
            // Its terminal is its controlling terminal: Ctrl-C typed there is SIGINT to it.
            if tty {
                crate::sys::console::take_controlling_terminal()?;
            }
            if let Some(w) = &workdir {
                nix::unistd::chdir(w.as_c_str())?;
            }
            // Last: joining namespaces and mounting needed root.
            if let Some(id) = &identity {
                become_user(id)?;
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| match e.raw_os_error() {
        // Docker's words, which its users' scripts (and exit codes 127/126) go by.
        Some(nix::libc::ENOENT) => Error::CommandNotFound(program.clone()),
        Some(nix::libc::EACCES) => Error::NotExecutable(program.clone()),
        _ => Error::io("start process", program, e),
    })
}

/// Waits for `child` to end without holding a thread: its pidfd becomes
/// readable when it exits (a blocking thread only where pidfds are missing).
pub async fn wait_exit(mut child: Child) -> std::io::Result<std::process::ExitStatus> {
    use std::os::fd::FromRawFd;
    let pid = child.id() as nix::libc::pid_t;
    // SAFETY: pidfd_open(pid, 0) returns a new descriptor or -1.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return tokio::task::spawn_blocking(move || child.wait()).await.map_err(std::io::Error::other)?;
    }
    // SAFETY: the kernel gave us this descriptor; we own it from here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: the descriptor moves into the AsyncFd and stays open, the same one, until it is dropped.
    let ready =
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }?;
    let _ = ready.readable().await?;
    child.wait()
}

/// A signal as `docker kill -s` takes it: `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let t = s.trim();
    let parsed = match t.parse::<i32>() {
        Ok(n) => nix::sys::signal::Signal::try_from(n).ok(),
        Err(_) => {
            let upper = t.to_ascii_uppercase();
            let full = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
            nix::sys::signal::Signal::from_str(&full).ok()
        }
    };
    parsed.ok_or_else(|| Error::invalid("signal", s, "not a signal name (KILL, SIGTERM, HUP…) or number"))
}

/// Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process we started (same start time) and not a zombie.
pub fn alive(pid: u32, started: Option<u64>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let zombie = stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z");
    !zombie && (started.is_none() || start_time(pid) == started)
}

/// SIGTERM, then SIGKILL after `grace`, to the sandbox's whole process
/// group (the process is a session and group leader: what it started in
/// the background goes too, as when Docker stops a container); returns once
/// the leader is gone.
pub async fn stop(pid: u32, started: Option<u64>, grace: std::time::Duration) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    if !alive(pid, started) {
        return;
    }
    // Negative pid: the process group.
    let group = Pid::from_raw(-(pid as i32));
    let _ = kill(group, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    while alive(pid, started) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Stragglers of the group get no grace once the leader is gone or late.
    let _ = kill(group, Signal::SIGKILL);
    if alive(pid, started) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        for _ in 0..100 {
            if !alive(pid, started) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_the_defaults_plus_what_the_user_passed() {
        let env = environment("box", None, &["A=1".into(), "HOME=/srv".into()]);
        assert_eq!(
            env,
            [format!("PATH={DEFAULT_PATH}"), "HOSTNAME=box".into(), "A=1".into(), "HOME=/srv".into()]
        );
        assert!(environment("box", Some("nobody"), &[]).contains(&"HOME=/nonexistent".to_string()));
    }

    #[test]
    fn commands_env_and_users_are_checked() {
        assert!(check_cmd(&["".into()]).is_err());
        assert!(check_cmd(&["sh".into(), "a\0b".into()]).is_err());
        assert!(check_cmd(&[]).is_ok() && check_cmd(&["true".into()]).is_ok());
        assert!(check_env(&["=x".into()]).is_err() && check_env(&["NOEQ".into()]).is_err());
        assert!(check_env(&["K=".into(), "K=v=w".into()]).is_ok());
        assert_eq!(resolve_user("nobody").expect("nobody").uid, 65534);
        assert_eq!(
            resolve_user("1234:5678").expect("numeric"),
            Identity { uid: 1234, gid: 5678, home: "/".into() }
        );
        assert_eq!(resolve_user("0").expect("root").home, "/root");
        use nix::sys::signal::Signal;
        for (text, sig) in [
            ("KILL", Signal::SIGKILL),
            ("sigterm", Signal::SIGTERM),
            ("9", Signal::SIGKILL),
            ("hup", Signal::SIGHUP),
        ] {
            assert_eq!(parse_signal(text).expect(text), sig);
        }
        assert!(parse_signal("NOPE").is_err() && parse_signal("99").is_err() && parse_signal("").is_err());
        for bad in ["", ":", "nobody:", "no-such-user-here", "nobody:no-such-group"] {
            assert!(resolve_user(bad).is_err(), "{bad:?}");
        }
    }
}
