//! Every frame a sandbox sends towards the gateway goes through `classify` first: it must never
//! panic, and a UDP payload range it returns must lie inside the frame.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tapnet::gateway::GatewayConfig;
use tapnet::gateway::classify::{Inbound, classify};
use tapnet::gateway::policy::NatPolicy;
use tapnet::wire::MacAddr;

fuzz_target!(|data: &[u8]| {
    let policy = NatPolicy::new(Vec::new());
    let subnet = "172.18.0.0/16".parse().expect("subnet");
    policy.set_tapnet_subnets(vec![subnet]);
    let config = GatewayConfig {
        network: "fuzz".into(),
        subnet,
        ip: Ipv4Addr::new(172, 18, 0, 1),
        mac: MacAddr([2, 0x42, 172, 18, 0, 1]),
        mtu: 1500,
        nat: data.first().is_some_and(|b| b & 1 == 1),
        policy,
        udp_idle: Duration::from_secs(30),
        limits: tapnet::gateway::NatLimits::default(),
        dns: Some((
            "127.0.0.1:1".parse().expect("addr"),
            "127.0.0.1:2".parse().expect("addr"),
        )),
        ipv6: None,
    };
    if let Inbound::Udp { payload, .. } = classify(data, &config) {
        assert!(payload.0 <= payload.1 && payload.1 <= data.len());
    }
});
