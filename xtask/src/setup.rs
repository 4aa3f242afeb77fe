//! `cargo xtask setup`: everything a fresh machine lacks, installed
//! idempotently (each step checks first, so a second run takes a second).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};

use crate::run;

/// Debian packages the project and its tests use.
const PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "iperf3",
    "curl",
    "dnsutils",
    "netcat-openbsd",
    "socat",
    "procps",
    "util-linux",
    "iptables",
    "nftables",
    "dnsmasq-base",
    "bpftool",
    "python3",
];

/// The benchmark's peers (issue: all install from Debian). Installed with
/// service starts refused, so docker.io's postinst never starts a dockerd
/// on the machine: the harness runs its own, inside namespaces.
const PEER_PACKAGES: &[&str] = &[
    "netavark",
    "aardvark-dns",
    "dnsperf",
    "containernetworking-plugins",
    "sockperf",
    "busybox-static",
    "conntrack",
    "docker.io",
    "docker-compose",
    // The cluster store of overlay networks (etcd 3.4), etcdctl, and protoc
    // for the etcd client crate's build.
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    // protoc's well-known types (google/protobuf/*.proto).
    "libprotobuf-dev",
    // A CNI runtime for the CNI plugin's tests (Podman 4.3, CNI backend).
    "podman",
    // The metrics test scrapes the daemon with a real Prometheus (2.42).
    "prometheus",
];

/// `policy-rc.d` that refuses every service start while peers install.
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"))
}

pub fn path_with_cargo_bin() -> String {
    let bin = cargo_home().join("bin");
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("setup: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The benchmark peers, with no service started by their install scripts.
pub fn peers() -> anyhow::Result<()> {
    if PEER_PACKAGES.iter().all(|p| installed(p)) {
        return Ok(());
    }
    let ours = !std::path::Path::new(POLICY_RC_D).exists();
    if ours {
        std::fs::write(POLICY_RC_D, "#!/bin/sh\nexit 101\n")
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))
            })
            .with_context(|| format!("writing {POLICY_RC_D}"))?;
    }
    let r = apt_packages(PEER_PACKAGES);
    if ours {
        let _ = std::fs::remove_file(POLICY_RC_D);
    }
    r
}

fn rust_src() -> anyhow::Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", "nightly"])
        .output()?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    println!("setup: adding rust-src to the nightly toolchain");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker built against the libLLVM shipped inside the stable toolchain.
fn bpf_linker() -> anyhow::Result<()> {
    let linker = cargo_home().join("bin/bpf-linker");
    if Command::new(&linker).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Ok(());
    }
    let out = Command::new("rustc")
        .args(["+stable", "--print", "sysroot"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the toolchain's lib dir")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so.")))
        .context("no libLLVM.so.* in the stable toolchain")?;
    // A prefix dir whose lib/ has libLLVM.so (for the build) and the soname (for the runpath).
    let prefix = cargo_home().join("dataplane-llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so".into(), lib.file_name().map(|n| n.to_owned()).unwrap_or_default()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link).with_context(|| format!("linking {}", link.display()))?;
    }
    println!("setup: building bpf-linker against {}", lib.display());
    run(Command::new("cargo")
        .args(["+stable", "install", "bpf-linker", "--no-default-features", "--features", "llvm-22"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env("LLVM_PREFIX", &prefix)
        .env("RUSTFLAGS", format!("-C link-args=-Wl,-rpath,{}", prefix_lib.display())))?;
    if !Command::new(&linker).arg("--version").output().is_ok_and(|o| o.status.success()) {
        bail!("bpf-linker was built but does not run: check {}", prefix_lib.display());
    }
    Ok(())
}

pub fn setup() -> anyhow::Result<()> {
    apt_packages(PACKAGES).context("installing Debian packages")?;
    peers().context("installing the benchmark peers")?;
    rust_src().context("adding rust-src")?;
    bpf_linker().context("installing bpf-linker")?;
    Ok(())
}
