//! A real dockerd (Debian's docker.io) for one test or benchmark: inside a
//! host namespace of its own, with its own data, exec and run roots and
//! socket, and — when it should use our plugin — a private mount namespace
//! where `/run/docker/plugins` is a directory of the test's. Everything it
//! starts (containerd, shims, containers, proxies) is killed with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{output_bounded, text};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
pub const DOCKER: &str = "/usr/bin/docker";
/// Directories dockerd writes outside its data and exec roots.
const STRAYS: [&str; 2] = ["/etc/docker", "/run/containerd"];

pub struct Dockerd {
    child: Child,
    /// Holds the private mount namespace where the plugin directory is
    /// bind-mounted, so a restarted dockerd finds its containers' namespace
    /// mounts again (None: dockerd runs in the machine's mount namespace).
    holder: Option<Child>,
    /// How it was started, for [`Dockerd::restart`].
    launch: (String, Vec<String>, Option<PathBuf>),
    pub dir: PathBuf,
    /// Of [`STRAYS`], those that did not exist before (removed at the end).
    strays: Vec<&'static str>,
}

impl Dockerd {
    /// Starts dockerd in network namespace `netns` (a path) with `args`;
    /// with `plugins`, dockerd finds that directory's sockets as plugins.
    pub fn start(netns: &str, dir: &Path, args: &[&str], plugins: Option<&Path>) -> Result<Self, String> {
        for bin in [DOCKERD, DOCKER] {
            if !Path::new(bin).exists() {
                return Err(format!("{bin} is not installed (Debian's docker.io; `cargo xtask setup`)"));
            }
        }
        let io = |what: &str, e: std::io::Error| format!("{what} under {}: {e}", dir.display());
        std::fs::create_dir_all(dir.join("data")).map_err(|e| io("data root", e))?;
        std::fs::create_dir_all(dir.join("exec")).map_err(|e| io("exec root", e))?;
        let strays = STRAYS.iter().copied().filter(|p| !Path::new(p).exists()).collect();
        let holder = match plugins {
            Some(p) => Some(mount_holder(p)?),
            None => None,
        };
        let mount_ns = holder.as_ref().map(|h| PathBuf::from(format!("/proc/{}/ns/mnt", h.id())));
        let launch = (netns.to_string(), args.iter().map(|a| a.to_string()).collect(), mount_ns);
        let child = match Self::spawn(&launch, dir) {
            Ok(c) => c,
            Err(e) => {
                if let Some(mut h) = holder {
                    let _ = h.kill();
                    let _ = h.wait();
                }
                return Err(e);
            }
        };
        let mut d = Dockerd { child, holder, launch, dir: dir.to_path_buf(), strays };
        d.wait_ready()?;
        Ok(d)
    }

    /// Starts dockerd again the same way (after [`Dockerd::kill`]).
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = Self::spawn(&self.launch, &self.dir)?;
        self.wait_ready()
    }

    fn spawn(
        (netns, args, mount_ns): &(String, Vec<String>, Option<PathBuf>),
        dir: &Path,
    ) -> Result<Child, String> {
        let io = |what: &str, e: std::io::Error| format!("{what} under {}: {e}", dir.display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .map_err(|e| io("dockerd log", e))?;
        // nsenter (not `ip netns exec`): dockerd needs the machine's /sys (cgroups).
        let mut cmd = Command::new("nsenter");
        if let Some(m) = mount_ns {
            cmd.arg(format!("--mount={}", m.display()));
        }
        cmd.arg(format!("--net={netns}"))
            .arg(DOCKERD)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| io("dockerd log", e))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.docker(&["version"]).status.success() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("dockerd exited with {status}: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!("dockerd did not answer within 30 s: {}", self.log_tail()))
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        log.lines().rev().take(8).collect::<Vec<_>>().join(" / ")
    }

    /// The docker CLI for this dockerd.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("-H").arg(format!("unix://{}", self.dir.join("docker.sock").display()));
        c
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        output_bounded(self.cli().args(args).stdin(Stdio::null()))
    }

    /// Runs `docker args`, failing the test with its output if it fails.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(o.status.success(), "docker {}: {}", args.join(" "), text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `docker import` of a root filesystem with busybox (`sh`, `httpd`,
    /// `nc`, `ping`, …), a page in /www, and `extra` binaries with their libraries.
    pub fn import_image(&self, image: &str, extra: &[&str]) -> Result<(), String> {
        let io = |what: &str, e: std::io::Error| format!("building the image: {what}: {e}");
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).map_err(|e| io("rootfs", e))?;
        std::fs::copy("/bin/busybox", bin.join("busybox")).map_err(|e| io("busybox-static", e))?;
        std::fs::create_dir_all(root.join("www")).map_err(|e| io("www", e))?;
        std::fs::write(root.join("www/index.html"), "hello from a docker container\n")
            .map_err(|e| io("page", e))?;
        // iperf3 keeps a temporary file in /tmp.
        std::fs::create_dir_all(root.join("tmp")).map_err(|e| io("tmp", e))?;
        std::fs::set_permissions(root.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .map_err(|e| io("tmp mode", e))?;
        for link in [
            "sh",
            "sleep",
            "httpd",
            "nc",
            "ping",
            "wget",
            "ip",
            "cat",
            "echo",
            "hostname",
            "head",
            "sha256sum",
        ] {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(link));
        }
        for exe in extra {
            let name = Path::new(exe).file_name().ok_or_else(|| format!("{exe}: no file name"))?.to_owned();
            std::fs::copy(exe, bin.join(name)).map_err(|e| io(exe, e))?;
            // Its shared libraries, at the same paths.
            let ldd = output_bounded(Command::new("ldd").arg(exe));
            for lib in String::from_utf8_lossy(&ldd.stdout).split_whitespace().filter(|w| w.starts_with('/'))
            {
                let to = root.join(lib.trim_start_matches('/'));
                if let Some(dir) = to.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io(lib, e))?;
                }
                std::fs::copy(lib, &to).map_err(|e| io(lib, e))?;
            }
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| io("tar", e))?;
        let stdin = tar.stdout.ok_or("tar gave no output")?;
        let o = self
            .cli()
            .args(["import", "-", image])
            .stdin(stdin)
            .output()
            .map_err(|e| io("docker import", e))?;
        if !o.status.success() {
            return Err(format!("docker import: {}", text(&o)));
        }
        Ok(())
    }

    /// Stops dockerd as `systemctl stop docker` does (SIGTERM, then wait;
    /// SIGKILL after 30 s). With `--live-restore` its containers run on.
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.kill();
    }

    /// Kills dockerd (SIGKILL), leaving its containers running.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dockerd {
    /// Fast and unconditional: every process of this Docker (dockerd, its
    /// containerd, shims, proxies, containers) is killed; then what it left
    /// mounted under its directory is unmounted.
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut doomed: Vec<u32> = vec![self.child.id()];
        // Shims and containerd name our roots on their command lines.
        doomed.extend(procs().into_iter().filter(|(_, _, cmd)| cmd.contains(&dir)).map(|(pid, _, _)| pid));
        loop {
            let more: Vec<u32> = procs()
                .into_iter()
                .filter(|(pid, ppid, _)| doomed.contains(ppid) && !doomed.contains(pid))
                .map(|(pid, _, _)| pid)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        for pid in &doomed {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
        }
        let _ = self.child.wait();
        if let Some(h) = &mut self.holder {
            let _ = h.kill();
            let _ = h.wait();
        }
        std::thread::sleep(Duration::from_millis(200));
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&dir))
            .collect();
        for m in ours.iter().rev() {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for p in &self.strays {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A process holding a private mount namespace in which `plugins` is
/// bind-mounted on `/run/docker/plugins` (where dockerd looks), ready when
/// this returns.
fn mount_holder(plugins: &Path) -> Result<Child, String> {
    use std::io::BufRead;
    let mut child = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mkdir -p /run/docker/plugins && mount --bind \"$0\" /run/docker/plugins && echo ready && exec sleep 1000000")
        .arg(plugins)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("unshare: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = std::io::BufReader::new(out).read_line(&mut line);
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err("could not bind-mount the plugin directory in a private mount namespace".into());
    }
    Ok(child)
}

/// (pid, parent pid, command line) of every process.
pub fn procs() -> Vec<(u32, u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // The command name may hold spaces: fields resume after the last ')'.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            Some((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")))
        })
        .collect()
}
