//! The server's answers, on byte arrays.

use super::request::{HEADER_LEN, MAGIC};
use super::*;
use dhcproto::v4::MessageType as T;
use dhcproto::v4::OptionCode;
use etherparse::PacketBuilder;

const GW: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 1);
const IP: Ipv4Addr = Ipv4Addr::new(172, 18, 0, 5);
const MAC: MacAddr = MacAddr([2, 0x42, 172, 18, 0, 5]);

fn server(router: bool) -> ServerConfig {
    ServerConfig {
        server: GW,
        mask: Ipv4Addr::new(255, 255, 0, 0),
        router: router.then_some(GW),
        mtu: 1400,
        lease_secs: LEASE_SECS,
        domain: None,
    }
}

fn leases() -> LeaseTable {
    let mut t = LeaseTable::new();
    t.add(MAC, IP);
    t.add(
        MacAddr([2, 0x42, 172, 18, 0, 6]),
        Ipv4Addr::new(172, 18, 0, 6),
    );
    t
}

fn ask(request: &[u8], router: bool) -> (Outcome, Option<Message>) {
    let mut out = Vec::new();
    let outcome = answer(request, MAC, &leases(), &server(router), &mut out);
    let reply = (!out.is_empty()).then(|| Message::decode(&mut Decoder::new(&out)).unwrap());
    if !out.is_empty() {
        assert!(out.len() >= MIN_MESSAGE_LEN);
    }
    (outcome, reply)
}

fn opt(m: &Message, code: OptionCode) -> Option<DhcpOption> {
    m.opts().get(code).cloned()
}

#[test]
fn discover_gets_an_offer_of_the_ports_own_address_and_the_network_configuration() {
    let discover = client_message(T::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    let (outcome, reply) = ask(&discover, true);
    assert_eq!(
        outcome,
        Outcome::Reply(Reply {
            kind: ReplyKind::Offer,
            to_mac: MacAddr::BROADCAST,
            to_ip: Ipv4Addr::BROADCAST,
        }),
        "no address yet: broadcast"
    );
    let m = reply.unwrap();
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0x1234_5678);
    assert_eq!(m.yiaddr(), IP);
    assert_eq!(m.chaddr(), &MAC.0);
    assert_eq!(m.opts().msg_type(), Some(T::Offer));
    assert_eq!(
        opt(&m, OptionCode::ServerIdentifier),
        Some(DhcpOption::ServerIdentifier(GW))
    );
    assert_eq!(
        opt(&m, OptionCode::SubnetMask),
        Some(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 0, 0)))
    );
    assert_eq!(
        opt(&m, OptionCode::Router),
        Some(DhcpOption::Router(vec![GW]))
    );
    assert_eq!(
        opt(&m, OptionCode::DomainNameServer),
        Some(DhcpOption::DomainNameServer(vec![GW]))
    );
    assert_eq!(
        opt(&m, OptionCode::InterfaceMtu),
        Some(DhcpOption::InterfaceMtu(1400))
    );
    assert_eq!(
        opt(&m, OptionCode::AddressLeaseTime),
        Some(DhcpOption::AddressLeaseTime(86_400))
    );
    assert_eq!(
        opt(&m, OptionCode::Renewal),
        Some(DhcpOption::Renewal(43_200))
    );
    assert_eq!(
        opt(&m, OptionCode::Rebinding),
        Some(DhcpOption::Rebinding(75_600))
    );
    assert_eq!(opt(&m, OptionCode::DomainName), None);
    // Internal network: no default route.
    let (_, internal) = ask(&discover, false);
    assert_eq!(opt(&internal.unwrap(), OptionCode::Router), None);
}

#[test]
fn request_for_the_offered_address_is_acked_and_for_another_nacked() {
    let select = |requested: Ipv4Addr, server_id: Ipv4Addr| {
        client_message(
            T::Request,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            &[
                DhcpOption::RequestedIpAddress(requested),
                DhcpOption::ServerIdentifier(server_id),
            ],
            false,
        )
    };
    let (outcome, reply) = ask(&select(IP, GW), true);
    assert!(matches!(
        outcome,
        Outcome::Reply(Reply {
            kind: ReplyKind::Ack,
            ..
        })
    ));
    let m = reply.unwrap();
    assert_eq!(m.opts().msg_type(), Some(T::Ack));
    assert_eq!(m.yiaddr(), IP);
    // The neighbour's address: refused, broadcast, no address in it.
    let (outcome, reply) = ask(&select(Ipv4Addr::new(172, 18, 0, 6), GW), true);
    assert_eq!(
        outcome,
        Outcome::Reply(Reply {
            kind: ReplyKind::Nak,
            to_mac: MacAddr::BROADCAST,
            to_ip: Ipv4Addr::BROADCAST,
        })
    );
    let m = reply.unwrap();
    assert_eq!(m.opts().msg_type(), Some(T::Nak));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(&m, OptionCode::Router), None);
    // Selecting another server's offer: silence.
    let (outcome, reply) = ask(&select(IP, Ipv4Addr::new(172, 18, 0, 9)), true);
    assert_eq!(outcome, Outcome::Ignored);
    assert!(reply.is_none());
}

#[test]
fn a_bound_clients_renewal_is_acked_by_unicast() {
    let renew = client_message(T::Request, MAC, IP, &[], false);
    let (outcome, reply) = ask(&renew, true);
    assert_eq!(
        outcome,
        Outcome::Reply(Reply {
            kind: ReplyKind::Ack,
            to_mac: MAC,
            to_ip: IP,
        })
    );
    let m = reply.unwrap();
    assert_eq!((m.ciaddr(), m.yiaddr()), (IP, IP));
    // Renewing another address: NAK.
    let wrong = client_message(T::Request, MAC, Ipv4Addr::new(172, 18, 0, 7), &[], false);
    assert!(matches!(
        ask(&wrong, true).0,
        Outcome::Reply(Reply {
            kind: ReplyKind::Nak,
            ..
        })
    ));
    // The broadcast flag wins.
    let flagged = client_message(T::Request, MAC, IP, &[], true);
    assert!(matches!(
        ask(&flagged, true).0,
        Outcome::Reply(Reply {
            to_mac: MacAddr::BROADCAST,
            ..
        })
    ));
}

#[test]
fn inform_gets_the_configuration_without_a_lease() {
    let inform = client_message(T::Inform, MAC, IP, &[], false);
    let (outcome, reply) = ask(&inform, true);
    assert!(matches!(
        outcome,
        Outcome::Reply(Reply {
            kind: ReplyKind::Ack,
            to_ip: IP,
            ..
        })
    ));
    let m = reply.unwrap();
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(opt(&m, OptionCode::AddressLeaseTime), None);
    assert_eq!(
        opt(&m, OptionCode::DomainNameServer),
        Some(DhcpOption::DomainNameServer(vec![GW]))
    );
}

#[test]
fn unknown_macs_and_foreign_hardware_addresses_get_nothing() {
    let stranger = MacAddr([2, 0x42, 172, 18, 0, 99]);
    let discover = client_message(T::Discover, stranger, Ipv4Addr::UNSPECIFIED, &[], false);
    let mut out = Vec::new();
    assert_eq!(
        answer(&discover, stranger, &leases(), &server(true), &mut out),
        Outcome::Unknown
    );
    assert!(out.is_empty());
    // A known station asking for its neighbour's address (chaddr not its own MAC): ignored.
    let neighbours = client_message(
        T::Discover,
        MacAddr([2, 0x42, 172, 18, 0, 6]),
        Ipv4Addr::UNSPECIFIED,
        &[],
        false,
    );
    assert_eq!(ask(&neighbours, true).0, Outcome::Ignored);
    // Relayed, or a server's message: ignored.
    let mut relayed = client_message(T::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    relayed[24..28].copy_from_slice(&[10, 0, 0, 1]);
    assert_eq!(ask(&relayed, true).0, Outcome::Ignored);
    let mut reply = client_message(T::Offer, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    reply[0] = 2;
    assert_eq!(ask(&reply, true).0, Outcome::Ignored);
    // hlen beyond 16 (dhcproto would slice past chaddr): ignored, no panic.
    let mut long = client_message(T::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    long[2] = 200;
    assert_eq!(ask(&long, true).0, Outcome::Ignored);
}

/// The options the fuzz target's crash held (dhcproto's decoder panicked on an empty client
/// FQDN in a debug build): skipped unread, the DISCOVER is answered.
#[test]
fn options_the_server_does_not_act_on_are_skipped_unread() {
    let mut discover = client_message(T::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    discover.truncate(HEADER_LEN + MAGIC.len());
    discover.extend_from_slice(&[53, 1, 1, 81, 0, 121, 1, 0, 255]);
    let (outcome, reply) = ask(&discover, true);
    assert!(matches!(outcome, Outcome::Reply(r) if r.kind == ReplyKind::Offer));
    assert_eq!(reply.map(|m| m.yiaddr()), Some(IP));
    // The message type concatenated with itself (RFC 3396) is two bytes long: ignored.
    let mut twice = discover[..HEADER_LEN + MAGIC.len()].to_vec();
    twice.extend_from_slice(&[53, 1, 1, 53, 1, 1, 255]);
    assert_eq!(ask(&twice, true), (Outcome::Ignored, None));
}

#[test]
fn release_and_decline_are_counted_not_answered() {
    let release = client_message(
        T::Release,
        MAC,
        IP,
        &[DhcpOption::ServerIdentifier(GW)],
        false,
    );
    assert_eq!(ask(&release, true), (Outcome::Released, None));
    let decline = client_message(
        T::Decline,
        MAC,
        Ipv4Addr::UNSPECIFIED,
        &[
            DhcpOption::RequestedIpAddress(IP),
            DhcpOption::ServerIdentifier(GW),
        ],
        false,
    );
    assert_eq!(ask(&decline, true), (Outcome::Declined(IP), None));
}

fn frame(dst_mac: MacAddr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC.0, dst_mac.0)
        .ipv4([0, 0, 0, 0], dst.octets(), 64)
        .udp(sport, dport)
        .write(&mut out, payload)
        .unwrap();
    out
}

#[test]
fn the_classifier_takes_client_messages_broadcast_or_to_the_gateway() {
    let c = crate::gateway::classify_v6::tests::config(false);
    let gw_mac = c.mac;
    let gw = c.ipv4.unwrap().ip;
    let f = frame(MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 68, 67, b"boot");
    match crate::gateway::classify::classify(&f, &c) {
        Inbound::Dhcp { src_mac, payload } => {
            assert_eq!(src_mac, MAC);
            assert_eq!(&f[payload.0..payload.1], b"boot");
        }
        other => panic!("{other:?}"),
    }
    let unicast = frame(gw_mac, gw, 68, 67, b"renew");
    assert!(matches!(
        crate::gateway::classify::classify(&unicast, &c),
        Inbound::Dhcp { .. }
    ));
    // A server's message, other ports, another destination: not the server's business.
    for f in [
        frame(MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 67, 68, b"x"),
        frame(MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 1068, 67, b"x"),
        frame(MacAddr::BROADCAST, Ipv4Addr::new(10, 9, 9, 9), 68, 67, b"x"),
        frame(MacAddr([2, 0, 0, 0, 0, 7]), gw, 68, 67, b"x"),
    ] {
        assert!(!matches!(
            crate::gateway::classify::classify(&f, &c),
            Inbound::Dhcp { .. }
        ));
    }
    // IPv6-only: no DHCPv4.
    let mut v6only = c.clone();
    v6only.ipv4 = None;
    assert_eq!(
        crate::gateway::classify::classify(&f, &v6only),
        Inbound::Ignore
    );
}

#[test]
fn the_server_builds_a_udp_frame_from_the_gateway_and_counts() {
    let c = crate::gateway::classify_v6::tests::config(false);
    let leases = Leases::default();
    let mut table = LeaseTable::new();
    table.add(MAC, IP);
    leases.set(table);
    let stats = Arc::new(DhcpStats::default());
    let mut server = Server::new(&c, leases.clone(), stats.clone());
    let discover = client_message(T::Discover, MAC, Ipv4Addr::UNSPECIFIED, &[], false);
    let reply = server.handle(&discover, MAC).unwrap().to_vec();
    let p = etherparse::SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
        panic!("not Ethernet")
    };
    assert_eq!(eth.source(), c.mac.0);
    assert_eq!(eth.destination(), [0xff; 6]);
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().source_addr(), c.ipv4.unwrap().ip);
    assert_eq!(ip.header().destination_addr(), Ipv4Addr::BROADCAST);
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum());
    let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
        panic!("not UDP")
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
    let expect = udp
        .to_header()
        .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
        .unwrap();
    assert_eq!(udp.checksum(), expect);
    let m = Message::decode(&mut Decoder::new(udp.payload())).unwrap();
    assert_eq!(m.yiaddr(), IP);
    assert_eq!(stats.offers.load(Ordering::Relaxed), 1);
    // An unknown MAC, then the table emptied: counted, not answered.
    let stranger = MacAddr([2, 0, 0, 0, 0, 1]);
    let d2 = client_message(T::Discover, stranger, Ipv4Addr::UNSPECIFIED, &[], false);
    assert!(server.handle(&d2, stranger).is_none());
    leases.set(LeaseTable::new());
    assert!(server.handle(&discover, MAC).is_none());
    assert_eq!(stats.unknown_clients.load(Ordering::Relaxed), 2);
}

#[test]
fn arbitrary_bytes_never_panic() {
    let base = client_message(
        T::Request,
        MAC,
        Ipv4Addr::UNSPECIFIED,
        &[DhcpOption::RequestedIpAddress(IP)],
        false,
    );
    let mut rng = crate::test_rng::XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let seed = rng.next();
        let mut m = base.clone();
        m.truncate((seed as usize) % (base.len() + 1));
        for k in 0..3 {
            if let Some(b) = m.get_mut((seed >> (8 + 12 * k)) as usize % base.len()) {
                *b = (seed >> (40 + 8 * k)) as u8;
            }
        }
        answer_arbitrary(&m);
    }
}
