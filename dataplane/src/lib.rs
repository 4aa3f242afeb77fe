//! dataplane: Docker-style container networking with an eBPF packet path.
//!
//! Layers, each a folder, imports running one way (down):
//!
//! ```text
//! cli ──HTTP──▶ api (server, wire shapes)
//!                 │
//!                 ▼
//!               engine (the request lock, every mutation: plan, then apply)
//!                 │
//!      ┌──────────┼───────────┬──────────┐
//!      ▼          ▼           ▼          ▼
//!     dns      datapath     drivers     store
//!  (resolver)  (BPF maps)  (bridge,    (redb)
//!                           macvlan)
//!      └──────────┴─────┬─────┴──────────┘
//!                       ▼
//!                     domain (model, state, ipam, ports, names, liveness)
//!                       │
//!                       ▼
//!                      sys (netlink, netns, processes, logs, paths)
//! ```
//!
//! The daemon ([`daemon`]) assembles them: it opens the store, loads the
//! datapath, reconciles the kernel to the store and serves the API over a
//! unix socket.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod daemon;
pub mod datapath;
pub mod dns;
pub mod domain;
pub mod drivers;
pub mod engine;
pub mod error;
pub mod store;
pub mod sys;
pub mod telemetry;
