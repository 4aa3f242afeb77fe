//! The systems under test, each built on its own namespaces with the same
//! shape: a client namespace, and a server reached through a published port
//! (or directly, for `bare`). Everything is torn down on drop.

use std::process::{Child, Command, Stdio};

use dataplane_tests::{Host, Netns, sh_ok};

/// Ports the servers listen on (and that are published).
pub const IPERF_PORT: u16 = 5201;
pub const ECHO_PORT: u16 = 7000;

/// One mode, ready to be measured.
pub struct Mode {
    pub name: &'static str,
    /// Namespace the clients run in.
    pub client: String,
    /// Address the clients connect to.
    pub addr: String,
    _keep: Vec<Box<dyn std::any::Any>>,
    servers: Vec<Child>,
}

impl Drop for Mode {
    fn drop(&mut self) {
        for c in &mut self.servers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bench_bin() -> String {
    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "dataplane-bench".into())
}

/// Starts iperf3 and the echo server inside namespace `ns`.
fn servers_in(ns: &str) -> Vec<Child> {
    let spawn = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {args:?} in {ns}: {e}"))
    };
    let servers = vec![
        spawn(&["iperf3", "-s", "-p", &IPERF_PORT.to_string()]),
        spawn(&[&bench_bin(), "serve", &ECHO_PORT.to_string()]),
    ];
    wait_listening(ns, &[IPERF_PORT, ECHO_PORT]);
    servers
}

fn wait_listening(ns: &str, ports: &[u16]) {
    for _ in 0..100 {
        let ss = String::from_utf8_lossy(&sh_ok(&["ip", "netns", "exec", ns, "ss", "-tln"]).into_bytes())
            .into_owned();
        if ports.iter().all(|p| ss.contains(&format!(":{p} "))) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("servers in {ns} never listened on {ports:?}");
}

/// Lets the client namespace open connections back to back: TIME_WAIT
/// reuse and a wide port range (otherwise the connection-rate test measures
/// port exhaustion, not the datapath).
fn tune_client(ns: &str) {
    sh_ok(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    sh_ok(&["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
}

/// A plain veth pair client ↔ server: no bridge, no NAT. The limit.
pub fn bare() -> Mode {
    let client = Netns::new("bc");
    let server = Netns::new("bs");
    let a = dataplane_tests::unique("ba");
    dataplane_tests::veth_pair(&a, &client.name, "eth0", &server.name);
    sh_ok(&["ip", "-n", &client.name, "addr", "add", "10.250.0.1/24", "dev", &a]);
    sh_ok(&["ip", "-n", &client.name, "link", "set", &a, "up"]);
    sh_ok(&["ip", "-n", &server.name, "addr", "add", "10.250.0.2/24", "dev", "eth0"]);
    sh_ok(&["ip", "-n", &server.name, "link", "set", "eth0", "up"]);
    let servers = servers_in(&server.name);
    tune_client(&client.name);
    Mode {
        name: "bare",
        client: client.name.clone(),
        addr: "10.250.0.2".into(),
        _keep: vec![Box::new(client), Box::new(server)],
        servers,
    }
}

/// Ours: a daemon in a host namespace, the server in a sandbox with `-p`.
pub fn dataplane() -> Mode {
    // Logging as deployed (info), not the test harness's debug level.
    let (h, ext) = Host::with_external_args("bench", &["--log-level", "info"]);
    let p = IPERF_PORT.to_string();
    let e = ECHO_PORT.to_string();
    let cmd = format!("iperf3 -s -p {p} & exec {} serve {e}", bench_bin());
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "-p",
        &format!("{p}:{p}"),
        "-p",
        &format!("{p}:{p}/udp"),
        "-p",
        &format!("{e}:{e}"),
        "sh",
        "-c",
        &cmd,
    ]);
    let key = h.inspect("srv")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default().to_string();
    for _ in 0..100 {
        let ss =
            String::from_utf8_lossy(&sh_ok(&["nsenter", &format!("--net={key}"), "ss", "-tln"]).into_bytes())
                .into_owned();
        if ss.contains(&format!(":{p} ")) && ss.contains(&format!(":{e} ")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Mode {
        name: "dataplane",
        client: ext.name.clone(),
        addr: "192.0.2.1".into(),
        _keep: vec![Box::new(ext), Box::new(h)],
        servers: vec![],
    }
}

/// Docker's rule shape (nat DOCKER chain with a DNAT per port, MASQUERADE,
/// filter FORWARD), loaded with iptables-restore into a host namespace with
/// a bridge and the server behind a veth.
pub fn docker_iptables() -> Mode {
    let ext = Netns::new("dx");
    let host = Netns::new("dh");
    let server = Netns::new("ds");
    let up = dataplane_tests::unique("du");
    dataplane_tests::veth_pair(&up, &host.name, "ext0", &ext.name);
    let hrun = |args: &[&str]| {
        let mut full = vec!["ip", "netns", "exec", &host.name];
        full.extend_from_slice(args);
        sh_ok(&full)
    };
    hrun(&["ip", "link", "set", &up, "name", "up0"]);
    hrun(&["ip", "addr", "add", "192.0.2.1/24", "dev", "up0"]);
    hrun(&["ip", "link", "set", "up0", "up"]);
    sh_ok(&["ip", "-n", &ext.name, "addr", "add", "192.0.2.2/24", "dev", "ext0"]);
    sh_ok(&["ip", "-n", &ext.name, "link", "set", "ext0", "up"]);
    hrun(&["ip", "link", "add", "br0", "type", "bridge"]);
    hrun(&["ip", "addr", "add", "172.31.0.1/24", "dev", "br0"]);
    hrun(&["ip", "link", "set", "br0", "up"]);
    let v = dataplane_tests::unique("dv");
    dataplane_tests::veth_pair(&v, &host.name, "eth0", &server.name);
    hrun(&["ip", "link", "set", &v, "master", "br0"]);
    hrun(&["ip", "link", "set", &v, "up"]);
    sh_ok(&["ip", "-n", &server.name, "addr", "add", "172.31.0.2/24", "dev", "eth0"]);
    sh_ok(&["ip", "-n", &server.name, "link", "set", "eth0", "up"]);
    sh_ok(&["ip", "-n", &server.name, "link", "set", "lo", "up"]);
    sh_ok(&["ip", "-n", &server.name, "route", "add", "default", "via", "172.31.0.1"]);
    hrun(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let rules = docker_rules(&[(IPERF_PORT, "tcp"), (IPERF_PORT, "udp"), (ECHO_PORT, "tcp")], 0);
    load_rules(&host.name, &rules);
    let servers = servers_in(&server.name);
    tune_client(&ext.name);
    Mode {
        name: "docker-iptables",
        client: ext.name.clone(),
        addr: "192.0.2.1".into(),
        _keep: vec![Box::new(ext), Box::new(host), Box::new(server)],
        servers,
    }
}

/// The iptables-restore input Docker's rules amount to for `ports`, plus
/// `extra` more published ports (for the scaling runs).
pub fn docker_rules(ports: &[(u16, &str)], extra: u16) -> String {
    let mut nat = String::from(
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
         -A POSTROUTING -s 172.31.0.0/24 ! -o br0 -j MASQUERADE\n\
         -A DOCKER -i br0 -j RETURN\n",
    );
    let mut filter = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A FORWARD -o br0 -j DOCKER\n\
         -A FORWARD -i br0 ! -o br0 -j ACCEPT\n\
         -A FORWARD -i br0 -o br0 -j ACCEPT\n",
    );
    let extra_ports = (0..extra).map(|i| (30000 + i, "tcp"));
    for (port, proto) in extra_ports.chain(ports.iter().copied()) {
        nat.push_str(&format!(
            "-A DOCKER ! -i br0 -p {proto} -m {proto} --dport {port} -j DNAT --to-destination 172.31.0.2:{port}\n"
        ));
        filter.push_str(&format!(
            "-A DOCKER -d 172.31.0.2/32 ! -i br0 -o br0 -p {proto} -m {proto} --dport {port} -j ACCEPT\n"
        ));
    }
    format!("{nat}COMMIT\n{filter}COMMIT\n")
}

fn load_rules(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-restore"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    child.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("write rules");
    let status = child.wait().expect("iptables-restore");
    assert!(status.success(), "iptables-restore failed in {ns}");
}
