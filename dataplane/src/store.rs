//! Persistent state in an embedded transactional store (redb): networks,
//! sandboxes, endpoints and IP allocations, each record JSON under its id.
//! Every API mutation is one write transaction: it commits whole or not at all.

use std::net::Ipv4Addr;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};
use crate::model::{Endpoint, Network, Sandbox};

const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
const SANDBOXES: TableDefinition<&str, &str> = TableDefinition::new("sandboxes");
/// Key: `<sandbox id>/<network id>`.
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");
/// Key: `<network id>/<ipv4>` → endpoint key. The unique index that makes a
/// double allocation impossible.
const ALLOCATIONS: TableDefinition<&str, &str> = TableDefinition::new("allocations");

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

pub fn endpoint_key(sandbox_id: &str, network_id: &str) -> String {
    format!("{sandbox_id}/{network_id}")
}

fn alloc_key(network_id: &str, ip: Ipv4Addr) -> String {
    format!("{network_id}/{ip}")
}

/// Snapshot of everything in the store, read in one transaction.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub networks: Vec<Network>,
    pub sandboxes: Vec<Sandbox>,
    pub endpoints: Vec<Endpoint>,
}

impl State {
    pub fn network(&self, id_or_name: &str) -> Option<&Network> {
        self.networks
            .iter()
            .find(|n| n.id == id_or_name)
            .or_else(|| self.networks.iter().find(|n| n.name == id_or_name))
            .or_else(|| {
                let mut m = self.networks.iter().filter(|n| n.id.starts_with(id_or_name));
                match (m.next(), m.next()) {
                    (Some(n), None) if !id_or_name.is_empty() => Some(n),
                    _ => None,
                }
            })
    }
    pub fn sandbox(&self, id_or_name: &str) -> Option<&Sandbox> {
        let name = id_or_name.trim_start_matches('/');
        self.sandboxes
            .iter()
            .find(|s| s.id == name)
            .or_else(|| self.sandboxes.iter().find(|s| s.name == name))
            .or_else(|| {
                let mut m = self.sandboxes.iter().filter(|s| s.id.starts_with(name));
                match (m.next(), m.next()) {
                    (Some(s), None) if !name.is_empty() => Some(s),
                    _ => None,
                }
            })
    }
    /// Like [`State::network`], with Docker's "not found" error.
    pub fn require_network(&self, id_or_name: &str) -> Result<&Network> {
        self.network(id_or_name).ok_or_else(|| Error::NetworkNotFound(id_or_name.to_string()))
    }

    /// Like [`State::sandbox`], with Docker's "No such container" error.
    pub fn require_sandbox(&self, id_or_name: &str) -> Result<&Sandbox> {
        self.sandbox(id_or_name).ok_or_else(|| Error::SandboxNotFound(id_or_name.to_string()))
    }

    pub fn endpoints_of_network<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.network_id == network_id)
    }
    /// The endpoint a sandbox's published ports lead to, as Docker's
    /// gateway endpoint: its first endpoint (eth0, eth1, …) on a bridge
    /// network that is not `--internal`. None: its ports are reserved but
    /// not reachable (and `port`/`inspect` show none).
    pub fn publishing_endpoint<'a>(&'a self, sandbox_id: &'a str) -> Option<&'a Endpoint> {
        let ifnum = |e: &Endpoint| e.ifname.trim_start_matches("eth").parse::<u32>().unwrap_or(u32::MAX);
        self.endpoints_of_sandbox(sandbox_id)
            .filter(|e| {
                e.host_ifname.is_some()
                    && self.networks.iter().any(|n| n.id == e.network_id && n.is_bridge() && !n.internal)
            })
            .min_by_key(|e| ifnum(e))
    }

    pub fn endpoints_of_sandbox<'a>(&'a self, sandbox_id: &'a str) -> impl Iterator<Item = &'a Endpoint> {
        self.endpoints.iter().filter(move |e| e.sandbox_id == sandbox_id)
    }
}

pub struct Store {
    db: Database,
}

/// A write transaction; dropped without [`Tx::commit`] it aborts.
pub struct Tx {
    tx: redb::WriteTransaction,
}

impl Store {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path).map_err(|e| Error::Store(format!("open {}: {e}", path.display())))?;
        // Make sure every table exists so reads never fail on a fresh store.
        let tx = db.begin_write().map_err(store_err)?;
        for t in [NETWORKS, SANDBOXES, ENDPOINTS, ALLOCATIONS] {
            tx.open_table(t).map_err(store_err)?;
        }
        tx.commit().map_err(store_err)?;
        Ok(Store { db })
    }

    pub fn state(&self) -> Result<State> {
        let tx = self.db.begin_read().map_err(store_err)?;
        Ok(State {
            networks: read_all(&tx, NETWORKS)?,
            sandboxes: read_all(&tx, SANDBOXES)?,
            endpoints: read_all(&tx, ENDPOINTS)?,
        })
    }

    pub fn begin(&self) -> Result<Tx> {
        Ok(Tx { tx: self.db.begin_write().map_err(store_err)? })
    }
}

fn read_all<T: DeserializeOwned>(
    tx: &redb::ReadTransaction,
    t: TableDefinition<&str, &str>,
) -> Result<Vec<T>> {
    let table = tx.open_table(t).map_err(store_err)?;
    let mut out = Vec::new();
    for row in table.iter().map_err(store_err)? {
        let (k, v) = row.map_err(store_err)?;
        out.push(
            serde_json::from_str(v.value())
                .map_err(|e| Error::Store(format!("record {} is corrupt: {e}", k.value())))?,
        );
    }
    Ok(out)
}

impl Tx {
    fn put<T: Serialize>(&self, t: TableDefinition<&str, &str>, key: &str, v: &T) -> Result<()> {
        let json = serde_json::to_string(v).map_err(store_err)?;
        self.tx.open_table(t).map_err(store_err)?.insert(key, json.as_str()).map_err(store_err)?;
        Ok(())
    }
    fn del(&self, t: TableDefinition<&str, &str>, key: &str) -> Result<()> {
        self.tx.open_table(t).map_err(store_err)?.remove(key).map_err(store_err)?;
        Ok(())
    }

    pub fn put_network(&self, n: &Network) -> Result<()> {
        self.put(NETWORKS, &n.id, n)
    }
    pub fn del_network(&self, id: &str) -> Result<()> {
        self.del(NETWORKS, id)
    }
    pub fn put_sandbox(&self, s: &Sandbox) -> Result<()> {
        self.put(SANDBOXES, &s.id, s)
    }
    pub fn del_sandbox(&self, id: &str) -> Result<()> {
        self.del(SANDBOXES, id)
    }

    /// Stores an endpoint and claims its address; fails if the address is
    /// already claimed in that network.
    pub fn put_endpoint(&self, e: &Endpoint, network_name: &str) -> Result<()> {
        let key = endpoint_key(&e.sandbox_id, &e.network_id);
        let akey = alloc_key(&e.network_id, e.ip);
        {
            let mut allocs = self.tx.open_table(ALLOCATIONS).map_err(store_err)?;
            if let Some(owner) = allocs.get(akey.as_str()).map_err(store_err)?
                && owner.value() != key
            {
                return Err(Error::AddressInUse { ip: e.ip, network: network_name.to_string() });
            }
            allocs.insert(akey.as_str(), key.as_str()).map_err(store_err)?;
        }
        self.put(ENDPOINTS, &key, e)
    }

    pub fn del_endpoint(&self, e: &Endpoint) -> Result<()> {
        self.del(ALLOCATIONS, &alloc_key(&e.network_id, e.ip))?;
        self.del(ENDPOINTS, &endpoint_key(&e.sandbox_id, &e.network_id))
    }

    pub fn commit(self) -> Result<()> {
        self.tx.commit().map_err(store_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    fn ep(sb: &str, ip: &str) -> Endpoint {
        Endpoint {
            id: format!("ep-{sb}"),
            network_id: "n1".into(),
            sandbox_id: sb.into(),
            ifname: "eth0".into(),
            host_ifname: None,
            ip: ip.parse().expect("ip"),
            mac: [0; 6],
            aliases: vec![],
        }
    }

    #[test]
    fn aborted_transaction_leaves_nothing_and_addresses_are_unique() {
        let dir = std::env::temp_dir().join(format!("dp-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let store = Store::open(&dir.join("db")).expect("open");
        {
            let tx = store.begin().expect("begin");
            tx.put_endpoint(&ep("a", "10.0.0.2"), "n").expect("put");
            // dropped: aborted
        }
        assert!(store.state().expect("state").endpoints.is_empty());
        let tx = store.begin().expect("begin");
        tx.put_endpoint(&ep("a", "10.0.0.2"), "n").expect("put");
        let err = tx.put_endpoint(&ep("b", "10.0.0.2"), "n").expect_err("duplicate address");
        assert!(matches!(err, Error::AddressInUse { .. }), "{err}");
        tx.commit().expect("commit");
        assert_eq!(store.state().expect("state").endpoints.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
