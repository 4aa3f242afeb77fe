//! Every machine-global path a daemon instance uses, derived from its flags
//! so two daemons (each in its own network namespace) never collide.

use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/dataplane/dataplane.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dataplane";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/dataplane";
/// Where dockerd looks for plugin sockets.
pub const DEFAULT_DOCKER_PLUGIN_DIR: &str = "/run/docker/plugins";
/// The plugin's name for dockerd (`docker network create -d dataplane`).
pub const DOCKER_PLUGIN_SOCKET: &str = "dataplane.sock";
/// Environment variable the CLI reads for the socket path.
pub const SOCKET_ENV: &str = "DATAPLANE_SOCKET";

/// Paths of one daemon instance.
#[derive(Clone, Debug)]
pub struct Paths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
    /// cgroup-v2 directory the socket hooks attach to.
    pub cgroup: PathBuf,
    /// Socket of Docker's remote network/IPAM plugin protocol (None: off).
    pub docker_plugin: Option<PathBuf>,
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const SYSFS_MAGIC: i64 = 0x6265_6572;

fn fs_type(p: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(p).ok().map(|s| s.filesystem_type().0)
}

/// The cgroup-v2 root: /sys/fs/cgroup on unified hosts, the hybrid layout's
/// /sys/fs/cgroup/unified otherwise. A daemon started with `ip netns exec`
/// sees a fresh sysfs with nothing mounted under it: there it mounts
/// cgroup2 on /sys/fs/cgroup, in its private mount namespace.
pub fn default_cgroup() -> std::io::Result<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    for p in [root.to_path_buf(), root.join("unified")] {
        if fs_type(&p) == Some(CGROUP2_SUPER_MAGIC) {
            return Ok(p);
        }
    }
    if fs_type(root) == Some(SYSFS_MAGIC) {
        nix::mount::mount(
            Some("cgroup2"),
            root,
            Some("cgroup2"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )?;
        return Ok(root.to_path_buf());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "no cgroup-v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified: mount one or pass --cgroup",
    ))
}

impl Paths {
    /// The redb database file.
    pub fn db(&self) -> PathBuf {
        self.state_dir.join("dataplane.redb")
    }
    /// Directory of network-namespace files (bind mounts), one per sandbox.
    pub fn netns_dir(&self) -> PathBuf {
        self.state_dir.join("netns")
    }
    pub fn netns_file(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir().join(&sandbox_id[..12])
    }
    /// The daemon's own network namespace (the SandboxKey of `--network host`).
    pub fn host_netns_file(&self) -> PathBuf {
        self.netns_dir().join("default")
    }
    /// Per-sandbox files: logs, resolv.conf, hosts, hostname.
    pub fn sandbox_dir(&self, sandbox_id: &str) -> PathBuf {
        self.state_dir.join("sandboxes").join(sandbox_id)
    }
    pub fn log_file(&self, sandbox_id: &str) -> PathBuf {
        self.sandbox_dir(sandbox_id).join("output.log")
    }
    /// Where pinned tcx links live.
    pub fn bpf_links_dir(&self) -> PathBuf {
        self.bpffs.join("links")
    }
    pub fn bpf_maps_dir(&self) -> &Path {
        &self.bpffs
    }
}
