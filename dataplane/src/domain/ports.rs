//! Parsing of `-p` / `--expose` specs (Docker's forms). Publishing itself is
//! the NAT issue's; here specs are validated and stored.

use crate::domain::model::{Exposed, PortSpec};
use crate::domain::options::Proto;
use crate::error::{Error, Result};

fn parse_range(what: &'static str, spec: &str, s: &str) -> Result<(u16, u16)> {
    let one = |p: &str| -> Result<u16> {
        match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
            Ok(n) => Err(Error::invalid(what, spec, format!("port {n} is out of range 1-65535"))),
            Err(_) => Err(Error::invalid(what, spec, format!("{p:?} is not a port number"))),
        }
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(Error::invalid(what, spec, format!("range {a}-{b} is reversed")));
            }
            Ok((a, b))
        }
        None => {
            let p = one(s)?;
            Ok((p, p))
        }
    }
}

fn split_proto<'a>(what: &'static str, spec: &'a str) -> Result<(&'a str, Proto)> {
    match spec.rsplit_once('/') {
        Some((rest, proto)) => Ok((rest, Proto::parse(what, spec, proto)?)),
        None => Ok((spec, Proto::Tcp)),
    }
}

/// Parses `[IP:][HPORT[-HEND]:]CPORT[-CEND][/PROTO]`, IPv6 host IPs in brackets.
pub fn parse_publish(spec: &str) -> Result<PortSpec> {
    const W: &str = "port spec";
    let (body, proto) = split_proto(W, spec)?;
    let (host_ip, rest) = if let Some(stripped) = body.strip_prefix('[') {
        let (ip, rest) = stripped
            .split_once("]:")
            .ok_or_else(|| Error::invalid(W, spec, "IPv6 host address must be [ADDR]:HPORT:CPORT"))?;
        let ip: std::net::Ipv6Addr =
            ip.parse().map_err(|_| Error::invalid(W, spec, format!("{ip:?} is not an IPv6 address")))?;
        (Some(std::net::IpAddr::V6(ip)), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => {
                let ip = parts[0];
                let addr = if ip.is_empty() {
                    None
                } else {
                    Some(
                        ip.parse::<std::net::IpAddr>()
                            .map_err(|_| Error::invalid(W, spec, format!("{ip:?} is not an IP address")))?,
                    )
                };
                (addr, &body[ip.len() + 1..])
            }
            _ => return Err(Error::invalid(W, spec, "too many ':'")),
        }
    };
    let (hport, cport) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    if cport.is_empty() {
        return Err(Error::invalid(W, spec, "container port is missing"));
    }
    let (cs, ce) = parse_range(W, spec, cport)?;
    let (hs, he) = if hport.is_empty() { (0, 0) } else { parse_range(W, spec, hport)? };
    if hs != 0 && (he - hs) != (ce - cs) && ce != cs {
        return Err(Error::invalid(W, spec, "host and container port ranges differ in size"));
    }
    Ok(PortSpec {
        host_ip,
        host_port_start: hs,
        host_port_end: he,
        container_port_start: cs,
        container_port_end: ce,
        proto,
    })
}

/// Parses `PORT[-END][/PROTO]` for `--expose`, one entry per port.
pub fn parse_expose(spec: &str) -> Result<Vec<Exposed>> {
    let (body, proto) = split_proto("expose", spec)?;
    let (s, e) = parse_range("expose", spec, body)?;
    Ok((s..=e).map(|port| Exposed { port, proto }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_forms_parse() {
        let p = parse_publish("8080:80").expect("simple");
        assert_eq!(
            (p.host_ip, p.host_port_start, p.container_port_start, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = parse_publish("127.0.0.1::53/udp").expect("ip, no host port");
        assert_eq!(
            (p.host_ip, p.host_port_start, p.proto),
            (Some("127.0.0.1".parse().expect("ip")), 0, Proto::Udp)
        );
        let p = parse_publish("8000-8010:80-90").expect("range");
        assert_eq!((p.host_port_end, p.container_port_end), (8010, 90));
        let p = parse_publish("[::1]:8080:80").expect("v6");
        assert_eq!(p.host_ip, Some("::1".parse().expect("ip")));
        let p = parse_publish("[::]:8080:80/udp").expect("v6 any");
        assert_eq!((p.host_ip, p.proto), (Some("::".parse().expect("ip")), Proto::Udp));
        assert_eq!(parse_publish("80").expect("bare").host_port_start, 0);
        let exposed: Vec<String> =
            parse_expose("80-81/udp").expect("expose").iter().map(|e| e.to_string()).collect();
        assert_eq!(exposed, vec!["80/udp", "81/udp"]);
    }

    #[test]
    fn malformed_specs_name_the_problem() {
        assert!(parse_publish("70000:80").expect_err("range").to_string().contains("out of range"));
        assert!(parse_publish("80:").expect_err("missing").to_string().contains("container port is missing"));
        assert!(parse_publish("abc").expect_err("abc").to_string().contains("not a port number"));
        assert!(parse_publish("80/icmp").expect_err("proto").to_string().contains("unknown protocol"));
        assert!(parse_publish("1:2:3:4").is_err());
        assert!(
            parse_publish("[::1:8080:80").expect_err("bracket").to_string().contains("[ADDR]:HPORT:CPORT")
        );
        assert!(parse_publish("[1.2.3.4]:80:80").expect_err("v4 in brackets").to_string().contains("IPv6"));
    }

    #[test]
    fn specs_keep_their_record_shape() {
        // Records written by earlier versions: host address as text, "" for none.
        let old = r#"{"host_ip":"","host_port_start":8080,"host_port_end":8080,"container_port_start":80,"container_port_end":80,"proto":"tcp"}"#;
        let p: PortSpec = serde_json::from_str(old).expect("old record");
        assert_eq!(p, parse_publish("8080:80").expect("same"));
        assert_eq!(serde_json::to_string(&p).expect("json"), old);
        let e: Vec<Exposed> = serde_json::from_str(r#"["80/tcp","53/udp"]"#).expect("exposed");
        assert_eq!(e, [parse_expose("80").expect("80"), parse_expose("53/udp").expect("53")].concat());
    }
}
