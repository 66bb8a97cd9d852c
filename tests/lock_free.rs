//! No slow work under the controller's lock: while a CNI DEL or a Docker Leave waits for its
//! switch port to be released (made slow on purpose with `TAPNET_TEST_SLOW_RELEASE_MS`, as
//! datapath workers slow to ack would be), while a sandbox create, a network connect, a CNI
//! ADD or a Docker Join makes its namespaces and TAPs, and while a network connect or
//! disconnect sets a sandbox's default route (made slow with `TAPNET_TEST_SLOW_NETNS_MS`),
//! `tapnet stats` still answers at once. (The cluster store's
//! case, with `TAPNET_TEST_SLOW_STORE_MS`, is in tests/etcd.rs: it needs etcd.)

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::plugin_http::{post, post_ok};
use common::{Tapnet, wait_until};
use nix::sys::signal::Signal;

/// How slow each release is made.
const SLOW_MS: u64 = 2000;
/// How fast `stats` must answer meanwhile.
const FAST: Duration = Duration::from_millis(100);

/// Restart `t`'s daemon with every port release made slow.
fn restart_slow(t: &Tapnet) -> Child {
    restart_with(t, "TAPNET_TEST_SLOW_RELEASE_MS")
}

/// Restart `t`'s daemon with the test hook `hook` set to `SLOW_MS`.
fn restart_with(t: &Tapnet, hook: &str) -> Child {
    t.stop_daemon(Signal::SIGTERM);
    let daemon = t
        .command(&["daemon"])
        .env(hook, SLOW_MS.to_string())
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

/// Time one `tapnet stats`, started 300 ms after the slow operation began.
fn time_stats(t: &Tapnet, began: Instant, what: &str) -> Duration {
    time_stats_at(t, began, Duration::from_millis(300), what)
}

/// Time one `tapnet stats`, started `at` after the slow operation began.
fn time_stats_at(t: &Tapnet, began: Instant, at: Duration, what: &str) -> Duration {
    std::thread::sleep(at.saturating_sub(began.elapsed()));
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

/// Run `tapnet ARGS` in the background; `finish` waits for it and insists on success.
fn spawn_ok(t: &Tapnet, args: &[&str]) -> Child {
    t.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tapnet")
}

fn finish(child: Child, what: &str) {
    let out = child.wait_with_output().expect("wait for tapnet");
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stats_answers_during_a_slow_sandbox_create_and_connect() {
    let t = Tapnet::new("lockfree-create");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    t.ok(&["network", "create", "lfa", "--subnet", "10.235.0.0/24"]);
    t.ok(&["network", "create", "lfb", "--subnet", "10.235.1.0/24"]);
    let began = Instant::now();
    let create = spawn_ok(&t, &["sandbox", "create", "lfs", "--net", "lfa"]);
    let create_stats = time_stats(&t, began, "sandbox create");
    // Meanwhile the name is taken: a second create of it is refused, not made twice.
    let second = t.fails(&["sandbox", "create", "lfs", "--net", "lfa"]);
    assert!(second.contains("lfs"), "{second}");
    // And its network is in use.
    let rm = t.fails(&["network", "rm", "lfa"]);
    assert!(rm.contains("active endpoints"), "{rm}");
    finish(create, "sandbox create");
    let create_took = began.elapsed();
    let began = Instant::now();
    let connect = spawn_ok(&t, &["network", "connect", "lfb", "lfs"]);
    let connect_stats = time_stats(&t, began, "network connect");
    // A removal of the sandbox being connected is refused meanwhile.
    let rm = t.fails(&["sandbox", "rm", "lfs"]);
    assert!(rm.contains("lfs"), "{rm}");
    finish(connect, "network connect");
    let connect_took = began.elapsed();
    let addrs = t.exec_ok("lfs", &["ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains("10.235.0.2/24") && addrs.contains("10.235.1.2/24"),
        "{addrs}"
    );
    t.ok(&["sandbox", "rm", "lfs"]);
    // Positive control: the namespace and TAP creation were slow (the create waits twice).
    assert!(
        create_took >= Duration::from_millis(2 * SLOW_MS - 100),
        "create took {create_took:?}: namespace and TAP creation were not slow"
    );
    assert!(
        connect_took >= Duration::from_millis(SLOW_MS - 100),
        "connect took {connect_took:?}: TAP creation was not slow"
    );
    assert!(
        create_stats < FAST,
        "stats waited {create_stats:?} behind a sandbox create"
    );
    assert!(
        connect_stats < FAST,
        "stats waited {connect_stats:?} behind a network connect"
    );
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

/// The sandbox's default IPv4 route, as `ip route` prints it (empty: none).
fn default_route(t: &Tapnet, sandbox: &str) -> String {
    let routes = t.exec_ok(sandbox, &["ip", "-4", "route", "show", "default"]);
    routes.trim().to_string()
}

#[test]
fn stats_answers_while_a_connect_and_a_disconnect_set_the_default_route() {
    let t = Tapnet::new("lockfree-route");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    t.ok(&[
        "network",
        "create",
        "lfri",
        "--subnet",
        "10.239.0.0/24",
        "--internal",
    ]);
    t.ok(&["network", "create", "lfro", "--subnet", "10.239.1.0/24"]);
    // On an internal network only: no default route.
    t.ok(&["sandbox", "create", "lfr", "--net", "lfri"]);
    assert_eq!(default_route(&t, "lfr"), "", "internal network: no route");
    // The connect makes the TAP (SLOW_MS) and then sets the default route via the new
    // network's gateway (SLOW_MS): stats is asked while the route is being set.
    let began = Instant::now();
    let connect = spawn_ok(&t, &["network", "connect", "lfro", "lfr"]);
    let at = Duration::from_millis(SLOW_MS + 300);
    let connect_stats = time_stats_at(&t, began, at, "network connect (default route)");
    finish(connect, "network connect");
    let connect_took = began.elapsed();
    let connected = default_route(&t, "lfr");
    // The disconnect removes the TAP and then the default route (SLOW_MS).
    let began = Instant::now();
    let disconnect = spawn_ok(&t, &["network", "disconnect", "lfro", "lfr"]);
    let disconnect_stats = time_stats(&t, began, "network disconnect (default route)");
    // No other change to the sandbox meanwhile (checked after the timings, which come first).
    let again = t.run(&["network", "connect", "lfro", "lfr"]);
    finish(disconnect, "network disconnect");
    let disconnect_took = began.elapsed();
    // Positive control: the route was set slowly (the connect waits for the TAP and the
    // route, the disconnect for the route).
    assert!(
        connect_took >= Duration::from_millis(2 * SLOW_MS - 100),
        "connect took {connect_took:?}: setting the default route was not slow"
    );
    assert!(
        disconnect_took >= Duration::from_millis(SLOW_MS - 100),
        "disconnect took {disconnect_took:?}: setting the default route was not slow"
    );
    assert!(
        connect_stats < FAST,
        "stats waited {connect_stats:?} behind a network connect's default route"
    );
    assert!(
        disconnect_stats < FAST,
        "stats waited {disconnect_stats:?} behind a network disconnect's default route"
    );
    assert!(
        connected.contains("via 10.239.1.1") && connected.contains("eth1"),
        "connect set the default route: {connected}"
    );
    let refused = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && refused.contains("disconnected"),
        "a connect during the disconnect: {refused}"
    );
    assert_eq!(default_route(&t, "lfr"), "", "disconnect took the route");
    t.ok(&["sandbox", "rm", "lfr"]);
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

/// The state dir made immutable (`chattr +i`: no file can be made in it, so the state file
/// cannot be saved), mutable again when dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(dir: &std::path::Path) -> Self {
        chattr("+i", dir);
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, dir: &std::path::Path) {
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(dir)
        .status()
        .expect("chattr");
    assert!(status.success(), "chattr {flag} {}", dir.display());
}

/// `ip ARGS` in the sandbox's network namespace, entered by its pin (not through the daemon).
fn ip_in(t: &Tapnet, sandbox: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!(
            "--net={}",
            t.dir.join("netns").join(sandbox).display()
        ))
        .arg("ip")
        .args(args)
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "ip {args:?} in {sandbox}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_connect_whose_commit_fails_leaves_the_routes_and_files_as_they_were() {
    let t = Tapnet::new("lockfree-undo");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    t.ok(&[
        "network",
        "create",
        "lfui",
        "--subnet",
        "10.240.0.0/24",
        "--internal",
    ]);
    t.ok(&["network", "create", "lfuo", "--subnet", "10.240.1.0/24"]);
    t.ok(&["sandbox", "create", "lfu", "--net", "lfui"]);
    let hosts = t.dir.join("etc").join("lfu").join("hosts");
    let hosts_before = std::fs::read_to_string(&hosts).expect("hosts");
    // The connect makes its TAP, sets its route and writes the files, and then its commit
    // cannot write the state (its journal, nor a new snapshot): it fails, and the sandbox is
    // as it was. (The route via the
    // new TAP goes with the TAP; the files are put back: without that, hosts keeps the
    // address.)
    let failed = {
        let _dir = Immutable::new(&t.dir);
        let _journal = Immutable::new(&t.dir.join("state.journal"));
        t.run(&["network", "connect", "lfuo", "lfu"])
    };
    let err = String::from_utf8_lossy(&failed.stderr).to_string();
    let route_after_failure = ip_in(&t, "lfu", &["-4", "route", "show", "default"]);
    let links_after_failure = ip_in(&t, "lfu", &["-o", "link"]);
    let hosts_after_failure = std::fs::read_to_string(&hosts).expect("hosts");
    let inspect = t.ok(&["sandbox", "inspect", "lfu"]);
    // Positive control: the same connect, the state file writable, sets the route and the
    // files, seen by the same looks.
    t.ok(&["network", "connect", "lfuo", "lfu"]);
    let route = ip_in(&t, "lfu", &["-4", "route", "show", "default"]);
    let hosts_connected = std::fs::read_to_string(&hosts).expect("hosts");
    t.ok(&["sandbox", "rm", "lfu"]);
    assert!(
        !failed.status.success() && err.contains("state.journal"),
        "the connect fails at its commit: {err}"
    );
    assert_eq!(
        route_after_failure, "",
        "the failed connect's route is gone"
    );
    assert!(
        !links_after_failure.contains("eth1"),
        "the failed connect's TAP is gone: {links_after_failure}"
    );
    assert_eq!(hosts_after_failure, hosts_before, "hosts as before");
    assert!(!inspect.contains("lfuo"), "not connected: {inspect}");
    assert!(
        route.contains("via 10.240.1.1") && route.contains("eth1"),
        "the connect set the route: {route}"
    );
    assert!(
        hosts_connected.contains("10.240.1.2"),
        "the connect wrote hosts: {hosts_connected}"
    );
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

#[test]
fn stats_answers_during_a_slow_cni_add() {
    let t = Tapnet::new("lockfree-cniadd");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    let ns = common::cni::Netns::new("lf-add");
    let netns = ns.path();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "lfadd",
        "type": "tapnet-cni",
        "subnet": "10.236.0.0/24",
        "stateDir": t.dir.display().to_string(),
    })
    .to_string();
    let began = Instant::now();
    let add = {
        let (netns, conf) = (netns.clone(), conf.clone());
        std::thread::spawn(move || cni("ADD", "lockfreeadd0", &netns, &conf))
    };
    let took = time_stats(&t, began, "CNI ADD");
    let (code, out) = add.join().expect("ADD thread");
    let add_took = began.elapsed();
    assert_eq!(code, 0, "ADD: {out}");
    assert!(ns.links().iter().any(|l| l == "eth0"), "{:?}", ns.links());
    let (code, out) = cni("DEL", "lockfreeadd0", &netns, &conf);
    drop(ns);
    assert_eq!(code, 0, "DEL: {out}");
    // Positive control: the ADD did wait for the slow TAP creation.
    assert!(
        add_took >= Duration::from_millis(SLOW_MS - 100),
        "ADD took {add_took:?}: TAP creation was not slow"
    );
    assert!(took < FAST, "stats waited {took:?} behind a CNI ADD");
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

#[test]
fn stats_answers_during_a_slow_docker_join() {
    let t = Tapnet::new("lockfree-join");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    let plugin = format!("tnlj{}", std::process::id());
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let socket = std::path::PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let network = format!("{:064x}", 0xabcdef_u64 + 7 + u64::from(std::process::id()));
    let endpoint = format!("{:064x}", 0x123456_u64 + 7 + u64::from(std::process::id()));
    post_ok(
        &socket,
        "/NetworkDriver.CreateNetwork",
        &serde_json::json!({
            "NetworkID": network,
            "IPv4Data": [{"Pool": "10.237.0.0/24", "Gateway": "10.237.0.1/24"}],
        }),
    );
    post_ok(
        &socket,
        "/NetworkDriver.CreateEndpoint",
        &serde_json::json!({
            "NetworkID": network,
            "EndpointID": endpoint,
            "Interface": {"Address": "10.237.0.2/24"},
        }),
    );
    let began = Instant::now();
    let join = {
        let (socket, network, endpoint) = (socket.clone(), network.clone(), endpoint.clone());
        std::thread::spawn(move || {
            post(
                &socket,
                "/NetworkDriver.Join",
                &serde_json::json!({"NetworkID": network, "EndpointID": endpoint, "SandboxKey": ""}),
            )
        })
    };
    let took = time_stats(&t, began, "Docker Join");
    let (status, joined) = join.join().expect("Join thread");
    let join_took = began.elapsed();
    assert_eq!(status, 200, "Join: {joined}");
    let tap =
        serde_json::from_str::<serde_json::Value>(&joined).expect("Join's answer")["InterfaceName"]
            ["SrcName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    assert!(!tap.is_empty(), "Join names a TAP: {joined}");
    for call in ["Leave", "DeleteEndpoint"] {
        post_ok(
            &socket,
            &format!("/NetworkDriver.{call}"),
            &serde_json::json!({"NetworkID": network, "EndpointID": endpoint}),
        );
    }
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
    // Positive control: the Join did wait for the slow TAP creation.
    assert!(
        join_took >= Duration::from_millis(SLOW_MS - 100),
        "Join took {join_took:?}: TAP creation was not slow"
    );
    assert!(took < FAST, "stats waited {took:?} behind a Docker Join");
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}

/// Does the daemon's namespace have a link with MAC `mac`?
fn host_has_mac(mac: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&out.stdout).contains(&format!("link/ether {mac} "))
}

#[test]
fn a_join_whose_endpoint_goes_meanwhile_fails_and_leaves_no_tap() {
    let t = Tapnet::new("lockfree-joingone");
    t.ok(&["network", "ls"]);
    let daemon = restart_with(&t, "TAPNET_TEST_SLOW_NETNS_MS");
    let plugin = format!("tnlg{}", std::process::id());
    t.ok(&["plugin", "docker", "--name", &plugin]);
    let socket = std::path::PathBuf::from(format!("/run/docker/plugins/{plugin}.sock"));
    let network = format!("{:064x}", 0xabcdef_u64 + 9 + u64::from(std::process::id()));
    let endpoint = |n: u64| format!("{:064x}", 0x123456_u64 + n + u64::from(std::process::id()));
    let (gone, kept) = (endpoint(9), endpoint(10));
    post_ok(
        &socket,
        "/NetworkDriver.CreateNetwork",
        &serde_json::json!({
            "NetworkID": network,
            "IPv4Data": [{"Pool": "10.238.0.0/24", "Gateway": "10.238.0.1/24"}],
        }),
    );
    for (id, address) in [(&gone, "10.238.0.2/24"), (&kept, "10.238.0.3/24")] {
        post_ok(
            &socket,
            "/NetworkDriver.CreateEndpoint",
            &serde_json::json!({
                "NetworkID": network,
                "EndpointID": id,
                "Interface": {"Address": address},
            }),
        );
    }
    let join = |id: &str| {
        let (socket, network, id) = (socket.clone(), network.clone(), id.to_string());
        std::thread::spawn(move || {
            post(
                &socket,
                "/NetworkDriver.Join",
                &serde_json::json!({"NetworkID": network, "EndpointID": id, "SandboxKey": ""}),
            )
        })
    };
    let began = Instant::now();
    let joining = join(&gone);
    std::thread::sleep(Duration::from_millis(300));
    // The endpoint goes while its TAP is being made: the Join's commit finds it gone.
    post_ok(
        &socket,
        "/NetworkDriver.DeleteEndpoint",
        &serde_json::json!({"NetworkID": network, "EndpointID": gone}),
    );
    let deleted_after = began.elapsed();
    let (status, answer) = joining.join().expect("Join thread");
    let err = serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default()["Err"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        status == 200 && err.contains("no such endpoint"),
        "Join of a deleted endpoint: {answer}"
    );
    assert!(
        !host_has_mac("02:42:0a:ee:00:02"),
        "the failed Join's TAP is gone"
    );
    // Positive control: a Join left alone makes its TAP, found by the same look.
    let (status, answer) = join(&kept).join().expect("Join thread");
    assert_eq!(status, 200, "Join: {answer}");
    assert!(
        host_has_mac("02:42:0a:ee:00:03"),
        "Join made no TAP: {answer}"
    );
    for call in ["Leave", "DeleteEndpoint"] {
        post_ok(
            &socket,
            &format!("/NetworkDriver.{call}"),
            &serde_json::json!({"NetworkID": network, "EndpointID": kept}),
        );
    }
    post_ok(
        &socket,
        "/NetworkDriver.DeleteNetwork",
        &serde_json::json!({"NetworkID": network}),
    );
    t.ok(&["plugin", "docker", "--name", &plugin, "--stop"]);
    assert!(!host_has_mac("02:42:0a:ee:00:03"), "TAP gone after Leave");
    assert!(
        deleted_after < Duration::from_millis(SLOW_MS),
        "DeleteEndpoint waited for the Join ({deleted_after:?})"
    );
    t.stop_daemon(Signal::SIGTERM);
    drop(daemon);
}
