//! `tapnet capture`: pcap that tcpdump reads, super-frames segmented with correct checksums,
//! the sandbox filter, the snaplen, and bad requests.

mod common;

use common::Tapnet;
use std::process::{Command, Stdio};

/// (incl_len, orig_len) of every record of a pcap file.
fn records(path: &std::path::Path) -> Vec<(u32, u32)> {
    let bytes = std::fs::read(path).expect("pcap file");
    assert!(bytes.len() >= 24, "pcap header");
    assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
    assert_eq!(
        u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
        1,
        "ethernet"
    );
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let le =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (incl, orig) = (le(at + 8), le(at + 12));
        out.push((incl, orig));
        at += 16 + incl as usize;
    }
    assert_eq!(at, bytes.len(), "whole records only");
    out
}

fn tcpdump_read(path: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tcpdump")
        .arg("-r")
        .arg(path)
        .args(["-nn"])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("tcpdump -r");
    assert!(out.status.success(), "tcpdump could read the capture");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn captured_tcp_is_segmented_with_correct_checksums() {
    let mut t = Tapnet::new("capture");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.3"), "learn both stations first");
    let file = t.dir.join("tcp.pcap");
    let file_arg = file.to_str().expect("path").to_string();
    let capture = t
        .command(&["capture", "n", "-w", &file_arg, "-c", "400"])
        .spawn()
        .expect("capture");
    common::wait_for_capture(&file);
    let (sent, received) = t.tcp_transfer("a", "b", "172.18.0.3", 4 << 20);
    assert_eq!(sent, received);
    let status = capture
        .wait_with_output()
        .expect("capture ends after -c frames")
        .status;
    assert!(status.success());

    let recs = records(&file);
    assert_eq!(recs.len(), 400);
    assert!(
        recs.iter()
            .all(|&(incl, orig)| incl == orig && orig <= 1514),
        "wire-size frames"
    );
    assert!(
        recs.iter().filter(|&&(_, orig)| orig == 1514).count() > 100,
        "full-size segments"
    );
    let verbose = tcpdump_read(&file, &["-vv", "tcp"]);
    let correct = verbose.matches("cksum").count();
    assert!(correct > 100, "tcpdump saw TCP: {correct}");
    assert!(!verbose.contains("incorrect"), "every checksum is correct");
}

#[test]
fn sandbox_filter_and_snaplen() {
    let t = Tapnet::new("capfilter");
    t.ok(&["network", "create", "n"]);
    for s in ["a", "b", "c"] {
        t.ok(&["sandbox", "create", s, "--net", "n"]);
    }
    assert!(t.ping("a", "172.18.0.3"));
    let on_c = t.dir.join("c.pcap");
    let on_b = t.dir.join("b.pcap");
    let spawn = |path: &std::path::Path, sandbox: &str| {
        t.command(&[
            "capture",
            "n",
            "--sandbox",
            sandbox,
            "-s",
            "60",
            "-w",
            path.to_str().unwrap_or(""),
        ])
        .spawn()
        .expect("capture")
    };
    let mut cap_c = spawn(&on_c, "c");
    let mut cap_b = spawn(&on_b, "b");
    common::wait_for_capture(&on_c);
    common::wait_for_capture(&on_b);
    assert!(
        t.exec(
            "a",
            &["ping", "-c", "3", "-i", "0.2", "-s", "500", "172.18.0.3"]
        )
        .status
        .success()
    );
    // The daemon flushes records as they come: wait for b's six, not for a fixed time.
    assert!(
        common::wait_until(std::time::Duration::from_secs(5), || {
            std::fs::metadata(&on_b).is_ok_and(|m| m.len() >= 24 + 6 * (16 + 60))
        }),
        "b's capture got the pings"
    );
    for cap in [&mut cap_c, &mut cap_b] {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(cap.id().to_string())
            .status();
        let _ = cap.wait();
    }
    let icmp_b = tcpdump_read(&on_b, &["icmp"]);
    assert_eq!(
        icmp_b.lines().count(),
        6,
        "b sees 3 requests and 3 replies: {icmp_b}"
    );
    assert!(
        tcpdump_read(&on_c, &["icmp"]).is_empty(),
        "c's capture holds no unicast of a and b"
    );
    let recs = records(&on_b);
    assert!(recs.iter().all(|&(incl, _)| incl <= 60), "snaplen 60");
    assert!(
        recs.iter().any(|&(incl, orig)| incl == 60 && orig == 542),
        "orig_len kept: {recs:?}"
    );
}

#[test]
fn bad_capture_requests_fail_clearly() {
    let t = Tapnet::new("capbad");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "elsewhere"]);
    for (args, want) in [
        (&["capture", "nosuch"][..], "no such network"),
        (&["capture", "host"], "no switch"),
        (&["capture", "n", "--sandbox", "nosuch"], "no such sandbox"),
        (&["capture", "n", "--sandbox", "elsewhere"], "not connected"),
        (&["capture", "n", "-s", "5"], "snaplen"),
    ] {
        let err = t.fails(args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// A capture started as a background job of a script (SIGINT ignored, as a non-interactive
/// shell leaves it for `capture ... &`) still ends on `kill -INT`, as tcpdump does, with the
/// frames it has written readable.
#[test]
fn sigint_ends_a_capture_started_with_sigint_ignored() {
    use std::os::unix::process::CommandExt;
    let t = Tapnet::new("capsigint");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let file = t.dir.join("bg.pcap");
    let mut cmd = t.command(&["capture", "n", "-w", file.to_str().unwrap_or("")]);
    // SAFETY: between fork and exec only `signal`, which is async-signal-safe, runs.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::SigHandler::SigIgn,
            )
            .map(|_| ())
            .map_err(std::io::Error::from)
        });
    }
    let mut cap = cmd.spawn().expect("capture");
    common::wait_for_capture(&file);
    assert!(t.ping("a", "172.18.0.1"));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(cap.id().to_string())
        .status();
    let ended = common::wait_until(std::time::Duration::from_secs(5), || {
        cap.try_wait().ok().flatten().is_some()
    });
    if !ended {
        let _ = cap.kill();
        let _ = cap.wait();
    }
    assert!(ended, "SIGINT did not end the capture");
    assert!(
        !tcpdump_read(&file, &["icmp"]).is_empty(),
        "the pings are in the file"
    );
}
