//! The domain: what networks, sandboxes and endpoints are ([`model`]), the
//! state they form ([`state`]) and the rules that need no kernel — address
//! management ([`ipam`]), `-p` specs ([`ports`]), driver options and
//! protocols parsed into values ([`options`]), names ([`names`]), the
//! sandbox's resolv.conf and hosts ([`etc`]) and
//! liveness ([`model::Sandbox::is_live`]). Pure: everything here is
//! unit-tested without root.

pub mod etc;
pub mod ipam;
pub mod ipam6;
pub mod model;
pub mod names;
pub mod options;
pub mod ports;
pub mod state;
