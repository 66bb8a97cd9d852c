//! The gateway of a bridge network: ARP and ping, outbound NAT of TCP and UDP to the host's
//! loopback through the gateway address, refusals, internal networks, flow cleanup.
//! Every daemon here may only NAT to 127.0.0.0/8 (the harness sets TAPNET_NAT_ALLOW).

mod common;

use common::{Daemon, Tapnet, wait_until};
use std::time::Duration;

/// A loopback TCP port this test holds bound but not listening: connections to it are refused,
/// and no other test can take it while the returned socket lives.
fn closed_port() -> (std::os::fd::OwnedFd, String) {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, bind, getsockname, socket,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .expect("bind");
    let addr: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("address");
    (fd, addr.port().to_string())
}

fn nat_flows(t: &Tapnet, net: &str) -> (u64, u64) {
    let v = t.json(&["network", "inspect", net]);
    (
        v["nat"]["tcp_flows"].as_u64().expect("tcp flows"),
        v["nat"]["udp_flows"].as_u64().expect("udp flows"),
    )
}

#[test]
fn gateway_answers_arp_and_ping_for_its_own_address_only() {
    let t = Tapnet::new("gwping");
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    assert!(t.ping("a", "172.18.0.1"), "the gateway answers ping");
    let neigh = t.exec_ok("a", &["ip", "neigh", "show", "172.18.0.1"]);
    assert!(
        neigh.contains("02:42:ac:12:00:01"),
        "ARP resolved the gateway: {neigh}"
    );
    let fdb = t.json(&["fdb", "n"]).to_string();
    assert!(fdb.contains("\"kind\":\"gateway\""), "{fdb}");
    // No proxy ARP: an unused address of the subnet stays unanswered.
    assert!(!t.ping("a", "172.18.0.99"));
    let neigh = t.exec_ok("a", &["ip", "neigh", "show", "172.18.0.99"]);
    assert!(!neigh.contains("lladdr"), "{neigh}");
}

#[test]
fn tcp_reaches_the_host_loopback_at_the_gateway_address() {
    let mut t = Tapnet::new("gwtcp");
    t.ok(&["network", "create", "n", "--opt", "host_loopback=on"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    // 10 MB with a matching checksum.
    let (server, port) = t.spawn_host_server_on_free_port(&["tcp-serve", "127.0.0.1", "0"]);
    let sent = t.traffic(
        "a",
        &["tcp-send", "172.18.0.1", &port, &(10 << 20).to_string()],
    );
    assert_eq!(sent, t.server_output(server), "10 MB through NAT intact");
    // 50 short connections, each half-closed by the sandbox before the host answers.
    let (server, port) =
        t.spawn_host_server_on_free_port(&["tcp-count-serve", "127.0.0.1", "0", "50"]);
    let good = t.traffic("a", &["tcp-many", "172.18.0.1", &port, "50", "3000"]);
    assert_eq!(
        good, "50",
        "every short connection got its reply after a half-close"
    );
    t.server_output(server);
    // Flows are gone once the connections are.
    assert!(
        wait_until(Duration::from_secs(10), || nat_flows(&t, "n").0 == 0),
        "{:?}",
        nat_flows(&t, "n")
    );
}

/// The gateway hands its frames to the switch through memory (its port's inbox), which both
/// kinds of datapath worker read: bulk data each way arrives intact, and the gateway's port
/// counts what came through it.
#[test]
fn the_gateway_s_inbox_carries_nat_both_ways_with_either_datapath_io() {
    for io in ["uring", "epoll"] {
        let mut t = Tapnet::new(&format!("gwinbox-{io}"));
        let daemon = Daemon::start(&t, &["--datapath-io", io]);
        t.ok(&["network", "create", "n", "--opt", "host_loopback=on"]);
        t.ok(&["sandbox", "create", "a", "--net", "n"]);
        assert!(
            daemon.log().contains(&format!("datapath I/O: {io}")),
            "{}",
            daemon.log()
        );
        let size = (20 << 20).to_string();
        let (server, port) =
            t.spawn_host_server_on_free_port(&["tcp-give", "127.0.0.1", "0", &size]);
        let fetched = t.traffic("a", &["tcp-fetch", "172.18.0.1", &port]);
        assert_eq!(
            fetched,
            t.server_output(server),
            "{io}: 20 MiB from the host intact"
        );
        let (server, port) = t.spawn_host_server_on_free_port(&["tcp-serve", "127.0.0.1", "0"]);
        let sent = t.traffic("a", &["tcp-send", "172.18.0.1", &port, &size]);
        assert_eq!(
            sent,
            t.server_output(server),
            "{io}: 20 MiB to the host intact"
        );
        // The row of this network's gateway (the default network has one too).
        let rows = t.json(&["stats"]);
        let gw = rows
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["network"] == "n" && r["port"] == "gateway")
            })
            .cloned()
            .unwrap_or_else(|| panic!("no gateway of n in {rows}"));
        let rx = gw["rx_packets"].as_u64().unwrap_or(0);
        assert!(rx > 100, "{io}: frames from the gateway counted: {gw}");
        assert!(gw["rx_queue_full"].as_u64().is_some(), "{gw}");
        drop(t);
    }
}

#[test]
fn refused_and_forbidden_destinations_fail_at_once() {
    let t = Tapnet::new("gwrefuse");
    t.ok(&["network", "create", "n", "--opt", "host_loopback=on"]);
    t.ok(&["network", "create", "other"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    t.ok(&["sandbox", "create", "b", "--net", "other"]);
    let (_held, closed) = closed_port();
    for (dst, port, why) in [
        ("172.18.0.1", closed.as_str(), "nothing listens on the host"),
        ("192.0.2.1", "80", "outside --nat-allow"),
        (
            "172.19.0.2",
            "80",
            "another tapnet network is never reached through NAT",
        ),
    ] {
        let out = t.traffic("a", &["tcp-connect", dst, port]);
        let (result, ms) = out.split_once(' ').expect("result and time");
        assert_eq!(result, "ECONNREFUSED", "{dst}:{port} ({why}): {out}");
        assert!(
            ms.parse::<u64>().expect("ms") < 1000,
            "{dst}: refused at once, not after a timeout: {out}"
        );
    }
}

#[test]
fn udp_reaches_the_host_loopback_and_idle_flows_expire() {
    let mut t = Tapnet::new("gwudp");
    t.ok(&[
        "network",
        "create",
        "n",
        "--opt",
        "nat_udp_timeout=2",
        "--opt",
        "host_loopback=on",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let (server, port) = t.spawn_host_server_on_free_port(&["udp-echo", "127.0.0.1", "0", "20"]);
    assert_eq!(
        t.traffic("a", &["udp-ping", "172.18.0.1", &port, "20"]),
        "20"
    );
    t.server_output(server);
    assert_eq!(nat_flows(&t, "n").1, 1, "one flow for one sandbox socket");
    assert!(
        wait_until(Duration::from_secs(6), || nat_flows(&t, "n").1 == 0),
        "idle UDP flow expired"
    );
}

#[test]
fn internal_networks_have_no_way_out() {
    let mut t = Tapnet::new("gwinternal");
    t.ok(&["network", "create", "inside", "--internal"]);
    t.ok(&["sandbox", "create", "a", "--net", "inside"]);
    assert!(t.ping("a", "172.18.0.1"), "the gateway still answers ping");
    let routes = t.exec_ok("a", &["ip", "route"]);
    assert!(!routes.contains("default"), "no default route: {routes}");
    // A server that would answer, were the host reachable.
    let (_server, port) =
        t.spawn_host_server_on_free_port(&["tcp-count-serve", "127.0.0.1", "0", "1"]);
    let out = t.traffic("a", &["tcp-connect", "172.18.0.1", &port]);
    assert!(
        out.starts_with("ECONNREFUSED"),
        "the host is not reachable: {out}"
    );
    let out = t.traffic("a", &["tcp-connect", "10.200.0.1", "80"]);
    assert!(out.starts_with("ENETUNREACH"), "{out}");
}

#[test]
fn nat_mss_follows_the_network_mtu() {
    let mut t = Tapnet::new("gwmss");
    t.ok(&[
        "network",
        "create",
        "small",
        "--mtu",
        "1400",
        "--opt",
        "host_loopback=on",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "small"]);
    let file = t.dir.join("syn.pcap");
    let capture = t
        .command(&[
            "capture",
            "small",
            "-w",
            file.to_str().unwrap_or(""),
            "-c",
            "30",
        ])
        .spawn()
        .expect("capture");
    common::wait_for_capture(&file);
    let (server, port) =
        t.spawn_host_server_on_free_port(&["tcp-count-serve", "127.0.0.1", "0", "1"]);
    assert_eq!(
        t.traffic("a", &["tcp-many", "172.18.0.1", &port, "1", "200000"]),
        "1"
    );
    t.server_output(server);
    assert!(
        capture
            .wait_with_output()
            .expect("capture")
            .status
            .success()
    );
    let syns = std::process::Command::new("tcpdump")
        .arg("-r")
        .arg(&file)
        .args(["-nn", "tcp[tcpflags] & tcp-syn != 0"])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("tcpdump");
    let text = String::from_utf8_lossy(&syns.stdout);
    assert_eq!(text.lines().count(), 2, "SYN and SYN-ACK: {text}");
    assert!(
        text.lines().all(|l| l.contains("mss 1360")),
        "both sides use MTU 1400 - 40: {text}"
    );
    let frames = std::process::Command::new("tcpdump")
        .arg("-r")
        .arg(&file)
        .args(["-nn", "-e", "tcp"])
        .stderr(std::process::Stdio::null())
        .output()
        .expect("tcpdump");
    let text = String::from_utf8_lossy(&frames.stdout);
    assert!(
        text.lines().count() >= 10,
        "the capture holds the flow: {text}"
    );
    for line in text.lines() {
        let len: usize = line
            .split("length ")
            .nth(1)
            .and_then(|s| s.split(':').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no frame length in tcpdump's line: {line}"));
        assert!(len <= 1414, "no frame over the MTU on the wire: {line}");
    }
}

/// Pings beyond the gateway go through the host's ping sockets. The daemon runs in a network
/// namespace this test makes, so that ping sockets can be allowed there and "outside" is an
/// address of that namespace; nothing changes in the machine's own namespace.
#[test]
fn pings_to_outside_addresses_go_through_ping_sockets() {
    let t = Tapnet::new("gwicmp");
    std::fs::create_dir_all(&t.dir).expect("state dir");
    let setup = format!(
        "ip link set lo up && ip addr add 10.250.0.1/32 dev lo && \
         sysctl -qw net.ipv4.ping_group_range='0 2147483647' && \
         exec {} --state-dir {} daemon",
        common::bin(),
        t.dir.display()
    );
    let mut daemon = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", &setup])
        .env("TAPNET_NAT_ALLOW", "10.250.0.1/32")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("daemon in its own namespace");
    assert!(wait_until(Duration::from_secs(5), || t
        .dir
        .join("tapnet.sock")
        .exists()));
    t.ok(&["network", "create", "n"]);
    t.ok(&["sandbox", "create", "a", "--net", "n"]);
    let out = t.exec(
        "a",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.250.0.1"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 received"), "{text}");
    assert!(!t.ping("a", "10.250.0.2"), "outside --nat-allow: dropped");
    t.ok(&["system", "reset"]);
    let _ = daemon.wait();
}
