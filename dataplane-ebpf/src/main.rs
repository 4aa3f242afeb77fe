//! Entry points of dataplane's BPF object. Each one is a line: the logic
//! lives in one module per concern.
//!
//! - `dp_veth_ingress` — tcx ingress on every host-side veth (packets leaving
//!   a sandbox): isolation (`policy`), published-port replies (`veth`).
//! - `dp_uplink_ingress` — tcx ingress on the uplink: published ports (`uplink`).
#![no_std]
#![no_main]

mod conntrack;
mod maps;
mod metrics;
mod nat;
mod packet;
mod parse;
mod policy;
mod service;
mod uplink;
mod veth;

use aya_ebpf::{macros::classifier, programs::TcContext};

#[classifier]
pub fn dp_veth_ingress(ctx: TcContext) -> i32 {
    veth::ingress(&ctx)
}

#[classifier]
pub fn dp_uplink_ingress(ctx: TcContext) -> i32 {
    uplink::ingress(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
