//! Outbound TCP through host sockets. A sandbox's SYN to a destination is held until a host
//! socket has connected there; only then is a smoltcp socket created to take the SYN, so a
//! refused destination is refused to the sandbox at once (smoltcp answers a SYN nobody listens
//! for with RST). Data is then copied between the smoltcp socket's buffers and the host socket,
//! and FIN and RST are carried each way. One table per address family (`TcpNat<FlowKey>`,
//! `TcpNat<FlowKey6>`), so the IPv4 path hashes no wider keys.

use std::hash::Hash;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use smoltcp::iface::{SocketHandle, SocketSet};

use super::flow_table::{FlowLimits, FlowTable, SandboxKey};
pub use super::udp_nat::FlowKey6;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpListenEndpoint};

/// (sandbox ip, sandbox port, destination ip, destination port) as the sandbox sent it.
pub type FlowKey = (Ipv4Addr, u16, Ipv4Addr, u16);

/// A TCP flow's key: the destination the sandbox addressed, where smoltcp listens for its SYN.
pub trait TcpKey: Copy + Eq + Hash + SandboxKey {
    fn destination(&self) -> IpListenEndpoint;
}

impl TcpKey for FlowKey {
    fn destination(&self) -> IpListenEndpoint {
        IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(self.2)),
            port: self.3,
        }
    }
}

impl TcpKey for FlowKey6 {
    fn destination(&self) -> IpListenEndpoint {
        IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.2)),
            port: self.3,
        }
    }
}

/// What a flow buffers from the sandbox: its window. Super-frames of 64 KiB arrive whole, and a
/// 1 MiB window carried 8.3 Gbit/s to the host's loopback where 256 KiB carried 5.2.
const RX_BUFFER: usize = 1024 * 1024;
/// What a flow buffers towards the sandbox. 1 MiB carried 11.6-13.5 Gbit/s from the host's
/// loopback to a sandbox where 256 KiB carried 8.0-8.7 (scripts/bench-rootless.sh, one run).
const TX_BUFFER: usize = 1024 * 1024;
/// Closed sockets kept for the next flows: a new socket's two zeroed 1 MiB buffers cost about
/// 25 us per connection (memset, page faults, malloc trimming), a third of the gateway's CPU
/// for a short connection beyond the syscalls.
const SPARE_SOCKETS: usize = 16;
/// Only sockets of flows that moved at most this much each way are kept, so that spares hold
/// few touched pages (a ring buffer restarts at its beginning).
const SPARE_MAX_MOVED: usize = 64 * 1024;

enum Phase {
    /// Host socket connecting; the sandbox's SYN waits here.
    Connecting {
        syn: Vec<u8>,
    },
    Open {
        handle: SocketHandle,
    },
}

struct Flow {
    host: TcpStream,
    phase: Phase,
    /// The host peer closed its side (we send FIN to the sandbox).
    host_eof: bool,
    /// The sandbox closed its side (we shut down the host socket's write half).
    sandbox_eof: bool,
    finished: bool,
    /// Bytes carried sandbox to host, and host to sandbox.
    moved: (usize, usize),
}

/// What the engine must do with a held SYN once its host socket has connected, or failed.
pub enum SynVerdict {
    /// Connected: a listening socket now waits for this SYN.
    Accept(Vec<u8>),
    /// Failed: feed the SYN with no listener, so that smoltcp answers RST.
    Refuse(Vec<u8>),
}

/// Default caps: a sandbox's TCP flows, and all TCP flows of one gateway (each holds up to
/// RX_BUFFER + TX_BUFFER, so 512 flows are 1 GiB at most, touched only as data flows).
pub const DEFAULT_LIMITS: FlowLimits = FlowLimits {
    per_sandbox: 128,
    per_gateway: 512,
};

pub struct TcpNat<K = FlowKey> {
    flows: FlowTable<K, Flow>,
    limits: FlowLimits,
    /// Closed smoltcp sockets to reuse (see `SPARE_SOCKETS`).
    spare: Vec<tcp::Socket<'static>>,
}

impl<K: TcpKey> Default for TcpNat<K> {
    fn default() -> Self {
        TcpNat::new(DEFAULT_LIMITS)
    }
}

impl<K: TcpKey> TcpNat<K> {
    pub fn new(limits: FlowLimits) -> Self {
        TcpNat {
            flows: FlowTable::default(),
            limits,
            spare: Vec::new(),
        }
    }

    /// May the sandbox at `ip` open one more flow, with `others` flows in the other family's
    /// table counting towards the gateway's cap? (Refused ones get RST: new connections fail
    /// fast, established ones are not touched.)
    pub fn admits(&self, ip: impl Into<IpAddr>, others: usize) -> bool {
        self.flows.count_of(ip) < self.limits.per_sandbox
            && self.flows.len() + others < self.limits.per_gateway
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn owns(&self, token: Token) -> bool {
        self.flows.owns(token)
    }

    /// Is a flow for this 4-tuple known (connecting or open)?
    pub fn knows(&self, key: &K) -> bool {
        self.flows.token_of(key).is_some()
    }

    /// A new SYN: start connecting to `target`; returns the flow's token. `Err` means the
    /// connect failed at once. A connect to the host's loopback has usually completed (or been
    /// refused) when this returns: `resolve` can tell at once, without waiting for an event.
    pub fn start(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: K,
        target: SocketAddr,
        syn: &[u8],
    ) -> io::Result<Token> {
        let host = TcpStream::connect(target)?;
        let phase = Phase::Connecting { syn: syn.to_vec() };
        self.track(registry, next_token, key, host, phase)
    }

    /// A connection accepted on a published port, already being connected into the sandbox by
    /// the smoltcp socket `handle`. `key` is the flow as the sandbox sees it.
    pub fn adopt(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: K,
        host: TcpStream,
        handle: SocketHandle,
    ) -> io::Result<()> {
        self.track(registry, next_token, key, host, Phase::Open { handle })
            .map(|_| ())
    }

    fn track(
        &mut self,
        registry: &Registry,
        next_token: &mut usize,
        key: K,
        mut host: TcpStream,
        phase: Phase,
    ) -> io::Result<Token> {
        let token = Token(*next_token);
        *next_token += 1;
        registry.register(&mut host, token, Interest::READABLE | Interest::WRITABLE)?;
        let flow = Flow {
            host,
            phase,
            host_eof: false,
            sandbox_eof: false,
            finished: false,
            moved: (0, 0),
        };
        self.flows.insert(token, key, flow);
        Ok(token)
    }

    /// A socket for a new flow: a spare one if there is one, else a new one.
    pub fn socket(&mut self) -> tcp::Socket<'static> {
        take_socket(&mut self.spare)
    }

    /// The host socket of a connecting flow reported readiness: has it connected?
    pub fn resolve(
        &mut self,
        token: Token,
        sockets: &mut SocketSet<'static>,
    ) -> Option<SynVerdict> {
        let (key, flow) = self.flows.get_mut(token)?;
        let endpoint = key.destination();
        let Phase::Connecting { syn } = &mut flow.phase else {
            return None;
        };
        let failed = matches!(flow.host.take_error(), Ok(Some(_)) | Err(_));
        let connected = !failed && flow.host.peer_addr().is_ok();
        if !failed && !connected {
            return None; // still connecting
        }
        let syn = std::mem::take(syn);
        if failed {
            flow.finished = true;
            return Some(SynVerdict::Refuse(syn));
        }
        let mut socket = take_socket(&mut self.spare);
        if socket.listen(endpoint).is_err() {
            flow.finished = true;
            return Some(SynVerdict::Refuse(syn));
        }
        flow.phase = Phase::Open {
            handle: sockets.add(socket),
        };
        Some(SynVerdict::Accept(syn))
    }

    /// Move data both ways on every open flow, and carry closes. Returns true if anything moved.
    pub fn pump(&mut self, sockets: &mut SocketSet<'static>) -> bool {
        let mut moved = false;
        for flow in self.flows.flows_mut() {
            let Phase::Open { handle } = flow.phase else {
                continue;
            };
            let socket = sockets.get_mut::<tcp::Socket>(handle);
            moved |= pump_flow(flow, socket);
        }
        moved
    }

    /// Remove finished flows; returns how many went.
    pub fn reap(&mut self, registry: &Registry, sockets: &mut SocketSet<'static>) -> usize {
        let done = self.flows.remove_where(|f| f.finished);
        let count = done.len();
        for (_, mut flow) in done {
            let _ = registry.deregister(&mut flow.host);
            if let Phase::Open { handle } = flow.phase
                && let smoltcp::socket::Socket::Tcp(socket) = sockets.remove(handle)
                && keep_spare(self.spare.len(), flow.moved)
            {
                self.spare.push(socket);
            }
        }
        count
    }
}

/// A smoltcp socket for one flow, tuned for bulk transfer.
fn new_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0u8; TX_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    // ACK every segment at once: the sandbox's window, not a timer, should pace the flow.
    socket.set_ack_delay(None);
    // A sandbox that vanished mid-connection must not pin a flow forever: probe idle flows,
    // and give up on a peer that acknowledges nothing for two minutes.
    socket.set_keep_alive(Some(smoltcp::time::Duration::from_secs(60)));
    socket.set_timeout(Some(smoltcp::time::Duration::from_secs(120)));
    socket
}

/// A spare socket, made like new, or a new one.
fn take_socket(spare: &mut Vec<tcp::Socket<'static>>) -> tcp::Socket<'static> {
    match spare.pop() {
        Some(mut socket) => {
            // Fresh congestion state (`listen` and `connect` reset the rest), and no TCP
            // timestamps unless the new flow asks for them (published ones do).
            socket.set_congestion_control(socket.congestion_control());
            socket.set_tsval_generator(None);
            socket
        }
        None => new_socket(),
    }
}

/// Should a finished flow's socket be kept, with `spares` kept already and `moved` bytes
/// carried (sandbox to host, host to sandbox)?
fn keep_spare(spares: usize, moved: (usize, usize)) -> bool {
    spares < SPARE_SOCKETS && moved.0 <= SPARE_MAX_MOVED && moved.1 <= SPARE_MAX_MOVED
}

fn pump_flow(flow: &mut Flow, socket: &mut tcp::Socket<'static>) -> bool {
    let mut moved = false;
    // Sandbox to host: hand over what the host socket takes; the rest waits in smoltcp's
    // buffer, whose window then holds the sandbox back.
    while socket.can_recv() {
        let result = socket.recv(|data| match flow.host.write(data) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match result {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => {
                flow.moved.0 = flow.moved.0.saturating_add(n);
                moved = true;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(_)) => {
                // The host peer is gone: reset the sandbox's side too.
                socket.abort();
                flow.finished = true;
                return true;
            }
        }
    }
    if !flow.sandbox_eof && !socket.may_recv() && socket.recv_queue() == 0 && socket_opened(socket)
    {
        let _ = flow.host.shutdown(Shutdown::Write);
        flow.sandbox_eof = true;
        moved = true;
    }
    // Host to sandbox: read straight into smoltcp's free transmit space.
    while !flow.host_eof && socket.can_send() {
        let result = socket.send(|space| match flow.host.read(space) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match result {
            Ok(Ok(0)) => {
                flow.host_eof = true;
                socket.close();
                moved = true;
            }
            Ok(Ok(n)) => {
                flow.moved.1 = flow.moved.1.saturating_add(n);
                moved = true;
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(_)) => {
                socket.abort();
                flow.finished = true;
                return true;
            }
            Err(_) => break,
        }
    }
    match socket.state() {
        tcp::State::Closed | tcp::State::TimeWait => {
            if !(flow.host_eof && flow.sandbox_eof) {
                // The sandbox reset the connection (or it timed out): reset the host side.
                reset_on_close(&flow.host);
            }
            flow.finished = true;
        }
        _ => {}
    }
    moved
}

/// Make the coming close of `stream` send RST instead of FIN (SO_LINGER with zero time).
fn reset_on_close(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

/// Past the handshake (a listening socket also "may not receive").
fn socket_opened(socket: &tcp::Socket) -> bool {
    !matches!(
        socket.state(),
        tcp::State::Listen | tcp::State::SynReceived | tcp::State::SynSent
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sockets_of_short_flows_are_kept_and_not_too_many() {
        assert!(keep_spare(0, (1, 1)));
        assert!(keep_spare(
            SPARE_SOCKETS - 1,
            (SPARE_MAX_MOVED, SPARE_MAX_MOVED)
        ));
        assert!(!keep_spare(SPARE_SOCKETS, (0, 0)), "enough spares");
        assert!(!keep_spare(0, (SPARE_MAX_MOVED + 1, 0)), "a bulk upload");
        assert!(!keep_spare(0, (0, SPARE_MAX_MOVED + 1)), "a bulk download");
    }

    #[test]
    fn a_spare_socket_comes_back_closed_with_its_settings() {
        let mut used = new_socket();
        // A published flow's socket had timestamps; the next flow starts without.
        used.set_tsval_generator(Some(|| 1));
        let mut spare = vec![used];
        let socket = take_socket(&mut spare);
        assert!(spare.is_empty());
        assert_eq!(socket.state(), tcp::State::Closed);
        assert!(!socket.timestamp_enabled());
        assert_eq!(socket.ack_delay(), None);
        assert!(!socket.nagle_enabled());
        assert_eq!(socket.recv_capacity(), RX_BUFFER);
        assert_eq!(socket.send_capacity(), TX_BUFFER);
        let fresh = take_socket(&mut spare);
        assert_eq!(fresh.keep_alive(), socket.keep_alive());
    }
}
