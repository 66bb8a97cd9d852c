//! HTTP/1.1 over a unix socket, as much as the plugin protocol needs: one POST with a
//! `Content-Length` body, one answer, then the connection closes. `httparse` reads the heads;
//! the framing around it is ours. Every read and write has a deadline.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::protocol::CONTENT_TYPE;

/// A request or answer head longer than this is refused.
pub const MAX_HEAD: usize = 16 * 1024;
/// Bodies are small JSON objects; anything larger is refused.
pub const MAX_BODY: usize = 1 << 20;
const MAX_HEADERS: usize = 64;

#[derive(Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// What a head says: where the body starts and how long it is.
#[derive(Debug, PartialEq)]
pub struct Head {
    pub len: usize,
    pub body_len: usize,
    /// Request: method and path. Answer: the status code and "".
    pub first: String,
    pub second: String,
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, String> {
    let mut len = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not supported: send Content-Length".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("malformed Content-Length")?;
            if len.is_some_and(|l| l != v) {
                return Err("conflicting Content-Length headers".into());
            }
            len = Some(v);
        }
    }
    let len = len.unwrap_or(0);
    if len > MAX_BODY {
        return Err(format!(
            "body of {len} bytes is too large (at most {MAX_BODY})"
        ));
    }
    Ok(len)
}

/// Parse a request head from the bytes read so far; `Ok(None)` wants more bytes.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            len,
            body_len: content_length(req.headers)?,
            first: req.method.unwrap_or_default().to_string(),
            second: req.path.unwrap_or_default().to_string(),
        })),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(format!("request head longer than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed HTTP request: {e}")),
    }
}

/// Parse an answer head; `Ok(None)` wants more bytes.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(Head {
            len,
            body_len: content_length(resp.headers)?,
            first: resp.code.unwrap_or_default().to_string(),
            second: String::new(),
        })),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(format!("answer head longer than {MAX_HEAD} bytes"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!("malformed HTTP answer: {e}")),
    }
}

/// Read one head and its body, all before `deadline`.
fn read_message(
    stream: &mut UnixStream,
    deadline: Instant,
    parse: fn(&[u8]) -> Result<Option<Head>, String>,
) -> Result<(Head, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut head = None;
    loop {
        if let Some(h) = &head {
            let h: &Head = h;
            if buf.len() >= h.len + h.body_len {
                break;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set read timeout: {e}"))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out".into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            return Err("connection closed before the message was complete".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if head.is_none() {
            head = parse(&buf)?;
        }
    }
    let Some(head) = head else {
        return Err("no message".into());
    };
    let body = buf[head.len..head.len + head.body_len].to_vec();
    Ok((head, body))
}

fn write_all(stream: &mut UnixStream, bytes: &[u8], timeout: Duration) -> Result<(), String> {
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| format!("set write timeout: {e}"))?;
    stream.write_all(bytes).map_err(|e| format!("write: {e}"))
}

/// Server side: read one request within `timeout`.
pub fn read_request(stream: &mut UnixStream, timeout: Duration) -> Result<Request, String> {
    let (head, body) = read_message(stream, Instant::now() + timeout, parse_request_head)?;
    Ok(Request {
        method: head.first,
        path: head.second,
        body,
    })
}

/// Server side: answer with `status` and a JSON body, then close.
pub fn write_response(
    stream: &mut UnixStream,
    status: u16,
    body: &[u8],
    timeout: Duration,
) -> Result<(), String> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    write_all(stream, &out, timeout)
}

/// Client side: POST `body` to `path` and read the answer, all within `timeout`.
/// Returns the status code and the body.
pub fn post(
    stream: &mut UnixStream,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nAccept: {CONTENT_TYPE}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    write_all(stream, &out, timeout)?;
    let (head, body) = read_message(stream, deadline, parse_response_head)?;
    let status = head.first.parse().unwrap_or(0);
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads() {
        let req = b"POST /NetworkDriver.Join HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}";
        let head = parse_request_head(req).unwrap().unwrap();
        assert_eq!(head.first, "POST");
        assert_eq!(head.second, "/NetworkDriver.Join");
        assert_eq!(head.body_len, 2);
        assert_eq!(&req[head.len..], b"{}");
        assert_eq!(parse_request_head(b"POST /x HTTP/1.1\r\nHo").unwrap(), None);
        assert!(parse_request_head(b"\x00\x01 junk\r\n\r\n").is_err());
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_request_head(chunked).unwrap_err().contains("chunked"));
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n";
        assert!(parse_request_head(huge).unwrap_err().contains("too large"));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(parse_request_head(two).is_err());
        let long = [b'a'; MAX_HEAD + 1];
        assert!(parse_request_head(&long).is_err());
    }

    #[test]
    fn round_trip_over_a_socketpair() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let req = read_request(&mut b, Duration::from_secs(5)).unwrap();
            assert_eq!(req.path, "/Plugin.Activate");
            assert_eq!(req.body, b"{}");
            write_response(
                &mut b,
                200,
                br#"{"Implements":["NetworkDriver"]}"#,
                Duration::from_secs(5),
            )
            .unwrap();
        });
        let (status, body) =
            post(&mut a, "/Plugin.Activate", b"{}", Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, br#"{"Implements":["NetworkDriver"]}"#);
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let err = post(&mut a, "/x", b"{}", Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
