//! Published ports: connections to the daemon namespace's HOSTPORT reach the sandbox's PORT,
//! over TCP and UDP; taken ports are clear errors; ports go with their sandbox and come back
//! with a restarted daemon.

mod common;

use common::Tapnet;
use nix::sys::signal::Signal;
use std::net::{TcpListener, UdpSocket};

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("port")
}

#[test]
fn tcp_and_udp_reach_the_sandbox_from_the_daemon_namespace() {
    let mut t = Tapnet::new("publish");
    t.ok(&["network", "create", "n"]);
    let (web, dns, other) = (free_tcp_port(), free_udp_port(), free_tcp_port());
    let web_map = format!("{web}:80");
    let dns_map = format!("127.0.0.1:{dns}:53/udp");
    t.ok(&[
        "sandbox", "create", "web", "--net", "n", "-p", &web_map, "-p", &dns_map,
    ]);
    let other_map = format!("{other}:80");
    t.ok(&["sandbox", "create", "web2", "--net", "n", "-p", &other_map]);
    let ports = t.json(&["sandbox", "inspect", "web"])["ports"].clone();
    assert_eq!(
        ports,
        serde_json::json!([
            format!("0.0.0.0:{web}->80/tcp"),
            format!("[::]:{web}->80/tcp"),
            format!("127.0.0.1:{dns}->53/udp")
        ])
    );

    let server = t.spawn_server("web", &["tcp-serve", "0.0.0.0", "80"]);
    let script = common::traffic_script();
    let sent = std::process::Command::new("python3")
        .arg(&script)
        .args([
            "tcp-send",
            "127.0.0.1",
            &web.to_string(),
            &(10 << 20).to_string(),
        ])
        .output()
        .expect("client");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        t.server_output(server),
        "10 MB in"
    );

    let server = t.spawn_server("web2", &["tcp-count-serve", "0.0.0.0", "80", "20"]);
    let many = std::process::Command::new("python3")
        .arg(&script)
        .args(["tcp-many", "127.0.0.1", &other.to_string(), "20", "1000"])
        .output()
        .expect("client");
    assert_eq!(
        String::from_utf8_lossy(&many.stdout).trim(),
        "20",
        "the second sandbox's port"
    );
    t.server_output(server);

    let server = t.spawn_server("web", &["udp-echo", "0.0.0.0", "53", "10"]);
    let echoed = std::process::Command::new("python3")
        .arg(&script)
        .args(["udp-ping", "127.0.0.1", &dns.to_string(), "10"])
        .output()
        .expect("client");
    assert_eq!(
        String::from_utf8_lossy(&echoed.stdout).trim(),
        "10",
        "UDP both ways"
    );
    t.server_output(server);
}

#[test]
fn taken_ports_are_refused_and_change_nothing() {
    let t = Tapnet::new("taken");
    let holder = TcpListener::bind("0.0.0.0:0").expect("bind");
    let busy = holder.local_addr().expect("addr").port();
    let err = t.fails(&["sandbox", "create", "x", "-p", &format!("{busy}:80")]);
    assert!(err.contains("taken"), "{err}");
    let port = free_tcp_port();
    t.ok(&["sandbox", "create", "first", "-p", &format!("{port}:80")]);
    let err = t.fails(&[
        "sandbox",
        "create",
        "second",
        "-p",
        &format!("127.0.0.1:{port}:81"),
    ]);
    assert!(
        err.contains("first"),
        "names the sandbox that has it: {err}"
    );
    let names: Vec<String> = t
        .json(&["sandbox", "ls"])
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(names, ["first"]);
    let err = t.fails(&["network", "disconnect", "bridge", "first"]);
    assert!(err.contains("publishes"), "{err}");
}

#[test]
fn ports_go_with_their_sandbox_and_return_with_the_daemon() {
    let mut t = Tapnet::new("portlife");
    let port = free_tcp_port();
    let map = format!("{port}:80");
    t.ok(&["sandbox", "create", "s", "-p", &map]);
    t.stop_daemon(Signal::SIGKILL);
    // The restarted daemon binds the port again and serves it.
    t.ok(&["sandbox", "ls"]);
    let server = t.spawn_server("s", &["tcp-serve", "0.0.0.0", "80"]);
    let sent = std::process::Command::new("python3")
        .arg(common::traffic_script())
        .args(["tcp-send", "127.0.0.1", &port.to_string(), "100000"])
        .output()
        .expect("client");
    assert_eq!(
        String::from_utf8_lossy(&sent.stdout).trim(),
        t.server_output(server)
    );
    t.ok(&["sandbox", "rm", "s"]);
    TcpListener::bind(("0.0.0.0", port)).expect("the port is free again");
    // run -p publishes too, and --rm releases.
    let out = t.run(&["run", "--rm", "-p", &map, "--", "true"]);
    assert!(out.status.success());
    TcpListener::bind(("0.0.0.0", port)).expect("released after run --rm");
}
