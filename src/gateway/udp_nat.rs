//! Outbound UDP through host sockets: each (sandbox address, destination) pair gets a connected
//! host socket; datagrams that come back are wrapped in Ethernet/IPv4/UDP and sent to the
//! sandbox as if from the destination it addressed. Idle flows expire.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use super::flow_table::FlowTable;
use crate::datapath::frame::MacAddr;

/// (sandbox ip, sandbox port, destination ip, destination port) as the sandbox sent it.
pub type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

struct Flow {
    sandbox_mac: MacAddr,
    socket: UdpSocket,
    last_used: Instant,
}

pub struct UdpNat {
    flows: FlowTable<FlowKey, Flow>,
    /// A reused datagram buffer and frame buffer: nothing allocated per datagram.
    datagram: Box<[u8]>,
    frame: Vec<u8>,
}

impl Default for UdpNat {
    fn default() -> Self {
        UdpNat {
            flows: FlowTable::default(),
            datagram: vec![0u8; 65536].into_boxed_slice(),
            frame: Vec::with_capacity(65536 + 64),
        }
    }
}

impl UdpNat {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

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
        key: FlowKey,
        sandbox_mac: MacAddr,
        target: SocketAddrV4,
        payload: &[u8],
    ) -> io::Result<()> {
        let token = match self.flows.token_of(&key) {
            Some(t) => t,
            None => {
                let bind: SocketAddr = if target.ip().is_loopback() {
                    (Ipv4Addr::LOCALHOST, 0).into()
                } else {
                    (Ipv4Addr::UNSPECIFIED, 0).into()
                };
                let mut socket = UdpSocket::bind(bind)?;
                socket.connect(target.into())?;
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
        let Some(((sandbox_ip, sandbox_port, remote_ip, remote_port), flow)) =
            self.flows.get_mut(token)
        else {
            return;
        };
        loop {
            let n = match flow.socket.recv(&mut self.datagram) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock, or an ICMP error from the host side (refused): nothing to deliver.
                Err(_) => return,
            };
            flow.last_used = Instant::now();
            let from = SocketAddrV4::new(remote_ip, remote_port);
            let to = SocketAddrV4::new(sandbox_ip, sandbox_port);
            if build_udp_frame(
                &mut self.frame,
                (gateway_mac, flow.sandbox_mac),
                from,
                to,
                &self.datagram[..n],
            ) {
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
        for flow in stale.iter_mut() {
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
}
