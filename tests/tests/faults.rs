//! The fault catalogue: what a full disk, a killed daemon, a host firewall
//! policy or garbage on the wire must not do — lose state, leave half-made
//! records or interfaces, or blackhole traffic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane_tests::{Host, sh, sh_ok, text};

/// A size-limited tmpfs mounted over a directory for the length of a test.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        sh_ok(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", &dir.display().to_string()]);
        SmallDisk(dir.to_path_buf())
    }

    /// Fills the disk with a file (dd stops at "No space left on device").
    fn fill(&self) {
        let _ = sh(&["dd", "if=/dev/zero", &format!("of={}", self.filler().display()), "bs=64k"]);
    }

    fn unfill(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }

    fn filler(&self) -> PathBuf {
        self.0.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = sh(&["umount", "-l", &self.0.display().to_string()]);
    }
}

/// Bytes of a sandbox's output log files.
fn log_bytes(h: &Host, name: &str) -> u64 {
    let id = h.inspect(name)["Id"].as_str().expect("id").to_string();
    let dir = h.state_dir().join("sandboxes").join(id);
    std::fs::read_dir(dir)
        .expect("sandbox dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("output.log"))
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Every sandbox record has its namespace file and every namespace file its record.
fn records_and_namespaces_agree(h: &Host) {
    let v: serde_json::Value = serde_json::from_str(&h.dp_ok(&["ps", "-a", "--format", "json"])).expect("ps");
    let mut keys: Vec<String> = Vec::new();
    for s in v.as_array().expect("list") {
        let name = s["Names"][0].as_str().expect("name").trim_start_matches('/').to_string();
        let key = h.inspect(&name)["NetworkSettings"]["SandboxKey"].as_str().expect("key").to_string();
        let file = Path::new(&key).file_name().expect("file").to_string_lossy().into_owned();
        keys.push(file);
    }
    keys.push("default".into());
    keys.sort();
    assert_eq!(keys, h.netns_files(), "store records and namespace files disagree");
}

#[test]
fn output_logs_are_bounded_and_rotated() {
    let (mut h, _ext) = Host::with_external_unstarted("log");
    h.daemon_args = ["--log-max-size", "64k", "--log-max-file", "2"].map(String::from).to_vec();
    h.start();
    // About 200 KB/s: several rotations within the test, without spinning a CPU.
    h.dp_ok(&["run", "-d", "--name", "noisy", "sh", "-c", "while :; do seq 100000 102000; sleep 0.05; done"]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "small",
        "--log-opt",
        "max-size=8k",
        "--log-opt",
        "max-file=1",
        "sh",
        "-c",
        "yes | head -c 100000; echo last-line; sleep 600",
    ]);
    std::thread::sleep(Duration::from_secs(2));
    let noisy = log_bytes(&h, "noisy");
    assert!(((64 << 10)..=2 * (64 << 10)).contains(&noisy), "2 files of 64 KiB at most: {noisy}");
    let logs = h.dp_ok(&["logs", "noisy"]);
    assert!(logs.len() as u64 <= noisy && logs.lines().last().is_some(), "logs show what is kept");
    assert!(log_bytes(&h, "small") <= 8 << 10, "{}", log_bytes(&h, "small"));
    assert!(h.dp_ok(&["logs", "small"]).ends_with("last-line\n"), "the newest output is kept");
    // The pump outlives a daemon restart with its sandbox, and ends with it.
    h.kill_daemon();
    h.start();
    std::thread::sleep(Duration::from_millis(500));
    let after = h.dp_ok(&["logs", "noisy"]);
    assert!(after.contains("101999"), "output stopped across the restart");
    let file = h.state_dir().join("sandboxes");
    h.dp_ok(&["rm", "-f", "noisy", "small"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = sh(&["pgrep", "-f", &format!("log-pump --file {}", file.display())]);
        if !o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "log pumps outlived their sandboxes: {}", text(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_state_dir_is_refused_clearly_leaves_nothing_and_recovers() {
    let (mut h, _ext) = Host::with_external_unstarted("full");
    let disk = SmallDisk::mount(&h.state_dir(), "24m");
    h.daemon_args = ["--min-free-space", "4m"].map(String::from).to_vec();
    h.start();
    h.dp_ok(&["run", "-d", "--name", "ok", "sleep", "600"]);
    h.dp_ok(&["network", "create", "other"]);
    let ok_ip = h.ip_of("ok", "bridge");
    disk.fill();
    let (links, netns, names) = (h.links(), h.netns_files(), h.sandbox_names());
    let state_dir = h.state_dir().display().to_string();
    for args in [
        &["run", "-d", "--name", "x", "sleep", "600"][..],
        &["network", "create", "full"][..],
        &["rm", "-f", "ok"][..],
        &["network", "connect", "other", "ok"][..],
    ] {
        let err = h.dp_err(args);
        assert!(err.contains("no space left on device") && err.contains(&state_dir), "{args:?}: {err}");
    }
    assert_eq!(
        (h.links(), h.netns_files(), h.sandbox_names()),
        (links, netns, names),
        "a refused request left something"
    );
    assert!(
        h.exec("ok", &["ping", "-c", "1", "-W", "2", "172.17.0.1"]).status.success(),
        "ok stopped working"
    );
    disk.unfill();
    h.dp_ok(&["run", "-d", "--name", "y", "sleep", "600"]);
    h.dp_ok(&["network", "create", "later"]);
    assert_eq!(h.sandbox_names(), ["ok", "y"]);
    assert_eq!(h.ip_of("ok", "bridge"), ok_ip);
    records_and_namespaces_agree(&h);

    // No headroom at all (--min-free-space 1k): the store itself meets the
    // full disk. Requests fail, none leaves half a record, and once space is
    // back the store works again without a restart.
    h.kill_daemon();
    h.daemon_args = ["--min-free-space", "1k"].map(String::from).to_vec();
    h.start();
    disk.fill();
    let mut refused = 0;
    for i in 0..6 {
        let name = format!("f{i}");
        let o = h.dp(&["run", "-d", "--name", &name, "sleep", "600"]);
        if !o.status.success() {
            refused += 1;
            assert!(text(&o).contains("no space left") || text(&o).contains("No space left"), "{}", text(&o));
        }
    }
    assert!(refused > 0, "the full disk refused nothing");
    disk.unfill();
    for name in h.sandbox_names().into_iter().filter(|n| n.starts_with('f')) {
        let _ = h.dp(&["rm", "-f", &name]);
    }
    h.dp_ok(&["run", "-d", "--name", "after", "sleep", "600"]);
    assert!(h.sandbox_names().contains(&"after".to_string()));
    records_and_namespaces_agree(&h);
    h.kill_daemon();
    h.start();
    records_and_namespaces_agree(&h);
    assert!(
        h.sandbox_names().contains(&"ok".to_string()) && h.sandbox_names().contains(&"after".to_string())
    );
}
