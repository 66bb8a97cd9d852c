//! Names in sandboxes: /etc/hosts, /etc/resolv.conf and /etc/hostname from the sandbox's mount
//! namespace, and the gateway's DNS for names and aliases of user-defined networks, with
//! forwarding of other names to an upstream (here a fake one on loopback).

mod common;

use common::Tapnet;

fn getent(t: &Tapnet, sandbox: &str, name: &str) -> Option<String> {
    let out = t.exec(sandbox, &["getent", "hosts", name]);
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

#[test]
fn sandbox_files_name_itself_and_the_gateway() {
    let t = Tapnet::new("etcfiles");
    t.ok(&["network", "create", "n"]);
    t.ok(&[
        "sandbox",
        "create",
        "web",
        "--net",
        "n",
        "--hostname",
        "web.example",
    ]);
    assert_eq!(t.exec_ok("web", &["hostname"]).trim(), "web.example");
    assert_eq!(
        t.exec_ok("web", &["cat", "/etc/hostname"]).trim(),
        "web.example"
    );
    let resolv = t.exec_ok("web", &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 172.18.0.1"), "{resolv}");
    let hosts = t.exec_ok("web", &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("localhost") && hosts.contains("172.18.0.2\tweb.example web"),
        "{hosts}"
    );
    assert_eq!(getent(&t, "web", "web").as_deref(), Some("172.18.0.2"));
    let localhost = getent(&t, "web", "localhost");
    assert!(
        matches!(localhost.as_deref(), Some("::1" | "127.0.0.1")),
        "{localhost:?}"
    );
    // The host's own files are untouched.
    let host_hosts = std::fs::read_to_string("/etc/hosts").expect("host /etc/hosts");
    assert!(!host_hosts.contains("web.example"));
    // A new interface shows up in /etc/hosts at once.
    t.ok(&["network", "create", "m"]);
    t.ok(&["network", "connect", "m", "web"]);
    assert!(
        t.exec_ok("web", &["cat", "/etc/hosts"])
            .contains("172.19.0.2\tweb.example web")
    );
}

#[test]
fn names_and_aliases_resolve_on_their_networks_only() {
    let t = Tapnet::new("names");
    t.ok(&["network", "create", "n"]);
    t.ok(&["network", "create", "m"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "n"]);
    t.ok(&[
        "network", "connect", "m", "b", "--alias", "db", "--alias", "primary",
    ]);
    t.ok(&["sandbox", "create", "c", "--net", "m"]);
    assert_eq!(getent(&t, "a", "b").as_deref(), Some("172.18.0.3"));
    assert_eq!(
        getent(&t, "a", "B").as_deref(),
        Some("172.18.0.3"),
        "case-insensitive"
    );
    assert_eq!(getent(&t, "c", "db").as_deref(), Some("172.19.0.2"));
    assert_eq!(getent(&t, "c", "primary").as_deref(), Some("172.19.0.2"));
    assert_eq!(
        getent(&t, "c", "b").as_deref(),
        Some("172.19.0.2"),
        "b's address on m"
    );
    assert_eq!(getent(&t, "a", "c"), None, "c is not on a's network");
    assert_eq!(
        getent(&t, "a", "db"),
        None,
        "aliases belong to their network"
    );
    // Over TCP too.
    let script = common::traffic_script();
    let tcp = t.exec_ok(
        "c",
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "dns-tcp",
            "172.19.0.1",
            "db",
        ],
    );
    assert_eq!(tcp.trim(), "0 172.19.0.2");
    // Names follow the sandboxes.
    t.ok(&["network", "disconnect", "m", "b"]);
    assert_eq!(getent(&t, "c", "db"), None);
    t.ok(&["sandbox", "rm", "b"]);
    assert_eq!(getent(&t, "a", "b"), None);
}

#[test]
fn the_default_bridge_network_resolves_no_sandbox_names() {
    let t = Tapnet::new("bridgenames");
    t.ok(&["sandbox", "create", "x"]);
    t.ok(&["sandbox", "create", "y"]);
    assert_eq!(getent(&t, "x", "y"), None);
    // Positive controls: the bridge's DNS is alive and answers (an error code, no address)
    // rather than not at all, and the same daemon resolves names on a user-defined network.
    let script = common::traffic_script();
    let reply = t.exec_ok(
        "x",
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "dns-tcp",
            "172.17.0.1",
            "y",
        ],
    );
    let mut words = reply.split_whitespace();
    let rcode: u8 = words.next().and_then(|w| w.parse().ok()).expect("an rcode");
    assert!(
        rcode != 0 && words.next().is_none(),
        "no address for y: {reply}"
    );
    t.ok(&["network", "create", "named"]);
    t.ok(&["sandbox", "create", "p", "--net", "named"]);
    t.ok(&["sandbox", "create", "q", "--net", "named"]);
    assert_eq!(getent(&t, "p", "q").as_deref(), Some("172.18.0.3"));
    assert!(
        t.ping("x", "172.17.0.3"),
        "while the sandboxes do reach each other"
    );
}

#[test]
fn other_names_are_forwarded_upstream_or_fail_with_servfail() {
    let mut t = Tapnet::new("forward");
    let (_upstream, port) =
        t.spawn_host_server_on_free_port(&["dns-serve", "127.0.0.1", "0", "10.1.2.3"]);
    let mut daemon = t
        .command(&["daemon"])
        .env("TAPNET_DNS_UPSTREAM", format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon");
    assert!(common::wait_until(
        std::time::Duration::from_secs(5),
        || t.dir.join("tapnet.sock").exists()
    ));
    t.ok(&["network", "create", "n"]);
    t.ok(&["network", "create", "closed", "--internal"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "i", "--net", "closed"]);
    t.ok(&["sandbox", "create", "j", "--net", "closed"]);
    assert_eq!(
        getent(&t, "a", "service.example.test").as_deref(),
        Some("10.1.2.3"),
        "forwarded"
    );
    assert_eq!(
        getent(&t, "i", "j").as_deref(),
        Some("172.19.0.3"),
        "internal networks resolve their names"
    );
    let script = common::traffic_script();
    let servfail = t.exec_ok(
        "i",
        &[
            "python3",
            script.to_str().unwrap_or(""),
            "dns-tcp",
            "172.19.0.1",
            "service.example.test",
        ],
    );
    assert_eq!(
        servfail.trim(),
        "2",
        "SERVFAIL: an internal network forwards nothing"
    );
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let _ = daemon.wait();
}
