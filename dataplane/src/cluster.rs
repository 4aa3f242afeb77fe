//! The cluster store (etcd v3, `--cluster-store`): this host registers
//! itself under a lease it keeps alive, and reads who else is there. It is
//! the one owner of the etcd connection.
//!
//! Key layout (read it with `etcdctl get --prefix /dataplane/v1/`):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `/dataplane/v1/nodes/<node id>` | `{"id", "address", "hostname", "joined"}` (JSON) | bound to the node's lease: gone a TTL after its daemon stops |

use std::net::IpAddr;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Prefix of every key this project writes.
pub const PREFIX: &str = "/dataplane/v1/";
/// Seconds a node's registration outlives its last keep-alive.
pub const LEASE_TTL: i64 = 5;

fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}

fn store_err(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
    let what = what.into();
    move |source| Error::Cluster { what, source }
}

/// A host of the cluster as it registered itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Node {
    pub id: String,
    /// The underlay address other hosts reach it at (`--cluster-advertise`).
    pub address: IpAddr,
    pub hostname: String,
    /// RFC 3339 time it joined.
    pub joined: String,
}

/// `--cluster-store etcd://IP:PORT[,IP:PORT…]` → the endpoints.
pub fn parse_store(spec: &str) -> Result<Vec<String>> {
    let rest = spec.strip_prefix("etcd://").ok_or_else(|| {
        Error::invalid("--cluster-store", spec, "the only store is etcd: etcd://IP:PORT[,IP:PORT…]")
    })?;
    let endpoints: Vec<String> =
        rest.split(',').filter(|e| !e.is_empty()).map(|e| format!("http://{e}")).collect();
    if endpoints.is_empty() {
        return Err(Error::invalid("--cluster-store", spec, "no etcd endpoint given"));
    }
    for e in &endpoints {
        let hostport = e.trim_start_matches("http://");
        if hostport.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) {
            return Err(Error::invalid("--cluster-store", spec, format!("{hostport} is not IP:PORT")));
        }
    }
    Ok(endpoints)
}

/// This host's membership: its registration, kept alive in the background.
pub struct Cluster {
    client: Client,
    me: Node,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Cluster {
    /// Connects to `endpoints` and registers `me` under a lease.
    pub async fn join(endpoints: &[String], me: Node) -> Result<Cluster> {
        let opts = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(store_err(format!("connecting to {}", endpoints.join(","))))?;
        let lease = register(&client, &me).await?;
        let keepalive = tokio::spawn(keep_alive(client.clone(), me.clone(), lease));
        tracing::info!(node = %me.id, address = %me.address, store = %endpoints.join(","), "joined the cluster");
        Ok(Cluster { client, me, keepalive })
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    /// Every registered host (those whose lease is alive).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(nodes_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(store_err("listing the nodes"))?;
        let mut out = Vec::new();
        for k in resp.kvs() {
            match serde_json::from_slice::<Node>(k.value()) {
                Ok(n) => out.push(n),
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(k.key()), error = %e, "unreadable node record")
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// Grants a lease and puts the node's record under it; returns the lease.
async fn register(client: &Client, me: &Node) -> Result<i64> {
    let mut lease = client.lease_client();
    let granted = lease.grant(LEASE_TTL, None).await.map_err(store_err("granting a lease"))?;
    let value = serde_json::to_vec(me).map_err(|source| Error::StoreRecord { key: me.id.clone(), source })?;
    client
        .kv_client()
        .put(format!("{}{}", nodes_prefix(), me.id), value, Some(PutOptions::new().with_lease(granted.id())))
        .await
        .map_err(store_err("registering this node"))?;
    Ok(granted.id())
}

/// Keeps the lease alive (every TTL/3); when it is lost (the store was
/// away longer than the TTL), registers again under a new one.
async fn keep_alive(client: Client, me: Node, mut lease: i64) {
    let period = Duration::from_millis((LEASE_TTL as u64 * 1000) / 3);
    loop {
        let alive: Result<()> = async {
            let (mut keeper, mut stream) =
                client.lease_client().keep_alive(lease).await.map_err(store_err("keeping the lease"))?;
            loop {
                keeper.keep_alive().await.map_err(store_err("keeping the lease"))?;
                match stream.message().await.map_err(store_err("keeping the lease"))? {
                    Some(r) if r.ttl() > 0 => {}
                    _ => return Err(Error::Unsupported("the lease expired".into())),
                }
                tokio::time::sleep(period).await;
            }
        }
        .await;
        if let Err(e) = alive {
            tracing::warn!(node = %me.id, error = %e, "cluster lease lost; registering again");
        }
        tokio::time::sleep(period).await;
        match register(&client, &me).await {
            Ok(l) => lease = l,
            Err(e) => tracing::warn!(node = %me.id, error = %e, "cannot register with the cluster store yet"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_flag_names_what_is_wrong() {
        assert_eq!(
            parse_store("etcd://10.0.0.1:2379,10.0.0.2:2379").expect("two"),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert!(parse_store("consul://x:1").expect_err("consul").to_string().contains("only store is etcd"));
        assert!(parse_store("etcd://").expect_err("empty").to_string().contains("no etcd endpoint"));
        assert!(parse_store("etcd://10.0.0.1").expect_err("port").to_string().contains("not IP:PORT"));
    }
}
