//! Outbound ICMP echo through the host's ping sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`), where the
//! host allows them (`net.ipv4.ping_group_range`); elsewhere such pings are dropped, as
//! slirp4netns does. The kernel picks the echo identifier of a ping socket, so replies get the
//! sandbox's identifier back before they are framed for the sandbox. Each flow is a socket, so
//! flows are capped per sandbox and per gateway like UDP's, the idlest evicted first.
//! ICMPv6 echo goes the same way through IPv6 ping sockets (`IPPROTO_ICMPV6`, allowed by the same
//! sysctl), one table per family (`IcmpNat<EchoKey>`, `IcmpNat<EchoKey6>`).

use std::hash::Hash;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, SockaddrIn6, recv, send,
    socket,
};

use super::flow_table::{FlowLimits, FlowTable, SandboxKey};
use crate::wire::{Icmpv4, MacAddr};

/// (sandbox ip, echo identifier, destination ip).
pub type EchoKey = (Ipv4Addr, u16, Ipv4Addr);
/// [`EchoKey`] over IPv6.
pub type EchoKey6 = (Ipv6Addr, u16, Ipv6Addr);

/// What differs between ICMP and ICMPv6 echo: the ping socket, and the replies' framing.
pub trait EchoFamily: Copy + Eq + Hash + SandboxKey {
    /// A ping socket connected to the destination.
    fn open(&self) -> nix::Result<OwnedFd>;
    /// The sequence number and data of an echo reply `msg` (as the ping socket returns it).
    fn reply(msg: &[u8]) -> Option<(u16, &[u8])>;
    /// The echo reply frame for the sandbox, from the address it pinged, with its identifier.
    fn frame(&self, out: &mut Vec<u8>, macs: (MacAddr, MacAddr), seq: u16, data: &[u8]) -> bool;
}

impl EchoFamily for EchoKey {
    fn open(&self) -> nix::Result<OwnedFd> {
        let socket = socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        )?;
        let to = SockaddrIn::from(SocketAddrV4::new(self.2, 0));
        nix::sys::socket::connect(socket.as_raw_fd(), &to)?;
        Ok(socket)
    }

    fn reply(msg: &[u8]) -> Option<(u16, &[u8])> {
        let msg = Icmpv4::new_checked(msg).ok()?;
        let echo = msg.echo_reply()?;
        Some((echo.seq, msg.payload()))
    }

    fn frame(&self, out: &mut Vec<u8>, macs: (MacAddr, MacAddr), seq: u16, data: &[u8]) -> bool {
        out.clear();
        PacketBuilder::ethernet2(macs.0.0, macs.1.0)
            .ipv4(self.2.octets(), self.0.octets(), 64)
            .icmpv4_echo_reply(self.1, seq)
            .write(out, data)
            .is_ok()
    }
}

/// ICMPv6 echo reply.
const ECHO_REPLY6: u8 = 129;

impl EchoFamily for EchoKey6 {
    fn open(&self) -> nix::Result<OwnedFd> {
        let socket = socket(
            AddressFamily::Inet6,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::IcmpV6,
        )?;
        let to = SockaddrIn6::from(SocketAddrV6::new(self.2, 0, 0, 0));
        nix::sys::socket::connect(socket.as_raw_fd(), &to)?;
        Ok(socket)
    }

    fn reply(msg: &[u8]) -> Option<(u16, &[u8])> {
        // Type, code, checksum, identifier, sequence, data.
        if msg.len() < 8 || msg[0] != ECHO_REPLY6 || msg[1] != 0 {
            return None;
        }
        Some((u16::from_be_bytes([msg[6], msg[7]]), &msg[8..]))
    }

    fn frame(&self, out: &mut Vec<u8>, macs: (MacAddr, MacAddr), seq: u16, data: &[u8]) -> bool {
        out.clear();
        PacketBuilder::ethernet2(macs.0.0, macs.1.0)
            .ipv6(self.2.octets(), self.0.octets(), 64)
            .icmpv6_echo_reply(self.1, seq)
            .write(out, data)
            .is_ok()
    }
}

/// Pings are short-lived: forget a flow after this long without an echo.
const ECHO_IDLE: Duration = Duration::from_secs(10);
/// Ping sockets one sandbox, and the whole gateway, may hold.
const LIMITS: FlowLimits = FlowLimits {
    per_sandbox: 64,
    per_gateway: 256,
};

struct EchoFlow {
    sandbox_mac: MacAddr,
    socket: OwnedFd,
    last_used: Instant,
}

pub struct IcmpNat<K = EchoKey> {
    flows: FlowTable<K, EchoFlow>,
    /// The host refused ping sockets once: do not ask again for every ping.
    unavailable: bool,
    frame: Vec<u8>,
    reply: Vec<u8>,
}

impl<K> Default for IcmpNat<K> {
    fn default() -> Self {
        IcmpNat {
            flows: FlowTable::default(),
            unavailable: false,
            frame: Vec::new(),
            reply: Vec::new(),
        }
    }
}

impl<K: EchoFamily> IcmpNat<K> {
    pub fn owns(&self, token: Token) -> bool {
        self.flows.owns(token)
    }

    /// Send an echo request (ICMP header and data, as the sandbox sent it) towards the
    /// destination of `key`.
    pub fn outbound(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: K,
        sandbox_mac: MacAddr,
        icmp: &[u8],
    ) -> io::Result<()> {
        if self.unavailable {
            return Ok(());
        }
        let token = match self.flows.token_of(&key) {
            Some(t) => t,
            None => {
                for flow in self.flows.evict_for(key.sandbox(), LIMITS, |f| f.last_used) {
                    let _ = registry.deregister(&mut SourceFd(&flow.socket.as_raw_fd()));
                }
                let socket = match key.open() {
                    Ok(s) => s,
                    Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::EPERM) => {
                        self.unavailable = true;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                let token = Token(*next_token);
                *next_token += 1;
                registry.register(
                    &mut SourceFd(&socket.as_raw_fd()),
                    token,
                    Interest::READABLE,
                )?;
                self.flows.insert(
                    token,
                    key,
                    EchoFlow {
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
            let _ = send(flow.socket.as_raw_fd(), icmp, MsgFlags::empty());
        }
        Ok(())
    }

    /// Echo replies arrived: frame each for the sandbox, from the address it pinged.
    pub fn inbound(&mut self, token: Token, gateway_mac: MacAddr, emit: &mut dyn FnMut(&[u8])) {
        let Some((key, flow)) = self.flows.get_mut(token) else {
            return;
        };
        self.reply.resize(65536, 0);
        loop {
            let n = match recv(flow.socket.as_raw_fd(), &mut self.reply, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let Some((seq, data)) = K::reply(&self.reply[..n]) else {
                continue;
            };
            flow.last_used = Instant::now();
            if key.frame(&mut self.frame, (gateway_mac, flow.sandbox_mac), seq, data) {
                emit(&self.frame);
            }
        }
    }

    pub fn expire(&mut self, registry: &Registry) {
        let now = Instant::now();
        for (_, flow) in self
            .flows
            .remove_where(|f| now.duration_since(f.last_used) > ECHO_IDLE)
        {
            let _ = registry.deregister(&mut SourceFd(&flow.socket.as_raw_fd()));
        }
    }
}
