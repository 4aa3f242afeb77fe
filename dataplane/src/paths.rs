//! Every machine-global path a daemon instance uses, derived from its flags
//! so two daemons (each in its own network namespace) never collide.

use std::path::{Path, PathBuf};

pub const DEFAULT_SOCKET: &str = "/run/dataplane/dataplane.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/dataplane";
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf/dataplane";
/// Environment variable the CLI reads for the socket path.
pub const SOCKET_ENV: &str = "DATAPLANE_SOCKET";

/// Paths of one daemon instance.
#[derive(Clone, Debug)]
pub struct Paths {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub bpffs: PathBuf,
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
