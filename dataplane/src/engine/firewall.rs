//! `dataplane firewall`: who may reach published ports from outside.
//! Rules are planned and checked here, kept in the store and enforced in
//! BPF on the uplink ([`crate::datapath::firewall`]); a new rule is in the
//! datapath before its record commits (undone if the commit fails), a
//! removed one leaves the store first (reconcile finishes a removal the
//! datapath refused).

use std::collections::HashMap;

use ipnetwork::IpNetwork;

use super::*;
use crate::datapath::firewall::{FwEntry, entries};
use crate::domain::model::{FirewallAction, FirewallRule};
use crate::error::{Error, Result};

/// `firewall allow|deny` as asked.
#[derive(Clone, Debug)]
pub struct FirewallAdd {
    pub action: FirewallAction,
    /// CIDR, or a bare address (one host).
    pub from: String,
    /// `P` or `P/tcp` / `P/udp`.
    pub port: Option<String>,
    /// A network's name or ID.
    pub network: Option<String>,
}

/// The client prefix: a CIDR without host bits, or one address.
fn parse_from(s: &str) -> Result<IpNetwork> {
    let net: IpNetwork = s.parse().map_err(|_| {
        Error::invalid("from", s, "not an address or address prefix (e.g. 192.0.2.0/24, 2001:db8::/32)")
    })?;
    if net.network() != net.ip() {
        let fixed = IpNetwork::new(net.network(), net.prefix()).map(|n| n.to_string()).unwrap_or_default();
        return Err(Error::invalid("from", s, format!("has host bits set: did you mean {fixed}?")));
    }
    Ok(net)
}

/// `P[/proto]`: the port (1-65535) and the protocol, if named.
fn parse_port(s: &str) -> Result<(u16, Option<String>)> {
    let (p, proto) = match s.split_once('/') {
        Some((p, proto)) => (p, Some(proto.to_ascii_lowercase())),
        None => (s, None),
    };
    let port: u16 = p
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::invalid("port", s, "not a port number (1-65535)"))?;
    if let Some(proto) = &proto
        && proto != "tcp"
        && proto != "udp"
    {
        return Err(Error::invalid("port", s, "the protocol must be tcp or udp"));
    }
    Ok((port, proto))
}

fn proto_number(proto: Option<&str>) -> Option<u8> {
    match proto {
        Some("tcp") => Some(dataplane_common::PROTO_TCP),
        Some("udp") => Some(dataplane_common::PROTO_UDP),
        _ => None,
    }
}

/// The datapath entries of `rule` (the network's number from `state`).
fn rule_entries(state: &State, rule: &FirewallRule) -> Vec<FwEntry> {
    let net = match &rule.network {
        Some(id) => match state.networks.iter().find(|n| &n.id == id) {
            Some(n) => n.num,
            // Its network is gone (cannot happen: removal is refused); never "any".
            None => return Vec::new(),
        },
        None => 0,
    };
    entries(rule.from, net, rule.port, proto_number(rule.proto.as_deref()))
}

/// What the datapath should hold for `rules`.
fn wanted(state: &State, rules: &[FirewallRule]) -> HashMap<FwEntry, dataplane_common::FwRule> {
    let mut want = HashMap::new();
    for r in rules {
        let action = match r.action {
            FirewallAction::Allow => dataplane_common::FW_ALLOW,
            FirewallAction::Deny => dataplane_common::FW_DENY,
        };
        for e in rule_entries(state, r) {
            want.insert(e, dataplane_common::FwRule { action, id: r.id });
        }
    }
    want
}

/// What a rule matches, said as `ls` does.
pub fn describe(state: &State, r: &FirewallRule) -> String {
    let port = match (r.port, &r.proto) {
        (Some(p), Some(proto)) => format!("port {p}/{proto}"),
        (Some(p), None) => format!("port {p} (tcp and udp)"),
        (None, _) => "every published port".into(),
    };
    let net = match &r.network {
        Some(id) => {
            format!(
                " of network {}",
                state.networks.iter().find(|n| &n.id == id).map_or(id.as_str(), |n| &n.name)
            )
        }
        None => String::new(),
    };
    format!("from {} to {port}{net}", r.from)
}

/// Plans a new rule against `state`: checked, numbered, no side effects.
pub(super) fn plan_rule(state: &State, req: &FirewallAdd, created: String) -> Result<FirewallRule> {
    let action = req.action;
    let from = parse_from(&req.from)?;
    let (port, proto) = match &req.port {
        Some(p) => {
            let (port, proto) = parse_port(p)?;
            (Some(port), proto)
        }
        None => (None, None),
    };
    let network = match &req.network {
        Some(n) => {
            let net = state.require_network(n)?;
            if !net.is_bridge() {
                return Err(Error::invalid(
                    "network",
                    n,
                    format!(
                        "driver {} publishes no ports: rules name bridge and overlay networks",
                        net.driver
                    ),
                ));
            }
            Some(net.id.clone())
        }
        None => None,
    };
    let id = state.firewall.iter().map(|r| r.id).max().unwrap_or(0) + 1;
    let rule = FirewallRule { id, action, from, port, proto, network, created };
    // No two rules on one entry: which would decide is not the user's to guess.
    let taken = wanted(state, &state.firewall);
    if let Some(clash) = rule_entries(state, &rule).iter().find_map(|e| taken.get(e)) {
        let other = state.firewall.iter().find(|r| r.id == clash.id);
        let what = other.map(|o| describe(state, o)).unwrap_or_default();
        return Err(Error::FirewallRuleExists { id: clash.id, what });
    }
    Ok(rule)
}

impl Engine {
    /// `firewall allow|deny`: the rule, in force when this returns, and
    /// what it matches in words.
    pub async fn firewall_add(&self, req: FirewallAdd) -> Result<(FirewallRule, String)> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        let rule = plan_rule(&state, &req, now())?;
        let mut rules = state.firewall.clone();
        rules.push(rule.clone());
        self.dp.firewall.sync(&wanted(&state, &rules))?;
        let committed = self.store.begin().and_then(|tx| {
            tx.put_firewall_rule(&rule)?;
            self.store.commit(tx)
        });
        if let Err(e) = committed {
            if let Err(undo) = self.dp.firewall.sync(&wanted(&state, &state.firewall)) {
                tracing::warn!(rule = rule.id, error = %undo, "cannot take the uncommitted firewall rule out of the datapath");
            }
            return Err(e);
        }
        let what = describe(&state, &rule);
        tracing::info!(rule = rule.id, action = %rule.action, %what, "firewall rule added");
        Ok((rule, what))
    }

    /// `firewall rm ID`.
    pub async fn firewall_rm(&self, id: u32) -> Result<()> {
        let _g = self.lock.lock().await;
        let state = self.store.state()?;
        if !state.firewall.iter().any(|r| r.id == id) {
            return Err(Error::FirewallRuleNotFound(id));
        }
        let tx = self.store.begin()?;
        tx.del_firewall_rule(id)?;
        self.store.commit(tx)?;
        let rest: Vec<FirewallRule> = state.firewall.iter().filter(|r| r.id != id).cloned().collect();
        self.dp.firewall.sync(&wanted(&state, &rest))?;
        tracing::info!(rule = id, "firewall rule removed");
        Ok(())
    }

    /// `firewall ls`: every rule, by ID, with what it matches said plainly.
    pub fn firewall_rules(&self) -> Result<Vec<(FirewallRule, String)>> {
        let state = self.store.state()?;
        Ok(state.firewall.iter().map(|r| (r.clone(), describe(&state, r))).collect())
    }

    /// Makes the datapath hold the store's rules (at start); writes only what differs.
    pub(super) fn sync_firewall(&self, state: &State) -> Result<(usize, usize)> {
        self.dp.firewall.sync(&wanted(state, &state.firewall))
    }

    /// Refuses to remove a network a firewall rule names.
    pub(super) fn check_firewall_names(state: &State, net: &crate::domain::model::Network) -> Result<()> {
        let ids: Vec<String> = state
            .firewall
            .iter()
            .filter(|r| r.network.as_deref() == Some(&net.id))
            .map(|r| r.id.to_string())
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        Err(Error::NetworkInFirewall { name: net.name.clone(), ids: ids.join(" ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::state_with;

    fn add(action: FirewallAction, from: &str, port: Option<&str>, network: Option<&str>) -> FirewallAdd {
        FirewallAdd {
            action,
            from: from.into(),
            port: port.map(str::to_string),
            network: network.map(str::to_string),
        }
    }

    #[test]
    fn rules_are_checked_numbered_and_never_overlap() {
        let mut st = state_with(&[]);
        st.networks.push(crate::domain::model::Network {
            name: "host".into(),
            id: "h".repeat(64),
            driver: crate::domain::model::Driver::Host,
            num: 2,
            ..crate::engine::fixtures::net(false)
        });
        let r = plan_rule(&st, &add(FirewallAction::Deny, "0.0.0.0/0", Some("8080"), None), "t".into())
            .expect("rule");
        assert_eq!((r.id, r.port, r.proto.as_deref()), (1, Some(8080), None));
        // A port without a protocol: TCP and UDP.
        assert_eq!(rule_entries(&st, &r).len(), 2);
        st.firewall.push(r);
        let r = plan_rule(&st, &add(FirewallAction::Allow, "192.0.2.10", Some("8080/tcp"), None), "t".into())
            .expect("one host");
        assert_eq!((r.id, r.from.to_string().as_str()), (2, "192.0.2.10/32"));
        st.firewall.push(r);
        // The same entry twice is refused, naming the rule that has it.
        let e = plan_rule(&st, &add(FirewallAction::Allow, "0.0.0.0/0", Some("8080/udp"), None), "t".into())
            .expect_err("clash");
        assert!(e.to_string().contains("firewall rule 1 already matches from 0.0.0.0/0 to port 8080"), "{e}");
        for (from, port, network, says) in [
            ("10.0.0.1/33", None, None, "not an address"),
            ("10.0.0.1/8", None, None, "did you mean 10.0.0.0/8?"),
            ("example.com", None, None, "not an address"),
            ("10.0.0.0/8", Some("70000"), None, "not a port number"),
            ("10.0.0.0/8", Some("0"), None, "not a port number"),
            ("10.0.0.0/8", Some("80/sctp"), None, "tcp or udp"),
            ("10.0.0.0/8", None, Some("nosuch"), "network nosuch not found"),
            ("10.0.0.0/8", None, Some("host"), "publishes no ports"),
        ] {
            let e =
                plan_rule(&st, &add(FirewallAction::Deny, from, port, network), "t".into()).expect_err(from);
            assert!(e.to_string().contains(says), "{from} {port:?} {network:?}: {e}");
        }
        let r = plan_rule(&st, &add(FirewallAction::Deny, "2001:db8::/32", None, Some("web")), "t".into())
            .expect("IPv6 and a network");
        assert_eq!(rule_entries(&st, &r)[0].net, 1);
    }
}
