//! `dataplane stats`: datapath counters with reason names.

use std::process::ExitCode;

use crate::api::client::Client;
use crate::api::wire::Stats;

pub async fn run(client: &Client, format: &str, all: bool) -> anyhow::Result<ExitCode> {
    let stats: Stats = client.get("/dataplane/stats").await?;
    // Counters that never moved say nothing (--all shows them).
    let rows: Vec<_> = stats.metrics.iter().filter(|r| all || r.packets > 0).collect();
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&stats)?),
        "table" => {
            println!("DIRECTION is the sandbox's side: ingress = into a sandbox, egress = out of one");
            println!("(a published port's requests count as ingress, its replies as egress).\n");
            super::print_table(
                &["REASON", "DIRECTION", "PACKETS", "BYTES"],
                &rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.reason.clone(),
                            r.direction.clone(),
                            r.packets.to_string(),
                            r.bytes.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
            let c = &stats.conntrack;
            println!("\nCONNTRACK   {} / {} entries, {} expired", c.entries, c.capacity, c.expired);
            println!("MONITOR     {} events over the per-CPU budget, not reported", stats.events_suppressed);
            println!();
            super::print_table(
                &["PROGRAM", "PROG ID", "LINK ID", "ATTACHED TO", "GENERATION"],
                &stats
                    .programs
                    .iter()
                    .map(|a| {
                        vec![
                            a.program.clone(),
                            a.program_id.to_string(),
                            a.link_id.to_string(),
                            a.target.clone(),
                            if a.current { "current" } else { "stale" }.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            );
        }
        other => anyhow::bail!("--format {other:?}: use table or json"),
    }
    Ok(ExitCode::SUCCESS)
}
