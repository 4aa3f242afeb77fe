//! Loading, attaching and pinning dataplane's BPF programs. Maps are pinned
//! by name under the instance's bpffs directory (their owners take them out
//! of the loaded object: see the sibling modules) and tcx links under
//! `<bpffs>/links/<ifname>`, so enforcement keeps running while the daemon
//! is down and is picked up again on start.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{TcAttachOptions, TcAttachType};
use aya::programs::{
    CgroupAttachMode, CgroupSockAddr, SchedClassifier, TestRun, TestRunOptions, Xdp, XdpMode,
};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};

use crate::error::{Error, Result};

/// The BPF object, built by `cargo xtask build-ebpf` and embedded here
/// (empty when the crate was built before it: see `build.rs`).
static OBJECT: &[u8] = include_bytes_aligned!(env!("DATAPLANE_BPF_OBJECT"));

/// Program on the host side of every sandbox veth (tcx ingress).
pub const PROG_VETH_INGRESS: &str = "dp_veth_ingress";
/// Program on the uplink (tcx ingress): published ports.
pub const PROG_UPLINK_INGRESS: &str = "dp_uplink_ingress";
/// Program on the VXLAN device (tcx ingress): overlay packets from other hosts.
pub const PROG_OVERLAY_INGRESS: &str = "dp_overlay_ingress";
/// Program on the uplink's driver (XDP, `daemon --xdp`): firewall denies.
pub const PROG_UPLINK_XDP: &str = "dp_uplink_xdp";
/// Prefix of the pin name of an interface's XDP link.
pub const XDP_LINK_PREFIX: &str = "xdp_";
/// Program on `lo` of each sandbox namespace with an embedded resolver
/// (tcx egress): A queries answered in the kernel.
pub const PROG_DNS_LO: &str = "dp_dns_lo";
/// Prefix of the pin name of a sandbox namespace's `lo` link (the
/// namespace's cookie follows).
pub const DNS_LINK_PREFIX: &str = "dnslo_";
/// Every tcx program.
pub const TC_PROGRAMS: [&str; 4] =
    [PROG_VETH_INGRESS, PROG_UPLINK_INGRESS, PROG_OVERLAY_INGRESS, PROG_DNS_LO];
/// cgroup-v2 socket hooks (host processes → published ports).
pub const SOCK_PROGRAMS: [&str; 8] = [
    "dp_connect4",
    "dp_sendmsg4",
    "dp_getpeername4",
    "dp_recvmsg4",
    "dp_connect6",
    "dp_sendmsg6",
    "dp_getpeername6",
    "dp_recvmsg6",
];
/// Prefix of the pin names of cgroup links (interface links use the interface name).
pub const CGROUP_LINK_PREFIX: &str = "cgroup_";

fn prog_err(what: impl std::fmt::Display) -> impl FnOnce(aya::programs::ProgramError) -> Error {
    move |source| Error::Program { what: what.to_string(), source }
}

fn missing(name: &str) -> Error {
    Error::BpfObject(format!("program {name} is missing from the object"))
}

/// Pin file name for an interface's link: bpffs refuses names with '.'
/// (which interface names such as `eth0.50` may have).
pub fn pin_name(ifname: &str) -> String {
    ifname.replace('.', "_")
}

/// The loaded programs (their maps taken by the map owners) and the links
/// that put them on interfaces and the cgroup. The lock is held only to
/// attach or look at programs, never for map work.
pub struct Programs {
    ebpf: Mutex<Ebpf>,
    links_dir: PathBuf,
}

/// Makes sure `dir` is on a bpf filesystem, mounting bpffs on /sys/fs/bpf
/// (the standard place) when nothing is mounted there yet.
fn ensure_bpffs(dir: &Path) -> Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let on_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p).map(|s| s.filesystem_type().0 == BPF_FS_MAGIC).unwrap_or(false)
    };
    let parent = dir.parent().unwrap_or(Path::new("/"));
    if !on_bpffs(parent) && !on_bpffs(dir) {
        if parent == Path::new("/sys/fs/bpf") {
            nix::mount::mount(Some("bpffs"), parent, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
                .map_err(|e| Error::sys("mount bpffs", parent.display(), e))?;
        } else {
            return Err(Error::invalid(
                "bpffs dir",
                dir.display(),
                "its parent is not a bpf filesystem; use a directory under /sys/fs/bpf",
            ));
        }
    }
    std::fs::create_dir_all(dir.join("links")).map_err(|e| Error::io("create dir", dir.display(), e))
}

/// Unpins maps whose shape (key, value, size, flags) differs from the
/// object's — an upgrade changed them — so the loader makes fresh ones
/// instead of reusing a map the programs would misread. Returns their names.
fn drop_incompatible_pins(bpffs: &Path) -> Result<Vec<String>> {
    let obj = aya_obj::Object::parse(OBJECT).map_err(|source| Error::ObjectParse { source })?;
    let mut dropped = Vec::new();
    for (name, m) in &obj.maps {
        let pin = bpffs.join(name);
        let Ok(info) = aya::maps::MapInfo::from_pin(&pin) else { continue };
        let same = info.key_size() == m.key_size()
            && info.value_size() == m.value_size()
            && info.max_entries() == m.max_entries()
            && info.map_flags() == m.map_flags();
        if !same {
            std::fs::remove_file(&pin).map_err(|e| Error::io("unpin", pin.display(), e))?;
            dropped.push(name.clone());
        }
    }
    Ok(dropped)
}

/// Loads the object, reusing maps already pinned under `bpffs` (those of
/// the same shape), and loads every program into the kernel.
pub(super) fn load(bpffs: &Path) -> Result<Ebpf> {
    if OBJECT.is_empty() {
        return Err(Error::BpfObject(
            "this binary was built without the BPF programs (target/bpf was empty); run `cargo xtask build`"
                .into(),
        ));
    }
    ensure_bpffs(bpffs)?;
    for name in drop_incompatible_pins(bpffs)? {
        tracing::warn!(map = %name, "the pinned map has another shape (an upgrade): making it anew");
    }
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(bpffs)
        .load(OBJECT)
        .map_err(|source| Error::BpfLoad { source })?;
    for name in TC_PROGRAMS {
        let prog: &mut SchedClassifier =
            ebpf.program_mut(name).ok_or_else(|| missing(name))?.try_into().map_err(prog_err(name))?;
        prog.load().map_err(prog_err(format!("load {name} (needs CAP_BPF and a kernel with tcx)")))?;
    }
    for name in SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr =
            ebpf.program_mut(name).ok_or_else(|| missing(name))?.try_into().map_err(prog_err(name))?;
        prog.load().map_err(prog_err(format!("load {name} (needs cgroup-v2 socket hooks)")))?;
    }
    let xdp: &mut Xdp = ebpf
        .program_mut(PROG_UPLINK_XDP)
        .ok_or_else(|| missing(PROG_UPLINK_XDP))?
        .try_into()
        .map_err(prog_err(PROG_UPLINK_XDP))?;
    xdp.load().map_err(prog_err(format!("load {PROG_UPLINK_XDP}")))?;
    Ok(ebpf)
}

impl Programs {
    pub(super) fn new(ebpf: Ebpf, bpffs: &Path) -> Self {
        Programs { ebpf: Mutex::new(ebpf), links_dir: bpffs.join("links") }
    }

    pub(super) fn object(&self) -> MutexGuard<'_, Ebpf> {
        self.ebpf.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn links_dir(&self) -> &Path {
        &self.links_dir
    }

    fn link_pin(&self, ifname: &str) -> PathBuf {
        self.links_dir.join(pin_name(ifname))
    }

    /// Attaches the veth program at tcx ingress of `ifname` and pins the link.
    /// Idempotent: an existing live pin is kept.
    pub fn attach_veth(&self, ifname: &str) -> Result<()> {
        self.attach(PROG_VETH_INGRESS, ifname)
    }

    /// Attaches the uplink program (published ports) at tcx ingress of `ifname`.
    pub fn attach_uplink(&self, ifname: &str) -> Result<()> {
        self.attach(PROG_UPLINK_INGRESS, ifname)
    }

    /// Attaches the overlay program at tcx ingress of the VXLAN device `ifname`.
    pub fn attach_overlay(&self, ifname: &str) -> Result<()> {
        self.attach(PROG_OVERLAY_INGRESS, ifname)
    }

    /// Attaches the DNS answering program at tcx egress of `lo` in the
    /// namespace at `netns` (whose cookie is `cookie`) and pins the link.
    /// Idempotent: an existing live pin is kept.
    pub fn attach_dns_lo(&self, netns: &Path, cookie: u64) -> Result<()> {
        let pin = self.links_dir.join(format!("{DNS_LINK_PREFIX}{cookie}"));
        if Self::live_pin(&pin)? {
            return Ok(());
        }
        // The kernel finds `lo` (and makes the link) in the namespace of
        // the calling thread.
        let shown = format!("lo in {}", netns.display());
        crate::sys::netns::run_in_scoped(netns, || {
            self.attach_tcx(PROG_DNS_LO, ("lo", &shown), TcAttachType::Egress, &pin)
        })?
    }

    /// Drops the pinned `lo` link of namespace `cookie` (the namespace may be gone already).
    pub fn detach_dns_lo(&self, cookie: u64) -> Result<()> {
        let pin = self.links_dir.join(format!("{DNS_LINK_PREFIX}{cookie}"));
        Self::drop_pin(&pin)
    }

    /// Namespace cookies whose `lo` has a pinned link.
    pub fn dns_lo_cookies(&self) -> Vec<u64> {
        self.pinned_links().iter().filter_map(|p| p.strip_prefix(DNS_LINK_PREFIX)?.parse().ok()).collect()
    }

    /// Removes a link pin: its link is detached with it (a pin already
    /// gone is not an error, and not a change).
    fn drop_pin(pin: &Path) -> Result<()> {
        match std::fs::remove_file(pin) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("remove link pin", pin.display(), e))
            }
            Err(_) => Ok(()),
            Ok(()) => {
                super::write::counted();
                Ok(())
            }
        }
    }

    /// A pin that no longer holds a live link goes (so it can be made anew);
    /// whether a live one is there.
    fn live_pin(pin: &Path) -> Result<bool> {
        if !pin.exists() {
            return Ok(false);
        }
        if PinnedLink::from_pin(pin).is_ok() {
            return Ok(true);
        }
        std::fs::remove_file(pin).map_err(|e| Error::io("remove dead link pin", pin.display(), e))?;
        Ok(false)
    }

    /// Attaches the socket hooks to the cgroup-v2 directory `cgroup` as
    /// links (so other daemons' hooks coexist) and pins them.
    pub fn attach_socket_hooks(&self, cgroup: &Path) -> Result<()> {
        let mut ebpf = self.object();
        for name in SOCK_PROGRAMS {
            let pin = self.links_dir.join(format!("{CGROUP_LINK_PREFIX}{name}"));
            if Self::live_pin(&pin)? {
                continue;
            }
            let dir =
                std::fs::File::open(cgroup).map_err(|e| Error::io("open cgroup", cgroup.display(), e))?;
            let prog: &mut CgroupSockAddr =
                ebpf.program_mut(name).ok_or_else(|| missing(name))?.try_into().map_err(prog_err(name))?;
            // Attached as a bpf_link (kernel >= 5.7): links always coexist with
            // other programs on the cgroup, and the kernel refuses attach flags
            // with them, so the mode here is the default.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(prog_err(format!("attach {name} to cgroup {}", cgroup.display())))?;
            let link = prog.take_link(id).map_err(prog_err(format!("take the link of {name}")))?;
            let fd: FdLink = link
                .try_into()
                .map_err(|source| Error::Link { what: format!("cgroup link of {name}"), source })?;
            fd.pin(&pin).map_err(|source| Error::Pin { what: pin.display().to_string(), source })?;
            super::write::counted();
        }
        Ok(())
    }

    fn attach(&self, prog_name: &str, ifname: &str) -> Result<()> {
        let pin = self.link_pin(ifname);
        if Self::live_pin(&pin)? {
            return Ok(());
        }
        self.attach_tcx(prog_name, (ifname, ifname), TcAttachType::Ingress, &pin)
    }

    /// Attaches `prog_name` at tcx `at` of interface `ifname` (in the
    /// calling thread's network namespace; `shown` names it in errors) and
    /// pins the link at `pin`.
    fn attach_tcx(
        &self,
        prog_name: &str,
        (ifname, shown): (&str, &str),
        at: TcAttachType,
        pin: &Path,
    ) -> Result<()> {
        let mut ebpf = self.object();
        let prog: &mut SchedClassifier = ebpf
            .program_mut(prog_name)
            .ok_or_else(|| missing(prog_name))?
            .try_into()
            .map_err(prog_err(prog_name))?;
        let side = if at == TcAttachType::Ingress { "ingress" } else { "egress" };
        let id = prog
            .attach_with_options(ifname, at, TcAttachOptions::TcxOrder(LinkOrder::default()))
            .map_err(prog_err(format!("attach {prog_name} at tcx {side} of {shown}")))?;
        let link = prog.take_link(id).map_err(prog_err(format!("take the link on {shown}")))?;
        let fd: FdLink =
            link.try_into().map_err(|source| Error::Link { what: format!("tcx link on {shown}"), source })?;
        fd.pin(pin).map_err(|source| Error::Pin { what: pin.display().to_string(), source })?;
        super::write::counted();
        Ok(())
    }

    /// Attaches the XDP program to `ifname` in the driver (native XDP) and
    /// pins the link; a driver without native XDP is refused by the kernel,
    /// named in the error. Idempotent.
    pub fn attach_uplink_xdp(&self, ifname: &str) -> Result<()> {
        let pin = self.links_dir.join(format!("{XDP_LINK_PREFIX}{}", pin_name(ifname)));
        if Self::live_pin(&pin)? {
            return Ok(());
        }
        let mut ebpf = self.object();
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_UPLINK_XDP)
            .ok_or_else(|| missing(PROG_UPLINK_XDP))?
            .try_into()
            .map_err(prog_err(PROG_UPLINK_XDP))?;
        let id = prog
            .attach(ifname, XdpMode::Driver)
            .map_err(prog_err(format!("attach {PROG_UPLINK_XDP} to {ifname} in native (driver) mode")))?;
        let link = prog.take_link(id).map_err(prog_err(format!("take the XDP link on {ifname}")))?;
        let fd: FdLink = link
            .try_into()
            .map_err(|source| Error::Link { what: format!("XDP link on {ifname}"), source })?;
        fd.pin(&pin).map_err(|source| Error::Pin { what: pin.display().to_string(), source })?;
        super::write::counted();
        Ok(())
    }

    /// Takes the XDP program off `ifname` (its pin held the link).
    pub fn detach_uplink_xdp(&self, ifname: &str) -> Result<()> {
        let pin = self.links_dir.join(format!("{XDP_LINK_PREFIX}{}", pin_name(ifname)));
        Self::drop_pin(&pin)
    }

    /// Drops the pinned link of `ifname` (the interface may be gone already).
    pub fn detach_veth(&self, ifname: &str) -> Result<()> {
        let pin = self.link_pin(ifname);
        Self::drop_pin(&pin)
    }

    /// Names of interfaces that have a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        std::fs::read_dir(&self.links_dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Runs `packet` (an Ethernet frame) through program `name` without
    /// sending it anywhere (BPF_PROG_TEST_RUN); the skb arrives on `lo`
    /// (ifindex 1). Returns the program's tcx verdict and the frame as the
    /// program left it.
    pub fn test_run(&self, name: &str, packet: &[u8]) -> Result<(i32, Vec<u8>)> {
        let ebpf = self.object();
        let prog = ebpf.program(name).ok_or_else(|| missing(name))?;
        let mut out = vec![0u8; packet.len() + 256];
        let opts =
            TestRunOptions { data_in: Some(packet), data_out: Some(&mut out), ..TestRunOptions::new() };
        let res = if name == PROG_UPLINK_XDP {
            let xdp: &Xdp = prog.try_into().map_err(prog_err(name))?;
            xdp.test_run(opts)
        } else {
            let tc: &SchedClassifier = prog.try_into().map_err(prog_err(name))?;
            tc.test_run(opts)
        }
        .map_err(prog_err(format!("BPF_PROG_TEST_RUN of {name}")))?;
        let len = (res.data_size_out as usize).min(out.len());
        out.truncate(len);
        Ok((res.return_value as i32, out))
    }
}

/// One pinned map of ours: how full it is.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapFill {
    pub name: String,
    /// The kernel's map type (hash, lru_hash, lpm_trie, array, …).
    pub kind: String,
    /// Keys held; None for arrays and rings, whose slots all exist.
    pub entries: Option<u64>,
    pub capacity: u32,
}

/// Every map pinned under `bpffs`, with its fill (hash-like maps walked key
/// by key: this is for `dataplane info`, not a hot path).
pub fn map_fill(bpffs: &Path) -> Vec<MapFill> {
    use aya::maps::MapType;
    let Ok(dir) = std::fs::read_dir(bpffs) else { return Vec::new() };
    let mut out: Vec<MapFill> = dir
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let info = aya::maps::MapInfo::from_pin(&path).ok()?;
            let kind = info.map_type().ok();
            let walkable = matches!(
                kind,
                Some(
                    MapType::Hash
                        | MapType::LruHash
                        | MapType::PerCpuHash
                        | MapType::LruPerCpuHash
                        | MapType::LpmTrie
                )
            );
            let entries = if walkable {
                super::sys::obj_get(&path).ok().and_then(|fd| {
                    use std::os::fd::AsFd;
                    super::sys::map_key_count(
                        fd.as_fd(),
                        info.key_size() as usize,
                        u64::from(info.max_entries()) + 1,
                    )
                    .ok()
                })
            } else {
                None
            };
            Some(MapFill {
                name: e.file_name().to_string_lossy().into_owned(),
                kind: kind.map(|k| format!("{k:?}")).unwrap_or_else(|| "unknown".into()),
                entries,
                capacity: info.max_entries(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
