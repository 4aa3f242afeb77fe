//! Small HTTP programs the load-balancing tests run in sandboxes (Python
//! from the host), and reading what they report.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Host, text};

/// A backend: HTTP/1.1 (keep-alive) answering every GET with its name,
/// over IPv4 and IPv6 (one dual-stack socket).
pub const SERVER: &str = r#"
import http.server, socket, sys
name = sys.argv[1].encode()
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
class Name(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(name)))
        self.end_headers()
        self.wfile.write(name)
    def log_message(self, *args):
        pass
Server(("::", 80), Name).serve_forever()
"#;

/// `n` short HTTP connections to NAME (resolved once: A, or AAAA with a
/// third argument `6`); prints {"name": count}.
pub const CLIENT: &str = r#"
import collections, http.client, json, socket, sys
family = socket.AF_INET6 if sys.argv[3:] == ["6"] else socket.AF_INET
addr = socket.getaddrinfo(sys.argv[1], 80, family)[0][4][0]
seen = collections.Counter()
for _ in range(int(sys.argv[2])):
    c = http.client.HTTPConnection(addr, 80, timeout=5)
    c.request("GET", "/")
    seen[c.getresponse().read().decode()] += 1
    c.close()
print(json.dumps(seen))
"#;

/// Runs one SERVER sandbox per name on `network`, carrying `alias`.
pub fn start_backends(h: &Host, network: &str, alias: &str, names: &[&str]) {
    let script = h.dir.join("server.py");
    std::fs::write(&script, SERVER).expect("server script");
    let script = script.display().to_string();
    for n in names {
        h.dp_ok(&[
            "run",
            "-d",
            "--name",
            n,
            "--network",
            network,
            "--network-alias",
            alias,
            "python3",
            &script,
            n,
        ]);
    }
}

/// Holds 60 keep-alive HTTP connections to web, asks each once (OUT.first),
/// waits for OUT.go, asks each again on the same connection (OUT.second:
/// [first answer, second answer]).
pub const HOLDER: &str = r#"
import http.client, json, os, socket, sys, time
out = sys.argv[1]
addr = socket.gethostbyname("web")
conns = []
for _ in range(60):
    c = http.client.HTTPConnection(addr, 80, timeout=5)
    c.request("GET", "/")
    conns.append((c, c.getresponse().read().decode()))
json.dump([n for _, n in conns], open(out + ".tmp", "w"))
os.rename(out + ".tmp", out + ".first")
deadline = time.time() + 120
while not os.path.exists(out + ".go") and time.time() < deadline:
    time.sleep(0.1)
res = []
for c, n in conns:
    try:
        c.request("GET", "/")
        res.append([n, c.getresponse().read().decode()])
    except (OSError, http.client.HTTPException) as e:
        res.append([n, "error: %s" % e])
json.dump(res, open(out + ".tmp", "w"))
os.rename(out + ".tmp", out + ".second")
time.sleep(300)
"#;

/// [`CLIENT`] run in sandbox `client` of `h` against `name`, `n` times.
pub fn try_counts(h: &Host, script: &Path, n: &str) -> Result<BTreeMap<String, u64>, String> {
    let o = h.exec("client", &["python3", &script.display().to_string(), "web", n]);
    if !o.status.success() {
        return Err(text(&o));
    }
    serde_json::from_slice(&o.stdout).map_err(|e| format!("client output {e}: {}", text(&o)))
}

pub fn counts(h: &Host, script: &Path, n: &str) -> BTreeMap<String, u64> {
    try_counts(h, script, n).unwrap_or_else(|e| panic!("client: {e}"))
}

pub fn wait_for(path: &Path, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: {} never appeared", path.display());
}
