//! Fixtures shared by the DNS unit tests: queries as a stub resolver sends them, a reader for
//! whole responses, and the names the tests resolve.

use std::net::Ipv4Addr;

use super::codec::{FLAG_RD, read_name};
use super::{CLASS_IN, HEADER_LEN, Header, Names, Question, TYPE_A, parse_question};

pub(crate) const WEB: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 2);
pub(crate) const WEB2: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 3);

/// A query as a stub resolver sends it: RD set, one question, no compression.
pub(crate) fn query_bytes(id: u16, name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
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

pub(crate) fn web_local_a() -> Vec<u8> {
    query_bytes(0x1234, "web.local", TYPE_A, CLASS_IN)
}

/// WEB's reverse name and PTR target.
pub(crate) const WEB_REVERSE: &str = "2.0.18.172.in-addr.arpa";
pub(crate) const WEB_PTR: &str = "web.backend";

/// A table as the controller builds it: names, names qualified by the network, and the
/// reverse entry of WEB.
pub(crate) struct Table;

/// Its name is what the tests call it by.
#[allow(non_upper_case_globals)]
pub(crate) const lookup: Table = Table;

impl Names for Table {
    fn addresses(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        forward(name)
    }

    fn name_of(&self, address: Ipv4Addr) -> Option<String> {
        (address == WEB).then(|| WEB_PTR.to_string())
    }
}

pub(crate) fn forward(name: &str) -> Option<Vec<Ipv4Addr>> {
    match name {
        "web.local" => Some(vec![WEB, WEB2]),
        "web.backend" => Some(vec![WEB]),
        "db" => Some(vec![WEB]),
        "many" => Some((0..100).map(|i| Ipv4Addr::new(172, 18, 1, i)).collect()),
        _ => None,
    }
}

#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) name: String,
    pub(crate) rtype: u16,
    pub(crate) class: u16,
    pub(crate) ttl: u32,
    pub(crate) rdata: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) header: Header,
    pub(crate) question: Option<Question>,
    pub(crate) answers: Vec<Record>,
}

/// Reads a response back, all sections, and checks that nothing trails.
pub(crate) fn parse_response(msg: &[u8]) -> Response {
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
