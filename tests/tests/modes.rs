//! Network modes (none, container:, host), hot-plug connect/disconnect, and
//! the sandbox process life cycle (run, exec, logs, stop, rm).

use dataplane_tests::{Host, UPLINK, text};

fn links_in(h: &Host, name: &str) -> Vec<String> {
    let out = String::from_utf8_lossy(&h.exec(name, &["ip", "-o", "link", "show"]).stdout).into_owned();
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

#[test]
fn none_has_only_loopback() {
    let (h, _ext) = Host::with_external("none");
    h.dp_ok(&["run", "-d", "--name", "n", "--network", "none", "sleep", "300"]);
    assert_eq!(links_in(&h, "n"), ["lo"]);
    let lo = String::from_utf8_lossy(&h.exec("n", &["ip", "-br", "addr", "show", "lo"]).stdout).into_owned();
    assert!(lo.contains("127.0.0.1/8"), "lo must be up: {lo}");
    assert!(h.inspect("n")["NetworkSettings"]["Networks"].as_object().is_some_and(|m| m.is_empty()));
    let err = h.dp_err(&["network", "connect", "bridge", "n"]);
    assert!(err.contains("--network none"), "{err}");
}

#[test]
fn container_mode_shares_ip_and_mac() {
    let (h, _ext) = Host::with_external("ctr");
    h.dp_ok(&["run", "-d", "--name", "owner", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "guest", "--network", "container:owner", "sleep", "300"]);
    let show = |n: &str| {
        String::from_utf8_lossy(&h.exec(n, &["ip", "-o", "addr", "show", "eth0"]).stdout).into_owned()
    };
    let mac = |n: &str| {
        String::from_utf8_lossy(&h.exec(n, &["cat", "/sys/class/net/eth0/address"]).stdout).into_owned()
    };
    assert_eq!(show("owner"), show("guest"));
    assert!(show("guest").contains(&h.ip_of("owner", "bridge")));
    assert_eq!(mac("owner"), mac("guest"));
    assert_eq!(
        h.inspect("guest")["NetworkSettings"]["SandboxKey"],
        h.inspect("owner")["NetworkSettings"]["SandboxKey"]
    );
    // Docker refuses these with container: networking.
    assert!(
        h.dp_err(&["run", "-d", "--network", "container:owner", "-p", "80:80", "true"])
            .contains("conflicting options")
    );
    assert!(
        h.dp_err(&["run", "-d", "--network", "container:owner", "-h", "x", "true"])
            .contains("conflicting options")
    );
    assert!(
        h.dp_err(&["run", "-d", "--network", "container:owner", "--network-alias", "x", "true"])
            .contains("alias")
    );
    assert!(h.dp_err(&["run", "-d", "--network", "container:nosuch", "true"]).contains("No such container"));
}

#[test]
fn host_mode_sees_the_hosts_interfaces_and_discards_ports() {
    let (h, _ext) = Host::with_external("host");
    let o = h.dp(&["run", "-d", "--name", "hm", "--network", "host", "-p", "8080:80", "sleep", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("WARNING: Published ports are discarded when using host network mode"),
        "{}",
        text(&o)
    );
    let links = links_in(&h, "hm");
    assert!(links.iter().any(|l| l == UPLINK), "host mode should see {UPLINK}: {links:?}");
    assert!(links.iter().any(|l| l == "dp0"), "{links:?}");
    assert_eq!(h.inspect("hm")["HostConfig"]["PortBindings"].as_array().map(Vec::len), Some(0));
    let err = h.dp_err(&["network", "connect", "bridge", "hm"]);
    assert!(err.contains("host network"), "{err}");
    let err = h.dp_err(&["network", "disconnect", "host", "hm"]);
    assert!(err.contains("host network"), "{err}");
}

#[test]
fn connect_and_disconnect_hot_plug_interfaces() {
    let (h, _ext) = Host::with_external("plug");
    h.dp_ok(&["network", "create", "--subnet", "10.91.0.0/24", "front"]);
    h.dp_ok(&["network", "create", "--subnet", "10.92.0.0/24", "back"]);
    h.dp_ok(&["run", "-d", "--name", "app", "--network", "front", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "db", "--network", "back", "sleep", "300"]);
    assert!(!h.ping("app", "10.92.0.2"), "isolated before connect");
    h.dp_ok(&["network", "connect", "--ip", "10.92.0.9", "--alias", "api", "back", "app"]);
    assert_eq!(links_in(&h, "app"), ["lo", "eth0", "eth1"]);
    assert_eq!(h.ip_of("app", "back"), "10.92.0.9");
    assert_eq!(h.inspect("app")["NetworkSettings"]["Networks"]["back"]["Aliases"][0], "api");
    assert!(h.ping("db", "10.92.0.9"), "db cannot reach app on back");
    assert!(h.dp_err(&["network", "connect", "back", "app"]).contains("already exists"));
    h.dp_ok(&["network", "disconnect", "back", "app"]);
    assert_eq!(links_in(&h, "app"), ["lo", "eth0"]);
    assert!(!h.ping("db", "10.92.0.9"));
    assert!(h.dp_err(&["network", "disconnect", "back", "app"]).contains("not connected"));
}

#[test]
fn run_exec_logs_stop_rm() {
    let (h, _ext) = Host::with_external("life");
    // Foreground run: output and exit code come back.
    let o = h.dp(&["run", "--rm", "--name", "fg", "sh", "-c", "echo hello-from-sandbox; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello-from-sandbox"));
    assert!(!h.sandbox_names().contains(&"fg".to_string()), "--rm left the sandbox");
    // Detached run with hostname; the sandbox has its own /etc/hosts and hostname.
    h.dp_ok(&["run", "-d", "--name", "bg", "-h", "myhost", "sh", "-c", "echo started; hostname; sleep 300"]);
    let hn = String::from_utf8_lossy(&h.exec("bg", &["hostname"]).stdout).trim().to_string();
    assert_eq!(hn, "myhost");
    let hosts = String::from_utf8_lossy(&h.exec("bg", &["cat", "/etc/hosts"]).stdout).into_owned();
    assert!(hosts.contains(&format!("{}\tmyhost", h.ip_of("bg", "bridge"))), "{hosts}");
    // On the default bridge, resolv.conf is the sandbox's own copy of the host's
    // (the daemon's --resolv-conf; the tests give it one of their own).
    let resolv = String::from_utf8_lossy(&h.exec("bg", &["cat", "/etc/resolv.conf"]).stdout).into_owned();
    assert_eq!(resolv, std::fs::read_to_string(h.resolv_conf()).unwrap_or_default());
    let mounts = String::from_utf8_lossy(&h.exec("bg", &["cat", "/proc/self/mountinfo"]).stdout).into_owned();
    assert!(mounts.contains("/etc/resolv.conf") && mounts.contains("/etc/hosts"), "{mounts}");
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    assert!(!host_hosts.contains("myhost"), "the sandbox's /etc/hosts leaked to the host");
    // inspect --format with Docker's field paths.
    let key = h.dp_ok(&["inspect", "-f", "{{.NetworkSettings.SandboxKey}}", "bg"]);
    assert_eq!(key.trim(), h.inspect("bg")["NetworkSettings"]["SandboxKey"].as_str().unwrap_or_default());
    // exec passes the exit code and stdin through.
    assert_eq!(h.exec("bg", &["sh", "-c", "exit 3"]).status.code(), Some(3));
    let mut child = std::process::Command::new(dataplane_tests::bin())
        .arg("--socket")
        .arg(&h.socket)
        .args(["exec", "-i", "bg", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn exec");
    {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(b"piped-input").expect("write");
    }
    let out = child.wait_with_output().expect("exec output");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped-input");
    // Logs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !h.dp_ok(&["logs", "bg"]).contains("myhost") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(h.dp_ok(&["logs", "bg"]).contains("started\nmyhost"));
    // port: nothing published yet, nothing printed.
    assert_eq!(h.dp_ok(&["port", "bg"]), "");
    // rm refuses a running sandbox; stop, then rm removes its interfaces and namespace.
    assert!(h.dp_err(&["rm", "bg"]).contains("Stop the container"));
    let pid = h.inspect("bg")["State"]["Pid"].as_u64().expect("pid");
    h.dp_ok(&["stop", "bg"]);
    assert!(dataplane_tests::process_ended(pid), "process still alive after stop");
    let ps = h.dp_ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "{ps}");
    assert!(!h.dp_ok(&["ps"]).contains("bg"));
    let before = h.links().iter().filter(|l| l.starts_with("veth")).count();
    h.dp_ok(&["rm", "bg"]);
    let after = h.links().iter().filter(|l| l.starts_with("veth")).count();
    assert_eq!(after + 1, before, "rm must delete the veth");
    assert_eq!(h.netns_files(), ["default"]);
    // create + start.
    h.dp_ok(&["create", "--name", "later", "sleep", "300"]);
    assert!(h.dp_ok(&["ps", "-a"]).contains("Created"));
    h.dp_ok(&["start", "later"]);
    assert!(h.dp_ok(&["ps"]).contains("later"));
}

#[test]
fn create_adopts_an_existing_namespace() {
    let (h, _ext) = Host::with_external("adopt");
    let ns = dataplane_tests::Netns::new("adopted");
    h.dp_ok(&["create", "--name", "ad", "--netns", &ns.path()]);
    assert_eq!(h.inspect("ad")["NetworkSettings"]["SandboxKey"], ns.path());
    let links = String::from_utf8_lossy(&ns.run(&["ip", "-o", "addr", "show", "eth0"]).stdout).into_owned();
    assert!(links.contains("172.17.0."), "adopted namespace got no eth0: {links}");
    h.dp_ok(&["rm", "ad"]);
    // The namespace is the runtime's: still there, without our interface.
    assert!(std::path::Path::new(&ns.path()).exists());
    assert!(!ns.run(&["ip", "link", "show", "eth0"]).status.success());
}

/// A runtime (Podman, CNI) may bring the namespace's `lo` up only after
/// the network is plugged: the embedded resolver answers from then on.
#[test]
fn the_resolver_of_an_adopted_namespace_answers_once_its_lo_comes_up() {
    let (h, _ext) = Host::with_external("adlo");
    h.dp_ok(&["network", "create", "--subnet", "10.93.0.0/24", "named"]);
    h.dp_ok(&["run", "-d", "--name", "peer", "--network", "named", "sleep", "300"]);
    let name = dataplane_tests::unique("adlo");
    dataplane_tests::sh_ok(&["ip", "netns", "add", &name]);
    let ns = dataplane_tests::Netns { name };
    assert!(String::from_utf8_lossy(&ns.run(&["ip", "-o", "link", "show", "lo"]).stdout).contains("DOWN"));
    let o = h.dp(&["create", "--name", "late", "--network", "named", "--netns", &ns.path()]);
    assert!(
        o.status.success() && !dataplane_tests::text(&o).contains("WARNING"),
        "{}",
        dataplane_tests::text(&o)
    );
    let ask = || {
        let o = ns.run(&["dig", "+short", "+time=1", "+tries=1", "@127.0.0.11", "peer"]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let before = ask();
    assert!(before.contains("no servers could be reached"), "lo is down: nothing can answer yet: {before}");
    ns.run(&["ip", "link", "set", "lo", "up"]);
    assert_eq!(ask(), h.ip_of("peer", "named"), "the resolver does not answer after lo came up");
}

#[test]
fn stop_and_rm_end_everything_the_sandbox_started() {
    let (h, _ext) = Host::with_external("grp");
    h.dp_ok(&["run", "-d", "--name", "g", "sh", "-c", "sleep 311 & exec sleep 312"]);
    let pid = h.inspect("g")["State"]["Pid"].as_u64().expect("pid");
    let child = |pat: &str| {
        String::from_utf8_lossy(&dataplane_tests::sh(&["pgrep", "-f", "-g", &pid.to_string(), pat]).stdout)
            .trim()
            .to_string()
    };
    let mut bg = String::new();
    for _ in 0..50 {
        bg = child("sleep 311");
        if !bg.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let bg: u64 = bg.lines().next().and_then(|l| l.parse().ok()).expect("background child");
    h.dp_ok(&["rm", "-f", "g"]);
    assert!(dataplane_tests::process_ended(pid), "leader survived rm -f");
    // SIGKILL is delivered asynchronously: give it a bounded moment.
    for _ in 0..40 {
        if dataplane_tests::process_ended(bg) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(dataplane_tests::process_ended(bg), "background child survived rm -f");
}

#[test]
fn processes_get_a_clean_environment_and_may_run_unprivileged() {
    let (mut h, _ext) = Host::with_external_unstarted("env");
    // A secret in the daemon's environment, and one in the CLI user's shell.
    h.start_with_env(&[("FOO_SECRET", "daemon-side")]);
    let o = h.dp_ok(&["run", "--name", "e", "-h", "envbox", "-e", "GREETING=hi", "-e", "HOME=/srv", "env"]);
    let mut got: Vec<&str> = o.lines().collect();
    got.sort();
    assert_eq!(
        got,
        [
            "GREETING=hi",
            "HOME=/srv",
            "HOSTNAME=envbox",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ],
        "the process environment: {o}"
    );
    h.dp_ok(&["run", "-d", "--name", "r", "-e", "GREETING=hi", "sleep", "600"]);
    let exec_env = |extra: &[&str]| {
        let mut args = vec!["--socket".to_string(), h.socket.display().to_string(), "exec".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["r".to_string(), "env".to_string()]);
        let o = dataplane_tests::output_bounded(
            std::process::Command::new(dataplane_tests::bin())
                .args(&args)
                .env("FOO_SECRET", "caller-side")
                .env("PASSED", "on-purpose")
                .stdin(std::process::Stdio::null()),
        );
        assert!(o.status.success(), "{}", dataplane_tests::text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plain = exec_env(&[]);
    assert!(plain.contains("GREETING=hi\n") && plain.contains("HOME=/root\n"), "{plain}");
    assert!(
        !plain.contains("FOO_SECRET") && !plain.contains("PASSED"),
        "exec leaked the caller's environment: {plain}"
    );
    let passed = exec_env(&["-e", "PASSED", "-e", "X=1"]);
    assert!(passed.contains("PASSED=on-purpose\n") && passed.contains("X=1\n"), "{passed}");
    assert!(!passed.contains("FOO_SECRET"), "{passed}");

    // --user: the process runs unprivileged, and the API socket (0660 root) keeps it out.
    h.dp_ok(&["run", "-d", "--name", "u", "--user", "nobody", "sleep", "600"]);
    let pid = h.inspect("u")["State"]["Pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid line");
    assert!(uid_line.split_whitespace().skip(1).all(|f| f == "65534"), "{uid_line}");
    assert_eq!(h.exec("u", &["id", "-u"]).stdout, b"65534\n", "exec runs as the sandbox's user");
    let sock = format!("UNIX-CONNECT:{}", h.socket.display());
    let api = |name: &str| h.exec(name, &["socat", "-u", "OPEN:/dev/null", &sock]);
    let o = api("u");
    assert!(
        !o.status.success() && dataplane_tests::text(&o).contains("Permission denied"),
        "{}",
        dataplane_tests::text(&o)
    );
    assert!(
        api("r").status.success(),
        "a root sandbox reaches the socket (as the README warns): {}",
        dataplane_tests::text(&api("r"))
    );
    assert_eq!(h.exec("u", &["id", "-u"]).stdout, b"65534\n");
    assert_eq!(h.dp_ok(&["exec", "-u", "0", "u", "id", "-u"]), "0\n");
}
