//! The DNS server of a user-defined network's gateway, as Docker's embedded DNS (127.0.0.11) does
//! it: sandbox names and aliases on the network are answered locally, every other name is forwarded
//! to the nameservers of the daemon's `/etc/resolv.conf`, and a query that no upstream answers gets
//! a clear SERVFAIL.
//!
//! The flow for one query:
//!
//! 1. [`answer`] (UDP) or [`answer_tcp`] decides: [`Decision::Answered`] (the response is in `out`),
//!    [`Decision::Forward`] (a name not known locally) or [`Decision::Drop`] (not a query at all).
//! 2. For `Forward`, the gateway calls [`forward_udp`] (or [`forward_tcp`] for a query that came over
//!    TCP) with the servers from [`nameservers_from_resolv_conf`], and on error builds the answer
//!    with [`servfail_for`]. On an `--internal` network, which has no way out, it calls
//!    [`servfail_for`] directly (as Docker does when it cannot proxy).
//!
//! One file per concern, all reached through the names re-exported here:
//!
//! - `codec`: reading and building messages (untrusted bytes), TCP framing, the fuzz harness.
//! - `names`: what a network's DNS knows ([`Names`], [`NameTable`]) and the resolution policy.
//! - `host_names`: `host.tapnet.internal` and `host.docker.internal`, the host's own addresses.
//! - `resolv_conf`: the upstream nameservers in resolv.conf text.
//! - `forward`: sending a query upstream over UDP or TCP.
//! - `server`: the server itself ([`DnsServer`]), its sockets, threads and counters.

mod codec;
mod forward;
mod host_names;
mod names;
mod resolv_conf;
mod server;
#[cfg(test)]
pub(crate) mod test_util;

pub use codec::{
    CLASS_IN, DNS_PORT, HEADER_LEN, Header, LOCAL_TTL, MAX_NAME_LEN, MAX_POINTERS, MAX_TCP_LEN,
    MAX_UDP_LEN, OPCODE_QUERY, ParseError, Query, Question, Rcode, TYPE_A, TYPE_AAAA, TYPE_ANY,
    TYPE_PTR, check_arbitrary_message, parse_query, parse_question, read_tcp_message, servfail_for,
    write_a_records, write_address_records, write_error, write_nodata, write_nxdomain,
    write_ptr_record, write_tcp_message,
};
pub use forward::{ForwardError, forward_tcp, forward_udp};
pub use host_names::{HOST_NAMES, HostAddresses, WithHost};
pub use names::{
    Decision, NameEntry, NameTable, Names, answer, answer_tcp, reverse_address, reverse_address_v6,
};
pub use resolv_conf::{MAX_NAMESERVERS, nameservers_from_resolv_conf};
pub use server::{DnsAnswer, DnsPort, DnsServer, DnsStats, RCODES};
