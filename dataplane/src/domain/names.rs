//! Ids, interface names and name validation, with Docker's conventions.

use rand::RngExt;

/// A new 64-hex-digit id.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

/// Docker's rule for network and container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
/// A network alias: a DNS name (labels of letters, digits, `-` and `_`).
pub fn valid_alias(alias: &str) -> bool {
    !alias.is_empty()
        && alias.len() <= 253
        && alias.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        })
}

/// Longest sandbox or network name.
pub const MAX_NAME: usize = 128;

/// Checks a sandbox or network name, saying what is wrong with it.
pub fn check_name(name: &str) -> crate::error::Result<()> {
    use crate::error::Error;
    if name.len() > MAX_NAME {
        let shown: String = name.chars().take(24).collect();
        return Err(Error::NameTooLong { shown, len: name.chars().count(), max: MAX_NAME });
    }
    if !valid_name(name) {
        return Err(Error::InvalidName { name: name.to_string() });
    }
    Ok(())
}

pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() <= MAX_NAME && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Linux interface names: 1..=15 bytes, no '/', ':' or whitespace.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Host-side veth name: `veth` + 7 hex digits.
pub fn host_veth_name() -> String {
    let bytes: [u8; 4] = rand::rng().random();
    format!("veth{}", &hex::encode(bytes)[..7])
}

/// Prefix of the sandbox side's temporary name (ours by name alone).
pub const TEMP_PEER_PREFIX: &str = "dpp";

/// Temporary name of the sandbox side until it is moved and renamed.
pub fn peer_veth_name(host: &str) -> String {
    format!("{TEMP_PEER_PREFIX}{}", &host[4..])
}

/// Prefix of the container side of a runtime's endpoint (Docker's
/// `SrcName`): it waits in the host namespace until the runtime moves it.
pub const RUNTIME_PEER_PREFIX: &str = "dpd";

/// The container side's name for host veth `host` of a runtime endpoint.
pub fn runtime_peer_name(host: &str) -> String {
    format!("{RUNTIME_PEER_PREFIX}{}", &host[4..])
}

/// Bridge name for a user network: `br-` + 12 hex digits of its id.
pub fn bridge_name(network_id: &str) -> String {
    format!("br-{}", &network_id[..12])
}

/// The local bridge of overlay network `network_id` on each host.
pub fn overlay_bridge_name(network_id: &str) -> String {
    format!("ov-{}", &network_id[..12])
}

/// Macvlan sub-interface name before it moves into the sandbox.
pub fn macvlan_name() -> String {
    let bytes: [u8; 4] = rand::rng().random();
    format!("mv{}", &hex::encode(bytes)[..7])
}

/// MAC address Docker gives an IPv4 endpoint: 02:42 + the address.
pub fn mac_for_ip(ip: std::net::Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `aa:bb:cc:dd:ee:ff` → bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Interface name prefixes the daemon owns; reconcile removes unknown ones.
pub const OWNED_PREFIXES: [&str; 3] = ["br-", "ov-", "veth"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert!(valid_name("mybridge"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name("-bad"));
        assert!(!valid_name("has space"));
        assert!(!valid_name(""));
    }

    #[test]
    fn generated_names_fit_ifnamsiz() {
        let v = host_veth_name();
        assert_eq!(v.len(), 11);
        assert!(valid_ifname(&v));
        assert!(valid_ifname(&peer_veth_name(&v)));
        assert_eq!(bridge_name(&new_id()).len(), 15);
        assert_eq!(
            format_mac(&mac_for_ip("172.17.0.2".parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST))),
            "02:42:ac:11:00:02"
        );
    }
}
