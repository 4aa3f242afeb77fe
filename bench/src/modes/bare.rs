//! `bare`: a plain veth pair client ↔ server, no bridge, no NAT. The limit.

use super::{Container, Mode, Serve, must, tune_client};
use dataplane_tests::Netns;

pub fn bare() -> anyhow::Result<Mode> {
    let client = Netns::new("bc");
    let mut server = Container::new("bs");
    let a = dataplane_tests::unique("ba");
    dataplane_tests::veth_pair(&a, &client.name, "eth0", &server.ns.name);
    must(&["ip", "-n", &client.name, "addr", "add", "10.250.0.1/24", "dev", &a])?;
    must(&["ip", "-n", &client.name, "link", "set", &a, "up"])?;
    must(&["ip", "-n", &server.ns.name, "addr", "add", "10.250.0.2/24", "dev", "eth0"])?;
    must(&["ip", "-n", &server.ns.name, "link", "set", "eth0", "up"])?;
    server.serve(Serve::All)?;
    tune_client(&client.name)?;
    let name = client.name.clone();
    // The server goes first (its processes before the client's namespace).
    Ok(Mode::new("bare", &name, "10.250.0.2").keep(server).keep(client))
}
