//! `dataplane stats`: datapath counters with reason names.

use std::process::ExitCode;

use crate::api::client::Client;
use crate::bpf::MetricRow;

pub async fn run(client: &Client, format: &str) -> anyhow::Result<ExitCode> {
    let rows: Vec<MetricRow> = client.get("/dataplane/stats").await?;
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "table" => super::print_table(
            &["REASON", "DIRECTION", "PACKETS", "BYTES"],
            &rows
                .iter()
                .map(|r| {
                    vec![r.reason.clone(), r.direction.clone(), r.packets.to_string(), r.bytes.to_string()]
                })
                .collect::<Vec<_>>(),
        ),
        other => anyhow::bail!("--format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
