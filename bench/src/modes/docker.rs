//! `docker`: real Docker (dockerd from Debian's docker.io, iptables on,
//! userland proxy on, as installed) running inside the host namespace,
//! containers started with `docker run -p` from an image imported from a
//! tarball (busybox-static, iperf3 and the harness, with their libraries).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Mode, PeerHost, PortMap, Procs, Serve, System, must, peer_mode, timed, wait_listening};

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const IMAGE: &str = "dataplane-bench:latest";
const BRIDGE: &str = "dkbr0";
/// Directories dockerd writes outside its data and exec roots.
const STRAYS: [&str; 2] = ["/etc/docker", "/run/containerd"];

struct Docker {
    /// Declared first: containers and the daemon go before the namespaces.
    daemon: Procs,
    host: PeerHost,
    dir: PathBuf,
    n: usize,
    /// Of [`STRAYS`], those that did not exist before (removed at the end).
    strays: Vec<&'static str>,
}

pub fn docker() -> anyhow::Result<Mode> {
    for bin in [DOCKERD, DOCKER] {
        anyhow::ensure!(Path::new(bin).exists(), "{bin} is not installed (Debian's docker.io)");
    }
    let host = PeerHost::new("dk")?;
    host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "172.27.0.1/24", "dev", BRIDGE])?;
    host.run(&["ip", "link", "set", BRIDGE, "up"])?;
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::create_dir_all(dir.join("exec"))?;
    let strays = STRAYS.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    let log = std::fs::File::create(dir.join("dockerd.log"))?;
    // nsenter (not `ip netns exec`): dockerd needs the machine's /sys (cgroups).
    let child = Command::new("nsenter")
        .arg(format!("--net={}", host.host.path()))
        .arg(DOCKERD)
        .args(["--iptables=true", "--bridge", BRIDGE, "--data-root"])
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("docker.sock").display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting dockerd")?;
    let client = host.ext.name.clone();
    let mut d = Docker { daemon: Procs(vec![child]), host, dir, n: 0, strays };
    d.wait_ready()?;
    d.import_image()?;
    peer_mode("docker", &client, super::HOST_IP, Box::new(d))
}

impl Docker {
    fn cli(&self) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("-H").arg(format!("unix://{}", self.dir.join("docker.sock").display()));
        c
    }

    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = dataplane_tests::output_bounded(self.cli().args(args).stdin(Stdio::null()));
        if !o.status.success() {
            bail!("docker {}: {}", args.join(" "), dataplane_tests::text(&o).trim());
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.docker(&["version"]).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.daemon.0[0].try_wait()? {
                bail!("dockerd exited with {status}: {}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!("dockerd did not answer within 30 s: {}", self.log_tail())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
    }

    /// `docker import` of a root filesystem holding what the servers need.
    fn import_image(&self) -> anyhow::Result<()> {
        let root = self.dir.join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin)?;
        std::fs::copy("/bin/busybox", bin.join("busybox")).context("busybox-static is not installed")?;
        // iperf3 keeps a temporary file in /tmp.
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::set_permissions(root.join("tmp"), std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        for link in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", bin.join(link))?;
        }
        let iperf = must(&["sh", "-c", "command -v iperf3"])?;
        for exe in [iperf.trim().to_string(), super::bench_bin()] {
            let name = Path::new(&exe).file_name().context("binary name")?.to_owned();
            std::fs::copy(&exe, bin.join(name))?;
            // Its shared libraries, at the same paths.
            for lib in must(&["ldd", &exe])?.split_whitespace().filter(|w| w.starts_with('/')) {
                let to = root.join(lib.trim_start_matches('/'));
                std::fs::create_dir_all(to.parent().context("lib dir")?)?;
                std::fs::copy(lib, &to).with_context(|| format!("copying {lib}"))?;
            }
        }
        let tar =
            Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).stdout(Stdio::piped()).spawn()?;
        let o = self.cli().args(["import", "-", IMAGE]).stdin(tar.stdout.context("tar output")?).output()?;
        if !o.status.success() {
            bail!("docker import: {}", dataplane_tests::text(&o).trim());
        }
        Ok(())
    }
}

impl Drop for Docker {
    /// Fast and unconditional: `docker rm -f` of a container with 1,000
    /// published ports takes minutes (2,000 docker-proxy processes, 3,000
    /// rules removed one by one), so every process of this Docker (dockerd,
    /// its containerd, shims, proxies, containers) is killed instead; the
    /// rules go with the host namespace.
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let mut doomed: Vec<u32> = self.daemon.0.iter().map(|c| c.id()).collect();
        // Shims name our containerd socket on their command line.
        doomed.extend(procs().into_iter().filter(|(_, _, cmd)| cmd.contains(&dir)).map(|(pid, _, _)| pid));
        // And everything below those.
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
            let _ = nix_kill(*pid);
        }
        for c in &mut self.daemon.0 {
            let _ = c.wait();
        }
        std::thread::sleep(Duration::from_millis(200));
        // Whatever dockerd left mounted under its roots.
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

/// SIGKILL to `pid`.
fn nix_kill(pid: u32) -> std::io::Result<std::process::ExitStatus> {
    Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status()
}

/// (pid, parent pid, command line) of every process.
fn procs() -> Vec<(u32, u32, String)> {
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

impl System for Docker {
    fn host_ns(&self) -> String {
        self.host.host.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let name = format!("c{}", self.n);
        self.n += 1;
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.clone()];
        for s in super::ours::specs(ports) {
            args.extend(["-p".to_string(), s]);
        }
        args.extend([
            IMAGE.to_string(),
            "/bin/sh".into(),
            "-c".into(),
            serve.command_with("/bin/dataplane-bench"),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let secs = timed(|| self.docker(&args).map(drop))?;
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", &name])?;
        wait_listening(&["nsenter", &format!("--net=/proc/{pid}/ns/net")], serve.ports())?;
        Ok(secs)
    }
}
