//! What a network's DNS knows locally, and the resolution policy that answers from it.
//!
//! Local names are what the network's [`Names`] knows: sandbox names and aliases, and, as
//! Docker's embedded DNS, the same names qualified by the network (`alpha.backend`). A known name
//! gets its A records, its AAAA records (on a network with IPv6), and an empty NOERROR answer
//! (NODATA) for any other type or a family it has no address in: never NXDOMAIN, which would
//! make the client give up on its other records, and never forwarded. PTR queries for the
//! network's own addresses (`in-addr.arpa`, and `ip6.arpa` in nibble form) are answered from the
//! same names (`alpha.backend`); other addresses are forwarded. SRV is not
//! handled locally (forwarded). EDNS is not interpreted: local answers carry no OPT record and stay
//! within 512 bytes over UDP (TC set when addresses had to be left out, so the client retries
//! over TCP); forwarded queries and replies pass through unchanged.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::codec::wire_form;
use super::{
    CLASS_IN, Header, MAX_TCP_LEN, MAX_UDP_LEN, OPCODE_QUERY, Rcode, TYPE_A, TYPE_AAAA, TYPE_ANY,
    TYPE_PTR, parse_question, write_address_records, write_error, write_nodata, write_ptr_record,
};

/// Where reverse names live (RFC 1035 section 3.5).
const REVERSE_SUFFIX: &str = ".in-addr.arpa";
/// Where IPv6 reverse names live (RFC 3596 section 2.5).
const REVERSE_SUFFIX_V6: &str = ".ip6.arpa";

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
    /// The IPv6 addresses of `name`, as [`Names::addresses`]; None when it has none (a name
    /// known only in IPv4 gets NODATA for AAAA).
    fn addresses_v6(&self, _name: &str) -> Option<Vec<Ipv6Addr>> {
        None
    }
    /// The name a PTR query under `ip6.arpa` for `address` answers with.
    fn name_of_v6(&self, _address: Ipv6Addr) -> Option<String> {
        None
    }
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
    names_v6: std::collections::HashMap<String, Vec<Ipv6Addr>>,
    reverse_v6: std::collections::HashMap<Ipv6Addr, String>,
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

    /// `name` resolves to the IPv6 `address` too (AAAA; once, however often it is added).
    pub fn add_v6(&mut self, name: String, address: Ipv6Addr) {
        let addresses = self.names_v6.entry(name).or_default();
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }

    /// A PTR query for the IPv6 `address` (under `ip6.arpa`) answers `name`.
    pub fn add_reverse_v6(&mut self, address: Ipv6Addr, name: String) {
        self.reverse_v6.insert(address, name);
    }
}

/// One answer of a [`NameTable`], as the controller adds and removes them one endpoint at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameEntry {
    V4(String, Ipv4Addr),
    V6(String, Ipv6Addr),
    Reverse(Ipv4Addr, String),
    ReverseV6(Ipv6Addr, String),
}

impl NameTable {
    /// Add `entry` (as `add`, `add_v6`, `add_reverse`, `add_reverse_v6`).
    pub fn insert(&mut self, entry: NameEntry) {
        match entry {
            NameEntry::V4(name, ip) => self.add(name, ip),
            NameEntry::V6(name, ip) => self.add_v6(name, ip),
            NameEntry::Reverse(ip, name) => self.add_reverse(ip, name),
            NameEntry::ReverseV6(ip, name) => self.add_reverse_v6(ip, name),
        }
    }

    /// Take `entry` out: the address from the name's (the name goes with its last address), a
    /// PTR answer only if it is still `entry`'s.
    pub fn remove(&mut self, entry: &NameEntry) {
        fn drop_address<A: PartialEq>(
            map: &mut std::collections::HashMap<String, Vec<A>>,
            name: &str,
            ip: &A,
        ) {
            if let Some(addresses) = map.get_mut(name) {
                addresses.retain(|a| a != ip);
                if addresses.is_empty() {
                    map.remove(name);
                }
            }
        }
        match entry {
            NameEntry::V4(name, ip) => drop_address(&mut self.names, name, ip),
            NameEntry::V6(name, ip) => drop_address(&mut self.names_v6, name, ip),
            NameEntry::Reverse(ip, name) => {
                if self.reverse.get(ip) == Some(name) {
                    self.reverse.remove(ip);
                }
            }
            NameEntry::ReverseV6(ip, name) => {
                if self.reverse_v6.get(ip) == Some(name) {
                    self.reverse_v6.remove(ip);
                }
            }
        }
    }

    /// The table with each name's addresses in order: two tables with the same answers compare
    /// equal however they were made.
    #[cfg(test)]
    pub fn normalized(mut self) -> Self {
        self.names.values_mut().for_each(|a| a.sort());
        self.names_v6.values_mut().for_each(|a| a.sort());
        self
    }
}

impl Names for NameTable {
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.names.get(name).cloned()
    }

    fn name_of(&self, address: Ipv4Addr) -> Option<String> {
        self.reverse.get(&address).cloned()
    }

    fn addresses_v6(&self, name: &str) -> Option<Vec<Ipv6Addr>> {
        self.names_v6.get(name).cloned()
    }

    fn name_of_v6(&self, address: Ipv6Addr) -> Option<String> {
        self.reverse_v6.get(&address).cloned()
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

/// The address of an IPv6 reverse name with all 32 nibbles, lowest first, each one lowercase
/// hex digit (`2.0.0.0.[...].d.f.ip6.arpa` -> fd00::2); None for anything else. Names reach
/// here lowercased.
pub fn reverse_address_v6(name: &str) -> Option<Ipv6Addr> {
    let nibbles = name.strip_suffix(REVERSE_SUFFIX_V6)?;
    let mut value: u128 = 0;
    let mut count = 0;
    for label in nibbles.split('.') {
        let &[digit] = label.as_bytes() else {
            return None;
        };
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        if count == 32 {
            return None;
        }
        // Lowest nibble first.
        value |= u128::from(nibble) << (4 * count);
        count += 1;
    }
    (count == 32).then_some(Ipv6Addr::from(value))
}

/// The reverse name of a PTR query: the name it answers with, when the address is the network's
/// (Some(None) for a reverse name of an address the network does not know: forwarded).
fn reverse_target(names: &dyn Names, name: &str) -> Option<Option<String>> {
    if let Some(address) = reverse_address(name) {
        return Some(names.name_of(address));
    }
    reverse_address_v6(name).map(|address| names.name_of_v6(address))
}

/// Resolution policy for a query that came over UDP; responses stay within [`MAX_UDP_LEN`].
///
/// `names` knows the network's names (see [`Names`]; a plain lookup closure of name ->
/// addresses is one).
///
/// - Not a query (no header, QR=1): `Drop`, never answer a response (that could loop).
/// - Opcode other than QUERY: NOTIMP. Unreadable question or QDCOUNT=0: FORMERR.
/// - Class other than IN: REFUSED.
/// - Known name: A records for type A, AAAA records for type AAAA, both for ANY, NODATA for any
///   other type or a family the name has no address in.
/// - Reverse name of a known address (IPv4 or IPv6): a PTR record for type PTR (and ANY),
///   NODATA otherwise.
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
    if let Some(target) = reverse_target(names, &question.name) {
        let Some(target) = target.as_deref().and_then(wire_form) else {
            return Decision::Forward;
        };
        match question.qtype {
            TYPE_PTR | TYPE_ANY => write_ptr_record(&header, &question, &target, out),
            _ => write_nodata(&header, &question, out),
        }
        return Decision::Answered;
    }
    let v4 = names.addresses(&question.name);
    let v6 = names.addresses_v6(&question.name);
    if v4.is_none() && v6.is_none() {
        return Decision::Forward;
    }
    let (v4, v6) = (v4.unwrap_or_default(), v6.unwrap_or_default());
    let (v4, v6): (&[Ipv4Addr], &[Ipv6Addr]) = match question.qtype {
        TYPE_A => (&v4, &[]),
        TYPE_AAAA => (&[], &v6),
        TYPE_ANY => (&v4, &v6),
        _ => (&[], &[]),
    };
    write_address_records(&header, &question, v4, v6, max_len, out);
    Decision::Answered
}

#[cfg(test)]
mod tests;
