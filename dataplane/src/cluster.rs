//! The cluster store (etcd v3, `--cluster-store`): this host registers
//! itself under a lease it keeps alive; overlay networks and their
//! endpoints live here, and a watch brings every host the others' changes.
//! It is the one owner of the etcd connection.
//!
//! Key layout (read it with `etcdctl get --prefix /dataplane/v1/`):
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `/dataplane/v1/nodes/<node id>` | `{"id", "address", "hostname", "joined"}` (JSON) | bound to the node's lease: gone a TTL after its daemon stops |
//! | `/dataplane/v1/networks/<network id>` | the network record (JSON; `num` is its VNI) | until `network rm` |
//! | `/dataplane/v1/endpoints/<network id>/<IPv4>` | `{"node", "underlay", "sandbox_id", "name", "hostname", "aliases", "ip", "ip6", "mac", …}` | bound to the owning node's lease |
//! | `/dataplane/v1/addresses6/<network id>/<IPv6>` | the same record: the claim of its IPv6 address (dual stack) | bound to the owning node's lease |
//! | `/dataplane/v1/vips/<network id>/<alias>` | `{"network_id", "alias", "ip", "ip6"}`: the alias's virtual IPs (`-o lb=vip`) | until `network rm` |
//! | `/dataplane/v1/vip-addresses/<network id>/<IPv4>` | the alias holding the address (no sandbox may claim it) | until `network rm` |
//! | `/dataplane/v1/vip-addresses6/<network id>/<IPv6>` | as above, for an IPv6 VIP | until `network rm` |
//!
//! Every change is one transaction: a network is created only if no
//! network key changed since the list it was planned against (names,
//! subnets and VNIs are unique cluster-wide), removed only while no
//! endpoint key exists under it, and an address is claimed only if its key
//! does not exist and its network's does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};

use crate::domain::model::{Network, RemoteEndpoint};
use crate::error::{Error, Result};

/// Prefix of every key this project writes.
pub const PREFIX: &str = "/dataplane/v1/";
/// Seconds a node's registration outlives its last keep-alive.
pub const LEASE_TTL: i64 = 5;
/// How long one request to the store may take before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn nodes_prefix() -> String {
    format!("{PREFIX}nodes/")
}
fn networks_prefix() -> String {
    format!("{PREFIX}networks/")
}
fn network_key(id: &str) -> String {
    format!("{PREFIX}networks/{id}")
}
fn endpoints_prefix(network_id: &str) -> String {
    format!("{PREFIX}endpoints/{network_id}/")
}
fn endpoint_key(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{PREFIX}endpoints/{network_id}/{ip}")
}
/// An IPv6 overlay address's claim (the same record as its IPv4 one's).
fn address6_key(network_id: &str, ip: std::net::Ipv6Addr) -> String {
    format!("{PREFIX}addresses6/{network_id}/{ip}")
}
/// The keys holding `ep`'s claims: its IPv4 address's, and its IPv6 one's.
fn claim_keys(ep: &RemoteEndpoint) -> Vec<String> {
    std::iter::once(endpoint_key(&ep.network_id, ep.ip))
        .chain(ep.ip6.map(|ip6| address6_key(&ep.network_id, ip6)))
        .collect()
}
fn vips_prefix(network_id: &str) -> String {
    format!("{PREFIX}vips/{network_id}/")
}
fn vip_key(network_id: &str, alias: &str) -> String {
    format!("{PREFIX}vips/{network_id}/{alias}")
}
fn vip_addrs_prefix(network_id: &str) -> String {
    format!("{PREFIX}vip-addresses/{network_id}/")
}
fn vip_addr_key(network_id: &str, ip: std::net::Ipv4Addr) -> String {
    format!("{PREFIX}vip-addresses/{network_id}/{ip}")
}
fn vip_addrs6_prefix(network_id: &str) -> String {
    format!("{PREFIX}vip-addresses6/{network_id}/")
}
fn vip_addr6_key(network_id: &str, ip: std::net::Ipv6Addr) -> String {
    format!("{PREFIX}vip-addresses6/{network_id}/{ip}")
}

fn store_err(what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
    let what = what.into();
    move |source| Error::Cluster { what, source }
}

fn record_err(key: &str) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |source| Error::StoreRecord { key: key.to_string(), source }
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

/// The cluster as the watch last saw it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// False until the first full list arrived.
    pub complete: bool,
    pub networks: Vec<Network>,
    /// Every overlay endpoint, this host's included.
    pub endpoints: Vec<RemoteEndpoint>,
    /// Virtual IPs of aliases on `lb=vip` overlay networks.
    pub vips: Vec<VipRecord>,
}

/// The virtual IP of an alias on an overlay network (the same on every host).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VipRecord {
    pub network_id: String,
    pub alias: String,
    pub ip: std::net::Ipv4Addr,
    /// Its IPv6 VIP on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<std::net::Ipv6Addr>,
}

/// What a claim for an alias's virtual IP found.
#[derive(Debug, PartialEq)]
pub enum VipClaim {
    Claimed,
    /// The alias has its VIPs already (another host made them first).
    Exists(std::net::Ipv4Addr, Option<std::net::Ipv6Addr>),
    /// The address is a sandbox's or another alias's.
    AddressTaken,
}

/// What a claim for an address found.
#[derive(Debug)]
pub enum Claim {
    Claimed,
    /// Another sandbox holds it (its record).
    Taken(Box<RemoteEndpoint>),
    /// An alias's virtual IP holds it.
    TakenByVip,
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

/// One client per etcd endpoint, and which one is in use: a request that
/// fails for want of its member (refused, timed out, unavailable) is sent
/// to the next member — etcd-client leaves failover to its user.
struct Pool {
    clients: Vec<Client>,
    current: AtomicUsize,
}

/// Whether a failure may be the member's alone (another may answer).
fn transient(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::LeaseKeepAliveError(_) => true,
        // Cancelled, Unknown, DeadlineExceeded, Unavailable.
        E::GRpcStatus(s) => matches!(i32::from(s.code()), 1 | 2 | 4 | 14),
        _ => false,
    }
}

impl Pool {
    async fn connect(endpoints: &[String]) -> Result<Pool> {
        let mut clients = Vec::new();
        for e in endpoints {
            let opts = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(REQUEST_TIMEOUT)
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
                .with_keep_alive_while_idle(true);
            // One endpoint: connected lazily (a member down now is tried later).
            clients.push(
                Client::connect([e.as_str()], Some(opts))
                    .await
                    .map_err(store_err(format!("connecting to {e}")))?,
            );
        }
        Ok(Pool { clients, current: AtomicUsize::new(0) })
    }

    /// The member in use and its client.
    fn current(&self) -> (usize, Client) {
        let i = self.current.load(Ordering::SeqCst) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Member `i` failed: the next one is used from now on.
    fn failed(&self, i: usize) {
        let _ = self.current.compare_exchange(
            i,
            (i + 1) % self.clients.len(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Runs `call` on the member in use, then on each other member while
    /// the failure is the member's.
    async fn call<T, F>(&self, call: impl Fn(Client) -> F) -> std::result::Result<T, etcd_client::Error>
    where
        F: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut last = None;
        for _ in 0..self.clients.len() {
            let (i, client) = self.current();
            match call(client).await {
                Err(e) if transient(&e) => {
                    self.failed(i);
                    last = Some(e);
                }
                res => return res,
            }
        }
        Err(last.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no etcd endpoint".into())))
    }
}

/// This host's membership: its registration and its claims, kept alive
/// in the background, and the watch of the others'.
pub struct Cluster {
    pool: Arc<Pool>,
    me: Node,
    store: String,
    lease: Arc<AtomicI64>,
    /// This host's endpoint keys and values: put again under a new lease
    /// when the old one expired (the store was away longer than the TTL).
    mine: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    snapshot: tokio::sync::watch::Receiver<Arc<Snapshot>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Cluster {
    /// Connects to `endpoints` and registers `me` under a lease: the one
    /// recorded in `lease_file` by the previous run when it is still alive
    /// (a restart within the TTL keeps every claim), else a new one.
    pub async fn join(endpoints: &[String], me: Node, lease_file: &std::path::Path) -> Result<Cluster> {
        let store = endpoints.join(",");
        let pool = Arc::new(Pool::connect(endpoints).await?);
        let previous = std::fs::read_to_string(lease_file).ok().and_then(|t| t.trim().parse::<i64>().ok());
        let registered: Result<(i64, bool)> = async {
            let reused = match previous {
                Some(id) => lease_alive(&pool, id).await.then_some(id),
                None => None,
            };
            let lease = match reused {
                Some(id) => id,
                None => grant(&pool).await?,
            };
            put_node(&pool, &me, lease).await?;
            Ok((lease, reused.is_some()))
        }
        .await;
        // A store that does not answer yet does not keep the daemon down:
        // it joins in the background (the keep-alive task registers as soon
        // as the store answers, under the previous lease if still alive);
        // overlay mutations are refused until then.
        let (lease, reused) = match registered {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(store = %store, error = %e, "the cluster store does not answer; joining when it does");
                (previous.unwrap_or(0), false)
            }
        };
        if lease != 0
            && let Err(e) = std::fs::write(lease_file, lease.to_string())
        {
            tracing::warn!(file = %lease_file.display(), error = %e, "cannot record the cluster lease");
        }
        let lease = Arc::new(AtomicI64::new(lease));
        let mine = Arc::new(Mutex::new(BTreeMap::new()));
        let (tx, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        let tasks = vec![
            tokio::spawn(keep_alive(
                Arc::clone(&pool),
                me.clone(),
                Arc::clone(&lease),
                Arc::clone(&mine),
                lease_file.to_path_buf(),
            )),
            tokio::spawn(watch(Arc::clone(&pool), store.clone(), tx)),
        ];
        tracing::info!(node = %me.id, address = %me.address, store = %store, lease_reused = reused, "joined the cluster");
        Ok(Cluster { pool, me, store, lease, mine, snapshot: rx, tasks })
    }

    /// Every key under `prefix`, failed over between the members.
    async fn list(&self, prefix: String, what: &str) -> Result<etcd_client::GetResponse> {
        let p = &prefix;
        self.pool
            .call(
                |c| async move { c.kv_client().get(p.clone(), Some(GetOptions::new().with_prefix())).await },
            )
            .await
            .map_err(self.err(what))
    }

    /// One transaction, failed over between the members.
    async fn txn(&self, txn: Txn) -> std::result::Result<etcd_client::TxnResponse, etcd_client::Error> {
        let t = &txn;
        self.pool.call(|c| async move { c.kv_client().txn(t.clone()).await }).await
    }

    /// An error of a request to the store, naming it (its endpoints).
    fn err(&self, what: impl Into<String>) -> impl FnOnce(etcd_client::Error) -> Error {
        store_err(format!("{} (at {})", what.into(), self.store))
    }

    pub fn me(&self) -> &Node {
        &self.me
    }

    /// The cluster as the watch sees it; changes as the store does.
    pub fn snapshot(&self) -> tokio::sync::watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Every registered host (those whose lease is alive).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let resp = self.list(nodes_prefix(), "listing the nodes").await?;
        let mut out: Vec<Node> = resp.kvs().iter().filter_map(|k| decode(k.key(), k.value())).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The overlay networks, read now, with the store's revision of the read.
    pub async fn networks(&self) -> Result<(Vec<Network>, i64)> {
        let resp = self.list(networks_prefix(), "listing the overlay networks").await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.kvs().iter().filter_map(|k| decode(k.key(), k.value())).collect(), rev))
    }

    /// Records `net` if no network changed since `revision` (what it was
    /// planned against); false when one did (plan again).
    pub async fn create_network(&self, net: &Network, revision: i64) -> Result<bool> {
        let key = network_key(&net.id);
        let value = serde_json::to_vec(net).map_err(record_err(&key))?;
        let txn = Txn::new()
            .when([Compare::mod_revision(networks_prefix(), CompareOp::Less, revision + 1).with_prefix()])
            .and_then([TxnOp::put(key, value, None)]);
        let resp = self.txn(txn).await.map_err(self.err(format!("creating network {}", net.name)))?;
        Ok(resp.succeeded())
    }

    /// Removes network `id` unless an endpoint (on any host) is on it;
    /// returns the nodes holding endpoints when refused.
    pub async fn remove_network(&self, id: &str) -> Result<std::result::Result<(), Vec<String>>> {
        let txn = Txn::new()
            .when([Compare::version(endpoints_prefix(id), CompareOp::Equal, 0).with_prefix()])
            .and_then([
                TxnOp::delete(network_key(id), None),
                TxnOp::delete(vips_prefix(id), Some(etcd_client::DeleteOptions::new().with_prefix())),
                TxnOp::delete(vip_addrs_prefix(id), Some(etcd_client::DeleteOptions::new().with_prefix())),
                TxnOp::delete(vip_addrs6_prefix(id), Some(etcd_client::DeleteOptions::new().with_prefix())),
            ])
            .or_else([TxnOp::get(endpoints_prefix(id), Some(GetOptions::new().with_prefix()))]);
        let resp = self.txn(txn).await.map_err(self.err("removing an overlay network"))?;
        if resp.succeeded() {
            return Ok(Ok(()));
        }
        let mut holders: Vec<String> = Vec::new();
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                for kv in g.kvs() {
                    if let Some(e) = decode::<RemoteEndpoint>(kv.key(), kv.value())
                        && !holders.contains(&e.node)
                    {
                        holders.push(e.node);
                    }
                }
            }
        }
        Ok(Err(holders))
    }

    /// The lease this host's claims live under; refused while the host
    /// has not registered yet (a key without a lease would outlive it).
    fn lease(&self) -> Result<i64> {
        match self.lease.load(Ordering::SeqCst) {
            0 => Err(Error::Unsupported(format!(
                "this host has not joined the cluster yet: the cluster store (etcd) at {} has not answered since the daemon started",
                self.store
            ))),
            l => Ok(l),
        }
    }

    /// Keeps `ep` among this host's claims without writing it (the store
    /// did not answer): it is written when the host registers again.
    pub fn remember(&self, ep: &RemoteEndpoint) {
        if let Ok(value) = serde_json::to_vec(ep) {
            self.keep(&claim_keys(ep), &value);
        }
    }

    /// Claims `ep.ip` (and `ep.ip6`) on its network for this host (under its lease).
    pub async fn claim(&self, ep: &RemoteEndpoint) -> Result<Claim> {
        let keys = claim_keys(ep);
        let key = keys[0].clone();
        let value = serde_json::to_vec(ep).map_err(record_err(&key))?;
        let lease = self.lease()?;
        let free = keys.iter().map(|k| Compare::create_revision(k.clone(), CompareOp::Equal, 0));
        let puts = |keys: &[String]| -> Vec<TxnOp> {
            keys.iter()
                .map(|k| TxnOp::put(k.clone(), value.clone(), Some(PutOptions::new().with_lease(lease))))
                .collect()
        };
        let mut lost = vec![TxnOp::get(key.clone(), None), TxnOp::get(network_key(&ep.network_id), None)];
        lost.extend(keys[1..].iter().map(|k| TxnOp::get(k.clone(), None)));
        let vip6 =
            ep.ip6.map(|a| Compare::create_revision(vip_addr6_key(&ep.network_id, a), CompareOp::Equal, 0));
        let txn = Txn::new()
            .when(
                free.chain(vip6)
                    .chain([
                        Compare::create_revision(vip_addr_key(&ep.network_id, ep.ip), CompareOp::Equal, 0),
                        Compare::version(network_key(&ep.network_id), CompareOp::Greater, 0),
                    ])
                    .collect::<Vec<_>>(),
            )
            .and_then(puts(&keys))
            .or_else(lost);
        let resp = self.txn(txn).await.map_err(self.err(format!("claiming address {}", ep.ip)))?;
        if resp.succeeded() {
            self.keep(&keys, &value);
            return Ok(Claim::Claimed);
        }
        let holder = lost_claim(&resp, &ep.network_id)?;
        match holder.as_ref().and_then(|(k, v)| decode::<RemoteEndpoint>(k, v)) {
            // Ours already (a claim repeated after a restart): held anew under this lease.
            Some(held) if held.node == self.me.id && held.sandbox_id == ep.sandbox_id => {
                let txn = Txn::new().and_then(puts(&keys));
                self.txn(txn).await.map_err(self.err(format!("claiming address {}", ep.ip)))?;
                self.keep(&keys, &value);
                Ok(Claim::Claimed)
            }
            Some(held) => Ok(Claim::Taken(Box::new(held))),
            // No sandbox holds it: an alias's virtual IP does.
            None if holder.is_none() => Ok(Claim::TakenByVip),
            None => Err(Error::Unsupported(format!("address {} is held by an unreadable record", ep.ip))),
        }
    }

    /// Notes `keys` as this host's claims, holding `value`.
    fn keep(&self, keys: &[String], value: &[u8]) {
        let mut mine = lock(&self.mine);
        for k in keys {
            mine.insert(k.clone(), value.to_vec());
        }
    }

    /// Writes this host's record `ep` again if it changed (its liveness),
    /// under the current lease.
    pub async fn refresh(&self, ep: &RemoteEndpoint) -> Result<()> {
        let keys = claim_keys(ep);
        let value = serde_json::to_vec(ep).map_err(record_err(&keys[0]))?;
        if lock(&self.mine).get(&keys[0]).is_none_or(|v| *v == value) {
            return Ok(());
        }
        let lease = self.lease()?;
        let puts: Vec<TxnOp> = keys
            .iter()
            .map(|k| TxnOp::put(k.clone(), value.clone(), Some(PutOptions::new().with_lease(lease))))
            .collect();
        self.txn(Txn::new().and_then(puts)).await.map_err(self.err(format!("updating address {}", ep.ip)))?;
        self.keep(&keys, &value);
        Ok(())
    }

    /// Records `ip` (and `ip6`) as the virtual IPs of `alias` on network
    /// `network_id`, unless the alias has them already or a sandbox or
    /// alias holds either address.
    pub async fn claim_vip(
        &self,
        network_id: &str,
        alias: &str,
        ip: std::net::Ipv4Addr,
        ip6: Option<std::net::Ipv6Addr>,
    ) -> Result<VipClaim> {
        let key = vip_key(network_id, alias);
        let record = VipRecord { network_id: network_id.to_string(), alias: alias.to_string(), ip, ip6 };
        let value = serde_json::to_vec(&record).map_err(record_err(&key))?;
        let mut when = vec![
            Compare::create_revision(key.clone(), CompareOp::Equal, 0),
            Compare::create_revision(vip_addr_key(network_id, ip), CompareOp::Equal, 0),
            Compare::create_revision(endpoint_key(network_id, ip), CompareOp::Equal, 0),
            Compare::version(network_key(network_id), CompareOp::Greater, 0),
        ];
        let mut puts =
            vec![TxnOp::put(key.clone(), value, None), TxnOp::put(vip_addr_key(network_id, ip), alias, None)];
        if let Some(a) = ip6 {
            when.push(Compare::create_revision(vip_addr6_key(network_id, a), CompareOp::Equal, 0));
            when.push(Compare::create_revision(address6_key(network_id, a), CompareOp::Equal, 0));
            puts.push(TxnOp::put(vip_addr6_key(network_id, a), alias, None));
        }
        let txn = Txn::new()
            .when(when)
            .and_then(puts)
            .or_else([TxnOp::get(key.clone(), None), TxnOp::get(network_key(network_id), None)]);
        let resp = self.txn(txn).await.map_err(self.err(format!("claiming virtual IP {ip} for {alias}")))?;
        if resp.succeeded() {
            return Ok(VipClaim::Claimed);
        }
        let held = lost_claim(&resp, network_id)?;
        match held.and_then(|(k, v)| decode::<VipRecord>(&k, &v)) {
            Some(existing) => Ok(VipClaim::Exists(existing.ip, existing.ip6)),
            None => Ok(VipClaim::AddressTaken),
        }
    }

    /// Gives address `ip` (and `ip6`) of network `network_id` back.
    pub async fn release(
        &self,
        network_id: &str,
        ip: std::net::Ipv4Addr,
        ip6: Option<std::net::Ipv6Addr>,
    ) -> Result<()> {
        let keys: Vec<String> = std::iter::once(endpoint_key(network_id, ip))
            .chain(ip6.map(|a| address6_key(network_id, a)))
            .collect();
        let deletes: Vec<TxnOp> = keys.iter().map(|k| TxnOp::delete(k.clone(), None)).collect();
        self.txn(Txn::new().and_then(deletes)).await.map_err(self.err(format!("releasing address {ip}")))?;
        let mut mine = lock(&self.mine);
        for k in &keys {
            mine.remove(k);
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a claim transaction that failed read (its `or_else`: the key
/// claimed, its network's, then any further key claimed with it): the
/// first holder found, or the network is gone.
fn lost_claim(resp: &etcd_client::TxnResponse, network_id: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let gets: Vec<_> = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| if let TxnOpResponse::Get(g) = r { Some(g) } else { None })
        .collect();
    if gets.get(1).is_none_or(|g| g.kvs().is_empty()) {
        return Err(Error::NetworkNotFound(network_id.to_string()));
    }
    let held = gets.iter().enumerate().filter(|(i, _)| *i != 1).find_map(|(_, g)| g.kvs().first());
    Ok(held.map(|kv| (kv.key().to_vec(), kv.value().to_vec())))
}

/// A record of the store, or None (logged) when it does not decode.
fn decode<T: serde::de::DeserializeOwned>(key: &[u8], value: &[u8]) -> Option<T> {
    serde_json::from_slice(value)
        .inspect_err(|e| {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "unreadable record in the cluster store")
        })
        .ok()
}

async fn grant(pool: &Pool) -> Result<i64> {
    let granted = pool
        .call(|c| async move { c.lease_client().grant(LEASE_TTL, None).await })
        .await
        .map_err(store_err("granting a lease"))?;
    Ok(granted.id())
}

async fn lease_alive(pool: &Pool, id: i64) -> bool {
    pool.call(|c| async move { c.lease_client().time_to_live(id, None).await })
        .await
        .is_ok_and(|r| r.ttl() > 0)
}

async fn put_node(pool: &Pool, me: &Node, lease: i64) -> Result<()> {
    let key = format!("{}{}", nodes_prefix(), me.id);
    let value = serde_json::to_vec(me).map_err(record_err(&key))?;
    let (k, v) = (&key, &value);
    pool.call(|c| async move {
        c.kv_client().put(k.clone(), v.clone(), Some(PutOptions::new().with_lease(lease))).await
    })
    .await
    .map_err(store_err("registering this node"))?;
    Ok(())
}

/// Keeps the lease alive (every TTL/3). When the store was away longer
/// than the TTL the lease is gone: registers again under a new one and
/// puts this host's claims back (an address taken meanwhile is logged).
async fn keep_alive(
    pool: Arc<Pool>,
    me: Node,
    lease: Arc<AtomicI64>,
    mine: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    lease_file: std::path::PathBuf,
) {
    let period = Duration::from_millis((LEASE_TTL as u64 * 1000) / 3);
    loop {
        let id = lease.load(Ordering::SeqCst);
        let (member, client) = pool.current();
        let alive: Result<()> = async {
            let (mut keeper, mut stream) =
                client.lease_client().keep_alive(id).await.map_err(store_err("keeping the lease"))?;
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
            tracing::warn!(node = %me.id, error = %e, "cluster lease not kept alive through this member; trying the next");
            pool.failed(member);
        }
        tokio::time::sleep(period).await;
        if lease_alive(&pool, id).await {
            continue;
        }
        let renewed: Result<i64> = async {
            let new = grant(&pool).await?;
            put_node(&pool, &me, new).await?;
            Ok(new)
        }
        .await;
        match renewed {
            Ok(new) => {
                lease.store(new, Ordering::SeqCst);
                let _ = std::fs::write(&lease_file, new.to_string());
                let claims: Vec<(String, Vec<u8>)> =
                    lock(&mine).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                for (key, value) in claims {
                    let txn = Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(key.clone(), value, Some(PutOptions::new().with_lease(new)))]);
                    let t = &txn;
                    match pool.call(|c| async move { c.kv_client().txn(t.clone()).await }).await {
                        Ok(r) if r.succeeded() => {}
                        Ok(_) => {
                            tracing::error!(key, "an address of this host was taken while its lease was lost")
                        }
                        Err(e) => tracing::warn!(key, error = %e, "cannot claim an address again"),
                    }
                }
                tracing::info!(node = %me.id, "registered with the cluster again under a new lease");
            }
            Err(e) => tracing::warn!(node = %me.id, error = %e, "cannot register with the cluster store yet"),
        }
    }
}

/// Lists every key, then watches from the list's revision; on any break
/// (the store away, a compacted revision) lists again. Each change sends
/// a whole new [`Snapshot`].
async fn watch(pool: Arc<Pool>, store: String, tx: tokio::sync::watch::Sender<Arc<Snapshot>>) {
    // Logged once per outage: the first failure after a list that worked.
    let mut quiet = false;
    loop {
        let (member, client) = pool.current();
        let mut listed = false;
        if let Err(e) = watch_once(&client, &tx, &mut listed).await {
            pool.failed(member);
            if listed || !quiet {
                tracing::warn!(store = %store, error = %e, "cluster watch broken; listing again when the store answers");
            }
            quiet = !listed;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn watch_once(
    client: &Client,
    tx: &tokio::sync::watch::Sender<Arc<Snapshot>>,
    listed: &mut bool,
) -> Result<()> {
    let resp = client
        .kv_client()
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .map_err(store_err("listing the cluster"))?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let mut keys: BTreeMap<Vec<u8>, Vec<u8>> =
        resp.kvs().iter().map(|k| (k.key().to_vec(), k.value().to_vec())).collect();
    tx.send_replace(Arc::new(snapshot_of(&keys)));
    *listed = true;
    tracing::debug!(revision = rev, keys = keys.len(), "cluster listed");
    let mut stream = client
        .watch_client()
        .watch(PREFIX, Some(WatchOptions::new().with_prefix().with_start_revision(rev + 1)))
        .await
        .map_err(store_err("watching the cluster"))?;
    while let Some(resp) = stream.message().await.map_err(store_err("watching the cluster"))? {
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err(Error::Unsupported(format!(
                "the watch was cancelled (compacted at {}): {}",
                resp.compact_revision(),
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            continue;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            match ev.event_type() {
                EventType::Put => keys.insert(kv.key().to_vec(), kv.value().to_vec()),
                EventType::Delete => keys.remove(kv.key()),
            };
        }
        tx.send_replace(Arc::new(snapshot_of(&keys)));
    }
    Err(Error::Unsupported("the store ended the watch".into()))
}

fn snapshot_of(keys: &BTreeMap<Vec<u8>, Vec<u8>>) -> Snapshot {
    let mut snap = Snapshot { complete: true, ..Snapshot::default() };
    let (networks, endpoints, vips) = (
        networks_prefix().into_bytes(),
        format!("{PREFIX}endpoints/").into_bytes(),
        format!("{PREFIX}vips/").into_bytes(),
    );
    for (k, v) in keys {
        if k.starts_with(&vips) {
            snap.vips.extend(decode(k, v));
        } else if k.starts_with(&networks) {
            snap.networks.extend(decode(k, v));
        } else if k.starts_with(&endpoints) {
            snap.endpoints.extend(decode(k, v));
        }
    }
    snap
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
