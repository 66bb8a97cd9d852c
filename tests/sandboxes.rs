//! Sandboxes: namespaces, hostnames, exec and run, the null and host drivers, removal.

mod common;

use common::Tapnet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;

#[test]
fn exec_returns_status_and_sees_hostname_and_namespace() {
    let t = Tapnet::new("exec");
    t.ok(&["sandbox", "create", "web", "--hostname", "web.local"]);
    assert_eq!(
        t.exec("web", &["sh", "-c", "exit 7"]).status.code(),
        Some(7)
    );
    assert_eq!(t.exec_ok("web", &["hostname"]).trim(), "web.local");
    let view = t.json(&["sandbox", "inspect", "web"]);
    assert_eq!(view["hostname"], "web.local");
    assert_eq!(view["interfaces"][0]["network"], "bridge");
    assert_eq!(view["interfaces"][0]["ipv4"], "172.17.0.2/16");
    assert_eq!(view["interfaces"][0]["mac"], "02:42:ac:11:00:02");
    // nsenter accepts the netns path, and it is the namespace exec uses.
    let netns = view["netns"].as_str().expect("netns");
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["ip", "-o", "-4", "addr", "show", "eth0"])
        .output()
        .expect("nsenter");
    assert!(String::from_utf8_lossy(&out.stdout).contains("172.17.0.2/16"));
    let route = t.exec_ok("web", &["ip", "route", "show", "default"]);
    assert!(route.contains("via 172.17.0.1 dev eth0"), "{route}");
    let lo = t.exec_ok("web", &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "{lo}");
    // A command that does not exist: the shell's 127.
    assert_eq!(
        t.exec("web", &["/no/such/program"]).status.code(),
        Some(127)
    );
}

#[test]
fn run_with_rm_leaves_nothing() {
    let t = Tapnet::new("run");
    t.ok(&["network", "create", "n"]);
    let out = t.run(&[
        "run",
        "--rm",
        "--name",
        "once",
        "--net",
        "n",
        "--",
        "sh",
        "-c",
        "hostname; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "once");
    assert_eq!(t.json(&["sandbox", "ls"]), serde_json::json!([]));
    assert!(
        t.json(&["network", "inspect", "n"])["endpoints"]
            .as_array()
            .is_some_and(|e| e.is_empty())
    );
    // Without --rm the sandbox stays.
    t.ok(&["run", "--name", "stays", "--", "true"]);
    assert_eq!(t.json(&["sandbox", "inspect", "stays"])["name"], "stays");
}

#[test]
fn rm_refuses_while_processes_run_and_force_kills_them() {
    let t = Tapnet::new("busy");
    t.ok(&["sandbox", "create", "busy"]);
    let mut sleeper = t
        .command(&[
            "exec",
            "busy",
            "--",
            "sh",
            "-c",
            "echo started; exec sleep 300",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sleep");
    let mut started = String::new();
    BufReader::new(sleeper.stdout.take().expect("stdout"))
        .read_line(&mut started)
        .expect("started");
    assert_eq!(started.trim(), "started");
    let err = t.fails(&["sandbox", "rm", "busy"]);
    assert!(err.contains("sleep") && err.contains("--force"), "{err}");
    t.ok(&["sandbox", "rm", "--force", "busy"]);
    let status = sleeper.wait().expect("wait");
    assert!(!status.success(), "sleep was killed");
    assert_eq!(t.json(&["sandbox", "ls"]), serde_json::json!([]));
    assert!(!t.dir.join("netns/busy").exists());
}

#[test]
fn null_driver_gives_loopback_only() {
    let t = Tapnet::new("null");
    t.ok(&["sandbox", "create", "alone", "--net", "none"]);
    let links = t.exec_ok("alone", &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo") && links.contains("UP"), "{links}");
    assert!(
        t.exec("alone", &["ping", "-c", "1", "-W", "1", "127.0.0.1"])
            .status
            .success()
    );
    let view = t.json(&["network", "inspect", "none"]);
    assert_eq!(view["endpoints"][0]["sandbox"], "alone");
    let err = t.fails(&["network", "connect", "bridge", "alone"]);
    assert!(err.contains("cannot join"), "{err}");
}

#[test]
fn host_driver_shares_the_daemons_namespace() {
    let t = Tapnet::new("host");
    t.ok(&["sandbox", "create", "h", "--net", "host"]);
    let pid = t.pid().expect("daemon pid");
    let daemon_ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("daemon ns");
    let inside = t.exec_ok("h", &["readlink", "/proc/self/ns/net"]);
    assert_eq!(inside.trim(), daemon_ns.to_string_lossy());
    // Removing it must not touch the host's namespace.
    t.ok(&["sandbox", "rm", "h"]);
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).expect("ns"),
        daemon_ns
    );
}

#[test]
fn connect_and_disconnect_live_without_disturbing_other_traffic() {
    let t = Tapnet::new("live");
    t.ok(&["network", "create", "a"]);
    t.ok(&["network", "create", "b"]);
    t.ok(&["sandbox", "create", "s1", "--net", "a"]);
    t.ok(&["sandbox", "create", "s2", "--net", "a"]);
    t.ok(&["sandbox", "create", "s3", "--net", "b"]);
    // 300 pings at 10 ms between s1 and s2 while s2 joins and leaves b.
    let pinger = t
        .command(&[
            "exec",
            "s1",
            "--",
            "ping",
            "-q",
            "-c",
            "300",
            "-i",
            "0.01",
            "172.18.0.3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ping");
    for _ in 0..3 {
        t.ok(&["network", "connect", "b", "s2", "--ip", "172.19.0.50"]);
        assert!(t.ping("s2", "172.19.0.2"));
        t.ok(&["network", "disconnect", "b", "s2"]);
    }
    let out = pinger.wait_with_output().expect("ping output");
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("300 received"),
        "no loss on the untouched path: {summary}"
    );
    assert!(!t.ping("s2", "172.19.0.2"), "disconnected");
}
