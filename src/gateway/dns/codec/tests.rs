use std::io::Cursor;

use super::*;
use crate::gateway::dns::test_util::{WEB, lookup, parse_response, query_bytes, web_local_a};
use crate::test_rng::XorShift;

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

// ---- robustness ----

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
        query_bytes(5, "web6.local", TYPE_AAAA, CLASS_IN),
        query_bytes(
            6,
            "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa",
            TYPE_PTR,
            CLASS_IN,
        ),
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
