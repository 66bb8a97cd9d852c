//! The control API: request and response types, the socket server and the client.

pub mod capture;
pub mod client;
pub mod lab;
pub mod live;
pub mod poller;
pub mod server;
pub mod trust;
pub mod types;

/// Requests longer than this are refused (a malformed or hostile client).
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;
