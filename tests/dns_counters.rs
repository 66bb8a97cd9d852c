//! What `network inspect` counts: a name the gateway answers itself is a DNS query, not a UDP
//! NAT flow; a datagram the gateway carries to the host is a NAT flow.
//! Every daemon here may only NAT to 127.0.0.0/8 (the harness sets TAPNET_NAT_ALLOW).

mod common;

use common::Tapnet;

/// (UDP NAT flows, DNS queries, DNS answers from the network's names) of network `net`.
fn counters(t: &Tapnet, net: &str) -> (u64, u64, u64) {
    let v = t.json(&["network", "inspect", net]);
    let get = |key: &str| {
        v["nat"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("nat.{key} in {v}"))
    };
    (
        get("udp_flows"),
        get("dns_queries"),
        get("dns_local_answers"),
    )
}

/// `ping c2` in c1 resolves c2 through the gateway's DNS (A and AAAA queries, each once a UDP
/// NAT flow to the DNS server held for 30 s): now they show as DNS queries answered from the
/// network's names, and no NAT flow. Positive control: one UDP exchange with a server on the
/// host's loopback, through the gateway address, does show as one NAT flow.
#[test]
fn local_names_are_dns_queries_not_nat_flows() {
    let mut t = Tapnet::new("dnscount");
    t.ok(&["network", "create", "n", "--opt", "host_loopback=on"]);
    t.ok(&["sandbox", "create", "c1", "--net", "n"]);
    t.ok(&["sandbox", "create", "c2", "--net", "n"]);
    let (flows, queries, local) = counters(&t, "n");
    assert_eq!(flows, 0, "no flow before any traffic");
    t.exec_ok("c1", &["ping", "-c1", "-W", "5", "c2"]);
    let (flows_after, queries_after, local_after) = counters(&t, "n");
    assert!(
        queries_after > queries,
        "the lookup of c2 is counted as DNS: {queries} -> {queries_after}"
    );
    assert!(
        local_after > local,
        "and answered from the network's names: {local} -> {local_after}"
    );
    assert_eq!(flows_after, 0, "a local answer is not a UDP NAT flow");
    // Positive control: real outbound UDP through the gateway is a NAT flow, counted here.
    let (server, port) = t.spawn_host_server_on_free_port(&["udp-echo", "127.0.0.1", "0", "1"]);
    assert_eq!(
        t.traffic("c1", &["udp-ping", "172.18.0.1", &port, "1"]),
        "1"
    );
    t.server_output(server);
    let (flows, queries, _) = counters(&t, "n");
    assert_eq!(flows, 1, "one UDP NAT flow for one sandbox socket");
    assert_eq!(queries, queries_after, "and no DNS query");
}
