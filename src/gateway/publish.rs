//! Published ports: host sockets bound by the controller, served by the gateway. A connection
//! accepted on the host becomes a smoltcp connection to the sandbox's port, and a datagram a
//! datagram to it, from the client's own address and port, as Docker's DNAT and pasta show it
//! (`keeps_source`): the sandbox's answers are addressed to the client, go to its default
//! route (the gateway), and are caught there as the published flow's. A client the sandbox
//! could not answer directly (the host's loopback, another family than the sandbox's, an
//! address of a tapnet network) is seen from the gateway's address instead, from a gateway port
//! that stands for it. The peers of a published UDP port are forgotten when idle for the
//! network's UDP timeout, and at most `DEFAULT_PEERS` are kept (the idlest goes first): a host
//! scanning from many source ports cannot grow the gateway's memory for ever.
//! A port may listen on both families (0.0.0.0 and [::]); clients of either reach the sandbox's
//! IPv4 address when it has one, else its IPv6 address, as Docker's proxy does.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UdpSocket};

use super::GatewayConfig;
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
    /// A dual-stack sandbox's IPv6 address and port: IPv6 clients reach that one, so that the
    /// sandbox sees their address (a family it lacks could only show the gateway's).
    pub sandbox6: Option<SocketAddr>,
    pub sandbox_mac: MacAddr,
}

impl PublishTarget {
    /// The target of publication `id` for an endpoint with these addresses (None: it has none).
    pub fn new(
        id: u64,
        (ipv4, ipv6): (Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>),
        port: u16,
        sandbox_mac: MacAddr,
    ) -> Option<PublishTarget> {
        let sandbox = match (ipv4, ipv6) {
            (Some(v4), _) => SocketAddr::from((v4, port)),
            (None, Some(v6)) => SocketAddr::from((v6, port)),
            (None, None) => return None,
        };
        Some(PublishTarget {
            id,
            sandbox,
            sandbox6: ipv4.and(ipv6).map(|v6| SocketAddr::from((v6, port))),
            sandbox_mac,
        })
    }

    /// Where a connection or datagram from `client` goes: the sandbox's address of the
    /// client's family when it has one.
    pub fn for_client(&self, client: SocketAddr) -> SocketAddr {
        match (client, self.sandbox6) {
            (SocketAddr::V6(_), Some(six)) => six,
            _ => self.sandbox,
        }
    }
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

/// Does a client at `client` reach the sandbox at `sandbox` from its own address? Only where
/// the sandbox's answer, addressed to the client, goes to the gateway and is classified as
/// traffic it carries: the same family, an address beyond the network (not the host's loopback,
/// the gateway's, the subnet's, another tapnet network's, link-local or multicast).
pub fn keeps_source(client: SocketAddr, sandbox: SocketAddr, config: &GatewayConfig) -> bool {
    match (client.ip(), sandbox) {
        (IpAddr::V4(ip), SocketAddr::V4(_)) => {
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_multicast()
                || config.is_gateway(ip))
                && config.routable(ip)
        }
        (IpAddr::V6(ip), SocketAddr::V6(_)) => {
            let ours = config.ipv6.is_some_and(|v6| v6.ip == ip);
            !(ours || ip.to_ipv4_mapped().is_some()) && config.routable_v6(ip)
        }
        _ => false,
    }
}

/// The TCP timestamp (RFC 7323) of published connections' segments: milliseconds of the
/// system's monotonic clock. A client that comes back from the same port finds the sandbox's
/// end of its last connection in TIME_WAIT; the sandbox takes the new SYN only if its sequence
/// number or its timestamp is newer, and smoltcp's initial sequence numbers are random, so
/// without a timestamp every other such SYN would be answered with an ACK and wait for a
/// retransmission. (Linux's own clients give it both, and Docker's DNAT passes them on.)
pub fn tcp_timestamp() -> u32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec that clock_gettime fills in.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
        return 0;
    }
    (now.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(now.tv_nsec as u64 / 1_000_000) as u32
}

/// How the sandbox sees a host peer of a published UDP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// From the peer's own address and port.
    Direct,
    /// From the gateway's address, this port.
    Gateway(u16),
}

pub struct UdpPublished {
    pub target: PublishTarget,
    pub socket: UdpSocket,
    /// Host peers: how each is seen from inside the sandbox, and when it was last used either
    /// way.
    peers: HashMap<SocketAddr, (Seen, Instant)>,
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

    /// How `peer` is seen, if it is known (which keeps it alive).
    pub fn seen(&mut self, peer: SocketAddr) -> Option<Seen> {
        let (seen, used) = self.peers.get_mut(&peer)?;
        *used = Instant::now();
        Some(*seen)
    }

    /// Remember a new `peer`, seen directly or from a gateway port taken from `allocate` (the
    /// idlest peer is forgotten first when the port has its limit of peers).
    pub fn add(
        &mut self,
        peer: SocketAddr,
        direct: bool,
        allocate: &mut dyn FnMut() -> u16,
    ) -> Seen {
        while self.peers.len() >= self.max_peers {
            let idlest = self
                .peers
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(p, _)| *p);
            match idlest {
                Some(p) => self.forget(p),
                None => break,
            }
        }
        let seen = if direct {
            Seen::Direct
        } else {
            let port = allocate();
            self.by_port.insert(port, peer);
            Seen::Gateway(port)
        };
        self.peers.insert(peer, (seen, Instant::now()));
        seen
    }

    fn forget(&mut self, peer: SocketAddr) {
        if let Some((Seen::Gateway(port), _)) = self.peers.remove(&peer) {
            self.by_port.remove(&port);
        }
    }

    /// The host peer behind gateway port `port`, if this publication owns it.
    pub fn peer_of(&self, port: u16) -> Option<SocketAddr> {
        self.by_port.get(&port).copied()
    }

    /// Is `peer` a peer the sandbox at `from` sees directly, so that its datagram to `peer`
    /// is an answer through this port?
    pub fn answers(&self, from: SocketAddr, peer: SocketAddr) -> bool {
        (self.target.sandbox == from || self.target.sandbox6 == Some(from))
            && matches!(self.peers.get(&peer), Some((Seen::Direct, _)))
    }

    /// Send the sandbox's answer to `peer` (which keeps the peer alive).
    pub fn reply(&mut self, peer: SocketAddr, payload: &[u8]) -> io::Result<usize> {
        if let Some((_, used)) = self.peers.get_mut(&peer) {
            *used = Instant::now();
        }
        self.socket.send_to(payload, peer)
    }

    /// Forget peers idle for longer than `idle`; returns how many went.
    pub fn expire(&mut self, idle: Duration) -> usize {
        let now = Instant::now();
        let before = self.peers.len();
        let by_port = &mut self.by_port;
        self.peers.retain(|_, (seen, used)| {
            let keep = now.duration_since(*used) <= idle;
            if let (false, Seen::Gateway(port)) = (keep, seen) {
                by_port.remove(port);
            }
            keep
        });
        before - self.peers.len()
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
    use crate::gateway::policy::NatPolicy;
    use crate::gateway::{GatewayV4, GatewayV6, NatLimits};

    fn published(max_peers: usize) -> UdpPublished {
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let target = PublishTarget {
            id: 1,
            sandbox: "10.0.0.2:53".parse().unwrap(),
            sandbox6: None,
            sandbox_mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
        };
        UdpPublished::new(target, socket, max_peers)
    }

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn port_of(p: &mut UdpPublished, peer: SocketAddr, ports: &mut PortAllocator) -> u16 {
        let seen = match p.seen(peer) {
            Some(seen) => seen,
            None => p.add(peer, false, &mut || ports.allocate()),
        };
        match seen {
            Seen::Gateway(port) => port,
            Seen::Direct => panic!("a loopback peer is seen from a gateway port"),
        }
    }

    #[test]
    fn peers_expire_when_idle_and_are_capped() {
        let mut p = published(3);
        let mut ports = PortAllocator::default();
        let first = port_of(&mut p, peer(1), &mut ports);
        assert_eq!(port_of(&mut p, peer(1), &mut ports), first, "stable");
        assert_eq!(p.peer_of(first), Some(peer(1)));
        std::thread::sleep(Duration::from_millis(5));
        for n in 2..=4 {
            port_of(&mut p, peer(n), &mut ports);
        }
        assert_eq!(p.peers(), 3, "capped");
        assert_eq!(p.peer_of(first), None, "the idlest peer went first");
        assert_eq!(p.expire(Duration::from_secs(60)), 0, "none idle yet");
        std::thread::sleep(Duration::from_millis(20));
        port_of(&mut p, peer(4), &mut ports);
        assert_eq!(
            p.expire(Duration::from_millis(10)),
            2,
            "the two quiet ones expire"
        );
        assert_eq!(p.peers(), 1);
    }

    #[test]
    fn tcp_timestamps_follow_the_monotonic_clock_in_milliseconds() {
        let first = tcp_timestamp();
        std::thread::sleep(Duration::from_millis(20));
        let later = tcp_timestamp().wrapping_sub(first);
        assert!((20..2000).contains(&later), "{later} ms");
    }

    #[test]
    fn direct_peers_take_no_gateway_port_and_count_towards_the_cap() {
        let mut p = published(2);
        let mut ports = PortAllocator::default();
        let client: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let sandbox = p.target.sandbox;
        assert_eq!(p.add(client, true, &mut || ports.allocate()), Seen::Direct);
        assert_eq!(p.seen(client), Some(Seen::Direct));
        assert!(p.answers(sandbox, client), "the sandbox's answer to it");
        let elsewhere: SocketAddr = "10.0.0.2:54".parse().unwrap();
        assert!(!p.answers(elsewhere, client), "from another port: not ours");
        assert!(!p.answers(sandbox, "192.0.2.7:4001".parse().unwrap()));
        assert_eq!(ports.allocate(), 49152, "no gateway port was taken");
        std::thread::sleep(Duration::from_millis(5));
        port_of(&mut p, peer(1), &mut ports);
        port_of(&mut p, peer(2), &mut ports);
        assert_eq!(p.peers(), 2);
        assert_eq!(p.seen(client), None, "the idlest (direct) peer went first");
        assert!(!p.answers(sandbox, client));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(p.expire(Duration::from_millis(10)), 2);
        assert_eq!(p.peer_of(49153), None, "expired ports are released");
    }

    fn config(nat: bool) -> GatewayConfig {
        let policy = NatPolicy::new(Vec::new(), Vec::new());
        policy.set_tapnet_subnets(vec![
            "10.0.0.0/24".parse().unwrap(),
            "10.9.0.0/24".parse().unwrap(),
        ]);
        GatewayConfig {
            network: "n".into(),
            ipv4: Some(GatewayV4 {
                subnet: "10.0.0.0/24".parse().unwrap(),
                ip: "10.0.0.1".parse().unwrap(),
            }),
            mac: MacAddr([2, 0x42, 10, 0, 0, 1]),
            mtu: 1500,
            nat,
            policy,
            udp_idle: Duration::from_secs(30),
            limits: NatLimits::default(),
            dns: None,
            host_loopback: false,
            ipv6: Some(GatewayV6 {
                subnet: "fd00:42::/64".parse().unwrap(),
                ip: "fd00:42::1".parse().unwrap(),
            }),
            spin: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn clients_beyond_the_network_keep_their_address_others_are_the_gateway() {
        let c = config(true);
        let v4: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let v6: SocketAddr = "[fd00:42::2]:80".parse().unwrap();
        let keeps = |client: &str, sandbox| keeps_source(client.parse().unwrap(), sandbox, &c);
        assert!(keeps("192.0.2.7:4000", v4));
        assert!(keeps("[fd99::7]:4000", v6));
        for client in [
            "127.0.0.1:4000",
            "127.3.2.1:4000",
            "0.0.0.0:4000",
            "10.0.0.1:4000",
            "10.0.0.9:4000",
            "10.9.0.9:4000",
            "[fd99::7]:4000",
        ] {
            assert!(!keeps(client, v4), "{client} to an IPv4 sandbox");
        }
        for client in [
            "[::1]:4000",
            "[fe80::1]:4000",
            "[fd00:42::1]:4000",
            "[fd00:42::9]:4000",
            "[::ffff:192.0.2.7]:4000",
            "192.0.2.7:4000",
        ] {
            assert!(!keeps(client, v6), "{client} to an IPv6 sandbox");
        }
        let internal = config(false);
        assert!(!keeps_source(
            "192.0.2.7:4000".parse().unwrap(),
            v4,
            &internal
        ));
    }
}
