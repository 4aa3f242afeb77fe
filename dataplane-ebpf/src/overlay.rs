//! Overlay networks across hosts: VXLAN over one external-mode
//! (`collect_md`) device per host, driven from BPF.
//!
//! - Out: a sandbox's packet to an overlay address of another host
//!   (`DP_REMOTE`) gets its tunnel key (that host's underlay address, the
//!   network's VNI) and is redirected to the VXLAN device, which
//!   encapsulates it.
//! - ARP: a sandbox asking for such an address is answered here with the
//!   remote sandbox's MAC (nothing is flooded across hosts).
//! - In (`dp_overlay_ingress`, tcx ingress of the VXLAN device): the
//!   decapsulated frame goes straight into the sandbox holding its
//!   destination (`DP_LOCAL`), if that sandbox's network has the packet's VNI.
//!
//! Maps: `DP_REMOTE`, `DP_ENDPOINTS`, `DP_LOCAL`, `DP_SUBNETS`, `DP_CONFIG`, `DP_METRICS`.

use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dataplane_common::{CT_DIR_REPLY, Direction, DropReason, RemoteTarget};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack,
    maps::{CONFIG, ENDPOINTS, LOCAL, REMOTE, SUBNETS},
    metrics::count,
    nat::{self, End},
    packet::ptr_at,
    parse, redirect,
};

/// Offsets in an ARP packet for IPv4 over Ethernet, after the Ethernet header.
const ARP_OP: usize = EthHdr::LEN + 6;
const ARP_SHA: usize = EthHdr::LEN + 8;
const ARP_SPA: usize = EthHdr::LEN + 14;
const ARP_THA: usize = EthHdr::LEN + 18;
const ARP_TPA: usize = EthHdr::LEN + 24;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;

/// Encapsulates toward `target`'s host: tunnel key set, out of the VXLAN device.
#[inline(always)]
pub fn encap(ctx: &TcContext, target: &RemoteTarget) -> i32 {
    encap_as(ctx, target, DropReason::OverlayEncap)
}

/// [`encap`], counted under `reason` (a balanced flow to a remote backend).
#[inline(always)]
pub fn encap_as(ctx: &TcContext, target: &RemoteTarget, reason: DropReason) -> i32 {
    let dir = Direction::FromSandbox;
    let Some(cfg) = CONFIG.get(0) else { return redirect::verdict(ctx, DropReason::RedirectFailed, dir) };
    if cfg.vxlan_ifindex == 0 {
        return redirect::verdict(ctx, DropReason::RedirectFailed, dir);
    }
    // The remote sandbox's MAC, whatever the sender's neighbour table says.
    if ctx.store(0, &target.mac, 0).is_err() {
        return redirect::verdict(ctx, DropReason::NatRewriteFailed, dir);
    }
    // SAFETY: a plain C struct; all-zero is its "nothing set" value.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = target.vni;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(target.underlay);
    key.tunnel_ttl = 64;
    // SAFETY: the skb pointer is valid for this run; the key lives on our stack.
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            BPF_F_ZERO_CSUM_TX as u64,
        )
    };
    if ret < 0 {
        return redirect::verdict(ctx, DropReason::RedirectFailed, dir);
    }
    count(reason, dir, ctx.len());
    // SAFETY: plain helper call; the kernel checks the ifindex.
    unsafe { bpf_redirect(cfg.vxlan_ifindex, 0) as i32 }
}

/// Answers an ARP request from the sandbox behind veth `ifindex` for an
/// overlay address of another host on its network; None when the packet
/// is anything else (it goes on as before).
#[inline(always)]
pub fn arp_proxy(ctx: &TcContext) -> Option<i32> {
    let eth = ptr_at::<EthHdr>(ctx, 0)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Arp as u16 {
        return None;
    }
    let op: u16 = ctx.load(ARP_OP).ok()?;
    if u16::from_be(op) != ARP_REQUEST {
        return None;
    }
    let tpa: [u8; 4] = ctx.load(ARP_TPA).ok()?;
    // SAFETY: map lookups return values valid for this program run.
    let target = unsafe { REMOTE.get(tpa) }?;
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    let me = unsafe { ENDPOINTS.get(ifindex) }?;
    if me.net_id != target.vni {
        return None;
    }
    let sha: [u8; 6] = ctx.load(ARP_SHA).ok()?;
    let spa: [u8; 4] = ctx.load(ARP_SPA).ok()?;
    let dir = Direction::FromSandbox;
    let rewritten = ctx.store(0, &sha, 0).is_ok()
        && ctx.store(6, &target.mac, 0).is_ok()
        && ctx.store(ARP_OP, &ARP_REPLY.to_be(), 0).is_ok()
        && ctx.store(ARP_SHA, &target.mac, 0).is_ok()
        && ctx.store(ARP_SPA, &tpa, 0).is_ok()
        && ctx.store(ARP_THA, &sha, 0).is_ok()
        && ctx.store(ARP_TPA, &spa, 0).is_ok();
    if !rewritten {
        return Some(redirect::verdict(ctx, DropReason::NatRewriteFailed, dir));
    }
    count(DropReason::ArpProxy, dir, ctx.len());
    // Back out of the same veth: into the sandbox that asked.
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(ifindex, 0) as i32 })
}

/// tcx ingress of the VXLAN device: a frame from another host's sandbox.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> i32 {
    let dir = Direction::ToSandbox;
    // SAFETY: as in `encap`.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: the skb pointer is valid for this run; the key lives on our stack.
    let ret = unsafe {
        bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, core::mem::size_of::<bpf_tunnel_key>() as u32, 0)
    };
    if ret < 0 {
        return redirect::verdict(ctx, DropReason::InvalidPacket, dir);
    }
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return redirect::verdict(ctx, DropReason::InvalidPacket, dir);
    };
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return redirect::verdict(ctx, DropReason::OverlayNoEndpoint, dir);
    }
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return redirect::verdict(ctx, DropReason::InvalidPacket, dir);
    };
    // SAFETY: ptr_at checked the bounds.
    let dst = unsafe { (*ip).dst_addr };
    // The destination's network must be the one the VNI names.
    match SUBNETS.get(Key::new(32, dst)) {
        Some(n) if n.net_id == key.tunnel_id => {}
        Some(_) => return redirect::verdict(ctx, DropReason::PolicyNetworkIsolation, dir),
        None => return redirect::verdict(ctx, DropReason::OverlayNoEndpoint, dir),
    }
    // The answer of a backend on another host to a flow this host
    // balanced: its source goes back to the virtual IP.
    if let Some(flow) = parse::l4_flow(ctx)
        && let Some(ct) = conntrack::lookup(&flow)
        && ct.dir == CT_DIR_REPLY
        && ct.mac != [0; 6]
    {
        if nat::rewrite(ctx, &flow, End::Source, ct.addr, ct.port).is_err() {
            return redirect::verdict(ctx, DropReason::NatRewriteFailed, dir);
        }
        return redirect::to_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply, dir);
    }
    // SAFETY: map lookups return values valid for this program run.
    match unsafe { LOCAL.get(dst) } {
        Some(t) => redirect::to_neighbour_as(ctx, t.ifindex, t.mac, DropReason::OverlayDecap, dir),
        None => redirect::verdict(ctx, DropReason::OverlayNoEndpoint, dir),
    }
}
