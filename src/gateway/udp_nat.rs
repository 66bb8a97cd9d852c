//! Outbound UDP through host sockets: each (sandbox address, destination) pair gets a connected
//! host socket; datagrams that come back are wrapped in Ethernet/IP/UDP and sent to the
//! sandbox as if from the destination it addressed. Idle flows expire. One table per address
//! family (`UdpNat<FlowKey>`, `UdpNat<FlowKey6>`).
//!
//! Each flow is a host socket (an fd), so flows are capped per sandbox and per gateway
//! (`FlowLimits`): a new flow that would pass a cap evicts the flow idle longest, of the same
//! sandbox when it is the sandbox's cap, of any sandbox when it is the gateway's. A resolver
//! that uses a new source port per query thus holds at most its cap of fds, whatever its rate.

use std::hash::Hash;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::flow_table::{FlowLimits, FlowTable, SandboxKey};
use crate::wire::MacAddr;

/// (sandbox ip, sandbox port, destination ip, destination port) as the sandbox sent it.
pub type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);
/// [`FlowKey`] over IPv6.
pub type FlowKey6 = (Ipv6Addr, u16, Ipv6Addr, u16);

/// A UDP flow's key: the sandbox's end and the destination it addressed.
pub trait UdpKey: Copy + Eq + Hash + SandboxKey {
    fn ends(&self) -> (SocketAddr, SocketAddr);
}

impl UdpKey for FlowKey {
    fn ends(&self) -> (SocketAddr, SocketAddr) {
        let sandbox = SocketAddrV4::new(self.0, self.1);
        (sandbox.into(), SocketAddrV4::new(self.2, self.3).into())
    }
}

impl UdpKey for FlowKey6 {
    fn ends(&self) -> (SocketAddr, SocketAddr) {
        let sandbox = SocketAddrV6::new(self.0, self.1, 0, 0);
        (
            sandbox.into(),
            SocketAddrV6::new(self.2, self.3, 0, 0).into(),
        )
    }
}

struct Flow {
    sandbox_mac: MacAddr,
    socket: UdpSocket,
    last_used: Instant,
}

/// Default caps: a sandbox's flows, and all flows of one gateway.
pub const DEFAULT_LIMITS: FlowLimits = FlowLimits {
    per_sandbox: 256,
    per_gateway: 1024,
};

pub struct UdpNat<K = FlowKey> {
    flows: FlowTable<K, Flow>,
    limits: FlowLimits,
    /// Flows evicted to make room under a cap.
    evicted: u64,
    /// A reused datagram buffer and frame buffer: nothing allocated per datagram.
    datagram: Box<[u8]>,
    frame: Vec<u8>,
}

impl<K: UdpKey> Default for UdpNat<K> {
    fn default() -> Self {
        UdpNat::new(DEFAULT_LIMITS)
    }
}

impl<K: UdpKey> UdpNat<K> {
    pub fn new(limits: FlowLimits) -> Self {
        UdpNat {
            flows: FlowTable::default(),
            limits,
            evicted: 0,
            datagram: vec![0u8; 65536].into_boxed_slice(),
            frame: Vec::with_capacity(65536 + 64),
        }
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Flows of the sandbox at `ip`.
    #[cfg(test)]
    pub fn count_of(&self, ip: Ipv4Addr) -> usize {
        self.flows.count_of(ip)
    }

    /// Make room for one more flow of `sandbox`: evict the flow idle longest, of that sandbox
    /// when it is at its cap, of any when the gateway is.
    fn make_room(&mut self, registry: &Registry, sandbox: std::net::IpAddr) {
        for mut flow in self.flows.evict_for(sandbox, self.limits, |f| f.last_used) {
            let _ = registry.deregister(&mut flow.socket);
            self.evicted += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn owns(&self, token: Token) -> bool {
        self.flows.owns(token)
    }

    /// Send a sandbox's datagram to `target` (where the destination really is).
    #[allow(clippy::too_many_arguments)]
    pub fn outbound(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: K,
        sandbox_mac: MacAddr,
        target: impl Into<SocketAddr>,
        payload: &[u8],
    ) -> io::Result<()> {
        let target = target.into();
        let token = match self.flows.token_of(&key) {
            Some(t) => t,
            None => {
                self.make_room(registry, key.sandbox());
                let bind: SocketAddr = match (target.ip().is_loopback(), target.is_ipv4()) {
                    (true, true) => (Ipv4Addr::LOCALHOST, 0).into(),
                    (false, true) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    (true, false) => (Ipv6Addr::LOCALHOST, 0).into(),
                    (false, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let mut socket = UdpSocket::bind(bind)?;
                socket.connect(target)?;
                let token = Token(*next_token);
                *next_token += 1;
                registry.register(&mut socket, token, Interest::READABLE)?;
                self.flows.insert(
                    token,
                    key,
                    Flow {
                        sandbox_mac,
                        socket,
                        last_used: Instant::now(),
                    },
                );
                token
            }
        };
        if let Some((_, flow)) = self.flows.get_mut(token) {
            flow.last_used = Instant::now();
            flow.sandbox_mac = sandbox_mac;
            // A full host buffer drops the datagram, as UDP may.
            let _ = flow.socket.send(payload);
        }
        Ok(())
    }

    /// Datagrams arrived on a flow's host socket: hand each to `send` as a frame for the sandbox.
    pub fn inbound(&mut self, token: Token, gateway_mac: MacAddr, send: &mut dyn FnMut(&[u8])) {
        let Some((key, flow)) = self.flows.get_mut(token) else {
            return;
        };
        let (to, from) = key.ends();
        loop {
            let n = match flow.socket.recv(&mut self.datagram) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or an ICMP error from the host side (refused): nothing to deliver.
                Err(_) => return,
            };
            flow.last_used = Instant::now();
            let macs = (gateway_mac, flow.sandbox_mac);
            let datagram = &self.datagram[..n];
            let built = match (from, to) {
                (SocketAddr::V4(from), SocketAddr::V4(to)) => {
                    build_udp_frame(&mut self.frame, macs, from, to, datagram)
                }
                (SocketAddr::V6(from), SocketAddr::V6(to)) => {
                    build_udp6_frame(&mut self.frame, macs, from, to, datagram)
                }
                _ => false,
            };
            if built {
                send(&self.frame);
            }
        }
    }

    pub fn datagram_buffer(&mut self) -> (&mut [u8], &mut Vec<u8>) {
        (&mut self.datagram, &mut self.frame)
    }

    /// Forget flows idle for longer than `idle`; returns how many went.
    pub fn expire(&mut self, registry: &Registry, idle: Duration) -> usize {
        let now = Instant::now();
        let mut stale = self
            .flows
            .remove_where(|f| now.duration_since(f.last_used) > idle);
        for (_, flow) in stale.iter_mut() {
            let _ = registry.deregister(&mut flow.socket);
        }
        stale.len()
    }
}

/// Build an Ethernet/IPv4/UDP frame into `out` (reused); false if it cannot be built.
pub fn build_udp_frame(
    out: &mut Vec<u8>,
    (src_mac, dst_mac): (MacAddr, MacAddr),
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> bool {
    out.clear();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port())
        .write(out, payload)
        .is_ok()
}

/// [`build_udp_frame`] over IPv6.
pub fn build_udp6_frame(
    out: &mut Vec<u8>,
    (src_mac, dst_mac): (MacAddr, MacAddr),
    from: SocketAddrV6,
    to: SocketAddrV6,
    payload: &[u8],
) -> bool {
    out.clear();
    PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv6(from.ip().octets(), to.ip().octets(), 64)
        .udp(from.port(), to.port())
        .write(out, payload)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    use mio::Poll;

    #[test]
    fn a_flow_carries_datagrams_both_ways_and_expires() {
        let poll = Poll::new().unwrap();
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_addr = match echo.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let mut nat = UdpNat::default();
        let mut next = 10;
        let sandbox_mac = MacAddr([2, 0x42, 172, 18, 0, 2]);
        let gateway_mac = MacAddr([2, 0x42, 172, 18, 0, 1]);
        // The sandbox addressed the gateway (172.18.0.1:7); the host socket goes to `echo`.
        let key = (
            Ipv4Addr::new(172, 18, 0, 2),
            5000,
            Ipv4Addr::new(172, 18, 0, 1),
            7,
        );
        nat.outbound(
            poll.registry(),
            &mut next,
            key,
            sandbox_mac,
            echo_addr,
            b"ping",
        )
        .unwrap();
        nat.outbound(
            poll.registry(),
            &mut next,
            key,
            sandbox_mac,
            echo_addr,
            b"again",
        )
        .unwrap();
        assert_eq!(nat.len(), 1, "one flow per 4-tuple");
        let mut buf = [0u8; 64];
        let (n, from) = echo.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ping");
        echo.send_to(b"pong", from).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut frames = Vec::new();
        nat.inbound(Token(10), gateway_mac, &mut |f| frames.push(f.to_vec()));
        assert_eq!(frames.len(), 1);
        let packet = SlicedPacket::from_ethernet(&frames[0]).unwrap();
        let Some(NetSlice::Ipv4(ip)) = packet.net else {
            panic!("not IPv4")
        };
        assert_eq!(
            ip.header().source_addr(),
            Ipv4Addr::new(172, 18, 0, 1),
            "as addressed"
        );
        assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(172, 18, 0, 2));
        let Some(TransportSlice::Udp(udp)) = packet.transport else {
            panic!("not UDP")
        };
        assert_eq!((udp.source_port(), udp.destination_port()), (7, 5000));
        assert_eq!(udp.payload(), b"pong");
        assert_eq!(
            nat.expire(poll.registry(), Duration::from_secs(60)),
            0,
            "not idle yet"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(nat.expire(poll.registry(), Duration::from_millis(10)), 1);
        assert!(nat.is_empty());
    }

    #[test]
    fn caps_evict_the_idlest_flow_of_the_right_sandbox() {
        let poll = Poll::new().unwrap();
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(target) = sink.local_addr().unwrap() else {
            unreachable!()
        };
        let mut nat = UdpNat::new(FlowLimits {
            per_sandbox: 3,
            per_gateway: 5,
        });
        let mut next = 10;
        let mac = MacAddr([2, 0x42, 10, 0, 0, 2]);
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        let gw = Ipv4Addr::new(10, 0, 0, 1);
        let mut send = |nat: &mut UdpNat, ip: Ipv4Addr, port: u16| {
            nat.outbound(
                poll.registry(),
                &mut next,
                (ip, port, gw, 53),
                mac,
                target,
                b"q",
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(2));
        };
        // b holds two quiet flows; a hammers with a new port per datagram.
        send(&mut nat, b, 1);
        send(&mut nat, b, 2);
        for port in 100..200 {
            send(&mut nat, a, port);
        }
        assert_eq!(nat.count_of(a), 3, "a is held at its own cap");
        assert_eq!(nat.count_of(b), 2, "a evicts its own flows, not b's");
        assert_eq!(nat.len(), 5);
        assert!(
            nat.flows.token_of(&(a, 199, gw, 53)).is_some(),
            "the newest stays"
        );
        assert!(
            nat.flows.token_of(&(a, 196, gw, 53)).is_none(),
            "the idlest went"
        );
        // The gateway is full: a third sandbox evicts the idlest of anyone's (b's first).
        let c = Ipv4Addr::new(10, 0, 0, 4);
        send(&mut nat, c, 1);
        assert_eq!((nat.count_of(b), nat.count_of(c), nat.len()), (1, 1, 5));
        assert_eq!(nat.evicted(), 97 + 1);
    }
}
