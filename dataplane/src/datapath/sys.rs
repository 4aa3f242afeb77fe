//! The few BPF system calls aya does not expose. Links: listing them with
//! their attachment (ifindex or cgroup), querying a tcx hook for its link
//! ids, replacing a link's program in place, and detaching a link that
//! someone else holds (to find and retire links of an earlier generation
//! of the daemon). Maps: element lookup and delete through a shared fd
//! (no `&mut`: the kernel map is the synchronisation), and the batch
//! lookup and delete that make a walk of the conntrack table cost one
//! system call per few thousand entries instead of two per entry.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_link_info, bpf_link_type};

fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, zero-initialised bpf_attr of the size passed.
    let rc = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            cmd as nix::libc::c_long,
            std::ptr::from_mut(attr),
            std::mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is plain old data; all-zero is its documented default.
    unsafe { std::mem::zeroed() }
}

/// Where a link is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// tcx on an interface (ifindex in the namespace of the device).
    Tcx {
        ifindex: u32,
        ingress: bool,
    },
    /// A cgroup hook.
    Cgroup {
        cgroup_id: u64,
    },
    Other,
}

/// A link the kernel holds.
#[derive(Clone, Copy, Debug)]
pub struct LinkInfo {
    pub id: u32,
    pub prog_id: u32,
    pub attachment: Attachment,
}

/// A new fd for link `id`.
pub fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.link_id = id;
    let fd = sys_bpf(bpf_cmd::BPF_LINK_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says about the link behind `fd`.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // SAFETY: plain old data.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info = std::ptr::from_mut(&mut info) as u64;
    attr.info.info_len = std::mem::size_of::<bpf_link_info>() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let attachment = if info.type_ == bpf_link_type::BPF_LINK_TYPE_TCX as u32 {
        // SAFETY: the kernel filled the tcx member for a tcx link.
        let t = unsafe { info.__bindgen_anon_1.tcx };
        Attachment::Tcx {
            ifindex: t.ifindex,
            ingress: t.attach_type == bpf_attach_type::BPF_TCX_INGRESS as u32,
        }
    } else if info.type_ == bpf_link_type::BPF_LINK_TYPE_CGROUP as u32 {
        // SAFETY: the kernel filled the cgroup member for a cgroup link.
        let c = unsafe { info.__bindgen_anon_1.cgroup };
        Attachment::Cgroup { cgroup_id: c.cgroup_id }
    } else {
        Attachment::Other
    };
    Ok(LinkInfo { id: info.id, prog_id: info.prog_id, attachment })
}

/// Every link in the kernel (links that vanish while listed are skipped).
pub fn links() -> io::Result<Vec<LinkInfo>> {
    let mut out = Vec::new();
    let mut id = 0u32;
    // Bounded: link ids are finite; the kernel answers ENOENT after the last.
    for _ in 0..1_000_000 {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
        match sys_bpf(bpf_cmd::BPF_LINK_GET_NEXT_ID, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => break,
            Err(e) => return Err(e),
        }
        // SAFETY: the kernel wrote next_id.
        id = unsafe { attr.__bindgen_anon_6.next_id };
        match link_fd_by_id(id).and_then(|fd| link_info(fd.as_fd())) {
            Ok(info) => out.push(info),
            // Gone since it was listed, or still being set up by its owner
            // (EAGAIN: attached this instant, not ours to judge yet).
            Err(e) if matches!(e.raw_os_error(), Some(nix::libc::ENOENT | nix::libc::EAGAIN)) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Link ids attached at tcx ingress of `ifindex` (in the caller's network namespace).
pub fn tcx_ingress_links(ifindex: u32) -> io::Result<Vec<u32>> {
    const MAX: usize = 64;
    let mut prog_ids = [0u32; MAX];
    let mut link_ids = [0u32; MAX];
    let mut attr = zeroed_attr();
    attr.query.__bindgen_anon_1.target_ifindex = ifindex;
    attr.query.attach_type = bpf_attach_type::BPF_TCX_INGRESS as u32;
    attr.query.__bindgen_anon_2.prog_cnt = MAX as u32;
    attr.query.prog_ids = prog_ids.as_mut_ptr() as u64;
    attr.query.link_ids = link_ids.as_mut_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_PROG_QUERY, &mut attr)?;
    // SAFETY: the kernel wrote the count.
    let n = (unsafe { attr.query.__bindgen_anon_2.prog_cnt } as usize).min(MAX);
    Ok(link_ids[..n].iter().copied().filter(|&l| l != 0).collect())
}

/// Puts `prog` in place of the program of link `link` (atomic for traffic).
pub fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = zeroed_attr();
    attr.link_update.link_fd = link.as_raw_fd() as u32;
    attr.link_update.__bindgen_anon_1.new_prog_fd = prog.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// Detaches link `id` whoever holds it (its pins and fds stay, defunct).
pub fn link_detach(id: u32) -> io::Result<()> {
    let fd = link_fd_by_id(id)?;
    let mut attr = zeroed_attr();
    attr.link_detach.link_fd = fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_LINK_DETACH, &mut attr).map(|_| ())
}

/// A new fd for the object pinned at `path` (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    let fd = sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The value of `key` in the map behind `map`, None if it has none.
pub fn map_lookup<K: aya::Pod, V: aya::Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<Option<V>> {
    let mut value = std::mem::MaybeUninit::<V>::zeroed();
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = std::ptr::from_ref(key) as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    match sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_ELEM, &mut attr) {
        // SAFETY: the kernel wrote a whole V (plain data) on success.
        Ok(_) => Ok(Some(unsafe { value.assume_init() })),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes `key`; Ok(false) if it was not there.
pub fn map_delete<K: aya::Pod>(map: BorrowedFd<'_>, key: &K) -> io::Result<bool> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = std::ptr::from_ref(key) as u64;
    match sys_bpf(bpf_cmd::BPF_MAP_DELETE_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How many keys the map behind `map` holds (BPF_MAP_GET_NEXT_KEY walk,
/// at most `limit` steps): for hash maps, whose fill no counter keeps.
pub fn map_key_count(map: BorrowedFd<'_>, key_size: usize, limit: u64) -> io::Result<u64> {
    let mut cur = vec![0u8; key_size.max(1)];
    let mut next = vec![0u8; key_size.max(1)];
    let mut first = true;
    let mut n = 0u64;
    while n < limit {
        let mut attr = zeroed_attr();
        attr.__bindgen_anon_2.map_fd = map.as_raw_fd() as u32;
        attr.__bindgen_anon_2.key = if first { 0 } else { cur.as_ptr() as u64 };
        attr.__bindgen_anon_2.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
        match sys_bpf(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => return Ok(n),
            Err(e) => return Err(e),
        }
        first = false;
        std::mem::swap(&mut cur, &mut next);
        n += 1;
    }
    Ok(n)
}

/// Entries asked of the kernel per batch system call. More than any hash
/// bucket holds (the kernel answers ENOSPC when one bucket does not fit).
const BATCH: usize = 4096;

/// Every entry of a (non per-CPU) hash map, read in batches. Entries that
/// come and go during the walk may or may not be in it.
pub fn map_entries<K: aya::Pod, V: aya::Pod>(map: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    let mut keys: Vec<K> = Vec::with_capacity(BATCH);
    let mut values: Vec<V> = Vec::with_capacity(BATCH);
    // The hash map's cursor is a bucket index.
    let mut cursor = 0u32;
    let mut first = true;
    // Bounded: each call moves the cursor over at least one bucket.
    for _ in 0..(1 << 24) {
        let mut attr = zeroed_attr();
        attr.batch.map_fd = map.as_raw_fd() as u32;
        attr.batch.in_batch = if first { 0 } else { std::ptr::from_ref(&cursor) as u64 };
        attr.batch.out_batch = std::ptr::from_mut(&mut cursor) as u64;
        attr.batch.keys = keys.as_mut_ptr() as u64;
        attr.batch.values = values.as_mut_ptr() as u64;
        attr.batch.count = BATCH as u32;
        first = false;
        let res = sys_bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
        // SAFETY: the kernel sets count to the entries it wrote, also with ENOENT (the end).
        let n = (unsafe { attr.batch.count } as usize).min(BATCH);
        let done = match res {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        // SAFETY: the kernel wrote n whole keys and values (plain data).
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(keys.drain(..).zip(values.drain(..)));
        if done {
            return Ok(out);
        }
    }
    Err(io::Error::other("the map walk did not end"))
}

/// Deletes `keys` (those already gone are skipped); returns how many went.
pub fn map_delete_all<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut removed = 0;
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let mut attr = zeroed_attr();
        attr.batch.map_fd = map.as_raw_fd() as u32;
        attr.batch.keys = chunk.as_ptr() as u64;
        attr.batch.count = chunk.len() as u32;
        let res = sys_bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr);
        // SAFETY: the kernel sets count to the keys it deleted before stopping.
        let n = (unsafe { attr.batch.count } as usize).min(chunk.len());
        removed += n;
        match res {
            Ok(_) => rest = &rest[chunk.len()..],
            // The key at n is gone already (the datapath or LRU took it): skip it.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => rest = &rest[n + 1..],
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Inserts or overwrites `entries`, in batches.
pub fn map_update_all<K: aya::Pod, V: aya::Pod>(map: BorrowedFd<'_>, entries: &[(K, V)]) -> io::Result<()> {
    for chunk in entries.chunks(BATCH) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = zeroed_attr();
        attr.batch.map_fd = map.as_raw_fd() as u32;
        attr.batch.keys = keys.as_ptr() as u64;
        attr.batch.values = values.as_ptr() as u64;
        attr.batch.count = chunk.len() as u32;
        sys_bpf(bpf_cmd::BPF_MAP_UPDATE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Puts the calling thread in the SCHED_IDLE class: it runs only when no
/// other thread wants the CPU. (Lowering one's own class needs no privilege.)
pub fn schedule_idle() -> io::Result<()> {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    let rc = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &raw const param) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(std::time::Duration::from)
        .unwrap_or_default()
}
