//! The HTTP API over a unix socket. Network endpoints follow the Docker
//! Engine API (paths and JSON shapes, with or without a `/v1.NN` prefix) so
//! the stock docker CLI works against the daemon; sandboxes use our own
//! endpoints under `/dataplane/sandboxes/...`, and Docker's container,
//! image and system routes answer 501 saying what this socket is. Docker's
//! network and IPAM plugin protocol is served on a socket of its own
//! (`plugin`).

pub mod client;
pub mod cni;
pub mod plugin;
pub mod server;
pub mod wire;

/// The Docker Engine API version we speak.
pub const API_VERSION: &str = "1.47";
