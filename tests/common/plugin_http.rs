//! The Docker plugin protocol spoken as dockerd speaks it: JSON POSTed over HTTP/1.1 on the
//! plugin's unix socket, for tests that send what this machine's dockerd cannot (or must not
//! wait for).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// POST `body` to the Docker plugin's `path` (HTTP over its unix socket): status and body.
pub fn post(socket: &std::path::Path, path: &str, body: &serde_json::Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = UnixStream::connect(socket).expect("connect to the plugin");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

pub fn post_ok(socket: &std::path::Path, path: &str, body: &serde_json::Value) -> String {
    let (status, answer) = post(socket, path, body);
    assert_eq!(status, 200, "{path}: {answer}");
    let err = serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default()["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.is_empty(), "{path}: {err}");
    answer
}
