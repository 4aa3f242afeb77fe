//! `dataplane network …`

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use super::format::Format;
use super::{key_value, print_table};
use crate::api::client::{Client, enc};
use crate::api::wire::*;

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    #[command(after_help = "Driver options (-o KEY=VALUE):\n  \
            bridge:  com.docker.network.bridge.name=NAME   the Linux bridge's name (default: dp- and the ID)\n           \
            com.docker.network.bridge.enable_icc=BOOL   sandboxes of the network reach each other (default true)\n           \
            com.docker.network.bridge.enable_ip_masquerade=BOOL   masquerade traffic leaving the host (default true)\n           \
            com.docker.network.bridge.host_binding_ipv4=IP   host address of published ports without one\n           \
            com.docker.network.driver.mtu=N   MTU of the bridge and veths\n           \
            com.docker.network.bridge.gateway_mode_ipv4|ipv6=nat|routed   routed: no NAT, addresses reachable as they are\n           \
            lb=vip   every network alias gets a virtual IP balanced across its sandboxes in BPF\n  \
            macvlan: parent=IFACE   the host interface (required)\n           \
            macvlan_mode=bridge|private|vepa|passthru   (default bridge)\n           \
            com.docker.network.driver.mtu=N\n  \
            overlay: lb=vip, com.docker.network.bridge.enable_icc, com.docker.network.driver.mtu   as for bridge\n\n\
            Examples:\n  dataplane network create mybridge\n  dataplane network create --subnet 172.30.0.0/24 --ip-range 172.30.0.128/25 --gateway 172.30.0.1 mynet\n  dataplane network create --ipv6 --subnet 172.30.0.0/24 --subnet fd00:30::/64 dual\n  dataplane network create -d macvlan --subnet 192.168.50.0/24 -o parent=eth0 lan")]
    Create {
        /// Driver: bridge, macvlan, or overlay (with daemon --cluster-store).
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
        /// Driver options (KEY=VALUE; the keys are listed below, others refused).
        #[arg(short = 'o', long = "opt", value_parser = key_value)]
        opt: Vec<(String, String)>,
        /// Set a label: KEY=VALUE.
        #[arg(long, value_parser = key_value)]
        label: Vec<(String, String)>,
        name: String,
    },
    /// List networks.
    #[command(
        alias = "list",
        after_help = "Filters (-f KEY=VALUE): driver=, id=, label=KEY[=VALUE], name=, scope=local|global, type=builtin|custom\n\n\
                      Format fields: .ID .Name .Driver .Scope .IPv6 .Internal .Labels .CreatedAt\n\n\
                      Examples:\n  dataplane network ls --format '{{.Name}}'\n  dataplane network ls -f driver=bridge -q"
    )]
    Ls {
        /// table (default), json (one object a line), or a Go template ('{{.Name}}').
        #[arg(long, default_value = "")]
        format: String,
        /// Only print ids.
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate IDs.
        #[arg(long)]
        no_trunc: bool,
        /// Filter: driver=, id=, label=, name=, scope=, type= (see below).
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<String>,
    },
    /// Show networks as JSON, or through a Go template.
    Inspect {
        /// A Go template ('{{range .IPAM.Config}}{{.Subnet}}{{end}}'), or json (the default).
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
    /// Remove all user networks no sandbox uses (asks first unless -f).
    Prune {
        /// Do not ask for confirmation.
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
        /// A network-scoped alias (a DNS name on this network; with lb=vip a balanced VIP).
        #[arg(long)]
        alias: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// Disconnect even when the sandbox's endpoint is half gone (removes what is left).
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
        NetworkCmd::Ls { format, quiet, no_trunc, filter } => {
            let format = Format::parse(&format)?;
            // Docker's wire form, {"key":{"value":true}}; the daemon checks
            // the keys and applies them (one copy of the rules, which the
            // docker CLI reaches too).
            let mut filters: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
            for f in &filter {
                let (k, v) = f
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("bad format of filter {f:?} (expected name=value)"))?;
                filters.entry(k.to_string()).or_default().insert(v.to_string(), true);
            }
            let path = if filters.is_empty() {
                "/networks".to_string()
            } else {
                format!("/networks?filters={}", enc(&serde_json::to_string(&filters)?))
            };
            let nets: Vec<NetworkResource> = client.get(&path).await?;
            if quiet {
                nets.iter().for_each(|n| println!("{}", if no_trunc { &n.id[..] } else { &n.id[..12] }));
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<serde_json::Value> = nets.iter().map(|n| network_row(n, no_trunc)).collect();
            format.print_list(&rows, &[("ID", "NETWORK ID"), ("CreatedAt", "CREATED AT")], |rows| {
                let cell = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
                let body: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| ["ID", "Name", "Driver", "Scope"].iter().map(|k| cell(r, k)).collect())
                    .collect();
                print_table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &body);
            })?;
        }
        NetworkCmd::Inspect { format, names } => {
            let format = Format::parse(&format)?;
            let (out, failed) = super::each(&names, async |n| {
                client.get::<serde_json::Value>(&format!("/networks/{}", enc(n))).await
            })
            .await;
            super::print_inspect(&out, &format)?;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCmd::Rm { names } => {
            let (_, failed) = super::each(&names, async |n| {
                for w in client.delete(&format!("/networks/{}", enc(n))).await? {
                    eprintln!("WARNING: {w}");
                }
                println!("{n}");
                Ok(())
            })
            .await;
            if failed {
                return Ok(ExitCode::FAILURE);
            }
        }
        NetworkCmd::CniConfig { name, cni_version } => {
            let net: NetworkResource = client.get(&format!("/networks/{}", enc(&name))).await?;
            let conf = cni_conflist(&net, client.socket(), &cni_version).map_err(|e| anyhow::anyhow!(e))?;
            println!("{}", serde_json::to_string_pretty(&conf)?);
        }
        NetworkCmd::Prune { force } => {
            if !force
                && !confirm(
                    "WARNING! This will remove all custom networks not used by at least one sandbox.",
                )?
            {
                return Ok(ExitCode::SUCCESS);
            }
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

/// Asks "Are you sure…? [y/N]" on stderr; reads the answer from stdin
/// (anything but y/yes, or no answer at all, is no).
pub(crate) fn confirm(warning: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, Write};
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// The `network ls` row a `--format` template reaches, as Docker names its fields.
fn network_row(n: &NetworkResource, no_trunc: bool) -> serde_json::Value {
    serde_json::json!({
        "ID": if no_trunc { n.id.clone() } else { n.id[..12].to_string() },
        "Name": n.name,
        "Driver": n.driver,
        "Scope": n.scope,
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "CreatedAt": n.created,
    })
}
