//! Driving CNI plugins exactly as a runtime does (Debian has no `cnitool`):
//! the parameters in the environment, the configuration on stdin, the
//! plugin run in the host's namespace; the answer is its exit status and
//! the JSON it printed.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{Host, bin, output_bounded};

/// The `dataplane-cni` executable under test (next to `dataplane`).
pub fn plugin_bin() -> String {
    std::env::var("DATAPLANE_CNI_BIN")
        .unwrap_or_else(|_| Path::new(&bin()).with_file_name("dataplane-cni").display().to_string())
}

/// Debian's reference plugins (`bandwidth`, `tuning`…).
pub const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// What one plugin run answered.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    /// Its stdout as JSON (Null when it printed nothing).
    pub json: Value,
    pub stderr: String,
}

impl Answer {
    /// The CNI error code (0 on success).
    pub fn code(&self) -> u64 {
        self.json["code"].as_u64().unwrap_or(0)
    }

    pub fn msg(&self) -> String {
        self.json["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// Runs `plugin` in `host`'s namespace with `env` and `stdin` (verbatim).
pub fn run_raw(host: &Host, plugin: &str, env: &[(&str, &str)], stdin: &str) -> Answer {
    let input = host.dir.join(format!("cni-stdin-{}", crate::unique("s")));
    std::fs::write(&input, stdin).expect("write the plugin's stdin");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", host.ns.path()))
        .arg(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env(
            "CNI_PATH",
            format!("{}:{DEBIAN_PLUGINS}", Path::new(&plugin_bin()).parent().expect("dir").display()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open stdin file")));
    let out = output_bounded(&mut cmd);
    let _ = std::fs::remove_file(&input);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Answer {
        ok: out.status.success(),
        json: if stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{plugin} printed no JSON ({e}): {stdout}"))
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The plugin configuration for `network` through `host`'s daemon, as a
/// runtime derives it from the conflist (`runtimeConfig` and the rest in `extra`).
pub fn config(host: &Host, version: &str, network: &str, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": version,
        "name": network,
        "type": "dataplane-cni",
        "network": network,
        "socket": host.socket.display().to_string(),
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// One attachment: a container ID, its namespace and interface name.
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

impl Attachment {
    pub fn new(container_id: &str, netns: &str) -> Self {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            args: String::new(),
        }
    }

    /// Runs `plugin` with `command` for this attachment.
    pub fn run_with(&self, host: &Host, plugin: &str, command: &str, conf: &Value) -> Answer {
        run_raw(
            host,
            plugin,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &self.container_id),
                ("CNI_NETNS", &self.netns),
                ("CNI_IFNAME", &self.ifname),
                ("CNI_ARGS", &self.args),
            ],
            &conf.to_string(),
        )
    }

    /// Runs `dataplane-cni` with `command` for this attachment.
    pub fn run(&self, host: &Host, command: &str, conf: &Value) -> Answer {
        self.run_with(host, &plugin_bin(), command, conf)
    }
}

/// `conf` with `prevResult` set (what a runtime passes to CHECK, DEL and
/// to the next plugin of a chain).
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}
