//! Network-namespace files: creating a namespace pinned by a bind mount (as
//! `ip netns add` does, but under the daemon's own state dir), removing it,
//! and running code inside one. Namespaces are per thread, so all of this
//! happens on short-lived dedicated threads.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use crate::error::{Error, Result};

/// Runs `f` on a new thread that first joins the namespace at `path`.
pub fn run_in<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = File::open(path).map_err(|e| Error::io("open netns", path.display(), e))?;
    let shown = path.display().to_string();
    std::thread::spawn(move || -> Result<R> {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns", &shown, e))?;
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Internal("netns worker thread panicked".into()))?
}

/// As [`run_in`], for a closure that borrows from the caller (a scoped thread).
pub fn run_in_scoped<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let file = File::open(path).map_err(|e| Error::io("open netns", path.display(), e))?;
    let shown = path.display().to_string();
    std::thread::scope(|s| {
        s.spawn(move || -> Result<R> {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("setns", &shown, e))?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::Internal("netns worker thread panicked".into()))?
    })
}

/// Creates a new, empty network namespace kept alive by a bind mount on `path`.
pub fn create(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir.display(), e))?;
    }
    File::create(path).map_err(|e| Error::io("create netns file", path.display(), e))?;
    let target = path.to_path_buf();
    let res = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("unshare(CLONE_NEWNET)", target.display(), e))?;
        bind_thread_netns(&target)
    })
    .join()
    .map_err(|_| Error::Internal("netns worker thread panicked".into()))?;
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Bind-mounts the calling thread's network namespace onto `target`.
fn bind_thread_netns(target: &Path) -> Result<()> {
    mount(Some(Path::new("/proc/thread-self/ns/net")), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| Error::sys("bind-mount netns", target.display(), e))
}

/// Pins an existing namespace (e.g. `/proc/PID/ns/net` of a sandbox process
/// that outlived the mount holding its namespace) at `path`.
pub fn pin_from(path: &Path, source: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir.display(), e))?;
    }
    File::create(path).map_err(|e| Error::io("create netns file", path.display(), e))?;
    mount(Some(source), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| Error::sys("bind-mount netns", path.display(), e))
}

/// Pins the daemon's own network namespace at `path` (the SandboxKey of host-mode sandboxes).
pub fn pin_current(path: &Path) -> Result<()> {
    if is_pinned(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create dir", dir.display(), e))?;
    }
    File::create(path).map_err(|e| Error::io("create netns file", path.display(), e))?;
    bind_thread_netns(path)
}

/// Whether `path` is a live namespace bind mount.
pub fn is_pinned(path: &Path) -> bool {
    // nsfs magic: the file is a namespace only while the bind mount exists.
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 == NSFS_MAGIC).unwrap_or(false)
}

/// Unmounts and deletes a namespace file. Missing files are not an error.
pub fn remove(path: &Path) -> Result<()> {
    if is_pinned(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|e| Error::sys("unmount netns", path.display(), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove netns file", path.display(), e)),
    }
}

/// The cookie of the network namespace socket `fd` lives in (SO_NETNS_COOKIE).
pub fn socket_cookie(fd: &impl std::os::fd::AsRawFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            nix::libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc == 0 { Ok(cookie) } else { Err(std::io::Error::last_os_error()) }
}

/// The cookie of the calling thread's network namespace.
pub fn current_cookie() -> Result<u64> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    // Unbound: loopback may be down in the namespace.
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| Error::sys("socket", "to read the netns cookie", e))?;
    socket_cookie(&sock).map_err(|e| Error::io("getsockopt(SO_NETNS_COOKIE)", "the daemon's netns", e))
}
