//! `dataplane ct list|flush`: the flows tracked by the BPF datapath.

use std::process::ExitCode;

use clap::Subcommand;

use crate::api::client::Client;
use crate::api::wire::CtRow;

#[derive(Subcommand)]
pub enum CtCmd {
    /// List tracked flows, one line per direction.
    #[command(alias = "ls")]
    List {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Forget every tracked flow (established connections through NAT break).
    Flush,
}

pub async fn run(client: &Client, cmd: CtCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CtCmd::List { format } => {
            let rows: Vec<CtRow> = client.get("/dataplane/conntrack").await?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
                "table" => super::print_table(
                    &["PROTO", "SOURCE", "DESTINATION", "NAT", "STATE", "IDLE"],
                    &rows
                        .iter()
                        .map(|r| {
                            vec![
                                r.proto.clone(),
                                r.source.clone(),
                                r.destination.clone(),
                                r.nat.clone(),
                                r.state.clone(),
                                format!("{}s", r.idle_seconds),
                            ]
                        })
                        .collect::<Vec<_>>(),
                ),
                other => anyhow::bail!("--format {other:?}: use table or json"),
            }
        }
        CtCmd::Flush => {
            let v: serde_json::Value =
                client.post("/dataplane/conntrack/flush", &serde_json::json!({})).await?;
            println!("{} entries flushed", v["Flushed"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
