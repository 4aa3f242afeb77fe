//! Map definitions. Names and value types come from `dataplane-common`; every
//! map is pinned by name under the daemon's bpffs directory so enforcement
//! survives a daemon restart.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use dataplane_common::{
    Backend, Config, DnsPorts, LocalTarget, EVENTS_RING_BYTES, MAX_DNS, EventRate, LbStatKey, LbTable, MAX_LB, MAX_LB_STATS, Counter, CtEntry, CtKey, Endpoint, MAX_CT, MAX_ENDPOINTS, MAX_HOST_IPS, MAX_SERVICES,
    MAX_SOCK_NAT, MAX_SUBNETS, METRICS_LEN, NetworkInfo, NetworkInfo6, RemoteTarget, MAX_REMOTE, ServiceKey, SockNatKey, SockNatOrig, SubnetKey, SubnetKey6,
    Backend6, CtEntry6, CtKey6, MAX_CT6, ServiceKey6,
};

/// Flag for LPM tries: the kernel requires BPF_F_NO_PREALLOC.
const BPF_F_NO_PREALLOC: u32 = 1;

#[map(name = "DP_ENDPOINTS")]
pub static ENDPOINTS: HashMap<u32, Endpoint> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "DP_LOCAL")]
pub static LOCAL: HashMap<[u8; 4], LocalTarget> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "DP_REMOTE")]
pub static REMOTE: HashMap<[u8; 4], RemoteTarget> = HashMap::pinned(MAX_REMOTE, 0);

#[map(name = "DP_LOCAL6")]
pub static LOCAL6: HashMap<[u8; 16], LocalTarget> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "DP_REMOTE6")]
pub static REMOTE6: HashMap<[u8; 16], RemoteTarget> = HashMap::pinned(MAX_REMOTE, 0);

#[map(name = "DP_SUBNETS")]
pub static SUBNETS: LpmTrie<SubnetKey, NetworkInfo> = LpmTrie::pinned(MAX_SUBNETS, BPF_F_NO_PREALLOC);

#[map(name = "DP_SUBNETS6")]
pub static SUBNETS6: LpmTrie<SubnetKey6, NetworkInfo6> = LpmTrie::pinned(MAX_SUBNETS, BPF_F_NO_PREALLOC);

#[map(name = "DP_METRICS")]
pub static METRICS: PerCpuArray<Counter> = PerCpuArray::pinned(METRICS_LEN, 0);

#[map(name = "DP_SERVICES")]
pub static SERVICES: HashMap<ServiceKey, Backend> = HashMap::pinned(MAX_SERVICES, 0);

#[map(name = "DP_HOST_IPS")]
pub static HOST_IPS: HashMap<[u8; 4], u32> = HashMap::pinned(MAX_HOST_IPS, 0);

#[map(name = "DP_CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::pinned(MAX_CT, 0);

#[map(name = "DP_SERVICES6")]
pub static SERVICES6: HashMap<ServiceKey6, Backend6> = HashMap::pinned(MAX_SERVICES, 0);

#[map(name = "DP_HOST_IPS6")]
pub static HOST_IPS6: HashMap<[u8; 16], u32> = HashMap::pinned(MAX_HOST_IPS, 0);

#[map(name = "DP_CT6")]
pub static CT6: LruHashMap<CtKey6, CtEntry6> = LruHashMap::pinned(MAX_CT6, 0);

#[map(name = "DP_NAT46")]
pub static NAT46: LruHashMap<CtKey6, [u8; 16]> = LruHashMap::pinned(MAX_CT6, 0);

#[map(name = "DP_UPLINK6")]
pub static UPLINK6: Array<[u8; 16]> = Array::pinned(1, 0);

#[map(name = "DP_CONFIG")]
pub static CONFIG: Array<Config> = Array::pinned(1, 0);

#[map(name = "DP_SOCK_NAT")]
pub static SOCK_NAT: LruHashMap<SockNatKey, SockNatOrig> = LruHashMap::pinned(MAX_SOCK_NAT, 0);

#[map(name = "DP_SOCK_NAT6")]
pub static SOCK_NAT6: LruHashMap<dataplane_common::SockNatKey6, dataplane_common::SockNatOrig6> =
    LruHashMap::pinned(MAX_SOCK_NAT, 0);

#[map(name = "DP_LB")]
pub static LB: HashMap<[u8; 4], LbTable> = HashMap::pinned(MAX_LB, BPF_F_NO_PREALLOC);

#[map(name = "DP_LB6")]
pub static LB6: HashMap<[u8; 16], [u8; 4]> = HashMap::pinned(MAX_LB, 0);

#[map(name = "DP_ADDR6")]
pub static ADDR6: HashMap<[u8; 4], [u8; 16]> = HashMap::pinned(MAX_ENDPOINTS, 0);

#[map(name = "DP_LB_STATS")]
pub static LB_STATS: PerCpuHashMap<LbStatKey, u64> = PerCpuHashMap::pinned(MAX_LB_STATS, 0);

#[map(name = "DP_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENTS_RING_BYTES, 0);

#[map(name = "DP_SHAPED")]
pub static SHAPED: Array<u32> = Array::pinned(1, 0);

#[map(name = "DP_MONITOR")]
pub static MONITOR: Array<u32> = Array::pinned(1, 0);

/// Per-CPU scratch space for messages built whole (translated ICMP
/// errors): kept off the 512-byte stack. Nothing outside a program run
/// reads it.
#[map(name = "DP_SCRATCH")]
pub static SCRATCH: PerCpuArray<[u8; 128]> = PerCpuArray::pinned(1, 0);

#[map(name = "DP_FIREWALL")]
pub static FIREWALL: LpmTrie<dataplane_common::FwKey, dataplane_common::FwRule> =
    LpmTrie::pinned(dataplane_common::MAX_FIREWALL, BPF_F_NO_PREALLOC);

#[map(name = "DP_FIREWALL6")]
pub static FIREWALL6: LpmTrie<dataplane_common::FwKey6, dataplane_common::FwRule> =
    LpmTrie::pinned(dataplane_common::MAX_FIREWALL, BPF_F_NO_PREALLOC);

#[map(name = "DP_FIREWALL_RULES")]
pub static FIREWALL_RULES: Array<u32> = Array::pinned(1, 0);

#[map(name = "DP_EVENT_RATE")]
pub static EVENT_RATE: PerCpuArray<EventRate> = PerCpuArray::pinned(1, 0);

#[map(name = "DP_DNS")]
pub static DNS: HashMap<u64, DnsPorts> = HashMap::pinned(MAX_DNS, 0);

#[map(name = "DP_DNS_NETS")]
pub static DNS_NETS: HashMap<u64, dataplane_common::DnsNets> = HashMap::pinned(MAX_DNS, 0);

#[map(name = "DP_DNS_NAMES")]
pub static DNS_NAMES: HashMap<dataplane_common::DnsNameKey, dataplane_common::DnsAnswer> =
    HashMap::pinned(dataplane_common::MAX_DNS_NAMES, 0);
