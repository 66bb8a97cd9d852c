//! The control API: request and response types, the socket server and the client.

pub(crate) mod capture;
pub mod client;
pub(crate) mod lab;
pub(crate) mod live;
pub(crate) mod poller;
pub(crate) mod server;
pub(crate) mod trust;
pub(crate) mod types;

/// Requests longer than this are refused (a malformed or hostile client).
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
