//! The io_uring datapath (`daemon --datapath-io uring`, the default): the same switch, seen
//! from inside sandboxes, with TAP I/O through io_uring, and epoll where io_uring is refused.

mod common;

use common::{Daemon, Tapnet, port_stats, wait_until};
use std::time::Duration;

const A: &str = "172.18.0.2";
const B: &str = "172.18.0.3";

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
fn the_default_is_io_uring() {
    let t = Tapnet::new("uring-default");
    let daemon = Daemon::start(&t, &[]);
    two_sandboxes(&t);
    assert!(t.ping("a", B));
    assert!(
        daemon.log().contains("datapath I/O: uring"),
        "{}",
        daemon.log()
    );
    let info = t.ok(&["info"]);
    assert!(info.contains("uring"), "{info}");
    drop(t);
}

/// Docker's default seccomp profile, among others, refuses io_uring: a daemon that cannot set
/// up a ring says so and switches with epoll. The control: the same state dir's daemon without
/// the filter ran io_uring first.
#[test]
#[cfg(target_arch = "x86_64")]
fn a_daemon_refused_io_uring_by_seccomp_switches_with_epoll() {
    let t = Tapnet::new("uring-seccomp");
    let daemon = Daemon::start(&t, &[]);
    two_sandboxes(&t);
    assert!(t.ping("a", B));
    let info = t.json(&["info"]);
    assert!(
        info["datapath_io"]
            .as_str()
            .unwrap_or("")
            .starts_with("uring"),
        "{info}"
    );
    assert_eq!(info["features"]["io_uring"], true, "{info}");
    drop(daemon);

    let daemon = Daemon::start_with(&t, &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only makes two prctl calls on data of
        // its own stack; it allocates nothing.
        unsafe { cmd.pre_exec(deny_io_uring_setup) };
    });
    assert!(
        wait_until(Duration::from_secs(10), || t.ping("a", B)),
        "the restored sandboxes"
    );
    let log = daemon.log();
    assert!(log.contains("io_uring is not available"), "{log}");
    assert!(log.contains("datapath I/O: epoll"), "{log}");
    let info = t.json(&["info"]);
    assert_eq!(info["datapath_io"], "epoll", "{info}");
    assert_eq!(info["features"]["io_uring"], false, "{info}");
    drop(t);
}

/// A seccomp filter that fails `io_uring_setup` with EPERM and allows everything else.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring_setup() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let program = [
        insn(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        insn(JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        insn(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        insn(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: plain prctl calls; `fprog` points at `program`, both alive across the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
