//! `cni`: the CNI reference plugins (Debian's containernetworking-plugins):
//! bridge + host-local, then portmap, invoked through the CNI protocol
//! (environment + config on stdin, each plugin given the previous result).

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use super::{Container, Kept, Mode, PeerHost, PortMap, Serve, System, must_with_input, peer_mode, timed};

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
        add(&self.host.host.name, &format!("{CNI_PATH}/{plugin}"), id, netns, conf)
    }
}

/// Runs CNI plugin `plugin` with ADD in namespace `host_ns` for container
/// `id` in `netns`, `conf` on stdin, as a runtime does; returns its result.
fn add(
    host_ns: &str,
    plugin: &str,
    id: &str,
    netns: &str,
    conf: &serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let out = must_with_input(
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host_ns}"))
            .arg(plugin)
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH),
        conf.to_string().as_bytes(),
    )?;
    Ok(serde_json::from_slice(&out)?)
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
        Ok(self.containers.kept(c, secs))
    }
}

/// `cni-dataplane`: the same CNI harness with `dataplane-cni` instead of
/// bridge + host-local + portmap: our daemon on the host, each container
/// attached by one ADD carrying its port mappings (`runtimeConfig`).
struct CniOurs {
    /// Declared first: their servers end before the daemon goes.
    containers: Vec<Container>,
    host: dataplane_tests::Host,
}

pub fn cni_dataplane() -> anyhow::Result<Mode> {
    let plugin = dataplane_tests::cni::plugin_bin();
    anyhow::ensure!(std::path::Path::new(&plugin).exists(), "the CNI plugin {plugin} is not built");
    let (host, ext) = std::panic::catch_unwind(|| {
        dataplane_tests::Host::with_external_args("bcni", &["--log-level", "info"])
    })
    .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    let o = host.dp(&["network", "create", "--subnet", "172.29.0.0/24", "bench"]);
    anyhow::ensure!(o.status.success(), "network create: {}", dataplane_tests::text(&o).trim());
    super::tune_client(&ext.name)?;
    let client = ext.name.clone();
    let mut mode = peer_mode(
        "cni-dataplane",
        &client,
        super::HOST_IP,
        Box::new(CniOurs { containers: Vec::new(), host }),
    )?;
    mode = mode.keep(ext);
    Ok(mode)
}

impl System for CniOurs {
    fn host_ns(&self) -> String {
        self.host.ns.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let mut c = Container::new("cd");
        let id = format!("bench{}", self.containers.len());
        let netns = c.ns.path();
        let conf = json!({
            "cniVersion": "1.1.0", "name": "bench", "type": "dataplane-cni", "network": "bench",
            "socket": self.host.socket,
            "runtimeConfig": { "portMappings": ports.iter().map(|p| json!({
                "hostPort": p.host, "containerPort": p.container, "protocol": p.proto,
            })).collect::<Vec<_>>() },
        });
        let plugin = dataplane_tests::cni::plugin_bin();
        let secs = timed(|| add(&self.host.ns.name, &plugin, &id, &netns, &conf).map(drop))?;
        c.serve(serve)?;
        Ok(self.containers.kept(c, secs))
    }
}
