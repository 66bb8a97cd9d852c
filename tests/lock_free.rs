//! No slow work under the controller's lock: while a CNI DEL or a Docker Leave waits for its
//! switch port to be released (made slow on purpose with `TAPNET_TEST_SLOW_RELEASE_MS`, as
//! datapath workers slow to ack would be), `tapnet stats` still answers at once. (The cluster
//! store's case, with `TAPNET_TEST_SLOW_STORE_MS`, is in tests/etcd.rs: it needs etcd.)

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;

/// How slow each release is made.
const SLOW_MS: u64 = 2000;
/// How fast `stats` must answer meanwhile.
const FAST: Duration = Duration::from_millis(100);

/// Restart `t`'s daemon with every port release made slow.
fn restart_slow(t: &Tapnet) -> Child {
    t.stop_daemon(Signal::SIGTERM);
    let daemon = t
        .command(&["daemon"])
        .env("TAPNET_TEST_SLOW_RELEASE_MS", SLOW_MS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(wait_until(Duration::from_secs(5), || t
        .run(&["--no-autostart", "network", "ls"])
        .status
        .success()));
    daemon
}

/// Time one `tapnet stats`, started `after` the slow operation began.
fn time_stats(t: &Tapnet, began: Instant, what: &str) -> Duration {
    std::thread::sleep(Duration::from_millis(300).saturating_sub(began.elapsed()));
    let started = Instant::now();
    t.ok(&["stats"]);
    let took = started.elapsed();
    eprintln!("stats answered in {took:?} during {what}");
    took
}

/// One run of `tapnet-cni` on eth0: its exit code and stdout.
fn cni(command: &str, id: &str, netns: &str, conf: &str) -> (i32, String) {
    let run = common::cni::run_cni(command, id, netns, "eth0", conf);
    (run.code, run.stdout)
}

#[test]
fn stats_answers_during_a_slow_cni_del() {
    let t = Tapnet::new("lockfree-cni");
    t.ok(&["network", "ls"]);
    let daemon = restart_slow(&t);
    let ns = common::cni::Netns::new("lf-cni");
    let netns = ns.path();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "lf",
        "type": "tapnet-cni",
        "subnet": "10.233.0.0/24",
        "stateDir": t.dir.display().to_string(),
    })
    .to_string();
    let (code, out) = cni("ADD", "lockfreecni0", &netns, &conf);
    assert_eq!(code, 0, "ADD: {out}");
    let began = Instant::now();
    let del = {
        let (netns, conf) = (netns.clone(), conf.clone());
        std::thread::spawn(move || cni("DEL", "lockfreecni0", &netns, &conf))
    };
    let took = time_stats(&t, began, "CNI DEL");
    let (code, out) = del.join().expect("DEL thread");
    let del_took = began.elapsed();
    drop(ns);
    assert_eq!(code, 0, "DEL: {out}");
    // Positive control: the DEL did wait for the slow release.
    assert!(
        del_took >= Duration::from_millis(SLOW_MS - 100),
        "DEL took {del_took:?}: the release was not slow"
    );
    assert!(took < FAST, "stats waited {took:?} behind a CNI DEL");
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

/// POST `body` to the Docker plugin's `path` (HTTP over its unix socket): status and body.
fn post(socket: &std::path::Path, path: &str, body: &serde_json::Value) -> (u16, String) {
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

fn post_ok(socket: &std::path::Path, path: &str, body: &serde_json::Value) -> String {
    let (status, answer) = post(socket, path, body);
    assert_eq!(status, 200, "{path}: {answer}");
    let err = serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default()["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(err.is_empty(), "{path}: {err}");
    answer
}

#[test]
fn stats_answers_during_a_slow_docker_leave() {
    let t = Tapnet::new("lockfree-docker");
    t.ok(&["network", "ls"]);
    let daemon = restart_slow(&t);
    let plugin = format!("tnlf{}", std::process::id());
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let socket = std::path::PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let network = format!("{:064x}", 0xabcdef_u64 + u64::from(std::process::id()));
    let endpoint = format!("{:064x}", 0x123456_u64 + u64::from(std::process::id()));
    post_ok(
        &socket,
        "/NetworkDriver.CreateNetwork",
        &serde_json::json!({
            "NetworkID": network,
            "IPv4Data": [{"Pool": "10.234.0.0/24", "Gateway": "10.234.0.1/24"}],
        }),
    );
    post_ok(
        &socket,
        "/NetworkDriver.CreateEndpoint",
        &serde_json::json!({
            "NetworkID": network,
            "EndpointID": endpoint,
            "Interface": {"Address": "10.234.0.2/24"},
        }),
    );
    let joined = post_ok(
        &socket,
        "/NetworkDriver.Join",
        &serde_json::json!({"NetworkID": network, "EndpointID": endpoint, "SandboxKey": ""}),
    );
    let tap =
        serde_json::from_str::<serde_json::Value>(&joined).expect("Join's answer")["InterfaceName"]
            ["SrcName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    assert!(!tap.is_empty(), "Join names a TAP: {joined}");
    let began = Instant::now();
    let leave = {
        let (socket, network, endpoint) = (socket.clone(), network.clone(), endpoint.clone());
        std::thread::spawn(move || {
            post(
                &socket,
                "/NetworkDriver.Leave",
                &serde_json::json!({"NetworkID": network, "EndpointID": endpoint}),
            )
        })
    };
    let took = time_stats(&t, began, "Docker Leave");
    let (status, answer) = leave.join().expect("Leave thread");
    let leave_took = began.elapsed();
    assert_eq!(status, 200, "Leave: {answer}");
    assert!(!answer.contains("tapnet:"), "Leave: {answer}");
    post_ok(
        &socket,
        "/NetworkDriver.DeleteEndpoint",
        &serde_json::json!({"NetworkID": network, "EndpointID": endpoint}),
    );
    post_ok(
        &socket,
        "/NetworkDriver.DeleteNetwork",
        &serde_json::json!({"NetworkID": network}),
    );
    t.ok(&["plugin", "docker", "--name", &plugin, "--stop"]);
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "TAP {tap} is gone after Leave"
    );
    // Positive control: the Leave did wait for the slow release.
    assert!(
        leave_took >= Duration::from_millis(SLOW_MS - 100),
        "Leave took {leave_took:?}: the release was not slow"
    );
    assert!(took < FAST, "stats waited {took:?} behind a Docker Leave");
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}
