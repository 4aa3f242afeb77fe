//! The operating system, as the layers above use it: netlink ([`netlink`]),
//! network namespaces and socket options ([`netns`]), processes
//! ([`process`]), sandbox output logs ([`logs`]) and file locations
//! ([`paths`]).

pub mod logs;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod process;
