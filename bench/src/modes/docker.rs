//! `docker`: real Docker (dockerd from Debian's docker.io, iptables on,
//! userland proxy on, as installed) running inside the host namespace,
//! containers started with `docker run -p` from an image imported from a
//! tarball (busybox-static, iperf3 and the harness, with their libraries).

use anyhow::bail;
use dataplane_tests::docker::Dockerd;

use super::{Mode, PeerHost, PortMap, Serve, System, must, peer_mode, timed, wait_listening};

pub(super) const IMAGE: &str = "dataplane-bench:latest";
const BRIDGE: &str = "dkbr0";

struct Docker {
    /// Declared first: dockerd and its containers go before the rest.
    daemon: Dockerd,
    /// The host namespace's name.
    ns: String,
    /// The network containers join (None: Docker's default bridge).
    network: Option<&'static str>,
    n: usize,
    /// What must outlive dockerd: the namespaces, our daemon.
    _keep: Box<dyn std::any::Any>,
}

pub fn docker() -> anyhow::Result<Mode> {
    let host = PeerHost::new("dk")?;
    host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "172.27.0.1/24", "dev", BRIDGE])?;
    host.run(&["ip", "link", "set", BRIDGE, "up"])?;
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    let daemon = Dockerd::start(&host.host.path(), &dir, &["--iptables=true", "--bridge", BRIDGE], None)
        .map_err(anyhow::Error::msg)?;
    import(&daemon)?;
    let client = host.ext.name.clone();
    let ns = host.host.name.clone();
    peer_mode(
        "docker",
        &client,
        super::HOST_IP,
        Box::new(Docker { daemon, ns, network: None, n: 0, _keep: Box::new(host) }),
    )
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `docker-dataplane`: the same Docker, image and containers as `docker`,
/// on a `-d dataplane` network (our daemon as Docker's network and IPAM
/// driver): Docker's user experience on our datapath.
pub fn docker_dataplane() -> anyhow::Result<Mode> {
    let plugins = TempDir(std::env::temp_dir().join(dataplane_tests::unique("dataplane-bench-plugins-")));
    std::fs::create_dir_all(&plugins.0)?;
    let dir_arg = plugins.0.to_string_lossy().into_owned();
    let (host, ext) = std::panic::catch_unwind(|| {
        dataplane_tests::Host::with_external_args(
            "bdkdp",
            &["--log-level", "info", "--docker-plugin-dir", &dir_arg],
        )
    })
    .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    super::tune_client(&ext.name)?;
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", host.ns.name));
    let daemon = Dockerd::start(&host.ns.path(), &dir, &["--bridge", "none"], Some(&plugins.0))
        .map_err(anyhow::Error::msg)?;
    import(&daemon)?;
    let o = daemon.docker(&["network", "create", "-d", "dataplane", "--ipam-driver", "dataplane", "bench"]);
    if !o.status.success() {
        bail!("docker network create -d dataplane: {}", dataplane_tests::text(&o).trim());
    }
    let client = ext.name.clone();
    let ns = host.ns.name.clone();
    let keep = Box::new((host, ext, plugins));
    peer_mode(
        "docker-dataplane",
        &client,
        super::HOST_IP,
        Box::new(Docker { daemon, ns, network: Some("bench"), n: 0, _keep: keep }),
    )
}

/// The image: busybox, iperf3 and the harness, with their libraries.
pub(super) fn import(daemon: &Dockerd) -> anyhow::Result<()> {
    let iperf = must(&["sh", "-c", "command -v iperf3"])?;
    daemon.import_image(IMAGE, &[iperf.trim(), &super::bench_bin()]).map_err(anyhow::Error::msg)
}

impl Docker {
    fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let o = self.daemon.docker(args);
        if !o.status.success() {
            bail!("docker {}: {}", args.join(" "), dataplane_tests::text(&o).trim());
        }
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    }
}

impl System for Docker {
    fn host_ns(&self) -> String {
        self.ns.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let name = format!("c{}", self.n);
        self.n += 1;
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.clone()];
        if let Some(net) = self.network {
            args.extend(["--network".to_string(), net.to_string()]);
        }
        for s in super::ours::specs(ports) {
            args.extend(["-p".to_string(), s]);
        }
        args.extend([
            IMAGE.to_string(),
            "/bin/sh".into(),
            "-c".into(),
            serve.command_with("/bin/dataplane-bench"),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let secs = timed(|| self.docker(&args).map(drop))?;
        let pid = self.docker(&["inspect", "-f", "{{.State.Pid}}", &name])?;
        wait_listening(&["nsenter", &format!("--net=/proc/{pid}/ns/net")], serve.ports())?;
        Ok(secs)
    }
}
