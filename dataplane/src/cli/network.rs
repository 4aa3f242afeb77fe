//! `dataplane network …`

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use super::{key_value, print_table};
use crate::api::client::{Client, enc};
use crate::api::wire::*;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    #[command(
        after_help = "Examples:\n  dataplane network create mybridge\n  dataplane network create --subnet 172.30.0.0/24 --ip-range 172.30.0.128/25 --gateway 172.30.0.1 mynet\n  dataplane network create --ipv6 --subnet 172.30.0.0/24 --subnet fd00:30::/64 dual\n  dataplane network create -d macvlan --subnet 192.168.50.0/24 -o parent=eth0 lan"
    )]
    Create {
        /// Driver: bridge or macvlan.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form; once per address family (IPv4, and IPv6 with --ipv6).
        #[arg(long)]
        subnet: Vec<String>,
        /// Allocate addresses from this sub-range; once per address family.
        #[arg(long)]
        ip_range: Vec<String>,
        /// Gateway address; once per address family.
        #[arg(long)]
        gateway: Vec<String>,
        /// Dual stack: IPv6 too (a ULA /64 of the host's prefix unless an IPv6 --subnet is given).
        #[arg(long)]
        ipv6: bool,
        /// Addresses the IPAM must not hand out (NAME=IP).
        #[arg(long = "aux-address", value_parser = key_value)]
        aux_address: Vec<(String, String)>,
        /// No external connectivity.
        #[arg(long)]
        internal: bool,
        /// Driver options (K=V).
        #[arg(short = 'o', long = "opt", value_parser = key_value)]
        opt: Vec<(String, String)>,
        #[arg(long, value_parser = key_value)]
        label: Vec<(String, String)>,
        name: String,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Output format: table or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect {
        /// json, or a template such as '{{.IPAM.Config}}'.
        #[arg(short, long, default_value = "json")]
        format: String,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Print a CNI network configuration list attaching containers of a
    /// CNI runtime (Podman, containerd, CRI-O) to this network through the
    /// `dataplane-cni` plugin.
    #[command(
        name = "cni-config",
        after_help = "Examples:\n  dataplane network cni-config mynet > /etc/cni/net.d/mynet.conflist\n  \
                      dataplane network cni-config --cni-version 1.0.0 mynet   # Podman 4, containerd 1.x"
    )]
    CniConfig {
        name: String,
        /// The CNI version the runtime speaks: Podman 4 and the Debian
        /// plugins (libcni 1.1) know 1.0.0 at most.
        #[arg(long, default_value = dataplane_cni::LATEST_VERSION,
              value_parser = clap::builder::PossibleValuesParser::new(dataplane_cni::SUPPORTED_VERSIONS.iter().copied()))]
        cni_version: String,
    },
    /// Remove all unused user networks.
    Prune {
        /// Do not prompt (always implied).
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a sandbox to a network.
    Connect {
        /// IPv4 address on the network.
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address on a dual-stack network.
        #[arg(long)]
        ip6: Option<String>,
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

pub async fn run(client: &Client, cmd: NetworkCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            ip_range,
            gateway,
            ipv6,
            aux_address,
            internal,
            opt,
            label,
            name,
        } => {
            use crate::domain::ipam6::split_by_family;
            let (subnet4, subnet6) = split_by_family("subnet", &subnet)?;
            let (range4, range6) = split_by_family("ip-range", &ip_range)?;
            let (gateway4, gateway6) = split_by_family("gateway", &gateway)?;
            let mut config = Vec::new();
            if subnet4.is_some() || range4.is_some() || gateway4.is_some() || !aux_address.is_empty() {
                config.push(IpamConfig {
                    subnet: subnet4.unwrap_or_default(),
                    ip_range: range4.unwrap_or_default(),
                    gateway: gateway4.unwrap_or_default(),
                    auxiliary_addresses: aux_address.into_iter().collect(),
                });
            }
            if subnet6.is_some() || range6.is_some() || gateway6.is_some() {
                config.push(IpamConfig {
                    subnet: subnet6.unwrap_or_default(),
                    ip_range: range6.unwrap_or_default(),
                    gateway: gateway6.unwrap_or_default(),
                    auxiliary_addresses: BTreeMap::new(),
                });
            }
            let req = NetworkCreateRequest {
                name,
                driver,
                ipam: Some(Ipam { driver: "default".into(), options: None, config: Some(config) }),
                internal,
                enable_ipv6: ipv6.then_some(true),
                options: Some(opt.into_iter().collect::<BTreeMap<_, _>>()),
                labels: Some(label.into_iter().collect::<BTreeMap<_, _>>()),
            };
            let resp: NetworkCreateResponse = client.post("/networks/create", &req).await?;
            println!("{}", resp.id);
        }
        NetworkCmd::Ls { format, quiet } => {
            let nets: Vec<NetworkResource> = client.get("/networks").await?;
            if quiet {
                nets.iter().for_each(|n| println!("{}", &n.id[..12]));
            } else if format == "json" {
                println!("{}", serde_json::to_string_pretty(&nets)?);
            } else if format == "table" {
                let rows: Vec<Vec<String>> = nets
                    .iter()
                    .map(|n| vec![n.id[..12].to_string(), n.name.clone(), n.driver.clone(), n.scope.clone()])
                    .collect();
                print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows);
            } else {
                anyhow::bail!("--format {format:?}: use table or json");
            }
        }
        NetworkCmd::Inspect { format, names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(client.get::<serde_json::Value>(&format!("/networks/{}", enc(n))).await?);
            }
            super::print_inspect(&out, &format)?;
        }
        NetworkCmd::Rm { names } => {
            let mut failed = false;
            for n in &names {
                match client.delete(&format!("/networks/{}", enc(n))).await {
                    Ok(warnings) => {
                        for w in warnings {
                            eprintln!("WARNING: {w}");
                        }
                        println!("{n}");
                    }
                    Err(e) => {
                        eprintln!("{e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCmd::CniConfig { name, cni_version } => {
            let net: NetworkResource = client.get(&format!("/networks/{}", enc(&name))).await?;
            let conf = cni_conflist(&net, client.socket(), &cni_version).map_err(|e| anyhow::anyhow!(e))?;
            println!("{}", serde_json::to_string_pretty(&conf)?);
        }
        NetworkCmd::Prune { .. } => {
            let v: serde_json::Value = client.post("/networks/prune", &serde_json::json!({})).await?;
            let deleted: Vec<String> =
                serde_json::from_value(v["NetworksDeleted"].clone()).unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                deleted.iter().for_each(|n| println!("{n}"));
            }
        }
        NetworkCmd::Connect { ip, ip6, alias, network, container } => {
            let ipam_config = (ip.is_some() || ip6.is_some()).then(|| EndpointIpamConfig {
                ipv4_address: ip.unwrap_or_default(),
                ipv6_address: ip6.unwrap_or_default(),
            });
            let req = ConnectRequest {
                container,
                endpoint_config: Some(EndpointConfig { ipam_config, aliases: Some(alias) }),
            };
            let _: serde_json::Value =
                client.post(&format!("/networks/{}/connect", enc(&network)), &req).await?;
        }
        NetworkCmd::Disconnect { force, network, container } => {
            let req = DisconnectRequest { container, force };
            let answer: Option<Warnings> =
                client.post(&format!("/networks/{}/disconnect", enc(&network)), &req).await?;
            for w in answer.map(|a| a.warnings).unwrap_or_default() {
                eprintln!("WARNING: {w}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
