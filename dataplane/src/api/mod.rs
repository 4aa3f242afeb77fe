//! The HTTP API over a unix socket. Network endpoints follow the Docker
//! Engine API (paths and JSON shapes, with or without a `/v1.NN` prefix) so
//! the stock docker CLI works against the daemon; sandboxes use our own
//! endpoints modelled on `/containers/...`.

pub mod client;
pub mod plugin;
pub mod server;
pub mod wire;

/// The Docker Engine API version we speak.
pub const API_VERSION: &str = "1.47";
