//! Entry points of dataplane's BPF object. Each one is a line: the logic
//! lives in one module per concern.
//!
//! - `dp_veth_ingress` — tcx ingress on every host-side veth (packets leaving
//!   a sandbox): network isolation (`policy`).
#![no_std]
#![no_main]

mod maps;
mod metrics;
mod packet;
mod policy;

use aya_ebpf::{macros::classifier, programs::TcContext};

#[classifier]
pub fn dp_veth_ingress(ctx: TcContext) -> i32 {
    policy::veth_ingress(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
