//! Interactive sandboxes: `run -it`, `run -i`, `exec -it`, signals. The
//! terminal a user types in is `script`'s pseudo-terminal (util-linux),
//! fed through a pipe by the test; what comes back is read as it comes.

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use dataplane_tests::{Host, bin, output_bounded, text};

/// `dataplane ARGS` on a terminal of its own (`script`), with its input
/// ours to write and its output read by a thread. Killed on drop.
struct Terminal {
    child: Child,
    out: mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl Terminal {
    /// `setup`: shell commands run on the terminal first (e.g. `stty rows 33 cols 99`).
    fn start(h: &Host, setup: &str, args: &[&str]) -> Terminal {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{}'", a.replace('\'', "'\\''"))).collect();
        let cmd = format!("{setup} {} --socket '{}' {}", bin(), h.socket.display(), quoted.join(" "));
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("script (util-linux)");
        let mut stdout = child.stdout.take().expect("stdout");
        let (tx, out) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Terminal { child, out, seen: Vec::new() }
    }

    fn type_in(&mut self, bytes: &[u8]) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(bytes).and_then(|()| stdin.flush()).expect("typing");
    }

    /// Waits (bounded) until the output has `what`.
    fn expect(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&self.seen).contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {what:?} on the terminal; it shows: {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            if let Ok(b) = self.out.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.extend(b);
            }
        }
    }

    /// The exit code of `dataplane` (script -e passes it on), bounded.
    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                while let Ok(b) = self.out.recv_timeout(Duration::from_millis(200)) {
                    self.seen.extend(b);
                }
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "still running; shows {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_it_is_a_terminal_with_stdin_size_signals_and_exit_code() {
    let (h, _ext) = Host::with_external("tty");
    // Input typed reaches the shell; its output comes back; its code is ours; --rm removes it.
    let mut t = Terminal::start(&h, "stty rows 33 cols 99;", &["run", "-it", "--rm", "--name", "t1", "sh"]);
    t.type_in(b"echo hello-$((6*7)); stty size; tty\n");
    t.expect("hello-42");
    t.expect("33 99");
    t.expect("/dev/pts/");
    t.type_in(b"exit 4\n");
    assert_eq!(t.exit_code(), 4, "{}", t.shown());
    assert!(h.dp(&["inspect", "t1"]).status.code() != Some(0), "--rm left t1");
    // Ctrl-C is SIGINT to the process on its terminal.
    let mut t = Terminal::start(
        &h,
        "",
        &[
            "run",
            "-it",
            "--name",
            "t2",
            "sh",
            "-c",
            "trap 'echo got-int; exit 7' INT; echo ready; while :; do sleep 0.1; done",
        ],
    );
    t.expect("ready");
    t.type_in(&[3]);
    t.expect("got-int");
    assert_eq!(t.exit_code(), 7, "{}", t.shown());
    assert_eq!(h.inspect("t2")["State"]["ExitCode"], 7);
    // A window size change of the user's terminal reaches the process's.
    let mut t = Terminal::start(
        &h,
        "stty rows 20 cols 80;",
        &[
            "run",
            "-it",
            "--rm",
            "--name",
            "t3",
            "sh",
            "-c",
            "trap 'stty size' WINCH; stty size; echo ready; read line; stty size",
        ],
    );
    t.expect("20 80");
    t.expect("ready");
    // The CLI itself (not script, nor the shell script started it with).
    let ours = std::fs::canonicalize(bin()).expect("the binary");
    let pids = dataplane_tests::sh_ok(&["pgrep", "-f", "run -it --rm --name t3"]);
    let cli = pids
        .lines()
        .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == ours))
        .unwrap_or_else(|| panic!("no CLI among {pids}"))
        .to_string();
    let tty = std::fs::read_link(format!("/proc/{cli}/fd/0")).expect("the CLI's terminal");
    dataplane_tests::sh_ok(&["stty", "-F", &tty.display().to_string(), "rows", "30", "cols", "90"]);
    t.expect("30 90");
    t.type_in(b"go\n");
    assert_eq!(t.exit_code(), 0, "{}", t.shown());
}

#[test]
fn run_i_without_a_terminal_pipes_stdin_and_forwards_signals() {
    let (h, _ext) = Host::with_external("stdin");
    // -i: stdin through the pump, its end is the process's end of input.
    let mut child = Command::new(bin())
        .args([
            "--socket",
            &h.socket.display().to_string(),
            "run",
            "-i",
            "--rm",
            "sh",
            "-c",
            "tr a-z A-Z; exit 2",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run -i");
    child.stdin.take().expect("stdin").write_all(b"piped text\n").expect("write");
    let o = child.wait_with_output().expect("output");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "PIPED TEXT\n", "{}", text(&o));
    assert_eq!(o.status.code(), Some(2));
    // Without -i the process's stdin is empty.
    let o = output_bounded(
        Command::new("sh")
            .args([
                "-c",
                &format!("echo lost | {} --socket {} run --rm cat; echo rc=$?", bin(), h.socket.display()),
            ])
            .stdin(Stdio::null()),
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "rc=0\n", "{}", text(&o));
    // A signal to the attached CLI goes to the process (sig-proxy).
    let mut child = Command::new(bin())
        .args(["--socket", &h.socket.display().to_string(), "run", "--rm", "--name", "sp"])
        .args(["sh", "-c", "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&h.dp(&["logs", "sp"]).stdout).contains("ready") {
        assert!(Instant::now() < deadline, "sp never got ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("signal the CLI");
    let code = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s.code();
        }
        assert!(Instant::now() < deadline, "the CLI did not end after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    assert_eq!(code, Some(9), "{out}");
    assert!(out.contains("got-term"), "{out}");
}

#[test]
fn exec_it_and_exec_i() {
    let (h, _ext) = Host::with_external("exectty");
    h.dp_ok(&["run", "-d", "--name", "c", "sleep", "300"]);
    let mut t = Terminal::start(&h, "stty rows 40 cols 120;", &["exec", "-it", "c", "sh"]);
    t.type_in(b"tty; stty size; hostname\n");
    t.expect("/dev/pts/");
    t.expect("40 120");
    t.type_in(b"exit 3\n");
    assert_eq!(t.exit_code(), 3, "{}", t.shown());
    assert!(
        t.shown().contains(&h.inspect("c")["Config"]["Hostname"].as_str().expect("hostname").to_string())
    );
    // Ctrl-C reaches the command, not the CLI.
    let mut t = Terminal::start(
        &h,
        "",
        &[
            "exec",
            "-it",
            "c",
            "sh",
            "-c",
            "trap 'echo got-int; exit 6' INT; echo ready; while :; do sleep 0.1; done",
        ],
    );
    t.expect("ready");
    t.type_in(&[3]);
    t.expect("got-int");
    assert_eq!(t.exit_code(), 6, "{}", t.shown());
    // -i: stdin goes in; without it, none does.
    let with = output_bounded(
        Command::new("sh")
            .args(["-c", &format!("echo typed | {} --socket {} exec -i c cat", bin(), h.socket.display())])
            .stdin(Stdio::null()),
    );
    assert_eq!(String::from_utf8_lossy(&with.stdout), "typed\n", "{}", text(&with));
    let without = output_bounded(
        Command::new("sh")
            .args(["-c", &format!("echo typed | {} --socket {} exec c cat", bin(), h.socket.display())])
            .stdin(Stdio::null()),
    );
    assert_eq!(String::from_utf8_lossy(&without.stdout), "", "{}", text(&without));
}
