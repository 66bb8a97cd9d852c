//! The DNS server of a user-defined network's gateway, as Docker's embedded DNS (127.0.0.11) does
//! it: sandbox names and aliases on the network are answered locally, every other name is forwarded
//! to the nameservers of the daemon's `/etc/resolv.conf`, and a query that no upstream answers gets
//! a clear SERVFAIL.
//!
//! This module is the message logic and the resolution policy only; the gateway owns the listening
//! sockets. The flow for one query:
//!
//! 1. [`answer`] (UDP) or [`answer_tcp`] decides: [`Decision::Answered`] (the response is in `out`),
//!    [`Decision::Forward`] (a name not known locally) or [`Decision::Drop`] (not a query at all).
//! 2. For `Forward`, the gateway calls [`forward_udp`] (or [`forward_tcp`] for a query that came over
//!    TCP) with the servers from [`nameservers_from_resolv_conf`], and on error builds the answer
//!    with [`servfail_for`]. On an `--internal` network, which has no way out, it calls
//!    [`servfail_for`] directly (as Docker does when it cannot proxy).
//!
//! Everything that reads a message works on untrusted bytes: it never panics, and name
//! decompression is bounded (pointers must go strictly backwards, at most [`MAX_POINTERS`] of them,
//! at most [`MAX_NAME_LEN`] bytes of name).
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

use std::fmt::{self, Write as _};
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

pub const DNS_PORT: u16 = 53;
pub const HEADER_LEN: usize = 12;
/// Longest name in wire form, length bytes and root label included (RFC 1035 section 2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Largest response over UDP to a client that did not use EDNS (RFC 1035 section 4.2.1).
pub const MAX_UDP_LEN: usize = 512;
/// Largest message that a TCP length prefix can frame.
pub const MAX_TCP_LEN: usize = 65535;
/// TTL of local answers: Docker's, so clients cache sandbox addresses as they do under Docker.
pub const LOCAL_TTL: u32 = 600;
/// Compression pointers followed in one name. Pointers must go strictly backwards, which already
/// rules out loops; this bound keeps the work per name small however the message is built.
pub const MAX_POINTERS: usize = 32;
/// Nameservers used from resolv.conf: glibc's MAXNS, and what Docker forwards to.
pub const MAX_NAMESERVERS: usize = 3;

pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const OPCODE_QUERY: u8 = 0;

const FLAG_QR: u16 = 0x8000;
const OPCODE_MASK: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const RCODE_MASK: u16 = 0x000f;
/// Name field of an answer: a compression pointer to the question's name, which always starts
/// right after the header.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, HEADER_LEN as u8];
/// Name pointer, type, class, TTL, RDLENGTH, IPv4 address.
const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
/// Name pointer, type, class, TTL, RDLENGTH; the target name follows.
const PTR_RECORD_FIXED_LEN: usize = 2 + 2 + 2 + 4 + 2;
/// Where reverse names live (RFC 1035 section 3.5).
const REVERSE_SUFFIX: &str = ".in-addr.arpa";
/// Upper bound on any wait, so that a huge timeout cannot overflow an `Instant`.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Why bytes are not a query we can read. The text says what was wrong, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message of {0} bytes is shorter than the 12-byte DNS header")]
    ShortHeader(usize),
    #[error("message is a response (QR=1), not a query")]
    IsResponse,
    #[error("message has no question (QDCOUNT=0)")]
    NoQuestion,
    #[error("message ends inside the question name")]
    TruncatedName,
    #[error("message ends before the question's type and class")]
    TruncatedQuestion,
    #[error("label type {0:#04x} is not supported (only plain labels and compression pointers)")]
    BadLabelType(u8),
    #[error("name is longer than 255 bytes")]
    NameTooLong,
    #[error("compression pointer at offset {at} points to {target}, outside the message body")]
    PointerOutOfBounds { at: usize, target: usize },
    #[error(
        "compression pointer at offset {at} points to {target}, not before the name it continues (a loop)"
    )]
    PointerNotBackward { at: usize, target: usize },
    #[error("name uses more than {MAX_POINTERS} compression pointers")]
    TooManyPointers,
}

/// The fixed 12-byte header of a DNS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn parse(msg: &[u8]) -> Result<Header, ParseError> {
        let field = |i: usize| match msg.get(2 * i..2 * i + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(ParseError::ShortHeader(msg.len())),
        };
        Ok(Header {
            id: field(0)?,
            flags: field(1)?,
            qdcount: field(2)?,
            ancount: field(3)?,
            nscount: field(4)?,
            arcount: field(5)?,
        })
    }
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags & OPCODE_MASK) >> 11) as u8
    }
    pub fn authoritative(&self) -> bool {
        self.flags & FLAG_AA != 0
    }
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    pub fn recursion_available(&self) -> bool {
        self.flags & FLAG_RA != 0
    }
    pub fn rcode(&self) -> u8 {
        (self.flags & RCODE_MASK) as u8
    }
}

/// The response codes this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The first question of a message.
#[derive(Clone)]
pub struct Question {
    /// Lowercased, dotted, without trailing dot (`""` is the root). Bytes that would be ambiguous
    /// or unprintable are escaped as in zone files (`\.`, `\\`, `\DDD`), so such a name never
    /// equals a sandbox name.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The name as the client sent it, uncompressed and in its original case: responses echo it,
    /// because resolvers that randomise case (DNS 0x20) check that it comes back unchanged.
    wire_name: [u8; MAX_NAME_LEN],
    wire_len: usize,
}

impl Question {
    /// The name in uncompressed wire form, original case, ending with the root label.
    pub fn wire_name(&self) -> &[u8] {
        self.wire_name.get(..self.wire_len).unwrap_or_default()
    }
}

impl fmt::Debug for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Question")
            .field("name", &self.name)
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .field("wire_name", &self.wire_name())
            .finish()
    }
}

/// A query the server can act on: a header with QR=0 and a readable first question.
#[derive(Clone, Debug)]
pub struct Query {
    pub header: Header,
    pub question: Question,
}

/// Parses a query from untrusted bytes: the header and exactly the first question (further
/// questions, answers and additional records such as EDNS OPT are not read).
pub fn parse_query(msg: &[u8]) -> Result<Query, ParseError> {
    let header = Header::parse(msg)?;
    if header.is_response() {
        return Err(ParseError::IsResponse);
    }
    let question = parse_question(msg)?;
    Ok(Query { header, question })
}

/// Parses the first question of any message (query or response), at offset 12.
pub fn parse_question(msg: &[u8]) -> Result<Question, ParseError> {
    let header = Header::parse(msg)?;
    if header.qdcount == 0 {
        return Err(ParseError::NoQuestion);
    }
    let (wire, end) = read_name(msg, HEADER_LEN)?;
    let (qtype, qclass) = match msg.get(end..end + 4) {
        Some(&[t0, t1, c0, c1]) => (u16::from_be_bytes([t0, t1]), u16::from_be_bytes([c0, c1])),
        _ => return Err(ParseError::TruncatedQuestion),
    };
    Ok(Question {
        name: wire.to_lowercase_text(),
        qtype,
        qclass,
        wire_name: wire.bytes,
        wire_len: wire.len,
    })
}

/// A name read out of a message: uncompressed wire form, bounded by construction.
struct WireName {
    bytes: [u8; MAX_NAME_LEN],
    len: usize,
}

impl WireName {
    fn push_label(&mut self, label: &[u8]) -> Result<(), ParseError> {
        // Room must remain for the root label that ends every name.
        let label_len = u8::try_from(label.len()).map_err(|_| ParseError::NameTooLong)?;
        let end = self.len + 1 + label.len();
        if end + 1 > MAX_NAME_LEN {
            return Err(ParseError::NameTooLong);
        }
        let dest = self
            .bytes
            .get_mut(self.len..end)
            .ok_or(ParseError::NameTooLong)?;
        if let Some((first, rest)) = dest.split_first_mut() {
            *first = label_len;
            rest.copy_from_slice(label);
        }
        self.len = end;
        Ok(())
    }

    fn push_root(&mut self) -> Result<(), ParseError> {
        let slot = self
            .bytes
            .get_mut(self.len)
            .ok_or(ParseError::NameTooLong)?;
        *slot = 0;
        self.len += 1;
        Ok(())
    }

    fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.bytes.get(..self.len).unwrap_or_default();
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let label = tail.get(..usize::from(len))?;
            rest = tail.get(usize::from(len)..)?;
            (len != 0).then_some(label)
        })
    }

    /// Presentation form, lowercased (DNS compares names ASCII-case-insensitively, RFC 4343).
    fn to_lowercase_text(&self) -> String {
        let mut text = String::with_capacity(self.len);
        for label in self.labels() {
            if !text.is_empty() {
                text.push('.');
            }
            for &byte in label {
                match byte {
                    b'.' | b'\\' => {
                        text.push('\\');
                        text.push(char::from(byte));
                    }
                    0x21..=0x7e => text.push(char::from(byte.to_ascii_lowercase())),
                    _ => {
                        let _ = write!(text, "\\{byte:03}");
                    }
                }
            }
        }
        text
    }
}

/// Reads the possibly compressed name at `start`. Returns it and the offset just past the name
/// where it started (past the first pointer if there is one), where the record continues.
///
/// Every pointer must point into the message body and strictly before the start of the stretch
/// of labels it continues: offsets visited then strictly decrease, so no input can loop.
fn read_name(msg: &[u8], start: usize) -> Result<(WireName, usize), ParseError> {
    let mut name = WireName {
        bytes: [0; MAX_NAME_LEN],
        len: 0,
    };
    let mut pos = start;
    let mut stretch_start = start;
    let mut end_of_name = None;
    let mut pointers = 0;
    loop {
        let len_byte = *msg.get(pos).ok_or(ParseError::TruncatedName)?;
        match len_byte & 0xc0 {
            0x00 if len_byte == 0 => {
                name.push_root()?;
                return Ok((name, end_of_name.unwrap_or(pos + 1)));
            }
            0x00 => {
                let label_end = pos + 1 + usize::from(len_byte);
                let label = msg
                    .get(pos + 1..label_end)
                    .ok_or(ParseError::TruncatedName)?;
                name.push_label(label)?;
                pos = label_end;
            }
            0xc0 => {
                let low = *msg.get(pos + 1).ok_or(ParseError::TruncatedName)?;
                let target = usize::from(len_byte & 0x3f) << 8 | usize::from(low);
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(ParseError::TooManyPointers);
                }
                if target < HEADER_LEN || target >= msg.len() {
                    return Err(ParseError::PointerOutOfBounds { at: pos, target });
                }
                if target >= stretch_start {
                    return Err(ParseError::PointerNotBackward { at: pos, target });
                }
                end_of_name.get_or_insert(pos + 2);
                pos = target;
                stretch_start = target;
            }
            other => return Err(ParseError::BadLabelType(other)),
        }
    }
}

/// Writes the header of a response to `query_header` into `out` (cleared first). ID, opcode, RD
/// and CD are kept as RFC 1035 and RFC 4035 ask; RA is always set because the server recurses
/// for the client (by forwarding).
fn write_header(
    query_header: &Header,
    has_question: bool,
    rcode: Rcode,
    authoritative: bool,
    out: &mut Vec<u8>,
) {
    let mut flags =
        FLAG_QR | (query_header.flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | FLAG_RA | rcode as u16;
    if authoritative {
        flags |= FLAG_AA;
    }
    out.clear();
    out.extend_from_slice(&query_header.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&u16::from(has_question).to_be_bytes());
    out.extend_from_slice(&[0; 6]); // ANCOUNT, NSCOUNT, ARCOUNT
}

fn write_question(question: &Question, out: &mut Vec<u8>) {
    out.extend_from_slice(question.wire_name());
    out.extend_from_slice(&question.qtype.to_be_bytes());
    out.extend_from_slice(&question.qclass.to_be_bytes());
}

/// Writes an authoritative NOERROR response with one A record per address (TTL [`LOCAL_TTL`],
/// owner name compressed to the question). Stays within `max_len` bytes: addresses that do not
/// fit are left out and TC is set, so a UDP client retries over TCP. An empty `addresses` gives
/// NODATA. Returns how many records were written.
pub fn write_a_records(
    query_header: &Header,
    question: &Question,
    addresses: &[Ipv4Addr],
    max_len: usize,
    out: &mut Vec<u8>,
) -> usize {
    write_header(query_header, true, Rcode::NoError, true, out);
    write_question(question, out);
    let room = max_len.saturating_sub(out.len()) / A_RECORD_LEN;
    let count = addresses.len().min(room).min(usize::from(u16::MAX));
    for address in addresses.iter().take(count) {
        out.extend_from_slice(&POINTER_TO_QUESTION);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&address.octets());
    }
    let ancount = u16::try_from(count).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = out.get_mut(6..8) {
        field.copy_from_slice(&ancount);
    }
    if count < addresses.len() {
        if let Some(flags_high) = out.get_mut(2) {
            *flags_high |= (FLAG_TC >> 8) as u8;
        }
    }
    count
}

/// Authoritative NOERROR without answers: the name exists but has no record of the asked type
/// (AAAA for a sandbox, for instance). Unlike NXDOMAIN, this does not make the client give up on
/// the name for other types.
pub fn write_nodata(query_header: &Header, question: &Question, out: &mut Vec<u8>) {
    write_a_records(query_header, question, &[], MAX_UDP_LEN, out);
}

/// The wire form of a dotted name (`alpha.backend` -> `\x05alpha\x07backend\x00`), or None when
/// it is not a name a message can carry: an empty label, a label over 63 bytes, over 255 in all.
fn wire_form(name: &str) -> Option<Vec<u8>> {
    let mut wire = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        let len = u8::try_from(label.len())
            .ok()
            .filter(|l| (1..=63).contains(l))?;
        wire.push(len);
        wire.extend_from_slice(label.as_bytes());
    }
    wire.push(0);
    (wire.len() <= MAX_NAME_LEN).then_some(wire)
}

/// Writes an authoritative NOERROR response with one PTR record (TTL [`LOCAL_TTL`], owner name
/// compressed to the question) whose target is `target_wire`, a name in uncompressed wire form.
pub fn write_ptr_record(
    query_header: &Header,
    question: &Question,
    target_wire: &[u8],
    out: &mut Vec<u8>,
) {
    write_header(query_header, true, Rcode::NoError, true, out);
    write_question(question, out);
    let rdlength = u16::try_from(target_wire.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&POINTER_TO_QUESTION);
    out.extend_from_slice(&TYPE_PTR.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
    out.extend_from_slice(&rdlength.to_be_bytes());
    out.extend_from_slice(target_wire);
    if let Some(field) = out.get_mut(6..8) {
        field.copy_from_slice(&1u16.to_be_bytes());
    }
}

/// Authoritative NXDOMAIN: the name does not exist at all.
pub fn write_nxdomain(query_header: &Header, question: &Question, out: &mut Vec<u8>) {
    write_header(query_header, true, Rcode::NxDomain, true, out);
    write_question(question, out);
}

/// A non-authoritative error response (SERVFAIL, REFUSED, FORMERR, NOTIMP), with the question
/// copied when there is one that could be read.
pub fn write_error(
    query_header: &Header,
    question: Option<&Question>,
    rcode: Rcode,
    out: &mut Vec<u8>,
) {
    write_header(query_header, question.is_some(), rcode, false, out);
    if let Some(question) = question {
        write_question(question, out);
    }
}

/// Writes SERVFAIL for `query` into `out`: the answer when no upstream nameserver answered (or the
/// network is internal). False, with `out` empty, when `query` is not a query that can be
/// answered (shorter than a header, or a response): the caller drops it.
pub fn servfail_for(query: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    match Header::parse(query) {
        Ok(header) if !header.is_response() => {
            let question = parse_question(query).ok();
            write_error(&header, question.as_ref(), Rcode::ServFail, out);
            true
        }
        _ => false,
    }
}

/// What the gateway does with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// `out` holds the response to send back.
    Answered,
    /// Not a local name: forward the query unchanged upstream ([`forward_udp`], [`forward_tcp`]).
    /// `out` is empty.
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

/// The upstream nameservers in resolv.conf text: `nameserver` lines with an IPv4 or IPv6 address
/// (an IPv6 one may carry a `%zone`), port 53, at most [`MAX_NAMESERVERS`], without duplicates.
/// Comments, other options and malformed lines are skipped.
///
/// `skip_loopback` drops 127.0.0.0/8, ::1 (and 0.0.0.0, ::, which mean this host): set it when
/// the queries will be sent from another network namespace, where the host's loopback resolver
/// (systemd-resolved's 127.0.0.53, for one) is not reachable. The gateway forwards from the
/// daemon's own namespace, so it passes false.
pub fn nameservers_from_resolv_conf(text: &str, skip_loopback: bool) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(server) = words.next().and_then(parse_nameserver) else {
            continue;
        };
        if (skip_loopback && is_this_host(server.ip())) || servers.contains(&server) {
            continue;
        }
        servers.push(server);
        if servers.len() == MAX_NAMESERVERS {
            break;
        }
    }
    servers
}

fn parse_nameserver(word: &str) -> Option<SocketAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    // A link-local IPv6 server needs its zone: `fe80::1%eth0` or `fe80::1%2`.
    let (address, zone) = word.split_once('%')?;
    let address: Ipv6Addr = address.parse().ok()?;
    let scope_id = match zone.parse::<u32>() {
        Ok(index) => index,
        Err(_) => nix::net::if_::if_nametoindex(zone).ok()?,
    };
    Some(SocketAddr::V6(SocketAddrV6::new(
        address, DNS_PORT, 0, scope_id,
    )))
}

fn is_this_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_unspecified())
        }
    }
}

/// Why a query could not be forwarded. The caller answers the client with [`servfail_for`].
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("not forwarding: {0}")]
    InvalidQuery(ParseError),
    #[error("no upstream nameserver is configured")]
    NoUpstreams,
    #[error("no upstream nameserver answered ({tried} tried, the last, {last}: {error})")]
    NoAnswer {
        tried: usize,
        last: SocketAddr,
        error: io::Error,
    },
}

/// Forwards `query` over UDP to each upstream in turn, each with a fresh socket (so replies can
/// only come from that server, and IDs of different clients never collide) and `timeout` to
/// answer. A reply counts when its ID, QR and question match the query; other datagrams are
/// ignored. The reply is copied to `out` unchanged, TC included: the client then retries over TCP
/// and the gateway uses [`forward_tcp`].
///
/// A SERVFAIL or REFUSED reply moves on to the next upstream, as Docker does; it is passed on only
/// when no other upstream answers. On error `out` is empty.
pub fn forward_udp(
    query: &[u8],
    upstreams: &[SocketAddr],
    timeout: Duration,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    forward_with(query, upstreams, timeout, out, exchange_udp)
}

/// [`forward_udp`] over TCP: one connection per upstream, opened within `timeout`, and the whole
/// exchange on it bounded by `timeout` too.
pub fn forward_tcp(
    query: &[u8],
    upstreams: &[SocketAddr],
    timeout: Duration,
    out: &mut Vec<u8>,
) -> Result<(), ForwardError> {
    forward_with(query, upstreams, timeout, out, exchange_tcp)
}

/// What a reply must repeat from the query to be taken as its answer.
struct Expected {
    id: u16,
    question: Option<Question>,
}

impl Expected {
    fn matches(&self, reply: &[u8]) -> bool {
        let Ok(header) = Header::parse(reply) else {
            return false;
        };
        if header.id != self.id || !header.is_response() {
            return false;
        }
        // Error replies (FORMERR, say) may carry no question.
        match (&self.question, header.qdcount) {
            (Some(asked), 1..) => parse_question(reply).is_ok_and(|replied| {
                replied.name == asked.name
                    && replied.qtype == asked.qtype
                    && replied.qclass == asked.qclass
            }),
            _ => true,
        }
    }
}

type Exchange = fn(&[u8], &Expected, SocketAddr, Duration, &mut Vec<u8>) -> io::Result<()>;

fn forward_with(
    query: &[u8],
    upstreams: &[SocketAddr],
    timeout: Duration,
    out: &mut Vec<u8>,
    exchange: Exchange,
) -> Result<(), ForwardError> {
    out.clear();
    let header = Header::parse(query).map_err(ForwardError::InvalidQuery)?;
    if header.is_response() {
        return Err(ForwardError::InvalidQuery(ParseError::IsResponse));
    }
    let expected = Expected {
        id: header.id,
        question: parse_question(query).ok(),
    };
    let mut failure_reply: Option<Vec<u8>> = None;
    let mut last_error = None;
    for &upstream in upstreams {
        match exchange(query, &expected, upstream, timeout, out) {
            Ok(()) if is_server_failure(out) => failure_reply = Some(std::mem::take(out)),
            Ok(()) => return Ok(()),
            Err(error) => {
                out.clear();
                last_error = Some((upstream, error));
            }
        }
    }
    if let Some(reply) = failure_reply {
        *out = reply;
        return Ok(());
    }
    match last_error {
        Some((last, error)) => Err(ForwardError::NoAnswer {
            tried: upstreams.len(),
            last,
            error,
        }),
        None => Err(ForwardError::NoUpstreams),
    }
}

fn is_server_failure(reply: &[u8]) -> bool {
    Header::parse(reply).is_ok_and(|header| {
        header.rcode() == Rcode::ServFail as u8 || header.rcode() == Rcode::Refused as u8
    })
}

fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout.min(MAX_WAIT)).unwrap_or(now)
}

/// Time left before `deadline`, or a TimedOut error once it has passed (a zero timeout would mean
/// "no timeout" to the socket).
fn time_left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no reply before the timeout",
        ))
    } else {
        Ok(left)
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn exchange_udp(
    query: &[u8],
    expected: &Expected,
    upstream: SocketAddr,
    timeout: Duration,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let deadline = deadline_after(timeout);
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)?;
    // Connected: the kernel drops datagrams from anyone but the upstream.
    socket.connect(upstream)?;
    socket.send(query)?;
    loop {
        socket.set_read_timeout(Some(time_left(deadline)?))?;
        out.clear();
        out.resize(MAX_TCP_LEN, 0);
        match socket.recv(out) {
            Ok(len) => {
                out.truncate(len);
                if expected.matches(out) {
                    return Ok(());
                }
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted || is_timeout(&error) => {}
            Err(error) => return Err(error),
        }
    }
}

/// Reads from a stream, failing with TimedOut once `deadline` passes, however the peer drips
/// bytes in.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(time_left(self.deadline)?))?;
        match (&mut &*self.stream).read(buf) {
            Err(error) if is_timeout(&error) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no reply before the timeout",
            )),
            result => result,
        }
    }
}

fn exchange_tcp(
    query: &[u8],
    expected: &Expected,
    upstream: SocketAddr,
    timeout: Duration,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let deadline = deadline_after(timeout);
    let stream = TcpStream::connect_timeout(&upstream, time_left(deadline)?)?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    write_tcp_message(&mut &stream, query)?;
    let mut reader = DeadlineReader {
        stream: &stream,
        deadline,
    };
    loop {
        if !read_tcp_message(&mut reader, out)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "upstream closed the connection without a reply",
            ));
        }
        if expected.matches(out) {
            return Ok(());
        }
    }
}

/// Reads one DNS-over-TCP message (2-byte big-endian length, then the message) into `buf`.
/// Ok(false) on a clean end of stream before a new message; an end of stream inside a message is
/// an UnexpectedEof error.
pub fn read_tcp_message(r: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    let mut prefix = [0u8; 2];
    let mut filled = 0;
    while filled < prefix.len() {
        match r.read(prefix.get_mut(filled..).unwrap_or_default()) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "end of stream inside a DNS message length",
                ));
            }
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buf.resize(usize::from(u16::from_be_bytes(prefix)), 0);
    r.read_exact(buf)?;
    Ok(true)
}

/// Writes one DNS-over-TCP message: length prefix and message in a single write when the writer
/// takes it, so Nagle's algorithm does not hold the message back behind a 2-byte segment.
pub fn write_tcp_message(w: &mut impl Write, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "DNS message of {} bytes does not fit a TCP length prefix",
                msg.len()
            ),
        )
    })?;
    let prefix = len.to_be_bytes();
    let written = loop {
        match w.write_vectored(&[IoSlice::new(&prefix), IoSlice::new(msg)]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => break n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    };
    if written < prefix.len() {
        w.write_all(prefix.get(written..).unwrap_or_default())?;
        w.write_all(msg)
    } else {
        w.write_all(msg.get(written - prefix.len()..).unwrap_or_default())
    }
}

/// Runs the parser and the policy on arbitrary bytes and checks what the gateway relies on: no
/// panic, `out` empty unless answering, answers that are well-formed responses to the query.
/// The body of the fuzz target `fuzz/fuzz_targets/dns_parse.rs` and of the unit test that feeds it
/// pseudo-random bytes; it panics only when an invariant breaks.
#[doc(hidden)]
pub fn check_arbitrary_message(data: &[u8]) {
    const KNOWN: &str = "web.local";
    const KNOWN_REVERSE: &str = "2.0.18.172.in-addr.arpa";
    let web = Ipv4Addr::new(172, 18, 0, 2);
    let mut lookup = NameTable::new();
    lookup.add(KNOWN.to_string(), web);
    lookup.add(KNOWN.to_string(), Ipv4Addr::new(172, 18, 0, 3));
    lookup.add_reverse(web, KNOWN.to_string());
    let parsed = parse_query(data);
    if let Ok(query) = &parsed {
        let name = &query.question.name;
        assert!(!name.bytes().any(|b| b.is_ascii_uppercase()));
        assert!(query.question.wire_name().len() <= MAX_NAME_LEN);
        assert_eq!(query.question.wire_name().last(), Some(&0));
    }
    for (tcp, max_len) in [(false, MAX_UDP_LEN), (true, MAX_TCP_LEN)] {
        // Stale bytes must never leak into a decision other than Answered.
        let mut out = vec![0xa5; 3];
        let decision = if tcp {
            answer_tcp(data, &lookup, &mut out)
        } else {
            answer(data, &lookup, &mut out)
        };
        match decision {
            Decision::Drop => {
                assert!(out.is_empty());
                assert!(
                    Header::parse(data).is_err_and(|e| e == ParseError::ShortHeader(data.len()))
                        || Header::parse(data).is_ok_and(|h| h.is_response())
                );
            }
            Decision::Forward => {
                assert!(out.is_empty());
                let query = parsed.as_ref();
                assert!(query.is_ok_and(|q| {
                    q.question.name != KNOWN && q.question.name != KNOWN_REVERSE
                }));
            }
            Decision::Answered => {
                assert!(out.len() <= max_len);
                let (Ok(query_header), Ok(header)) = (Header::parse(data), Header::parse(&out))
                else {
                    panic!("answered without a readable header");
                };
                assert_eq!(header.id, query_header.id);
                assert!(header.is_response() && header.recursion_available());
                assert_eq!(header.opcode(), query_header.opcode());
                assert!(header.qdcount <= 1 && header.nscount == 0 && header.arcount == 0);
                let question_len = if header.qdcount == 1 {
                    let Ok(question) = parse_question(&out) else {
                        panic!("answered with an unreadable question");
                    };
                    if let Ok(query) = &parsed {
                        assert_eq!(question.name, query.question.name);
                    }
                    question.wire_name().len() + 4
                } else {
                    0
                };
                let asked = parsed.as_ref().map(|q| q.question.name.as_str());
                // Answers are A records for KNOWN, or one PTR record naming KNOWN.
                let record_len = if asked == Ok(KNOWN_REVERSE) {
                    PTR_RECORD_FIXED_LEN + KNOWN.len() + 2
                } else {
                    A_RECORD_LEN
                };
                let expected_len =
                    HEADER_LEN + question_len + usize::from(header.ancount) * record_len;
                assert_eq!(out.len(), expected_len);
                if header.ancount > 0 {
                    assert!(asked == Ok(KNOWN) || asked == Ok(KNOWN_REVERSE));
                }
            }
        }
    }
    let mut out = Vec::new();
    if servfail_for(data, &mut out) {
        assert!(Header::parse(&out).is_ok_and(|h| h.rcode() == Rcode::ServFail as u8));
    } else {
        assert!(out.is_empty());
    }
    let _ = nameservers_from_resolv_conf(&String::from_utf8_lossy(data), true);
    let mut stream = data;
    let mut message = Vec::new();
    while let Ok(true) = read_tcp_message(&mut stream, &mut message) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::thread;

    const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
    const WEB2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);

    /// A query as a stub resolver sends it: RD set, one question, no compression.
    fn query_bytes(id: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&FLAG_RD.to_be_bytes());
        msg.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            msg.push(label.len() as u8);
            msg.extend_from_slice(label.as_bytes());
        }
        msg.push(0);
        msg.extend_from_slice(&qtype.to_be_bytes());
        msg.extend_from_slice(&qclass.to_be_bytes());
        msg
    }

    fn web_local_a() -> Vec<u8> {
        query_bytes(0x1234, "web.local", TYPE_A, CLASS_IN)
    }

    /// WEB's reverse name and PTR target.
    const WEB_REVERSE: &str = "2.0.18.172.in-addr.arpa";
    const WEB_PTR: &str = "web.backend";

    /// A table as the controller builds it: names, names qualified by the network, and the
    /// reverse entry of WEB.
    struct Table;

    /// Its name is what the tests call it by.
    #[allow(non_upper_case_globals)]
    const lookup: Table = Table;

    impl Names for Table {
        fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
            forward(name)
        }

        fn name_of(&self, address: Ipv4Addr) -> Option<String> {
            (address == WEB).then(|| WEB_PTR.to_string())
        }
    }

    fn forward(name: &str) -> Option<Vec<Ipv4Addr>> {
        match name {
            "web.local" => Some(vec![WEB, WEB2]),
            "web.backend" => Some(vec![WEB]),
            "db" => Some(vec![WEB]),
            "many" => Some((0..100).map(|i| Ipv4Addr::new(172, 18, 1, i)).collect()),
            _ => None,
        }
    }

    #[derive(Debug)]
    struct Record {
        name: String,
        rtype: u16,
        class: u16,
        ttl: u32,
        rdata: Vec<u8>,
    }

    #[derive(Debug)]
    struct Response {
        header: Header,
        question: Option<Question>,
        answers: Vec<Record>,
    }

    /// Reads a response back, all sections, and checks that nothing trails.
    fn parse_response(msg: &[u8]) -> Response {
        let header = Header::parse(msg).expect("header");
        assert!(header.is_response());
        let mut pos = HEADER_LEN;
        let question = if header.qdcount == 1 {
            let question = parse_question(msg).expect("question");
            pos += question.wire_name().len() + 4;
            Some(question)
        } else {
            assert_eq!(header.qdcount, 0);
            None
        };
        let mut answers = Vec::new();
        let records = header.ancount + header.nscount + header.arcount;
        for _ in 0..records {
            let (name, end) = read_name(msg, pos).expect("record name");
            let fixed = &msg[end..end + 10];
            let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            answers.push(Record {
                name: name.to_lowercase_text(),
                rtype: u16::from_be_bytes([fixed[0], fixed[1]]),
                class: u16::from_be_bytes([fixed[2], fixed[3]]),
                ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
                rdata: msg[end + 10..end + 10 + rdlen].to_vec(),
            });
            pos = end + 10 + rdlen;
        }
        assert_eq!(pos, msg.len(), "trailing bytes after the last record");
        Response {
            header,
            question,
            answers,
        }
    }

    // ---- parsing ----

    #[test]
    fn parses_query_for_web_local_type_a() {
        let msg = [
            0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //
            3, b'w', b'e', b'b', 5, b'l', b'o', b'c', b'a', b'l', 0, //
            0x00, 0x01, 0x00, 0x01,
        ];
        assert_eq!(msg.to_vec(), web_local_a());
        let query = parse_query(&msg).expect("query");
        assert_eq!(query.header.id, 0x1234);
        assert!(query.header.recursion_desired());
        assert!(!query.header.is_response());
        assert_eq!(query.header.opcode(), OPCODE_QUERY);
        assert_eq!(query.question.name, "web.local");
        assert_eq!(query.question.qtype, TYPE_A);
        assert_eq!(query.question.qclass, CLASS_IN);
        assert_eq!(query.question.wire_name(), &msg[12..23]);
    }

    #[test]
    fn parse_lowercases_but_keeps_wire_case() {
        let msg = query_bytes(1, "WeB.LoCaL.", TYPE_A, CLASS_IN);
        let query = parse_query(&msg).expect("query");
        assert_eq!(query.question.name, "web.local");
        assert_eq!(query.question.wire_name(), b"\x03WeB\x05LoCaL\x00");
    }

    #[test]
    fn parse_root_name_is_empty() {
        let query = parse_query(&query_bytes(1, ".", 2, CLASS_IN)).expect("query");
        assert_eq!(query.question.name, "");
        assert_eq!(query.question.wire_name(), &[0]);
    }

    #[test]
    fn parse_escapes_dots_and_odd_bytes_inside_labels() {
        let mut msg = query_bytes(1, "x", TYPE_A, CLASS_IN);
        msg.truncate(12);
        msg.extend_from_slice(b"\x03a.B\x03\\\xff \x00\x00\x01\x00\x01");
        let query = parse_query(&msg).expect("query");
        assert_eq!(query.question.name, "a\\.b.\\\\\\255\\032");
    }

    #[test]
    fn parse_rejects_responses() {
        let mut msg = web_local_a();
        msg[2] |= 0x80;
        assert_eq!(parse_query(&msg).unwrap_err(), ParseError::IsResponse);
    }

    #[test]
    fn parse_rejects_no_question() {
        let mut msg = web_local_a();
        msg[5] = 0;
        assert_eq!(parse_query(&msg).unwrap_err(), ParseError::NoQuestion);
    }

    #[test]
    fn parse_rejects_every_truncation() {
        let msg = web_local_a();
        for len in 0..msg.len() {
            let err = parse_query(&msg[..len]).expect_err("truncated query parsed");
            let expected = match len {
                0..12 => ParseError::ShortHeader(len),
                12..23 => ParseError::TruncatedName,
                _ => ParseError::TruncatedQuestion,
            };
            assert_eq!(err, expected, "length {len}");
        }
        assert!(parse_query(&msg).is_ok());
    }

    #[test]
    fn parse_rejects_pointer_to_itself() {
        let mut msg = web_local_a();
        msg.truncate(12);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(
            parse_query(&msg).unwrap_err(),
            ParseError::PointerNotBackward { at: 12, target: 12 }
        );
    }

    #[test]
    fn parse_rejects_pointer_out_of_bounds_or_into_header() {
        let mut msg = web_local_a();
        msg.truncate(12);
        msg.extend_from_slice(&[0xc1, 0x00, 0, 1, 0, 1]);
        assert_eq!(
            parse_query(&msg).unwrap_err(),
            ParseError::PointerOutOfBounds {
                at: 12,
                target: 256
            }
        );
        msg[12..14].copy_from_slice(&[0xc0, 2]);
        assert_eq!(
            parse_query(&msg).unwrap_err(),
            ParseError::PointerOutOfBounds { at: 12, target: 2 }
        );
    }

    #[test]
    fn read_name_follows_backward_pointers_and_rejects_loops() {
        // offset 12: "local"; 19: "web" + pointer to 12; 25: pointer to 19.
        let mut msg = vec![0; 12];
        msg.extend_from_slice(b"\x05local\x00");
        msg.extend_from_slice(b"\x03web\xc0\x0c");
        msg.extend_from_slice(&[0xc0, 19]);
        let (name, end) = read_name(&msg, 25).expect("name");
        assert_eq!(name.to_lowercase_text(), "web.local");
        assert_eq!(end, 27);
        let (name, end) = read_name(&msg, 19).expect("name");
        assert_eq!(name.to_lowercase_text(), "web.local");
        assert_eq!(end, 25);

        // Two stretches pointing at each other: 12 "a" -> 16, 16 "b" -> 12.
        let mut looped = vec![0; 12];
        looped.extend_from_slice(b"\x01a\xc0\x10");
        looped.extend_from_slice(b"\x01b\xc0\x0c");
        assert_eq!(
            read_name(&looped, 16).err(),
            Some(ParseError::PointerNotBackward { at: 14, target: 16 })
        );
        assert_eq!(
            read_name(&looped, 12).err(),
            Some(ParseError::PointerNotBackward { at: 14, target: 16 })
        );
    }

    #[test]
    fn read_name_bounds_pointer_chains() {
        // 40 pointers, each to the one before it, ending at a root label at offset 12.
        let mut msg = vec![0; 12];
        msg.push(0);
        let mut previous = 12u16;
        for _ in 0..40 {
            let here = msg.len() as u16;
            msg.extend_from_slice(&(0xc000 | previous).to_be_bytes());
            previous = here;
        }
        let last = msg.len() - 2;
        assert_eq!(
            read_name(&msg, last).err(),
            Some(ParseError::TooManyPointers)
        );
        let within = 13 + 2 * (MAX_POINTERS - 1);
        assert!(read_name(&msg, within).is_ok());
    }

    #[test]
    fn parse_rejects_extended_label_types() {
        for bad in [0x40, 0x80] {
            let mut msg = web_local_a();
            msg[12] = bad | 3;
            assert_eq!(
                parse_query(&msg).unwrap_err(),
                ParseError::BadLabelType(bad)
            );
        }
    }

    #[test]
    fn parse_accepts_255_byte_names_and_rejects_longer() {
        // 3 labels of 63 and one of 61: 64 * 3 + 62 + 1 = 255 bytes of wire name.
        let label63 = "a".repeat(63);
        let longest = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        let query = parse_query(&query_bytes(1, &longest, TYPE_A, CLASS_IN)).expect("query");
        assert_eq!(query.question.wire_name().len(), 255);
        assert_eq!(query.question.name, longest);
        let too_long = format!("{label63}.{label63}.{label63}.{}", "b".repeat(62));
        assert_eq!(
            parse_query(&query_bytes(1, &too_long, TYPE_A, CLASS_IN)).unwrap_err(),
            ParseError::NameTooLong
        );
    }

    #[test]
    fn parse_errors_say_what_was_wrong() {
        assert_eq!(
            ParseError::ShortHeader(5).to_string(),
            "message of 5 bytes is shorter than the 12-byte DNS header"
        );
        assert!(
            ParseError::PointerNotBackward { at: 12, target: 12 }
                .to_string()
                .contains("loop")
        );
    }

    // ---- responses and policy ----

    #[test]
    fn known_name_type_a_gets_a_records() {
        let mut out = Vec::new();
        assert_eq!(
            answer(&web_local_a(), &lookup, &mut out),
            Decision::Answered
        );
        let response = parse_response(&out);
        let h = response.header;
        assert_eq!(h.id, 0x1234);
        assert!(h.is_response() && h.authoritative() && h.recursion_desired());
        assert!(h.recursion_available() && !h.truncated());
        assert_eq!(h.rcode(), Rcode::NoError as u8);
        assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 2, 0, 0));
        assert_eq!(&out[12..27], &web_local_a()[12..]);
        for (record, address) in response.answers.iter().zip([WEB, WEB2]) {
            assert_eq!(record.name, "web.local");
            assert_eq!(
                (record.rtype, record.class, record.ttl),
                (TYPE_A, CLASS_IN, 600)
            );
            assert_eq!(record.rdata, address.octets());
        }
        // Each owner name is a pointer to the question at offset 12.
        assert_eq!(&out[27..29], &[0xc0, 0x0c]);
        assert_eq!(out.len(), 27 + 2 * 16);
    }

    #[test]
    fn answer_echoes_question_case_and_clears_rd_when_unset() {
        let mut msg = query_bytes(7, "WEB.local", TYPE_A, CLASS_IN);
        msg[2] &= !0x01; // RD off
        let names = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            names.borrow_mut().push(name.to_owned());
            forward(name)
        };
        let mut out = Vec::new();
        assert_eq!(answer(&msg, &recording, &mut out), Decision::Answered);
        assert_eq!(names.into_inner(), vec!["web.local".to_owned()]);
        let response = parse_response(&out);
        assert!(!response.header.recursion_desired());
        assert_eq!(
            response.question.expect("question").wire_name(),
            b"\x03WEB\x05local\x00"
        );
    }

    #[test]
    fn known_name_other_types_get_nodata() {
        for qtype in [TYPE_AAAA, 15, 16, 33] {
            let mut out = Vec::new();
            let msg = query_bytes(9, "web.local", qtype, CLASS_IN);
            assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
            let response = parse_response(&out);
            assert_eq!(response.header.rcode(), 0);
            assert!(response.header.authoritative());
            assert_eq!(response.header.ancount, 0);
            assert_eq!(response.question.expect("question").qtype, qtype);
        }
    }

    #[test]
    fn aaaa_for_known_and_network_qualified_names_is_empty_noerror() {
        for name in ["web.local", "WEB.Backend", "db"] {
            let mut out = Vec::new();
            let msg = query_bytes(10, name, TYPE_AAAA, CLASS_IN);
            assert_eq!(
                answer(&msg, &lookup, &mut out),
                Decision::Answered,
                "{name}"
            );
            let response = parse_response(&out);
            let h = response.header;
            assert_eq!(h.rcode(), Rcode::NoError as u8, "{name}: not NXDOMAIN");
            assert!(h.authoritative());
            assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 0, 0, 0));
        }
        // An unknown name's AAAA is the upstream's business.
        let msg = query_bytes(10, "web.frontend", TYPE_AAAA, CLASS_IN);
        assert_eq!(answer(&msg, &lookup, &mut Vec::new()), Decision::Forward);
    }

    #[test]
    fn network_qualified_names_get_a_records() {
        let mut out = Vec::new();
        let msg = query_bytes(11, "Web.Backend", TYPE_A, CLASS_IN);
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
        let response = parse_response(&out);
        assert_eq!(response.answers.len(), 1);
        assert_eq!(response.answers[0].rdata, WEB.octets());
    }

    #[test]
    fn ptr_for_a_known_address_names_it_with_its_network() {
        for (tcp, qtype) in [(false, TYPE_PTR), (true, TYPE_PTR), (false, TYPE_ANY)] {
            let msg = query_bytes(12, "2.0.18.172.IN-ADDR.arpa", qtype, CLASS_IN);
            let mut out = Vec::new();
            let decision = if tcp {
                answer_tcp(&msg, &lookup, &mut out)
            } else {
                answer(&msg, &lookup, &mut out)
            };
            assert_eq!(decision, Decision::Answered);
            let response = parse_response(&out);
            let h = response.header;
            assert_eq!(h.id, 12);
            assert!(h.authoritative() && h.recursion_available() && !h.truncated());
            assert_eq!(h.rcode(), Rcode::NoError as u8);
            assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 1, 0, 0));
            // The question comes back as asked, case included.
            assert_eq!(
                response.question.expect("question").wire_name(),
                b"\x012\x010\x0218\x03172\x07IN-ADDR\x04arpa\x00"
            );
            let record = &response.answers[0];
            assert_eq!(record.name, WEB_REVERSE);
            assert_eq!(
                (record.rtype, record.class, record.ttl),
                (TYPE_PTR, CLASS_IN, LOCAL_TTL)
            );
            assert_eq!(record.rdata, b"\x03web\x07backend\x00");
            // Owner name compressed to the question.
            let question_end = HEADER_LEN + WEB_REVERSE.len() + 2 + 4;
            assert_eq!(&out[question_end..question_end + 2], &[0xc0, 0x0c]);
        }
    }

    #[test]
    fn other_types_of_a_known_reverse_name_get_nodata() {
        for qtype in [TYPE_A, TYPE_AAAA, 16] {
            let mut out = Vec::new();
            let msg = query_bytes(13, WEB_REVERSE, qtype, CLASS_IN);
            assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
            let response = parse_response(&out);
            assert_eq!(response.header.rcode(), Rcode::NoError as u8);
            assert_eq!(response.header.ancount, 0);
        }
    }

    #[test]
    fn ptr_for_other_addresses_and_partial_reverse_names_is_forwarded() {
        for name in [
            "3.0.18.172.in-addr.arpa", // an address of no sandbox (WEB2 has no reverse entry)
            "1.0.0.127.in-addr.arpa",  // not the network's
            "0.18.172.in-addr.arpa",   // a zone, not an address
            "02.0.18.172.in-addr.arpa", // not canonical
            "9.2.0.18.172.in-addr.arpa",
            "in-addr.arpa",
        ] {
            let mut out = vec![1];
            let msg = query_bytes(14, name, TYPE_PTR, CLASS_IN);
            assert_eq!(answer(&msg, &lookup, &mut out), Decision::Forward, "{name}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn reverse_addresses_parse_only_in_canonical_form() {
        assert_eq!(
            reverse_address("2.0.18.172.in-addr.arpa"),
            Some(Ipv4Addr::new(172, 18, 0, 2))
        );
        assert_eq!(
            reverse_address("255.255.255.255.in-addr.arpa"),
            Some(Ipv4Addr::BROADCAST)
        );
        for bad in [
            "256.0.18.172.in-addr.arpa",
            "-1.0.18.172.in-addr.arpa",
            "+1.0.18.172.in-addr.arpa",
            "1..18.172.in-addr.arpa",
            "2.0.18.172.in-addr.arpa.example",
            "2.0.18.172.ip6.arpa",
            "2.0.18.172",
        ] {
            assert_eq!(reverse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn ptr_targets_that_no_message_can_carry_are_forwarded() {
        for target in ["", "a..b", &"x".repeat(64), &["y"; 128].join(".")] {
            let mut table = NameTable::new();
            table.add_reverse(WEB, target.to_string());
            let msg = query_bytes(16, WEB_REVERSE, TYPE_PTR, CLASS_IN);
            assert_eq!(answer(&msg, &table, &mut Vec::new()), Decision::Forward);
        }
    }

    #[test]
    fn known_name_type_any_gets_a_records() {
        let mut out = Vec::new();
        let msg = query_bytes(9, "db", TYPE_ANY, CLASS_IN);
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
        assert_eq!(parse_response(&out).answers.len(), 1);
    }

    #[test]
    fn unknown_names_are_forwarded_including_single_labels_and_root() {
        for name in ["example.com", "unknown", ".", "web.local.example"] {
            let mut out = vec![1, 2, 3];
            let msg = query_bytes(9, name, TYPE_A, CLASS_IN);
            assert_eq!(answer(&msg, &lookup, &mut out), Decision::Forward, "{name}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn class_other_than_in_is_refused() {
        let mut out = Vec::new();
        let msg = query_bytes(9, "web.local", TYPE_A, 3);
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
        let response = parse_response(&out);
        assert_eq!(response.header.rcode(), Rcode::Refused as u8);
        assert!(!response.header.authoritative());
        assert_eq!(response.header.qdcount, 1);
    }

    #[test]
    fn opcode_other_than_query_is_notimp() {
        let mut msg = web_local_a();
        msg[2] |= 2 << 3; // STATUS
        let mut out = Vec::new();
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
        let response = parse_response(&out);
        assert_eq!(response.header.rcode(), Rcode::NotImp as u8);
        assert_eq!(response.header.opcode(), 2);
        assert_eq!(response.header.id, 0x1234);
    }

    #[test]
    fn unreadable_question_is_formerr_and_no_header_is_dropped() {
        let msg = web_local_a();
        let mut out = Vec::new();
        for len in 0..msg.len() {
            let decision = answer(&msg[..len], &lookup, &mut out);
            if len < HEADER_LEN {
                assert_eq!(decision, Decision::Drop);
                assert!(out.is_empty());
            } else {
                assert_eq!(decision, Decision::Answered);
                let response = parse_response(&out);
                assert_eq!(response.header.rcode(), Rcode::FormErr as u8);
                assert_eq!(response.header.id, 0x1234);
                assert_eq!(response.header.qdcount, 0);
            }
        }
        let mut no_question = msg.clone();
        no_question[5] = 0;
        assert_eq!(answer(&no_question, &lookup, &mut out), Decision::Answered);
        assert_eq!(parse_response(&out).header.rcode(), Rcode::FormErr as u8);
    }

    #[test]
    fn responses_are_dropped() {
        let mut msg = web_local_a();
        msg[2] |= 0x80;
        let mut out = vec![1];
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Drop);
        assert!(out.is_empty());
    }

    #[test]
    fn udp_answers_stay_within_512_bytes_with_tc_and_tcp_gets_all() {
        let msg = query_bytes(3, "many", TYPE_A, CLASS_IN);
        let mut out = Vec::new();
        assert_eq!(answer(&msg, &lookup, &mut out), Decision::Answered);
        assert!(out.len() <= MAX_UDP_LEN);
        let response = parse_response(&out);
        assert!(response.header.truncated());
        assert_eq!(response.answers.len(), (512 - 12 - 10) / 16);
        assert_eq!(answer_tcp(&msg, &lookup, &mut out), Decision::Answered);
        let response = parse_response(&out);
        assert!(!response.header.truncated());
        assert_eq!(response.answers.len(), 100);
        assert_eq!(response.answers[99].rdata, [172, 18, 1, 99]);
    }

    #[test]
    fn builders_set_rcode_and_authority() {
        let query = parse_query(&web_local_a()).expect("query");
        let mut out = Vec::new();
        write_nxdomain(&query.header, &query.question, &mut out);
        let response = parse_response(&out);
        assert_eq!(response.header.rcode(), Rcode::NxDomain as u8);
        assert!(response.header.authoritative() && response.header.recursion_available());
        write_nodata(&query.header, &query.question, &mut out);
        let response = parse_response(&out);
        assert_eq!((response.header.rcode(), response.header.ancount), (0, 0));
        for rcode in [
            Rcode::ServFail,
            Rcode::Refused,
            Rcode::FormErr,
            Rcode::NotImp,
        ] {
            write_error(&query.header, Some(&query.question), rcode, &mut out);
            let response = parse_response(&out);
            assert_eq!(response.header.rcode(), rcode as u8);
            assert!(!response.header.authoritative());
            assert!(response.header.recursion_desired());
        }
        assert_eq!(
            write_a_records(
                &query.header,
                &query.question,
                &[WEB; 3],
                12 + 15 + 32,
                &mut out
            ),
            2
        );
        assert!(parse_response(&out).header.truncated());
    }

    #[test]
    fn servfail_for_queries_only() {
        let mut out = Vec::new();
        assert!(servfail_for(&web_local_a(), &mut out));
        let response = parse_response(&out);
        assert_eq!(response.header.rcode(), Rcode::ServFail as u8);
        assert_eq!(response.header.id, 0x1234);
        assert_eq!(response.question.expect("question").name, "web.local");
        // A header alone still gets an answer, without question.
        assert!(servfail_for(&web_local_a()[..14], &mut out));
        assert_eq!(parse_response(&out).header.qdcount, 0);
        assert!(!servfail_for(&[0x12], &mut out));
        assert!(out.is_empty());
        let mut response = web_local_a();
        response[2] |= 0x80;
        assert!(!servfail_for(&response, &mut out));
    }

    // ---- resolv.conf ----

    #[test]
    fn nameservers_from_resolv_conf_reads_v4_v6_and_skips_garbage() {
        let text = "\
# Generated by NetworkManager
search example.org
nameserver 10.0.0.53
  nameserver   fd00::53   # inline comment
;nameserver 10.9.9.9
nameserver
nameserver not-an-address
nameserver 10.0.0.53
nameserver 300.1.1.1
options ndots:2
nameserver fe80::1%7
nameserver 10.0.0.54
";
        let servers = nameservers_from_resolv_conf(text, false);
        assert_eq!(
            servers,
            vec![
                "10.0.0.53:53".parse::<SocketAddr>().expect("addr"),
                "[fd00::53]:53".parse().expect("addr"),
                SocketAddr::V6(SocketAddrV6::new(
                    "fe80::1".parse().expect("addr"),
                    53,
                    0,
                    7
                )),
            ]
        );
    }

    #[test]
    fn nameservers_skip_loopback_only_when_asked() {
        let text =
            "nameserver 127.0.0.53\nnameserver ::1\nnameserver 127.1.2.3\nnameserver 10.0.0.1\n";
        let all = nameservers_from_resolv_conf(text, false);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0], "127.0.0.53:53".parse().expect("addr"));
        let reachable = nameservers_from_resolv_conf(text, true);
        assert_eq!(reachable, vec!["10.0.0.1:53".parse().expect("addr")]);
        assert!(nameservers_from_resolv_conf("nameserver ::ffff:127.0.0.1\n", true).is_empty());
        assert!(nameservers_from_resolv_conf("", false).is_empty());
    }

    // ---- TCP framing ----

    #[test]
    fn tcp_framing_round_trips_and_reports_eof() {
        let mut wire = Vec::new();
        write_tcp_message(&mut wire, &web_local_a()).expect("write");
        write_tcp_message(&mut wire, b"").expect("write");
        assert_eq!(&wire[..2], &[0, 27]);
        let mut reader = Cursor::new(wire.clone());
        let mut buf = Vec::new();
        assert!(read_tcp_message(&mut reader, &mut buf).expect("read"));
        assert_eq!(buf, web_local_a());
        assert!(read_tcp_message(&mut reader, &mut buf).expect("read"));
        assert!(buf.is_empty());
        assert!(!read_tcp_message(&mut reader, &mut buf).expect("clean eof"));

        for cut in [1, 2, 20] {
            let mut reader = Cursor::new(wire[..cut].to_vec());
            let err = read_tcp_message(&mut reader, &mut buf).expect_err("cut message");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let err = write_tcp_message(&mut Vec::new(), &vec![0; 65536]).expect_err("too long");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A writer that takes one byte per call, to exercise partial writes.
    struct Trickle(Vec<u8>);
    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            match buf.first() {
                Some(&b) => {
                    self.0.push(b);
                    Ok(1)
                }
                None => Ok(0),
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn tcp_write_survives_partial_writes() {
        let mut trickle = Trickle(Vec::new());
        write_tcp_message(&mut trickle, b"abc").expect("write");
        assert_eq!(trickle.0, b"\x00\x03abc");
    }

    // ---- forwarding (127.0.0.1 only) ----

    const SHORT: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(5);

    fn canned_reply(query: &[u8]) -> Vec<u8> {
        let query = parse_query(query).expect("query");
        let mut reply = Vec::new();
        write_a_records(
            &query.header,
            &query.question,
            &[Ipv4Addr::new(172, 18, 9, 9)],
            512,
            &mut reply,
        );
        reply
    }

    fn local_udp() -> (UdpSocket, SocketAddr) {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = socket.local_addr().expect("addr");
        (socket, addr)
    }

    /// Answers one query: first a reply with the wrong ID, then one with `rcode`.
    fn spawn_udp_upstream(socket: UdpSocket, rcode: Rcode) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            let mut buf = [0; 512];
            let (len, client) = socket.recv_from(&mut buf).expect("recv");
            let mut reply = canned_reply(&buf[..len]);
            reply[1] ^= 0xff;
            socket.send_to(&reply, client).expect("send");
            reply[1] ^= 0xff;
            reply[3] = (reply[3] & 0xf0) | rcode as u8;
            socket.send_to(&reply, client).expect("send");
        })
    }

    #[test]
    fn forward_udp_ignores_wrong_id_and_returns_matching_reply() {
        let (socket, upstream) = local_udp();
        let server = spawn_udp_upstream(socket, Rcode::NoError);
        let query = web_local_a();
        let mut out = Vec::new();
        forward_udp(&query, &[upstream], LONG, &mut out).expect("forward");
        assert_eq!(out, canned_reply(&query));
        server.join().expect("upstream thread");
    }

    #[test]
    fn forward_udp_times_out_on_silent_upstream() {
        let (_silent, upstream) = local_udp();
        let mut out = vec![1, 2];
        let started = Instant::now();
        let err = forward_udp(&web_local_a(), &[upstream], SHORT, &mut out).expect_err("silent");
        let elapsed = started.elapsed();
        assert!(elapsed >= SHORT && elapsed < LONG, "{elapsed:?}");
        assert!(out.is_empty());
        match &err {
            ForwardError::NoAnswer { tried, last, error } => {
                assert_eq!((*tried, *last), (1, upstream));
                assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            err.to_string()
                .starts_with("no upstream nameserver answered (1 tried")
        );
    }

    #[test]
    fn forward_udp_moves_past_silent_and_failing_upstreams() {
        let (_silent, silent) = local_udp();
        let (failing_socket, failing) = local_udp();
        let (good_socket, good) = local_udp();
        let failing_server = spawn_udp_upstream(failing_socket, Rcode::ServFail);
        let good_server = spawn_udp_upstream(good_socket, Rcode::NoError);
        let query = web_local_a();
        let mut out = Vec::new();
        forward_udp(&query, &[silent, failing, good], SHORT, &mut out).expect("forward");
        assert_eq!(out, canned_reply(&query));
        failing_server.join().expect("upstream thread");
        good_server.join().expect("upstream thread");
    }

    #[test]
    fn forward_udp_passes_on_servfail_when_nothing_better_answers() {
        let (failing_socket, failing) = local_udp();
        let (_silent, silent) = local_udp();
        let server = spawn_udp_upstream(failing_socket, Rcode::ServFail);
        let mut out = Vec::new();
        forward_udp(&web_local_a(), &[failing, silent], SHORT, &mut out).expect("forward");
        assert_eq!(
            Header::parse(&out).expect("header").rcode(),
            Rcode::ServFail as u8
        );
        server.join().expect("upstream thread");
    }

    #[test]
    fn forward_rejects_bad_queries_and_empty_upstreams() {
        let mut out = Vec::new();
        assert!(matches!(
            forward_udp(&[1, 2, 3], &[], SHORT, &mut out),
            Err(ForwardError::InvalidQuery(ParseError::ShortHeader(3)))
        ));
        let mut response = web_local_a();
        response[2] |= 0x80;
        assert!(matches!(
            forward_tcp(&response, &[], SHORT, &mut out),
            Err(ForwardError::InvalidQuery(ParseError::IsResponse))
        ));
        assert!(matches!(
            forward_udp(&web_local_a(), &[], SHORT, &mut out),
            Err(ForwardError::NoUpstreams)
        ));
    }

    #[test]
    fn forward_tcp_ignores_wrong_id_and_returns_matching_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut query = Vec::new();
            assert!(read_tcp_message(&mut stream, &mut query).expect("read"));
            let mut reply = canned_reply(&query);
            reply[0] ^= 0xff;
            write_tcp_message(&mut stream, &reply).expect("write");
            reply[0] ^= 0xff;
            write_tcp_message(&mut stream, &reply).expect("write");
        });
        let query = web_local_a();
        let mut out = Vec::new();
        forward_tcp(&query, &[upstream], LONG, &mut out).expect("forward");
        assert_eq!(out, canned_reply(&query));
        server.join().expect("upstream thread");
    }

    #[test]
    fn forward_tcp_times_out_on_silent_upstream() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let upstream = listener.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            thread::sleep(SHORT * 3);
            drop(stream);
        });
        let mut out = Vec::new();
        let started = Instant::now();
        let err = forward_tcp(&web_local_a(), &[upstream], SHORT, &mut out).expect_err("silent");
        assert!(started.elapsed() < LONG);
        assert!(
            matches!(&err, ForwardError::NoAnswer { error, .. } if error.kind() == io::ErrorKind::TimedOut),
            "{err:?}"
        );
        assert!(out.is_empty());
        server.join().expect("upstream thread");
    }

    // ---- robustness ----

    use crate::test_rng::XorShift;

    #[test]
    fn random_and_mutated_messages_never_break_invariants() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = rng.below(80);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_arbitrary_message(&bytes);
        }
        let mut compressed = web_local_a();
        compressed[5] = 2; // a second question that points back into the first
        compressed.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 16, 0, 1, 0, 1]);
        let seeds = [
            web_local_a(),
            query_bytes(1, "WEB.LOCAL", TYPE_AAAA, CLASS_IN),
            query_bytes(2, "web.local", TYPE_ANY, CLASS_IN),
            query_bytes(3, "example.com", TYPE_A, CLASS_IN),
            query_bytes(4, "2.0.18.172.in-addr.arpa", TYPE_PTR, CLASS_IN),
            compressed,
        ];
        let (mut local_answers, mut other_answers, mut forwarded, mut dropped) = (0, 0, 0, 0);
        for _ in 0..3000 {
            let mut msg = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                match rng.below(4) {
                    0 => {
                        let i = rng.below(msg.len());
                        msg[i] = rng.next() as u8;
                    }
                    1 => {
                        let i = rng.below(msg.len());
                        msg[i] ^= 1 << rng.below(8);
                    }
                    2 => msg.truncate(rng.below(msg.len() + 1)),
                    _ => {
                        let i = rng.below(msg.len() + 1);
                        let pointer = [0xc0 | rng.below(2) as u8, rng.next() as u8];
                        msg.splice(i..i, pointer);
                    }
                }
                if msg.is_empty() {
                    break;
                }
            }
            check_arbitrary_message(&msg);
            let mut out = Vec::new();
            match answer(&msg, &lookup, &mut out) {
                Decision::Answered if Header::parse(&out).is_ok_and(|h| h.ancount > 0) => {
                    local_answers += 1
                }
                Decision::Answered => other_answers += 1,
                Decision::Forward => forwarded += 1,
                Decision::Drop => dropped += 1,
            }
        }
        // The mutations reach every branch of the policy, not just the parser's rejections.
        for (count, what) in [
            (local_answers, "local answers"),
            (other_answers, "error or NODATA answers"),
            (forwarded, "forwards"),
            (dropped, "drops"),
        ] {
            assert!(count >= 50, "only {count} {what}");
        }
        for seed in &seeds {
            check_arbitrary_message(seed);
        }
    }
}
