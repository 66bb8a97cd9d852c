//! Which IPv6 frames are the gateway's, on a network with IPv6: Neighbour Solicitations for its
//! addresses, Router Solicitations, echo requests to its addresses, and DNS queries to its
//! address, and TCP, UDP and echo requests it carries through host sockets (NAT, as IPv4's; smoltcp holds the
//! TCP flows, so it also gets the sandboxes' Neighbour Advertisements to the gateway). What it
//! cannot carry (what the policy forbids) is refused, so that the sandbox fails at once and falls back to IPv4 instead
//! of waiting for a timeout. Everything else (other hosts' neighbour discovery, MLD, router
//! advertisements a sandbox sends, ICMPv6 errors) is ignored.
//!
//! Read with the wire module's views; nothing is trusted before their length checks, and
//! neighbour discovery is taken only with hop limit 255 (it came from the link itself,
//! RFC 4861 section 7.1) and a correct checksum.

use std::net::{Ipv6Addr, SocketAddrV6};

use super::inbound::Inbound;
use super::ndp::{
    ALL_ROUTERS, ECHO_REQUEST, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, ROUTER_SOLICIT, link_local,
    multicast_mac, solicited_node,
};
use super::{GatewayConfig, GatewayV6};
use crate::wire::ipv6::{self, HEADER_LEN as IPV6_HDR_LEN, NEXT_ICMPV6, NEXT_TCP, NEXT_UDP};
use crate::wire::{ETH_HDR_LEN, Ethernet, Icmpv6, Ipv6Packet, TcpSegment, UdpDatagram};

/// The fixed part of a Neighbour Solicitation: type, code, checksum, reserved, target.
const NS_LEN: usize = 24;

/// `frame` is an Ethernet frame with the IPv6 EtherType.
pub fn classify_v6(frame: &[u8], config: &GatewayConfig, v6: &GatewayV6) -> Inbound {
    let Ok(eth) = Ethernet::new_checked(frame) else {
        return Inbound::Ignore;
    };
    let (dst_mac, src_mac) = (eth.dst(), eth.src());
    let local = link_local(config.mac);
    let to_us = dst_mac == config.mac
        || dst_mac == multicast_mac(solicited_node(v6.ip))
        || dst_mac == multicast_mac(solicited_node(local))
        || dst_mac == multicast_mac(ALL_ROUTERS);
    if !to_us {
        return Inbound::Ignore;
    }
    let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) else {
        return Inbound::Ignore;
    };
    // The payload, bounded by the payload length (bytes past it are padding).
    let Ok(payload) = ip.check_version().and_then(|()| ip.payload()) else {
        return Inbound::Ignore;
    };
    let (src, dst) = (ip.src(), ip.dst());
    if src.is_multicast() {
        return Inbound::Ignore;
    }
    let ours = |a: Ipv6Addr| a == v6.ip || a == local;
    let at = ETH_HDR_LEN + IPV6_HDR_LEN;
    // Sent to the gateway as a router, or to the gateway itself, by a host with an address.
    let unicast = dst_mac == config.mac && !src.is_unspecified();
    let through = unicast && routed(dst, v6) && !ours(dst);
    let refuse = Inbound::Refuse6 {
        src_mac,
        src,
        packet: (ETH_HDR_LEN, at + payload.len()),
    };
    match ip.next_header() {
        NEXT_ICMPV6 => {
            let Ok(icmp) = Icmpv6::new_checked(payload) else {
                return Inbound::Ignore;
            };
            let (body, msg_type) = (payload, icmp.msg_type());
            let ndp = msg_type == ROUTER_SOLICIT
                || msg_type == NEIGHBOR_SOLICIT
                || msg_type == NEIGHBOR_ADVERT;
            if ndp && (ip.hop_limit() != 255 || icmp.code() != 0) {
                return Inbound::Ignore;
            }
            if ipv6::checksum(src, dst, NEXT_ICMPV6, body) != 0 {
                return Inbound::Ignore;
            }
            match msg_type {
                NEIGHBOR_SOLICIT if body.len() >= NS_LEN => {
                    let mut target = [0u8; 16];
                    target.copy_from_slice(&body[8..NS_LEN]);
                    let target = Ipv6Addr::from(target);
                    // To the target's solicited-node group, or to the target itself (a
                    // reachability probe); duplicate address detection comes from :: to the group.
                    let asked =
                        dst == solicited_node(target) || (dst == target && !src.is_unspecified());
                    if ours(target) && asked {
                        Inbound::NeighborSolicit {
                            src_mac,
                            src,
                            target,
                        }
                    } else {
                        Inbound::Ignore
                    }
                }
                // A sandbox's answer to smoltcp's solicitation (it terminates TCP): smoltcp
                // learns the sandbox's MAC from it.
                NEIGHBOR_ADVERT if dst_mac == config.mac && ours(dst) => Inbound::Stack,
                ROUTER_SOLICIT if dst == ALL_ROUTERS || ours(dst) => {
                    Inbound::RouterSolicit { src_mac, src }
                }
                // An echo request has its identifier and sequence number: 8 bytes at least.
                ECHO_REQUEST if body.len() < 8 || icmp.code() != 0 => Inbound::Ignore,
                ECHO_REQUEST if ours(dst) && !src.is_unspecified() => Inbound::Echo6 {
                    src_mac,
                    src,
                    dst,
                    icmp: (at, at + body.len()),
                },
                ECHO_REQUEST if through && config.routable_v6(dst) => Inbound::EchoOut6 {
                    key: (src, u16::from_be_bytes([body[4], body[5]]), dst),
                    src_mac,
                    icmp: (at, at + body.len()),
                },
                ECHO_REQUEST if through => refuse,
                _ => Inbound::Ignore,
            }
        }
        NEXT_TCP if through || (unicast && ours(dst)) => {
            let Ok(tcp) = TcpSegment::new_checked(payload) else {
                return Inbound::Ignore;
            };
            if !config.routable_v6(dst) {
                refuse
            } else if tcp.is_syn_only() {
                Inbound::TcpSyn6 {
                    tuple: (src, tcp.src_port(), dst, tcp.dst_port()),
                    src_mac,
                }
            } else {
                // A segment of a flow smoltcp holds (or RST from it for one it does not).
                Inbound::Stack
            }
        }
        NEXT_UDP if through || (unicast && ours(dst)) => {
            let Ok(udp) = UdpDatagram::new_checked(payload) else {
                return Inbound::Ignore;
            };
            // A length field that covers the header and lies within the IPv6 payload.
            let Ok((start, end)) = udp.payload_range() else {
                return Inbound::Ignore;
            };
            let payload = (at + start, at + end);
            let dns = dst == v6.ip && config.dns.is_some();
            if dns && udp.dst_port() == super::dns::DNS_PORT {
                Inbound::Dns6 {
                    src: SocketAddrV6::new(src, udp.src_port(), 0, 0),
                    src_mac,
                    payload,
                }
            } else if config.nat && config.routable_v6(dst) {
                Inbound::Udp6 {
                    tuple: (src, udp.src_port(), dst, udp.dst_port()),
                    src_mac,
                    payload,
                }
            } else {
                refuse
            }
        }
        _ => Inbound::Ignore,
    }
}

impl GatewayConfig {
    /// May the gateway carry IPv6 to `dst`? Its own address (the host's loopback), and beyond
    /// it on a network with NAT, except into any tapnet network's prefix.
    pub fn routable_v6(&self, dst: Ipv6Addr) -> bool {
        self.ipv6.is_some_and(|v6| {
            dst == v6.ip || (self.nat && routed(dst, &v6) && !self.policy.is_tapnet_address_v6(dst))
        })
    }
}

/// Would a packet to `dst` be routed through the gateway? Not when it stays on the link: the
/// network's own prefix, link-local and multicast addresses (nor :: and ::1, never valid).
fn routed(dst: Ipv6Addr, v6: &GatewayV6) -> bool {
    let link_local = dst.segments()[0] & 0xffc0 == 0xfe80;
    !(dst.is_multicast()
        || dst.is_unspecified()
        || dst.is_loopback()
        || link_local
        || v6.subnet.contains(dst))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::gateway::classify::classify;
    use crate::gateway::policy::NatPolicy;
    use crate::wire::MacAddr;
    use etherparse::{Icmpv6Type, PacketBuilder};
    use std::time::Duration;

    pub(crate) const GW_MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x12, 0, 1]);
    pub(crate) const SB_MAC: MacAddr = MacAddr([2, 0x42, 0xac, 0x12, 0, 2]);

    pub(crate) fn gw6() -> Ipv6Addr {
        "fd00:42::1".parse().unwrap()
    }

    pub(crate) fn sb6() -> Ipv6Addr {
        "fd00:42::2".parse().unwrap()
    }

    pub(crate) fn sb_local() -> Ipv6Addr {
        link_local(SB_MAC)
    }

    pub(crate) fn config(v6: bool) -> GatewayConfig {
        GatewayConfig {
            network: "n6".into(),
            ipv4: Some(crate::gateway::GatewayV4 {
                subnet: "172.18.0.0/16".parse().unwrap(),
                ip: std::net::Ipv4Addr::new(172, 18, 0, 1),
            }),
            mac: GW_MAC,
            mtu: 1500,
            nat: true,
            policy: NatPolicy::new(Vec::new(), Vec::new()),
            host_loopback: true,
            udp_idle: Duration::from_secs(30),
            limits: crate::gateway::NatLimits::default(),
            dns: Some((
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            )),
            ipv6: v6.then(|| GatewayV6 {
                subnet: "fd00:42::/64".parse().unwrap(),
                ip: gw6(),
            }),
            spin: Duration::ZERO,
        }
    }

    /// A Neighbour Solicitation from `src` for `target`, to its solicited-node group, with the
    /// source link-layer option unless `src` is ::.
    pub(crate) fn neighbor_solicit(src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let group = solicited_node(target);
        let mut body = target.octets().to_vec();
        if !src.is_unspecified() {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&SB_MAC.0);
        }
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, multicast_mac(group).0)
            .ipv6(src.octets(), group.octets(), 255)
            .icmpv6(Icmpv6Type::NeighborSolicitation)
            .write(&mut out, &body)
            .unwrap();
        out
    }

    pub(crate) fn router_solicit(src: Ipv6Addr) -> Vec<u8> {
        let mut body = Vec::new();
        if !src.is_unspecified() {
            body.extend_from_slice(&[1, 1]);
            body.extend_from_slice(&SB_MAC.0);
        }
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, multicast_mac(ALL_ROUTERS).0)
            .ipv6(src.octets(), ALL_ROUTERS.octets(), 255)
            .icmpv6(Icmpv6Type::RouterSolicitation)
            .write(&mut out, &body)
            .unwrap();
        out
    }

    pub(crate) fn echo_request(dst: Ipv6Addr, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv6(sb6().octets(), dst.octets(), 64)
            .icmpv6_echo_request(0x4242, 7)
            .write(&mut out, data)
            .unwrap();
        out
    }

    pub(crate) fn udp6(dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv6(sb6().octets(), dst.octets(), 64)
            .udp(40053, dport)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn neighbour_solicitations_for_the_gateway_addresses_only() {
        let c = config(true);
        let local = link_local(GW_MAC);
        for target in [gw6(), local] {
            assert_eq!(
                classify(&neighbor_solicit(sb_local(), target), &c),
                Inbound::NeighborSolicit {
                    src_mac: SB_MAC,
                    src: sb_local(),
                    target
                },
                "{target}"
            );
        }
        // Duplicate address detection of our address: answered too (to all nodes).
        assert!(matches!(
            classify(&neighbor_solicit(Ipv6Addr::UNSPECIFIED, gw6()), &c),
            Inbound::NeighborSolicit { .. }
        ));
        // A sandbox's address: the switch floods it, the gateway keeps out of it.
        let other: Ipv6Addr = "fd00:42::5".parse().unwrap();
        assert_eq!(
            classify(&neighbor_solicit(sb_local(), other), &c),
            Inbound::Ignore
        );
        // Same low 24 bits as the gateway's address (same group), another address: ignored.
        let twin: Ipv6Addr = "fd00:42::77:0:1".parse().unwrap();
        assert_eq!(solicited_node(twin), solicited_node(gw6()));
        assert_eq!(
            classify(&neighbor_solicit(sb_local(), twin), &c),
            Inbound::Ignore
        );
        // Relayed from off-link (hop limit not 255), or a bad checksum: ignored.
        let mut relayed = neighbor_solicit(sb_local(), gw6());
        relayed[14 + 7] = 254;
        assert_eq!(classify(&relayed, &c), Inbound::Ignore);
        let mut corrupt = neighbor_solicit(sb_local(), gw6());
        corrupt[14 + 40 + 8] ^= 1;
        assert_eq!(classify(&corrupt, &c), Inbound::Ignore);
    }

    #[test]
    fn solicitations_echo_and_dns() {
        let c = config(true);
        assert_eq!(
            classify(&router_solicit(sb_local()), &c),
            Inbound::RouterSolicit {
                src_mac: SB_MAC,
                src: sb_local()
            }
        );
        let ping = echo_request(gw6(), b"abcdefgh");
        assert_eq!(
            classify(&ping, &c),
            Inbound::Echo6 {
                src_mac: SB_MAC,
                src: sb6(),
                dst: gw6(),
                icmp: (54, ping.len())
            }
        );
        assert!(matches!(
            classify(&echo_request(link_local(GW_MAC), b""), &c),
            Inbound::Echo6 { .. }
        ));
        let query = udp6(gw6(), 53, b"query");
        match classify(&query, &c) {
            Inbound::Dns6 {
                src,
                src_mac,
                payload,
            } => {
                assert_eq!(src, SocketAddrV6::new(sb6(), 40053, 0, 0));
                assert_eq!(src_mac, SB_MAC);
                assert_eq!(&query[payload.0..payload.1], b"query");
            }
            other => panic!("{other:?}"),
        }
        let mut long = udp6(gw6(), 53, b"query");
        long[14 + 40 + 5] = 0xff; // UDP length past the packet
        assert_eq!(classify(&long, &c), Inbound::Ignore);
    }

    pub(crate) fn tcp6_syn(dst: Ipv6Addr) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv6(sb6().octets(), dst.octets(), 64)
            .tcp(40000, 80, 1, 65535)
            .syn()
            .write(&mut out, &[])
            .unwrap();
        out
    }

    #[test]
    fn what_the_gateway_cannot_carry_is_refused_quoting_the_packet() {
        let c = config(true);
        let beyond: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let mut internal = config(true);
        internal.nat = false;
        let tapnet = "fd00:43::9".parse().unwrap();
        c.policy
            .set_tapnet_subnets_v6(vec!["fd00:43::/64".parse().unwrap()]);
        let frames = [
            (tcp6_syn(tapnet), &c),
            (tcp6_syn(beyond), &internal),
            (echo_request(beyond, b"x"), &internal),
            (echo_request(tapnet, b"x"), &c),
            (udp6(tapnet, 53, b"q"), &c),
            (udp6(beyond, 53, b"q"), &internal),
            (udp6(gw6(), 54, b"q"), &internal),
        ];
        for (frame, c) in &frames {
            assert_eq!(
                classify(frame, c),
                Inbound::Refuse6 {
                    src_mac: SB_MAC,
                    src: sb6(),
                    packet: (ETH_HDR_LEN, frame.len())
                }
            );
        }
        // Without a DNS server, port 53 of an internal gateway is refused as any other.
        let mut no_dns = config(true);
        no_dns.dns = None;
        no_dns.nat = false;
        assert!(matches!(
            classify(&udp6(gw6(), 53, b"q"), &no_dns),
            Inbound::Refuse6 { .. }
        ));
        // Not refused: a neighbour on the link (the switch carries it), another MAC, an ICMPv6
        // error (never an error about an error), multicast.
        let neighbour: Ipv6Addr = "fd00:42::9".parse().unwrap();
        assert_eq!(classify(&tcp6_syn(neighbour), &c), Inbound::Ignore);
        assert_eq!(classify(&tcp6_syn(sb_local()), &c), Inbound::Ignore);
        let mut other_mac = tcp6_syn(beyond);
        other_mac[..6].copy_from_slice(&[2, 0x42, 0xac, 0x12, 0, 9]);
        assert_eq!(classify(&other_mac, &c), Inbound::Ignore);
        let mut error = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv6(sb6().octets(), beyond.octets(), 64)
            .icmpv6(Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Port,
            ))
            .write(&mut error, &[0x60; 48])
            .unwrap();
        assert_eq!(classify(&error, &c), Inbound::Ignore);
        assert_eq!(
            classify(&udp6("ff0e::1".parse().unwrap(), 9, b"q"), &c),
            Inbound::Ignore
        );
    }

    #[test]
    fn udp_beyond_the_gateway_or_to_its_address_is_carried() {
        let c = config(true);
        let beyond: Ipv6Addr = "2001:db8::1".parse().unwrap();
        for dst in [beyond, gw6()] {
            let frame = udp6(dst, 123, b"time?");
            match classify(&frame, &c) {
                Inbound::Udp6 {
                    tuple,
                    src_mac,
                    payload,
                } => {
                    assert_eq!(tuple, (sb6(), 40053, dst, 123));
                    assert_eq!(src_mac, SB_MAC);
                    assert_eq!(&frame[payload.0..payload.1], b"time?");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tcp_and_pings_beyond_the_gateway_are_nat_and_advertisements_reach_the_stack() {
        let c = config(true);
        let beyond: Ipv6Addr = "2001:db8::1".parse().unwrap();
        for dst in [beyond, gw6()] {
            assert_eq!(
                classify(&tcp6_syn(dst), &c),
                Inbound::TcpSyn6 {
                    tuple: (sb6(), 40000, dst, 80),
                    src_mac: SB_MAC
                }
            );
            // Later segments of the flow go to smoltcp, which holds it.
            let mut ack = tcp6_syn(dst);
            ack[14 + 40 + 13] = 0x10;
            assert_eq!(classify(&ack, &c), Inbound::Stack);
        }
        // Pings beyond: through the host (pings of the gateway it answers itself).
        let ping = echo_request(beyond, b"abc");
        assert_eq!(
            classify(&ping, &c),
            Inbound::EchoOut6 {
                key: (sb6(), 0x4242, beyond),
                src_mac: SB_MAC,
                icmp: (54, ping.len())
            }
        );
        // A sandbox's Neighbour Advertisement to the gateway (smoltcp asked): the stack's.
        let mut na = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv6(sb6().octets(), gw6().octets(), 255)
            .icmpv6(Icmpv6Type::NeighborAdvertisement(
                etherparse::icmpv6::NeighborAdvertisementHeader {
                    router: false,
                    solicited: true,
                    r#override: true,
                },
            ))
            .write(&mut na, &sb6().octets())
            .unwrap();
        assert_eq!(classify(&na, &c), Inbound::Stack);
        na[14 + 7] = 64; // not from the link
        assert_eq!(classify(&na, &c), Inbound::Ignore);
    }

    #[test]
    fn an_ipv6_only_gateway_serves_ipv6_and_ignores_ipv4() {
        let mut c = config(true);
        c.ipv4 = None;
        assert!(matches!(
            classify(&neighbor_solicit(sb_local(), gw6()), &c),
            Inbound::NeighborSolicit { .. }
        ));
        assert!(matches!(
            classify(&tcp6_syn(gw6()), &c),
            Inbound::TcpSyn6 { .. }
        ));
        let mut udp4 = Vec::new();
        PacketBuilder::ethernet2(SB_MAC.0, GW_MAC.0)
            .ipv4([172, 18, 0, 2], [192, 0, 2, 1], 64)
            .udp(4000, 53)
            .write(&mut udp4, b"q")
            .unwrap();
        assert_eq!(classify(&udp4, &c), Inbound::Ignore, "no IPv4 NAT");
        // Positive control: the same datagram is carried where the gateway has IPv4.
        assert!(matches!(
            classify(&udp4, &config(true)),
            Inbound::Udp { .. }
        ));
    }

    #[test]
    fn a_gateway_without_ipv6_ignores_it() {
        let frames = [
            neighbor_solicit(sb_local(), gw6()),
            router_solicit(sb_local()),
            echo_request(gw6(), b"x"),
            udp6(gw6(), 53, b"q"),
            tcp6_syn("2001:db8::1".parse().unwrap()),
        ];
        for frame in &frames {
            assert_eq!(classify(frame, &config(false)), Inbound::Ignore);
            // Positive control: the same frame is the gateway's when it has IPv6.
            assert_ne!(classify(frame, &config(true)), Inbound::Ignore);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let c = config(true);
        let mut rng = crate::test_rng::XorShift(0x5eed_6666_0000_0001);
        let bases = [
            neighbor_solicit(sb_local(), gw6()),
            router_solicit(Ipv6Addr::UNSPECIFIED),
            echo_request(gw6(), b"abcdefgh"),
            udp6(gw6(), 53, b"payload"),
            udp6("2001:db8::1".parse().unwrap(), 123, b"payload"),
            tcp6_syn("2001:db8::1".parse().unwrap()),
        ];
        for round in 0..20_000 {
            let seed = rng.next();
            let base = &bases[round % bases.len()];
            let mut f = base.clone();
            f.truncate((seed as usize) % (base.len() + 1));
            if let Some(b) = f.get_mut((seed >> 20) as usize % base.len()) {
                *b = (seed >> 40) as u8;
            }
            match classify(&f, &c) {
                Inbound::Dns6 { payload: r, .. }
                | Inbound::Udp6 { payload: r, .. }
                | Inbound::Echo6 { icmp: r, .. }
                | Inbound::EchoOut6 { icmp: r, .. }
                | Inbound::Refuse6 { packet: r, .. } => {
                    assert!(r.0 <= r.1 && r.1 <= f.len());
                }
                _ => {}
            }
        }
    }
}
