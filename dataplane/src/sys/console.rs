//! Interactive sandboxes (`run -i`, `run -t`): the process gets a
//! pseudo-terminal (`-t`) or a stdin pipe (`-i`), whose other end its log
//! pump holds — the pump outlives the daemon, as conmon does for Podman.
//! Besides writing the output log, the pump serves `attach.sock` in the
//! sandbox's directory: an attached client gets the output as it comes
//! and sends input and window sizes in small frames.
//!
//! Client → pump: one hello byte (1: replay the output written before the
//! first attach, for `run -it`, which attaches right after starting; 0:
//! none), then frames `[kind u8][len u32 BE][payload]`: [`DATA`] (stdin
//! bytes), [`RESIZE`] (rows, cols as u16 BE), [`EOF`] (stdin ended: the
//! pipe is closed; on a terminal nothing happens, as in Docker).
//! Pump → client: the raw output; the pump closes it when the process ends.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::sys::logs::LogWriter;

pub const DATA: u8 = 0;
pub const RESIZE: u8 = 1;
pub const EOF: u8 = 2;

/// Output kept for the first client that asks for it (what the process
/// wrote between its start and `run -it` attaching).
const REPLAY_MAX: usize = 64 << 10;

/// A unix socket's path as short as the kernel needs it (108 bytes at
/// most; a state dir under /tmp with a 64-digit sandbox ID is longer):
/// through an open handle of its directory, `/proc/self/fd/N/NAME`. Keep
/// the returned directory open while the path is used.
pub fn short_socket_path(socket: &Path) -> std::io::Result<(std::fs::File, std::path::PathBuf)> {
    let dir = socket.parent().ok_or_else(|| std::io::Error::other("a socket path without a directory"))?;
    let name = socket.file_name().ok_or_else(|| std::io::Error::other("a socket path without a name"))?;
    let handle = std::fs::File::open(dir)?;
    let short = Path::new("/proc/self/fd").join(handle.as_raw_fd().to_string()).join(name);
    Ok((handle, short))
}

/// A frame for the pump.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub fn resize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut p = rows.to_be_bytes().to_vec();
    p.extend_from_slice(&cols.to_be_bytes());
    frame(RESIZE, &p)
}

/// A pseudo-terminal pair, both ends close-on-exec (a process started
/// meanwhile must not keep the terminal open).
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

pub fn open_pty() -> nix::Result<Pty> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: PtyMaster owns the descriptor; we take it over.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    Ok(Pty { master, slave })
}

nix::ioctl_write_ptr_bad!(set_winsize, nix::libc::TIOCSWINSZ, nix::libc::winsize);
nix::ioctl_read_bad!(get_winsize, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// Sets a terminal's window size (rows, columns).
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    unsafe { set_winsize(fd.as_raw_fd(), &ws) }.map(|_| ())
}

/// A terminal's window size (rows, columns), if `fd` is one.
pub fn size_of(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    let mut ws = nix::libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one winsize to the pointer.
    unsafe { get_winsize(fd.as_raw_fd(), &mut ws) }.ok().map(|_| (ws.ws_row, ws.ws_col))
}

/// Makes the calling process's fd 0 (a terminal) its controlling terminal.
/// Only a system call: safe between fork and exec, after `setsid`.
pub fn take_controlling_terminal() -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal).
    let rc = unsafe { nix::libc::ioctl(0, nix::libc::TIOCSCTTY, 0) };
    if rc < 0 { Err(nix::Error::last()) } else { Ok(()) }
}

/// This terminal in raw mode (keys go through as bytes: Ctrl-C reaches the
/// sandbox's terminal, which makes it a signal there); restored on drop.
pub struct RawMode {
    fd: OwnedFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    pub fn enter(fd: BorrowedFd<'_>) -> Option<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let saved = tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: fd.try_clone_to_owned().ok()?, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ =
            nix::sys::termios::tcsetattr(self.fd.as_fd(), nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// What the pump shares between the output loop and its clients.
struct Clients {
    /// Attached clients (their write sides).
    out: Vec<UnixStream>,
    /// Output before the first attach (None once one asked for it, or it grew too big).
    replay: Option<Vec<u8>>,
}

/// The pump of an interactive sandbox: reads `output` into the log, serves
/// `socket` (see the module), writes clients' input to `input` (the
/// terminal's master when `tty`, else the stdin pipe). Ends when the
/// process's last holder of the output closes it; removes the socket.
pub fn serve(
    mut output: std::fs::File,
    input: std::fs::File,
    tty: bool,
    mut log: LogWriter,
    socket: &Path,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let (_dir, short) = short_socket_path(socket)?;
    let listener = UnixListener::bind(&short)?;
    let clients = Arc::new(Mutex::new(Clients { out: Vec::new(), replay: Some(Vec::new()) }));
    let input = Arc::new(Mutex::new(Some(input)));
    {
        let clients = Arc::clone(&clients);
        let input = Arc::clone(&input);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let clients = Arc::clone(&clients);
                let input = Arc::clone(&input);
                std::thread::spawn(move || client(conn, clients, input, tty));
            }
        });
    }
    let mut buf = vec![0u8; 64 << 10];
    let result = loop {
        let n = match output.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The terminal's last user (the process and what it started) closed it.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break Ok(()),
            Err(e) => break Err(e),
        };
        let data = &buf[..n];
        let keep = log.write(data);
        let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = c.replay.as_mut() {
            r.extend_from_slice(data);
            if r.len() > REPLAY_MAX {
                c.replay = None;
            }
        }
        // A client that cannot take the output within its timeout is dropped
        // (the process must not wait on a stuck terminal).
        c.out.retain_mut(|s| s.write_all(data).is_ok());
        drop(c);
        match keep {
            Ok(true) => {}
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    // A process that ended before `run -it` attached: its output waits a
    // moment for that first client, which asks for it.
    for _ in 0..100 {
        let c = clients.lock().unwrap_or_else(|p| p.into_inner());
        if c.replay.is_none() || !c.out.is_empty() {
            break;
        }
        drop(c);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(socket);
    let c = clients.lock().unwrap_or_else(|p| p.into_inner());
    for s in &c.out {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    result
}

/// One attached client: its hello, then its frames until it goes.
fn client(
    conn: UnixStream,
    clients: Arc<Mutex<Clients>>,
    input: Arc<Mutex<Option<std::fs::File>>>,
    tty: bool,
) {
    let mut reader = conn;
    let Ok(writer) = reader.try_clone() else { return };
    let _ = writer.set_write_timeout(Some(std::time::Duration::from_secs(2)));
    let mut hello = [0u8; 1];
    if reader.read_exact(&mut hello).is_err() {
        return;
    }
    {
        let mut c = clients.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer = writer;
        if hello[0] == 1
            && let Some(r) = c.replay.take()
            && writer.write_all(&r).is_err()
        {
            return;
        }
        c.out.push(writer);
    }
    let mut head = [0u8; 5];
    while reader.read_exact(&mut head).is_ok() {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if len > 1 << 20 {
            return;
        }
        let mut payload = vec![0u8; len];
        if reader.read_exact(&mut payload).is_err() {
            return;
        }
        let mut guard = input.lock().unwrap_or_else(|p| p.into_inner());
        match head[0] {
            DATA => {
                if let Some(f) = guard.as_mut() {
                    let _ = f.write_all(&payload);
                }
            }
            RESIZE if tty && payload.len() == 4 => {
                if let Some(f) = guard.as_ref() {
                    let rows = u16::from_be_bytes([payload[0], payload[1]]);
                    let cols = u16::from_be_bytes([payload[2], payload[3]]);
                    let _ = set_size(f.as_fd(), rows, cols);
                }
            }
            // Closing the pipe is the process's end of input; a terminal stays.
            EOF if !tty => *guard = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pty_carries_bytes_both_ways_and_its_size() {
        let p = open_pty().expect("pty");
        set_size(p.master.as_fd(), 33, 99).expect("resize");
        assert_eq!(size_of(p.slave.as_fd()), Some((33, 99)));
        let mut m = std::fs::File::from(p.master);
        let mut s = std::fs::File::from(p.slave);
        // Raw on the slave side: bytes as they are, no echo.
        let _raw = RawMode::enter(s.as_fd()).expect("raw");
        m.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).expect("read");
        assert_eq!(&buf, b"ping");
        assert_eq!(frame(DATA, b"ab"), vec![0, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(resize_frame(33, 99), vec![1, 0, 0, 0, 4, 0, 33, 0, 99]);
    }
}
