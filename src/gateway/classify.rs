//! Which frames from the switch are the gateway's business, and what each one is. A pure
//! function of the frame and the gateway's configuration, so that it can be tested on byte
//! arrays and fuzzed: it reads every frame a sandbox sends towards the gateway.
//!
//! smoltcp with AnyIP would answer ARP and ping for every address; only what this function
//! lets through reaches it, so the gateway never answers for a sandbox or a foreign network.
//! IPv6 frames are read by `classify_v6`, on a gateway with an IPv6 side; the others ignore them.

use std::net::Ipv4Addr;

use super::GatewayConfig;
pub use super::inbound::Inbound;
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::{
    ArpPacket, ETH_HDR_LEN, Ethernet, Icmpv4, Ipv4Packet, TcpSegment, UdpDatagram, ethertype,
};

impl GatewayConfig {
    /// Queries to the gateway address, port 53, go to its DNS server.
    pub fn is_dns(&self, dst: Ipv4Addr, port: u16) -> bool {
        self.dns.is_some() && self.is_gateway(dst) && port == super::dns::DNS_PORT
    }

    /// Is `dst` the gateway's IPv4 address?
    pub fn is_gateway(&self, dst: Ipv4Addr) -> bool {
        self.ipv4.is_some_and(|v4| v4.ip == dst)
    }

    /// May the gateway carry traffic to `dst`? Not on internal networks (except to itself),
    /// and never to other addresses of its own subnet or of another tapnet network.
    pub fn routable(&self, dst: Ipv4Addr) -> bool {
        self.ipv4.is_some_and(|v4| {
            dst == v4.ip
                || (self.nat && !v4.subnet.contains(dst) && !self.policy.is_tapnet_address(dst))
        })
    }
}

pub fn classify(frame: &[u8], config: &GatewayConfig) -> Inbound {
    let Ok(eth) = Ethernet::new_checked(frame) else {
        return Inbound::Ignore;
    };
    // An IPv6-only network's gateway ignores IPv4 and ARP, as any frame not its business.
    let Some(v4) = config.ipv4 else {
        return match (&config.ipv6, eth.ethertype() == ethertype::IPV6) {
            (Some(v6), true) => super::classify_v6::classify_v6(frame, config, v6),
            _ => Inbound::Ignore,
        };
    };
    if eth.ethertype() == ethertype::ARP {
        // Only ARP for the gateway's own address.
        let ours = ArpPacket::new_checked(eth.payload()).is_ok_and(|a| a.target_ip() == v4.ip);
        return if ours {
            Inbound::Stack
        } else {
            Inbound::Ignore
        };
    }
    if eth.ethertype() == ethertype::IPV6 {
        // A gateway without IPv6 ignores it all, as any frame not its business.
        return match &config.ipv6 {
            Some(v6) => super::classify_v6::classify_v6(frame, config, v6),
            None => Inbound::Ignore,
        };
    }
    // DHCP clients broadcast before they have an address.
    if let Some(dhcp) = super::dhcp::classify(frame, config) {
        return dhcp;
    }
    if eth.ethertype() != ethertype::IPV4 || eth.dst() != config.mac {
        return Inbound::Ignore;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Inbound::Ignore;
    };
    // TCP and UDP are read up to the end of the frame, ICMP up to the total length.
    let Ok(l4) = ip.rest() else {
        return Inbound::Ignore;
    };
    let l4_at = ETH_HDR_LEN + ip.header_len();
    let (src, dst) = (ip.src(), ip.dst());
    match ip.protocol() {
        PROTO_ICMP if dst == v4.ip => Inbound::Stack,
        PROTO_ICMP if config.nat && config.routable(dst) => {
            let Ok((start, end)) = ip.payload_range() else {
                return Inbound::Ignore;
            };
            let icmp = (ETH_HDR_LEN + start, ETH_HDR_LEN + end);
            match Icmpv4::new_checked(&frame[icmp.0..icmp.1]).map(|m| m.echo_request()) {
                Ok(Some(echo)) => Inbound::Echo {
                    key: (src, echo.id, dst),
                    src_mac: eth.src(),
                    icmp,
                },
                _ => Inbound::Ignore,
            }
        }
        PROTO_TCP => match TcpSegment::new_checked(l4) {
            Ok(tcp) if config.routable(dst) => {
                let tuple = (src, tcp.src_port(), dst, tcp.dst_port());
                if tcp.is_syn_only() {
                    Inbound::TcpSyn(tuple)
                } else {
                    Inbound::Stack
                }
            }
            // Through the gateway to somewhere it may not go: refused, so the sandbox fails at
            // once.
            Ok(_) if !v4.subnet.contains(dst) => Inbound::Stack,
            _ => Inbound::Ignore,
        },
        PROTO_UDP => match UdpDatagram::new_checked(l4) {
            Ok(udp)
                if (config.nat && config.routable(dst)) || config.is_dns(dst, udp.dst_port()) =>
            {
                let Ok((start, end)) = udp.payload_range() else {
                    return Inbound::Ignore;
                };
                Inbound::Udp {
                    tuple: (src, udp.src_port(), dst, udp.dst_port()),
                    src_mac: eth.src(),
                    payload: (l4_at + start, l4_at + end),
                }
            }
            _ => Inbound::Ignore,
        },
        _ => Inbound::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::policy::NatPolicy;
    use crate::wire::MacAddr;
    use etherparse::PacketBuilder;
    use std::time::Duration;

    const GW_MAC: [u8; 6] = [2, 0x42, 172, 18, 0, 1];
    const SB_MAC: [u8; 6] = [2, 0x42, 172, 18, 0, 2];
    const SB: [u8; 4] = [172, 18, 0, 2];

    fn config(nat: bool) -> GatewayConfig {
        let policy = NatPolicy::new(Vec::new(), Vec::new());
        policy.set_tapnet_subnets(vec![
            "172.18.0.0/16".parse().unwrap(),
            "172.19.0.0/16".parse().unwrap(),
        ]);
        GatewayConfig {
            network: "n".into(),
            ipv4: Some(crate::gateway::GatewayV4 {
                subnet: "172.18.0.0/16".parse().unwrap(),
                ip: Ipv4Addr::new(172, 18, 0, 1),
            }),
            mac: MacAddr(GW_MAC),
            mtu: 1500,
            nat,
            policy,
            host_loopback: true,
            udp_idle: Duration::from_secs(30),
            limits: crate::gateway::NatLimits::default(),
            dns: Some((
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            )),
            ipv6: None,
            spin: std::time::Duration::ZERO,
        }
    }

    fn tcp(dst: [u8; 4], syn: bool, ack: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(SB_MAC, GW_MAC)
            .ipv4(SB, dst, 64)
            .tcp(40000, 80, 1, 65535);
        if syn {
            b = b.syn();
        }
        if ack {
            b = b.ack(7);
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    fn udp(dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC, GW_MAC)
            .ipv4(SB, dst, 64)
            .udp(5353, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    fn arp(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&SB_MAC);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&SB_MAC);
        f.extend_from_slice(&SB);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f
    }

    #[test]
    fn arp_only_for_the_gateway_address() {
        let c = config(true);
        assert_eq!(classify(&arp([172, 18, 0, 1]), &c), Inbound::Stack);
        assert_eq!(
            classify(&arp([172, 18, 0, 3]), &c),
            Inbound::Ignore,
            "no proxy ARP"
        );
    }

    #[test]
    fn tcp_syn_opens_flows_outside_tapnet_only() {
        let c = config(true);
        let key = (Ipv4Addr::from(SB), 40000, Ipv4Addr::new(192, 0, 2, 9), 80);
        assert_eq!(
            classify(&tcp([192, 0, 2, 9], true, false), &c),
            Inbound::TcpSyn(key)
        );
        assert_eq!(
            classify(&tcp([192, 0, 2, 9], true, true), &c),
            Inbound::Stack,
            "SYN-ACK"
        );
        assert_eq!(
            classify(&tcp([192, 0, 2, 9], false, true), &c),
            Inbound::Stack
        );
        assert!(matches!(
            classify(&tcp([172, 18, 0, 1], true, false), &c),
            Inbound::TcpSyn(_)
        ));
        // Another tapnet network: refused through smoltcp, never a flow.
        assert_eq!(
            classify(&tcp([172, 19, 0, 2], true, false), &c),
            Inbound::Stack
        );
        // A neighbour on the same subnet is reached on the switch, not through the gateway.
        assert_eq!(
            classify(&tcp([172, 18, 0, 3], true, false), &c),
            Inbound::Ignore
        );
        // Internal: only the gateway itself.
        let internal = config(false);
        assert_eq!(
            classify(&tcp([192, 0, 2, 9], true, false), &internal),
            Inbound::Stack
        );
    }

    #[test]
    fn udp_for_nat_and_dns_with_exact_payload_bounds() {
        let c = config(true);
        let f = udp([192, 0, 2, 9], 123, b"hello");
        match classify(&f, &c) {
            Inbound::Udp {
                tuple,
                src_mac,
                payload,
            } => {
                assert_eq!(tuple.3, 123);
                assert_eq!(src_mac, MacAddr(SB_MAC));
                assert_eq!(&f[payload.0..payload.1], b"hello");
            }
            other => panic!("{other:?}"),
        }
        let internal = config(false);
        assert!(matches!(
            classify(&udp([172, 18, 0, 1], 53, b"q"), &internal),
            Inbound::Udp { .. }
        ));
        assert_eq!(
            classify(&udp([192, 0, 2, 9], 53, b"q"), &internal),
            Inbound::Ignore
        );
        // A UDP length beyond the frame is malformed.
        let mut bad = udp([192, 0, 2, 9], 123, b"hello");
        bad[14 + 20 + 4] = 0xff;
        assert_eq!(classify(&bad, &c), Inbound::Ignore);
    }

    #[test]
    fn echo_requests_beyond_the_gateway_are_pinged_through() {
        let ping = |dst: [u8; 4]| {
            let mut out = Vec::new();
            PacketBuilder::ethernet2(SB_MAC, GW_MAC)
                .ipv4(SB, dst, 64)
                .icmpv4_echo_request(0x77, 3)
                .write(&mut out, b"abcdefgh")
                .unwrap();
            out
        };
        let c = config(true);
        let f = ping([192, 0, 2, 9]);
        match classify(&f, &c) {
            Inbound::Echo { key, icmp, .. } => {
                assert_eq!(key, (Ipv4Addr::from(SB), 0x77, Ipv4Addr::new(192, 0, 2, 9)));
                assert_eq!(icmp, (34, f.len()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&ping([172, 18, 0, 1]), &c),
            Inbound::Stack,
            "the gateway itself"
        );
        assert_eq!(
            classify(&ping([172, 19, 0, 5]), &c),
            Inbound::Ignore,
            "another network"
        );
        assert_eq!(
            classify(&ping([192, 0, 2, 9]), &config(false)),
            Inbound::Ignore,
            "internal"
        );
    }

    #[test]
    fn ignores_what_is_not_for_the_gateway() {
        let c = config(true);
        let mut other_mac = tcp([192, 0, 2, 9], true, false);
        other_mac[0..6].copy_from_slice(&[2, 0x42, 172, 18, 0, 3]);
        assert_eq!(classify(&other_mac, &c), Inbound::Ignore);
        let mut bad_ihl = tcp([192, 0, 2, 9], true, false);
        bad_ihl[14] = 0x42;
        assert_eq!(classify(&bad_ihl, &c), Inbound::Ignore);
        assert_eq!(classify(&[0u8; 10], &c), Inbound::Ignore);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let c = config(true);
        let mut rng = crate::test_rng::XorShift(0x2545_f491_4f6c_dd1d);
        let base = udp([192, 0, 2, 9], 53, b"payload");
        for round in 0..20_000 {
            let seed = rng.next();
            let mut f = base.clone();
            f.truncate((seed as usize) % (base.len() + 1));
            if let Some(b) = f.get_mut((seed >> 20) as usize % base.len().max(1)) {
                *b = (seed >> 40) as u8;
            }
            if round % 2 == 0 && f.len() >= 14 {
                f[0..6].copy_from_slice(&GW_MAC);
            }
            if let Inbound::Udp { payload, .. } = classify(&f, &c) {
                assert!(payload.0 <= payload.1 && payload.1 <= f.len());
            }
        }
    }
}
