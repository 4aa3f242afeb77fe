//! Records for the engine's plan tests: a /29 bridge network `web`,
//! sandboxes named `s<id>`, a state with endpoints on `web`.

use std::collections::BTreeMap;

use crate::domain::model::*;
use crate::domain::state::State;

pub fn net(vips: bool) -> Network {
    let mut options = BTreeMap::new();
    if vips {
        options.insert(crate::domain::options::key::LB.to_string(), "vip".to_string());
    }
    Network {
        id: "n".repeat(64),
        name: "web".into(),
        driver: Driver::Bridge,
        created: String::new(),
        num: 1,
        ipam6: None,
        ipam: Some(Ipam {
            subnet: "10.9.0.0/29".parse().expect("subnet"),
            ip_range: None,
            gateway: "10.9.0.1".parse().expect("gateway"),
            aux: BTreeMap::new(),
        }),
        internal: false,
        options,
        labels: BTreeMap::new(),
        device: Some("br-test".into()),
        predefined: false,
        vips: BTreeMap::new(),
        vips6: BTreeMap::new(),
        owner: None,
    }
}

pub fn sandbox(id: char) -> Sandbox {
    Sandbox {
        id: id.to_string().repeat(64),
        name: format!("s{id}"),
        hostname: format!("s{id}"),
        mode: NetworkMode::Networks,
        state: SandboxState::Running,
        ..Default::default()
    }
}

pub fn state_with(eps: &[(char, &str, &str)]) -> State {
    let mut st = State { networks: vec![net(false)], ..Default::default() };
    for (id, ifname, ip) in eps {
        st.sandboxes.push(sandbox(*id));
        st.endpoints.push(Endpoint {
            id: format!("ep-{id}-{ifname}"),
            network_id: "n".repeat(64),
            sandbox_id: id.to_string().repeat(64),
            ifname: ifname.to_string(),
            host_ifname: Some(format!("veth{id}")),
            ip: ip.parse().expect("ip"),
            ip6: None,
            mac: [0; 6],
            aliases: vec![],
        });
    }
    st
}
