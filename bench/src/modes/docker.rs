//! `docker`: real Docker (dockerd from Debian's docker.io, iptables on,
//! userland proxy on, as installed) running inside the host namespace,
//! containers started with `docker run -p` from an image imported from a
//! tarball (busybox-static, iperf3 and the harness, with their libraries).

use anyhow::bail;
use dataplane_tests::docker::Dockerd;

use super::{Mode, PeerHost, PortMap, Serve, System, must, peer_mode, timed, wait_listening};

const IMAGE: &str = "dataplane-bench:latest";
const BRIDGE: &str = "dkbr0";

struct Docker {
    /// Declared first: dockerd and its containers go before the namespaces.
    daemon: Dockerd,
    host: PeerHost,
    n: usize,
}

pub fn docker() -> anyhow::Result<Mode> {
    let host = PeerHost::new("dk")?;
    host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    host.run(&["ip", "addr", "add", "172.27.0.1/24", "dev", BRIDGE])?;
    host.run(&["ip", "link", "set", BRIDGE, "up"])?;
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    let daemon = Dockerd::start(&host.host.path(), &dir, &["--iptables=true", "--bridge", BRIDGE], None)
        .map_err(anyhow::Error::msg)?;
    let iperf = must(&["sh", "-c", "command -v iperf3"])?;
    daemon.import_image(IMAGE, &[iperf.trim(), &super::bench_bin()]).map_err(anyhow::Error::msg)?;
    let client = host.ext.name.clone();
    peer_mode("docker", &client, super::HOST_IP, Box::new(Docker { daemon, host, n: 0 }))
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
        self.host.host.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let name = format!("c{}", self.n);
        self.n += 1;
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.clone()];
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
