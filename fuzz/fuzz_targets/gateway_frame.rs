//! Every frame a sandbox sends towards the gateway goes through `classify` first: it must never
//! panic, and a payload range it returns (UDP, DNS over IPv6, ICMPv6 echo, a refused IPv6 packet) must lie inside the
//! frame. The first byte's second bit gives the gateway an IPv6 side, its third bit takes its
//! IPv4 side away (an IPv6-only network's gateway).
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet::gateway::GatewayConfig;
use tapnet::gateway::classify::{Inbound, classify};
use tapnet::gateway::policy::NatPolicy;
use tapnet::wire::MacAddr;

fuzz_target!(|data: &[u8]| {
    let policy = NatPolicy::new(Vec::new(), Vec::new());
    let subnet = "172.18.0.0/16".parse().expect("subnet");
    policy.set_tapnet_subnets(vec![subnet]);
    let config = GatewayConfig {
        network: "fuzz".into(),
        ipv4: data
            .first()
            .is_none_or(|b| b & 4 == 0)
            .then_some(tapnet::gateway::GatewayV4 {
                subnet,
                ip: Ipv4Addr::new(172, 18, 0, 1),
            }),
        mac: MacAddr([2, 0x42, 172, 18, 0, 1]),
        mtu: 1500,
        nat: data.first().is_some_and(|b| b & 1 == 1),
        policy,
        host_loopback: true,
        udp_idle: Duration::from_secs(30),
        limits: tapnet::gateway::NatLimits::default(),
        dns: Some((
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        )),
        ipv6: data
            .first()
            .is_some_and(|b| b & 2 == 2)
            .then(|| tapnet::gateway::GatewayV6 {
                subnet: "fd00:42::/64".parse().expect("subnet"),
                ip: "fd00:42::1".parse().expect("address"),
            }),
        spin: Duration::ZERO,
    };
    match classify(data, &config) {
        Inbound::Udp { payload: r, .. }
        | Inbound::Dns6 { payload: r, .. }
        | Inbound::Udp6 { payload: r, .. }
        | Inbound::Echo6 { icmp: r, .. }
        | Inbound::EchoOut6 { icmp: r, .. }
        | Inbound::Refuse6 { packet: r, .. } => assert!(r.0 <= r.1 && r.1 <= data.len()),
        _ => {}
    }
});
