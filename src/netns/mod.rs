//! Namespaces, TAP devices inside them, and their interface configuration.

pub mod namespace;
pub mod netlink;
pub mod processes;
pub mod sysctl;
pub mod tap;
