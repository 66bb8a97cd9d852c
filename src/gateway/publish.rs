//! Published ports: host sockets bound by the controller, served by the gateway. A connection
//! accepted on the host becomes a smoltcp connection from the gateway address to the sandbox's
//! port; a datagram becomes a datagram from the gateway address, and the sandbox's answers go
//! back to the host peer that sent it.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};

use mio::net::{TcpListener, UdpSocket};

use crate::datapath::frame::MacAddr;

/// What a published port leads to.
#[derive(Clone, Copy, Debug)]
pub struct PublishTarget {
    pub id: u64,
    /// The sandbox's address and port.
    pub sandbox: SocketAddrV4,
    pub sandbox_mac: MacAddr,
}

/// Sent by the controller to a gateway's thread.
pub enum GatewayCommand {
    PublishTcp(PublishTarget, std::net::TcpListener),
    PublishUdp(PublishTarget, std::net::UdpSocket),
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
    /// Host peers and the gateway port each is seen from inside the sandbox.
    peers: HashMap<SocketAddr, u16>,
    by_port: HashMap<u16, SocketAddr>,
}

impl UdpPublished {
    pub fn new(target: PublishTarget, socket: UdpSocket) -> Self {
        UdpPublished {
            target,
            socket,
            peers: HashMap::new(),
            by_port: HashMap::new(),
        }
    }

    /// The gateway port that stands for `peer`, allocated with `allocate` on first sight.
    pub fn port_for(&mut self, peer: SocketAddr, allocate: &mut dyn FnMut() -> u16) -> u16 {
        if let Some(port) = self.peers.get(&peer) {
            return *port;
        }
        let port = allocate();
        self.peers.insert(peer, port);
        self.by_port.insert(port, peer);
        port
    }

    /// The host peer behind gateway port `port`, if this publication owns it.
    pub fn peer_of(&self, port: u16) -> Option<SocketAddr> {
        self.by_port.get(&port).copied()
    }

    pub fn reply(&self, peer: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        self.socket.send_to(payload, peer)
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
