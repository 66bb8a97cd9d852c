//! Published ports: host sockets bound by the controller, served by the gateway. A connection
//! accepted on the host becomes a smoltcp connection from the gateway address to the sandbox's
//! port; a datagram becomes a datagram from the gateway address, and the sandbox's answers go
//! back to the host peer that sent it. The peers of a published UDP port are forgotten when idle
//! for the network's UDP timeout, and at most `DEFAULT_PEERS` are kept (the idlest goes first):
//! a host scanning from many source ports cannot grow the gateway's memory for ever.
//! A port may listen on both families (0.0.0.0 and [::]); clients of either reach the sandbox's
//! IPv4 address when it has one, else its IPv6 address (from the gateway's address of that
//! family), as Docker's proxy does.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};

use crate::wire::MacAddr;

/// Host peers one published UDP port remembers at once.
pub const DEFAULT_PEERS: usize = 1024;

/// What a published port leads to.
#[derive(Clone, Copy, Debug)]
pub struct PublishTarget {
    pub id: u64,
    /// The sandbox's address and port: its IPv4 address, or on an IPv6-only network its IPv6
    /// one.
    pub sandbox: SocketAddr,
    pub sandbox_mac: MacAddr,
}

/// Sent by the controller to a gateway's thread.
pub enum GatewayCommand {
    /// Serve a published port's host sockets (one per address family it listens on).
    PublishTcp(PublishTarget, Vec<std::net::TcpListener>),
    PublishUdp(PublishTarget, Vec<std::net::UdpSocket>),
    /// Stop serving a publication; the sender learns when its host socket is closed.
    Unpublish(u64, crossbeam_channel::Sender<()>),
}

pub struct TcpPublished {
    pub target: PublishTarget,
    pub listener: TcpListener,
}

pub struct UdpPublished {
    pub target: PublishTarget,
    pub socket: UdpSocket,
    /// Host peers: the gateway port each is seen from inside the sandbox, and when it was last
    /// used either way.
    peers: HashMap<SocketAddr, (u16, Instant)>,
    by_port: HashMap<u16, SocketAddr>,
    max_peers: usize,
}

impl UdpPublished {
    pub fn new(target: PublishTarget, socket: UdpSocket, max_peers: usize) -> Self {
        UdpPublished {
            target,
            socket,
            peers: HashMap::new(),
            by_port: HashMap::new(),
            max_peers: max_peers.max(1),
        }
    }

    pub fn peers(&self) -> usize {
        self.peers.len()
    }

    /// The gateway port that stands for `peer`, allocated with `allocate` on first sight (the
    /// idlest peer is forgotten first when the port has its limit of peers).
    pub fn port_for(&mut self, peer: SocketAddr, allocate: &mut dyn FnMut() -> u16) -> u16 {
        let now = Instant::now();
        if let Some((port, seen)) = self.peers.get_mut(&peer) {
            *seen = now;
            return *port;
        }
        while self.peers.len() >= self.max_peers {
            let idlest = self
                .peers
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(p, _)| *p);
            match idlest {
                Some(p) => self.forget(p),
                None => break,
            }
        }
        let port = allocate();
        self.peers.insert(peer, (port, now));
        self.by_port.insert(port, peer);
        port
    }

    fn forget(&mut self, peer: SocketAddr) {
        if let Some((port, _)) = self.peers.remove(&peer) {
            self.by_port.remove(&port);
        }
    }

    /// The host peer behind gateway port `port`, if this publication owns it.
    pub fn peer_of(&self, port: u16) -> Option<SocketAddr> {
        self.by_port.get(&port).copied()
    }

    /// Send the sandbox's answer to `peer` (which keeps the peer alive).
    pub fn reply(&mut self, peer: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        if let Some((_, seen)) = self.peers.get_mut(&peer) {
            *seen = Instant::now();
        }
        self.socket.send_to(payload, peer)
    }

    /// Forget peers idle for longer than `idle`; returns how many went.
    pub fn expire(&mut self, idle: Duration) -> usize {
        let now = Instant::now();
        let stale: Vec<SocketAddr> = self
            .peers
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) > idle)
            .map(|(p, _)| *p)
            .collect();
        for peer in &stale {
            self.forget(*peer);
        }
        stale.len()
    }
}

/// Gateway-side ports for published connections and datagrams, from the ephemeral range.
pub struct PortAllocator {
    next: u16,
}

impl Default for PortAllocator {
    fn default() -> Self {
        PortAllocator { next: 49152 }
    }
}

impl PortAllocator {
    pub fn allocate(&mut self) -> u16 {
        let port = self.next;
        self.next = if self.next == u16::MAX {
            49152
        } else {
            self.next + 1
        };
        port
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(max_peers: usize) -> UdpPublished {
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = PublishTarget {
            id: 1,
            sandbox: "10.0.0.2:53".parse().unwrap(),
            sandbox_mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
        };
        UdpPublished::new(target, socket, max_peers)
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn peers_expire_when_idle_and_are_capped() {
        let mut p = published(3);
        let mut ports = PortAllocator::default();
        let first = p.port_for(peer(1), &mut || ports.allocate());
        assert_eq!(
            p.port_for(peer(1), &mut || ports.allocate()),
            first,
            "stable"
        );
        assert_eq!(p.peer_of(first), Some(peer(1)));
        std::thread::sleep(Duration::from_millis(5));
        for n in 2..=4 {
            p.port_for(peer(n), &mut || ports.allocate());
        }
        assert_eq!(p.peers(), 3, "capped");
        assert_eq!(p.peer_of(first), None, "the idlest peer went first");
        assert_eq!(p.expire(Duration::from_secs(60)), 0, "none idle yet");
        std::thread::sleep(Duration::from_millis(20));
        p.port_for(peer(4), &mut || ports.allocate());
        assert_eq!(
            p.expire(Duration::from_millis(10)),
            2,
            "the two quiet ones expire"
        );
        assert_eq!(p.peers(), 1);
    }
}
