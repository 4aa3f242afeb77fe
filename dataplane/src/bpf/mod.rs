//! Loading, attaching and pinning dataplane's BPF programs, and typed access
//! to its maps. Maps are pinned by name under the instance's bpffs directory
//! and tcx links under `<bpffs>/links/<ifname>`, so enforcement keeps running
//! while the daemon is down and is picked up again on start.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{TcAttachOptions, TcAttachType};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader, include_bytes_aligned};
use dataplane_common::{
    Backend, Config, Counter, CtEntry, CtKey, Direction, DnsPorts, DropReason, Endpoint, LbStatKey, LbTable,
    LocalTarget, MAP_CONFIG, MAP_CT, MAP_DNS, MAP_ENDPOINTS, MAP_EVENT_RATE, MAP_EVENTS, MAP_HOST_IPS,
    MAP_LB, MAP_LB_STATS, MAP_LOCAL, MAP_METRICS, MAP_MONITOR, MAP_SERVICES, MAP_SUBNETS, NetworkInfo,
    ServiceKey, SubnetKey, metric_index,
};
use ipnetwork::Ipv4Network;

use crate::error::{Error, Result};

mod generations;
pub mod sys;

pub use generations::Attachment;

/// The BPF object, built by `cargo xtask build-ebpf` and embedded here.
static OBJECT: &[u8] = include_bytes_aligned!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/bpf/bpfel-unknown-none/release/dataplane"
));

/// Program on the host side of every sandbox veth (tcx ingress).
pub const PROG_VETH_INGRESS: &str = "dp_veth_ingress";
/// Program on the uplink (tcx ingress): published ports.
pub const PROG_UPLINK_INGRESS: &str = "dp_uplink_ingress";
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

fn bpf_err(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::Bpf(format!("{what}: {e}"))
}

/// Pin file name for an interface's link: bpffs refuses names with '.'
/// (which interface names such as `eth0.50` may have).
pub fn pin_name(ifname: &str) -> String {
    ifname.replace('.', "_")
}

/// One counter row of `dataplane stats`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MetricRow {
    pub reason: String,
    pub direction: String,
    pub packets: u64,
    pub bytes: u64,
}

pub struct Datapath {
    ebpf: Ebpf,
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
    let obj = aya_obj::Object::parse(OBJECT).map_err(|e| bpf_err("parse object", e))?;
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

impl Datapath {
    /// Loads the object, reusing maps already pinned under `bpffs` (those
    /// of the same shape).
    pub fn load(bpffs: &Path) -> Result<Self> {
        ensure_bpffs(bpffs)?;
        for name in drop_incompatible_pins(bpffs)? {
            tracing::warn!(map = %name, "the pinned map has another shape (an upgrade): making it anew");
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(bpffs)
            .load(OBJECT)
            .map_err(|e| bpf_err("load object", e))?;
        for name in [PROG_VETH_INGRESS, PROG_UPLINK_INGRESS] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| bpf_err(name, "missing from object"))?
                .try_into()
                .map_err(|e| bpf_err(name, e))?;
            prog.load()
                .map_err(|e| bpf_err(format!("load {name} (needs CAP_BPF and a kernel with tcx)"), e))?;
        }
        for name in SOCK_PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| bpf_err(name, "missing from object"))?
                .try_into()
                .map_err(|e| bpf_err(name, e))?;
            prog.load().map_err(|e| bpf_err(format!("load {name} (needs cgroup-v2 socket hooks)"), e))?;
        }
        Ok(Datapath { ebpf, links_dir: bpffs.join("links") })
    }

    fn link_pin(&self, ifname: &str) -> PathBuf {
        self.links_dir.join(pin_name(ifname))
    }

    /// Attaches the veth program at tcx ingress of `ifname` and pins the link.
    /// Idempotent: an existing live pin is kept.
    pub fn attach_veth(&mut self, ifname: &str) -> Result<()> {
        self.attach(PROG_VETH_INGRESS, ifname)
    }

    /// Attaches the uplink program (published ports) at tcx ingress of `ifname`.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<()> {
        self.attach(PROG_UPLINK_INGRESS, ifname)
    }

    /// Attaches the socket hooks to the cgroup-v2 directory `cgroup` as
    /// links (so other daemons' hooks coexist) and pins them.
    pub fn attach_socket_hooks(&mut self, cgroup: &Path) -> Result<()> {
        for name in SOCK_PROGRAMS {
            let pin = self.links_dir.join(format!("{CGROUP_LINK_PREFIX}{name}"));
            if pin.exists() {
                if PinnedLink::from_pin(&pin).is_ok() {
                    continue;
                }
                let _ = std::fs::remove_file(&pin);
            }
            let dir =
                std::fs::File::open(cgroup).map_err(|e| Error::io("open cgroup", cgroup.display(), e))?;
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or_else(|| bpf_err(name, "missing"))?
                .try_into()
                .map_err(|e| bpf_err(name, e))?;
            // Attached as a bpf_link (kernel >= 5.7): links always coexist with
            // other programs on the cgroup, and the kernel refuses attach flags
            // with them, so the mode here is the default.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|e| bpf_err(format!("attach {name} to cgroup {}", cgroup.display()), e))?;
            let link = prog.take_link(id).map_err(|e| bpf_err("take link", e))?;
            let fd: FdLink = link.try_into().map_err(|e| bpf_err(format!("cgroup link {name}"), e))?;
            fd.pin(&pin).map_err(|e| bpf_err(format!("pin link {}", pin.display()), e))?;
        }
        Ok(())
    }

    fn attach(&mut self, prog_name: &str, ifname: &str) -> Result<()> {
        let pin = self.link_pin(ifname);
        if pin.exists() {
            if PinnedLink::from_pin(&pin).is_ok() {
                return Ok(());
            }
            let _ = std::fs::remove_file(&pin);
        }
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(prog_name)
            .ok_or_else(|| bpf_err(prog_name, "missing"))?
            .try_into()
            .map_err(|e| bpf_err(prog_name, e))?;
        let id = prog
            .attach_with_options(
                ifname,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|e| bpf_err(format!("attach {prog_name} at tcx ingress of {ifname}"), e))?;
        let link = prog.take_link(id).map_err(|e| bpf_err("take link", e))?;
        let fd: FdLink = link.try_into().map_err(|e| bpf_err(format!("tcx link on {ifname}"), e))?;
        fd.pin(&pin).map_err(|e| bpf_err(format!("pin link {}", pin.display()), e))?;
        Ok(())
    }

    /// Drops the pinned link of `ifname` (the interface may be gone already).
    pub fn detach_veth(&self, ifname: &str) {
        let _ = std::fs::remove_file(self.link_pin(ifname));
    }

    /// Names of interfaces that have a pinned link.
    pub fn pinned_links(&self) -> Vec<String> {
        std::fs::read_dir(&self.links_dir)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    fn endpoints(&mut self) -> Result<HashMap<&mut MapData, u32, Endpoint>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_ENDPOINTS).ok_or_else(|| bpf_err(MAP_ENDPOINTS, "missing"))?)
            .map_err(|e| bpf_err(MAP_ENDPOINTS, e))
    }

    fn subnets(&mut self) -> Result<LpmTrie<&mut MapData, SubnetKey, NetworkInfo>> {
        LpmTrie::try_from(self.ebpf.map_mut(MAP_SUBNETS).ok_or_else(|| bpf_err(MAP_SUBNETS, "missing"))?)
            .map_err(|e| bpf_err(MAP_SUBNETS, e))
    }

    pub fn set_endpoint(
        &mut self,
        ifindex: u32,
        net_num: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
        flags: u32,
    ) -> Result<()> {
        let ep = Endpoint { net_id: net_num, ipv4: ip.octets(), mac, _pad: [0; 2], flags };
        self.endpoints()?
            .insert(ifindex, ep, 0)
            .map_err(|e| bpf_err(format!("insert endpoint {ifindex}"), e))?;
        let local = LocalTarget { ifindex, mac, _pad: [0; 2] };
        if let Err(e) = self.locals()?.insert(ip.octets(), local, 0) {
            let _ = self.endpoints()?.remove(&ifindex);
            return Err(bpf_err(format!("insert local delivery of {ip}"), e));
        }
        Ok(())
    }

    pub fn remove_endpoint(&mut self, ifindex: u32) {
        let ip = self.endpoints().ok().and_then(|m| m.get(&ifindex, 0).ok()).map(|e| e.ipv4);
        if let Ok(mut m) = self.endpoints() {
            let _ = m.remove(&ifindex);
        }
        // Its address leads nowhere now (unless another endpoint took it over).
        if let (Some(ip), Ok(mut m)) = (ip, self.locals())
            && m.get(&ip, 0).is_ok_and(|t| t.ifindex == ifindex)
        {
            let _ = m.remove(&ip);
        }
    }

    fn locals(&mut self) -> Result<HashMap<&mut MapData, [u8; 4], LocalTarget>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_LOCAL).ok_or_else(|| bpf_err(MAP_LOCAL, "missing"))?)
            .map_err(|e| bpf_err(MAP_LOCAL, e))
    }

    /// Addresses in the local-delivery table, with their veth.
    pub fn local_entries(&mut self) -> Result<Vec<([u8; 4], u32)>> {
        Ok(self.locals()?.iter().filter_map(|r| r.ok()).map(|(k, v)| (k, v.ifindex)).collect())
    }

    pub fn remove_local(&mut self, ip: [u8; 4]) {
        if let Ok(mut m) = self.locals() {
            let _ = m.remove(&ip);
        }
    }

    /// ifindexes currently in the endpoint table.
    pub fn endpoint_indexes(&mut self) -> Result<Vec<u32>> {
        Ok(self.endpoints()?.keys().filter_map(|k| k.ok()).collect())
    }

    /// Records a bridge network's subnet with its gateway and `NET_FLAG_*` bits.
    pub fn set_subnet(
        &mut self,
        subnet: Ipv4Network,
        net_num: u32,
        gateway: Ipv4Addr,
        flags: u32,
    ) -> Result<()> {
        let key = Key::new(subnet.prefix() as u32, subnet.network().octets());
        let info = NetworkInfo { net_id: net_num, gateway: gateway.octets(), flags };
        self.subnets()?.insert(&key, info, 0).map_err(|e| bpf_err(format!("insert subnet {subnet}"), e))
    }

    pub fn remove_subnet(&mut self, subnet: Ipv4Network) {
        if let Ok(mut m) = self.subnets() {
            let _ = m.remove(&Key::new(subnet.prefix() as u32, subnet.network().octets()));
        }
    }

    /// Subnets currently in the trie.
    pub fn subnet_keys(&mut self) -> Result<Vec<Ipv4Network>> {
        Ok(self
            .subnets()?
            .keys()
            .filter_map(|k| k.ok())
            .filter_map(|k| Ipv4Network::new(Ipv4Addr::from(k.data()), k.prefix_len() as u8).ok())
            .collect())
    }

    /// Runs `packet` (an Ethernet frame) through the veth program without
    /// sending it anywhere (BPF_PROG_TEST_RUN); the skb arrives on `lo`
    /// (ifindex 1). Returns the program's tcx verdict (-1 next, 2 drop).
    pub fn dry_run_veth(&self, packet: &[u8]) -> Result<i32> {
        let prog: &SchedClassifier = self
            .ebpf
            .program(PROG_VETH_INGRESS)
            .ok_or_else(|| bpf_err(PROG_VETH_INGRESS, "missing"))?
            .try_into()
            .map_err(|e| bpf_err(PROG_VETH_INGRESS, e))?;
        let mut out = vec![0u8; packet.len() + 256];
        let opts =
            TestRunOptions { data_in: Some(packet), data_out: Some(&mut out), ..TestRunOptions::new() };
        let res = prog.test_run(opts).map_err(|e| bpf_err("BPF_PROG_TEST_RUN", format!("{e:?}")))?;
        Ok(res.return_value as i32)
    }

    fn services(&mut self) -> Result<HashMap<&mut MapData, ServiceKey, Backend>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_SERVICES).ok_or_else(|| bpf_err(MAP_SERVICES, "missing"))?)
            .map_err(|e| bpf_err(MAP_SERVICES, e))
    }

    fn ct(&mut self) -> Result<HashMap<&mut MapData, CtKey, CtEntry>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_CT).ok_or_else(|| bpf_err(MAP_CT, "missing"))?)
            .map_err(|e| bpf_err(MAP_CT, e))
    }

    fn host_ips(&mut self) -> Result<HashMap<&mut MapData, [u8; 4], u32>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_HOST_IPS).ok_or_else(|| bpf_err(MAP_HOST_IPS, "missing"))?)
            .map_err(|e| bpf_err(MAP_HOST_IPS, e))
    }

    /// Sets the uplink egress is SNATed through (ifindex 0: no egress NAT).
    pub fn set_config(&mut self, cfg: Config) -> Result<()> {
        let mut m: aya::maps::Array<&mut MapData, Config> = aya::maps::Array::try_from(
            self.ebpf.map_mut(MAP_CONFIG).ok_or_else(|| bpf_err(MAP_CONFIG, "missing"))?,
        )
        .map_err(|e| bpf_err(MAP_CONFIG, e))?;
        m.set(0, cfg, 0).map_err(|e| bpf_err(MAP_CONFIG, e))
    }

    /// Replaces the set of host addresses on which 0.0.0.0 publications answer.
    pub fn set_host_ips(&mut self, ips: &[(Ipv4Addr, u32)]) -> Result<()> {
        let mut m = self.host_ips()?;
        let old: Vec<[u8; 4]> = m.keys().filter_map(|k| k.ok()).collect();
        for k in old {
            if !ips.iter().any(|(ip, _)| ip.octets() == k) {
                let _ = m.remove(&k);
            }
        }
        for (ip, idx) in ips {
            m.insert(ip.octets(), idx, 0).map_err(|e| bpf_err(format!("insert host ip {ip}"), e))?;
        }
        Ok(())
    }

    /// Installs published ports, all or none.
    pub fn set_services(&mut self, entries: &[(ServiceKey, Backend)]) -> Result<()> {
        let mut m = self.services()?;
        for (i, (k, b)) in entries.iter().enumerate() {
            if let Err(e) = m.insert(k, b, 0) {
                for (k, _) in &entries[..i] {
                    let _ = m.remove(k);
                }
                return Err(bpf_err("insert published port", e));
            }
        }
        Ok(())
    }

    pub fn remove_services(&mut self, keys: &[ServiceKey]) {
        if let Ok(mut m) = self.services() {
            for k in keys {
                let _ = m.remove(k);
            }
        }
    }

    pub fn service_keys(&mut self) -> Result<Vec<ServiceKey>> {
        Ok(self.services()?.keys().filter_map(|k| k.ok()).collect())
    }

    /// Every conntrack entry.
    pub fn ct_entries(&mut self) -> Result<Vec<(CtKey, CtEntry)>> {
        Ok(self.ct()?.iter().filter_map(|r| r.ok()).collect())
    }

    /// Removes the given conntrack entries.
    pub fn ct_remove(&mut self, keys: &[CtKey]) -> Result<()> {
        let mut m = self.ct()?;
        for k in keys {
            let _ = m.remove(k);
        }
        Ok(())
    }

    /// Removes those of `keys` for which `still(key, entry, partner entry)`
    /// holds when read again now; returns how many went.
    pub fn ct_remove_if(
        &mut self,
        keys: &[CtKey],
        still: impl Fn(&CtKey, &CtEntry, Option<&CtEntry>) -> bool,
    ) -> Result<usize> {
        let mut m = self.ct()?;
        let mut removed = 0;
        for k in keys {
            let Ok(e) = m.get(k, 0) else { continue };
            let pk = crate::conntrack::partner(k, &e);
            let p = m.get(&pk, 0).ok();
            if !still(k, &e, p.as_ref()) {
                continue;
            }
            // Both directions together: a half-expired flow would send its
            // next packets down the wrong path.
            removed += usize::from(m.remove(k).is_ok());
            if p.is_some() {
                removed += usize::from(m.remove(&pk).is_ok());
            }
        }
        Ok(removed)
    }

    /// Removes every conntrack entry; returns how many there were.
    pub fn ct_flush(&mut self) -> Result<usize> {
        let keys: Vec<CtKey> = self.ct()?.keys().filter_map(|k| k.ok()).collect();
        self.ct_remove(&keys)?;
        Ok(keys.len())
    }

    /// Removes conntrack entries that involve `addr` (either key end or the
    /// NAT target); returns how many.
    pub fn ct_flush_addr(&mut self, addr: Ipv4Addr) -> Result<usize> {
        let a = addr.octets();
        let mut m = self.ct()?;
        let doomed: Vec<CtKey> = m
            .iter()
            .filter_map(|r| r.ok())
            .filter(|(k, v)| k.saddr == a || k.daddr == a || v.addr == a)
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            let _ = m.remove(k);
        }
        Ok(doomed.len())
    }

    /// Sums the per-CPU counters for every (reason, direction).
    pub fn metrics(&self) -> Result<Vec<MetricRow>> {
        let map: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(self.ebpf.map(MAP_METRICS).ok_or_else(|| bpf_err(MAP_METRICS, "missing"))?)
                .map_err(|e| bpf_err(MAP_METRICS, e))?;
        let mut rows = Vec::new();
        for reason in DropReason::ALL {
            for dir in Direction::ALL {
                let values = map.get(&metric_index(reason, dir), 0).map_err(|e| bpf_err(MAP_METRICS, e))?;
                let (packets, bytes) = values.iter().fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
                rows.push(MetricRow {
                    reason: reason.name().to_string(),
                    direction: dir.name().to_string(),
                    packets,
                    bytes,
                });
            }
        }
        Ok(rows)
    }

    fn lb(&mut self) -> Result<HashMap<&mut MapData, [u8; 4], LbTable>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_LB).ok_or_else(|| bpf_err(MAP_LB, "missing"))?)
            .map_err(|e| bpf_err(MAP_LB, e))
    }

    /// Installs (or atomically replaces) the Maglev table of a virtual IP.
    pub fn set_lb(&mut self, vip: Ipv4Addr, table: &LbTable) -> Result<()> {
        self.lb()?.insert(vip.octets(), table, 0).map_err(|e| bpf_err(format!("insert VIP {vip}"), e))
    }

    pub fn remove_lb(&mut self, vip: Ipv4Addr) {
        if let Ok(mut m) = self.lb() {
            let _ = m.remove(&vip.octets());
        }
        if let Ok(mut m) = self.lb_stats_map() {
            let doomed: Vec<LbStatKey> =
                m.keys().filter_map(|k| k.ok()).filter(|k| k.vip == vip.octets()).collect();
            for k in doomed {
                let _ = m.remove(&k);
            }
        }
    }

    /// Virtual IPs currently balanced.
    pub fn lb_vips(&mut self) -> Result<Vec<Ipv4Addr>> {
        Ok(self.lb()?.keys().filter_map(|k| k.ok()).map(Ipv4Addr::from).collect())
    }

    fn lb_stats_map(&mut self) -> Result<PerCpuHashMap<&mut MapData, LbStatKey, u64>> {
        PerCpuHashMap::try_from(
            self.ebpf.map_mut(MAP_LB_STATS).ok_or_else(|| bpf_err(MAP_LB_STATS, "missing"))?,
        )
        .map_err(|e| bpf_err(MAP_LB_STATS, e))
    }

    /// New flows per (VIP, backend address), summed over CPUs.
    pub fn lb_stats(&mut self) -> Result<std::collections::HashMap<(Ipv4Addr, Ipv4Addr), u64>> {
        let m = self.lb_stats_map()?;
        Ok(m.iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| ((Ipv4Addr::from(k.vip), Ipv4Addr::from(k.backend)), v.iter().sum()))
            .collect())
    }

    /// The drop-event ring buffer, for the daemon's reader task.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map(MAP_EVENTS).ok_or_else(|| bpf_err(MAP_EVENTS, "missing"))?;
        RingBuf::try_from(map).map_err(|e| bpf_err(MAP_EVENTS, e))
    }

    /// Turns event reporting on (a monitor listens) or off.
    pub fn set_monitor(&mut self, on: bool) -> Result<()> {
        let mut m: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(MAP_MONITOR).ok_or_else(|| bpf_err(MAP_MONITOR, "missing"))?)
                .map_err(|e| bpf_err(MAP_MONITOR, e))?;
        m.set(0, u32::from(on), 0).map_err(|e| bpf_err(MAP_MONITOR, e))
    }

    /// Events the per-CPU budget suppressed, summed over CPUs.
    pub fn events_suppressed(&self) -> Result<u64> {
        let m: PerCpuArray<&MapData, dataplane_common::EventRate> = PerCpuArray::try_from(
            self.ebpf.map(MAP_EVENT_RATE).ok_or_else(|| bpf_err(MAP_EVENT_RATE, "missing"))?,
        )
        .map_err(|e| bpf_err(MAP_EVENT_RATE, e))?;
        Ok(m.get(&0, 0).map_err(|e| bpf_err(MAP_EVENT_RATE, e))?.iter().map(|r| r.suppressed).sum())
    }

    fn dns(&mut self) -> Result<HashMap<&mut MapData, u64, DnsPorts>> {
        HashMap::try_from(self.ebpf.map_mut(MAP_DNS).ok_or_else(|| bpf_err(MAP_DNS, "missing"))?)
            .map_err(|e| bpf_err(MAP_DNS, e))
    }

    /// Sends 127.0.0.11:53 of namespace `cookie` to the resolver's ports (host byte order).
    pub fn set_dns(&mut self, cookie: u64, udp: u16, tcp: u16) -> Result<()> {
        let ports = DnsPorts { udp: udp.to_be(), tcp: tcp.to_be() };
        self.dns()?
            .insert(cookie, ports, 0)
            .map_err(|e| bpf_err(format!("insert resolver of netns {cookie}"), e))
    }

    pub fn remove_dns(&mut self, cookie: u64) {
        if let Ok(mut m) = self.dns() {
            let _ = m.remove(&cookie);
        }
    }

    /// Namespace cookies with a resolver redirect.
    pub fn dns_cookies(&mut self) -> Result<Vec<u64>> {
        Ok(self.dns()?.keys().filter_map(|k| k.ok()).collect())
    }
}
