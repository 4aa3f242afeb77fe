//! A real Prometheus (Debian's 2.42) in a test namespace, scraping targets
//! every second, asked through its own query API.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Netns, text};

/// Where the test's Prometheus listens (inside its namespace).
const LISTEN: &str = "127.0.0.1:19090";

/// A Prometheus server (until dropped: its process group is killed).
pub struct Prometheus {
    ns: String,
    child: Child,
}

impl Prometheus {
    /// Starts Prometheus in `ns` scraping `targets` (`ADDR:PORT`) as job
    /// `dataplane` every second; its data lives under `dir`.
    pub fn start(ns: &Netns, dir: &Path, targets: &[&str]) -> Prometheus {
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: dataplane\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).expect("prometheus config");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address={LISTEN}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("prometheus (Debian's prometheus; `cargo xtask setup`)");
        Prometheus { ns: ns.name.clone(), child }
    }

    /// The value of PromQL `expr` now (its first sample), if it has one.
    pub fn query(&self, expr: &str) -> Option<f64> {
        let url = format!("http://{LISTEN}/api/v1/query");
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "curl", "-s", "-m", "3", "-G", "--data-urlencode"])
            .arg(format!("query={expr}"))
            .arg(url)
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits (at most `within`) until `expr` has a value that `ok` accepts;
    /// the last value seen.
    pub fn wait_for(&self, expr: &str, within: Duration, ok: impl Fn(f64) -> bool) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.query(expr);
            if v.is_some_and(&ok) || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Prometheus' own view of its targets (for failure messages).
    pub fn targets(&self) -> String {
        let url = format!("http://{LISTEN}/api/v1/targets");
        let out =
            Command::new("ip").args(["netns", "exec", &self.ns, "curl", "-s", "-m", "3", &url]).output();
        out.map(|o| text(&o)).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // `ip netns exec` became Prometheus itself; its group holds nothing else.
        let _ = Command::new("kill")
            .args(["-9", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
