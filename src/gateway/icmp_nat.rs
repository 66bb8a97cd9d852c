//! Outbound ICMP echo through the host's ping sockets (`SOCK_DGRAM`, `IPPROTO_ICMP`), where the
//! host allows them (`net.ipv4.ping_group_range`); elsewhere such pings are dropped, as
//! slirp4netns does. The kernel picks the echo identifier of a ping socket, so replies get the
//! sandbox's identifier back before they are framed for the sandbox. Each flow is a socket, so
//! flows are capped per sandbox and per gateway like UDP's, the idlest evicted first.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use etherparse::PacketBuilder;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn, recv, send, socket,
};

use super::flow_table::{FlowLimits, FlowTable};
use crate::wire::{Icmpv4, MacAddr};

/// (sandbox ip, echo identifier, destination ip).
pub type EchoKey = (Ipv4Addr, u16, Ipv4Addr);

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

#[derive(Default)]
pub struct IcmpNat {
    flows: FlowTable<EchoKey, EchoFlow>,
    /// The host refused ping sockets once: do not ask again for every ping.
    unavailable: bool,
    frame: Vec<u8>,
    reply: Vec<u8>,
}

impl IcmpNat {
    pub fn owns(&self, token: Token) -> bool {
        self.flows.owns(token)
    }

    /// Send an echo request (ICMP header and data, as the sandbox sent it) towards `target`.
    pub fn outbound(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: EchoKey,
        sandbox_mac: MacAddr,
        target: Ipv4Addr,
        icmp: &[u8],
    ) -> io::Result<()> {
        if self.unavailable {
            return Ok(());
        }
        let token = match self.flows.token_of(&key) {
            Some(t) => t,
            None => {
                for flow in self.flows.evict_for(key.0, LIMITS, |f| f.last_used) {
                    let _ = registry.deregister(&mut SourceFd(&flow.socket.as_raw_fd()));
                }
                let socket = match socket(
                    AddressFamily::Inet,
                    SockType::Datagram,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    SockProtocol::Icmp,
                ) {
                    Ok(s) => s,
                    Err(nix::errno::Errno::EACCES) | Err(nix::errno::Errno::EPERM) => {
                        self.unavailable = true;
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                };
                nix::sys::socket::connect(
                    socket.as_raw_fd(),
                    &SockaddrIn::from(SocketAddrV4::new(target, 0)),
                )?;
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
        let Some(((sandbox_ip, ident, remote), flow)) = self.flows.get_mut(token) else {
            return;
        };
        self.reply.resize(65536, 0);
        loop {
            let n = match recv(flow.socket.as_raw_fd(), &mut self.reply, MsgFlags::empty()) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            };
            let Ok(msg) = Icmpv4::new_checked(&self.reply[..n]) else {
                continue;
            };
            let Some(echo) = msg.echo_reply() else {
                continue;
            };
            flow.last_used = Instant::now();
            self.frame.clear();
            let built = PacketBuilder::ethernet2(gateway_mac.0, flow.sandbox_mac.0)
                .ipv4(remote.octets(), sandbox_ip.octets(), 64)
                .icmpv4_echo_reply(ident, echo.seq)
                .write(&mut self.frame, msg.payload());
            if built.is_ok() {
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
