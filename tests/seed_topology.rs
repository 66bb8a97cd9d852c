//! The seed's example, end to end: two networks, three sandboxes, a live connect, real traffic.

mod common;

use common::{Tapnet, port_stats, wait_until};

use std::time::Duration;

const TEN_MB: usize = 10 * 1024 * 1024;

fn build(t: &Tapnet) {
    t.ok(&["network", "create", "backend"]);
    t.ok(&["network", "create", "frontend"]);
    t.ok(&["sandbox", "create", "container1", "--net", "backend"]);
    t.ok(&["sandbox", "create", "container2", "--net", "backend"]);
    t.ok(&["sandbox", "create", "container3", "--net", "frontend"]);
    t.ok(&["network", "connect", "frontend", "container2"]);
}

#[test]
fn seed_topology_reachability_and_isolation() {
    let mut t = Tapnet::new("seed");
    build(&t);

    // Addresses follow Docker: first free /16 from 172.18, gateway .1, endpoints from .2.
    let c2 = t.json(&["sandbox", "inspect", "container2"]);
    let ifaces = c2["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifaces.len(), 2);
    assert_eq!(ifaces[0]["interface"], "eth0");
    assert_eq!(ifaces[0]["ipv4"], "172.18.0.3/16");
    assert_eq!(ifaces[0]["mac"], "02:42:ac:12:00:03");
    assert_eq!(ifaces[1]["interface"], "eth1");
    assert_eq!(ifaces[1]["ipv4"], "172.19.0.3/16");

    // The second interface appeared live inside the namespace.
    let addrs = t.exec_ok("container2", &["ip", "-o", "-4", "addr", "show"]);
    assert!(
        addrs.contains("eth0") && addrs.contains("172.18.0.3/16"),
        "{addrs}"
    );
    assert!(
        addrs.contains("eth1") && addrs.contains("172.19.0.3/16"),
        "{addrs}"
    );

    assert!(
        t.ping("container2", "172.18.0.2"),
        "container2 -> container1"
    );
    assert!(
        t.ping("container2", "172.19.0.2"),
        "container2 -> container3"
    );
    assert!(
        t.ping("container3", "172.19.0.3"),
        "container3 -> container2"
    );

    for (to, ip) in [("container1", "172.18.0.2"), ("container3", "172.19.0.2")] {
        let (sent, received) = t.tcp_transfer("container2", to, ip, TEN_MB);
        assert!(sent.starts_with(&TEN_MB.to_string()), "{sent}");
        assert_eq!(sent, received, "10 MB to {to} arrived intact");
    }

    // Isolation: even with an on-link route (so container1 broadcasts ARP for container3),
    // no frame of container1 shows up on frontend, while backend sees them.
    t.exec_ok(
        "container1",
        &["ip", "route", "add", "172.19.0.0/16", "dev", "eth0"],
    );
    let from_c1 = ["ether", "src", "02:42:ac:12:00:02"];
    let on_frontend = t.spawn_capture("container3", "eth0", &from_c1);
    let on_backend = t.spawn_capture("container2", "eth0", &from_c1);
    assert!(
        !t.ping("container1", "172.19.0.2"),
        "container1 must not reach container3"
    );
    let leaked = t.captured(on_frontend);
    assert!(
        leaked.is_empty(),
        "container1's frames leaked to frontend: {leaked:?}"
    );
    assert!(
        !t.captured(on_backend).is_empty(),
        "the capture itself works"
    );
    let frontend_macs = t.json(&["fdb", "frontend"]).to_string();
    assert!(
        !frontend_macs.contains("02:42:ac:12:00:02"),
        "{frontend_macs}"
    );
    assert_eq!(port_stats(&t, "container1/eth0")["drops"], 0);
}

#[test]
fn default_network_and_busy_networks_cannot_be_removed() {
    let t = Tapnet::new("rm");
    build(&t);
    let err = t.fails(&["network", "rm", "bridge"]);
    assert!(err.contains("default network"), "{err}");
    let err = t.fails(&["network", "rm", "backend"]);
    assert!(
        err.contains("container1") && err.contains("container2"),
        "names endpoints: {err}"
    );

    t.ok(&["sandbox", "rm", "container1"]);
    t.ok(&["network", "disconnect", "backend", "container2"]);
    // container2's eth0 is gone, eth1 keeps working.
    let links = t.exec_ok("container2", &["ip", "-o", "link", "show"]);
    assert!(!links.contains("eth0") && links.contains("eth1"), "{links}");
    assert!(t.ping("container2", "172.19.0.2"));
    t.ok(&["network", "rm", "backend"]);
    assert_eq!(t.network_names(), ["bridge", "host", "none", "frontend"]);
}

#[test]
fn mac_table_learns_and_ages() {
    let t = Tapnet::new("fdb");
    t.ok(&["network", "create", "agenet", "--opt", "mac_aging=2"]);
    t.ok(&["sandbox", "create", "a", "--net", "agenet"]);
    t.ok(&["sandbox", "create", "b", "--net", "agenet"]);
    assert!(t.ping("a", "172.18.0.3"));
    let fdb = t.json(&["fdb", "agenet"]);
    let rows = fdb.as_array().expect("rows");
    let port_of = |mac: &str| {
        rows.iter()
            .find(|r| r["mac"] == mac)
            .map(|r| r["port"].clone())
    };
    assert_eq!(port_of("02:42:ac:12:00:02"), Some("a/eth0".into()), "{fdb}");
    assert_eq!(port_of("02:42:ac:12:00:03"), Some("b/eth0".into()), "{fdb}");
    assert!(
        rows.iter()
            .all(|r| r["kind"] == "learned" && r["age_s"].as_u64().is_some_and(|a| a <= 2)),
        "every row is a learned station with an age: {fdb}"
    );
    // Silence: both stations age out after 2 s (IPv6 router solicitations may still appear
    // from time to time, so only the IPv4 stations' absence is checked).
    let gone = wait_until(Duration::from_secs(10), || {
        t.json(&["fdb", "agenet"])
            .as_array()
            .is_some_and(|r| r.is_empty())
    });
    assert!(gone, "entries aged out: {}", t.json(&["fdb", "agenet"]));
}
