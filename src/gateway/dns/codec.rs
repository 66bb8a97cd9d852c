//! DNS messages on the wire: the header, the first question, the responses the gateway builds,
//! and the 2-byte length framing of DNS over TCP.
//!
//! Everything that reads a message works on untrusted bytes: it never panics, and name
//! decompression is bounded (pointers must go strictly backwards, at most [`MAX_POINTERS`] of them,
//! at most [`MAX_NAME_LEN`] bytes of name).

use std::fmt::{self, Write as _};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Decision, NameTable, answer, answer_tcp, nameservers_from_resolv_conf};

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
pub(super) const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_CD: u16 = 0x0010;
const RCODE_MASK: u16 = 0x000f;
/// Name field of an answer: a compression pointer to the question's name, which always starts
/// right after the header.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, HEADER_LEN as u8];
/// Name pointer, type, class, TTL, RDLENGTH, IPv4 address.
const A_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 4;
/// Name pointer, type, class, TTL, RDLENGTH, IPv6 address.
const AAAA_RECORD_LEN: usize = 2 + 2 + 2 + 4 + 2 + 16;
/// Name pointer, type, class, TTL, RDLENGTH; the target name follows.
const PTR_RECORD_FIXED_LEN: usize = 2 + 2 + 2 + 4 + 2;

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
pub(super) struct WireName {
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
    pub(super) fn to_lowercase_text(&self) -> String {
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
pub(super) fn read_name(msg: &[u8], start: usize) -> Result<(WireName, usize), ParseError> {
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
    write_address_records(query_header, question, addresses, &[], max_len, out)
}

/// [`write_a_records`] for both families: the A records of `v4`, then the AAAA records of `v6`
/// (type ANY asks for both), within `max_len` bytes (TC set when some were left out).
pub fn write_address_records(
    query_header: &Header,
    question: &Question,
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
    max_len: usize,
    out: &mut Vec<u8>,
) -> usize {
    write_header(query_header, true, Rcode::NoError, true, out);
    write_question(question, out);
    let room = max_len.saturating_sub(out.len());
    let count4 = v4.len().min(room / A_RECORD_LEN);
    let room = room - count4 * A_RECORD_LEN;
    let count6 = v6.len().min(room / AAAA_RECORD_LEN);
    // u16::MAX records would need far more than MAX_TCP_LEN bytes: `max_len` bounds the count.
    let count = count4 + count6;
    for address in v4.iter().take(count4) {
        write_address_record(TYPE_A, &address.octets(), out);
    }
    for address in v6.iter().take(count6) {
        write_address_record(TYPE_AAAA, &address.octets(), out);
    }
    let ancount = u16::try_from(count).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = out.get_mut(6..8) {
        field.copy_from_slice(&ancount);
    }
    if count < v4.len() + v6.len() {
        if let Some(flags_high) = out.get_mut(2) {
            *flags_high |= (FLAG_TC >> 8) as u8;
        }
    }
    count
}

fn write_address_record(rtype: u16, address: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&POINTER_TO_QUESTION);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&LOCAL_TTL.to_be_bytes());
    out.extend_from_slice(&(address.len() as u16).to_be_bytes());
    out.extend_from_slice(address);
}

/// Authoritative NOERROR without answers: the name exists but has no record of the asked type
/// (AAAA for a sandbox, for instance). Unlike NXDOMAIN, this does not make the client give up on
/// the name for other types.
pub fn write_nodata(query_header: &Header, question: &Question, out: &mut Vec<u8>) {
    write_a_records(query_header, question, &[], MAX_UDP_LEN, out);
}

/// The wire form of a dotted name (`alpha.backend` -> `\x05alpha\x07backend\x00`), or None when
/// it is not a name a message can carry: an empty label, a label over 63 bytes, over 255 in all.
pub(super) fn wire_form(name: &str) -> Option<Vec<u8>> {
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
    // A name with only an IPv6 address, and that address's reverse name (fd00::2).
    const KNOWN_V6: &str = "web6.local";
    const KNOWN_V6_REVERSE: &str =
        "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    let web = Ipv4Addr::new(172, 18, 0, 2);
    let web6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
    let mut lookup = NameTable::new();
    lookup.add(KNOWN.to_string(), web);
    lookup.add(KNOWN.to_string(), Ipv4Addr::new(172, 18, 0, 3));
    lookup.add_v6(
        KNOWN.to_string(),
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 3),
    );
    lookup.add_reverse(web, KNOWN.to_string());
    lookup.add_v6(KNOWN_V6.to_string(), web6);
    lookup.add_reverse_v6(web6, KNOWN_V6.to_string());
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
                let known = [KNOWN, KNOWN_REVERSE, KNOWN_V6, KNOWN_V6_REVERSE];
                assert!(query.is_ok_and(|q| !known.contains(&q.question.name.as_str())));
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
                // Answers are A and AAAA records of a known name, or one PTR record naming one.
                let mut at = HEADER_LEN + question_len;
                for _ in 0..header.ancount {
                    let fixed = out.get(at..at + PTR_RECORD_FIXED_LEN);
                    let Some(fixed) = fixed else {
                        panic!("answer record cut short");
                    };
                    assert_eq!(fixed[..2], POINTER_TO_QUESTION);
                    let rtype = u16::from_be_bytes([fixed[2], fixed[3]]);
                    let rdlength = usize::from(u16::from_be_bytes([fixed[10], fixed[11]]));
                    match rtype {
                        TYPE_A => assert_eq!(rdlength, 4),
                        TYPE_AAAA => assert_eq!(rdlength, 16),
                        TYPE_PTR => {
                            let reverse = [KNOWN_REVERSE, KNOWN_V6_REVERSE];
                            assert!(asked.is_ok_and(|a| reverse.contains(&a)));
                        }
                        other => panic!("answered with a record of type {other}"),
                    }
                    if rtype != TYPE_PTR {
                        assert!(asked == Ok(KNOWN) || asked == Ok(KNOWN_V6));
                    }
                    at += PTR_RECORD_FIXED_LEN + rdlength;
                }
                assert_eq!(out.len(), at);
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
mod tests;
