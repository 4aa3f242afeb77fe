//! Project tasks: `cargo xtask setup | build-ebpf | build | run | test | install`.

mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "dataplane project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the BPF object (target/bpf/bpfel-unknown-none/release/dataplane).
    BuildEbpf,
    /// Build the BPF object and target/release/dataplane.
    Build,
    /// Setup, build, and run the daemon in the foreground (Ctrl-C stops it).
    Run {
        /// Extra arguments for `dataplane daemon`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup, build, and run every test (unit and integration, privileged ones included).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting and clippy (-D warnings) over the host and BPF crates.
    Lint,
    /// Setup, build, and run the benchmark harness (as root); writes target/bench/report.{json,md}.
    Bench {
        /// Extra arguments for `dataplane-bench run` (e.g. --quick, --rounds 7).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and install the binary, the systemd unit and the CNI plugin.
    Install {
        /// Installation prefix for the binary.
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Directories the `dataplane-cni` plugin goes into (Debian's and the
        /// upstream default).
        #[arg(long = "cni-dir", default_values = ["/usr/lib/cni", "/opt/cni/bin"])]
        cni_dirs: Vec<PathBuf>,
    },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs a command, failing with its name when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn build_ebpf() -> anyhow::Result<()> {
    let root = root();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root.join("dataplane-ebpf"))
        .args(["+nightly", "build", "-Z", "build-std=core", "--target", "bpfel-unknown-none", "--release"])
        .arg("--target-dir")
        .arg(root.join("target/bpf"))
        // The outer cargo's toolchain choice and flags are for the host crates.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("PATH", setup::path_with_cargo_bin());
    run(&mut cmd).context("building the BPF programs")
}

/// Totals over every test binary.
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    success: bool,
}

/// Runs `cargo test`, passing its output through, and adds up the results.
fn test(cmd: &mut Command) -> anyhow::Result<Totals> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                for part in rest.split(['.', ';']).map(str::trim) {
                    let mut words = part.split_whitespace();
                    if let (Some(n), Some(what)) = (words.next(), words.next()) {
                        let n: u64 = n.parse().unwrap_or(0);
                        match what {
                            "passed" => passed += n,
                            "failed" => failed += n,
                            "ignored" => ignored += n,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    Ok(Totals { passed, failed, ignored, success: status.success() })
}

fn lint() -> anyhow::Result<()> {
    let root = root();
    run(Command::new("cargo").current_dir(&root).args(["fmt", "--all", "--check"]))
        .context("code is not formatted: run `cargo fmt --all`")?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new("cargo")
        .current_dir(root.join("dataplane-ebpf"))
        .args(["+nightly", "clippy", "-Z", "build-std=core", "--target", "bpfel-unknown-none", "--release"])
        .arg("--target-dir")
        .arg(root.join("target/bpf"))
        .args(["--", "-D", "warnings"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("PATH", setup::path_with_cargo_bin()))
}

fn build() -> anyhow::Result<()> {
    build_ebpf()?;
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "dataplane",
        "-p",
        "dataplane-cni",
        "-p",
        "dataplane-bench",
    ]))
    .context("building dataplane")
}

/// Servers the tests and the benchmark start, counted by command name
/// (/proc/*/comm, cut at 15 bytes as the kernel keeps it).
const SERVERS: [&str; 9] = [
    "iperf3",
    "socat",
    "dataplane",
    "dataplane-bench",
    "dockerd",
    "containerd",
    "conmon",
    "aardvark-dns",
    "etcd",
];

fn servers_running() -> std::collections::BTreeMap<&'static str, usize> {
    let mut count = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else { continue };
        // A zombie has ended; only its parent's reaping is left.
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("Z") {
            continue;
        }
        if let Some(name) = SERVERS.iter().find(|s| s[..s.len().min(15)] == *comm.trim()) {
            *count.entry(*name).or_default() += 1;
        }
    }
    count
}

/// What the benchmark left running that was not there before it.
fn leftovers(before: &std::collections::BTreeMap<&str, usize>) -> Vec<String> {
    servers_running()
        .into_iter()
        .filter(|(name, n)| *n > before.get(name).copied().unwrap_or(0))
        .map(|(name, n)| format!("{} {name}", n - before.get(name).copied().unwrap_or(0)))
        .collect()
}

/// Copies the latest full run (target/bench) into docs/bench/.
fn publish_bench() -> anyhow::Result<()> {
    let root = root();
    let (from, to) = (root.join("target/bench"), root.join("docs/bench"));
    std::fs::create_dir_all(&to)?;
    for entry in std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))? {
        let path = entry?.path();
        let keep = path.extension().is_some_and(|e| e == "svg" || e == "md" || e == "json");
        if keep && path.is_file() {
            let dest = to.join(path.file_name().unwrap_or_default());
            std::fs::copy(&path, &dest).with_context(|| format!("copying to {}", dest.display()))?;
        }
    }
    println!("bench: report and plots copied to {}", to.display());
    Ok(())
}

/// Runs the benchmark harness from the project root.
fn bench(args: &[String]) -> anyhow::Result<()> {
    let root = root();
    run(Command::new(root.join("target/release/dataplane-bench"))
        .current_dir(&root)
        .arg("run")
        .args(args)
        .env("DATAPLANE_BIN", root.join("target/release/dataplane")))
    .context("running the benchmark harness")
}

/// Shell completions (bash, zsh, fish) and man pages, written by the
/// installed binary itself (clap_complete, clap_mangen) under `share`.
fn install_docs(bin: &std::path::Path, share: &std::path::Path) -> anyhow::Result<()> {
    for (shell, dir, file) in [
        ("bash", "bash-completion/completions", "dataplane"),
        ("zsh", "zsh/site-functions", "_dataplane"),
        ("fish", "fish/vendor_completions.d", "dataplane.fish"),
    ] {
        let out = Command::new(bin).args(["completion", shell]).output().context("dataplane completion")?;
        anyhow::ensure!(
            out.status.success(),
            "dataplane completion {shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = share.join(dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join(file), out.stdout)
            .with_context(|| format!("writing {}", dir.join(file).display()))?;
    }
    let man = share.join("man/man1");
    run(Command::new(bin).arg("man-pages").arg(&man)).context("writing the man pages")?;
    println!("installed completions under {} and man pages in {}", share.display(), man.display());
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::BuildEbpf => build_ebpf(),
        Cmd::Build => build(),
        Cmd::Run { args } => {
            setup::setup()?;
            build()?;
            let bin = root().join("target/release/dataplane");
            // exec: Ctrl-C goes straight to the daemon, which stops cleanly.
            use std::os::unix::process::CommandExt;
            let err = Command::new(bin).arg("daemon").args(args).exec();
            Err(err).context("starting the daemon")
        }
        Cmd::Lint => lint(),
        Cmd::Bench { args } => {
            setup::setup()?;
            build()?;
            bench(&args)?;
            // A full run's report and plots become the published ones.
            if !args
                .iter()
                .any(|a| a == "--quick" || a == "--out" || a.starts_with("--out=") || a == "--modes")
            {
                publish_bench()?;
            }
            Ok(())
        }
        Cmd::Test { args } => {
            setup::setup()?;
            build()?;
            if args.is_empty() {
                lint()?;
            }
            let root = root();
            let mut t = test(
                Command::new("cargo")
                    .current_dir(&root)
                    .args(["test", "--release", "--workspace", "--no-fail-fast"])
                    .args(&args)
                    .env("DATAPLANE_BIN", root.join("target/release/dataplane"))
                    .env("DATAPLANE_PRIVILEGED_TESTS", "1"),
            )?;
            if args.is_empty() {
                // The harness end to end, as a smoke test: it must produce the report.
                // It must leave no process behind (every server it starts goes
                // with its process group).
                let quick = ["--quick".to_string(), "--out".to_string(), "target/bench/quick".to_string()];
                let before = servers_running();
                match bench(&quick)
                    .and_then(|()| {
                        std::fs::metadata(root.join("target/bench/quick/report.json"))
                            .context("the harness wrote no report")
                    })
                    .and_then(|_| {
                        // Processes killed a moment ago may still be on their way out.
                        for _ in 0..20 {
                            if leftovers(&before).is_empty() {
                                return Ok(());
                            }
                            std::thread::sleep(std::time::Duration::from_millis(250));
                        }
                        bail!("the harness left processes running: {}", leftovers(&before).join(", "))
                    }) {
                    Ok(_) => t.passed += 1,
                    Err(e) => {
                        eprintln!("bench smoke test: {e:#}");
                        t.failed += 1;
                        t.success = false;
                    }
                }
            }
            println!();
            println!("{} passed, {} failed, {} skipped", t.passed, t.failed, t.ignored);
            if !t.success {
                bail!("tests failed");
            }
            Ok(())
        }
        Cmd::Install { prefix, cni_dirs } => {
            setup::setup()?;
            build()?;
            let root = root();
            let bin_dir = prefix.join("bin");
            std::fs::create_dir_all(&bin_dir)?;
            std::fs::copy(root.join("target/release/dataplane"), bin_dir.join("dataplane"))
                .context("installing the binary")?;
            install_docs(&bin_dir.join("dataplane"), &prefix.join("share"))?;
            for dir in &cni_dirs {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                // Copied beside, then renamed: a runtime running the old one meanwhile is not disturbed.
                let tmp = dir.join(".dataplane-cni.new");
                std::fs::copy(root.join("target/release/dataplane-cni"), &tmp)
                    .and_then(|_| std::fs::rename(&tmp, dir.join("dataplane-cni")))
                    .with_context(|| format!("installing the CNI plugin into {}", dir.display()))?;
                println!("installed {}", dir.join("dataplane-cni").display());
            }
            let unit = std::fs::read_to_string(root.join("dataplane/dataplane.service"))?
                .replace("/usr/local/bin/dataplane", &bin_dir.join("dataplane").display().to_string());
            std::fs::write("/etc/systemd/system/dataplane.service", unit).context("installing the unit")?;
            if Command::new("systemctl").arg("daemon-reload").status().is_ok_and(|s| s.success()) {
                println!("installed; start it with: systemctl enable --now dataplane");
            } else {
                println!("installed /etc/systemd/system/dataplane.service (systemd is not running here)");
            }
            Ok(())
        }
    }
}
