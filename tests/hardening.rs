//! Hardening (issue 8, items 4 to 6): input that cannot work is refused before anything is
//! created, a sandbox cannot take over the MAC table or pose as another, and no sandbox can
//! exhaust the daemon's threads, fds or flows while its neighbours' traffic keeps working.

mod common;

use common::Tapnet;

/// Open fds and threads of the daemon, from /proc.
fn daemon_fds_and_threads(t: &Tapnet) -> (usize, usize) {
    let pid = t.pid().expect("daemon pid");
    let count = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .map(|d| d.count())
            .unwrap_or_else(|e| panic!("read /proc/{pid}/{what}: {e}"))
    };
    (count("fd"), count("task"))
}

#[test]
fn special_use_subnets_are_refused_and_leak_nothing() {
    let t = Tapnet::new("badsubnet");
    t.ok(&["network", "create", "good1", "--subnet", "10.71.0.0/24"]);
    let before = daemon_fds_and_threads(&t);
    let cases = [
        ("224.0.0.0/24", "multicast"),
        ("127.0.0.0/24", "loopback"),
        ("0.0.0.0/24", "this network"),
        ("240.0.0.0/24", "reserved"),
        ("255.255.255.0/24", "reserved"),
        ("169.254.0.0/24", "link-local"),
    ];
    for _ in 0..3 {
        for (subnet, why) in cases {
            let line = t.fails(&["network", "create", "bad", "--subnet", subnet]);
            assert!(line.contains(why), "{subnet}: {line}");
        }
    }
    assert_eq!(t.network_names().iter().filter(|n| *n == "bad").count(), 0);
    let after = daemon_fds_and_threads(&t);
    assert_eq!(before, after, "fds and threads (before, after) 18 refusals");
    // Positive control: a good network does add fds and threads (port, DNS, gateway), so the
    // measure above would have seen a leak.
    t.ok(&["network", "create", "good2", "--subnet", "10.72.0.0/24"]);
    let grown = daemon_fds_and_threads(&t);
    assert!(
        grown.0 > after.0 && grown.1 > after.1,
        "{after:?} -> {grown:?}"
    );
    t.ok(&["sandbox", "create", "s1", "--net", "good2"]);
    let reply = t.traffic("s1", &["tcp-connect", "10.72.0.1", "53"]);
    assert!(reply.starts_with("ok"), "the daemon still works: {reply}");
}
