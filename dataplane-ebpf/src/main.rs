//! Entry points of dataplane's BPF object. Each one is a line: the logic
//! lives in one module per concern.
//!
//! - `dp_veth_ingress` — tcx ingress on every host-side veth (packets leaving
//!   a sandbox): isolation (`policy`), published-port replies (`veth`).
//! - `dp_uplink_ingress` — tcx ingress on the uplink: published ports (`uplink`).
//! - `dp_uplink_xdp` — XDP on the uplink (`daemon --xdp`): firewall denies
//!   dropped in the driver (`xdp`).
//! - `dp_overlay_ingress` — tcx ingress on the VXLAN device: overlay
//!   packets from other hosts into their sandbox (`overlay`).
//! - `dp_dns_lo` — tcx egress on `lo` of each sandbox namespace with an
//!   embedded resolver: A queries for names it knows answered in the
//!   kernel (`dns_answer`).
//! - `dp_connect4/6`, `dp_sendmsg4/6`, `dp_getpeername4/6`, `dp_recvmsg4/6` —
//!   cgroup-v2 socket hooks: host processes reach published ports (`sock`).
#![no_std]
#![no_main]

mod conntrack;
mod dns;
mod dns_answer;
mod events;
mod firewall;
mod icmp46;
mod lb;
mod maps;
mod metrics;
mod nat;
mod packet;
mod parse;
mod policy;
mod redirect;
mod service;
mod sock;
mod overlay;
mod uplink;
mod veth;
mod xdp;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier, xdp},
    programs::{SockAddrContext, TcContext, XdpContext},
};

#[classifier]
pub fn dp_veth_ingress(ctx: TcContext) -> i32 {
    veth::ingress(&ctx)
}

#[classifier]
pub fn dp_overlay_ingress(ctx: TcContext) -> i32 {
    overlay::ingress(&ctx)
}

#[classifier]
pub fn dp_uplink_ingress(ctx: TcContext) -> i32 {
    uplink::ingress(&ctx)
}

#[classifier]
pub fn dp_dns_lo(ctx: TcContext) -> i32 {
    dns_answer::egress(&ctx)
}

#[xdp]
pub fn dp_uplink_xdp(ctx: XdpContext) -> u32 {
    xdp::uplink(&ctx)
}

#[cgroup_sock_addr(connect4)]
pub fn dp_connect4(ctx: SockAddrContext) -> i32 {
    sock::to_backend4(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn dp_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::to_backend4(&ctx)
}

#[cgroup_sock_addr(getpeername4)]
pub fn dp_getpeername4(ctx: SockAddrContext) -> i32 {
    sock::from_backend4(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn dp_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::from_backend4(&ctx)
}

#[cgroup_sock_addr(connect6)]
pub fn dp_connect6(ctx: SockAddrContext) -> i32 {
    sock::to_backend6(&ctx)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn dp_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock::to_backend6(&ctx)
}

#[cgroup_sock_addr(getpeername6)]
pub fn dp_getpeername6(ctx: SockAddrContext) -> i32 {
    sock::from_backend6(&ctx)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn dp_recvmsg6(ctx: SockAddrContext) -> i32 {
    sock::from_backend6(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
