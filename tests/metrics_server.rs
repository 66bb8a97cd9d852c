//! The metrics endpoint cannot be held: idle, slow and too many connections do not keep a
//! scrape out, slow clients are dropped after the header timeout, and none of it costs threads.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What a scrape may take while others hold connections (it takes milliseconds alone).
const QUICK: Duration = Duration::from_secs(1);
/// The server's header timeout (3 s), with room for a loaded machine.
const DROPPED_WITHIN: Duration = Duration::from_secs(6);

/// A daemon serving metrics on a free loopback port; returns its world and address.
fn daemon_with_metrics(tag: &str) -> (Tapnet, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let t = Tapnet::new(tag);
    // The first command autostarts the daemon, which inherits the metrics address.
    let out = t
        .command(&["network", "ls"])
        .env("TAPNET_METRICS", &addr)
        .output()
        .expect("run tapnet");
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(10), || scrape(&addr).is_ok()),
        "metrics never answered on {addr}"
    );
    (t, addr)
}

/// One `GET /metrics`: how long it took, or why it failed (a 5 s read timeout included).
fn scrape(addr: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)
        .map_err(|e| format!("read after {:?}: {e}", start.elapsed()))?;
    let took = start.elapsed();
    let ok = reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200");
    if !ok || !reply.contains("tapnet_capture_dropped_total") {
        return Err(format!("bad reply after {took:?}: {reply:?}"));
    }
    Ok(took)
}

fn quick_scrape(addr: &str, what: &str) -> Duration {
    let took = scrape(addr).unwrap_or_else(|e| panic!("scrape {what}: {e}"));
    eprintln!("scrape {what}: {took:?}");
    assert!(took < QUICK, "scrape {what} took {took:?}");
    took
}

fn threads(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("Threads line")
}

/// `n` connections that send nothing.
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| TcpStream::connect(addr).expect("connect idle"))
        .collect()
}

/// How long until the server closed `conn` (EOF or reset), from `since`; None if not by `limit`.
fn closed_after(conn: &mut TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 512];
    loop {
        let left = limit.checked_sub(since.elapsed())?;
        conn.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set read timeout");
        match conn.read(&mut buf) {
            // A reply to a timed-out head (408) may come first; the close follows.
            Ok(n) if n > 0 => continue,
            Ok(_) => return Some(since.elapsed()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(since.elapsed());
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn idle_connections_do_not_delay_a_scrape() {
    let (t, addr) = daemon_with_metrics("metrics-idle");
    quick_scrape(&addr, "with no other connection");
    let _idle = idle_connections(&addr, 10);
    // Let the server accept them all before the scrape comes.
    std::thread::sleep(Duration::from_millis(200));
    quick_scrape(&addr, "beside 10 idle connections");
    drop(t);
}

#[test]
fn a_slow_head_is_dropped_and_does_not_block_scrapes() {
    let (t, addr) = daemon_with_metrics("metrics-slow");
    let mut slow = TcpStream::connect(&addr).expect("connect slow client");
    let since = Instant::now();
    let mut writer = slow.try_clone().expect("clone slow client");
    // One byte of a head that never ends, every second, for longer than the header timeout.
    let dripping = std::thread::spawn(move || {
        let head = b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa";
        for b in head {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    quick_scrape(&addr, "while a head drips in");
    std::thread::sleep(Duration::from_millis(1000));
    quick_scrape(&addr, "while a head still drips in");
    let dropped = closed_after(&mut slow, since, DROPPED_WITHIN);
    eprintln!("slow client dropped after {dropped:?}");
    assert!(
        dropped.is_some(),
        "the slow client still held its connection after {DROPPED_WITHIN:?}"
    );
    let _ = slow.shutdown(std::net::Shutdown::Both);
    let _ = dripping.join();
    quick_scrape(&addr, "after the slow client");
    drop(t);
}

#[test]
fn more_idle_connections_than_the_bound_cost_no_threads_and_starve_no_scrape() {
    let (t, addr) = daemon_with_metrics("metrics-many");
    let pid = t.pid().expect("daemon pid");
    let before = threads(pid);
    quick_scrape(&addr, "with no other connection");
    let since = Instant::now();
    let mut idle = idle_connections(&addr, 100);
    std::thread::sleep(Duration::from_millis(200));
    quick_scrape(&addr, "beside 100 idle connections");
    let during = threads(pid);
    eprintln!("daemon threads: {before} before, {during} with 100 idle connections");
    assert!(
        during <= before,
        "threads grew from {before} to {during} with idle connections"
    );
    // Every idle connection is let go: those past the bound at once, the rest at the timeout.
    for (i, conn) in idle.iter_mut().enumerate() {
        let dropped = closed_after(conn, since, DROPPED_WITHIN);
        assert!(
            dropped.is_some(),
            "idle connection {i} still held after {DROPPED_WITHIN:?}"
        );
    }
    eprintln!(
        "all 100 idle connections closed after {:?}",
        since.elapsed()
    );
    quick_scrape(&addr, "after the idle connections");
    drop(t);
}
