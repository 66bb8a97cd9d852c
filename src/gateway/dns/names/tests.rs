use super::*;
use crate::gateway::dns::test_util::{
    WEB, WEB_REVERSE, WEB2, forward, lookup, parse_response, query_bytes, web_local_a,
};
use crate::gateway::dns::{HEADER_LEN, LOCAL_TTL, TYPE_AAAA};
use std::net::Ipv6Addr;

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

/// A dual-stack table as the controller builds it: "web" has both families, "v4only" only A,
/// "v6only" only AAAA, and the reverse names of both of web's addresses.
fn dual_stack() -> NameTable {
    let mut table = NameTable::new();
    table.add("web".into(), WEB);
    table.add_v6("web".into(), WEB6);
    table.add_v6("web".into(), WEB6);
    table.add_v6("web".into(), WEB6_2);
    table.add("v4only".into(), WEB2);
    table.add_v6("v6only".into(), WEB6_2);
    table.add_reverse(WEB, "web.backend".into());
    table.add_reverse_v6(WEB6, "web.backend".into());
    table
}

const WEB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0, 2);
const WEB6_2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xdead, 0, 0, 0, 0, 0xa, 0x1b);
const WEB6_REVERSE: &str =
    "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.a.e.d.0.0.d.f.ip6.arpa";

#[test]
fn aaaa_answers_the_v6_records_and_a_stays_as_it_was() {
    let table = dual_stack();
    let mut out = Vec::new();
    let msg = query_bytes(20, "WEB", TYPE_AAAA, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    let response = parse_response(&out);
    assert!(response.header.authoritative() && !response.header.truncated());
    assert_eq!(response.header.rcode(), Rcode::NoError as u8);
    let rdata: Vec<_> = response.answers.iter().map(|r| r.rdata.clone()).collect();
    assert_eq!(
        rdata,
        vec![WEB6.octets().to_vec(), WEB6_2.octets().to_vec()]
    );
    for record in &response.answers {
        assert_eq!(record.name, "web");
        assert_eq!(
            (record.rtype, record.class, record.ttl),
            (TYPE_AAAA, CLASS_IN, LOCAL_TTL)
        );
    }
    let msg = query_bytes(21, "web", TYPE_A, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    let response = parse_response(&out);
    assert_eq!(response.answers.len(), 1);
    assert_eq!(
        (response.answers[0].rtype, &response.answers[0].rdata[..]),
        (TYPE_A, &WEB.octets()[..])
    );
    // ANY: both families, A first.
    let msg = query_bytes(22, "web", TYPE_ANY, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    let types: Vec<_> = parse_response(&out)
        .answers
        .iter()
        .map(|r| r.rtype)
        .collect();
    assert_eq!(types, vec![TYPE_A, TYPE_AAAA, TYPE_AAAA]);
}

#[test]
fn a_family_a_name_lacks_is_nodata_not_forwarded() {
    let table = dual_stack();
    for (name, qtype) in [("v4only", TYPE_AAAA), ("v6only", TYPE_A), ("v6only", 15)] {
        let mut out = Vec::new();
        let msg = query_bytes(23, name, qtype, CLASS_IN);
        assert_eq!(answer(&msg, &table, &mut out), Decision::Answered, "{name}");
        let response = parse_response(&out);
        assert_eq!(response.header.rcode(), Rcode::NoError as u8, "{name}");
        assert_eq!(response.header.ancount, 0, "{name} {qtype}");
    }
    // Positive control: the same names answer in the family they have.
    let msg = query_bytes(24, "v6only", TYPE_AAAA, CLASS_IN);
    let mut out = Vec::new();
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    assert_eq!(parse_response(&out).answers[0].rdata, WEB6_2.octets());
    let msg = query_bytes(25, "nobody", TYPE_AAAA, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut Vec::new()), Decision::Forward);
}

#[test]
fn ptr_under_ip6_arpa_names_known_v6_addresses() {
    let table = dual_stack();
    let mut out = Vec::new();
    let msg = query_bytes(26, &WEB6_REVERSE.to_uppercase(), TYPE_PTR, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    let response = parse_response(&out);
    assert_eq!(response.answers.len(), 1);
    let record = &response.answers[0];
    assert_eq!((record.rtype, record.ttl), (TYPE_PTR, LOCAL_TTL));
    assert_eq!(record.name, WEB6_REVERSE);
    assert_eq!(record.rdata, b"\x03web\x07backend\x00");
    // Other types of the reverse name: NODATA. An address the network does not know: forwarded.
    let msg = query_bytes(27, WEB6_REVERSE, TYPE_A, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Answered);
    assert_eq!(parse_response(&out).header.ancount, 0);
    let other = WEB6_REVERSE.replacen('2', "3", 1);
    let msg = query_bytes(28, &other, TYPE_PTR, CLASS_IN);
    assert_eq!(answer(&msg, &table, &mut out), Decision::Forward);
}

#[test]
fn ip6_arpa_names_parse_only_with_32_single_hex_nibbles() {
    assert_eq!(reverse_address_v6(WEB6_REVERSE), Some(WEB6));
    let all_f = format!("{}ip6.arpa", "f.".repeat(32));
    assert_eq!(reverse_address_v6(&all_f), Some(Ipv6Addr::from(u128::MAX)));
    let short = WEB6_REVERSE.strip_prefix("2.").unwrap();
    let long = format!("0.{WEB6_REVERSE}");
    let two_digits = WEB6_REVERSE.replacen("2.", "20.", 1);
    let not_hex = WEB6_REVERSE.replacen('2', "g", 1);
    let empty_label = WEB6_REVERSE.replacen("2.", ".", 1);
    for bad in [
        short,
        &long,
        &two_digits,
        &not_hex,
        &empty_label,
        "ip6.arpa",
        ".ip6.arpa",
    ] {
        assert_eq!(reverse_address_v6(bad), None, "{bad}");
    }
}
