//! The stock docker CLI against our daemon's socket (Docker Engine API shapes).

use dataplane_tests::{Host, sh, text};

fn docker(h: &Host, args: &[&str]) -> std::process::Output {
    let host = format!("unix://{}", h.socket.display());
    let mut full = vec!["docker", "-H", host.as_str()];
    full.extend_from_slice(args);
    sh(&full)
}

fn docker_ok(h: &Host, args: &[&str]) -> String {
    let o = docker(h, args);
    assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn docker_network_commands_work_against_dataplane() {
    assert!(
        sh(&["sh", "-c", "command -v docker"]).status.success(),
        "the docker CLI client is needed for this test (Debian package docker.io or docker-ce-cli)"
    );
    let (h, _ext) = Host::with_external("dk");
    let ls = docker_ok(&h, &["network", "ls"]);
    let header = ls.lines().next().unwrap_or_default();
    assert!(header.starts_with("NETWORK ID") && header.contains("NAME") && header.contains("DRIVER"), "{ls}");
    for (name, driver) in [("bridge", "bridge"), ("host", "host"), ("none", "null")] {
        assert!(ls.lines().any(|l| l.contains(name) && l.contains(driver)), "{name} missing: {ls}");
    }
    let id = docker_ok(&h, &["network", "create", "--subnet", "10.66.0.0/24", "--label", "team=net", "dk1"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&h, &["network", "inspect", "dk1"])).expect("json");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.66.0.0/24");
    assert_eq!(inspect[0]["Labels"]["team"], "net");
    let fmt = docker_ok(&h, &["network", "inspect", "-f", "{{.Driver}} {{.Scope}}", "dk1"]);
    assert_eq!(fmt.trim(), "bridge local");
    assert!(docker_ok(&h, &["network", "ls", "--filter", "name=dk1", "-q"]).trim().len() == 12);

    h.dp_ok(&["run", "-d", "--name", "web", "sleep", "300"]);
    docker_ok(&h, &["network", "connect", "--ip", "10.66.0.20", "dk1", "web"]);
    assert_eq!(h.ip_of("web", "dk1"), "10.66.0.20");
    let inspect: serde_json::Value =
        serde_json::from_str(&docker_ok(&h, &["network", "inspect", "dk1"])).expect("json");
    let containers = inspect[0]["Containers"].as_object().expect("containers");
    assert_eq!(containers.values().next().map(|c| c["Name"].clone()), Some("web".into()));
    let err = text(&docker(&h, &["network", "rm", "dk1"]));
    assert!(err.contains("active endpoints"), "{err}");
    docker_ok(&h, &["network", "disconnect", "dk1", "web"]);
    assert_eq!(docker_ok(&h, &["network", "rm", "dk1"]).trim(), "dk1");
    let err = text(&docker(&h, &["network", "inspect", "dk1"]));
    assert!(err.contains("not found"), "{err}");
    docker_ok(&h, &["network", "create", "unused"]);
    let pruned = docker_ok(&h, &["network", "prune", "-f"]);
    assert!(pruned.contains("unused"), "{pruned}");
}

/// Docker's CLI renders Docker's templates and tables on our API's
/// answers; ours renders ours on the same daemon: they must print the same.
#[test]
fn our_templates_and_tables_print_what_dockers_cli_prints() {
    assert!(
        sh(&["sh", "-c", "command -v docker"]).status.success(),
        "the docker CLI client is needed for this test (Debian package docker.io or docker-ce-cli)"
    );
    let (h, _ext) = Host::with_external("gold");
    h.dp_ok(&["network", "create", "--subnet", "10.67.0.0/24", "--label", "team=net", "gold1"]);
    h.dp_ok(&["network", "create", "--internal", "--subnet", "10.68.0.0/24", "gold2"]);
    h.dp_ok(&["run", "-d", "--name", "g1", "--network", "gold1", "sleep", "300"]);
    let ls = |args: &[&str]| {
        let ours = h.dp_ok(&[&["network", "ls"][..], args].concat());
        let docker = docker_ok(&h, &[&["network", "ls"][..], args].concat());
        assert_eq!(ours, docker, "network ls {args:?}: ours vs docker's");
    };
    ls(&[]);
    ls(&["-q"]);
    ls(&["--no-trunc", "-q"]);
    ls(&["--format", "{{.ID}} {{.Name}} {{.Driver}} {{.Scope}} {{.Internal}} {{.IPv6}} {{.Labels}}"]);
    ls(&["--format", "table {{.Name}}\t{{.Driver}}\t{{.Scope}}"]);
    ls(&["--filter", "driver=bridge", "--format", "{{.Name}}"]);
    ls(&["--filter", "label=team=net", "--format", "{{.Name}}"]);
    for f in [
        "{{.Name}} {{.Driver}} {{.Scope}} {{.Internal}} {{.EnableIPv6}}",
        "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        "{{range .Containers}}{{.Name}} {{.IPv4Address}}{{end}}",
        r#"{{index .Labels "team"}}|{{len .Containers}}|{{printf "%.5s" .Id}}"#,
        "{{if .Internal}}internal{{else}}routed{{end}}",
    ] {
        for net in ["gold1", "gold2"] {
            let ours = h.dp_ok(&["network", "inspect", "-f", f, net]);
            let docker = docker_ok(&h, &["network", "inspect", "-f", f, net]);
            assert_eq!(ours, docker, "network inspect -f {f:?} {net}: ours vs docker's");
        }
    }
}
