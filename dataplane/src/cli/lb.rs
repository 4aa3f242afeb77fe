//! `dataplane lb list`: virtual IPs of balanced aliases, their backends and
//! the new flows each backend received.

use std::process::ExitCode;

use clap::Subcommand;

use crate::api::client::Client;
use crate::api::wire::LbRow;

#[derive(Subcommand)]
pub enum LbCmd {
    /// List virtual IPs with their backends and per-backend flow counts.
    #[command(alias = "ls")]
    List {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
}

pub async fn run(client: &Client, cmd: LbCmd) -> anyhow::Result<ExitCode> {
    let LbCmd::List { format } = cmd;
    let rows: Vec<LbRow> = client.get("/dataplane/lb").await?;
    match format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "table" => {
            let mut lines = Vec::new();
            for r in &rows {
                if r.backends.is_empty() {
                    lines.push(vec![
                        r.network.clone(),
                        r.alias.clone(),
                        vip_text(r),
                        "-".into(),
                        "".into(),
                        "".into(),
                    ]);
                }
                for b in &r.backends {
                    lines.push(vec![
                        r.network.clone(),
                        r.alias.clone(),
                        vip_text(r),
                        format!("{} ({})", b.sandbox, b.ip),
                        if b.live { "live" } else { "down" }.to_string(),
                        b.flows.to_string(),
                    ]);
                }
            }
            super::print_table(&["NETWORK", "ALIAS", "VIP", "BACKEND", "STATE", "FLOWS"], &lines);
        }
        other => anyhow::bail!("--format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `10.1.0.200`, or `10.1.0.200, fd00:1::c8` with an IPv6 VIP.
fn vip_text(r: &LbRow) -> String {
    match r.vip6 {
        Some(v6) => format!("{}, {v6}", r.vip),
        None => r.vip.to_string(),
    }
}
