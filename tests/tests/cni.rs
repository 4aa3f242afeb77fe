//! CNI: what a runtime (Podman, containerd, CRI-O) is given to attach its
//! containers to a dataplane network.

use dataplane_tests::Host;

#[test]
fn cni_config_prints_a_conflist_for_networks_with_endpoints() {
    let (h, _ext) = Host::with_external("cnic");
    h.dp_ok(&["network", "create", "--subnet", "10.94.0.0/24", "dpnet"]);
    let v: serde_json::Value =
        serde_json::from_str(&h.dp_ok(&["network", "cni-config", "dpnet"])).expect("a JSON conflist");
    assert_eq!((v["cniVersion"].as_str(), v["name"].as_str()), (Some("1.1.0"), Some("dpnet")), "{v}");
    let plugin = &v["plugins"][0];
    assert_eq!(
        (plugin["type"].as_str(), plugin["network"].as_str()),
        (Some("dataplane-cni"), Some("dpnet")),
        "{v}"
    );
    assert_eq!(plugin["socket"].as_str(), Some(h.socket.display().to_string().as_str()), "{v}");
    for cap in ["portMappings", "ips", "mac", "aliases"] {
        assert_eq!(plugin["capabilities"][cap], true, "{cap}: {v}");
    }
    let e = h.dp_err(&["network", "cni-config", "host"]);
    assert!(e.contains("has no endpoints"), "{e}");
    let e = h.dp_err(&["network", "cni-config", "nosuch"]);
    assert!(e.contains("not found"), "{e}");
}
