//! `dataplane-cni`: the CNI plugin executable. A runtime runs it with the
//! parameters in the environment and the network configuration on stdin;
//! it checks both, answers `VERSION` itself and hands every other command
//! to the dataplane daemon over its API socket, which makes the endpoint
//! (or removes, checks, collects it) and answers with the result to print.
//! Errors are CNI error JSON on stdout with exit code 1.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use dataplane_cni::{
    API_PATH, Call, CniError, Command, DEFAULT_SOCKET, LATEST_VERSION, Reply, SUPPORTED_VERSIONS, code,
    valid_container_id,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// How long a call may take: an ADD publishing a thousand ports included.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", serde_json::to_string(&e).unwrap_or_else(|_| e.msg.clone()));
            eprintln!("dataplane-cni: {}", e.msg);
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<Option<String>, CniError> {
    let command_text = env("CNI_COMMAND");
    if command_text.is_empty() {
        return Err(CniError::new(code::INVALID_ENVIRONMENT, "CNI_COMMAND is not set"));
    }
    let command: Command = command_text.parse()?;
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("reading the configuration on stdin: {e}")))?;
    if command == Command::Version && stdin.trim().is_empty() {
        return Ok(Some(version_answer(LATEST_VERSION)));
    }
    let config: serde_json::Value = serde_json::from_str(&stdin).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, format!("the configuration on stdin is not JSON: {e}"))
    })?;
    let version = match config.get("cniVersion") {
        Some(serde_json::Value::String(v)) => v.clone(),
        _ => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the configuration has no \"cniVersion\" string",
            ));
        }
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CNI version {version} is not supported (dataplane-cni speaks {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let fail = |code: u32, msg: String| CniError::new(code, msg).in_version(&version);
    if command == Command::Version {
        return Ok(Some(version_answer(&version)));
    }
    if matches!(command, Command::Status | Command::Gc) && version != "1.1.0" {
        return Err(fail(
            code::INCOMPATIBLE_VERSION,
            format!("{command_text} exists from CNI 1.1.0 on; the configuration is {version}"),
        ));
    }
    let required: &[&str] = match command {
        Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
        Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
        _ => &[],
    };
    if let Some(missing) = required.iter().find(|v| env(v).is_empty()) {
        return Err(fail(
            code::INVALID_ENVIRONMENT,
            format!("{missing} is not set (needed by {command_text})"),
        ));
    }
    let container_id = env("CNI_CONTAINERID");
    if !required.is_empty() && !valid_container_id(&container_id) {
        return Err(fail(
            code::INVALID_ENVIRONMENT,
            format!(
                "CNI_CONTAINERID={container_id:?} is not a container ID (a letter or digit, then letters, digits, _ . -)"
            ),
        ));
    }
    let ifname = env("CNI_IFNAME");
    if !required.is_empty() && (ifname.len() > 15 || ifname.contains(['/', ' ', ':'])) {
        return Err(fail(
            code::INVALID_ENVIRONMENT,
            format!(
                "CNI_IFNAME={ifname:?} is not an interface name (at most 15 characters, no '/', ':' or space)"
            ),
        ));
    }
    if !matches!(config.get("network"), Some(serde_json::Value::String(n)) if !n.is_empty()) {
        return Err(fail(
            code::INVALID_CONFIG,
            "the plugin configuration has no \"network\" key naming the dataplane network to attach to"
                .into(),
        ));
    }
    let socket = match config.get("socket") {
        None => DEFAULT_SOCKET.to_string(),
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(fail(code::INVALID_CONFIG, format!("\"socket\" must be a path, not {other}")));
        }
    };
    let call = Call { command, container_id, netns: env("CNI_NETNS"), ifname, args: env("CNI_ARGS"), config };
    let reply = ask(&socket, &call).map_err(|why| {
        let (code, what) = if command == Command::Status {
            (code::NOT_AVAILABLE, "the plugin is not available")
        } else {
            (code::TRY_AGAIN_LATER, "try again later")
        };
        fail(code, format!("cannot reach the dataplane daemon at {socket} ({what}): {why}"))
    })?;
    match reply {
        Reply::Ok(Some(result)) => Ok(Some(result.to_string())),
        Reply::Ok(None) => Ok(None),
        Reply::Error(e) => Err(e.in_version(&version)),
    }
}

fn version_answer(version: &str) -> String {
    serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS }).to_string()
}

/// Posts the call to the daemon; an unreachable or failing daemon is the
/// error text.
fn ask(socket: &str, call: &Call) -> Result<Reply, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let body = serde_json::to_vec(call).map_err(|e| e.to_string())?;
    rt.block_on(async {
        let exchange = async {
            let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = hyper::Request::post(API_PATH)
                .header("Host", "dataplane")
                .header("Content-Type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| e.to_string())?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("the daemon closed the connection: {e}"))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            if !status.is_success() {
                return Err(format!(
                    "the daemon answered {status}: {}",
                    String::from_utf8_lossy(&bytes).trim()
                ));
            }
            serde_json::from_slice::<Reply>(&bytes)
                .map_err(|e| format!("the daemon's answer is not a CNI reply: {e}"))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
    })
}
