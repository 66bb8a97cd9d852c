//! tapnet: a userspace virtual switch that implements Docker's Container Network Model over TAP
//! devices in network namespaces. See docs/ARCHITECTURE.md for the planes, threads and the life of
//! a frame.
#![deny(clippy::undocumented_unsafe_blocks)]

/// `print!` for command output: returns `Result<()>` instead of panicking when the reader of
/// standard output has gone away (EPIPE), so that `tapnet ... | head -1` exits quietly.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::emit(format_args!($($arg)*)) };
}
/// `println!` for command output; see `out!`.
macro_rules! outln {
    () => { $crate::cli::output::emit(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::output::emit(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod api;
pub mod cli;
// Its keys and events are the etcd client's, which the cargo feature `etcd` builds.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) mod cluster;
pub mod cni;
pub(crate) mod control;
pub(crate) mod daemon;
pub mod datapath;
pub(crate) mod demo;
pub(crate) mod drivers;
pub(crate) mod error;
pub mod gateway;
pub(crate) mod guard;
pub mod keeper;
pub(crate) mod metrics;
pub(crate) mod netns;
pub mod offload;
pub mod paths;
pub mod plugin;
pub(crate) mod rootless;
pub(crate) mod state_dir;
#[cfg(test)]
mod test_rng;
pub mod topology;
#[doc(hidden)]
pub use control::journal::check_arbitrary_journal;
pub mod wire;
