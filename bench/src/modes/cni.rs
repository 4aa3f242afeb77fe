//! `cni`: the CNI reference plugins (Debian's containernetworking-plugins):
//! bridge + host-local, then portmap, invoked through the CNI protocol
//! (environment + config on stdin, each plugin given the previous result).

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::{Container, Mode, PeerHost, PortMap, Serve, System, must_with_input, peer_mode, timed};

pub const CNI_PATH: &str = "/usr/lib/cni";

struct Cni {
    containers: Vec<Container>,
    host: PeerHost,
    /// host-local's allocations (kept off the machine's /var/lib/cni).
    data: PathBuf,
}

impl Drop for Cni {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

pub fn cni() -> anyhow::Result<Mode> {
    for p in ["bridge", "host-local", "portmap"] {
        anyhow::ensure!(
            std::path::Path::new(CNI_PATH).join(p).exists(),
            "the CNI plugin {CNI_PATH}/{p} is not installed"
        );
    }
    let host = PeerHost::new("cn")?;
    let data = std::env::temp_dir().join(format!("dataplane-bench-{}", host.host.name));
    let client = host.ext.name.clone();
    peer_mode("cni", &client, super::HOST_IP, Box::new(Cni { containers: Vec::new(), host, data }))
}

impl Cni {
    /// Runs one plugin with `conf` for container `id` in `netns`; returns its result.
    fn plugin(
        &self,
        plugin: &str,
        id: &str,
        netns: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let out = must_with_input(
            Command::new("ip")
                .args(["netns", "exec", &self.host.host.name])
                .arg(format!("{CNI_PATH}/{plugin}"))
                .env("CNI_COMMAND", "ADD")
                .env("CNI_CONTAINERID", id)
                .env("CNI_NETNS", netns)
                .env("CNI_IFNAME", "eth0")
                .env("CNI_PATH", CNI_PATH),
            conf.to_string().as_bytes(),
        )?;
        Ok(serde_json::from_slice(&out)?)
    }
}

impl System for Cni {
    fn host_ns(&self) -> String {
        self.host.host.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let mut c = Container::new("cc");
        let id = format!("bench{}", self.containers.len());
        let netns = c.ns.path();
        let bridge = json!({
            "cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cni0",
            "isGateway": true, "ipMasq": true,
            "ipam": { "type": "host-local", "dataDir": self.data,
                      "ranges": [[{ "subnet": "172.29.0.0/24", "gateway": "172.29.0.1" }]],
                      "routes": [{ "dst": "0.0.0.0/0" }] },
        });
        let secs = timed(|| {
            let result = self.plugin("bridge", &id, &netns, &bridge)?;
            let portmap = json!({
                "cniVersion": "1.0.0", "name": "bench", "type": "portmap",
                "capabilities": { "portMappings": true }, "snat": true,
                "runtimeConfig": { "portMappings": ports.iter().map(|p| json!({
                    "hostPort": p.host, "containerPort": p.container, "protocol": p.proto,
                })).collect::<Vec<_>>() },
                "prevResult": result,
            });
            self.plugin("portmap", &id, &netns, &portmap)?;
            Ok(())
        })?;
        c.serve(serve)?;
        self.containers.push(c);
        Ok(secs)
    }
}
