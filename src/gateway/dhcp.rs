//! The gateway's DHCPv4 server (RFC 2131): it hands each port of the network the address IPAM
//! gave it, and nothing else. The controller tells it which MAC has which address (a
//! [`LeaseTable`], replaced whole on every change); a MAC it does not know gets no answer, so
//! a station can only ever learn its own address (port security makes the Ethernet source its
//! MAC, and the client hardware address must be that MAC). Nothing is allocated from a pool,
//! so RELEASE and DECLINE free nothing: they are counted (DECLINE logged too).
//!
//! A client's message is read by [`request::ClientMessage`] (only what the server acts on);
//! replies are written with `dhcproto`. [`answer`] is a pure function of the request's bytes,
//! so that it can be tested on byte arrays and fuzzed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

mod request;
use request::{ClientKind, ClientMessage};

use super::GatewayConfig;
use super::inbound::Inbound;
use crate::wire::ipv4::PROTO_UDP;
use crate::wire::{ETH_HDR_LEN, Ethernet, Ipv4Packet, MacAddr, UdpDatagram};

/// Servers listen on 67, clients on 68 (RFC 2131 4.1).
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// A day: the address never changes while the port exists, and a client renews at half.
pub const LEASE_SECS: u32 = 86_400;
/// BOOTP relays and some clients drop messages shorter than this (RFC 1542 2.1).
const MIN_MESSAGE_LEN: usize = 300;

/// Which MAC gets which address: the network's ports, as the controller knows them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl LeaseTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The port with `mac` has `ip` (a later entry for the same MAC replaces it).
    pub fn add(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        self.by_mac.insert(mac, ip);
    }

    pub fn get(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.by_mac.get(&mac).copied()
    }

    /// The port with `mac` has no lease any more, if `ip` was still its address.
    pub fn remove(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        if self.get(mac) == Some(ip) {
            self.by_mac.remove(&mac);
        }
    }

    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }
}

/// The lease table a gateway's thread reads, which the controller replaces.
#[derive(Clone, Default)]
pub struct Leases(Arc<RwLock<Arc<LeaseTable>>>);

impl Leases {
    pub fn set(&self, table: LeaseTable) {
        // Only a whole table is ever stored, so a poisoned lock still holds a valid one.
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(table);
    }

    /// Change the table in force. A server thread still reading the one before keeps its
    /// copy (the table is copied only then).
    pub fn edit(&self, edit: impl FnOnce(&mut LeaseTable)) {
        let mut current = self.0.write().unwrap_or_else(|e| e.into_inner());
        edit(Arc::make_mut(&mut current));
    }

    /// The table in force.
    pub fn current(&self) -> Arc<LeaseTable> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The server's counters (`network inspect`, metrics).
#[derive(Default, Debug)]
pub struct DhcpStats {
    pub offers: AtomicU64,
    pub acks: AtomicU64,
    pub naks: AtomicU64,
    /// Requests from a MAC the controller does not know: not answered.
    pub unknown_clients: AtomicU64,
    pub releases: AtomicU64,
    pub declines: AtomicU64,
    /// Malformed, relayed, or for another server: not answered.
    pub ignored: AtomicU64,
}

impl DhcpStats {
    /// (name, value) of each counter, in a fixed order: the metrics' `kind` label.
    pub fn values(&self) -> [(&'static str, u64); 7] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("offer", get(&self.offers)),
            ("ack", get(&self.acks)),
            ("nak", get(&self.naks)),
            ("unknown_client", get(&self.unknown_clients)),
            ("release", get(&self.releases)),
            ("decline", get(&self.declines)),
            ("ignored", get(&self.ignored)),
        ]
    }
}

/// What the server tells every client of a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The gateway's address: server identifier and DNS server.
    pub server: Ipv4Addr,
    pub mask: Ipv4Addr,
    /// None on `--internal` networks: no way out, so no default route.
    pub router: Option<Ipv4Addr>,
    pub mtu: u16,
    pub lease_secs: u32,
    /// Domain name and search list; sandboxes' resolv.conf has none, so tapnet sends none.
    pub domain: Option<String>,
}

impl ServerConfig {
    /// The server of `config`'s gateway; none on a network without IPv4.
    pub fn of(config: &GatewayConfig) -> Option<ServerConfig> {
        let v4 = config.ipv4?;
        Some(ServerConfig {
            server: v4.ip,
            mask: Ipv4Addr::from(v4.subnet.mask()),
            router: config.nat.then_some(v4.ip),
            mtu: u16::try_from(config.mtu).unwrap_or(u16::MAX),
            lease_secs: LEASE_SECS,
            domain: None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Offer,
    Ack,
    Nak,
}

/// Where a reply goes (the message itself is in the caller's buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    pub kind: ReplyKind,
    pub to_mac: MacAddr,
    pub to_ip: Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    Released,
    Declined(Ipv4Addr),
    /// A client whose MAC the controller does not know.
    Unknown,
    Ignored,
}

/// The gateway's classifier hook: a client's message to a server (UDP 68 → 67) sent to the
/// gateway or broadcast, over IPv4 unfragmented; `None` for anything else.
pub fn classify(frame: &[u8], config: &GatewayConfig) -> Option<Inbound> {
    let v4 = config.ipv4?;
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.dst() != config.mac && eth.dst() != MacAddr::BROADCAST {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != PROTO_UDP
        || ip.is_fragment()
        || (ip.dst() != v4.ip && ip.dst() != Ipv4Addr::BROADCAST)
    {
        return None;
    }
    let udp = UdpDatagram::new_checked(ip.payload().ok()?).ok()?;
    if udp.src_port() != CLIENT_PORT || udp.dst_port() != SERVER_PORT {
        return None;
    }
    let (start, end) = udp.payload_range().ok()?;
    let at = ETH_HDR_LEN + ip.header_len();
    Some(Inbound::Dhcp {
        src_mac: eth.src(),
        payload: (at + start, at + end),
    })
}

/// Answer the client message `request` (a UDP payload) that `src_mac` sent: the reply's
/// message is written to `out` (cleared first).
pub fn answer(
    request: &[u8],
    src_mac: MacAddr,
    leases: &LeaseTable,
    server: &ServerConfig,
    out: &mut Vec<u8>,
) -> Outcome {
    out.clear();
    let Some(msg) = ClientMessage::parse(request) else {
        return Outcome::Ignored;
    };
    // Only a station speaking for itself: the client hardware address is its Ethernet source.
    // Relayed requests would come from another network: tapnet's are all on the link.
    if msg.chaddr != src_mac || msg.giaddr != Ipv4Addr::UNSPECIFIED {
        return Outcome::Ignored;
    }
    let Some(ip) = leases.get(msg.chaddr) else {
        return Outcome::Unknown;
    };
    let (server_id, requested, ciaddr) = (msg.server_id, msg.requested, msg.ciaddr);
    match msg.kind {
        ClientKind::Discover => reply(&msg, server, ReplyKind::Offer, Some(ip), out),
        ClientKind::Request => {
            // SELECTING another server's offer: not ours to answer (RFC 2131 4.3.2).
            if server_id.is_some_and(|id| id != server.server) {
                return Outcome::Ignored;
            }
            // SELECTING and INIT-REBOOT name the address in option 50, RENEWING and
            // REBINDING in ciaddr.
            let asked = requested.unwrap_or(ciaddr);
            let kind = if asked == ip {
                ReplyKind::Ack
            } else {
                ReplyKind::Nak
            };
            reply(&msg, server, kind, Some(ip), out)
        }
        ClientKind::Inform => reply(&msg, server, ReplyKind::Ack, None, out),
        ClientKind::Release if server_id.is_none_or(|id| id == server.server) => Outcome::Released,
        ClientKind::Decline if server_id.is_none_or(|id| id == server.server) => {
            Outcome::Declined(requested.unwrap_or(Ipv4Addr::UNSPECIFIED))
        }
        _ => Outcome::Ignored,
    }
}

/// Build the reply of `kind` to `msg` into `out`; `lease` is the client's address (none for
/// INFORM's ACK, which carries only the configuration).
fn reply(
    msg: &ClientMessage,
    server: &ServerConfig,
    kind: ReplyKind,
    lease: Option<Ipv4Addr>,
    out: &mut Vec<u8>,
) -> Outcome {
    let mut r = Message::default();
    r.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(msg.xid)
        .set_flags(Flags::new(msg.flags))
        .set_chaddr(&msg.chaddr.0);
    let opts = r.opts_mut();
    opts.insert(DhcpOption::MessageType(match kind {
        ReplyKind::Offer => MessageType::Offer,
        ReplyKind::Ack => MessageType::Ack,
        ReplyKind::Nak => MessageType::Nak,
    }));
    opts.insert(DhcpOption::ServerIdentifier(server.server));
    if kind != ReplyKind::Nak {
        if lease.is_some() {
            let secs = server.lease_secs;
            opts.insert(DhcpOption::AddressLeaseTime(secs));
            opts.insert(DhcpOption::Renewal(secs / 2));
            opts.insert(DhcpOption::Rebinding(secs / 8 * 7));
        }
        opts.insert(DhcpOption::SubnetMask(server.mask));
        if let Some(router) = server.router {
            opts.insert(DhcpOption::Router(vec![router]));
        }
        opts.insert(DhcpOption::DomainNameServer(vec![server.server]));
        opts.insert(DhcpOption::InterfaceMtu(server.mtu));
        if let Some(domain) = &server.domain {
            opts.insert(DhcpOption::DomainName(domain.clone()));
        }
    }
    let ciaddr = msg.ciaddr;
    match (kind, lease) {
        (ReplyKind::Nak, _) => {}
        (_, Some(ip)) => {
            r.set_yiaddr(ip);
            // A bound client (RENEWING) keeps ciaddr; one that asks for an address has none.
            r.set_ciaddr(ciaddr);
        }
        (_, None) => {
            r.set_ciaddr(ciaddr);
        }
    }
    if r.encode(&mut Encoder::new(out)).is_err() {
        out.clear();
        return Outcome::Ignored;
    }
    if out.len() < MIN_MESSAGE_LEN {
        out.resize(MIN_MESSAGE_LEN, 0);
    }
    // RFC 2131 4.1: NAK always broadcast; otherwise broadcast when the client asks for it
    // or has no address to receive at, else unicast to its address and MAC.
    let broadcast = kind == ReplyKind::Nak
        || msg.wants_broadcast()
        || ciaddr == Ipv4Addr::UNSPECIFIED
        || lease.is_some_and(|ip| ip != ciaddr);
    let (to_mac, to_ip) = if broadcast {
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
    } else {
        (msg.chaddr, ciaddr)
    };
    Outcome::Reply(Reply {
        kind,
        to_mac,
        to_ip,
    })
}

/// The server as a gateway's thread runs it: the lease table the controller hands over, the
/// counters, and reused buffers.
pub(crate) struct Server {
    config: Option<ServerConfig>,
    network: String,
    gateway_mac: MacAddr,
    leases: Leases,
    stats: Arc<DhcpStats>,
    message: Vec<u8>,
    frame: Vec<u8>,
}

impl Server {
    pub(crate) fn new(config: &GatewayConfig, leases: Leases, stats: Arc<DhcpStats>) -> Server {
        Server {
            config: ServerConfig::of(config),
            network: config.network.clone(),
            gateway_mac: config.mac,
            leases,
            stats,
            message: Vec::with_capacity(MIN_MESSAGE_LEN + 64),
            frame: Vec::with_capacity(crate::wire::MAX_FRAME_LEN),
        }
    }

    /// Answer `request` from `src_mac`: the reply's frame (UDP 67 → 68 from the gateway), if
    /// there is one.
    pub(crate) fn handle(&mut self, request: &[u8], src_mac: MacAddr) -> Option<&[u8]> {
        let config = self.config.as_ref()?;
        let leases = self.leases.current();
        let outcome = answer(request, src_mac, &leases, config, &mut self.message);
        let count = |c: &AtomicU64| {
            c.fetch_add(1, Ordering::Relaxed);
        };
        let reply = match outcome {
            Outcome::Reply(reply) => reply,
            Outcome::Released => {
                count(&self.stats.releases);
                return None;
            }
            Outcome::Declined(ip) => {
                count(&self.stats.declines);
                eprintln!(
                    "tapnet: gateway of {}: DHCP client {src_mac} declined address {ip} (in use \
                     by another station on the link?)",
                    self.network
                );
                return None;
            }
            Outcome::Unknown => {
                count(&self.stats.unknown_clients);
                return None;
            }
            Outcome::Ignored => {
                count(&self.stats.ignored);
                return None;
            }
        };
        count(match reply.kind {
            ReplyKind::Offer => &self.stats.offers,
            ReplyKind::Ack => &self.stats.acks,
            ReplyKind::Nak => &self.stats.naks,
        });
        let from = SocketAddrV4::new(config.server, SERVER_PORT);
        let to = SocketAddrV4::new(reply.to_ip, CLIENT_PORT);
        let macs = (self.gateway_mac, reply.to_mac);
        super::udp_nat::build_udp_frame(&mut self.frame, macs, from, to, &self.message)
            .then_some(&self.frame[..])
    }
}

/// Fuzz body: any bytes as a client's message, from a known and an unknown MAC; the answer
/// never panics and never names an address other than the client's.
pub fn answer_arbitrary(data: &[u8]) {
    let mac = MacAddr(
        data.get(28..34)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 6]),
    );
    let ip = Ipv4Addr::new(10, 0, 0, 2);
    let mut leases = LeaseTable::new();
    leases.add(mac, ip);
    let server = ServerConfig {
        server: Ipv4Addr::new(10, 0, 0, 1),
        mask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 0, 0, 1)),
        mtu: 1500,
        lease_secs: LEASE_SECS,
        domain: None,
    };
    let mut out = Vec::new();
    if let Outcome::Reply(r) = answer(data, mac, &leases, &server, &mut out) {
        let reply = Message::decode(&mut Decoder::new(&out));
        assert!(reply.is_ok(), "a reply that does not decode");
        if let Ok(m) = reply {
            assert!(m.yiaddr() == ip || m.yiaddr().is_unspecified());
            assert!(r.to_ip == ip || r.to_ip == Ipv4Addr::BROADCAST || r.to_ip == m.ciaddr());
        }
    }
    let other = MacAddr([2, 0, 0, 0, 0, 9]);
    let outcome = answer(data, other, &LeaseTable::new(), &server, &mut out);
    assert!(!matches!(outcome, Outcome::Reply(_)));
}

/// A message to the server, for tests: `kind` from `mac` with options `opts`.
#[cfg(test)]
pub(crate) fn client_message(
    kind: MessageType,
    mac: MacAddr,
    ciaddr: Ipv4Addr,
    opts: &[DhcpOption],
    broadcast: bool,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0x1234_5678,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    if broadcast {
        m.set_flags(dhcproto::v4::Flags::default().set_broadcast());
    }
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o.clone());
    }
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

#[cfg(test)]
mod tests;
