//! Overlay networks across hosts: VXLAN over one external-mode
//! (`collect_md`) device per host, driven from BPF.
//!
//! - Out: a sandbox's packet to an overlay address of another host
//!   (`DP_REMOTE`) gets its tunnel key (that host's underlay address, the
//!   network's VNI) and is redirected to the VXLAN device, which
//!   encapsulates it.
//! - ARP and NDP: a sandbox asking for such an address (ARP request,
//!   IPv6 neighbour solicitation) is answered here with the remote
//!   sandbox's MAC (nothing is flooded across hosts).
//! - In (`dp_overlay_ingress`, tcx ingress of the VXLAN device): the
//!   decapsulated frame goes straight into the sandbox holding its
//!   destination (`DP_LOCAL`, `DP_LOCAL6`), if that sandbox's network has
//!   the packet's VNI.
//!
//! IPv6 overlay addresses (`DP_REMOTE6`) ride the same IPv4 underlay.
//!
//! Maps: `DP_REMOTE`, `DP_REMOTE6`, `DP_ENDPOINTS`, `DP_LOCAL`, `DP_LOCAL6`, `DP_SUBNETS`, `DP_SUBNETS6`,
//! `DP_CONFIG`, `DP_METRICS`.

use aya_ebpf::{
    bindings::{BPF_F_ZERO_CSUM_TX, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dataplane_common::{CT_DIR_REPLY, Direction, DropReason, PROTO_ICMP6, RemoteTarget};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack,
    maps::{CONFIG, ENDPOINTS, LOCAL, LOCAL6, REMOTE, REMOTE6, SUBNETS, SUBNETS6},
    metrics::count,
    nat::{self, End},
    packet::{self, ptr_at},
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

/// IPv6 header fields and neighbour discovery messages (RFC 4861),
/// offsets from the frame's start.
const IP6_PAYLOAD_LEN: usize = EthHdr::LEN + 4;
const IP6_NEXT_HDR: usize = EthHdr::LEN + 6;
const IP6_HOP_LIMIT: usize = EthHdr::LEN + 7;
const IP6_SRC: usize = EthHdr::LEN + 8;
const IP6_DST: usize = EthHdr::LEN + 24;
const ND: usize = EthHdr::LEN + 40;
const ND_CHECKSUM: usize = ND + 2;
const ND_FLAGS: usize = ND + 4;
const ND_TARGET: usize = ND + 8;
const ND_OPT: usize = ND + 24;
const ND_NEIGHBOR_SOLICIT: u8 = 135;
const ND_NEIGHBOR_ADVERT: u8 = 136;
/// Link-layer address options: a solicitation's source, an advertisement's target.
const ND_OPT_SOURCE_LLADDR: u8 = 1;
const ND_OPT_TARGET_LLADDR: u8 = 2;
/// An advertisement's flags: Solicited and Override (RFC 4861 §4.4).
const ND_NA_SOLICITED_OVERRIDE: u8 = 0x60;
/// A solicitation without options, and with one link-layer address option.
const ND_LEN: u16 = 24;
const ND_LEN_WITH_LLADDR: u16 = 32;
/// Neighbour discovery messages are sent and accepted with this hop limit only.
const ND_HOP_LIMIT: u8 = 255;

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

/// [`ndp_proxy`] found the packet is not a solicitation it answers (not a TC verdict).
pub const NOT_SOLICITATION: i32 = i32::MIN + 1;

/// Answers a neighbour solicitation from the sandbox behind the veth for
/// an IPv6 overlay address of another host on its network: the packet
/// becomes the advertisement, back into the sandbox. [`NOT_SOLICITATION`]
/// for anything else (it goes on as before). Its own frame: the answer is
/// built on the stack, next to the caller's.
#[inline(never)]
pub fn ndp_proxy(ctx: &TcContext) -> i32 {
    match ndp_answer(ctx) {
        Some(v) => v,
        None => NOT_SOLICITATION,
    }
}

#[inline(always)]
fn ndp_answer(ctx: &TcContext) -> Option<i32> {
    let next: u8 = ctx.load(IP6_NEXT_HDR).ok()?;
    let kind: u8 = ctx.load(ND).ok()?;
    if next != PROTO_ICMP6 || kind != ND_NEIGHBOR_SOLICIT {
        return None;
    }
    let len = u16::from_be(ctx.load::<u16>(IP6_PAYLOAD_LEN).ok()?);
    if len != ND_LEN && len != ND_LEN_WITH_LLADDR {
        return None;
    }
    if len == ND_LEN_WITH_LLADDR && ctx.load::<u8>(ND_OPT).ok()? != ND_OPT_SOURCE_LLADDR {
        return None;
    }
    let target: [u8; 16] = ctx.load(ND_TARGET).ok()?;
    // SAFETY: map lookups return values valid for this program run.
    let remote = unsafe { REMOTE6.get(target) }?;
    // SAFETY: the skb pointer is valid for this program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: as above.
    let me = unsafe { ENDPOINTS.get(ifindex) }?;
    let src: [u8; 16] = ctx.load(IP6_SRC).ok()?;
    // Duplicate address detection (from ::) is the sandbox's own business.
    if me.net_id != remote.vni || src == [0; 16] {
        return None;
    }
    let asker: [u8; 6] = ctx.load(6).ok()?;
    let dir = Direction::FromSandbox;
    // The advertisement with its pseudo-header, for the checksum: from
    // the target to the asker, Solicited + Override, the remote MAC.
    let mut msg = [0u8; 72];
    msg[..16].copy_from_slice(&target);
    msg[16..32].copy_from_slice(&src);
    msg[34..36].copy_from_slice(&len.to_be_bytes());
    msg[39] = PROTO_ICMP6;
    msg[40] = ND_NEIGHBOR_ADVERT;
    msg[44] = ND_NA_SOLICITED_OVERRIDE;
    msg[48..64].copy_from_slice(&target);
    msg[64] = ND_OPT_TARGET_LLADDR;
    msg[65] = 1;
    msg[66..72].copy_from_slice(&remote.mac);
    let size = if len == ND_LEN_WITH_LLADDR { 72 } else { 64 };
    // SAFETY: the buffer lives on this stack, `size` bytes of it read.
    let Some(checksum) = (unsafe { packet::checksum(msg.as_ptr(), size) }) else {
        return Some(redirect::verdict(ctx, DropReason::NatRewriteFailed, dir));
    };
    let mut rewritten = ctx.store(0, &asker, 0).is_ok()
        && ctx.store(6, &remote.mac, 0).is_ok()
        && ctx.store(IP6_HOP_LIMIT, &ND_HOP_LIMIT, 0).is_ok()
        && ctx.store(IP6_SRC, &target, 0).is_ok()
        && ctx.store(IP6_DST, &src, 0).is_ok()
        && ctx.store(ND, &ND_NEIGHBOR_ADVERT, 0).is_ok()
        && ctx.store(ND_CHECKSUM, &checksum, 0).is_ok()
        && ctx.store(ND_FLAGS, &[ND_NA_SOLICITED_OVERRIDE, 0, 0, 0], 0).is_ok();
    if len == ND_LEN_WITH_LLADDR {
        rewritten = rewritten
            && ctx.store(ND_OPT, &ND_OPT_TARGET_LLADDR, 0).is_ok()
            && ctx.store(ND_OPT + 2, &remote.mac, 0).is_ok();
    }
    if !rewritten {
        return Some(redirect::verdict(ctx, DropReason::NatRewriteFailed, dir));
    }
    count(DropReason::ArpProxy, dir, ctx.len());
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
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type == EtherType::Ipv6 as u16 {
        return ingress6(ctx, key.tunnel_id);
    }
    if ether_type != EtherType::Ipv4 as u16 {
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

/// An IPv6 frame out of the tunnel with VNI `vni`: into the sandbox
/// holding its destination, if that sandbox's network has the VNI.
#[inline(never)]
fn ingress6(ctx: &TcContext, vni: u32) -> i32 {
    let dir = Direction::ToSandbox;
    let Some(dst) = parse::ipv6_daddr(ctx) else {
        return redirect::verdict(ctx, DropReason::InvalidPacket, dir);
    };
    match SUBNETS6.get(Key::new(128, dst)) {
        Some(n) if n.net_id == vni => {}
        Some(_) => return redirect::verdict(ctx, DropReason::PolicyNetworkIsolation, dir),
        None => return redirect::verdict(ctx, DropReason::OverlayNoEndpoint, dir),
    }
    // The answer of a backend on another host to a flow this host
    // balanced: its source goes back to the virtual IP.
    if let Some(flow) = parse::l4_flow6(ctx)
        && let Some(ct) = conntrack::lookup6(&flow)
        && ct.dir == CT_DIR_REPLY
        && ct.mac != [0; 6]
    {
        if nat::rewrite6(ctx, &flow, End::Source, &ct.addr, ct.port).is_err() {
            return redirect::verdict(ctx, DropReason::NatRewriteFailed, dir);
        }
        return redirect::to_sandbox(ctx, ct.ifindex, ct.mac, DropReason::NatReply, dir);
    }
    // SAFETY: map lookups return values valid for this program run.
    match unsafe { LOCAL6.get(dst) } {
        Some(t) => redirect::to_neighbour_as(ctx, t.ifindex, t.mac, DropReason::OverlayDecap, dir),
        None => redirect::verdict(ctx, DropReason::OverlayNoEndpoint, dir),
    }
}
