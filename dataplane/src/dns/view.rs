//! What the embedded resolver knows, computed from one store snapshot for
//! the sandbox asking: the names of the live sandboxes it shares a
//! user-defined network with (names, hostnames, aliases, short IDs) and the
//! reverse names of their addresses. Pure: no sockets, no clock.
//!
//! [`Index`] is built once per store snapshot (the resolver rebuilds it when
//! the store changes), so a query costs the same however many sandboxes the
//! store holds: the asker's networks, then the name within each.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::domain::model::{Endpoint, Network, RemoteEndpoint, Sandbox};
use crate::domain::state::State;

/// What a query for a name resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// A name we own, with its addresses (in a stable order; may be empty
    /// when the record type has no data, e.g. AAAA on our IPv4 networks).
    Addrs(Vec<Ipv4Addr>),
    /// The name of an address (PTR), `NAME.NETWORK`.
    Ptr(String),
    /// Not ours.
    Unknown,
}

/// Positions in one store snapshot, by what queries look up.
#[derive(Default)]
pub struct Index {
    /// Sandbox id → its position.
    sandboxes: HashMap<String, usize>,
    /// Network id → its position.
    networks: HashMap<String, usize>,
    /// Network id → positions of its endpoints.
    eps_of_net: HashMap<String, Vec<usize>>,
    /// Sandbox id → positions of its endpoints.
    eps_of_sandbox: HashMap<String, Vec<usize>>,
    /// Network id → lowercase name, hostname or alias → endpoint positions.
    names: HashMap<String, HashMap<String, Vec<usize>>>,
}

impl Index {
    pub fn new(state: &State) -> Index {
        let mut ix = Index {
            sandboxes: state.sandboxes.iter().enumerate().map(|(i, s)| (s.id.clone(), i)).collect(),
            networks: state.networks.iter().enumerate().map(|(i, n)| (n.id.clone(), i)).collect(),
            ..Index::default()
        };
        for (i, ep) in state.endpoints.iter().enumerate() {
            ix.eps_of_net.entry(ep.network_id.clone()).or_default().push(i);
            ix.eps_of_sandbox.entry(ep.sandbox_id.clone()).or_default().push(i);
            let Some(sb) = ix.sandboxes.get(&ep.sandbox_id).map(|&s| &state.sandboxes[s]) else { continue };
            let mut keys: Vec<String> = [&sb.name, &sb.hostname]
                .into_iter()
                .chain(ep.aliases.iter())
                .filter(|n| !n.is_empty())
                .map(|n| n.to_ascii_lowercase())
                .collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                ix.names.entry(ep.network_id.clone()).or_default().entry(k).or_default().push(i);
            }
        }
        ix
    }
}

/// How the asking sandbox sees the names around it.
pub struct View<'a> {
    state: &'a State,
    index: &'a Index,
    /// User-defined networks the asker is attached to.
    networks: Vec<&'a Network>,
    /// Asked only of sandboxes a name matched (it may read /proc).
    live: &'a dyn Fn(&Sandbox) -> bool,
}

/// `name` lowercased, without the trailing dot.
pub fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The address named by an `in-addr.arpa` name (four octets) or an
/// `ip6.arpa` name (32 nibbles, least significant first).
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    let rest = normalize(name);
    if let Some(nibbles) = rest.strip_suffix(".ip6.arpa") {
        let digits: Vec<u8> = nibbles
            .split('.')
            .map(|p| if p.len() == 1 { u8::from_str_radix(p, 16).ok() } else { None })
            .collect::<Option<_>>()?;
        if digits.len() != 32 {
            return None;
        }
        let value = digits.iter().rev().fold(0u128, |acc, d| (acc << 4) | u128::from(*d));
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    let octets = rest.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = octets.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match parts[..] {
        [d, c, b, a] => Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))),
        _ => None,
    }
}

impl<'a> View<'a> {
    /// The view of sandbox `asker` (its id). `live` says whether a sandbox is up.
    /// `index` must be that of `state`.
    pub fn new(state: &'a State, index: &'a Index, asker: &str, live: &'a dyn Fn(&Sandbox) -> bool) -> Self {
        let networks = Self::asker_networks(state, index, asker).filter(|n| !n.predefined).collect();
        View { state, index, networks, live }
    }

    /// Every network the asker is attached to.
    fn asker_networks(state: &'a State, index: &'a Index, asker: &str) -> impl Iterator<Item = &'a Network> {
        index
            .eps_of_sandbox
            .get(asker)
            .into_iter()
            .flatten()
            .filter_map(move |&e| index.networks.get(&state.endpoints[e].network_id))
            .map(move |&n| &state.networks[n])
    }

    /// Endpoints of network `net_id`.
    fn endpoints_of(&self, net_id: &str) -> impl Iterator<Item = &'a Endpoint> {
        let state = self.state;
        self.index.eps_of_net.get(net_id).into_iter().flatten().map(move |&e| &state.endpoints[e])
    }

    /// Sandbox `id` of the snapshot, found through the index.
    pub fn sandbox(&self, id: &str) -> Option<&'a Sandbox> {
        self.index.sandboxes.get(id).map(|&s| &self.state.sandboxes[s])
    }

    /// Whether names the view does not know may be sent upstream: the asker
    /// has a network that reaches outside (not `--internal`).
    pub fn may_forward(&self, asker: &str) -> bool {
        Self::asker_networks(self.state, self.index, asker).any(|n| !n.internal)
    }

    /// Whether `ip` lies in the subnet of one of the asker's networks
    /// (reverse names there are ours to answer, never forwarded).
    pub fn in_own_subnet(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| match ip {
            IpAddr::V4(ip) => n.ipam.as_ref().is_some_and(|i| i.subnet.contains(ip)),
            IpAddr::V6(ip) => n.ipam6.as_ref().is_some_and(|i| i.subnet.contains(ip)),
        })
    }

    /// Endpoints on the asker's networks that `matches`, whose sandbox is
    /// live, with both (liveness is asked of the matches only).
    fn neighbours(
        &self,
        matches: impl Fn(&Sandbox, &Endpoint) -> bool,
    ) -> Vec<(&'a Network, &'a Sandbox, &'a Endpoint)> {
        let mut out = Vec::new();
        for net in &self.networks {
            for ep in self.endpoints_of(&net.id) {
                if let Some(sb) = self.sandbox(&ep.sandbox_id)
                    && matches(sb, ep)
                    && (self.live)(sb)
                {
                    out.push((*net, sb, ep));
                }
            }
        }
        out
    }

    /// [`Self::neighbours`] named `name` (normalized): looked up by name,
    /// hostname and alias; a sandbox ID prefix (12 hex digits or more) is
    /// searched for on the asker's networks.
    fn named(&self, name: &str) -> Vec<(&'a Network, &'a Sandbox, &'a Endpoint)> {
        if name.len() >= 12 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return self.neighbours(|sb, ep| names_it(name, sb, ep));
        }
        let mut out = Vec::new();
        for net in &self.networks {
            let found = self.index.names.get(&net.id).and_then(|names| names.get(name));
            for &e in found.into_iter().flatten() {
                let ep = &self.state.endpoints[e];
                if let Some(sb) = self.sandbox(&ep.sandbox_id)
                    && (self.live)(sb)
                {
                    out.push((*net, sb, ep));
                }
            }
        }
        out
    }

    /// IPv6 addresses answering `name` (normalized): those of the live
    /// sandboxes it names on the asker's dual-stack networks, in a stable
    /// order (empty for a name with none: AAAA then has no data).
    pub fn lookup6(&self, name: &str) -> Vec<Ipv6Addr> {
        let mut addrs: Vec<Ipv6Addr> = self.named(name).into_iter().filter_map(|(_, _, ep)| ep.ip6).collect();
        addrs.extend(self.remote(|r| remote_names_it(name, r)).into_iter().filter_map(|(_, r)| r.ip6));
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Addresses answering `name` (normalized), in a stable order, or Unknown.
    pub fn lookup(&self, name: &str) -> Found {
        let mut addrs: Vec<Ipv4Addr> = Vec::new();
        let mut known = false;
        for (_, _, ep) in self.named(name) {
            known = true;
            if !addrs.contains(&ep.ip) {
                addrs.push(ep.ip);
            }
        }
        // Sandboxes of the asker's overlay networks on other hosts (live:
        // their host's lease holds their records).
        for r in self.remote(|r| remote_names_it(name, r)) {
            known = true;
            if !addrs.contains(&r.1.ip) {
                addrs.push(r.1.ip);
            }
        }
        if !known {
            return Found::Unknown;
        }
        addrs.sort();
        Found::Addrs(addrs)
    }

    /// The virtual IP answering alias `name` on one of the asker's `lb=vip`
    /// networks, while a live sandbox carries that alias there.
    /// Its IPv6 VIP too on a dual-stack network.
    pub fn vip(&self, name: &str) -> Option<(Ipv4Addr, Option<Ipv6Addr>)> {
        self.networks.iter().filter(|n| n.balances_aliases()).find_map(|net| {
            let (alias, vip) = net.vips.iter().find(|(a, _)| a.eq_ignore_ascii_case(name))?;
            let local = self
                .endpoints_of(&net.id)
                .filter(|ep| ep.aliases.contains(alias))
                .any(|ep| self.sandbox(&ep.sandbox_id).is_some_and(|sb| (self.live)(sb)));
            let remote = self.state.remote_of_network(&net.id).any(|r| r.live && r.aliases.contains(alias));
            (local || remote).then(|| (*vip, net.vips6.get(alias).copied()))
        })
    }

    /// `NAME.NETWORK` of the live sandbox holding `ip` on a shared network.
    pub fn reverse(&self, ip: IpAddr) -> Found {
        let holds = |ep: &Endpoint| match ip {
            IpAddr::V4(ip) => ep.ip == ip,
            IpAddr::V6(ip) => ep.ip6 == Some(ip),
        };
        if let Some((net, sb, _)) = self.neighbours(|_, ep| holds(ep)).first() {
            return Found::Ptr(format!("{}.{}", sb.name, net.name));
        }
        self.remote(|r| IpAddr::V4(r.ip) == ip || r.ip6.map(IpAddr::V6) == Some(ip))
            .first()
            .map(|(net, r)| Found::Ptr(format!("{}.{}", r.name, net.name)))
            .unwrap_or(Found::Unknown)
    }

    /// Other hosts' endpoints on the asker's (overlay) networks that `matches`.
    fn remote(&self, matches: impl Fn(&RemoteEndpoint) -> bool) -> Vec<(&'a Network, &'a RemoteEndpoint)> {
        self.networks
            .iter()
            .flat_map(|net| self.state.remote_of_network(&net.id).map(move |r| (*net, r)))
            .filter(|(_, r)| r.live && matches(r))
            .collect()
    }
}

/// The A answers of the names on each user-defined network, as a sandbox
/// attached to that network alone gets them from [`View`] (virtual IPs
/// first, then names, hostnames and aliases of live sandboxes here and on
/// other hosts): what the kernel answers from (`datapath::dns::DnsNames`).
/// Left out, for the daemon to answer: names that would be read as ID
/// prefixes (12 or more hex digits), and names with no address.
pub fn kernel_names(
    state: &State,
    index: &Index,
    live: &dyn Fn(&Sandbox) -> bool,
) -> Vec<(u32, String, Vec<Ipv4Addr>)> {
    let mut out = Vec::new();
    for net in state.networks.iter().filter(|n| !n.predefined) {
        let view = View { state, index, networks: vec![net], live };
        let mut names: std::collections::BTreeSet<String> =
            index.names.get(&net.id).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for r in state.remote_of_network(&net.id) {
            names.extend(
                [&r.name, &r.hostname].into_iter().chain(r.aliases.iter()).map(|n| n.to_ascii_lowercase()),
            );
        }
        names.extend(net.vips.keys().map(|a| a.to_ascii_lowercase()));
        for name in names {
            if name.is_empty() || (name.len() >= 12 && name.bytes().all(|b| b.is_ascii_hexdigit())) {
                continue;
            }
            let addrs = match view.vip(&name) {
                Some((vip, _)) => vec![vip],
                None => match view.lookup(&name) {
                    Found::Addrs(a) => a,
                    _ => continue,
                },
            };
            if !addrs.is_empty() {
                out.push((net.num, name, addrs));
            }
        }
    }
    out
}

/// Whether `name` (normalized) names another host's endpoint `r`: its
/// sandbox's name, hostname, ID (12 characters or more) or one of its aliases.
fn remote_names_it(name: &str, r: &RemoteEndpoint) -> bool {
    r.name.eq_ignore_ascii_case(name)
        || r.hostname.eq_ignore_ascii_case(name)
        || (name.len() >= 12 && name.len() <= r.sandbox_id.len() && r.sandbox_id.starts_with(name))
        || r.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Whether `name` (normalized) names endpoint `ep` of sandbox `sb`: its
/// name, hostname, ID (12 characters or more) or one of its aliases.
fn names_it(name: &str, sb: &Sandbox, ep: &Endpoint) -> bool {
    sb.name.eq_ignore_ascii_case(name)
        || sb.hostname.eq_ignore_ascii_case(name)
        || (name.len() >= 12 && name.len() <= sb.id.len() && sb.id.starts_with(name))
        || ep.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// Rotates `v` left by `n` (round robin over successive answers).
pub fn rotate<T>(mut v: Vec<T>, n: usize) -> Vec<T> {
    if !v.is_empty() {
        let k = n % v.len();
        v.rotate_left(k);
    }
    v
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::model::{Ipam, NetworkMode, SandboxState};

    fn net(id: &str, name: &str, internal: bool, predefined: bool) -> Network {
        Network {
            id: id.repeat(64 / id.len()),
            name: name.into(),
            driver: crate::domain::options::Driver::Bridge,
            created: String::new(),
            num: 1,
            ipam6: None,
            ipam: Some(Ipam {
                subnet: "10.1.0.0/24".parse().expect("valid literal"),
                ip_range: None,
                gateway: "10.1.0.1".parse().expect("valid literal"),
                aux: BTreeMap::new(),
            }),
            internal,
            options: BTreeMap::new(),
            labels: BTreeMap::new(),
            device: None,
            predefined,
            vips: BTreeMap::new(),
            vips6: BTreeMap::new(),
            owner: None,
        }
    }

    fn sandbox(id: char, name: &str, cmd: &[&str], state: SandboxState) -> Sandbox {
        Sandbox {
            id: id.to_string().repeat(64),
            name: name.into(),
            hostname: format!("host-{name}"),
            created: String::new(),
            mode: NetworkMode::Networks,
            netns: String::new(),
            owns_netns: true,
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            state,
            pid: None,
            pid_start: None,
            ports: vec![],
            expose: vec![],
            publish_all: false,
            auto_remove: false,
            bindings: vec![],
            env: vec![],
            user: None,
            owner: None,
            runtime_id: None,
            log: None,
            ..Default::default()
        }
    }

    fn ep(sb: &Sandbox, net: &Network, ip: &str, aliases: &[&str]) -> Endpoint {
        Endpoint {
            id: format!("{}{}", sb.id, net.id),
            network_id: net.id.clone(),
            sandbox_id: sb.id.clone(),
            ifname: "eth0".into(),
            host_ifname: None,
            ip: ip.parse().expect("valid literal"),
            ip6: None,
            mac: [0; 6],
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// a, b, c on `mynet` (b and c alias `forever`, c exited), d on `other`, e on the default bridge.
    fn state() -> State {
        let mynet = net("a", "mynet", false, false);
        let other = net("b", "other", false, false);
        let bridge = net("c", "bridge", false, true);
        let a = sandbox('1', "a", &[], SandboxState::Created);
        let b = sandbox('2', "b", &["sleep"], SandboxState::Running);
        let c = sandbox('3', "c", &["sleep"], SandboxState::Exited(0));
        let d = sandbox('4', "d", &[], SandboxState::Created);
        let e = sandbox('5', "e", &[], SandboxState::Created);
        let endpoints = vec![
            ep(&a, &mynet, "10.1.0.2", &[]),
            ep(&b, &mynet, "10.1.0.3", &["forever"]),
            ep(&c, &mynet, "10.1.0.4", &["forever"]),
            ep(&d, &other, "10.2.0.2", &[]),
            ep(&a, &bridge, "172.17.0.2", &[]),
            ep(&e, &bridge, "172.17.0.3", &[]),
        ];
        State {
            networks: vec![mynet, other, bridge],
            sandboxes: vec![a, b, c, d, e],
            endpoints,
            remote: vec![],
            overlay_skip: 0,
            ..State::default()
        }
    }

    fn live(sb: &Sandbox) -> bool {
        crate::domain::model::live_in(sb, &sb.state)
    }

    #[test]
    fn ipv6_addresses_answer_aaaa_and_ip6_arpa_names() {
        let mut st = state();
        let b6: Ipv6Addr = "fd00:1::3".parse().expect("valid literal");
        let c6: Ipv6Addr = "fd00:1::4".parse().expect("valid literal");
        st.endpoints[1].ip6 = Some(b6);
        st.endpoints[2].ip6 = Some(c6);
        st.networks[0].ipam6 = crate::domain::ipam6::plan6(
            &crate::domain::ipam6::Ipam6Request { subnet: Some("fd00:1::/64".into()), ..Default::default() },
            &[],
            crate::domain::ipam6::ula_48([0; 5]),
        )
        .ok();
        let a = "1".repeat(64);
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &a, &live);
        assert_eq!(v.lookup6("b"), vec![b6]);
        assert_eq!(v.lookup6("forever"), vec![b6], "the exited sandbox is not answered");
        assert!(v.lookup6("a").is_empty(), "a name without IPv6: no data");
        let name = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa.";
        assert_eq!(parse_reverse(name), Some(IpAddr::V6(b6)));
        assert_eq!(parse_reverse("3.0.ip6.arpa."), None, "32 nibbles or nothing");
        assert_eq!(
            parse_reverse("x3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.0.0.d.f.ip6.arpa"),
            None
        );
        assert_eq!(v.reverse(IpAddr::V6(b6)), Found::Ptr("b.mynet".into()));
        assert!(v.in_own_subnet(IpAddr::V6(c6)));
        assert!(!v.in_own_subnet("fd00:2::1".parse().expect("valid literal")));
    }

    #[test]
    fn names_hostnames_aliases_and_short_ids_resolve_on_shared_networks() {
        let st = state();
        let a = "1".repeat(64);
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &a, &live);
        let b_ip = vec!["10.1.0.3".parse().expect("valid literal")];
        assert_eq!(v.lookup("b"), Found::Addrs(b_ip.clone()));
        assert_eq!(v.lookup("host-b"), Found::Addrs(b_ip.clone()));
        assert_eq!(v.lookup(&"2".repeat(12)), Found::Addrs(b_ip.clone()));
        assert_eq!(v.lookup("forever"), Found::Addrs(b_ip), "the exited sandbox is not answered");
        assert_eq!(v.lookup("c"), Found::Unknown, "exited");
        assert_eq!(v.lookup("d"), Found::Unknown, "another network");
        assert_eq!(v.lookup("e"), Found::Unknown, "the default bridge has no names");
        assert_eq!(v.lookup("2"), Found::Unknown, "IDs need 12 characters");
    }

    #[test]
    fn reverse_names_are_name_dot_network() {
        let st = state();
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &"1".repeat(64), &live);
        assert_eq!(parse_reverse("3.0.1.10.in-addr.arpa."), Some("10.1.0.3".parse().expect("valid literal")));
        assert_eq!(parse_reverse("3.0.1.in-addr.arpa."), None);
        assert_eq!(v.reverse("10.1.0.3".parse().expect("valid literal")), Found::Ptr("b.mynet".into()));
        assert_eq!(v.reverse("10.2.0.2".parse().expect("valid literal")), Found::Unknown);
    }

    #[test]
    fn sandboxes_of_other_hosts_on_a_shared_overlay_network_are_answered() {
        let mut st = state();
        let remote = |net: &str, name: &str, ip: &str| RemoteEndpoint {
            node: "n2".into(),
            underlay: "192.0.2.12".parse().expect("valid literal"),
            network_id: net.into(),
            sandbox_id: name.repeat(64).chars().take(64).collect(),
            name: name.into(),
            hostname: format!("host-{name}"),
            aliases: vec!["forever".into()],
            ip: ip.parse().expect("valid literal"),
            ip6: None,
            mac: [2, 0x42, 0, 0, 0, 1],
            live: true,
        };
        let (mynet, other) = (st.networks[0].id.clone(), st.networks[1].id.clone());
        st.remote = vec![remote(&mynet, "r", "10.1.0.9"), remote(&other, "s", "10.2.0.9")];
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &"1".repeat(64), &live);
        assert_eq!(v.lookup("r"), Found::Addrs(vec!["10.1.0.9".parse().expect("valid literal")]));
        assert_eq!(v.lookup("host-r"), Found::Addrs(vec!["10.1.0.9".parse().expect("valid literal")]));
        // An alias spans the hosts: the local and the remote holder.
        assert_eq!(
            v.lookup("forever"),
            Found::Addrs(vec![
                "10.1.0.3".parse().expect("valid literal"),
                "10.1.0.9".parse().expect("valid literal")
            ])
        );
        assert_eq!(v.lookup("s"), Found::Unknown, "not a network the asker is on");
        assert_eq!(v.reverse("10.1.0.9".parse().expect("valid literal")), Found::Ptr("r.mynet".into()));
        // A dual-stack overlay sandbox: AAAA and IPv6 PTR answered too.
        assert_eq!(v.lookup6("r"), Vec::<std::net::Ipv6Addr>::new());
        st.remote[0].ip6 = Some("fd00:1::9".parse().expect("valid literal"));
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &"1".repeat(64), &live);
        assert_eq!(v.lookup6("r"), ["fd00:1::9".parse::<std::net::Ipv6Addr>().expect("valid literal")]);
        assert_eq!(v.reverse("fd00:1::9".parse().expect("valid literal")), Found::Ptr("r.mynet".into()));
        // Stopped on its host: no answer here either.
        st.remote[0].live = false;
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &"1".repeat(64), &live);
        assert_eq!(v.lookup("r"), Found::Unknown);
    }

    #[test]
    fn only_internal_networks_do_not_forward() {
        let mut st = state();
        let a = "1".repeat(64);
        assert!(View::new(&st, &Index::new(&st), &a, &live).may_forward(&a));
        for n in &mut st.networks {
            n.internal = true;
        }
        assert!(!View::new(&st, &Index::new(&st), &a, &live).may_forward(&a));
    }

    #[test]
    fn balanced_aliases_answer_their_vip_while_a_backend_runs() {
        let mut st = state();
        let mynet = &mut st.networks[0];
        mynet.options.insert(crate::domain::options::key::LB.into(), "vip".into());
        mynet.vips.insert("forever".into(), "10.1.0.200".parse().expect("valid literal"));
        let a = "1".repeat(64);
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &a, &live);
        assert_eq!(v.vip("forever"), Some(("10.1.0.200".parse().expect("valid literal"), None)));
        assert_eq!(v.vip("b"), None, "names that are not aliases keep their address");
        // b (the running one) stops: only the exited c carries the alias.
        st.sandboxes[1].state = SandboxState::Exited(0);
        let idx = Index::new(&st);
        let v = View::new(&st, &idx, &a, &live);
        assert_eq!(v.vip("forever"), None);
    }

    #[test]
    fn rotation_walks_the_list() {
        assert_eq!(rotate(vec![1, 2, 3], 0), vec![1, 2, 3]);
        assert_eq!(rotate(vec![1, 2, 3], 4), vec![2, 3, 1]);
        assert_eq!(rotate(Vec::<u8>::new(), 5), Vec::<u8>::new());
    }

    #[test]
    fn the_kernel_table_holds_what_a_sandbox_on_each_network_alone_is_answered() {
        let mut st = state();
        st.networks[1].num = 2;
        // A name that reads as an ID prefix stays with the daemon.
        st.sandboxes[0].hostname = "abcdef012345".into();
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("valid literal") };
        let idx = Index::new(&st);
        let got = kernel_names(&st, &idx, &live);
        let find = |got: &[(u32, String, Vec<Ipv4Addr>)], net: u32, name: &str| {
            got.iter().find(|(n, k, _)| *n == net && k == name).map(|(_, _, a)| a.clone())
        };
        assert_eq!(find(&got, 1, "a"), Some(vec![ip("10.1.0.2")]));
        assert_eq!(find(&got, 1, "host-b"), Some(vec![ip("10.1.0.3")]));
        assert_eq!(find(&got, 1, "forever"), Some(vec![ip("10.1.0.3")]), "not the exited sandbox's address");
        assert_eq!(find(&got, 1, "c"), None, "an exited sandbox is not answered");
        assert_eq!(find(&got, 2, "d"), Some(vec![ip("10.2.0.2")]));
        assert_eq!(find(&got, 1, "d"), None, "names stay on their network");
        assert!(got.iter().all(|(_, k, _)| k != "abcdef012345"), "ID-like names are the daemon's");
        assert!(got.iter().all(|(_, k, _)| k != "e"), "the default bridge has no names");
        // Each entry is what the daemon answers a sandbox on that network.
        let asker = "1".repeat(64);
        let v = View::new(&st, &idx, &asker, &live);
        for (_, name, addrs) in got.iter().filter(|(n, _, _)| *n == 1) {
            assert_eq!(v.lookup(name), Found::Addrs(addrs.clone()), "{name}");
        }
        // On a balanced network an alias is its virtual IP.
        st.networks[0].options.insert(crate::domain::options::key::LB.to_string(), "vip".into());
        st.networks[0].vips.insert("forever".into(), ip("10.1.0.200"));
        let idx = Index::new(&st);
        let got = kernel_names(&st, &idx, &live);
        assert_eq!(find(&got, 1, "forever"), Some(vec![ip("10.1.0.200")]));
        assert_eq!(find(&got, 1, "b"), Some(vec![ip("10.1.0.3")]), "names stay the sandboxes'");
    }
}
