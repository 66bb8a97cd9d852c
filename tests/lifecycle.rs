//! The daemon's life: PID file, clean stop, restore after kill -9, side-by-side daemons, reset.

mod common;

use common::Tapnet;
use nix::sys::signal::Signal;

#[test]
fn sigterm_stops_cleanly_and_restart_restores_traffic() {
    let t = Tapnet::new("restart");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.3"));
    let before = t.json(&["sandbox", "inspect", "b"]);

    t.stop_daemon(Signal::SIGTERM);
    assert!(
        !t.dir.join("tapnet.sock").exists(),
        "socket removed on clean stop"
    );
    assert!(
        !t.dir.join("tapnet.pid").exists(),
        "pid file removed on clean stop"
    );
    // The sandbox namespaces outlive the daemon; its TAPs do not. (nsenter, not `tapnet exec`,
    // which would start the daemon again.)
    let links = t.links_without_daemon("a");
    assert!(!links.contains("eth0"), "{links}");
    assert_eq!(
        t.run(&["--no-autostart", "network", "ls"]).status.code(),
        Some(1)
    );

    // Any command autostarts the daemon, which rebuilds TAPs with the same addresses and MACs.
    assert_eq!(t.json(&["sandbox", "inspect", "b"]), before);
    assert!(
        t.ping("a", "172.18.0.3"),
        "traffic flows after a clean restart"
    );

    t.stop_daemon(Signal::SIGKILL);
    assert_eq!(t.json(&["sandbox", "inspect", "b"]), before);
    let addrs = t.exec_ok("b", &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addrs.contains("172.18.0.3/16"), "{addrs}");
    let route = t.exec_ok("b", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 172.18.0.1 dev eth0"), "{route}");
    assert!(t.ping("a", "172.18.0.3"), "traffic flows after kill -9");
}

#[test]
fn daemons_with_different_state_dirs_do_not_interfere() {
    let one = Tapnet::new("side1");
    let two = Tapnet::new("side2");
    // Same names, same subnets, side by side.
    for t in [&one, &two] {
        t.ok(&["network", "create", "n"]);
        t.ok(&["sandbox", "create", "a", "--net", "n"]);
        t.ok(&["sandbox", "create", "b", "--net", "n"]);
    }
    assert_ne!(one.pid(), two.pid());
    assert!(one.ping("a", "172.18.0.3"));
    assert!(two.ping("a", "172.18.0.3"));
    one.ok(&["sandbox", "rm", "b"]);
    assert!(!one.ping("a", "172.18.0.3"));
    assert!(
        two.ping("a", "172.18.0.3"),
        "the other daemon's sandbox is untouched"
    );
}

#[test]
fn one_daemon_per_state_dir() {
    let t = Tapnet::new("single");
    t.ok(&["network", "ls"]);
    let out = t.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already runs"), "{err}");
    t.ok(&["network", "ls"]);
}

#[test]
fn no_autostart_reports_a_missing_daemon() {
    let t = Tapnet::new("noauto");
    let err = t.fails(&["--no-autostart", "network", "ls"]);
    assert!(err.contains("no daemon"), "{err}");
    assert!(t.pid().is_none());
}

#[test]
fn system_reset_removes_everything_the_state_dir_owns() {
    let t = Tapnet::new("reset");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "h", "--net", "host"]);
    let pid = t.pid().expect("pid");
    t.ok(&["system", "reset"]);
    assert!(!t.dir.exists(), "state dir removed");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(t.dir.to_str().unwrap_or("?")),
        "no mount left under the state dir"
    );
    assert!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true),
        "daemon stopped"
    );
    // A fresh start has only the default networks.
    assert_eq!(t.network_names(), ["bridge", "host", "none"]);
}
