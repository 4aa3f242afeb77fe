//! A cluster's underlay for tests: a LAN (bridge `lan0`, 10.251.0.1/24, in
//! its own namespace, which also plays the outside world: the hosts' default
//! gateway) with an etcd cluster of N members, each in its own namespace
//! on the LAN (10.251.0.2, .3, …) with its data in a temp dir; hosts join
//! the LAN at 10.251.0.11 and up. Every process ends with it.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Host, Netns, output_bounded, sh_ok, unique, veth_pair};

pub const LAN_GATEWAY: &str = "10.251.0.1";

struct Member {
    name: String,
    ns: Netns,
    ip: String,
    data: PathBuf,
    child: Option<Child>,
}

pub struct Etcd {
    members: Vec<Member>,
    /// The LAN segment (and the outside world of its hosts).
    pub lan: Netns,
}

impl Etcd {
    /// A LAN with an etcd cluster of `n` members, healthy.
    pub fn lan(n: usize) -> Etcd {
        crate::require_privileges();
        let lan = Netns::new("lan");
        for args in [
            &["link", "add", "lan0", "type", "bridge"][..],
            &["addr", "add", "10.251.0.1/24", "dev", "lan0"][..],
            &["link", "set", "lan0", "up"][..],
        ] {
            let mut full = vec!["ip", "-n", &lan.name];
            full.extend_from_slice(args);
            sh_ok(&full);
        }
        let mut members = Vec::new();
        for i in 0..n {
            let ns = Netns::new("etcd");
            let ip = format!("10.251.0.{}", i + 2);
            let (near, far) = (unique("e"), unique("l"));
            veth_pair(&near, &ns.name, &far, &lan.name);
            sh_ok(&["ip", "-n", &lan.name, "link", "set", &far, "master", "lan0", "up"]);
            sh_ok(&["ip", "-n", &ns.name, "addr", "add", &format!("{ip}/24"), "dev", &near]);
            sh_ok(&["ip", "-n", &ns.name, "link", "set", &near, "up"]);
            let data = std::env::temp_dir().join(unique("dp-etcd-"));
            members.push(Member { name: format!("m{}", i + 1), ns, ip, data, child: None });
        }
        let mut etcd = Etcd { members, lan };
        for i in 0..n {
            etcd.start(i);
        }
        etcd.wait_healthy(Duration::from_secs(30));
        etcd
    }

    /// `etcd://IP:2379,…` as `--cluster-store` takes it.
    pub fn store(&self) -> String {
        let eps: Vec<String> = self.members.iter().map(|m| format!("{}:2379", m.ip)).collect();
        format!("etcd://{}", eps.join(","))
    }

    fn endpoints(&self) -> String {
        self.members.iter().map(|m| format!("http://{}:2379", m.ip)).collect::<Vec<_>>().join(",")
    }

    /// Starts member `i` (again: its data dir keeps its identity).
    pub fn start(&mut self, i: usize) {
        let initial: Vec<String> =
            self.members.iter().map(|m| format!("{}=http://{}:2380", m.name, m.ip)).collect();
        let m = &mut self.members[i];
        let client = format!("http://{}:2379", m.ip);
        let peer = format!("http://{}:2380", m.ip);
        let child = Command::new("ip")
            .args(["netns", "exec", &m.ns.name, "etcd", "--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(","), "--initial-cluster-token", &self.lan.name])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("etcd (Debian's etcd-server; `cargo xtask setup`)");
        m.child = Some(child);
    }

    /// kill -9 of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            // `ip netns exec` became etcd itself; its group holds nothing else.
            let _ = std::process::Command::new("kill")
                .args(["-9", "--", &format!("-{}", c.id())])
                .stderr(Stdio::null())
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until the cluster answers a quorum read.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let o = self.etcdctl(&["get", "/healthcheck"]);
            if o.status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy: {}", crate::text(&o));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        output_bounded(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.lan.name,
                    "etcdctl",
                    "--dial-timeout",
                    "2s",
                    "--command-timeout",
                    "3s",
                ])
                .args(["--endpoints", &self.endpoints()])
                .args(args)
                .env("ETCDCTL_API", "3"),
        )
    }

    /// A host on the LAN at 10.251.0.`last`, its default route via the
    /// LAN's gateway, its daemon in the cluster (not started).
    pub fn host_unstarted(&self, tag: &str, last: u8) -> Host {
        let addr = format!("10.251.0.{last}");
        let mut h = Host::new(tag, &self.lan, Some("lan0"), &format!("{addr}/24"));
        sh_ok(&["ip", "-n", &h.ns.name, "route", "add", "default", "via", LAN_GATEWAY]);
        h.daemon_args =
            ["--cluster-store", &self.store(), "--cluster-advertise", &addr].map(String::from).to_vec();
        h
    }

    /// [`Etcd::host_unstarted`], started.
    pub fn host(&self, tag: &str, last: u8) -> Host {
        let mut h = self.host_unstarted(tag, last);
        h.start();
        h
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            let _ = std::fs::remove_dir_all(&m.data);
        }
    }
}
