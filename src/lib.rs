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
pub mod cluster;
pub mod cni;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod demo;
pub mod drivers;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod metrics;
pub mod netns;
pub mod offload;
pub mod paths;
pub mod plugin;
pub mod rootless;
pub mod state_dir;
#[cfg(test)]
mod test_rng;
pub mod topology;
pub mod wire;
