//! The small load tools the harness runs inside namespaces: a TCP echo
//! server, a request/response latency client (one connection, 1-byte
//! messages), a new-connection-rate client (one request per connection) and
//! a question the server answers with the client address it sees.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Echoes every byte back, one thread per connection, until killed.
pub fn serve(port: u16) -> anyhow::Result<()> {
    // IPv4 and IPv6 (one dual-stack socket).
    let l = TcpListener::bind(("::", port))?;
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let _ = c.set_nodelay(true);
            let mut buf = [0u8; 64];
            // "?" asks who the server sees as the client.
            if c.peek(&mut buf[..1]).is_ok_and(|n| n == 1) && buf[0] == b'?' {
                let _ = c.read(&mut buf[..1]);
                let peer = c.peer_addr().map(|a| a.ip().to_canonical().to_string()).unwrap_or_default();
                let _ = writeln!(c, "{peer}");
                let _ = c.shutdown(std::net::Shutdown::Write);
                let _ = c.read(&mut buf);
                return;
            }
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 || c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

#[derive(Serialize)]
pub struct Rr {
    pub p50_us: f64,
    pub p99_us: f64,
    pub transactions: u64,
}

/// Request/response over one connection for `secs` seconds.
pub fn rr(addr: &str, secs: f64) -> anyhow::Result<Rr> {
    let mut c = TcpStream::connect(addr)?;
    c.set_nodelay(true)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut lat = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut b = [0u8; 1];
    while Instant::now() < end {
        let t = Instant::now();
        c.write_all(b"x")?;
        c.read_exact(&mut b)?;
        lat.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or(0.0);
    Ok(Rr { p50_us: pct(0.5), p99_us: pct(0.99), transactions: lat.len() as u64 })
}

#[derive(Serialize)]
pub struct Conns {
    pub per_second: f64,
    pub failed: u64,
}

/// Client threads opening connections at once (a sequential client would
/// only measure round-trip latency).
pub const CONN_THREADS: usize = 8;

/// New connections, one 1-byte request/response each, from
/// [`CONN_THREADS`] threads for `secs` seconds.
/// `addr` may be a name (`NAME:PORT`): it is then resolved for every
/// connection (DNS round robin).
pub fn conns(addr: &str, secs: f64) -> anyhow::Result<Conns> {
    use std::net::ToSocketAddrs;
    let fixed: Option<std::net::SocketAddr> = addr.parse().ok();
    let name = addr.to_string();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..CONN_THREADS)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut b = [0u8; 1];
                while Instant::now() < end {
                    let r = (|| -> std::io::Result<()> {
                        let addr = match fixed {
                            Some(a) => a,
                            None => name
                                .to_socket_addrs()?
                                .next()
                                .ok_or_else(|| std::io::Error::other(format!("{name}: no address")))?,
                        };
                        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
                        c.set_read_timeout(Some(Duration::from_secs(2)))?;
                        c.write_all(b"x")?;
                        c.read_exact(&mut b)?;
                        Ok(())
                    })();
                    if r.is_ok() { ok += 1 } else { failed += 1 }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0u64, 0u64);
    for w in workers {
        let (o, f) = w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        ok += o;
        failed += f;
    }
    Ok(Conns { per_second: ok as f64 / start.elapsed().as_secs_f64(), failed })
}

/// The client address the echo server sees for a connection from here.
pub fn peer(addr: &str) -> anyhow::Result<String> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"?")?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s.trim().to_string())
}

/// What a UDP flood sent.
#[derive(serde::Serialize)]
pub struct Flood {
    pub sent: u64,
    pub seconds: f64,
}

/// Sends 18-byte UDP datagrams (64-byte frames) to `addr` as fast as one
/// socket can for `secs` (the firewall phase's denied client).
pub fn flood(addr: &str, secs: f64) -> anyhow::Result<Flood> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(addr)?;
    let payload = [0u8; 18];
    let t0 = std::time::Instant::now();
    let limit = std::time::Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while t0.elapsed() < limit {
        for _ in 0..256 {
            // A refusal from an ICMP error is not the point here: keep sending.
            if sock.send(&payload).is_ok() {
                sent += 1;
            }
        }
    }
    Ok(Flood { sent, seconds: t0.elapsed().as_secs_f64() })
}

/// Sends TCP SYNs to `addr` from random addresses of 198.18.0.0/15 (the
/// benchmarking range: nothing answers there, so every SYN is a new,
/// never-answered flow) and random ports, through a raw socket, for `secs`
/// (the conntrack-at-capacity phase's flood).
pub fn syn_flood(addr: &str, secs: f64) -> anyhow::Result<Flood> {
    let target: std::net::SocketAddrV4 = addr.parse()?;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::TCP))?;
    sock.set_header_included_v4(true)?;
    let dest = socket2::SockAddr::from(std::net::SocketAddr::V4(target));
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    // xorshift: cheap, and every run the same sequence.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut packet = Vec::with_capacity(64);
    let mut sent = 0u64;
    while t0.elapsed() < limit {
        for _ in 0..256 {
            let r = next();
            let src = [198, 18 + (r & 1) as u8, (r >> 8) as u8, (r >> 16) as u8];
            let sport = 1024 + ((r >> 24) as u16 % 60_000);
            packet.clear();
            etherparse::PacketBuilder::ipv4(src, target.ip().octets(), 64)
                .tcp(sport, target.port(), (r >> 32) as u32, 64_240)
                .syn()
                .write(&mut packet, &[])?;
            if sock.send_to(&packet, &dest).is_ok() {
                sent += 1;
            }
        }
    }
    Ok(Flood { sent, seconds: t0.elapsed().as_secs_f64() })
}
