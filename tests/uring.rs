//! The io_uring datapath prototype (`daemon --datapath-io uring`): the same switch, seen from
//! inside sandboxes, with TAP I/O through io_uring.

mod common;

use common::{Tapnet, port_stats, wait_until};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const A: &str = "172.18.0.2";
const B: &str = "172.18.0.3";

/// A daemon started with `args`, its stderr in a file of its own; killed on drop if the
/// `Tapnet` guard's reset has not stopped it already.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(t: &Tapnet, args: &[&str]) -> Daemon {
        let log = t.dir.with_extension("log");
        let file = std::fs::File::create(&log).expect("daemon log");
        let mut full = vec!["daemon"];
        full.extend(args);
        let child = t
            .command(&full)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("daemon");
        assert!(
            wait_until(Duration::from_secs(5), || t
                .dir
                .join("tapnet.sock")
                .exists()),
            "daemon did not start"
        );
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn two_sandboxes(t: &Tapnet) {
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
}

#[test]
fn pings_and_tcp_cross_the_uring_datapath() {
    let mut t = Tapnet::new("uring");
    let daemon = Daemon::start(&t, &["--datapath-io", "uring", "--datapath-threads", "2"]);
    two_sandboxes(&t);
    let log = daemon.log();
    assert!(
        log.contains("datapath I/O: uring"),
        "the daemon did not choose io_uring (kernel without it?): {log}"
    );
    assert!(t.ping("a", B), "a -> b");
    assert!(t.ping("b", A), "b -> a");
    // The replies' writes are counted before the worker sleeps, not when the next frame
    // comes: a quiet port's counters are current (two echo replies at least).
    let a_tx = port_stats(&t, "a/eth0")["tx_packets"].as_u64().unwrap_or(0);
    assert!(a_tx >= 2, "replies to a counted: {a_tx}");
    // Super-frames (offloads on) through the 64 KiB provided buffers, checksummed end to end.
    let (sent, received) = t.tcp_transfer("a", "b", B, 20 << 20);
    assert_eq!(sent, received);
    let rx = port_stats(&t, "a/eth0")["rx_packets"].as_u64().unwrap_or(0);
    assert!(rx > 100, "frames from a counted: {rx}");
    // Writes made through the ring count in the output port's counters when they complete.
    let b = port_stats(&t, "b/eth0");
    let tx = b["tx_packets"].as_u64().unwrap_or(0);
    assert!(tx > 100, "frames to b counted: {tx}");
    assert_eq!(b["tx_dropped"], 0);

    // The control: a port that is down carries nothing, through the ring as through epoll...
    t.ok(&["link", "set", "b", "n", "--down"]);
    assert!(!t.ping("a", B), "a down link carries nothing");
    t.ok(&["link", "set", "b", "n", "--up"]);
    assert!(t.ping("a", B), "up again");

    // ...and a port removed and made again is read again (its read cancelled, a new one armed).
    t.ok(&["sandbox", "rm", "b"]);
    assert!(!t.ping("a", B), "no b any more");
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", B), "the new b");
    assert!(
        !daemon.log().contains("io_uring failed"),
        "{}",
        daemon.log()
    );
    drop(t);
}

#[test]
fn the_default_stays_epoll() {
    let t = Tapnet::new("uring-default");
    let daemon = Daemon::start(&t, &[]);
    two_sandboxes(&t);
    assert!(t.ping("a", B));
    assert!(
        daemon.log().contains("datapath I/O: epoll"),
        "{}",
        daemon.log()
    );
    drop(t);
}
