use std::net::TcpListener;
use std::thread;

use super::*;
use crate::gateway::dns::test_util::web_local_a;
use crate::gateway::dns::{parse_query, write_a_records};

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
