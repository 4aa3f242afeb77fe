//! The CLI as a Docker user's fingers expect it: flags ours until the
//! command, Docker's exit codes, `ps` with filters and columns, Go
//! templates, life-cycle commands, logs, `run`'s networking flags,
//! version/info/completion/man pages. Each test drives the real binary
//! against a real daemon and checks what the daemon did.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::{DnsUpstream, Host, bin, json_lines, output_bounded, text};

fn code(o: &std::process::Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn flags_are_ours_until_the_command_and_exit_codes_are_dockers() {
    let (h, _ext) = Host::with_external("clix");
    // An unknown flag is named, never run as the command; nothing is made.
    for (args, flag) in [
        (&["run", "-d", "--bogus", "sh"][..], "--bogus"),
        (&["run", "--rm", "--workdirr", "/", "sh"][..], "--workdirr"),
        (&["ps", "--nope"][..], "--nope"),
    ] {
        let o = h.dp(args);
        assert_eq!(code(&o), 125, "{args:?}: {}", text(&o));
        assert!(text(&o).contains(&format!("unknown flag: {flag}")), "{args:?}: {}", text(&o));
    }
    assert!(text(&h.dp(&["run", "-d", "--bogus", "sh"])).contains("See 'dataplane run --help'."));
    assert_eq!(h.dp_ok(&["ps", "-aq"]), "", "a refused run left a sandbox");
    // Everything from the command on is the command's.
    assert_eq!(h.dp_ok(&["run", "--rm", "echo", "-n", "--rm", "-d"]), "--rm -d");
    // The process's own code; 127 not found; 126 not executable.
    assert_eq!(code(&h.dp(&["run", "--rm", "sh", "-c", "exit 3"])), 3);
    let o = h.dp(&["run", "--rm", "no-such-command-here"]);
    assert_eq!(code(&o), 127, "{}", text(&o));
    assert!(text(&o).contains("executable file not found"), "{}", text(&o));
    let plain = h.dir.join("not-executable");
    std::fs::write(&plain, "echo never\n").expect("a plain file");
    let plain = plain.display().to_string();
    let o = h.dp(&["run", "--rm", &plain]);
    assert_eq!(code(&o), 126, "{}", text(&o));
    assert_eq!(h.dp_ok(&["ps", "-aq"]), "", "--rm sandboxes whose command failed stay");
    // exec: 1 without the sandbox, 127/126 for the command, else its code.
    h.dp_ok(&["run", "-d", "--name", "c1", "sleep", "300"]);
    assert_eq!(code(&h.dp(&["exec", "nosuch", "true"])), 1);
    assert_eq!(code(&h.dp(&["exec", "c1", "no-such-command-here"])), 127);
    assert_eq!(code(&h.dp(&["exec", "c1", &plain])), 126);
    assert_eq!(code(&h.dp(&["exec", "c1", "sh", "-c", "exit 5"])), 5);
    assert_eq!(h.dp_ok(&["exec", "-w", "/tmp", "c1", "pwd"]).trim(), "/tmp");
    // A daemon refusal of run: 125 (a conflict is not called "conflicting options" unless it is one).
    let o = h.dp(&["run", "-d", "--name", "c1", "true"]);
    assert_eq!(code(&o), 125, "{}", text(&o));
    assert!(text(&o).contains("already in use") && !text(&o).contains("conflicting options"), "{}", text(&o));
}

#[test]
fn ps_filters_columns_and_templates() {
    let (h, _ext) = Host::with_external("clips");
    h.dp_ok(&["network", "create", "--subnet", "10.61.0.0/24", "n1"]);
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n1",
        "-l",
        "team=x",
        "-p",
        "8080:80",
        "sleep",
        "300",
    ]);
    h.dp_ok(&["run", "-d", "--name", "b", "sh", "-c", "exit 3"]);
    h.dp_ok(&["create", "--name", "c", "sleep", "300"]);
    eventually("b to exit", || h.ps_rows().iter().any(|r| r["Names"] == "b" && r["State"] == "exited"));
    // The default table: Docker's columns; running ones only.
    let table = h.dp_ok(&["ps"]);
    let header = table.lines().next().unwrap_or_default();
    for col in ["CONTAINER ID", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"] {
        assert!(header.contains(col), "{header}");
    }
    let row_a = table.lines().find(|l| l.ends_with(" a")).unwrap_or_else(|| panic!("{table}"));
    assert!(
        row_a.contains("Up ") && row_a.contains("0.0.0.0:8080->80/tcp") && row_a.contains(" ago"),
        "{row_a}"
    );
    assert!(!table.contains(" b\n") && !table.lines().any(|l| l.ends_with(" b")), "{table}");
    // -q, -a, --no-trunc.
    let ids = h.dp_ok(&["ps", "-aq"]);
    assert_eq!(ids.lines().count(), 3, "{ids}");
    assert!(ids.lines().all(|l| l.len() == 12), "{ids}");
    assert!(h.dp_ok(&["ps", "-aq", "--no-trunc"]).lines().all(|l| l.len() == 64));
    // Filters (a status filter looks past running ones).
    let f = |args: &[&str]| h.dp_ok(&[&["ps", "--format", "{{.Names}}"][..], args].concat());
    assert_eq!(f(&["--filter", "status=exited"]), "b\n");
    assert_eq!(f(&["-a", "--filter", "status=created"]), "c\n");
    assert_eq!(f(&["--filter", "label=team=x"]), "a\n");
    assert_eq!(f(&["--filter", "label=team=y"]), "");
    assert_eq!(f(&["--filter", "network=n1"]), "a\n");
    assert_eq!(f(&["-a", "--filter", "name=b", "--filter", "name=c"]).lines().count(), 2);
    assert_eq!(f(&["-a", "--filter", "exited=3"]), "b\n");
    let a_id = h.inspect("a")["Id"].as_str().expect("id").to_string();
    assert_eq!(f(&["--filter", &format!("id={}", &a_id[..6])]), "a\n");
    let o = h.dp(&["ps", "--filter", "colour=red"]);
    assert!(!o.status.success() && text(&o).contains("invalid filter 'colour'"), "{}", text(&o));
    // Status words.
    let status = h.dp_ok(&["ps", "-a", "--filter", "name=b", "--format", "{{.Status}}"]);
    assert!(status.starts_with("Exited (3) ") && status.trim_end().ends_with(" ago"), "{status}");
    assert_eq!(h.dp_ok(&["ps", "-a", "--filter", "name=c", "--format", "{{.Status}}"]), "Created\n");
    // A table template: a header, aligned columns.
    let t = h.dp_ok(&["ps", "-a", "--format", "table {{.Names}}\\t{{.State}}"]);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAMES", "STATE"], "{t}");
    assert_eq!(lines.len(), 4, "{t}");
    // json: one object a line.
    let rows = json_lines(&h.dp_ok(&["ps", "-a", "--format", "json"]));
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().any(|r| r["Names"] == "a" && r["Labels"] == "team=x" && r["Networks"] == "n1"));
    // The snippet Docker users type: rm -f $(ps -aq).
    let script = format!("{0} --socket {1} rm -f $({0} --socket {1} ps -aq)", bin(), h.socket.display());
    let o = output_bounded(Command::new("sh").args(["-c", &script]).stdin(Stdio::null()));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(h.dp_ok(&["ps", "-aq"]), "");
}

#[test]
fn inspect_and_network_commands_take_go_templates_and_typed_options() {
    let (h, _ext) = Host::with_external("clifmt");
    h.dp_ok(&["network", "create", "--subnet", "10.62.0.0/24", "--label", "tier=web", "n1"]);
    h.dp_ok(&["run", "-d", "--name", "a", "--network", "n1", "-l", "team=x", "sleep", "300"]);
    h.dp_ok(&["network", "connect", "bridge", "a"]);
    let ips = h.dp_ok(&["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "a"]);
    let mut got: Vec<&str> = ips.split_whitespace().collect();
    got.sort();
    let mut want = vec![h.ip_of("a", "n1"), h.ip_of("a", "bridge")];
    want.sort();
    assert_eq!(got, want, "{ips}");
    assert_eq!(h.dp_ok(&["inspect", "-f", r#"{{index .Config.Labels "team"}}"#, "a"]), "x\n");
    assert_eq!(h.dp_ok(&["inspect", "--format", "{{json .Config.Labels}}", "a"]), "{\"team\":\"x\"}\n");
    assert_eq!(h.dp_ok(&["inspect", "-f", r#"{{printf "%s/%v" .Name .State.Running}}"#, "a"]), "/a/true\n");
    let o = h.dp(&["inspect", "-f", "{{.Name", "a"]);
    assert!(!o.status.success() && text(&o).contains("--format"), "{}", text(&o));
    // network ls/inspect.
    let names = h.dp_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(names.lines().any(|l| l == "n1") && names.lines().any(|l| l == "bridge"), "{names}");
    assert_eq!(
        h.dp_ok(&["network", "ls", "--filter", "label=tier=web", "--format", "{{.Name}} {{.Driver}}"]),
        "n1 bridge\n"
    );
    assert_eq!(h.dp_ok(&["network", "ls", "-f", "type=custom", "--format", "{{.Name}}"]), "n1\n");
    // The daemon applies the filters (the docker CLI's too), and names what it refuses.
    for (bad, named) in
        [("colour=red", "\"colour\""), ("type=other", "type=other"), ("name", "expected name=value")]
    {
        let o = h.dp(&["network", "ls", "--filter", bad]);
        assert!(!o.status.success() && text(&o).contains(named), "{bad}: {}", text(&o));
    }
    assert_eq!(
        h.dp_ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "n1"]),
        "10.62.0.0/24\n"
    );
    let t = h.dp_ok(&["network", "ls", "--format", "table {{.Name}}\\t{{.Driver}}"]);
    assert_eq!(
        t.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "DRIVER"])
    );
    // Typed options: listed in help, unknown keys refused by name.
    let help = h.dp_ok(&["network", "create", "--help"]);
    for k in ["lb=vip", "parent=", "macvlan_mode=", "com.docker.network.bridge.enable_icc"] {
        assert!(help.contains(k), "{k} missing from network create --help");
    }
    let err = h.dp_err(&["network", "create", "-o", "ib=vip", "typo"]);
    assert!(err.contains("ib"), "{err}");
    assert!(!h.network_names().contains(&"typo".to_string()));
    // prune asks (no answer is no), -f does it and lists what went.
    h.dp_ok(&["network", "create", "--subnet", "10.63.0.0/24", "unused"]);
    let asked = h.dp(&["network", "prune"]);
    assert!(text(&asked).contains("Are you sure"), "{}", text(&asked));
    assert!(h.network_names().contains(&"unused".to_string()), "prune without yes removed a network");
    let pruned = h.dp_ok(&["network", "prune", "-f"]);
    assert!(
        pruned.contains("Deleted Networks:") && pruned.contains("unused") && !pruned.contains("n1"),
        "{pruned}"
    );
    assert!(!h.network_names().contains(&"unused".to_string()));
}

#[test]
fn stop_restart_kill_rename_and_wait() {
    let (h, _ext) = Host::with_external("clilife");
    h.dp_ok(&["network", "create", "--subnet", "10.64.0.0/24", "n1"]);
    // A process that ignores SIGTERM: stop -t 1 kills it after a second, not ten.
    h.dp_ok(&["run", "-d", "--name", "stubborn", "sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]);
    let t0 = Instant::now();
    h.dp_ok(&["stop", "-t", "1", "stubborn"]);
    assert!(t0.elapsed() < Duration::from_secs(8), "stop -t 1 took {:?}", t0.elapsed());
    assert_eq!(h.inspect("stubborn")["State"]["Running"], false);
    // restart: a new process, running again.
    h.dp_ok(&["run", "-d", "--name", "r", "--network", "n1", "sleep", "300"]);
    let pid = h.inspect("r")["State"]["Pid"].as_u64().expect("pid");
    h.dp_ok(&["restart", "-t", "1", "r"]);
    let pid2 = h.inspect("r")["State"]["Pid"].as_u64().expect("pid");
    assert!(pid2 != pid && pid2 > 0 && dataplane_tests::process_ended(pid), "{pid} -> {pid2}");
    assert!(h.dp_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]).contains("r Up "));
    // kill -s: the signal reaches the process.
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "k",
        "sh",
        "-c",
        "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done",
    ]);
    eventually("k to be ready", || h.dp_ok(&["logs", "k"]).contains("ready"));
    h.dp_ok(&["kill", "-s", "USR1", "k"]);
    eventually("USR1 to reach k", || h.dp_ok(&["logs", "k"]).contains("got-usr1"));
    let e = h.dp_err(&["kill", "-s", "NOPE", "k"]);
    assert!(e.contains("NOPE"), "{e}");
    h.dp_ok(&["kill", "k"]);
    eventually("k to end", || h.inspect("k")["State"]["Running"] == false);
    assert!(h.dp_err(&["kill", "k"]).contains("is not running"));
    // rename: the DNS name follows; the old one is gone; taken names refused.
    h.dp_ok(&["run", "-d", "--name", "client", "--network", "n1", "sleep", "300"]);
    h.dp_ok(&["rename", "r", "renamed"]);
    assert!(h.ping("client", "renamed"), "the new name does not resolve");
    assert!(!h.ping("client", "r"), "the old name still resolves");
    assert!(h.dp_err(&["rename", "renamed", "client"]).contains("already in use"));
    assert!(h.dp(&["inspect", "r"]).status.code() != Some(0));
    // wait prints the exit code.
    h.dp_ok(&["run", "-d", "--name", "w", "sh", "-c", "sleep 0.5; exit 7"]);
    assert_eq!(h.dp_ok(&["wait", "w"]), "7\n");
}

#[test]
fn logs_follow_tail_timestamps_and_since() {
    let (h, _ext) = Host::with_external("clilogs");
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "l",
        "sh",
        "-c",
        "echo one; echo two; sleep 1; echo three; printf four",
    ]);
    // -f goes on until the process ends, with what it writes meanwhile.
    let followed = h.dp_ok(&["logs", "-f", "l"]);
    assert_eq!(followed, "one\ntwo\nthree\nfour");
    assert_eq!(h.dp_ok(&["logs", "--tail", "2", "l"]), "three\nfour");
    let stamped = h.dp_ok(&["logs", "-t", "l"]);
    for line in stamped.lines() {
        let (ts, _) = line.split_once(' ').expect("a time first");
        let t = chrono::DateTime::parse_from_rfc3339(ts).unwrap_or_else(|e| panic!("{line}: {e}"));
        let age = chrono::Utc::now() - t.with_timezone(&chrono::Utc);
        assert!(age < chrono::Duration::minutes(5), "{line}");
    }
    assert_eq!(h.dp_ok(&["logs", "--since", "10m", "l"]), "one\ntwo\nthree\nfour");
    assert_eq!(h.dp_ok(&["logs", "--until", "2000-01-01T00:00:00Z", "l"]), "");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).timestamp().to_string();
    assert_eq!(h.dp_ok(&["logs", "--since", &future, "l"]), "");
    let e = h.dp_err(&["logs", "--since", "yesterday", "l"]);
    assert!(e.contains("yesterday"), "{e}");
}

#[test]
fn run_takes_dockers_networking_flags() {
    let (h, ext) = Host::with_external("clinet");
    // An upstream resolver only the --dns flag names (the host's resolv.conf names another).
    ext.run(&["ip", "addr", "add", "192.0.2.53/24", "dev", "ext0"]);
    let _up = DnsUpstream::start_at(&ext, "192.0.2.53");
    h.dp_ok(&["network", "create", "--subnet", "10.65.0.0/24", "n1"]);
    // Default bridge: --dns goes into resolv.conf itself.
    h.dp_ok(&[
        "run",
        "-d",
        "--name",
        "d",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "corp.example",
        "--dns-option",
        "ndots:2",
        "--add-host",
        "db.local:10.1.2.3",
        "--add-host",
        "gw:host-gateway",
        "-w",
        "/tmp",
        "--mac-address",
        "02:42:de:ad:be:ef",
        "sleep",
        "300",
    ]);
    let resolv = h.dp_ok(&["exec", "d", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 192.0.2.53") && resolv.contains("search corp.example"), "{resolv}");
    assert!(resolv.contains("options ndots:2"), "{resolv}");
    let hosts = h.dp_ok(&["exec", "d", "cat", "/etc/hosts"]);
    let gw = h.dp_ok(&["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}", "bridge"]);
    assert!(hosts.contains("10.1.2.3\tdb.local") && hosts.contains(&format!("{}\tgw", gw.trim())), "{hosts}");
    assert_eq!(h.inspect("d")["NetworkSettings"]["Networks"]["bridge"]["MacAddress"], "02:42:de:ad:be:ef");
    assert!(h.dp_ok(&["exec", "d", "ip", "link", "show", "eth0"]).contains("02:42:de:ad:be:ef"));
    let e = h.dp_err(&["run", "-d", "--mac-address", "02:42:de:ad:be:ef", "sleep", "1"]);
    assert!(e.contains("--mac-address"), "{e}");
    let e = h.dp_err(&["run", "-d", "--add-host", "oops", "sleep", "1"]);
    assert!(e.contains("--add-host"), "{e}");
    // The process's working directory.
    assert_eq!(h.dp_ok(&["run", "--rm", "-w", "/tmp", "pwd"]), "/tmp\n");
    assert!(h.dp_err(&["run", "--rm", "-w", "/no/such/dir", "pwd"]).contains("--workdir"));
    // A user network: our resolver, forwarding to --dns.
    h.dp_ok(&["run", "-d", "--name", "u", "--network", "n1", "--dns", "192.0.2.53", "sleep", "300"]);
    let resolv = h.dp_ok(&["exec", "u", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    let a = h.dp_ok(&["exec", "u", "dig", "+short", "+time=2", "+tries=1", "x.outside.example"]);
    assert_eq!(a.trim(), "198.51.100.7", "--dns not used by the embedded resolver");
    // Without --dns the embedded resolver asks the host's upstream (none answers here).
    h.dp_ok(&["run", "-d", "--name", "v", "--network", "n1", "sleep", "300"]);
    let a = stdout(&h.exec("v", &["dig", "+short", "+time=2", "+tries=1", "x.outside.example"]));
    assert!(!a.contains("198.51.100.7"), "the pair: only --dns reaches that upstream: {a}");
    // --link: a hosts entry for the alias, on the default bridge.
    h.dp_ok(&["run", "-d", "--name", "target", "sleep", "300"]);
    h.dp_ok(&["run", "-d", "--name", "linker", "--link", "target:tgt", "sleep", "300"]);
    let hosts = h.dp_ok(&["exec", "linker", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{}\ttgt target", h.ip_of("target", "bridge"))), "{hosts}");
    assert!(h.ping("linker", "tgt"));
    assert!(h.dp_err(&["run", "-d", "--link", "nosuch:x", "sleep", "1"]).contains("nosuch"));
    // --env-file.
    let env = h.dir.join("env");
    std::fs::write(&env, "# comment\nGREETING=hello\n\nEMPTY=\n").expect("env file");
    let out = h.dp_ok(&[
        "run",
        "--rm",
        "--env-file",
        &env.display().to_string(),
        "sh",
        "-c",
        "echo $GREETING-$EMPTY.",
    ]);
    assert_eq!(out, "hello-.\n");
}

#[test]
fn version_info_stats_completion_and_man_pages() {
    let (h, _ext) = Host::with_external("cliinfo");
    h.dp_ok(&["run", "-d", "--name", "a", "-p", "8080:80", "sleep", "300"]);
    let v = h.dp_ok(&["version"]);
    assert!(v.contains("Client:") && v.contains("Server: dataplane") && v.contains("Kernel:"), "{v}");
    assert_eq!(
        h.dp_ok(&["version", "--format", "{{.Server.Version}}"]).trim(),
        h.dp_ok(&["version", "-f", "{{.Client.Version}}"]).trim()
    );
    let info = h.dp_ok(&["info"]);
    for s in
        ["Sandboxes: 1", "Running: 1", "Kernel Features:", "BTF: yes", "tcx: yes", "BPF Maps", "Conntrack:"]
    {
        assert!(info.contains(s), "{s} missing from info:\n{info}");
    }
    let j: serde_json::Value = serde_json::from_str(&h.dp_ok(&["info", "--format", "json"])).expect("json");
    let maps = j["Maps"].as_array().expect("maps");
    assert!(
        maps.iter().any(|m| m["Entries"].as_u64().is_some_and(|n| n > 0)),
        "no map with entries: {maps:?}"
    );
    assert_eq!(h.dp_ok(&["info", "-f", "{{.Sandboxes.Running}}"]), "1\n");
    // stats: counters that never moved are hidden unless --all; the direction is explained.
    let s = h.dp_ok(&["stats"]);
    let all = h.dp_ok(&["stats", "--all"]);
    assert!(s.contains("DIRECTION is the sandbox's side"), "{s}");
    assert!(all.lines().count() > s.lines().count(), "--all shows more rows");
    let j: serde_json::Value = serde_json::from_str(&h.dp_ok(&["stats", "--format", "json"])).expect("json");
    assert!(
        j["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .all(|r| r.get("Reason").is_some() && r.get("reason").is_none())
    );
    // Completions and man pages.
    let bash = h.dp_ok(&["completion", "bash"]);
    assert!(bash.contains("_dataplane") && bash.contains("complete"), "bash completion");
    assert!(h.dp_ok(&["completion", "zsh"]).contains("#compdef dataplane"));
    assert!(h.dp_ok(&["completion", "fish"]).contains("complete -c dataplane"));
    let man = h.dir.join("man");
    h.dp_ok(&["man-pages", &man.display().to_string()]);
    for page in ["dataplane.1", "dataplane-run.1", "dataplane-network-create.1"] {
        let text = std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page");
    }
    // The daemon's log: no colours in the file, Display formatting.
    let log = h.daemon_log();
    assert!(!log.contains('\u{1b}'), "ANSI escapes in the daemon log");
    assert!(!log.contains("Some(\""), "Debug formatting in the daemon log");
}
