//! `docker-iptables`: the rule shape Docker writes (nat DOCKER chain with a
//! DNAT per published port, MASQUERADE, filter FORWARD), loaded with
//! iptables-restore into a host namespace with a bridge and containers
//! behind veths. Cheap to scale to 10,000 ports.
//!
//! `docker-proxy`: the same, plus Docker's userland proxy binary listening
//! on 127.0.0.1 for each published port (how Docker serves localhost).

use std::process::Command;

use super::{
    Container, Kept, Mode, PeerHost, PortMap, Procs, Serve, System, main_ports, must, must_with_input,
    peer_mode, timed, wait_listening,
};

const BRIDGE: &str = "br0";
const SUBNET: &str = "172.31.0.0/24";

struct DockerRules {
    /// Declared first: containers go before the host.
    containers: Vec<Container>,
    host: PeerHost,
}

pub fn docker_iptables() -> anyhow::Result<Mode> {
    let rules = DockerRules::new("di")?;
    let client = rules.host.ext.name.clone();
    peer_mode("docker-iptables", &client, super::HOST_IP, Box::new(rules))
}

pub const DOCKER_PROXY: &str = "/usr/sbin/docker-proxy";

/// Host processes reach published ports through docker-proxy on 127.0.0.1.
pub fn docker_proxy() -> anyhow::Result<Mode> {
    anyhow::ensure!(std::path::Path::new(DOCKER_PROXY).exists(), "{DOCKER_PROXY} is not installed");
    let mut rules = DockerRules::new("dp")?;
    rules.container(&main_ports(), Serve::All)?;
    let hostns = rules.host.host.name.clone();
    super::tune_client(&hostns)?;
    let mut proxies = Procs::default();
    for p in main_ports() {
        // docker-proxy reports readiness on fd 3 and then closes it: it
        // must be open (dockerd passes a pipe), or the listener gets fd 3.
        let cmd = format!(
            "exec {DOCKER_PROXY} -proto {} -host-ip 127.0.0.1 -host-port {} -container-ip 172.31.0.2 \
             -container-port {} 3>/dev/null",
            p.proto, p.host, p.container
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &hostns, "sh", "-c", &cmd])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        proxies.0.push(child);
    }
    wait_listening(&["ip", "netns", "exec", &hostns], &[super::IPERF_PORT, super::ECHO_PORT])?;
    // Proxies die before the namespaces they live in.
    Ok(Mode::new("docker-proxy", &hostns, "127.0.0.1").keep(proxies).keep(rules))
}

impl DockerRules {
    fn new(tag: &str) -> anyhow::Result<DockerRules> {
        let host = PeerHost::new(tag)?;
        host.run(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
        host.run(&["ip", "addr", "add", "172.31.0.1/24", "dev", BRIDGE])?;
        host.run(&["ip", "link", "set", BRIDGE, "up"])?;
        must_with_input(
            Command::new("ip").args(["netns", "exec", &host.host.name, "iptables-restore"]),
            base_rules(SUBNET, "127.0.0.0/8").as_bytes(),
        )?;
        Ok(DockerRules { containers: Vec::new(), host })
    }
}

impl System for DockerRules {
    fn host_ns(&self) -> String {
        self.host.host.name.clone()
    }

    fn container(&mut self, ports: &[PortMap], serve: Serve) -> anyhow::Result<f64> {
        let mut c = Container::new("dc");
        let ip = format!("172.31.0.{}", self.containers.len() + 2);
        let v = dataplane_tests::unique("dv");
        let hostns = self.host.host.name.clone();
        let secs = timed(|| {
            dataplane_tests::veth_pair(&v, &hostns, "eth0", &c.ns.name);
            self.host.run(&["ip", "link", "set", &v, "master", BRIDGE])?;
            self.host.run(&["ip", "link", "set", &v, "up"])?;
            must(&["ip", "-n", &c.ns.name, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            must(&["ip", "-n", &c.ns.name, "link", "set", "eth0", "up"])?;
            must(&["ip", "-n", &c.ns.name, "route", "add", "default", "via", "172.31.0.1"])?;
            must_with_input(
                Command::new("ip").args(["netns", "exec", &hostns, "iptables-restore", "--noflush"]),
                port_rules(&ip, ports).as_bytes(),
            )?;
            Ok(())
        })?;
        c.serve(serve)?;
        Ok(self.containers.kept(c, secs))
    }
}

/// Docker's chains and the rules it writes once per bridge network, for
/// iptables (`subnet` IPv4, `loopback` 127.0.0.0/8) or ip6tables.
pub(super) fn base_rules(subnet: &str, loopback: &str) -> String {
    format!(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d {loopback} -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s {subnet} ! -o {BRIDGE} -j MASQUERADE\n\
         -A DOCKER -i {BRIDGE} -j RETURN\nCOMMIT\n\
         *filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A FORWARD -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o {BRIDGE} -j DOCKER\n\
         -A FORWARD -i {BRIDGE} ! -o {BRIDGE} -j ACCEPT\n\
         -A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT\nCOMMIT\n"
    )
}

/// What Docker appends (to iptables or ip6tables) for a container at `ip`
/// publishing `ports`.
pub(super) fn port_rules(ip: &str, ports: &[PortMap]) -> String {
    let (to, host) = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => (format!("[{ip}]"), format!("{ip}/128")),
        _ => (ip.to_string(), format!("{ip}/32")),
    };
    let (mut nat, mut filter) = (String::from("*nat\n"), String::from("*filter\n"));
    for p in ports {
        let (proto, h, c) = (p.proto, p.host, p.container);
        nat.push_str(&format!(
            "-A DOCKER ! -i {BRIDGE} -p {proto} -m {proto} --dport {h} -j DNAT --to-destination {to}:{c}\n"
        ));
        filter.push_str(&format!(
            "-A DOCKER -d {host} ! -i {BRIDGE} -o {BRIDGE} -p {proto} -m {proto} --dport {c} -j ACCEPT\n"
        ));
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}
