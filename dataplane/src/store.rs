//! Persistent state in an embedded transactional store (redb): networks,
//! sandboxes, endpoints and IP allocations, each record JSON under its id.
//! Every API mutation is one write transaction: it commits whole or not at all.

use std::net::IpAddr;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::domain::ipam::Pool;
use crate::domain::model::{Endpoint, Network, Sandbox};
pub use crate::domain::state::State;
use crate::error::{Error, Result};

const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
const SANDBOXES: TableDefinition<&str, &str> = TableDefinition::new("sandboxes");
/// Key: `<sandbox id>/<network id>`.
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");
/// Key: `<network id>/<ipv4>` → endpoint key. The unique index that makes a
/// double allocation impossible.
const ALLOCATIONS: TableDefinition<&str, &str> = TableDefinition::new("allocations");
/// Key: pool ID → the address pools a runtime's IPAM requests hold.
const POOLS: TableDefinition<&str, &str> = TableDefinition::new("pools");
/// Key: the rule's ID, zero-padded (listed in order) → a firewall rule.
const FIREWALL: TableDefinition<&str, &str> = TableDefinition::new("firewall");
/// The host's own settings drawn once and kept: key → JSON.
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
/// The 40-bit global ID of the host's ULA prefix (RFC 4193), as 5 bytes.
const ULA_GLOBAL_ID: &str = "ula-global-id";

fn store_err(e: impl Into<redb::Error>) -> Error {
    match e.into() {
        // The file could not be written or read (a full disk, an I/O
        // error): redb then refuses every later call until it is reopened.
        redb::Error::Io(source) => Error::StoreIo { source },
        redb::Error::PreviousIo => {
            Error::StoreIo { source: std::io::Error::other("an earlier I/O error closed the store") }
        }
        source => Error::Store { what: "the database".into(), source },
    }
}

/// Whether a store error means the file could not be written or read.
fn is_io(e: &Error) -> bool {
    matches!(e, Error::StoreIo { .. })
}

pub fn endpoint_key(sandbox_id: &str, network_id: &str) -> String {
    format!("{sandbox_id}/{network_id}")
}

fn alloc_key(network_id: &str, ip: IpAddr) -> String {
    format!("{network_id}/{ip}")
}

/// Opens the database (again, after an I/O error closed it).
type Opener = Box<dyn Fn() -> Result<Database> + Send + Sync>;

pub struct Store {
    /// None after an I/O error until the database could be opened again.
    db: std::sync::RwLock<Option<Database>>,
    open: Opener,
    path: std::path::PathBuf,
    /// The state dir, whose free space is checked before each mutation.
    dir: std::path::PathBuf,
    min_free: u64,
    /// The state as of the last commit, for readers that must not touch
    /// the database (the embedded resolver answers from it).
    view: tokio::sync::watch::Sender<std::sync::Arc<State>>,
    /// Orders publications: a later commit's state is never overwritten by
    /// an earlier one's.
    publishing: std::sync::Mutex<()>,
    /// Overlay endpoints of other hosts (the cluster's watch sets them):
    /// every snapshot carries them, none is written to the database.
    remote: std::sync::RwLock<Vec<crate::domain::model::RemoteEndpoint>>,
    /// Other hosts' claims learnt from a lost claim, before the watch
    /// brings them: kept a few seconds, whatever the watch sends meanwhile.
    provisional: std::sync::Mutex<Vec<(std::time::Instant, crate::domain::model::RemoteEndpoint)>>,
}

/// How long a claim learnt from a lost race is known without the watch.
const PROVISIONAL: std::time::Duration = std::time::Duration::from_secs(5);

/// A write transaction; dropped without [`Tx::commit`] it aborts.
pub struct Tx {
    tx: redb::WriteTransaction,
}

fn open_db(path: &Path) -> Result<Database> {
    let db = Database::create(path).map_err(|e| match store_err(e) {
        Error::Store { source, .. } => Error::Store { what: format!("open {}", path.display()), source },
        io => io,
    })?;
    with_tables(db)
}

/// Makes sure every table exists so reads never fail on a fresh store.
fn with_tables(db: Database) -> Result<Database> {
    let tx = db.begin_write().map_err(store_err)?;
    for t in [NETWORKS, SANDBOXES, ENDPOINTS, ALLOCATIONS, POOLS, SETTINGS, FIREWALL] {
        tx.open_table(t).map_err(store_err)?;
    }
    tx.commit().map_err(store_err)?;
    Ok(db)
}

impl Store {
    /// Opens (or makes) the store at `path`; mutations are refused while
    /// `dir`'s filesystem has less than `min_free` bytes free.
    pub fn open(path: &Path, dir: &Path, min_free: u64) -> Result<Self> {
        let p = path.to_path_buf();
        Self::with_opener(Box::new(move || open_db(&p)), path, dir, min_free)
    }

    fn with_opener(open: Opener, path: &Path, dir: &Path, min_free: u64) -> Result<Self> {
        let store = Store {
            db: std::sync::RwLock::new(Some(open()?)),
            open,
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            min_free,
            view: tokio::sync::watch::channel(std::sync::Arc::new(State::default())).0,
            publishing: std::sync::Mutex::new(()),
            remote: std::sync::RwLock::new(Vec::new()),
            provisional: std::sync::Mutex::new(Vec::new()),
        };
        store.publish()?;
        Ok(store)
    }

    /// The state as of the last commit, from memory (no database read).
    pub fn published(&self) -> std::sync::Arc<State> {
        self.view.borrow().clone()
    }

    /// The state as of the last commit, kept up to date.
    pub fn view(&self) -> tokio::sync::watch::Receiver<std::sync::Arc<State>> {
        self.view.subscribe()
    }

    /// Sends the committed state to the view's readers.
    fn publish(&self) -> Result<()> {
        let _order = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let state = self.state()?;
        self.view.send_replace(std::sync::Arc::new(state));
        Ok(())
    }

    /// Runs `f` on the database, opening it anew first if an earlier I/O
    /// error closed it, and closing it when `f` hits one (redb refuses
    /// every later call with "Previous I/O error" until it is reopened).
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        {
            let g = self.db.read().unwrap_or_else(|p| p.into_inner());
            if let Some(db) = g.as_ref() {
                let res = f(db);
                if !res.as_ref().is_err_and(is_io) {
                    return res;
                }
                drop(g);
                self.close();
                return res.map_err(|e| self.explain(e));
            }
        }
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some((self.open)().map_err(|e| self.explain(e))?);
            tracing::info!(store = %self.path.display(), "store opened again after an I/O error");
        }
        let db = g.as_ref().ok_or_else(|| Error::Internal("store not open".into()))?;
        let res = f(db);
        if res.as_ref().is_err_and(is_io) {
            *g = None;
        }
        res.map_err(|e| self.explain(e))
    }

    /// Drops the database handle after an I/O error (the next call reopens it).
    fn close(&self) {
        let mut g = self.db.write().unwrap_or_else(|p| p.into_inner());
        if g.take().is_some() {
            tracing::warn!(store = %self.path.display(), "store closed after an I/O error; it is opened again on the next request");
        }
    }

    /// An I/O failure said plainly: a full state dir names itself.
    fn explain(&self, e: Error) -> Error {
        match self.free_space() {
            Some(free) if is_io(&e) && free < self.min_free => {
                Error::NoSpace { dir: self.dir.display().to_string(), free }
            }
            _ => e,
        }
    }

    fn free_space(&self) -> Option<u64> {
        nix::sys::statvfs::statvfs(&self.dir).ok().map(|s| s.blocks_available() * s.fragment_size())
    }

    pub fn state(&self) -> Result<State> {
        self.with_db(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            Ok(State {
                networks: read_all(&tx, NETWORKS)?,
                sandboxes: read_all(&tx, SANDBOXES)?,
                endpoints: read_all(&tx, ENDPOINTS)?,
                pools: read_all(&tx, POOLS)?,
                firewall: read_all(&tx, FIREWALL)?,
                remote: self.remote_now(),
                overlay_skip: 0,
            })
        })
    }

    /// The other hosts' endpoints: the watch's, and those learnt since.
    fn remote_now(&self) -> Vec<crate::domain::model::RemoteEndpoint> {
        let mut remote = self.remote.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut provisional = self.provisional.lock().unwrap_or_else(|p| p.into_inner());
        provisional.retain(|(at, _)| at.elapsed() < PROVISIONAL);
        for (_, e) in provisional.iter() {
            if !remote.iter().any(|r| r.network_id == e.network_id && r.ip == e.ip) {
                remote.push(e.clone());
            }
        }
        remote
    }

    /// Another host's claim, learnt before the watch brings it.
    pub fn learn_remote(&self, ep: crate::domain::model::RemoteEndpoint) {
        self.provisional.lock().unwrap_or_else(|p| p.into_inner()).push((std::time::Instant::now(), ep));
    }

    /// Replaces the other hosts' overlay endpoints and publishes the
    /// state with them (the resolver answers their names at once).
    pub fn set_remote(&self, remote: Vec<crate::domain::model::RemoteEndpoint>) -> Result<()> {
        *self.remote.write().unwrap_or_else(|p| p.into_inner()) = remote;
        self.publish()
    }

    /// The host's ULA /48 (`fd` + a 40-bit random global ID, RFC 4193
    /// §3.2.2), drawn the first time it is asked for and kept: automatic
    /// IPv6 subnets come from it, the same across restarts.
    pub fn host_ula(&self) -> Result<ipnetwork::Ipv6Network> {
        let kept: Option<[u8; 5]> = self.with_db(|db| {
            let tx = db.begin_read().map_err(store_err)?;
            let table = tx.open_table(SETTINGS).map_err(store_err)?;
            let value = table.get(ULA_GLOBAL_ID).map_err(store_err)?;
            value
                .map(|v| {
                    serde_json::from_str(v.value())
                        .map_err(|source| Error::StoreRecord { key: ULA_GLOBAL_ID.into(), source })
                })
                .transpose()
        })?;
        let id = match kept {
            Some(id) => id,
            None => {
                use rand::RngExt;
                let id: [u8; 5] = rand::rng().random();
                let tx = self.begin()?;
                tx.put(SETTINGS, ULA_GLOBAL_ID, &id)?;
                self.commit(tx)?;
                id
            }
        };
        Ok(crate::domain::ipam6::ula_48(id))
    }

    /// Begins a mutation; refused with a clear error while the state dir
    /// is (nearly) full, before anything is changed.
    pub fn begin(&self) -> Result<Tx> {
        if let Some(free) = self.free_space()
            && free < self.min_free
        {
            return Err(Error::NoSpace { dir: self.dir.display().to_string(), free });
        }
        self.with_db(|db| Ok(Tx { tx: db.begin_write().map_err(store_err)? }))
    }

    /// Commits `tx`; an I/O failure closes the store (reopened on the next call).
    pub fn commit(&self, tx: Tx) -> Result<()> {
        match tx.tx.commit().map_err(store_err) {
            Err(e) if is_io(&e) => {
                self.close();
                Err(self.explain(e))
            }
            Err(e) => Err(e),
            Ok(()) => {
                // Committed: a failure to read it back only delays the view
                // until the next commit.
                if let Err(e) = self.publish() {
                    tracing::warn!(error = %e, "the committed state could not be published to its readers");
                }
                Ok(())
            }
        }
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
                .map_err(|source| Error::StoreRecord { key: k.value().to_string(), source })?,
        );
    }
    Ok(out)
}

impl Tx {
    fn put<T: Serialize>(&self, t: TableDefinition<&str, &str>, key: &str, v: &T) -> Result<()> {
        let json =
            serde_json::to_string(v).map_err(|source| Error::StoreRecord { key: key.to_string(), source })?;
        self.tx.open_table(t).map_err(store_err)?.insert(key, json.as_str()).map_err(store_err)?;
        Ok(())
    }
    fn del(&self, t: TableDefinition<&str, &str>, key: &str) -> Result<()> {
        self.tx.open_table(t).map_err(store_err)?.remove(key).map_err(store_err)?;
        Ok(())
    }

    pub fn put_firewall_rule(&self, r: &crate::domain::model::FirewallRule) -> Result<()> {
        self.put(FIREWALL, &format!("{:010}", r.id), r)
    }
    pub fn del_firewall_rule(&self, id: u32) -> Result<()> {
        self.del(FIREWALL, &format!("{id:010}"))
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
        {
            let mut allocs = self.tx.open_table(ALLOCATIONS).map_err(store_err)?;
            let ips = std::iter::once(IpAddr::from(e.ip)).chain(e.ip6.map(IpAddr::from));
            for ip in ips {
                let akey = alloc_key(&e.network_id, ip);
                if let Some(owner) = allocs.get(akey.as_str()).map_err(store_err)?
                    && owner.value() != key
                {
                    return Err(Error::AddressInUse { ip, network: network_name.to_string() });
                }
                allocs.insert(akey.as_str(), key.as_str()).map_err(store_err)?;
            }
        }
        self.put(ENDPOINTS, &key, e)
    }

    pub fn put_pool(&self, p: &Pool) -> Result<()> {
        self.put(POOLS, &p.id, p)
    }
    pub fn del_pool(&self, id: &str) -> Result<()> {
        self.del(POOLS, id)
    }

    pub fn del_endpoint(&self, e: &Endpoint) -> Result<()> {
        self.del(ALLOCATIONS, &alloc_key(&e.network_id, e.ip.into()))?;
        if let Some(ip6) = e.ip6 {
            self.del(ALLOCATIONS, &alloc_key(&e.network_id, ip6.into()))?;
        }
        self.del(ENDPOINTS, &endpoint_key(&e.sandbox_id, &e.network_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::*;

    fn ep(sb: &str, ip: &str) -> Endpoint {
        Endpoint {
            id: format!("ep-{sb}"),
            network_id: "n1".into(),
            sandbox_id: sb.into(),
            ifname: "eth0".into(),
            host_ifname: None,
            ip: ip.parse().expect("ip"),
            ip6: None,
            mac: [0; 6],
            aliases: vec![],
        }
    }

    /// A file backend whose writes fail with ENOSPC while `full` is set.
    #[derive(Debug)]
    struct FullDisk {
        inner: redb::backends::FileBackend,
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl FullDisk {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(nix::libc::ENOSPC))
            } else {
                Ok(())
            }
        }
    }

    type Range = std::ops::Bound<u64>;

    impl redb::StorageBackend for FullDisk {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
        fn try_lock_range(&self, a: Range, b: Range) -> std::result::Result<bool, redb::BackendError> {
            self.inner.try_lock_range(a, b)
        }
        fn try_lock_shared_range(&self, a: Range, b: Range) -> std::result::Result<bool, redb::BackendError> {
            self.inner.try_lock_shared_range(a, b)
        }
        fn lock_range(&self, a: Range, b: Range) -> std::result::Result<(), redb::BackendError> {
            self.inner.lock_range(a, b)
        }
        fn lock_shared_range(&self, a: Range, b: Range) -> std::result::Result<(), redb::BackendError> {
            self.inner.lock_shared_range(a, b)
        }
        fn unlock_range(&self, a: Range, b: Range) -> std::result::Result<(), redb::BackendError> {
            self.inner.unlock_range(a, b)
        }
        fn query_lock_range(&self, a: Range, b: Range) -> std::result::Result<bool, redb::BackendError> {
            self.inner.query_lock_range(a, b)
        }
    }

    fn net(id: &str) -> Network {
        Network {
            id: id.into(),
            name: id.into(),
            driver: crate::domain::model::Driver::Bridge,
            created: String::new(),
            num: 1,
            ipam: None,
            ipam6: None,
            internal: false,
            options: Default::default(),
            labels: Default::default(),
            device: None,
            predefined: false,
            vips: Default::default(),
            vips6: Default::default(),
            owner: None,
        }
    }

    #[test]
    fn an_io_error_does_not_poison_the_store_and_leaves_no_half_record() {
        let dir = std::env::temp_dir().join(format!("dp-store-io-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("db");
        let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, f) = (path.clone(), full.clone());
        let opener: Opener = Box::new(move || {
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .map_err(|e| Error::StoreIo { source: e })?;
            let inner = redb::backends::FileBackend::new(file).map_err(store_err)?;
            let db = redb::Builder::new()
                .create_with_backend(FullDisk { inner, full: f.clone() })
                .map_err(store_err)?;
            with_tables(db)
        });
        let store = Store::with_opener(opener, &path, &dir, 0).expect("open");
        let tx = store.begin().expect("begin");
        tx.put_network(&net("kept")).expect("put");
        store.commit(tx).expect("commit");

        // The disk fills up: the commit fails as an I/O error, and nothing of it stays.
        full.store(true, std::sync::atomic::Ordering::SeqCst);
        let tx = store.begin().expect("begin");
        tx.put_network(&net("lost")).expect("put");
        let err = store.commit(tx).expect_err("a full disk");
        assert!(matches!(err, Error::StoreIo { .. }), "{err}");
        // Space again: the store reopens by itself (no "Previous I/O error"), with
        // what was committed and without the half-made record.
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        let names: Vec<String> = store.state().expect("state").networks.into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["kept"]);
        let tx = store.begin().expect("begin after recovery");
        tx.put_network(&net("later")).expect("put");
        store.commit(tx).expect("commit after recovery");
        assert_eq!(store.state().expect("state").networks.len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn aborted_transaction_leaves_nothing_and_addresses_are_unique() {
        let dir = std::env::temp_dir().join(format!("dp-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let store = Store::open(&dir.join("db"), &dir, 0).expect("open");
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
        store.commit(tx).expect("commit");
        assert_eq!(store.state().expect("state").endpoints.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
