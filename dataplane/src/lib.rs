//! dataplane: Docker-style container networking with an eBPF packet path.
//!
//! The daemon ([`daemon`]) keeps networks, sandboxes and endpoints in a
//! transactional store ([`store`]), derives the kernel state from it through
//! netlink ([`netlink`], [`drivers`]) and BPF maps ([`datapath`]), and serves a
//! Docker-shaped HTTP API over a unix socket ([`api`]) used by the CLI ([`cli`]).

pub mod api;
pub mod cli;
pub mod daemon;
pub mod datapath;
pub mod dns;
pub mod drivers;
pub mod engine;
pub mod error;
pub mod ipam;
pub mod logs;
pub mod model;
pub mod names;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod ports;
pub mod process;
pub mod store;
