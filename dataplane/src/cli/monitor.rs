//! `dataplane monitor`: drop and policy events, live (like `cilium monitor`).

use std::io::Write;
use std::process::ExitCode;

use crate::api::client::Client;
use crate::api::wire::MonitorEvent;

pub async fn run(client: &Client, format: &str) -> anyhow::Result<ExitCode> {
    if format != "text" && format != "json" {
        anyhow::bail!("--format {format:?}: use text or json");
    }
    let json = format == "json";
    client
        .get_lines(
            "/dataplane/monitor",
            || eprintln!("Listening for drop and policy events (Ctrl-C to stop)…"),
            |line| {
                if let Ok(end) = serde_json::from_str::<crate::api::wire::StreamEnd>(line) {
                    if json {
                        println!("{line}");
                    }
                    eprintln!("monitor ended: {}", end.end);
                    return false;
                }
                let out = if json {
                    line.to_string()
                } else {
                    match serde_json::from_str::<MonitorEvent>(line) {
                        Ok(ev) => ev.line(),
                        Err(_) => line.to_string(),
                    }
                };
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{out}").and_then(|()| stdout.flush()).is_ok()
            },
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}
