//! The gateway's thread: reads frames from its switch port, decides which ones are for the
//! gateway (ARP for its address, IPv4 sent to its MAC, on a network with IPv6 its neighbour
//! and router discovery, ping and DNS), feeds them to smoltcp or the NAT tables, and moves data
//! between smoltcp sockets and host sockets. It answers IPv6 neighbour discovery and ping
//! itself (`ndp`), and advertises the network's prefix (`ra`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crossbeam_channel::Receiver;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use super::classify::{Inbound, classify};
use super::device::SwitchDevice;
use super::dns::{DnsAnswer, DnsPort, DnsServer};
use super::icmp_nat::IcmpNat;
use super::ndp;
use super::publish::{
    GatewayCommand, PortAllocator, Seen, TcpPublished, UdpPublished, keeps_source, tcp_timestamp,
};
use super::ra::RaTimer;
use super::tcp_nat::{FlowKey, SynVerdict, TcpNat};
use super::udp_nat::FlowKey6 as TcpTuple6;
use super::udp_nat::{FlowKey6, UdpNat, build_udp_frame, build_udp6_frame};
use super::{GatewayConfig, GatewayStats};
use crate::datapath::spin::Spin;
use crate::error::{Context, Error, Result};
use crate::wire::MacAddr;

const SWITCH: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_FLOW_TOKEN: usize = 2;
/// Longest the loop sleeps, so that idle UDP flows expire and stop is noticed.
const MAX_SLEEP: Duration = Duration::from_millis(500);

pub struct Engine {
    config: GatewayConfig,
    device: SwitchDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    poll: Poll,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    stats: Arc<GatewayStats>,
    tcp: TcpNat,
    tcp6: TcpNat<TcpTuple6>,
    udp: UdpNat,
    udp6: UdpNat<FlowKey6>,
    icmp: IcmpNat,
    icmp6: IcmpNat<super::icmp_nat::EchoKey6>,
    commands: Receiver<GatewayCommand>,
    tcp_published: HashMap<Token, TcpPublished>,
    udp_published: HashMap<Token, UdpPublished>,
    gateway_ports: PortAllocator,
    next_token: usize,
    epoch: std::time::Instant,
    /// The DNS server, for sandboxes' UDP queries to the gateway address (none in unit tests).
    dns: Option<(DnsPort, Receiver<DnsAnswer>)>,
    /// Reused for DNS replies: the message and its frame.
    dns_message: Vec<u8>,
    dns_frame: Vec<u8>,
    /// When to advertise the IPv6 prefix (None on a network without IPv6).
    ra: Option<RaTimer>,
    /// Reused for the IPv6 replies the gateway builds itself.
    v6_frame: Vec<u8>,
    icmp6_errors: ndp::ErrorLimit,
    dhcp: super::dhcp::Server,
}

type TcpTuple = FlowKey;

mod v6;

impl Engine {
    pub fn new(
        config: GatewayConfig,
        mut device: SwitchDevice,
        stop: Arc<AtomicBool>,
        stats: Arc<GatewayStats>,
        commands: Receiver<GatewayCommand>,
        dns: Option<&DnsServer>,
        leases: super::dhcp::Leases,
    ) -> Result<Engine> {
        let poll = Poll::new().context(|| "create gateway poll".into())?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).context(|| "create gateway waker".into())?);
        let raw = device.fd();
        poll.registry()
            .register(&mut SourceFd(&raw), SWITCH, Interest::READABLE)
            .context(|| "poll the gateway port".into())?;
        let epoch = std::time::Instant::now();
        let hw = HardwareAddress::Ethernet(EthernetAddress(config.mac.0));
        let mut iface = Interface::new(Config::new(hw), &mut device, SmolInstant::from_millis(0));
        iface.update_ip_addrs(|addrs| {
            if let Some(v4) = config.ipv4 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(v4.ip), v4.subnet.prefix));
            }
            // smoltcp terminates the sandboxes' TCP over IPv6 too, and sends its neighbour
            // solicitations from this address.
            if let Some(v6) = config.ipv6 {
                let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(v6.ip), v6.subnet.prefix));
            }
        });
        // Accept packets for any destination routed through the gateway itself: the
        // classifier below decides which ones reach the stack.
        iface.set_any_ip(true);
        if let Some(v4) = config.ipv4 {
            iface
                .routes_mut()
                .add_default_ipv4_route(v4.ip)
                .map_err(|_| Error::invalid("gateway route table full"))?;
        }
        let limits = config.limits;
        let dns = dns.map(|server| server.port(waker.clone()));
        let ra = config.ipv6.map(|_| RaTimer::new(std::time::Instant::now()));
        let dhcp = super::dhcp::Server::new(&config, leases, stats.dhcp.clone());
        Ok(Engine {
            config,
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            poll,
            waker,
            stop,
            stats,
            tcp: TcpNat::new(limits.tcp),
            tcp6: TcpNat::new(limits.tcp),
            udp: UdpNat::new(limits.udp),
            udp6: UdpNat::new(limits.udp),
            icmp: IcmpNat::default(),
            icmp6: IcmpNat::default(),
            commands,
            tcp_published: HashMap::new(),
            udp_published: HashMap::new(),
            gateway_ports: PortAllocator::default(),
            next_token: FIRST_FLOW_TOKEN,
            epoch,
            dns,
            dns_message: Vec::with_capacity(512),
            dns_frame: Vec::with_capacity(600),
            ra,
            v6_frame: Vec::with_capacity(crate::wire::MAX_FRAME_LEN),
            icmp6_errors: ndp::ErrorLimit::new(std::time::Instant::now()),
            dhcp,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    /// The gateway's IPv4 address, on the IPv4 paths (which a network without IPv4 never
    /// takes: `classify` gives them nothing).
    fn ip4(&self) -> Ipv4Addr {
        self.config.ipv4.map_or(Ipv4Addr::UNSPECIFIED, |v4| v4.ip)
    }

    fn now(&self) -> SmolInstant {
        SmolInstant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        // After a round with work, as the datapath workers do (`datapath/spin.rs`): a
        // sandbox's next packet of a short exchange (a connection's ACK, its request after the
        // handshake) usually comes within tens of microseconds, and catching it without
        // sleeping saves this thread's wake-up and the worker's in its write.
        let mut spin = Spin::new(self.config.spin);
        let mut worked = false;
        while !self.stop.load(Ordering::Relaxed) {
            let now = self.now();
            let sleep = self
                .iface
                .poll_delay(now, &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP)
                .min(self.ra_delay());
            let caught = worked && spin.spin_poll(&mut self.poll, &mut events);
            let slept_at = std::time::Instant::now();
            if !caught && let Err(e) = self.poll.poll(&mut events, Some(sleep)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!(
                    "tapnet: gateway of {}: poll failed: {e}",
                    self.config.network
                );
                return;
            }
            let came = !events.is_empty();
            if worked && came && !caught {
                spin.slept(slept_at.elapsed());
            }
            worked = came;
            let mut host_ready = Vec::new();
            for event in events.iter() {
                match event.token() {
                    SWITCH => {}
                    WAKER => self.handle_commands(),
                    token => host_ready.push(token),
                }
            }
            self.drain_switch();
            self.advertise();
            self.dns_answers();
            for token in host_ready {
                self.host_event(token);
            }
            self.settle();
            let registry = self.poll.registry();
            self.udp.expire(registry, self.config.udp_idle);
            self.udp6.expire(registry, self.config.udp_idle);
            self.icmp.expire(registry);
            self.icmp6.expire(registry);
            let mut peers = 0;
            for published in self.udp_published.values_mut() {
                published.expire(self.config.udp_idle);
                peers += published.peers();
            }
            self.stats
                .published_udp_peers
                .store(peers, Ordering::Relaxed);
            self.stats
                .tcp_flows
                .store(self.tcp.len() + self.tcp6.len(), Ordering::Relaxed);
            self.stats
                .udp_flows
                .store(self.udp.len() + self.udp6.len(), Ordering::Relaxed);
            let evicted = self.udp.evicted() + self.udp6.evicted();
            self.stats
                .udp_evicted
                .store(evicted as usize, Ordering::Relaxed);
        }
    }

    /// Let smoltcp and the NAT flows exchange data until nothing moves.
    fn settle(&mut self) {
        for _ in 0..64 {
            let now = self.now();
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            let moved = self.tcp.pump(&mut self.sockets);
            if !(self.tcp6.pump(&mut self.sockets) || moved) {
                break;
            }
        }
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.tcp.reap(self.poll.registry(), &mut self.sockets);
        self.tcp6.reap(self.poll.registry(), &mut self.sockets);
    }

    fn drain_switch(&mut self) {
        while let Some(len) = self.device.read_frame() {
            match classify(self.device.frame(len), &self.config) {
                Inbound::Stack => self.feed_stack(len),
                // A retransmitted SYN while the host side still connects: already held.
                Inbound::TcpSyn(tuple) if self.tcp.knows(&tuple) => {}
                Inbound::TcpSyn(tuple) => self.tcp_syn(tuple, len),
                Inbound::TcpSyn6 { tuple, .. } if self.tcp6.knows(&tuple) => {}
                Inbound::TcpSyn6 { tuple, src_mac } => self.tcp6_syn(tuple, src_mac, len),
                Inbound::Udp {
                    tuple,
                    src_mac,
                    payload,
                } => self.udp_out(tuple, src_mac, payload),
                Inbound::Echo { key, src_mac, icmp } => self.echo_out(key, src_mac, icmp, len),
                Inbound::EchoOut6 { key, src_mac, icmp } => self.echo6_out(key, src_mac, icmp, len),
                Inbound::NeighborSolicit {
                    src_mac,
                    src,
                    target,
                } => self.neighbor_advert(target, (src, src_mac)),
                Inbound::RouterSolicit { src_mac, src } => self.router_solicited(src, src_mac),
                Inbound::Echo6 {
                    src_mac,
                    src,
                    dst,
                    icmp,
                } => self.echo6(dst, (src, src_mac), icmp, len),
                Inbound::Dns6 {
                    src,
                    src_mac,
                    payload,
                } => self.dns_query(SocketAddr::V6(src), src_mac, payload),
                Inbound::Udp6 {
                    tuple,
                    src_mac,
                    payload,
                } => self.udp6_out(tuple, src_mac, payload),
                Inbound::Refuse6 {
                    src_mac,
                    src,
                    packet,
                } => self.refuse6((src, src_mac), packet, len),
                Inbound::Dhcp { src_mac, payload } => {
                    let request = &self.device.frame(len)[payload.0..payload.1];
                    if let Some(reply) = self.dhcp.handle(request, src_mac) {
                        self.device.send(reply);
                    }
                }
                Inbound::Ignore => {}
            }
        }
    }

    fn feed_stack(&mut self, len: usize) {
        self.device.queue_for_stack(len);
        let now = self.now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    /// Where the sandbox's packet for `dst` really goes: the host's loopback for the gateway
    /// address, the destination itself otherwise.
    fn target(&self, dst: Ipv4Addr, port: u16) -> SocketAddrV4 {
        self.target_for(dst, port, false)
    }

    /// DNS to the gateway address goes to the gateway's own server (UDP or TCP end).
    fn target_for(&self, dst: Ipv4Addr, port: u16, tcp: bool) -> SocketAddrV4 {
        if let Some((udp, tcp_end)) = self.config.dns
            && self.is_dns(dst, port)
        {
            return if tcp { tcp_end } else { udp };
        }
        if self.config.is_gateway(dst) {
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
        } else {
            SocketAddrV4::new(dst, port)
        }
    }

    fn is_dns(&self, dst: Ipv4Addr, port: u16) -> bool {
        self.config.is_dns(dst, port)
    }

    /// May a host socket go to `target`? The gateway's own DNS server always.
    fn allowed(&self, target: SocketAddrV4, dst: Ipv4Addr, port: u16) -> bool {
        self.is_dns(dst, port) || self.config.policy.allows(*target.ip())
    }

    fn tcp_syn(&mut self, tuple: TcpTuple, len: usize) {
        let dns = self.is_dns(tuple.2, tuple.3);
        if !dns && self.loopback_closed(self.config.is_gateway(tuple.2)) {
            // No listener of smoltcp's: it answers RST.
            self.feed_stack(len);
            return;
        }
        if !self.config.nat && !dns {
            // Internal network: not even the gateway address leads to the host.
            self.feed_stack(len);
            return;
        }
        let target = self.target_for(tuple.2, tuple.3, true);
        if !self.allowed(target, tuple.2, tuple.3) {
            self.feed_stack(len);
            return;
        }
        if !self.tcp.admits(tuple.0, self.tcp6.len()) {
            // At a cap: refuse (RST), as a full host would; the sandbox's other flows go on.
            self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            self.feed_stack(len);
            return;
        }
        let syn = self.device.frame(len).to_vec();
        let registry = self.poll.registry();
        match self
            .tcp
            .start(registry, &mut self.next_token, tuple, target.into(), &syn)
        {
            // Connected or refused already (the host's loopback): answer now, not after a
            // round through poll.
            Ok(token) => self.resolve_tcp(token),
            // Could not even start connecting: refuse (smoltcp answers the SYN with RST).
            Err(_) => self.feed_stack(len),
        }
    }

    /// Is this packet to the gateway address (`to_gateway`), and not for anything the gateway
    /// serves itself, to be refused because the network keeps the host's loopback closed?
    /// Counts the refusal.
    pub(super) fn loopback_closed(&self, to_gateway: bool) -> bool {
        let closed = to_gateway && !self.config.host_loopback;
        if closed {
            self.stats
                .host_loopback_refused
                .fetch_add(1, Ordering::Relaxed);
        }
        closed
    }

    /// Has the host socket of a held SYN connected, or failed? Then feed the SYN to smoltcp,
    /// which answers SYN-ACK (a socket listens now) or RST (none does).
    fn resolve_tcp(&mut self, token: Token) {
        let verdict = if self.tcp.owns(token) {
            self.tcp.resolve(token, &mut self.sockets)
        } else {
            self.tcp6.resolve(token, &mut self.sockets)
        };
        match verdict {
            Some(SynVerdict::Accept(syn)) | Some(SynVerdict::Refuse(syn)) => self.feed(&syn),
            None => {}
        }
    }

    fn feed(&mut self, frame: &[u8]) {
        let len = frame.len();
        self.device.load(frame);
        self.feed_stack(len);
    }

    fn handle_commands(&mut self) {
        while let Ok(command) = self.commands.try_recv() {
            let registry = self.poll.registry();
            match command {
                GatewayCommand::PublishTcp(target, listeners) => {
                    for listener in listeners {
                        let mut listener = mio::net::TcpListener::from_std(listener);
                        let token = Token(self.next_token);
                        self.next_token += 1;
                        if registry
                            .register(&mut listener, token, Interest::READABLE)
                            .is_ok()
                        {
                            self.tcp_published
                                .insert(token, TcpPublished { target, listener });
                        }
                    }
                }
                GatewayCommand::PublishUdp(target, sockets) => {
                    for socket in sockets {
                        let mut socket = mio::net::UdpSocket::from_std(socket);
                        let token = Token(self.next_token);
                        self.next_token += 1;
                        if registry
                            .register(&mut socket, token, Interest::READABLE)
                            .is_ok()
                        {
                            let max_peers = self.config.limits.published_udp_peers;
                            self.udp_published
                                .insert(token, UdpPublished::new(target, socket, max_peers));
                        }
                    }
                }
                GatewayCommand::Unpublish(id, done) => {
                    self.tcp_published.retain(|_, p| {
                        let keep = p.target.id != id;
                        if !keep {
                            let _ = registry.deregister(&mut p.listener);
                        }
                        keep
                    });
                    self.udp_published.retain(|_, p| {
                        let keep = p.target.id != id;
                        if !keep {
                            let _ = registry.deregister(&mut p.socket);
                        }
                        keep
                    });
                    let _ = done.send(());
                }
            }
        }
    }

    /// Connections arrived on a published TCP port: connect each into the sandbox, from the
    /// client's address where the sandbox can answer it (`keeps_source`), else from the
    /// gateway's.
    fn accept_published(&mut self, token: Token) {
        loop {
            let Some(published) = self.tcp_published.get(&token) else {
                return;
            };
            let target = published.target;
            let (stream, client) = match published.listener.accept() {
                Ok(accepted) => accepted,
                Err(_) => return,
            };
            let sandbox = target.for_client(client);
            let admitted = match sandbox {
                SocketAddr::V4(s) => self.tcp.admits(*s.ip(), self.tcp6.len()),
                SocketAddr::V6(s) => self.tcp6.admits(*s.ip(), self.tcp.len()),
            };
            if !admitted {
                // At a cap: the host client sees the connection close at once.
                self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let direct = keeps_source(client, sandbox, &self.config);
            match (sandbox, client) {
                (SocketAddr::V4(sandbox), SocketAddr::V4(client)) if direct => {
                    self.connect_published(sandbox, client, stream)
                }
                (SocketAddr::V6(sandbox), SocketAddr::V6(client)) if direct => {
                    self.connect_published6(sandbox, target.sandbox_mac, client, stream)
                }
                (SocketAddr::V4(sandbox), _) => {
                    let local = SocketAddrV4::new(self.ip4(), self.gateway_ports.allocate());
                    self.connect_published(sandbox, local, stream)
                }
                (SocketAddr::V6(sandbox), _) => {
                    let Some(v6) = self.config.ipv6 else {
                        continue;
                    };
                    let port = self.gateway_ports.allocate();
                    let local = SocketAddrV6::new(v6.ip, port, 0, 0);
                    self.connect_published6(sandbox, target.sandbox_mac, local, stream)
                }
            }
        }
    }

    /// Connect a published connection into the sandbox at `sandbox`, from `from` (the client,
    /// or the gateway's address and a port of its own). smoltcp accepts any destination
    /// (AnyIP), so the sandbox's answers to the client reach this socket. Should the flow's key
    /// be taken (the same client port to two host ports of one sandbox port, or a flow the
    /// sandbox opened to the client), it comes from the gateway instead.
    fn connect_published(
        &mut self,
        sandbox: SocketAddrV4,
        from: SocketAddrV4,
        stream: mio::net::TcpStream,
    ) {
        let mut key = (*sandbox.ip(), sandbox.port(), *from.ip(), from.port());
        if self.tcp.knows(&key) {
            key = (key.0, key.1, self.ip4(), self.gateway_ports.allocate());
        }
        let mut socket = self.tcp.socket();
        socket.set_tsval_generator(Some(tcp_timestamp));
        let remote = (IpAddress::Ipv4(key.0), key.1);
        let local = (IpAddress::Ipv4(key.2), key.3);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let registry = self.poll.registry();
        if self
            .tcp
            .adopt(registry, &mut self.next_token, key, stream, handle)
            .is_err()
        {
            self.sockets.remove(handle);
        }
    }

    /// Datagrams arrived on a published UDP port: pass each to the sandbox, from the sender's
    /// own address where the sandbox can answer it, else from the gateway's address of the
    /// sandbox's family and a gateway port that stands for the sender.
    fn receive_published(&mut self, token: Token) {
        let gateway_mac = self.config.mac;
        let gateway_ip = self.ip4();
        let gateway_ip6 = self.config.ipv6.map(|v6| v6.ip);
        let (datagram, frame) = self.udp.datagram_buffer();
        loop {
            let Some(published) = self.udp_published.get_mut(&token) else {
                return;
            };
            let (n, peer) = match published.socket.recv_from(datagram) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            let target = published.target;
            let sandbox = target.for_client(peer);
            let seen = match published.seen(peer) {
                Some(seen) => seen,
                None => {
                    // Seen directly unless another port of the same sandbox port already
                    // sees this peer so: the sandbox's answers could not tell them apart.
                    let clash = self
                        .udp_published
                        .iter()
                        .any(|(t, other)| *t != token && other.answers(sandbox, peer));
                    let direct = !clash && keeps_source(peer, sandbox, &self.config);
                    let ports = &mut self.gateway_ports;
                    match self.udp_published.get_mut(&token) {
                        Some(published) => published.add(peer, direct, &mut || ports.allocate()),
                        None => return,
                    }
                }
            };
            let macs = (gateway_mac, target.sandbox_mac);
            let built = match (sandbox, seen, peer, gateway_ip6) {
                (SocketAddr::V4(sandbox), Seen::Direct, SocketAddr::V4(from), _) => {
                    build_udp_frame(frame, macs, from, sandbox, &datagram[..n])
                }
                (SocketAddr::V6(sandbox), Seen::Direct, SocketAddr::V6(from), _) => {
                    let from = SocketAddrV6::new(*from.ip(), from.port(), 0, 0);
                    build_udp6_frame(frame, macs, from, sandbox, &datagram[..n])
                }
                (SocketAddr::V4(sandbox), Seen::Gateway(port), _, _) => {
                    let from = SocketAddrV4::new(gateway_ip, port);
                    build_udp_frame(frame, macs, from, sandbox, &datagram[..n])
                }
                (SocketAddr::V6(sandbox), Seen::Gateway(port), _, Some(ip6)) => {
                    let from = SocketAddrV6::new(ip6, port, 0, 0);
                    build_udp6_frame(frame, macs, from, sandbox, &datagram[..n])
                }
                _ => false,
            };
            if built {
                self.device.send(frame);
            }
        }
    }

    /// A sandbox's answer (from `from` to `to`, `payload` the byte range in the frame) to a
    /// datagram that came in on a published port: to a gateway port standing for a host peer
    /// (`to` is the gateway's address), or to a peer it sees directly. Sent out of the
    /// published port's host socket; false if it is no such answer.
    pub(super) fn reply_published(
        &mut self,
        (from, to): (SocketAddr, SocketAddr),
        to_gateway: bool,
        payload: (usize, usize),
    ) -> bool {
        let (start, end) = payload;
        for published in self.udp_published.values_mut() {
            let peer = if to_gateway {
                published.peer_of(to.port())
            } else {
                published.answers(from, to).then_some(to)
            };
            if let Some(peer) = peer {
                let _ = published.reply(peer, &self.device.frame(end)[start..end]);
                return true;
            }
        }
        false
    }

    fn host_event(&mut self, token: Token) {
        if self.tcp_published.contains_key(&token) {
            self.accept_published(token);
            return;
        }
        if self.udp_published.contains_key(&token) {
            self.receive_published(token);
            return;
        }
        if self.icmp.owns(token) {
            let mac = self.config.mac;
            let device = &mut self.device;
            self.icmp
                .inbound(token, mac, &mut |frame| device.send(frame));
            return;
        }
        if self.icmp6.owns(token) {
            let mac = self.config.mac;
            let device = &mut self.device;
            self.icmp6
                .inbound(token, mac, &mut |frame| device.send(frame));
            return;
        }
        if self.udp.owns(token) {
            let mac = self.config.mac;
            let device = &mut self.device;
            self.udp
                .inbound(token, mac, &mut |frame| device.send(frame));
            return;
        }
        if self.udp6.owns(token) {
            let mac = self.config.mac;
            let device = &mut self.device;
            self.udp6
                .inbound(token, mac, &mut |frame| device.send(frame));
            return;
        }
        if self.tcp.owns(token) || self.tcp6.owns(token) {
            self.resolve_tcp(token);
        }
    }

    fn echo_out(
        &mut self,
        key: (Ipv4Addr, u16, Ipv4Addr),
        src_mac: MacAddr,
        (start, end): (usize, usize),
        len: usize,
    ) {
        if !self.config.policy.allows(key.2) {
            return;
        }
        let registry = self.poll.registry();
        let icmp = &self.device.frame(len)[start..end];
        if let Err(e) = self
            .icmp
            .outbound(registry, &mut self.next_token, key, src_mac, icmp)
        {
            eprintln!(
                "tapnet: gateway of {}: ping {}: {e}",
                self.config.network, key.2
            );
        }
    }

    fn udp_out(&mut self, tuple: TcpTuple, src_mac: MacAddr, (start, end): (usize, usize)) {
        if !self.udp_published.is_empty() {
            let from = SocketAddr::V4(SocketAddrV4::new(tuple.0, tuple.1));
            let to = SocketAddr::V4(SocketAddrV4::new(tuple.2, tuple.3));
            let to_gateway = self.config.is_gateway(tuple.2);
            if self.reply_published((from, to), to_gateway, (start, end)) {
                return;
            }
        }
        if self.is_dns(tuple.2, tuple.3) && self.dns.is_some() {
            let sandbox = SocketAddr::V4(SocketAddrV4::new(tuple.0, tuple.1));
            self.dns_query(sandbox, src_mac, (start, end));
            return;
        }
        if self.loopback_closed(self.config.is_gateway(tuple.2)) {
            // No socket of smoltcp's on that port: it answers ICMP port unreachable.
            self.feed_stack(end);
            return;
        }
        let target = self.target(tuple.2, tuple.3);
        if !self.allowed(target, tuple.2, tuple.3) {
            return;
        }
        let registry = self.poll.registry();
        let payload = &self.device.frame(end)[start..end];
        if let Err(e) = self.udp.outbound(
            registry,
            &mut self.next_token,
            tuple,
            src_mac,
            target,
            payload,
        ) {
            eprintln!(
                "tapnet: gateway of {}: UDP to {target}: {e}",
                self.config.network
            );
        }
    }

    /// A sandbox's UDP query to the gateway's DNS (over IPv4 or IPv6): answered here, not
    /// through a NAT flow, so it holds no host socket and is counted in the DNS counters, not
    /// in `udp_flows`. A name the server forwards upstream is not a NAT flow either: the
    /// forwarders ask from their own sockets, bounded by their pool and queue, and count it as
    /// an upstream answer.
    fn dns_query(&mut self, sandbox: SocketAddr, src_mac: MacAddr, (start, end): (usize, usize)) {
        let Some((port, _)) = &self.dns else {
            return;
        };
        let query = &self.device.frame(end)[start..end];
        if port.query(query, sandbox, src_mac, &mut self.dns_message) {
            self.send_dns(sandbox, src_mac);
        }
    }

    /// Answers the forwarders have sent back since the last look.
    fn dns_answers(&mut self) {
        while let Some(answer) = self.dns.as_ref().and_then(|(_, back)| back.try_recv().ok()) {
            self.dns_message = answer.message;
            self.send_dns(answer.sandbox, answer.mac);
        }
    }

    /// Send `dns_message` to `sandbox` from the gateway address of its family, port 53.
    fn send_dns(&mut self, sandbox: SocketAddr, mac: MacAddr) {
        let macs = (self.config.mac, mac);
        let built = match sandbox {
            SocketAddr::V4(sandbox) => {
                let from = SocketAddrV4::new(self.ip4(), super::dns::DNS_PORT);
                build_udp_frame(&mut self.dns_frame, macs, from, sandbox, &self.dns_message)
            }
            SocketAddr::V6(sandbox) => {
                let Some(v6) = self.config.ipv6 else {
                    return;
                };
                let from = SocketAddrV6::new(v6.ip, super::dns::DNS_PORT, 0, 0);
                build_udp6_frame(&mut self.dns_frame, macs, from, sandbox, &self.dns_message)
            }
        };
        if built {
            self.device.send(&self.dns_frame);
        }
    }
}
