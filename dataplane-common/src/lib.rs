//! Everything that crosses the kernel/user boundary: map names, `#[repr(C)]`
//! keys and values, drop reasons and directions. Shared by `dataplane-ebpf`
//! (no_std, BPF target) and `dataplane` (with the `user` feature, which adds
//! `aya::Pod` impls).
#![no_std]

pub mod events;
pub mod lb;
pub mod maps;
pub mod metrics;

pub use events::*;
pub use lb::*;
pub use maps::*;
pub use metrics::*;
