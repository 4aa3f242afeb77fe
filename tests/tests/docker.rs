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
    // No docker0: dataplane networks only (our `bridge` holds 172.17.0.0/16 here).
    setup_with(tag, &["--bridge", "none"])
}

fn setup_with(tag: &str, dockerd_args: &[&str]) -> Setup {
    let plugins = std::env::temp_dir().join(unique("dp-docker-plugins-"));
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    let dir = plugins.to_string_lossy().into_owned();
    let (h, ext) = Host::with_external_args(tag, &["--docker-plugin-dir", &dir]);
    let droot = std::env::temp_dir().join(unique("dp-dockerd-"));
    let d = Dockerd::start(&h.ns.path(), &droot, dockerd_args, Some(&plugins)).expect("dockerd");
    // socat for the servers of the port tests, with its libraries.
    d.import_image(IMAGE, &["/usr/bin/socat"]).expect("image");
    Setup { d, h, ext, plugins }
}

/// A page server (busybox httpd on port 80, logging its clients) named
/// `name` on network `net`, publishing `publish`.
fn page_server(d: &Dockerd, name: &str, net: &str, publish: &str) {
    let cmd = ["httpd", "-f", "-vv", "-p", "80", "-h", "/www"];
    let mut args = vec!["run", "-d", "--name", name, "--network", net, "-p", publish, IMAGE];
    args.extend(cmd);
    d.docker_ok(&args);
}

/// GET `url` from `ns`, retried for up to 5 s while the server starts.
fn fetch(ns: &Netns, url: &str) -> std::process::Output {
    let get = format!("import urllib.request as u; print(u.urlopen('{url}', timeout=5).read().decode())");
    let mut page = ns.run(&["python3", "-c", &get]);
    for _ in 0..20 {
        if page.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        page = ns.run(&["python3", "-c", &get]);
    }
    page
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
    page_server(d, "web1", "web", "8080:80");
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
    let page = fetch(&s.ext, "http://192.0.2.1:8080/");
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        "hello from a docker container",
        "{}",
        text(&page)
    );
    let log = d.docker(&["logs", "web1"]);
    assert!(text(&log).contains("192.0.2.2"), "the server saw the client's own address: {}", text(&log));
    // `docker port` cannot show a remote driver's ports; ours can.
    let web1_ep = d.docker_ok(&["inspect", "-f", "{{.NetworkSettings.Networks.web.EndpointID}}", "web1"]);
    let ports = h.dp_ok(&["port", &format!("docker-{}", &web1_ep[..12])]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    // Join gave Docker the gateway: no docker_gwbridge was added.
    assert!(!h.links().iter().any(|l| l == "docker_gwbridge"), "{:?}", h.links());
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
    // No endpoint record, no program left on a veth, no flow of theirs.
    let ep = h.dp(&["inspect", &format!("docker-{}", &web1_ep[..12])]);
    assert!(!ep.status.success(), "the endpoint's record outlived docker rm");
    let stats: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("stats json");
    let on_veths: Vec<&serde_json::Value> = stats["Programs"]
        .as_array()
        .expect("programs")
        .iter()
        .filter(|p| p.to_string().contains("veth"))
        .collect();
    assert!(on_veths.is_empty(), "programs left on veths: {on_veths:?}");
    let flows = h.dp_ok(&["ct", "ls"]);
    assert!(!flows.contains(&web1_ip), "flows of the removed container: {flows}");
}

/// Sends one plugin call straight to our socket; returns (status line, body).
fn plugin_call(s: &Setup, method: &str, body: &str) -> (String, String) {
    let sock = s.plugins.join("dataplane.sock");
    let req = format!(
        "POST /{method} HTTP/1.0\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let client = "import socket, sys\n\
                  s = socket.socket(socket.AF_UNIX)\n\
                  s.settimeout(15)\n\
                  s.connect(sys.argv[1])\n\
                  s.sendall(sys.argv[2].encode())\n\
                  data = b''\n\
                  while True:\n\
                  \x20   b = s.recv(65536)\n\
                  \x20   if not b: break\n\
                  \x20   data += b\n\
                  sys.stdout.write(data.decode())";
    let o = dataplane_tests::output_bounded(
        std::process::Command::new("python3").args(["-c", client]).arg(&sock).arg(&req),
    );
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let status = out.lines().next().map(str::to_string).unwrap_or_else(|| text(&o));
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    (status, body)
}

fn our_bridges(h: &Host) -> Vec<String> {
    h.links()
        .into_iter()
        .filter(|l| l.starts_with("br-") || l.starts_with("veth") || l.starts_with("dpd"))
        .collect()
}

#[test]
fn bad_input_from_docker_is_refused_with_our_words_and_leaves_nothing() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dkbad");
    let (d, h) = (&s.d, &s.h);
    h.dp_ok(&["network", "create", "--subnet", "10.203.0.0/24", "ours"]);
    let before = (h.dp_ok(&["network", "ls", "-q"]), our_bridges(h));
    let refused = |args: &[&str]| {
        let o = d.docker(args);
        assert!(!o.status.success(), "docker {} was accepted", args.join(" "));
        text(&o)
    };
    let e = refused(&["network", "create", "-d", "dataplane", "-o", "colour=blue", "n1"]);
    assert!(e.contains("colour"), "the unknown option is named: {e}");
    let e = refused(&["network", "create", "-d", "dataplane", "--subnet", "10.203.0.0/25", "n2"]);
    assert!(e.contains("ours"), "the overlapping network is named: {e}");
    let e = refused(&[
        "network",
        "create",
        "-d",
        "dataplane",
        "--ipam-driver",
        "dataplane",
        "--subnet",
        "10.203.0.0/24",
        "n3",
    ]);
    assert!(e.contains("ours"), "our IPAM refuses a pool it cannot give: {e}");
    let e = refused(&["network", "create", "-d", "dataplane", "-o", "lb=vip", "n5"]);
    assert!(e.contains("does not pass"), "why lb=vip cannot work on Docker networks: {e}");
    let ipv6 = ["network", "create", "-d", "dataplane", "--ipv6", "--ipam-driver", "dataplane"];
    let e = refused(&[&ipv6[..], &["--subnet", "fd00:1::/64", "n4"]].concat());
    assert!(e.contains("IPv4 pools only"), "{e}");
    assert_eq!(
        (h.dp_ok(&["network", "ls", "-q"]), our_bridges(h)),
        before,
        "a refused create left something"
    );
    // Straight to the socket: an unknown endpoint, an unknown call, a broken body.
    let (status, body) =
        plugin_call(&s, "NetworkDriver.Join", r#"{"NetworkID":"n","EndpointID":"nosuch","SandboxKey":"/x"}"#);
    assert!(status.contains("500") && body.contains("\"Err\"") && body.contains("nosuch"), "{status} {body}");
    let (status, body) = plugin_call(&s, "NetworkDriver.Frobnicate", "{}");
    assert!(status.contains("404") && body.contains("\"Err\""), "{status} {body}");
    let (status, body) = plugin_call(&s, "NetworkDriver.CreateNetwork", "{not json");
    assert!(status.contains("400") && body.contains("does not decode"), "{status} {body}");
    let (status, body) = plugin_call(&s, "Plugin.Activate", "");
    assert!(
        status.contains("200") && body.contains("NetworkDriver") && body.contains("IpamDriver"),
        "{body}"
    );
    // dockerd retries: every call twice gives the same answer and one result.
    let id = "c0ffee".repeat(10) + "c0ff";
    let create = format!(
        r#"{{"NetworkID":"{id}","Options":{{"com.docker.network.generic":{{}}}},"IPv4Data":[{{"AddressSpace":"local","Pool":"10.206.0.0/24","Gateway":"10.206.0.1/24"}}],"IPv6Data":null}}"#
    );
    for _ in 0..2 {
        let (status, body) = plugin_call(&s, "NetworkDriver.CreateNetwork", &create);
        assert!(status.contains("200") && body.trim() == "{}", "{status} {body}");
    }
    let ep = r#""NetworkID":"c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff","EndpointID":"e1e1e1e1e1e1e1e1""#;
    let mut macs = Vec::new();
    for _ in 0..2 {
        let (status, body) = plugin_call(
            &s,
            "NetworkDriver.CreateEndpoint",
            &format!(r#"{{{ep},"Interface":{{"Address":"10.206.0.5/24"}}}}"#),
        );
        assert!(status.contains("200") && body.contains("02:42:0a:ce:00:05"), "{status} {body}");
        macs.push(body);
    }
    assert_eq!(macs[0], macs[1]);
    for _ in 0..2 {
        let (status, body) =
            plugin_call(&s, "NetworkDriver.Join", &format!(r#"{{{ep},"SandboxKey":"/nonexistent"}}"#));
        assert!(
            status.contains("200") && body.contains("\"SrcName\":\"dpd") && body.contains("10.206.0.1"),
            "{body}"
        );
    }
    assert_eq!(h.dp_ok(&["network", "ls", "-q"]).lines().count(), before.0.lines().count() + 1);
    for (method, body) in [
        ("NetworkDriver.Leave", format!("{{{ep}}}")),
        ("NetworkDriver.DeleteEndpoint", format!("{{{ep}}}")),
        ("NetworkDriver.DeleteNetwork", format!(r#"{{"NetworkID":"{id}"}}"#)),
    ] {
        for _ in 0..2 {
            let (status, reply) = plugin_call(&s, method, &body);
            assert!(status.contains("200"), "{method}: {status} {reply}");
        }
    }
    assert_eq!(
        (h.dp_ok(&["network", "ls", "-q"]), our_bridges(h)),
        before,
        "the repeated calls left something"
    );
    // Docker's networks are Docker's: our CLI says so instead of breaking them.
    let id = d.docker_ok(&["network", "create", "-d", "dataplane", "mine"]);
    let e = h.dp_err(&["network", "rm", &id[..12]]);
    assert!(e.contains("docker network rm"), "{e}");
    let e = h.dp_err(&["run", "-d", "--network", &id[..12], "sleep", "5"]);
    assert!(e.contains("belongs to docker"), "{e}");
    d.docker_ok(&["network", "rm", "mine"]);
    assert_eq!((h.dp_ok(&["network", "ls", "-q"]), our_bridges(h)), before);
}

#[test]
fn icc_internal_and_hot_plugging_behave_as_for_our_networks() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dkicc");
    let (d, h) = (&s.d, &s.h);
    let _echo = PeerEcho::start(&s.ext, "tcp", 7000);
    let egress = |name: &str| {
        let o = d.docker(&["exec", name, "sh", "-c", "nc -w 3 192.0.2.2 7000 </dev/null"]);
        String::from_utf8_lossy(&o.stdout).starts_with("peer=192.0.2.1/")
    };
    let ping =
        |from: &str, to: &str| d.docker(&["exec", from, "ping", "-c", "1", "-W", "1", to]).status.success();
    // ICC off: containers of the network cannot talk; they still reach outside.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "dataplane",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "noicc",
    ]);
    for n in ["a1", "a2"] {
        d.docker_ok(&["run", "-d", "--name", n, "--network", "noicc", IMAGE, "sleep", "300"]);
    }
    let before = h.drops("POLICY_ICC");
    assert!(!ping("a1", &container_ip(&s, "a2", "noicc")), "ICC off, yet a1 reached a2");
    assert!(h.drops("POLICY_ICC") > before, "the ICC drop was not counted");
    assert!(egress("a1"), "a1 cannot reach outside");
    // --internal: peers yes, outside no (no gateway is given to Docker).
    d.docker_ok(&["network", "create", "-d", "dataplane", "--internal", "inner"]);
    for n in ["i1", "i2"] {
        d.docker_ok(&["run", "-d", "--name", n, "--network", "inner", IMAGE, "sleep", "300"]);
    }
    assert!(ping("i1", "i2"), "i1 cannot reach its peer on the internal network");
    assert!(!egress("i1"), "an internal container reached outside");
    // Hot-plug: connect gives a1 a second interface on `inner`; disconnect takes it away.
    let veths = || h.links().into_iter().filter(|l| l.starts_with("veth")).count();
    let n = veths();
    d.docker_ok(&["network", "connect", "inner", "a1"]);
    assert_eq!(veths(), n + 1);
    assert!(ping("a1", "i2"), "a1 cannot reach i2 after connect");
    d.docker_ok(&["network", "disconnect", "inner", "a1"]);
    assert_eq!(veths(), n);
    assert!(!ping("a1", &container_ip(&s, "i2", "inner")), "a1 still reaches i2 after disconnect");
    assert!(egress("a1"), "a1 lost its own network after disconnect");
}

#[test]
fn a_killed_daemon_keeps_docker_traffic_flowing_and_answers_docker_after_restart() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let mut s = setup("dkkill");
    s.d.docker_ok(&["network", "create", "-d", "dataplane", "web"]);
    page_server(&s.d, "web1", "web", "8080:80");
    s.d.docker_ok(&["exec", "web1", "sh", "-c", "head -c 20000000 /dev/urandom > /www/big"]);
    let want = s.d.docker_ok(&["exec", "web1", "sh", "-c", "sha256sum < /www/big"]);
    // A slow download (~3 s) through the published port, in the background.
    let get = "import hashlib, time, urllib.request as u\n\
               r = u.urlopen('http://192.0.2.1:8080/big', timeout=20)\n\
               h = hashlib.sha256()\n\
               while True:\n\
               \x20   b = r.read(65536)\n\
               \x20   if not b: break\n\
               \x20   h.update(b); time.sleep(0.01)\n\
               print(h.hexdigest())";
    let ns = s.ext.name.clone();
    let download = std::thread::spawn(move || {
        dataplane_tests::output_bounded(
            std::process::Command::new("ip").args(["netns", "exec", &ns, "python3", "-c", get]),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    s.h.kill_daemon();
    let got = download.join().expect("download");
    assert_eq!(
        String::from_utf8_lossy(&got.stdout).trim(),
        want.split_whitespace().next().unwrap_or_default(),
        "{}",
        text(&got)
    );
    // Back up: dockerd's next calls work on the same network.
    s.h.start();
    s.d.docker_ok(&["run", "-d", "--name", "web2", "--network", "web", IMAGE, "sleep", "300"]);
    let ping = s.d.docker(&["exec", "web2", "ping", "-c", "1", "-W", "2", "web1"]);
    assert!(ping.status.success(), "{}", text(&ping));
    s.d.docker_ok(&["rm", "-f", "web1", "web2"]);
    s.d.docker_ok(&["network", "rm", "web"]);
    assert!(our_bridges(&s.h).is_empty(), "{:?}", our_bridges(&s.h));
}

#[test]
fn docker_compose_brings_a_dataplane_network_up_and_down() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dkcmp");
    let dir = s.d.dir.join("compose");
    std::fs::create_dir_all(&dir).expect("compose dir");
    let file = dir.join("docker-compose.yml");
    std::fs::write(
        &file,
        format!(
            "version: \"2.4\"\n\
             services:\n\
             \x20 web:\n\
             \x20   image: {IMAGE}\n\
             \x20   command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n\
             \x20   ports: [\"8081:80\"]\n\
             \x20   networks: [front]\n\
             \x20 app:\n\
             \x20   image: {IMAGE}\n\
             \x20   command: [\"sleep\", \"300\"]\n\
             \x20   networks: [front]\n\
             \x20 db:\n\
             \x20   image: {IMAGE}\n\
             \x20   command: [\"sleep\", \"300\"]\n\
             \x20   networks: [front]\n\
             networks:\n\
             \x20 front:\n\
             \x20   driver: dataplane\n"
        ),
    )
    .expect("compose file");
    let host = format!("unix://{}", s.d.dir.join("docker.sock").display());
    let compose = |args: &[&str]| {
        dataplane_tests::output_bounded(
            std::process::Command::new("docker-compose")
                .env("DOCKER_HOST", &host)
                .args(["-p", "dpcmp", "-f"])
                .arg(&file)
                .args(args),
        )
    };
    let up = compose(&["up", "-d"]);
    assert!(up.status.success(), "docker-compose up: {}", text(&up));
    assert_eq!(s.h.dp_ok(&["network", "ls", "-q"]).lines().count(), 4, "the compose network is ours");
    let page = fetch(&s.ext, "http://192.0.2.1:8081/");
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        "hello from a docker container",
        "{}",
        text(&page)
    );
    let ping = s.d.docker(&["exec", "dpcmp_app_1", "ping", "-c", "1", "-W", "2", "db"]);
    assert!(ping.status.success(), "app → db by service name: {}", text(&ping));
    let down = compose(&["down"]);
    assert!(down.status.success(), "docker-compose down: {}", text(&down));
    assert_eq!(s.h.dp_ok(&["network", "ls", "-q"]).lines().count(), 3, "the compose network is gone");
    assert!(our_bridges(&s.h).is_empty(), "{:?}", our_bridges(&s.h));
}

#[test]
fn the_docker_cli_on_our_socket_manages_networks_and_says_it_runs_no_containers() {
    let (h, _ext) = Host::with_external("dkcli");
    let docker = |args: &[&str]| {
        dataplane_tests::output_bounded(
            std::process::Command::new(dataplane_tests::docker::DOCKER)
                .arg("-H")
                .arg(format!("unix://{}", h.socket.display()))
                .args(args),
        )
    };
    let o = docker(&["network", "create", "--subnet", "10.204.0.0/24", "n1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&docker(&["network", "ls"])).contains("n1"));
    for args in [
        &["run", "-d", "--network", "n1", "-p", "9090:80", "-e", "FOO=bar", "busybox", "sleep", "100"][..],
        &["ps"][..],
        &["info"][..],
        &["events", "--since", "1s", "--until", "2s"][..],
        &["images"][..],
    ] {
        let o = docker(args);
        assert!(!o.status.success(), "docker {} succeeded on our socket", args.join(" "));
        assert!(text(&o).contains("runs no containers"), "docker {}: {}", args.join(" "), text(&o));
    }
    // Nothing was started in our name.
    assert!(h.sandbox_names().is_empty(), "{:?}", h.sandbox_names());
    assert!(docker(&["network", "rm", "n1"]).status.success());
}

#[test]
fn a_restarted_dockerd_finds_its_networks_and_containers_keep_their_traffic() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    // --live-restore: Docker's own switch for containers that outlive dockerd.
    let mut s = setup_with("dkrst", &["--bridge", "none", "--live-restore"]);
    s.d.docker_ok(&["network", "create", "-d", "dataplane", "--ipam-driver", "dataplane", "web"]);
    page_server(&s.d, "web1", "web", "8080:80");
    // And one with Docker's own IPAM.
    s.d.docker_ok(&["network", "create", "-d", "dataplane", "--subnet", "10.205.0.0/24", "back"]);
    s.d.docker_ok(&["run", "-d", "--name", "b1", "--network", "back", IMAGE, "sleep", "300"]);
    let page = fetch(&s.ext, "http://192.0.2.1:8080/");
    assert!(page.status.success(), "{}", text(&page));
    s.d.stop();
    // dockerd is gone: the container serves on.
    let page = fetch(&s.ext, "http://192.0.2.1:8080/");
    assert!(page.status.success(), "while dockerd is down: {}", text(&page));
    s.d.restart().expect("dockerd again");
    let nets = s.d.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.lines().any(|l| l == "web dataplane"), "{nets}");
    let page = fetch(&s.ext, "http://192.0.2.1:8080/");
    assert!(page.status.success(), "after dockerd restarted: {}", text(&page));
    s.d.docker_ok(&["run", "-d", "--name", "web2", "--network", "web", IMAGE, "sleep", "300"]);
    let ping = s.d.docker(&["exec", "web2", "ping", "-c", "1", "-W", "2", "web1"]);
    assert!(ping.status.success(), "a new container reaches the old one: {}", text(&ping));
    s.d.docker_ok(&["run", "-d", "--name", "b2", "--network", "back", IMAGE, "sleep", "300"]);
    assert_ne!(
        container_ip(&s, "b2", "back"),
        container_ip(&s, "b1", "back"),
        "Docker's IPAM forgot b1's address"
    );
    let ping = s.d.docker(&["exec", "b2", "ping", "-c", "1", "-W", "2", "b1"]);
    assert!(ping.status.success(), "{}", text(&ping));
}

#[test]
fn docker_published_ports_take_every_form_of_run_p() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dkpub");
    let (d, h) = (&s.d, &s.h);
    d.docker_ok(&["network", "create", "-d", "dataplane", "--ipam-driver", "dataplane", "web"]);
    // A host address, a range, a free port (HostPort 0) and UDP, on one container.
    let mut args = vec!["run", "-d", "--name", "multi", "--network", "web"];
    args.extend([
        "-p",
        "192.0.2.1:8080:80",
        "-p",
        "9000-9001:7000-7001",
        "-p",
        "80",
        "-p",
        "5353:53/udp",
        IMAGE,
    ]);
    args.extend([
        "sh",
        "-c",
        "httpd -p 80 -h /www; \
         socat TCP-LISTEN:7000,fork,reuseaddr SYSTEM:'echo seven' & \
         socat TCP-LISTEN:7001,fork,reuseaddr SYSTEM:'echo seven-one' & \
         socat UDP-RECVFROM:53,fork SYSTEM:'echo udp' & sleep 300",
    ]);
    d.docker_ok(&args);
    let ep = d.docker_ok(&["inspect", "-f", "{{.NetworkSettings.Networks.web.EndpointID}}", "multi"]);
    let ports = h.dp_ok(&["port", &format!("docker-{}", &ep[..12])]);
    let free = ports
        .lines()
        .find(|l| l.starts_with("80/tcp -> 0.0.0.0:"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap_or_else(|| panic!("no free port chosen for 80: {ports}"))
        .to_string();
    assert!(ports.contains("80/tcp -> 192.0.2.1:8080"), "{ports}");
    // From outside: the host address, the chosen port, the range.
    let page = fetch(&s.ext, "http://192.0.2.1:8080/");
    assert!(page.status.success(), "{}", text(&page));
    let page = fetch(&s.ext, &format!("http://192.0.2.1:{free}/"));
    assert!(page.status.success(), "port {free}: {}", text(&page));
    for (port, want) in [("9000", "seven"), ("9001", "seven-one")] {
        let target = format!("TCP:192.0.2.1:{port},connect-timeout=3");
        let mut o = s.ext.run(&["socat", "-t", "3", "-T", "3", "-", &target]);
        // The servers may take a moment to listen.
        for _ in 0..10 {
            if o.status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            o = s.ext.run(&["socat", "-t", "3", "-T", "3", "-", &target]);
        }
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), want, "port {port}: {}", text(&o));
    }
    let mut udp = String::new();
    for _ in 0..3 {
        let o = s.ext.run(&["sh", "-c", "echo q | socat -t 3 -T 3 - UDP:192.0.2.1:5353"]);
        udp = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !udp.is_empty() {
            break;
        }
    }
    assert_eq!(udp, "udp");
    // From the host itself through 127.0.0.1 (socket hooks, no proxy), and
    // from another container through the host's address (hairpin).
    let o = h.run(&["socat", "-t", "3", "-T", "3", "-", "TCP:127.0.0.1:9000,connect-timeout=3"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "seven", "localhost: {}", text(&o));
    d.docker_ok(&["run", "-d", "--name", "cli", "--network", "web", IMAGE, "sleep", "300"]);
    let o = d.docker(&["exec", "cli", "sh", "-c", "nc -w 3 192.0.2.1 9001 </dev/null"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "seven-one", "hairpin: {}", text(&o));
    // Removing the container takes the ports away.
    d.docker_ok(&["rm", "-f", "multi"]);
    let o = s.ext.run(&["socat", "-t", "2", "-T", "2", "-", "TCP:192.0.2.1:9000,connect-timeout=2"]);
    assert!(String::from_utf8_lossy(&o.stdout).trim().is_empty(), "port 9000 still answers after rm");
}

#[test]
fn docker_ipam_options_and_masquerade_off_are_honoured() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dkopt");
    let (d, h) = (&s.d, &s.h);
    let range = ["--subnet", "10.207.0.0/24", "--ip-range", "10.207.0.128/25", "--gateway", "10.207.0.254"];
    // The same options through Docker's IPAM and through ours.
    for (net, ipam) in [("dflt", None), ("ours", Some("dataplane"))] {
        let mut args = vec!["network", "create", "-d", "dataplane", "--aux-address", "router=10.207.0.200"];
        if let Some(i) = ipam {
            args.extend(["--ipam-driver", i]);
        }
        args.extend(range);
        args.push(net);
        d.docker_ok(&args);
        let name = format!("{net}1");
        d.docker_ok(&["run", "-d", "--name", &name, "--network", net, IMAGE, "sleep", "300"]);
        let ip: std::net::Ipv4Addr = container_ip(&s, &name, net).parse().expect("address");
        assert!(
            ip.octets()[3] >= 128 && ip.to_string() != "10.207.0.200",
            "{net}: {ip} is outside --ip-range"
        );
        let route = text(&d.docker(&["exec", &name, "ip", "route"]));
        assert!(route.contains("default via 10.207.0.254"), "{net}: {route}");
        let id = d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", net]);
        let ours: serde_json::Value =
            serde_json::from_str(&h.dp_ok(&["network", "inspect", &id[..12]])).expect("inspect json");
        assert_eq!(ours[0]["IPAM"]["Config"][0]["Gateway"], "10.207.0.254", "{net}");
        assert_eq!(ours[0]["IPAM"]["Config"][0]["AuxiliaryAddresses"]["router"], "10.207.0.200", "{net}");
        d.docker_ok(&["rm", "-f", &name]);
        d.docker_ok(&["network", "rm", net]);
    }
    // Masquerade off: the outside sees the container's own address.
    d.docker_ok(&[
        "network",
        "create",
        "-d",
        "dataplane",
        "--subnet",
        "10.208.0.0/24",
        "-o",
        "com.docker.network.bridge.enable_ip_masquerade=false",
        "plain",
    ]);
    d.docker_ok(&["run", "-d", "--name", "p1", "--network", "plain", IMAGE, "sleep", "300"]);
    assert!(s.ext.run(&["ip", "route", "add", "10.208.0.0/24", "via", "192.0.2.1"]).status.success());
    let _echo = PeerEcho::start(&s.ext, "tcp", 7000);
    let out = d.docker(&["exec", "p1", "sh", "-c", "nc -w 3 192.0.2.2 7000 </dev/null"]);
    let own = container_ip(&s, "p1", "plain");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("peer={own}/")), "{}", text(&out));
}

/// `docker network create --ipv6` on our driver: Docker's IPAM hands out
/// the IPv6 addresses, we wire them; containers reach each other over
/// IPv6 and a published port answers over the host's IPv6 address with
/// the client's address kept.
#[test]
fn docker_containers_get_ipv6_on_a_dual_stack_dataplane_network() {
    let _one = ONE_DOCKER.lock().unwrap_or_else(|p| p.into_inner());
    let s = setup("dk6");
    let (d, h) = (&s.d, &s.h);
    h.run(&["ip", "addr", "add", "fd00:ffff::1/64", "dev", "up0", "nodad"]);
    s.ext.run(&["ip", "addr", "add", "fd00:ffff::2/64", "dev", "ext0", "nodad"]);
    let v6 = ["--ipv6", "--subnet", "10.209.0.0/24", "--subnet", "fd00:d6::/64"];
    d.docker_ok(&[&["network", "create", "-d", "dataplane"][..], &v6, &["v6net"]].concat());
    page_server(d, "web6", "v6net", "8080:80");
    d.docker_ok(&["run", "-d", "--name", "c6", "--network", "v6net", IMAGE, "sleep", "300"]);
    let f = "{{(index .NetworkSettings.Networks \"v6net\").GlobalIPv6Address}}";
    let web6 = d.docker_ok(&["inspect", "-f", f, "web6"]);
    assert!(web6.starts_with("fd00:d6::"), "Docker's IPv6 address: {web6:?}");
    // Our record agrees with Docker's.
    let ep = d.docker_ok(&["inspect", "-f", "{{.NetworkSettings.Networks.v6net.EndpointID}}", "web6"]);
    let ours = h.inspect(&format!("docker-{}", &ep[..12]));
    let net_id = d.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "v6net"]);
    assert_eq!(
        ours["NetworkSettings"]["Networks"][&net_id[..12]]["GlobalIPv6Address"],
        web6.as_str(),
        "{ours}"
    );
    // The container's IPv6 default route goes to our bridge's gateway.
    let route = text(&d.docker(&["exec", "c6", "ip", "-6", "route"]));
    assert!(route.contains("default via fd00:d6::1"), "{route}");
    // Container to container over IPv6.
    let ping = d.docker(&["exec", "c6", "ping", "-6", "-c", "1", "-W", "3", &web6]);
    assert!(ping.status.success(), "c6 → web6 over IPv6: {}", text(&ping));
    // The published port over the host's IPv6 address, the client kept.
    let page = fetch(&s.ext, "http://[fd00:ffff::1]:8080/");
    assert_eq!(
        String::from_utf8_lossy(&page.stdout).trim(),
        "hello from a docker container",
        "{}",
        text(&page)
    );
    let log = text(&d.docker(&["logs", "web6"]));
    assert!(log.contains("fd00:ffff::2"), "the server saw the client's own IPv6 address: {log}");
    // Gone with Docker's removal.
    d.docker_ok(&["rm", "-f", "web6", "c6"]);
    d.docker_ok(&["network", "rm", "v6net"]);
    assert_eq!(h.dp_ok(&["network", "ls", "-q"]).lines().count(), 3, "only the predefined networks stay");
}
