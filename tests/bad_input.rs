//! Every bad input gets exit status 1, one clear error line, and changes nothing.

mod common;

use common::Tapnet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

/// The whole observable state, to prove a failed command changed nothing.
fn snapshot(t: &Tapnet) -> (serde_json::Value, serde_json::Value) {
    (t.json(&["network", "ls"]), t.json(&["sandbox", "ls"]))
}

#[test]
fn bad_networks_are_refused_without_side_effects() {
    let t = Tapnet::new("badnet");
    t.ok(&["network", "create", "net1", "--subnet", "10.50.0.0/24"]);
    t.ok(&["sandbox", "create", "s1", "--net", "net1"]);
    let before = snapshot(&t);
    let cases: &[(&[&str], &str)] = &[
        (&["network", "create", "net1"], "already exists"),
        (
            &["network", "create", "x", "--subnet", "10.50.0.0/16"],
            "overlaps",
        ),
        (
            &["network", "create", "x", "--subnet", "10.60.0.9/24"],
            "host bits",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.60.0.0/24",
                "--gateway",
                "10.61.0.1",
            ],
            "gateway",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.60.0.0/24",
                "--ip-range",
                "10.61.0.0/25",
            ],
            "ip range",
        ),
        (&["network", "create", "x", "--vni", "16777216"], "VNI"),
        (&["network", "create", "x", "--vni", "0"], "VNI"),
        (&["network", "create", "x", "--mtu", "20"], "MTU"),
        (&["network", "create", "x", "--mtu", "70000"], "MTU"),
        (
            &["network", "create", "x", "--driver", "warp"],
            "unknown driver",
        ),
        (&["network", "create", "x", "--opt", "novalue"], "KEY=VALUE"),
        (
            &["network", "create", "x", "--opt", "mac_aging=soon"],
            "mac_aging",
        ),
        (&["network", "create", "bad/name"], "invalid network name"),
        (&["network", "rm", "nosuch"], "no such network"),
        (&["network", "inspect", "nosuch"], "no such network"),
        (&["network", "connect", "nosuch", "s1"], "no such network"),
        (&["network", "connect", "net1", "nosuch"], "no such sandbox"),
        (&["network", "connect", "net1", "s1"], "already connected"),
        (&["network", "disconnect", "bridge", "s1"], "not connected"),
        (&["fdb", "nosuch"], "no such network"),
        (&["fdb", "host"], "no switch"),
        (&["stats", "nosuch"], "no such network"),
    ];
    for (args, want) in cases {
        let err = t.fails(args);
        assert!(
            err.contains(want),
            "tapnet {args:?}: expected {want:?} in {err:?}"
        );
    }
    assert_eq!(snapshot(&t), before, "failed commands changed nothing");
}

#[test]
fn bad_sandboxes_are_refused_without_side_effects() {
    let t = Tapnet::new("badsb");
    t.ok(&["network", "create", "net1", "--subnet", "10.51.0.0/24"]);
    t.ok(&[
        "sandbox",
        "create",
        "s1",
        "--net",
        "net1",
        "--ip",
        "10.51.0.10",
    ]);
    let before = snapshot(&t);
    let netns_before: Vec<_> = std::fs::read_dir(t.dir.join("netns"))
        .expect("netns dir")
        .collect();
    let cases: &[(&[&str], &str)] = &[
        (&["sandbox", "create", "s1"], "already exists"),
        (
            &[
                "sandbox",
                "create",
                "s2",
                "--net",
                "net1",
                "--ip",
                "10.51.0.10",
            ],
            "in use",
        ),
        (
            &[
                "sandbox",
                "create",
                "s2",
                "--net",
                "net1",
                "--ip",
                "10.52.0.10",
            ],
            "not a usable address",
        ),
        (
            &[
                "sandbox",
                "create",
                "s2",
                "--net",
                "net1",
                "--ip",
                "10.51.0.1",
            ],
            "gateway",
        ),
        (
            &["sandbox", "create", "s2", "--net", "nosuch"],
            "no such network",
        ),
        (
            &["sandbox", "create", "s2", "--net", "net1", "--net", "net1"],
            "twice",
        ),
        (
            &["sandbox", "create", "s2", "--net", "none", "--net", "net1"],
            "cannot be combined",
        ),
        (
            &[
                "sandbox",
                "create",
                "s2",
                "--net",
                "host",
                "--hostname",
                "h",
            ],
            "hostname",
        ),
        (
            &["sandbox", "create", "s2", "--hostname", "bad_host!"],
            "invalid hostname",
        ),
        (
            &["sandbox", "create", "s2", "--net", "none", "-p", "8080:80"],
            "needs a non-internal bridge network",
        ),
        (
            &[
                "sandbox", "create", "s2", "-p", "18080:80", "-p", "18080:81",
            ],
            "clashes",
        ),
        (&["sandbox", "rm", "nosuch"], "no such sandbox"),
        (&["sandbox", "inspect", "nosuch"], "no such sandbox"),
        (&["exec", "nosuch", "--", "true"], "no such sandbox"),
    ];
    for (args, want) in cases {
        let err = t.fails(args);
        assert!(
            err.contains(want),
            "tapnet {args:?}: expected {want:?} in {err:?}"
        );
    }
    assert_eq!(snapshot(&t), before, "failed commands changed nothing");
    let netns_after: Vec<_> = std::fs::read_dir(t.dir.join("netns"))
        .expect("netns dir")
        .collect();
    assert_eq!(
        netns_before.len(),
        netns_after.len(),
        "no namespace left behind"
    );
}

/// Values whose syntax is wrong are usage errors, refused by the command line before anything
/// reaches the daemon: exit status 2 and a line that names the value.
#[test]
fn malformed_values_exit_2_and_change_nothing() {
    let t = Tapnet::new("badvalue");
    t.ok(&["network", "create", "net1", "--subnet", "10.53.0.0/24"]);
    t.ok(&["sandbox", "create", "s1", "--net", "net1"]);
    let before = snapshot(&t);
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "x", "--subnet", "10.60.0.0"],
            "malformed",
        ),
        (
            &["network", "create", "x", "--subnet", "10.60.0.0/33"],
            "malformed",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.60.0.0/24",
                "--gateway",
                "banana",
            ],
            "not an IPv4 address",
        ),
        (
            &["sandbox", "create", "s2", "--net", "net1", "--ip", "ten"],
            "not an IPv4 address",
        ),
        (
            &["network", "connect", "net1", "s1", "--ip", "ten"],
            "not an IPv4 address",
        ),
        (
            &["sandbox", "create", "s2", "-p", "8080"],
            "malformed port mapping",
        ),
        (
            &["sandbox", "create", "s2", "-p", "8080:80/sctp"],
            "unknown protocol",
        ),
        (&["run", "-p", "99999:80", "--", "true"], "bad host port"),
        (
            &["link", "set", "s1", "net1", "--loss", "150%"],
            "bad percentage",
        ),
        (
            &["link", "set", "s1", "net1", "--delay", "soon"],
            "bad duration",
        ),
        (
            &["link", "set", "s1", "net1", "--rate", "0.0001bit"],
            "rate",
        ),
        (
            &["link", "set", "s1", "net1", "--delay", "99999999999999s"],
            "at most 60s",
        ),
        (
            &["trace", "net1", "--in", "s1", "--dst", "nowhere"],
            "MAC, an IPv4 or an IPv6",
        ),
        (
            &["trace", "net1", "--in", "s1", "--dst", "fd00::zz"],
            "MAC, an IPv4 or an IPv6",
        ),
    ];
    for (args, want) in cases {
        let err = t.misuse(args);
        assert!(
            err.contains(want),
            "tapnet {args:?}: expected {want:?} in {err:?}"
        );
    }
    assert_eq!(snapshot(&t), before, "refused commands changed nothing");
    let links = t.ok(&["link", "show", "net1"]);
    assert!(!links.contains("loss"), "no impairment was set: {links}");
}

#[test]
fn usage_errors_exit_2() {
    let t = Tapnet::new("usage");
    for args in [
        &["network"][..],
        &["network", "create"],
        &["sandbox", "create", "x", "--bogus"],
        &["exec", "x"],
        &["nonsense"],
        &["network", "ls", "--format", "yaml"],
    ] {
        let out = t.run(args);
        assert_eq!(out.status.code(), Some(2), "tapnet {args:?}");
    }
}

#[test]
fn malformed_control_requests_get_an_error_and_the_daemon_lives_on() {
    let t = Tapnet::new("badreq");
    t.ok(&["network", "ls"]);
    for garbage in [
        "this is not json",
        "{\"op\":\"no_such_op\"}",
        "{\"op\":\"network_inspect\"}",
        "[1,2,3]",
    ] {
        let mut conn = UnixStream::connect(t.dir.join("tapnet.sock")).expect("connect");
        conn.write_all(format!("{garbage}\n").as_bytes())
            .expect("send");
        let mut answer = String::new();
        BufReader::new(conn).read_line(&mut answer).expect("answer");
        let v: serde_json::Value = serde_json::from_str(&answer).expect("answer is JSON");
        assert_eq!(v["status"], "error", "{garbage} -> {answer}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("malformed request")),
            "{answer}"
        );
    }
    t.ok(&["network", "ls"]);
}

/// Commits after the snapshot live in the journal: a kill -9 keeps them; a last line cut short
/// (a commit a crash interrupted) is dropped; damage before the last line stops the daemon
/// with the journal named, and the file untouched.
#[test]
fn the_state_journal_survives_kill_9_and_damage_is_refused() {
    let t = Tapnet::new("journal");
    t.ok(&["network", "create", "jn1", "--subnet", "10.62.0.0/24"]);
    t.ok(&["network", "create", "jn2", "--subnet", "10.62.1.0/24"]);
    t.ok(&["network", "create", "jn3", "--subnet", "10.62.2.0/24"]);
    t.stop_daemon(nix::sys::signal::Signal::SIGKILL);
    let journal = t.dir.join("state.journal");
    let full = std::fs::read(&journal).expect("journal");
    let lines = full.iter().filter(|&&b| b == b'\n').count();
    assert!(lines >= 3, "three commits in the journal: {lines}");
    // The snapshot alone does not have them: the journal is what kept them.
    let snapshot = std::fs::read_to_string(t.dir.join("state.json")).expect("state");
    assert!(!snapshot.contains("jn3"), "{snapshot}");
    // The last commit cut short: the others are there, it is not.
    std::fs::write(&journal, &full[..full.len() - 10]).expect("cut");
    let names = t.ok(&["network", "ls"]);
    assert!(names.contains("jn1") && names.contains("jn2"), "{names}");
    assert!(!names.contains("jn3"), "{names}");
    t.stop_daemon(nix::sys::signal::Signal::SIGKILL);
    // Damage in the first line of a journal with more after it.
    t.ok(&["network", "create", "jn4", "--subnet", "10.62.3.0/24"]);
    t.ok(&["network", "create", "jn5", "--subnet", "10.62.4.0/24"]);
    t.stop_daemon(nix::sys::signal::Signal::SIGKILL);
    let mut bad = std::fs::read(&journal).expect("journal");
    assert!(bad.iter().filter(|&&b| b == b'\n').count() >= 2);
    bad[1] = b'#';
    std::fs::write(&journal, &bad).expect("damage");
    let out = t.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.journal") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(std::fs::read(&journal).expect("journal"), bad, "untouched");
    std::fs::remove_file(&journal).expect("clean");
}

#[test]
fn corrupt_state_file_stops_the_daemon_and_names_the_file() {
    let t = Tapnet::new("corrupt");
    t.ok(&["network", "create", "keepme"]);
    t.stop_daemon(nix::sys::signal::Signal::SIGTERM);
    let state = t.dir.join("state.json");
    let full = std::fs::read(&state).expect("state file");
    std::fs::write(&state, &full[..full.len() / 2]).expect("truncate");
    let out = t.run(&["daemon"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.json") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&state).expect("state file"),
        &full[..full.len() / 2],
        "file untouched"
    );
}
