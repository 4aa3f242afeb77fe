//! `dataplane version` and `dataplane info`.

use std::process::ExitCode;

use super::format::Format;
use crate::api::client::Client;

fn client_part() -> serde_json::Value {
    serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": crate::api::API_VERSION,
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
    })
}

/// Client and daemon versions, as `docker version` prints them; the
/// client's part also when the daemon cannot be reached (then exit 1).
pub async fn version(client: &Client, format: &str) -> anyhow::Result<ExitCode> {
    let format = Format::parse(format)?;
    let server = client.get::<serde_json::Value>("/version").await;
    let v = serde_json::json!({
        "Client": client_part(),
        "Server": server.as_ref().ok(),
    });
    match &format {
        Format::Template { .. } => println!("{}", format.one(&v)?),
        Format::Json => println!("{}", serde_json::to_string(&v)?),
        Format::Table => {
            let c = &v["Client"];
            println!("Client:");
            println!(" Version:       {}", c["Version"].as_str().unwrap_or_default());
            println!(" API version:   {}", c["ApiVersion"].as_str().unwrap_or_default());
            println!(
                " OS/Arch:       {}/{}",
                c["Os"].as_str().unwrap_or_default(),
                c["Arch"].as_str().unwrap_or_default()
            );
            if let Ok(s) = &server {
                println!("\nServer: dataplane");
                println!(" Version:       {}", s["Version"].as_str().unwrap_or_default());
                println!(
                    " API version:   {} (minimum version {})",
                    s["ApiVersion"].as_str().unwrap_or_default(),
                    s["MinAPIVersion"].as_str().unwrap_or_default()
                );
                println!(" Kernel:        {}", s["KernelVersion"].as_str().unwrap_or_default());
                println!(
                    " OS/Arch:       {}/{}",
                    s["Os"].as_str().unwrap_or_default(),
                    s["Arch"].as_str().unwrap_or_default()
                );
            }
        }
    }
    match server {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

/// What the daemon runs: `docker info`'s habit, with the datapath's facts.
pub async fn info(client: &Client, format: &str) -> anyhow::Result<ExitCode> {
    let format = Format::parse(format)?;
    let v: serde_json::Value = client.get("/dataplane/info").await?;
    match &format {
        Format::Template { .. } => println!("{}", format.one(&v)?),
        Format::Json => println!("{}", serde_json::to_string(&v)?),
        Format::Table => print!("{}", info_text(&v)),
    }
    Ok(ExitCode::SUCCESS)
}

fn info_text(v: &serde_json::Value) -> String {
    let s = |x: &serde_json::Value| match x {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let sb = &v["Sandboxes"];
    out += &format!("Sandboxes: {}\n", s(&sb["Total"]));
    for k in ["Running", "Created", "Exited"] {
        out += &format!(" {k}: {}\n", s(&sb[k]));
    }
    out += &format!("Networks: {}\n", s(&v["Networks"]["Total"]));
    if let Some(m) = v["Networks"]["ByDriver"].as_object() {
        for (d, n) in m {
            out += &format!(" {d}: {}\n", s(n));
        }
    }
    out += &format!("Server Version: {}\n", s(&v["ServerVersion"]));
    out += &format!("Kernel Version: {}\n", s(&v["KernelVersion"]));
    out += &format!("State Dir: {}\n", s(&v["StateDir"]));
    out += &format!("BPF Dir: {}\n", s(&v["BpfDir"]));
    let uplink = s(&v["Uplink"]);
    out += &format!("Uplink: {}\n", if uplink.is_empty() { "none" } else { &uplink });
    match v["Cluster"].as_object() {
        Some(c) => {
            out += &format!(
                "Cluster: node {} at {} ({})\n",
                s(&c["NodeID"]),
                s(&c["Address"]),
                s(&c["Hostname"])
            )
        }
        None => out += "Cluster: none (single host)\n",
    }
    out += "Kernel Features:\n";
    for f in v["KernelFeatures"].as_array().into_iter().flatten() {
        let found = if f["Found"].as_bool() == Some(true) { "yes" } else { "no" };
        out += &format!(" {}: {found} ({})\n", s(&f["Name"]), s(&f["Detail"]));
    }
    let ct = &v["Conntrack"];
    out += &format!("Conntrack: {} / {} entries\n", s(&ct["Entries"]), s(&ct["Capacity"]));
    out += "BPF Programs (attachments):\n";
    for p in v["Programs"].as_array().into_iter().flatten() {
        out += &format!(" {}: {}\n", s(&p["Program"]), s(&p["Attachments"]));
    }
    out += "BPF Maps (entries / capacity):\n";
    for m in v["Maps"].as_array().into_iter().flatten() {
        let entries = match m["Entries"].as_u64() {
            Some(n) => n.to_string(),
            None => "-".into(),
        };
        out += &format!(" {}: {entries} / {} ({})\n", s(&m["Name"]), s(&m["Capacity"]), s(&m["Kind"]));
    }
    out
}
