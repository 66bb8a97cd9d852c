//! The gateway thread's IPv6 side: neighbour discovery, ping and refusals it answers itself
//! (`ndp`), router advertisements (`ra`), and UDP over IPv6 through host sockets.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Engine, MAX_SLEEP};
use crate::gateway::icmp_nat::EchoKey6;
use crate::gateway::udp_nat::FlowKey6;
use crate::gateway::{ndp, ra};
use crate::wire::MacAddr;
use smoltcp::wire::IpAddress;

impl Engine {
    /// A sandbox's UDP over IPv6, through a host socket: to the host's loopback when it
    /// addressed the gateway, under the same policy as IPv4's.
    pub(super) fn udp6_out(
        &mut self,
        tuple: FlowKey6,
        src_mac: MacAddr,
        (start, end): (usize, usize),
    ) {
        let Some(v6) = self.config.ipv6 else {
            return;
        };
        // A sandbox's answer to a datagram of a published port: to the gateway's address (a
        // port standing for a host peer) or to the peer itself.
        if !self.udp_published.is_empty() {
            let from = SocketAddr::V6(SocketAddrV6::new(tuple.0, tuple.1, 0, 0));
            let to = SocketAddr::V6(SocketAddrV6::new(tuple.2, tuple.3, 0, 0));
            if self.reply_published((from, to), tuple.2 == v6.ip, (start, end)) {
                return;
            }
        }
        if self.loopback_closed(tuple.2 == v6.ip) {
            self.refuse6_with(
                (tuple.0, src_mac),
                (crate::wire::ETH_HDR_LEN, end),
                end,
                ndp::PORT_UNREACHABLE,
            );
            return;
        }
        let ip = if tuple.2 == v6.ip {
            Ipv6Addr::LOCALHOST
        } else {
            tuple.2
        };
        if !self.config.policy.allows_v6(ip) {
            return;
        }
        let target = SocketAddrV6::new(ip, tuple.3, 0, 0);
        let registry = self.poll.registry();
        let payload = &self.device.frame(end)[start..end];
        if let Err(e) = self.udp6.outbound(
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

    /// A sandbox's SYN over IPv6: held while a host socket connects to where it goes (the
    /// host's `::1` for the gateway's address, the gateway's DNS server for its port 53),
    /// under the same rules as IPv4's; refused with RST by smoltcp otherwise.
    pub(super) fn tcp6_syn(&mut self, tuple: FlowKey6, src_mac: MacAddr, len: usize) {
        let Some(v6) = self.config.ipv6 else {
            return;
        };
        let syn = self.device.frame(len).to_vec();
        // smoltcp answers this SYN (SYN-ACK or RST) to the sandbox: tell it the sandbox's MAC
        // first, as the sandbox's own advertisement would, so no solicitation round delays it.
        self.learn_neighbour((tuple.0, src_mac), v6.ip);
        let to_gateway = tuple.2 == v6.ip;
        let dns = to_gateway && tuple.3 == crate::gateway::dns::DNS_PORT;
        let target: SocketAddr = match self.config.dns {
            Some((_, tcp)) if dns => tcp.into(),
            _ => {
                let ip = if to_gateway {
                    Ipv6Addr::LOCALHOST
                } else {
                    tuple.2
                };
                SocketAddrV6::new(ip, tuple.3, 0, 0).into()
            }
        };
        let to_dns = dns && self.config.dns.is_some();
        if !to_dns && self.loopback_closed(to_gateway) {
            // No listener of smoltcp's: it answers RST.
            self.feed(&syn);
            return;
        }
        let allowed = to_dns
            || (self.config.nat
                && matches!(target, SocketAddr::V6(t) if self.config.policy.allows_v6(*t.ip())));
        if !allowed {
            // Internal network or a forbidden destination: refused (RST).
            self.feed(&syn);
            return;
        }
        if !self.tcp6.admits(tuple.0, self.tcp.len()) {
            self.stats.tcp_refused.fetch_add(1, Ordering::Relaxed);
            self.feed(&syn);
            return;
        }
        let registry = self.poll.registry();
        match self
            .tcp6
            .start(registry, &mut self.next_token, tuple, target, &syn)
        {
            Ok(token) => self.resolve_tcp(token),
            Err(_) => self.feed(&syn),
        }
    }

    /// Connect a published connection into the sandbox at `sandbox` (an IPv6-only network's),
    /// from `from`: the client, or the gateway's IPv6 address and a port of its own (also when
    /// the client's flow key is taken, as IPv4's `connect_published`).
    pub(super) fn connect_published6(
        &mut self,
        sandbox: SocketAddrV6,
        mac: MacAddr,
        from: SocketAddrV6,
        stream: mio::net::TcpStream,
    ) {
        let Some(v6) = self.config.ipv6 else {
            return;
        };
        self.learn_neighbour((*sandbox.ip(), mac), v6.ip);
        let mut key = (*sandbox.ip(), sandbox.port(), *from.ip(), from.port());
        if self.tcp6.knows(&key) {
            key = (key.0, key.1, v6.ip, self.gateway_ports.allocate());
        }
        let mut socket = self.tcp6.socket();
        socket.set_tsval_generator(Some(crate::gateway::publish::tcp_timestamp));
        let remote = (IpAddress::Ipv6(key.0), key.1);
        let local = (IpAddress::Ipv6(key.2), key.3);
        if socket.connect(self.iface.context(), remote, local).is_err() {
            return;
        }
        let handle = self.sockets.add(socket);
        let registry = self.poll.registry();
        if self
            .tcp6
            .adopt(registry, &mut self.next_token, key, stream, handle)
            .is_err()
        {
            self.sockets.remove(handle);
        }
    }

    /// Put `sandbox` (address, MAC) in smoltcp's neighbour cache: a Neighbour Advertisement
    /// from it to the gateway's address `ours`, fed to the stack.
    fn learn_neighbour(&mut self, (ip, mac): (Ipv6Addr, MacAddr), ours: Ipv6Addr) {
        let mut frame = std::mem::take(&mut self.v6_frame);
        ndp::neighbor_advert(&mut frame, mac, ip, (ours, self.config.mac));
        self.feed(&frame);
        self.v6_frame = frame;
    }

    /// A sandbox's ping beyond the gateway, through an IPv6 ping socket (dropped where the host
    /// allows none, as IPv4's). Pings of the gateway's own address it answers itself.
    pub(super) fn echo6_out(
        &mut self,
        key: EchoKey6,
        src_mac: MacAddr,
        (start, end): (usize, usize),
        len: usize,
    ) {
        if !self.config.policy.allows_v6(key.2) {
            return;
        }
        let registry = self.poll.registry();
        let icmp = &self.device.frame(len)[start..end];
        if let Err(e) = self
            .icmp6
            .outbound(registry, &mut self.next_token, key, src_mac, icmp)
        {
            eprintln!(
                "tapnet: gateway of {}: ping {}: {e}",
                self.config.network, key.2
            );
        }
    }

    /// Answer a Neighbour Solicitation for the gateway's address `target`.
    pub(super) fn neighbor_advert(&mut self, target: Ipv6Addr, asker: (Ipv6Addr, MacAddr)) {
        ndp::neighbor_advert(&mut self.v6_frame, self.config.mac, target, asker);
        self.device.send(&self.v6_frame);
    }

    /// Answer a ping of the gateway's address `ours`.
    pub(super) fn echo6(
        &mut self,
        ours: Ipv6Addr,
        asker: (Ipv6Addr, MacAddr),
        (start, end): (usize, usize),
        len: usize,
    ) {
        let request = &self.device.frame(len)[start..end];
        ndp::echo_reply(&mut self.v6_frame, self.config.mac, ours, asker, request);
        self.device.send(&self.v6_frame);
    }

    /// Refuse IPv6 the gateway cannot carry (Destination Unreachable), within the error limit.
    /// From the address of the asker's scope: link-local to a link-local source.
    pub(super) fn refuse6(
        &mut self,
        asker: (Ipv6Addr, MacAddr),
        packet: (usize, usize),
        len: usize,
    ) {
        self.refuse6_with(asker, packet, len, ndp::ADMIN_PROHIBITED);
    }

    /// Refuse the IPv6 packet at `start..end` with Destination Unreachable of `code`.
    fn refuse6_with(
        &mut self,
        asker: (Ipv6Addr, MacAddr),
        (start, end): (usize, usize),
        len: usize,
        code: u8,
    ) {
        let Some(v6) = self.config.ipv6 else {
            return;
        };
        if !self.icmp6_errors.allow(std::time::Instant::now()) {
            return;
        }
        let link_local = asker.0.segments()[0] & 0xffc0 == 0xfe80;
        let from = if link_local {
            ndp::link_local(self.config.mac)
        } else {
            v6.ip
        };
        let invoking = &self.device.frame(len)[start..end];
        ndp::unreachable(
            &mut self.v6_frame,
            self.config.mac,
            (from, asker),
            invoking,
            code,
        );
        self.device.send(&self.v6_frame);
    }

    /// Answer a Router Solicitation, within the limits of `RaTimer::may_answer`.
    pub(super) fn router_solicited(&mut self, asker: Ipv6Addr, asker_mac: MacAddr) {
        let (Some(v6), Some(timer)) = (self.config.ipv6, self.ra.as_mut()) else {
            return;
        };
        let to = ra::answer_to(asker, asker_mac);
        if !timer.may_answer(std::time::Instant::now(), asker.is_unspecified()) {
            return;
        }
        ra::router_advert(
            &mut self.v6_frame,
            (self.config.mac, self.config.mtu),
            &v6,
            to,
        );
        self.device.send(&self.v6_frame);
    }

    /// Send the unsolicited Router Advertisement, when one is due.
    pub(super) fn advertise(&mut self) {
        let (Some(v6), Some(timer)) = (self.config.ipv6, self.ra.as_mut()) else {
            return;
        };
        if !timer.due(std::time::Instant::now()) {
            return;
        }
        let to = (ndp::ALL_NODES, ndp::multicast_mac(ndp::ALL_NODES));
        ra::router_advert(
            &mut self.v6_frame,
            (self.config.mac, self.config.mtu),
            &v6,
            to,
        );
        self.device.send(&self.v6_frame);
    }

    /// How long the loop may sleep before the next Router Advertisement is due.
    pub(super) fn ra_delay(&self) -> Duration {
        self.ra
            .as_ref()
            .map_or(MAX_SLEEP, |t| t.until_next(std::time::Instant::now()))
    }
}
