//! `dataplane`: our daemon in a host namespace, containers started with
//! `dataplane run -p` (one range spec per run of consecutive ports).

use dataplane_tests::Host;

use super::{Mode, PortMap, Serve, System, timed, wait_listening};

struct Ours {
    host: Host,
    n: usize,
}

fn start() -> anyhow::Result<(Ours, dataplane_tests::Netns)> {
    // Logging as deployed (info), not the test harness's debug level.
    let (host, ext) =
        std::panic::catch_unwind(|| Host::with_external_args("bench", &["--log-level", "info"]))
            .map_err(|_| anyhow::anyhow!("the dataplane daemon did not start"))?;
    super::tune_client(&ext.name)?;
    let mut ours = Ours { host, n: 0 };
    ours.container(&super::main_ports(), Serve::All)?;
    Ok((ours, ext))
}

/// Published ports reached from the external client namespace.
pub fn dataplane() -> anyhow::Result<Mode> {
    let (ours, ext) = start()?;
    let client = ext.name.clone();
    Ok(Mode::new("dataplane", &client, super::HOST_IP).with_system(Box::new(ours)).keep(ext))
}

/// Published ports reached by a host process through 127.0.0.1 (the
/// socket hooks; no proxy process).
pub fn dataplane_localhost() -> anyhow::Result<Mode> {
    let (ours, ext) = start()?;
    let client = ours.host.ns.name.clone();
    super::tune_client(&client)?;
    Ok(Mode::new("dataplane-localhost", &client, "127.0.0.1").with_system(Box::new(ours)).keep(ext))
}

/// The daemon's resident memory with one sandbox and with `n` more (no ports),
/// and how long creating them took.
pub fn memory(n: usize) -> anyhow::Result<serde_json::Value> {
    let (mut ours, _ext) = start()?;
    let idle = rss_mib(&ours.host)?;
    let t = std::time::Instant::now();
    for _ in 0..n {
        ours.container(&[], Serve::Nothing)?;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "rss_mib_idle": idle,
        "rss_mib_loaded": rss_mib(&ours.host)?,
        "sandboxes": n + 1,
        "seconds_to_create": secs,
    }))
}

/// The daemon's resident memory (MiB).
pub fn rss_mib(h: &Host) -> anyhow::Result<f64> {
    let pid = h.daemon_pid().ok_or_else(|| anyhow::anyhow!("no daemon"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for the daemon"))?;
    Ok(kb / 1024.0)
}

/// `-p` specs for `ports`: consecutive ports of one protocol become one range.
pub fn specs(ports: &[PortMap]) -> Vec<String> {
    let mut out: Vec<(PortMap, u16)> = Vec::new();
    for p in ports {
        match out.last_mut() {
            Some((first, len))
                if first.proto == p.proto
                    && u32::from(first.host) + u32::from(*len) == u32::from(p.host)
                    && u32::from(first.container) + u32::from(*len) == u32::from(p.container) =>
            {
                *len += 1
            }
            _ => out.push((*p, 1)),
        }
    }
    out.iter()
        .map(|(p, len)| match len {
            1 => format!("{}:{}/{}", p.host, p.container, p.proto),
            _ => format!(
                "{}-{}:{}-{}/{}",
                p.host,
                p.host + len - 1,
                p.container,
                p.container + len - 1,
                p.proto
            ),
        })
        .collect()
}

impl System for Ours {
    fn host_ns(&self) -> String {
        self.host.ns.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let name = format!("c{}", self.n);
        self.n += 1;
        let mut args = vec!["run".to_string(), "-d".into(), "--name".into(), name.clone()];
        for s in specs(ports) {
            args.extend(["-p".to_string(), s]);
        }
        args.extend(["sh".to_string(), "-c".into(), serve.command()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let secs = timed(|| {
            let o = self.host.dp(&args);
            anyhow::ensure!(o.status.success(), "dataplane run: {}", dataplane_tests::text(&o).trim());
            Ok(())
        })?;
        let key = self.host.inspect(&name)["NetworkSettings"]["SandboxKey"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        wait_listening(&["nsenter", &format!("--net={key}")], serve.ports())?;
        Ok(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ports_become_one_range() {
        let mut ports = super::super::extra_ports(30000, 3);
        ports.push(PortMap { host: 7000, container: 7000, proto: "tcp" });
        ports.push(PortMap { host: 5201, container: 5201, proto: "udp" });
        assert_eq!(specs(&ports), ["30000-30002:30000-30002/tcp", "7000:7000/tcp", "5201:5201/udp"]);
    }
}
