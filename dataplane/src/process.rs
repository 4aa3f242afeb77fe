//! Starting a sandbox's process inside its namespaces, and checking on it.
//!
//! The child joins the sandbox's network namespace, gets its own UTS
//! namespace (hostname) and mount namespace (its own /etc/resolv.conf and
//! /etc/hosts bind-mounted from the sandbox dir), and its own session. Its
//! output goes straight to a log file, so it outlives a daemon restart.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, Result};

pub struct Launch {
    pub cmd: Vec<String>,
    /// Network namespace to join (None: stay in the daemon's, for host mode).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    /// Files bind-mounted over /etc/resolv.conf and /etc/hosts.
    pub resolv_conf: PathBuf,
    pub hosts: PathBuf,
    pub log: PathBuf,
}

/// Spawns the process; returns the child (the caller reaps it).
pub fn spawn(l: &Launch) -> Result<Child> {
    let program = l.cmd.first().ok_or_else(|| Error::invalid("command", "", "empty command"))?;
    let log = File::options()
        .create(true)
        .append(true)
        .open(&l.log)
        .map_err(|e| Error::io("open log", l.log.display(), e))?;
    let log2 = log.try_clone().map_err(|e| Error::io("dup log", l.log.display(), e))?;
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
    let mut cmd = Command::new(program);
    cmd.args(&l.cmd[1..]).stdin(Stdio::null()).stdout(Stdio::from(log)).stderr(Stdio::from(log2));
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
            for (src, target) in &mounts {
                mount(Some(src.as_path()), *target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            }
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| Error::io("start process", program, e))
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
