//! Established connections held open across something (a daemon restart):
//! one thread per connection, inside a client namespace, exchanging a byte
//! every 5 ms with an echo server and recording the longest wait and
//! whether the connection broke.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An exchange unanswered this long breaks the connection.
const STALL: Duration = Duration::from_secs(3);
/// No connection is held longer than this, whatever happens.
const LIMIT: Duration = Duration::from_secs(900);

/// What the held connections saw.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HoldReport {
    pub flows: usize,
    /// Connections that failed: reset, closed, or unanswered for 3 s.
    pub broken: usize,
    /// The longest wait for one echo on any connection (ms).
    pub max_gap_ms: f64,
    pub exchanges: u64,
    pub errors: Vec<String>,
}

struct Flow {
    exchanges: u64,
    max_gap: Duration,
    error: Option<String>,
}

/// Connections being held; [`Held::finish`] stops them and reports.
pub struct Held {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Flow>>,
}

fn enter(netns: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(netns)?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

impl Held {
    /// Connects to each of `addrs` (echo servers) from the namespace at
    /// `netns` (a path) and starts exchanging; fails if any connection
    /// cannot be made.
    pub fn open(netns: &str, addrs: &[SocketAddr]) -> anyhow::Result<Held> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut workers = Vec::new();
        for &addr in addrs {
            let (stop, tx, netns) = (Arc::clone(&stop), tx.clone(), netns.to_string());
            workers.push(std::thread::spawn(move || {
                let opened = enter(&netns).and_then(|()| {
                    let c = TcpStream::connect_timeout(&addr, STALL)?;
                    c.set_nodelay(true)?;
                    c.set_read_timeout(Some(STALL))?;
                    Ok(c)
                });
                let mut c = match opened {
                    Ok(c) => {
                        let _ = tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = tx.send(Err(format!("connecting to {addr}: {e}")));
                        return Flow { exchanges: 0, max_gap: Duration::ZERO, error: Some(e.to_string()) };
                    }
                };
                let mut flow = Flow { exchanges: 0, max_gap: Duration::ZERO, error: None };
                let end = Instant::now() + LIMIT;
                let mut b = [0u8; 1];
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let t = Instant::now();
                    let r = c.write_all(b"x").and_then(|()| c.read_exact(&mut b));
                    flow.max_gap = flow.max_gap.max(t.elapsed());
                    if let Err(e) = r {
                        flow.error = Some(format!("{addr}: {e}"));
                        break;
                    }
                    flow.exchanges += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                flow
            }));
        }
        let held = Held { stop, workers };
        for _ in addrs {
            match rx.recv_timeout(STALL * 2) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    held.finish();
                    anyhow::bail!(e);
                }
                Err(_) => {
                    held.finish();
                    anyhow::bail!("a connection did not open within {:?}", STALL * 2);
                }
            }
        }
        Ok(held)
    }

    /// Stops the exchanges and reports.
    pub fn finish(self) -> HoldReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut r = HoldReport { flows: self.workers.len(), ..Default::default() };
        for w in self.workers {
            let Ok(f) = w.join() else {
                r.broken += 1;
                r.errors.push("a connection thread panicked".into());
                continue;
            };
            r.exchanges += f.exchanges;
            r.max_gap_ms = r.max_gap_ms.max(f.max_gap.as_secs_f64() * 1000.0);
            if let Some(e) = f.error {
                r.broken += 1;
                r.errors.push(e);
            }
        }
        r
    }
}
