//! The CLI's end of an interactive sandbox (`run -i`, `run -t`): connects
//! to the log pump's `attach.sock` (see [`crate::sys::console`]), puts this
//! terminal in raw mode for `-t`, and copies: stdin → the process, its
//! output → stdout, window size changes → its terminal. Without a
//! terminal, signals the CLI gets go to the process (Docker's sig-proxy).

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::api::client::{Client, enc};
use crate::sys::console;

/// The pump's socket as this process can reach it: directly, or through
/// the daemon's root when the daemon runs in a mount namespace of its own.
fn socket_path(log_path: &str, daemon_pid: u32) -> Vec<PathBuf> {
    let direct = console_socket(Path::new(log_path));
    let via = PathBuf::from(format!("/proc/{daemon_pid}/root{}", direct.display()));
    vec![direct, via]
}

fn console_socket(log: &Path) -> PathBuf {
    crate::sys::process::attach_socket(log)
}

async fn connect(paths: &[PathBuf]) -> anyhow::Result<UnixStream> {
    // The pump binds its socket as it starts, right after the process started.
    let mut last = None;
    for _ in 0..150 {
        for p in paths {
            let tried = match console::short_socket_path(p) {
                Ok((_dir, short)) => UnixStream::connect(&short).await,
                Err(e) => Err(e),
            };
            match tried {
                Ok(s) => return Ok(s),
                Err(e) => last = Some((p.clone(), e)),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p, e) = last.context("no socket path")?;
    Err(anyhow::anyhow!("cannot attach to the sandbox's terminal at {}: {e}", p.display()))
}

/// Sends the signals this CLI gets to sandbox `id`'s process until dropped.
pub fn proxy_signals(client: &Client, id: &str) -> tokio::task::JoinHandle<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let socket = client.socket().to_path_buf();
    let id = id.to_string();
    tokio::spawn(async move {
        let client = Client::new(socket);
        let kinds = [
            (SignalKind::interrupt(), "INT"),
            (SignalKind::terminate(), "TERM"),
            (SignalKind::hangup(), "HUP"),
            (SignalKind::quit(), "QUIT"),
            (SignalKind::user_defined1(), "USR1"),
            (SignalKind::user_defined2(), "USR2"),
        ];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
        for (kind, name) in kinds {
            let Ok(mut s) = signal(kind) else { continue };
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            });
        }
        while let Some(name) = rx.recv().await {
            let _ = client.post_empty(&format!("/dataplane/sandboxes/{}/kill?signal={name}", enc(&id))).await;
        }
    })
}

/// Attached until the process's output ends. `tty`: the sandbox has a
/// terminal; `stdin`: this terminal's input goes to it.
pub async fn attach(log_path: &str, daemon_pid: u32, tty: bool, stdin: bool) -> anyhow::Result<()> {
    let stream = connect(&socket_path(log_path, daemon_pid)).await?;
    let (mut rd, mut wr) = stream.into_split();
    // Replay: what it wrote before we got here (a prompt) comes first.
    wr.write_all(&[1]).await?;
    let raw = if tty && stdin && std::io::stdin().is_terminal() {
        console::RawMode::enter(std::io::stdin().as_fd())
    } else {
        None
    };
    let (tx, mut frames) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    if tty {
        let size = console::size_of(std::io::stdout().as_fd())
            .or_else(|| console::size_of(std::io::stdin().as_fd()));
        if let Some((rows, cols)) = size.filter(|(r, c)| *r > 0 && *c > 0) {
            let _ = tx.send(console::resize_frame(rows, cols));
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
            else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = console::size_of(std::io::stdout().as_fd())
                    && tx.send(console::resize_frame(rows, cols)).is_err()
                {
                    break;
                }
            }
        });
    }
    if stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(console::frame(console::EOF, &[]));
                        break;
                    }
                    Ok(n) => {
                        if tx.send(console::frame(console::DATA, &buf[..n])).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    drop(tx);
    tokio::spawn(async move {
        while let Some(f) = frames.recv().await {
            if wr.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = rd.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
        out.flush().await?;
    }
    drop(raw);
    Ok(())
}
