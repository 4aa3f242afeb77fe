//! `dataplane monitor --format json` run by a test, its events read as they come.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Host, bin};

/// A running `dataplane monitor --format json`; killed on drop.
pub struct Monitor {
    child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Monitor {
    pub fn start(h: &Host) -> Monitor {
        let mut child = Command::new(bin())
            .arg("--socket")
            .arg(&h.socket)
            .args(["monitor", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dataplane monitor");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Monitor { child, lines }
    }

    /// Waits (bounded) for an event matching `want`, doing `poke` between tries.
    pub fn expect(&self, want: impl Fn(&serde_json::Value) -> bool, poke: impl Fn()) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            poke();
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(300)) {
                let v: serde_json::Value = serde_json::from_str(&line).expect("event json");
                if want(&v) {
                    return v;
                }
                seen.push(line);
            }
        }
        panic!("no matching event within 20 s; saw {seen:?}");
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
