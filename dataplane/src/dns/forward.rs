//! Sending queries the embedded resolver does not own to the host's
//! resolvers (the `nameserver` lines of the host's resolv.conf), from the
//! daemon's own namespace — so a loopback resolver such as systemd-resolved
//! works. The query goes out as the client sent it, over the same transport.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one upstream may take before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest UDP answer accepted from upstream.
const MAX_UDP: usize = 4096;

/// The resolvers named by a resolv.conf (at most three, as libc reads them),
/// skipping our own 127.0.0.11.
pub fn upstreams(resolv_conf: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    parse_nameservers(&text)
}

fn parse_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<IpAddr>().ok())
        .filter(|a| *a != IpAddr::from(super::RESOLVER_ADDR))
        .map(|a| SocketAddr::new(a, 53))
        .take(3)
        .collect()
}

/// Asks each upstream in turn; the first answer wins.
pub async fn forward(raw: &[u8], protocol: Protocol, upstreams: &[SocketAddr]) -> Option<Message> {
    for up in upstreams {
        let res = match protocol {
            Protocol::Tcp => tokio::time::timeout(UPSTREAM_TIMEOUT, over_tcp(raw, *up)).await,
            _ => tokio::time::timeout(UPSTREAM_TIMEOUT, over_udp(raw, *up)).await,
        };
        match res {
            Ok(Ok(bytes)) => match Message::from_vec(&bytes) {
                Ok(m) => return Some(m),
                Err(e) => tracing::debug!(upstream = %up, error = %e, "bad answer from upstream"),
            },
            Ok(Err(e)) => tracing::debug!(upstream = %up, error = %e, "upstream failed"),
            Err(_) => tracing::debug!(upstream = %up, "upstream timed out"),
        }
    }
    None
}

async fn over_udp(raw: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(raw).await?;
    let mut buf = vec![0u8; MAX_UDP];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query (same ID) counts.
        if n >= 2 && raw.len() >= 2 && buf[..2] == raw[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn over_tcp(raw: &[u8], up: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect(up).await?;
    let len = u16::try_from(raw.len()).map_err(|_| std::io::Error::other("query too long"))?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(raw).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_come_from_resolv_conf() {
        let text = "# comment\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nnameserver 127.0.0.11\n\
                    search corp.example lab.example\noptions edns0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n";
        let got = parse_nameservers(text);
        assert_eq!(
            got,
            vec![
                "192.0.2.53:53".parse().expect("valid literal"),
                "[fe80::1]:53".parse().expect("valid literal"),
                "10.0.0.1:53".parse().expect("valid literal")
            ]
        );
        assert_eq!(crate::domain::etc::search_domains(text), vec!["corp.example", "lab.example"]);
    }
}
