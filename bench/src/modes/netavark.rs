//! `netavark`: Podman's network stack (Debian's 1.4, which writes iptables
//! rules), driven the way Podman drives it: `netavark setup <netns>` with
//! the container's network JSON on stdin.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::{Container, Kept, Mode, PeerHost, PortMap, Serve, System, must_with_input, peer_mode, timed};

pub const NETAVARK: &str = "/usr/lib/podman/netavark";

struct Netavark {
    containers: Vec<Container>,
    host: PeerHost,
    config: PathBuf,
}

impl Drop for Netavark {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config);
    }
}

pub fn netavark() -> anyhow::Result<Mode> {
    anyhow::ensure!(std::path::Path::new(NETAVARK).exists(), "{NETAVARK} is not installed");
    let host = PeerHost::new("nv")?;
    let config = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    std::fs::create_dir_all(&config)?;
    let client = host.ext.name.clone();
    peer_mode(
        "netavark",
        &client,
        super::HOST_IP,
        Box::new(Netavark { containers: Vec::new(), host, config }),
    )
}

impl System for Netavark {
    fn host_ns(&self) -> String {
        self.host.host.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let mut c = Container::new("nc");
        let n = self.containers.len();
        let cfg = json!({
            "container_id": format!("{:064x}", n + 1),
            "container_name": format!("bench{n}"),
            "port_mappings": ports.iter().map(|p| json!({
                "host_ip": "", "container_port": p.container, "host_port": p.host,
                "range": 1, "protocol": p.proto,
            })).collect::<Vec<_>>(),
            "networks": { "bench": { "interface_name": "eth0", "static_ips": [format!("172.30.0.{}", n + 2)] } },
            "network_info": { "bench": {
                "name": "bench", "id": format!("{:064x}", 0xbe7c_u32), "driver": "bridge",
                "network_interface": "nvbr0",
                "subnets": [{ "subnet": "172.30.0.0/24", "gateway": "172.30.0.1" }],
                "ipv6_enabled": false, "internal": false, "dns_enabled": false,
                "ipam_options": { "driver": "host-local" },
            }},
        });
        let (hostns, netns, config) = (&self.host.host.name, c.ns.path(), &self.config);
        let secs = timed(|| {
            must_with_input(
                Command::new("ip")
                    .args(["netns", "exec", hostns, NETAVARK, "--config"])
                    .arg(config)
                    .args(["setup", &netns]),
                cfg.to_string().as_bytes(),
            )?;
            Ok(())
        })?;
        c.serve(serve)?;
        Ok(self.containers.kept(c, secs))
    }
}
