//! Hosts joining a cluster on a real etcd (Debian's etcd-server 3.4): each
//! daemon registers itself under a lease it keeps alive; `node ls` lists the
//! hosts; a host whose daemon is gone disappears within the lease's TTL.

use std::process::Command;
use std::time::{Duration, Instant};

use dataplane_tests::etcd::Etcd;
use dataplane_tests::{Host, bin, output_bounded, text, unique};

/// The addresses `node ls` shows on `h`, this host's marked with `*`.
fn nodes(h: &Host) -> Vec<String> {
    let out = h.dp_ok(&["node", "ls"]);
    let mut v: Vec<String> = out
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(1) == Some(&"*") { format!("{}*", f[2]) } else { f[1].to_string() }
        })
        .collect();
    v.sort();
    v
}

fn wait_for(h: &Host, want: &[&str], within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let got = nodes(h);
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn hosts_register_under_a_lease_and_leave_when_their_daemon_is_gone() {
    let lan = Etcd::lan(1);
    let h1 = lan.host("cl1", 11);
    let mut h2 = lan.host("cl2", 12);
    assert_eq!(
        wait_for(&h1, &["10.251.0.11*", "10.251.0.12"], Duration::from_secs(3)),
        ["10.251.0.11*", "10.251.0.12"]
    );
    assert_eq!(nodes(&h2), ["10.251.0.11", "10.251.0.12*"]);
    // An operator reads the same with etcdctl.
    let keys = lan.etcdctl(&["get", "--prefix", "--keys-only", "/dataplane/v1/nodes/"]);
    assert_eq!(
        String::from_utf8_lossy(&keys.stdout).lines().filter(|l| !l.is_empty()).count(),
        2,
        "{}",
        text(&keys)
    );
    // kill -9: the lease is no longer kept; the host leaves within TTL + 2 s.
    let id = std::fs::read_to_string(h2.state_dir().join("node-id")).expect("node id");
    h2.kill_daemon();
    let t = Instant::now();
    assert_eq!(wait_for(&h1, &["10.251.0.11*"], Duration::from_secs(7)), ["10.251.0.11*"]);
    assert!(t.elapsed() <= Duration::from_secs(7));
    // Back, with the same ID.
    h2.start();
    assert_eq!(
        wait_for(&h1, &["10.251.0.11*", "10.251.0.12"], Duration::from_secs(3)),
        ["10.251.0.11*", "10.251.0.12"]
    );
    assert!(h1.dp_ok(&["node", "ls"]).contains(id.trim()), "the host came back under another ID");
}

#[test]
fn without_a_cluster_store_node_ls_says_what_to_pass_and_bad_stores_are_refused() {
    let (h, _ext) = Host::with_external("nocl");
    let e = h.dp_err(&["node", "ls"]);
    assert!(e.contains("--cluster-store etcd://IP:PORT --cluster-advertise IP"), "{e}");
    let sock = std::env::temp_dir().join(unique("dp-bad-store-")).join("s.sock");
    for (store, why) in [("consul://10.0.0.1:8500", "only store is etcd"), ("etcd://10.0.0.1", "not IP:PORT")]
    {
        let o = output_bounded(Command::new(bin()).arg("--socket").arg(&sock).args([
            "daemon",
            "--docker-plugin-dir",
            "",
            "--cluster-store",
            store,
            "--cluster-advertise",
            "10.0.0.1",
        ]));
        assert!(!o.status.success() && text(&o).contains(why), "{store}: {}", text(&o));
    }
    let o = output_bounded(Command::new(bin()).arg("--socket").arg(&sock).args([
        "daemon",
        "--cluster-store",
        "etcd://10.0.0.1:2379",
    ]));
    assert!(!o.status.success() && text(&o).contains("--cluster-advertise"), "{}", text(&o));
}
