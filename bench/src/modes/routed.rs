//! `routed`: client ↔ router ↔ server over two veth pairs with plain IP
//! forwarding in the router — no bridge, no NAT, no BPF, no rule. The hop
//! every container path pays (a published port is reached through the
//! host), so the data-path goals are stated against it rather than against
//! `bare` (one veth pair, which measures the topology).

use super::{Container, Mode, Serve, must, tune_client};
use dataplane_tests::Netns;

pub fn routed() -> anyhow::Result<Mode> {
    let client = Netns::new("rc");
    let router = Netns::new("rr");
    let mut server = Container::new("rs");
    let (a, b) = (dataplane_tests::unique("ra"), dataplane_tests::unique("rb"));
    dataplane_tests::veth_pair(&a, &client.name, "up0", &router.name);
    dataplane_tests::veth_pair(&b, &server.ns.name, "down0", &router.name);
    let ip = |ns: &str, args: &[&str]| -> anyhow::Result<String> {
        let mut full = vec!["ip", "-n", ns];
        full.extend_from_slice(args);
        must(&full)
    };
    ip(&client.name, &["addr", "add", "10.251.0.1/24", "dev", &a])?;
    ip(&client.name, &["link", "set", &a, "up"])?;
    ip(&client.name, &["route", "add", "default", "via", "10.251.0.254"])?;
    ip(&router.name, &["addr", "add", "10.251.0.254/24", "dev", "up0"])?;
    ip(&router.name, &["addr", "add", "10.252.0.254/24", "dev", "down0"])?;
    ip(&router.name, &["link", "set", "up0", "up"])?;
    ip(&router.name, &["link", "set", "down0", "up"])?;
    must(&["ip", "netns", "exec", &router.name, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    ip(&server.ns.name, &["addr", "add", "10.252.0.2/24", "dev", &b])?;
    ip(&server.ns.name, &["link", "set", &b, "up"])?;
    ip(&server.ns.name, &["route", "add", "default", "via", "10.252.0.254"])?;
    server.serve(Serve::All)?;
    tune_client(&client.name)?;
    let name = client.name.clone();
    // The server goes first (its processes before the namespaces).
    Ok(Mode::new("routed", &name, "10.252.0.2").keep(server).keep(router).keep(client))
}
