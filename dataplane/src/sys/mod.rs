//! The operating system, as the layers above use it: netlink ([`netlink`]),
//! network namespaces and socket options ([`netns`]), processes
//! ([`process`]), sandbox output logs ([`logs`]), interactive sandboxes'
//! terminals and stdin ([`console`]) and file locations
//! ([`paths`]).

pub mod console;
pub mod logs;
pub mod netlink;
pub mod netns;
pub mod paths;
pub mod process;
