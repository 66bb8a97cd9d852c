//! IPv4 prefixes now live in the wire layer; this path goes when the imports are rewritten.

pub use crate::wire::ipv4net::*;
