//! Generations of the datapath: each daemon start loads the programs anew.
//! Links pinned by an earlier start are pointed at the new programs in place
//! (an upgrade reaches every existing interface, with no gap in traffic);
//! links an earlier start left elsewhere — in a bpffs this start cannot see,
//! e.g. one private to the mount namespace of a daemon run with
//! `ip netns exec` — are found through the kernel and detached, so no old
//! program keeps steering packets with its own, stale maps.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{Array, Map, MapData};
use aya::programs::{ProgramInfo, loaded_programs};
use dataplane_common::{Config, MAP_CONFIG};

use super::programs::{CGROUP_LINK_PREFIX, Programs, SOCK_PROGRAMS, TC_PROGRAMS};
use super::sys;
use crate::error::{Error, Result};

/// Kernel program names are cut at 15 bytes.
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// Whether a kernel program name is one of ours.
fn is_ours(kname: &str) -> bool {
    TC_PROGRAMS.iter().chain(SOCK_PROGRAMS.iter()).any(|n| kernel_name(n) == kname)
}

/// A link of ours in the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub link_id: u32,
    /// Program name as the kernel has it (cut at 15 bytes).
    pub program: String,
    pub program_id: u32,
    /// `tcx ingress of IFACE` or `cgroup DIR`.
    pub target: String,
    /// Whether it runs this daemon start's program.
    pub current: bool,
}

fn programs_by_id() -> HashMap<u32, ProgramInfo> {
    loaded_programs().filter_map(|p| p.ok()).map(|p| (p.id(), p)).collect()
}

/// The netns cookie an old socket-hook program acts for, read from its own DP_CONFIG.
fn served_cookie(p: &ProgramInfo) -> Option<u64> {
    for id in p.map_ids().ok()??.into_iter() {
        let Ok(data) = MapData::from_id(id) else { continue };
        let named = data.info().ok().is_some_and(|i| i.name_as_str() == Some(kernel_name(MAP_CONFIG)));
        if !named {
            continue;
        }
        let arr: Array<MapData, Config> = Array::try_from(Map::from_map_data(data).ok()?).ok()?;
        return arr.get(&0, 0).ok().map(|c| c.netns_cookie);
    }
    None
}

impl Programs {
    /// Id and name of each program of this load.
    fn current_programs(&self) -> Result<HashMap<u32, &'static str>> {
        let mut ids = HashMap::new();
        let ebpf = self.object();
        for name in TC_PROGRAMS.into_iter().chain(SOCK_PROGRAMS) {
            let prog = ebpf
                .program(name)
                .ok_or_else(|| Error::BpfObject(format!("program {name} is missing from the object")))?;
            let info =
                prog.info().map_err(|source| Error::Program { what: format!("info of {name}"), source })?;
            ids.insert(info.id(), name);
        }
        Ok(ids)
    }

    /// Points every link pinned under this instance's bpffs at this load's
    /// programs (BPF_LINK_UPDATE: traffic never sees a gap). A pin that
    /// cannot be updated is dropped, so reconcile attaches afresh. Returns
    /// how many links were moved to the new programs.
    pub fn adopt_pinned_links(&self) -> Result<usize> {
        let current = self.current_programs()?;
        let by_name: HashMap<&str, u32> = current.iter().map(|(id, n)| (*n, *id)).collect();
        let old = programs_by_id();
        let mut moved = 0;
        let Ok(dir) = std::fs::read_dir(self.links_dir()) else { return Ok(0) };
        for entry in dir.flatten() {
            let pin = entry.path();
            let fname = entry.file_name().to_string_lossy().into_owned();
            let res = (|| -> std::io::Result<bool> {
                let fd = sys::obj_get(&pin)?;
                let info = sys::link_info(fd.as_fd())?;
                if current.contains_key(&info.prog_id) {
                    return Ok(false);
                }
                // Which program the pin stands for: cgroup pins carry its
                // name; interface pins, the name of the program they hold.
                let want = match fname.strip_prefix(CGROUP_LINK_PREFIX) {
                    Some(p) => p.to_string(),
                    None => old
                        .get(&info.prog_id)
                        .and_then(|p| p.name_as_str().map(String::from))
                        .unwrap_or_default(),
                };
                let Some(name) = by_name.keys().find(|n| kernel_name(n) == kernel_name(&want)) else {
                    return Err(std::io::Error::other(format!("holds an unknown program {want:?}")));
                };
                let ebpf = self.object();
                let prog = ebpf.program(name).ok_or_else(|| std::io::Error::other("missing program"))?;
                let pfd = prog.fd().map_err(std::io::Error::other)?;
                sys::link_update(fd.as_fd(), pfd.as_fd())?;
                Ok(true)
            })();
            match res {
                Ok(true) => moved += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(pin = %pin.display(), error = %e, "pinned link cannot take the new program; attaching afresh");
                    if let Err(e) = std::fs::remove_file(&pin) {
                        tracing::warn!(pin = %pin.display(), error = %e, "cannot remove the pin");
                    }
                }
            }
        }
        Ok(moved)
    }

    /// Every link of ours the kernel holds: tcx links on `interfaces`
    /// (ifindex, name: the daemon's namespace, so any program of ours there
    /// is ours) and cgroup links on `cgroup` whose socket-hook program acts
    /// for `netns_cookie` (other daemons' hooks, for other namespaces, are
    /// not ours), with whether each runs this load's program.
    pub fn attachments(
        &self,
        interfaces: &[(u32, String)],
        cgroup: &Path,
        netns_cookie: u64,
    ) -> Result<Vec<Attachment>> {
        use std::os::unix::fs::MetadataExt;
        let current = self.current_programs()?;
        let programs = programs_by_id();
        let name_of = |id: u32| programs.get(&id).and_then(|p| p.name_as_str()).unwrap_or("").to_string();
        let mut found = Vec::new();
        for (ifindex, ifname) in interfaces {
            let Ok(ids) = sys::tcx_ingress_links(*ifindex) else { continue };
            for id in ids {
                let Ok(info) = sys::link_fd_by_id(id).and_then(|fd| sys::link_info(fd.as_fd())) else {
                    continue;
                };
                let program = name_of(info.prog_id);
                if !is_ours(&program) {
                    continue;
                }
                found.push(Attachment {
                    link_id: id,
                    program,
                    program_id: info.prog_id,
                    target: format!("tcx ingress of {ifname}"),
                    current: current.contains_key(&info.prog_id),
                });
            }
        }
        let cgroup_id =
            std::fs::metadata(cgroup).map_err(|e| Error::io("stat cgroup", cgroup.display(), e))?.ino();
        let links = sys::links().map_err(|e| Error::io("list BPF links", "the kernel", e))?;
        for l in links {
            if l.attachment != (sys::Attachment::Cgroup { cgroup_id }) {
                continue;
            }
            let Some(p) = programs.get(&l.prog_id) else { continue };
            let is_current = current.contains_key(&l.prog_id);
            if !is_ours(p.name_as_str().unwrap_or(""))
                || !(is_current || served_cookie(p) == Some(netns_cookie))
            {
                continue;
            }
            found.push(Attachment {
                link_id: l.id,
                program: name_of(l.prog_id),
                program_id: l.prog_id,
                target: format!("cgroup {}", cgroup.display()),
                current: is_current,
            });
        }
        Ok(found)
    }

    /// Detaches every link of ours that does not run this load's program
    /// (see [`Programs::attachments`]); returns them.
    pub fn retire_stale_links(
        &self,
        interfaces: &[(u32, String)],
        cgroup: &Path,
        netns_cookie: u64,
    ) -> Result<Vec<Attachment>> {
        let mut retired = Vec::new();
        for a in self.attachments(interfaces, cgroup, netns_cookie)? {
            if a.current {
                continue;
            }
            sys::link_detach(a.link_id).map_err(|e| {
                Error::io("detach stale BPF link", format!("{} on {}", a.link_id, a.target), e)
            })?;
            super::write::counted();
            retired.push(a);
        }
        Ok(retired)
    }
}
