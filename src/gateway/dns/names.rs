//! What a network's DNS knows locally, and the resolution policy that answers from it.
//!
//! Local names are what the network's [`Names`] knows: sandbox names and aliases, and, as
//! Docker's embedded DNS, the same names qualified by the network (`alpha.backend`). A known name
//! gets its A records, and an empty NOERROR answer (NODATA) for any other type, AAAA included
//! (networks are IPv4 only): never NXDOMAIN, which would make the client give up on its A
//! records, and never forwarded. PTR queries for the network's own addresses (`in-addr.arpa`)
//! are answered from the same names (`alpha.backend`); other addresses are forwarded. SRV is not
//! handled locally (forwarded). EDNS is not interpreted: local answers carry no OPT record and stay
//! within 512 bytes over UDP (TC set when addresses had to be left out, so the client retries
//! over TCP); forwarded queries and replies pass through unchanged.

use std::net::Ipv4Addr;

use super::codec::wire_form;
use super::{
    CLASS_IN, Header, MAX_TCP_LEN, MAX_UDP_LEN, OPCODE_QUERY, Rcode, TYPE_A, TYPE_ANY, TYPE_PTR,
    parse_question, write_a_records, write_error, write_nodata, write_ptr_record,
};

/// Where reverse names live (RFC 1035 section 3.5).
const REVERSE_SUFFIX: &str = ".in-addr.arpa";

/// What the gateway does with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `out` holds the response to send back.
    Answered,
    /// Not a local name: forward the query unchanged upstream
    /// ([`forward_udp`](super::forward_udp), [`forward_tcp`](super::forward_tcp)). `out` is empty.
    Forward,
    /// Not a query (too short for an ID, or a response): nothing to answer. `out` is empty.
    Drop,
}

/// What a network's DNS knows locally.
pub trait Names {
    /// The addresses of `name` (lowercased, no trailing dot) on this network: several for an
    /// alias shared by several sandboxes (shuffle them for round-robin, as Docker does), or
    /// None for a name it does not know.
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// The name a PTR query for `address` answers with (`alpha.backend`), or None for an
    /// address that is not the network's.
    fn name_of(&self, address: Ipv4Addr) -> Option<String>;
}

/// A lookup of names alone is a [`Names`] that knows no reverse names.
impl<F: Fn(&str) -> Option<Vec<Ipv4Addr>>> Names for F {
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self(name)
    }

    fn name_of(&self, _address: Ipv4Addr) -> Option<String> {
        None
    }
}

/// What a network's DNS answers from: lowercased names (sandbox names, aliases, and both
/// qualified by the network) with their addresses, and the PTR name of each address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    names: std::collections::HashMap<String, Vec<Ipv4Addr>>,
    reverse: std::collections::HashMap<Ipv4Addr, String>,
}

impl NameTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` resolves to `address` too (once, however often it is added).
    pub fn add(&mut self, name: String, address: Ipv4Addr) {
        let addresses = self.names.entry(name).or_default();
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }

    /// A PTR query for `address` answers `name`.
    pub fn add_reverse(&mut self, address: Ipv4Addr, name: String) {
        self.reverse.insert(address, name);
    }
}

impl Names for NameTable {
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.names.get(name).cloned()
    }

    fn name_of(&self, address: Ipv4Addr) -> Option<String> {
        self.reverse.get(&address).cloned()
    }
}

/// The address of a reverse name with all four octets (`2.0.18.172.in-addr.arpa` ->
/// 172.18.0.2), written the canonical way (no leading zeros); None for anything else.
pub fn reverse_address(name: &str) -> Option<Ipv4Addr> {
    let octets = name.strip_suffix(REVERSE_SUFFIX)?;
    let mut parsed = [0u8; 4];
    let mut labels = octets.split('.');
    for slot in parsed.iter_mut().rev() {
        let label = labels.next()?;
        let value: u8 = label.parse().ok()?;
        if value.to_string() != label {
            return None;
        }
        *slot = value;
    }
    labels.next().is_none().then_some(Ipv4Addr::from(parsed))
}

/// Resolution policy for a query that came over UDP; responses stay within [`MAX_UDP_LEN`].
///
/// `names` knows the network's names (see [`Names`]; a plain lookup closure of name ->
/// addresses is one).
///
/// - Not a query (no header, QR=1): `Drop`, never answer a response (that could loop).
/// - Opcode other than QUERY: NOTIMP. Unreadable question or QDCOUNT=0: FORMERR.
/// - Class other than IN: REFUSED.
/// - Known name: A records for type A (and ANY), NODATA for any other type (AAAA included).
/// - Reverse name of a known address: a PTR record for type PTR (and ANY), NODATA otherwise.
/// - Unknown name or address, including the root and single-label names: `Forward`. Docker
///   forwards unqualified names too (it answers them locally only when the sandbox's
///   resolv.conf sets ndots explicitly), and a single label can be a real name upstream (a
///   search-domain-less intranet host, a TLD).
pub fn answer(query: &[u8], names: &dyn Names, out: &mut Vec<u8>) -> Decision {
    answer_within(query, names, MAX_UDP_LEN, out)
}

/// [`answer`] for a query that came over TCP: responses may use the whole [`MAX_TCP_LEN`].
pub fn answer_tcp(query: &[u8], names: &dyn Names, out: &mut Vec<u8>) -> Decision {
    answer_within(query, names, MAX_TCP_LEN, out)
}

fn answer_within(query: &[u8], names: &dyn Names, max_len: usize, out: &mut Vec<u8>) -> Decision {
    out.clear();
    let header = match Header::parse(query) {
        Ok(header) if !header.is_response() => header,
        _ => return Decision::Drop,
    };
    let question = parse_question(query);
    if header.opcode() != OPCODE_QUERY {
        write_error(&header, question.as_ref().ok(), Rcode::NotImp, out);
        return Decision::Answered;
    }
    let Ok(question) = question else {
        write_error(&header, None, Rcode::FormErr, out);
        return Decision::Answered;
    };
    if question.qclass != CLASS_IN {
        write_error(&header, Some(&question), Rcode::Refused, out);
        return Decision::Answered;
    }
    if question.name.is_empty() {
        return Decision::Forward;
    }
    if let Some(address) = reverse_address(&question.name) {
        let Some(target) = names.name_of(address).as_deref().and_then(wire_form) else {
            return Decision::Forward;
        };
        match question.qtype {
            TYPE_PTR | TYPE_ANY => write_ptr_record(&header, &question, &target, out),
            _ => write_nodata(&header, &question, out),
        }
        return Decision::Answered;
    }
    let Some(addresses) = names.addresses(&question.name) else {
        return Decision::Forward;
    };
    match question.qtype {
        TYPE_A | TYPE_ANY => {
            write_a_records(&header, &question, &addresses, max_len, out);
        }
        _ => write_nodata(&header, &question, out),
    }
    Decision::Answered
}

#[cfg(test)]
mod tests;
