//! Restart without teardown (issue 22): the fd keeper holds the sandboxes' TAP queues, so a
//! `kill -9` of the daemon leaves the TAPs (same ifindex, addresses, routes) and a TCP stream
//! between two sandboxes carries on through the restart; the first command after the kill
//! answers at once. Removal after a restart still leaves no TAP, a clean stop still removes
//! the TAPs, and `system reset` ends the keeper. Root and rootless.

mod common;

use common::{Tapnet, port_stats, wait_until};
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};

/// The keeper's PID, if it runs (a zombie does not count).
fn keeper(t: &Tapnet) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(t.dir.join("fdkeeper.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let zombie = stat
        .rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
    (comm.trim() == "tapnet-fdkeeper" && !zombie).then_some(pid)
}

fn ifindex(t: &Tapnet, sandbox: &str) -> String {
    t.exec_ok(sandbox, &["cat", "/sys/class/net/eth0/ifindex"])
        .trim()
        .to_string()
}

/// A TCP stream from a to b runs through a `kill -9` of the daemon and its restart.
fn stream_survives_kill_9(mut t: Tapnet) {
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.3"), "positive control: a reaches b");
    let before = (ifindex(&t, "a"), ifindex(&t, "b"));
    let kept_by = keeper(&t).expect("a keeper runs beside the daemon");

    let server = t.spawn_server("b", &["tcp-serve", "0.0.0.0", "5001"]);
    let sender = t.spawn_trickle("a", "172.18.0.3", 4_000_000, 6);
    std::thread::sleep(Duration::from_millis(1500));

    let killed = Instant::now();
    t.stop_daemon(Signal::SIGKILL);
    let exited = killed.elapsed();
    // The TAPs stay while no daemon runs (nsenter would need root; the keeper is checked).
    assert_eq!(keeper(&t), Some(kept_by), "the keeper outlives the daemon");
    let first = Instant::now();
    t.ok(&["sandbox", "ls"]);
    let first = first.elapsed();
    eprintln!("killed daemon gone after {exited:?}; first command took {first:?}");
    assert!(
        first < Duration::from_secs(1),
        "first command took {first:?}"
    );
    let restarted = Instant::now();
    // Traffic flows again: the new daemon's port of a sees the stream's segments.
    assert!(
        wait_until(Duration::from_secs(1), || {
            port_stats(&t, "a/eth0")["rx_bytes"]
                .as_u64()
                .is_some_and(|b| b > 10_000)
        }),
        "the stream's bytes arrive at the new daemon within 1 s"
    );
    eprintln!(
        "traffic back {:?} after the first command",
        restarted.elapsed()
    );
    assert_eq!(
        (ifindex(&t, "a"), ifindex(&t, "b")),
        before,
        "the TAPs were kept, not made anew"
    );
    assert_eq!(
        keeper(&t),
        Some(kept_by),
        "the same keeper serves the new daemon"
    );
    let sent = sender.wait_with_output().expect("sender");
    assert!(sent.status.success(), "the sender saw no reset: {sent:?}");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        t.server_output(server),
        "every byte of the stream arrived"
    );

    // Removal after the restart leaves no TAP: a's interface goes with the disconnect.
    t.ok(&["network", "disconnect", "n", "a"]);
    let links = t.exec_ok("a", &["ip", "-o", "link"]);
    assert!(!links.contains("eth0"), "{links}");
    // Positive control: b's is still there.
    assert!(t.exec_ok("b", &["ip", "-o", "link"]).contains("eth0"));
    t.ok(&["network", "connect", "n", "a"]);
    assert!(t.ping("a", "172.18.0.3"), "a reconnected reaches b");
    assert_ne!(ifindex(&t, "a"), before.0, "a's new TAP is a new device");

    t.ok(&["system", "reset"]);
    assert!(keeper(&t).is_none(), "system reset ends the keeper");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(format!(
            "/proc/{kept_by}/comm"
        ))
        .is_err()
            || std::fs::read_to_string(format!("/proc/{kept_by}/stat"))
                .is_ok_and(|s| s.contains(") Z"))),
        "keeper {kept_by} is gone"
    );
}

#[test]
fn a_tcp_stream_carries_on_through_kill_9_and_restart() {
    stream_survives_kill_9(Tapnet::new("keep-tcp"));
}

#[test]
fn a_tcp_stream_carries_on_through_kill_9_and_restart_rootless() {
    stream_survives_kill_9(Tapnet::rootless("rl-keep-tcp", "tapnet-test"));
}

/// A clean stop removes the TAPs as before the keeper, and ends the keeper; the next start makes
/// them anew.
#[test]
fn sigterm_ends_the_keeper_and_the_taps() {
    let t = Tapnet::new("keep-term");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let old = keeper(&t).expect("keeper");
    t.stop_daemon(Signal::SIGTERM);
    assert!(keeper(&t).is_none(), "the keeper ended with a clean stop");
    assert!(!t.dir.join("fdkeeper.sock").exists());
    let links = t.links_without_daemon("a");
    assert!(!links.contains("eth0"), "{links}");
    assert!(t.ping("a", "172.18.0.3"), "traffic after the next start");
    assert_ne!(keeper(&t), Some(old), "a new keeper");
    assert!(keeper(&t).is_some());
}

/// Without the keeper (TAPNET_FD_KEEPER=off, the old behaviour) a `kill -9` takes the TAPs
/// with the daemon and the restarted daemon makes them anew: the control for the test above.
#[test]
fn without_the_keeper_kill_9_makes_the_taps_anew() {
    let t = Tapnet::new("keep-off");
    let off = |args: &[&str]| {
        let out = t
            .command(args)
            .env("TAPNET_FD_KEEPER", "off")
            .output()
            .expect("tapnet");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    off(&["network", "create", "n"]);
    off(&["sandbox", "create", "a", "--net", "n"]);
    assert!(keeper(&t).is_none(), "no keeper when it is off");
    let before = ifindex(&t, "a");
    t.stop_daemon(Signal::SIGKILL);
    off(&["sandbox", "ls"]);
    assert_ne!(ifindex(&t, "a"), before, "the TAP was made anew");
    // The dead daemon's TAP may linger for a while (its io_uring's reads hold it): the new
    // one waits for it rather than give the sandbox up.
    let log = std::fs::read_to_string(t.dir.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains("cannot restore sandbox"), "{log}");
    if let Some(waited) = log.lines().find(|l| l.contains("restored after")) {
        eprintln!("{waited}");
    }
}

/// Kept queues that no longer fit the datapath (a daemon started with another number of
/// workers, so another number of queues per TAP) are closed and the TAP is made anew, and
/// traffic flows.
#[test]
fn a_changed_queue_count_makes_the_taps_anew() {
    let t = Tapnet::new("keep-queues");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    let before = ifindex(&t, "a");
    t.stop_daemon(Signal::SIGKILL);
    // One worker more than the autostarted daemon's default (one per core).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) + 1;
    let mut daemon = t
        .command(&["daemon", "--datapath-threads", &threads.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(wait_until(Duration::from_secs(10), || t
        .run(&["--no-autostart", "sandbox", "ls"])
        .status
        .success()));
    assert_ne!(ifindex(&t, "a"), before, "a's TAP was made anew");
    assert!(t.ping("a", "172.18.0.3"), "traffic with the new TAPs");
    t.stop_daemon(Signal::SIGTERM);
    let _ = daemon.wait();
}
