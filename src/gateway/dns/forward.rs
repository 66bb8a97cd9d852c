//! Forwarding a query to the upstream nameservers, one after the other, over UDP or TCP, each
//! bounded by a timeout. Replies pass through unchanged.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::{
    Header, MAX_TCP_LEN, ParseError, Question, Rcode, parse_question, read_tcp_message,
    write_tcp_message,
};

/// Upper bound on any wait, so that a huge timeout cannot overflow an `Instant`.
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Why a query could not be forwarded. The caller answers the client with
/// [`servfail_for`](super::servfail_for).
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

#[cfg(test)]
mod tests;
