//! Real Docker containers on the BPF datapath: dockerd (Debian's docker.io)
//! uses dataplane as its network and IPAM driver through the remote plugin
//! protocol. Each test runs its own dockerd in its own host namespace, with
//! the plugin directory of its own in a private mount namespace.

use std::path::PathBuf;
use std::sync::Mutex;

use dataplane_tests::docker::{Dockerd, procs};
use dataplane_tests::{Host, Netns, PeerEcho, text, unique};

const IMAGE: &str = "dp-test:latest";

/// One dockerd at a time: dockerd shares a few machine paths (/run/containerd).
static ONE_DOCKER: Mutex<()> = Mutex::new(());

/// Field order is drop order: Docker and its containers go before our daemon
/// and the namespaces.
struct Setup {
    d: Dockerd,
    h: Host,
    ext: Netns,
    plugins: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.plugins);
    }
}

fn setup(tag: &str) -> Setup {
    let plugins = std::env::temp_dir().join(unique("dp-docker-plugins-"));
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let dir = plugins.to_string_lossy().into_owned();
    let (h, ext) = Host::with_external_args(tag, &["--docker-plugin-dir", &dir]);
    let droot = std::env::temp_dir().join(unique("dp-dockerd-"));
    // No docker0: dataplane networks only (our `bridge` holds 172.17.0.0/16 here).
    let d = Dockerd::start(&h.ns.path(), &droot, &["--bridge", "none"], Some(&plugins)).expect("dockerd");
    d.import_image(IMAGE, &[]).expect("image");
    Setup { d, h, ext, plugins }
}

fn container_ip(s: &Setup, name: &str, net: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
    s.d.docker_ok(&["inspect", "-f", &f, name])
}

#[test]
fn docker_containers_run_on_the_bpf_datapath() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dk");
    let (d, h) = (&s.d, &s.h);
    // Our IPAM: the pool avoids every network we have (and the host's routes).
    let web_id = d.docker_ok(&["network", "create", "-d", "dataplane", "--ipam-driver", "dataplane", "web"]);
    let net = h.dp_ok(&["network", "inspect", &web_id[..12]]);
    let net: serde_json::Value = serde_json::from_str(&net).expect("inspect json");
    assert_eq!(net[0]["Id"], web_id.as_str(), "the network has Docker's ID");
    assert_eq!(net[0]["Labels"]["com.dataplane.owner"], "docker");
    // A page server published on 8080, and a second container with an alias.
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web1",
        "--network",
        "web",
        "-p",
        "8080:80",
        IMAGE,
        "httpd",
        "-f",
        "-vv",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        "web2",
        "--network",
        "web",
        "--network-alias",
        "svc",
        IMAGE,
        "sleep",
        "300",
    ]);
    let web1_ip = container_ip(&s, "web1", "web");
    let subnet = net[0]["IPAM"]["Config"][0]["Subnet"].as_str().expect("subnet").to_string();
    assert!(!subnet.starts_with("172.17."), "our IPAM must avoid our own bridge: {subnet}");
    // From outside, through the host's address: the page, and the server saw the client's address.
    let get =
        "import urllib.request as u; print(u.urlopen('http://192.0.2.1:8080/', timeout=5).read().decode())";
    // The server may take a moment to listen.
    let mut page = s.ext.run(&["python3", "-c", get]);
    for _ in 0..20 {
        if page.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        page = s.ext.run(&["python3", "-c", get]);
    }
    if !page.status.success() {
        eprintln!("DIAG page: {}", text(&page));
        eprintln!("DIAG logs: {}", text(&d.docker(&["logs", "web1"])));
        eprintln!("DIAG ps: {}", text(&d.docker(&["ps", "-a"])));
        eprintln!("DIAG stats: {}", h.dp_ok(&["stats"]));
        eprintln!("DIAG links: {:?}", h.links());
        eprintln!(
            "DIAG daemon: {}",
            h.daemon_log()
                .lines()
                .filter(|l| l.contains("docker") || l.contains("WARN") || l.contains("ERROR"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        eprintln!("DIAG exec: {}", text(&d.docker(&["exec", "web1", "ip", "addr"])));
        eprintln!("DIAG route: {}", text(&d.docker(&["exec", "web1", "ip", "route"])));
    }
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        "hello from a docker container",
        "{}",
        text(&page)
    );
    let log = d.docker(&["logs", "web1"]);
    assert!(text(&log).contains("192.0.2.2"), "the server saw the client's own address: {}", text(&log));
    // Published in BPF: no iptables rule for it, no docker-proxy.
    let rules = String::from_utf8_lossy(&h.run(&["iptables-save"]).stdout).into_owned();
    assert!(!rules.contains("8080"), "an iptables rule for 8080:\n{rules}");
    assert!(!procs().iter().any(|(_, _, cmd)| cmd.contains("docker-proxy") && cmd.contains("8080")));
    // Names and aliases from Docker's own resolver, over our datapath.
    let ping = d.docker(&["exec", "web2", "ping", "-c", "1", "-W", "3", "web1"]);
    assert!(ping.status.success(), "web2 → web1 by name: {}", text(&ping));
    let ping = d.docker(&["exec", "web1", "ping", "-c", "1", "-W", "3", "svc"]);
    assert!(ping.status.success(), "web1 → svc by alias: {}", text(&ping));
    // Docker's default IPAM: Docker hands us the pool and the addresses.
    d.docker_ok(&["network", "create", "-d", "dataplane", "--subnet", "10.201.0.0/24", "other"]);
    d.docker_ok(&["run", "-d", "--name", "o1", "--network", "other", IMAGE, "sleep", "300"]);
    assert_eq!(container_ip(&s, "o1", "other"), "10.201.0.2");
    // Isolation between the two networks, counted; egress with the host's address.
    let before = h.drops("POLICY_NETWORK_ISOLATION");
    let ping = d.docker(&["exec", "o1", "ping", "-c", "1", "-W", "1", &web1_ip]);
    assert!(!ping.status.success(), "o1 reached a container of another network");
    assert!(h.drops("POLICY_NETWORK_ISOLATION") > before, "the isolation drop was not counted");
    let _echo = PeerEcho::start(&s.ext, "tcp", 7000);
    let out = d.docker(&["exec", "o1", "sh", "-c", "nc -w 3 192.0.2.2 7000 </dev/null"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("peer=192.0.2.1/"), "egress: {}", text(&out));
    // Removal leaves nothing of ours: no interface, no record.
    d.docker_ok(&["rm", "-f", "web1", "web2", "o1"]);
    d.docker_ok(&["network", "rm", "web", "other"]);
    let left: Vec<String> = h
        .links()
        .into_iter()
        .filter(|l| l.starts_with("veth") || l.starts_with("br-") || l.starts_with("dpd"))
        .collect();
    assert!(left.is_empty(), "interfaces left: {left:?}");
    let nets = h.dp_ok(&["network", "ls", "-q"]);
    assert_eq!(nets.lines().count(), 3, "only the predefined networks stay: {nets}");
}
