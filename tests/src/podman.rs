//! Real Podman (Debian's 4.3, CNI backend) on a test host: rootful, run
//! with `nsenter --net` into the host's namespace (it needs the machine's
//! /sys and cgroups), its storage, run and CNI configuration directories in
//! the host's test directory, containers from a busybox-static root
//! filesystem (no image registry). Every container goes on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cni::{DEBIAN_PLUGINS, plugin_bin};
use crate::{Host, output_bounded, text};

pub struct Podman {
    dir: PathBuf,
    host_ns: String,
}

/// Busybox applets the containers use.
const APPLETS: &[&str] =
    &["sh", "httpd", "nslookup", "wget", "ping", "ip", "cat", "sleep", "echo", "nc", "true"];

/// runc cannot raise rlimits here (no CAP_SYS_RESOURCE): keep them as they are.
pub const ULIMITS: &[&str] = &["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];

impl Podman {
    pub fn new(h: &Host) -> Self {
        let dir = h.dir.join("podman");
        for d in [
            "root",
            "runroot",
            "tmp",
            "cni",
            "rootfs/bin",
            "rootfs/proc",
            "rootfs/sys",
            "rootfs/dev",
            "rootfs/etc",
            "rootfs/tmp",
            "rootfs/www",
        ] {
            std::fs::create_dir_all(dir.join(d)).expect("podman dirs");
        }
        std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox"))
            .expect("busybox-static (cargo xtask setup installs it)");
        for a in APPLETS {
            let _ = std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(a));
        }
        std::fs::write(dir.join("rootfs/www/index.html"), "hello from podman\n").expect("index");
        let plugins = Path::new(&plugin_bin()).parent().expect("plugin dir").display().to_string();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\ncni_plugin_dirs = [\"{plugins}\", \"{DEBIAN_PLUGINS}\"]\nnetwork_backend = \"cni\"\n\
                 [engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n"
            ),
        )
        .expect("containers.conf");
        Podman { dir, host_ns: h.ns.path() }
    }

    /// The root filesystem the containers run (`--rootfs`).
    pub fn rootfs(&self) -> String {
        self.dir.join("rootfs").display().to_string()
    }

    /// Writes the conflist of dataplane network `net` (CNI 1.0.0: Podman 4.3's libcni knows no later).
    pub fn add_network(&self, h: &Host, net: &str) {
        let conf = h.dp_ok(&["network", "cni-config", "--cni-version", "1.0.0", net]);
        std::fs::write(self.dir.join("cni").join(format!("{net}.conflist")), conf).expect("conflist");
    }

    /// Runs `podman ARGS`.
    pub fn podman(&self, args: &[&str]) -> Output {
        let d = |s: &str| self.dir.join(s).display().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host_ns))
            .arg("podman")
            .args(["--root", &d("root"), "--runroot", &d("runroot"), "--tmpdir", &d("tmp")])
            .args(["--cni-config-dir", &d("cni"), "--network-backend", "cni"])
            .args(["--cgroup-manager", "cgroupfs", "--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d("containers.conf"))
            .stdin(Stdio::null());
        output_bounded(&mut cmd)
    }

    /// Runs `podman ARGS`; it must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(o.status.success(), "podman {args:?} failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `podman run -d --name NAME --network NET EXTRA… --rootfs … CMD…`.
    pub fn run_detached(&self, name: &str, net: &str, extra: &[&str], cmd: &[&str]) -> String {
        let rootfs = self.rootfs();
        let mut args = vec!["run", "-d", "--name", name, "--network", net];
        args.extend_from_slice(ULIMITS);
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--rootfs", &rootfs]);
        args.extend_from_slice(cmd);
        self.ok(&args).trim().to_string()
    }

    /// `podman exec NAME CMD…`
    pub fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["exec", name];
        args.extend_from_slice(cmd);
        self.podman(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
    }
}
