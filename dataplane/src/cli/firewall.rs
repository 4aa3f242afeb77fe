//! `dataplane firewall`: who may reach published ports from outside (what
//! Docker users write into the DOCKER-USER chain), enforced in BPF on the
//! uplink.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::api::client::{Client, enc};
use crate::api::wire::{FirewallRequest, FirewallRow};

#[derive(Args)]
pub struct RuleArgs {
    /// Clients' addresses: a prefix (192.0.2.0/24, 2001:db8::/32, 0.0.0.0/0 for all) or one address.
    #[arg(long, value_name = "CIDR")]
    from: String,
    /// Only this published host port: P (TCP and UDP) or P/tcp, P/udp.
    #[arg(long, value_name = "P[/PROTO]")]
    port: Option<String>,
    /// Only ports published by sandboxes of this network.
    #[arg(long, value_name = "NET")]
    network: Option<String>,
}

#[derive(Subcommand)]
#[command(after_help = "\
Rules apply to packets from outside to published ports, new flows and open ones alike. \
The most specific kind of rule that matches decides (network and port, network, port, any), \
and within it the longest prefix; with no matching rule a published port is open.

Example (Docker: iptables -I DOCKER-USER ! -s 192.0.2.0/24 -j DROP):
  dataplane firewall deny --from 0.0.0.0/0
  dataplane firewall allow --from 192.0.2.0/24
  dataplane firewall ls")]
pub enum FirewallCmd {
    /// Let these clients reach published ports.
    Allow(RuleArgs),
    /// Drop these clients' packets to published ports (counted as FIREWALL_DENY).
    Deny(RuleArgs),
    /// List the rules, one a line, ID first.
    #[command(alias = "list")]
    Ls {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Remove rules by ID.
    Rm {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

pub async fn run(client: &Client, cmd: FirewallCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        FirewallCmd::Allow(a) => add(client, "allow", a).await,
        FirewallCmd::Deny(a) => add(client, "deny", a).await,
        FirewallCmd::Ls { format } => {
            let rows: Vec<FirewallRow> = client.get("/dataplane/firewall").await?;
            match format.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
                "table" => {
                    let lines: Vec<Vec<String>> = rows
                        .iter()
                        .map(|r| vec![r.id.to_string(), r.action.to_uppercase(), r.matches.clone()])
                        .collect();
                    super::print_table(&["ID", "ACTION", "MATCHES"], &lines);
                }
                other => anyhow::bail!("--format {other:?}: use table or json"),
            }
            Ok(ExitCode::SUCCESS)
        }
        FirewallCmd::Rm { ids } => {
            let (_, failed) = super::each(&ids, async |id| {
                client.delete(&format!("/dataplane/firewall/{}", enc(id))).await?;
                println!("{id}");
                Ok(())
            })
            .await;
            Ok(super::status(failed))
        }
    }
}

async fn add(client: &Client, action: &str, a: RuleArgs) -> anyhow::Result<ExitCode> {
    let req = FirewallRequest { action: action.into(), from: a.from, port: a.port, network: a.network };
    let row: FirewallRow = client.post("/dataplane/firewall", &req).await?;
    println!("{}", row.id);
    Ok(ExitCode::SUCCESS)
}
