//! What a sandbox's /etc/resolv.conf and /etc/hosts say, from `run`'s
//! `--dns`, `--dns-search`, `--dns-option`, `--add-host` and `--link`
//! (parsed here once, written by the engine at each start).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `--add-host NAME:IP` (IP may be `host-gateway`: the default bridge's gateway).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub name: String,
    pub ip: IpAddr,
}

/// Parses `NAME:IP` (Docker also takes `NAME=IP`); `host-gateway` is
/// replaced by `gateway` (None: there is no default bridge to name).
pub fn parse_extra_host(s: &str, gateway: Option<IpAddr>) -> Result<ExtraHost> {
    let bad = |why: &str| Error::invalid("--add-host", s, why);
    let (name, ip) = s.split_once([':', '=']).ok_or_else(|| bad("use NAME:IP"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Err(bad("the name must be letters, digits, '-', '.', '_'"));
    }
    let ip = match ip.trim_start_matches('[').trim_end_matches(']') {
        "host-gateway" => {
            gateway.ok_or_else(|| bad("host-gateway needs the default bridge, which has no gateway here"))?
        }
        other => other.parse::<IpAddr>().map_err(|_| bad("not an IP address"))?,
    };
    Ok(ExtraHost { name: name.to_string(), ip })
}

/// Checks `--dns-search` and `--dns-option` values.
pub fn check_search(domains: &[String]) -> Result<()> {
    for d in domains {
        if d != "." && (d.is_empty() || d.len() > 253 || d.chars().any(|c| c.is_whitespace())) {
            return Err(Error::invalid("--dns-search", d, "not a domain name"));
        }
    }
    Ok(())
}

pub fn check_options(options: &[String]) -> Result<()> {
    for o in options {
        if o.is_empty() || o.chars().any(char::is_whitespace) {
            return Err(Error::invalid("--dns-option", o, "one option without spaces, such as ndots:2"));
        }
    }
    Ok(())
}

/// A resolv.conf: `nameservers`, the search domains (`search`, or those of
/// `base` when none are given; `.` alone means none), the options (those
/// given after `base_options`).
pub fn resolv_conf(
    header: &str,
    nameservers: &[IpAddr],
    base: &str,
    search: &[String],
    base_options: &[&str],
    options: &[String],
) -> String {
    let mut out = String::from(header);
    let search: Vec<String> = if search.is_empty() {
        search_domains(base)
    } else {
        search.iter().filter(|d| d.as_str() != ".").cloned().collect()
    };
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    let opts: Vec<String> =
        base_options.iter().map(|o| o.to_string()).chain(options.iter().cloned()).collect();
    if !opts.is_empty() {
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// Search domains of a resolv.conf (kept in the sandboxes' resolv.conf).
pub fn search_domains(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("search").or_else(|| l.trim().strip_prefix("domain")))
        .flat_map(|rest| rest.split_whitespace().map(String::from).collect::<Vec<_>>())
        .collect()
}

/// The nameservers of a resolv.conf.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_parse_like_dockers() {
        let gw: IpAddr = "172.17.0.1".parse().expect("test value");
        assert_eq!(
            parse_extra_host("db:10.0.0.5", None).expect("test value"),
            ExtraHost { name: "db".into(), ip: "10.0.0.5".parse().expect("test value") }
        );
        assert_eq!(
            parse_extra_host("v6:fd00::1", None).expect("test value").ip,
            "fd00::1".parse::<IpAddr>().expect("test value")
        );
        assert_eq!(
            parse_extra_host("v6=[fd00::1]", None).expect("test value").ip,
            "fd00::1".parse::<IpAddr>().expect("test value")
        );
        assert_eq!(parse_extra_host("gw:host-gateway", Some(gw)).expect("test value").ip, gw);
        for bad in ["nocolon", ":1.2.3.4", "a b:1.2.3.4", "x:notanip", "gw:host-gateway"] {
            let e = parse_extra_host(bad, None).expect_err(bad).to_string();
            assert!(e.contains("--add-host"), "{e}");
        }
    }

    #[test]
    fn resolv_conf_takes_the_flags_over_the_base() {
        let base = "search corp.example\nnameserver 10.0.0.53\noptions rotate\n";
        let ns: Vec<IpAddr> = vec!["127.0.0.11".parse().expect("test value")];
        assert_eq!(
            resolv_conf("", &ns, base, &[], &["ndots:0"], &[]),
            "search corp.example\nnameserver 127.0.0.11\noptions ndots:0\n"
        );
        assert_eq!(
            resolv_conf(
                "# x\n",
                &ns,
                base,
                &["a.example".into(), "b.example".into()],
                &["ndots:0"],
                &["timeout:2".into()]
            ),
            "# x\nsearch a.example b.example\nnameserver 127.0.0.11\noptions ndots:0 timeout:2\n"
        );
        assert_eq!(resolv_conf("", &ns, base, &[".".into()], &[], &[]), "nameserver 127.0.0.11\n");
        assert_eq!(nameservers(base), vec!["10.0.0.53".parse::<IpAddr>().expect("test value")]);
        assert!(check_search(&["a b".into()]).is_err() && check_search(&["ok.example".into()]).is_ok());
        assert!(check_options(&["ndots 2".into()]).is_err() && check_options(&["ndots:2".into()]).is_ok());
    }
}
