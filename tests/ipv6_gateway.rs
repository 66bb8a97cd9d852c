//! The gateway of a dual-stack network, over IPv6, with real sandboxes: it answers neighbour
//! discovery and ping6 for its address; its DNS answers AAAA for sandbox names and PTR under
//! ip6.arpa, over IPv4 and IPv6 transports (checked with `dig`); sandboxes reach each other by
//! name over IPv6; and a guest that configures itself by SLAAC from the gateway's Router
//! Advertisements gets an address, a default route and traffic through port security.

mod common;

use std::time::Duration;

use common::{Tapnet, wait_until};

fn ping6(t: &Tapnet, sandbox: &str, target: &str) -> bool {
    t.exec(
        sandbox,
        &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", target],
    )
    .status
    .success()
}

/// `dig +short` from `sandbox`: the answer lines.
fn dig(t: &Tapnet, sandbox: &str, server: &str, query: &[&str]) -> String {
    let mut args = vec!["dig", "+short", "+time=2", "+tries=2"];
    let at = format!("@{server}");
    args.push(&at);
    args.extend(query);
    t.exec_ok(sandbox, &args).trim().to_string()
}

#[test]
fn the_gateway_answers_ping6_and_names_resolve_over_ipv6() {
    let t = Tapnet::new("v6gw");
    t.ok(&[
        "network",
        "create",
        "g6",
        "--ipv6",
        "--subnet",
        "fd00:6a7::/64",
    ]);
    t.ok(&["sandbox", "create", "a", "--net", "g6"]);
    t.ok(&["sandbox", "create", "b", "--net", "g6"]);
    // c joins later, with an alias (and its own interface on the default network first).
    t.ok(&["sandbox", "create", "c"]);
    t.ok(&["network", "connect", "g6", "c", "--alias", "db"]);

    // Neighbour discovery and echo for the gateway's address.
    assert!(ping6(&t, "a", "fd00:6a7::1"), "a pings its IPv6 gateway");
    let neigh = t.exec_ok("a", &["ip", "-6", "neigh", "show", "fd00:6a7::1"]);
    assert!(
        neigh.contains("router"),
        "the gateway says it is a router: {neigh}"
    );

    // Names: getent and ping by name go through AAAA.
    let hosts = t.exec_ok("a", &["getent", "ahostsv6", "b"]);
    assert!(hosts.contains("fd00:6a7::3"), "{hosts}");
    assert!(ping6(&t, "a", "b"), "a pings b by name over IPv6");

    // The DNS server over both transports: AAAA, A and PTR under ip6.arpa.
    for server in ["fd00:6a7::1", "172.18.0.1"] {
        assert_eq!(
            dig(&t, "a", server, &["AAAA", "b"]),
            "fd00:6a7::3",
            "{server}"
        );
        assert_eq!(dig(&t, "a", server, &["AAAA", "b.g6"]), "fd00:6a7::3");
        assert_eq!(dig(&t, "a", server, &["AAAA", "db"]), "fd00:6a7::4");
        assert_eq!(dig(&t, "a", server, &["A", "b"]), "172.18.0.3");
        assert_eq!(dig(&t, "a", server, &["-x", "fd00:6a7::3"]), "b.g6.");
        assert_eq!(dig(&t, "a", server, &["-x", "172.18.0.3"]), "b.g6.");
        // Negative with its control above: a name nobody has.
        assert_eq!(dig(&t, "a", server, &["AAAA", "nobody.g6"]), "");
    }
}

#[test]
fn a_guest_configures_itself_by_slaac_from_the_gateways_advertisements() {
    let t = Tapnet::new("v6slaac");
    t.ok(&[
        "network",
        "create",
        "s6",
        "--ipv6",
        "--subnet",
        "fd00:5a::/64",
        "--mtu",
        "1400",
    ]);
    t.ok(&["sandbox", "create", "g", "--net", "s6"]);
    let view = t.json(&["sandbox", "inspect", "g"]);
    let mac = view["interfaces"][0]["mac"]
        .as_str()
        .unwrap_or_else(|| panic!("no MAC in {view}"))
        .to_string();
    let m: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).expect("MAC byte"))
        .collect();
    // SLAAC's address: the prefix and the MAC's EUI-64 interface identifier.
    let slaac = std::net::Ipv6Addr::new(
        0xfd00,
        0x5a,
        0,
        0,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    )
    .to_string();

    // A guest that configures itself: it accepts RAs and starts over without tapnet's
    // address (taking the link down drops it), so its link-up Router Solicitation is answered.
    t.exec_ok(
        "g",
        &[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/eth0/accept_ra && \
             ip link set eth0 down && ip -6 addr flush dev eth0 && ip link set eth0 up",
        ],
    );
    let addrs = || t.exec_ok("g", &["ip", "-6", "addr", "show", "dev", "eth0"]);
    assert!(
        wait_until(Duration::from_secs(10), || addrs()
            .contains(&format!("inet6 {slaac}/64 scope global dynamic"))),
        "no SLAAC address {slaac}: {}",
        addrs()
    );
    assert!(!addrs().contains("fd00:5a::2/"), "tapnet's address is gone");
    let routes = t.exec_ok("g", &["ip", "-6", "route", "show", "default"]);
    assert!(
        routes.contains("via fe80::") && routes.contains("proto ra"),
        "the default route is the gateway's link-local address, from its RA: {routes}"
    );
    let mtu = t.exec_ok("g", &["cat", "/proc/sys/net/ipv6/conf/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1400", "the RA's MTU option");
    // Port security admits the SLAAC address (it derives from the port's MAC).
    assert!(
        ping6(&t, "g", "fd00:5a::1"),
        "g pings the gateway from {slaac}"
    );
    let stats = common::port_stats(&t, "g/eth0");
    assert_eq!(stats["rx_spoofed"], 0, "{stats}");
}
