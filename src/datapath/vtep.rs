//! A userspace VTEP: one UDP socket (the daemon's `--vtep`, or a network's `--opt vtep=`) serving
//! every overlay network bound to it, told apart by VNI. For the switch it is a port like the
//! gateway: one end of a SOCK_SEQPACKET socketpair per network, frames with a virtio-net header.
//!
//! Why a thread of its own and not a port kind in the workers: the VTEP keeps state the workers
//! do not have (remote MACs against their VTEPs, peers, one socket for many networks, segmenting
//! super-frames), and a socketpair port leaves the hot path of local switching untouched. The
//! price is one copy through the socketpair per frame.
//!
//! Out (switch to wire): a frame is segmented to wire size (`offload::Segmenter`, checksums
//! completed), its destination looked up in the network's remote table: a known MAC goes to its
//! VTEP, anything else to every peer (head-end replication). The UDP source port is chosen by a
//! hash of the inner flow among a few sockets bound to ephemeral ports, so underlay ECMP spreads
//! flows and keeps each in order.
//!
//! In (wire to switch): only packets from a peer are taken; the header is checked (flags, a
//! known VNI), the inner frame parsed as a TAP frame would be, the source MAC learned against
//! the sending peer, and the frame handed to the switch. Everything dropped is counted.
//!
//! With a cluster store (`daemon --store`), the controller also hands each network the VTEPs of
//! the other hosts' endpoints (added to the static peers) and their MACs (a table of its own that
//! never ages and is looked up first), so frames to them go straight to their VTEP without a
//! flood; ARP requests and Neighbour Solicitations for their addresses are answered here, as
//! libnetwork's overlay does for ARP, and never cross the underlay.
//!
//! Either family on either side: the VTEP's address (and so its sockets and peers) may be IPv4
//! or IPv6, and the frames it carries IPv4 or IPv6. Neighbour Discovery's multicast (solicited-
//! node addresses) is flooded to the peers like ARP's broadcast; unicast replies are learned.
//!
//! The network's gateway is local on every host (an anycast gateway: same address and MAC on
//! each): frames from its MAC neither leave nor enter through the VTEP.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::coalesce::Coalescer;
use super::frame;
use super::vxlan::{self, DecapError, HEADER_LEN};
use crate::error::{Context, Result};
use crate::offload::Segmenter;
use crate::offload::checksum::{fold, pseudo_header_v6, sum as checksum_sum};
use crate::wire::{
    ArpPacket, ETH_HDR_LEN, Ethernet, MAX_FRAME_LEN, MacAddr, VNET_HDR_LEN, arp, ethertype,
};

/// Socket buffers of the VTEP's UDP sockets.
const SOCKET_BUF: usize = 8 << 20;
/// Sockets that send, each on its own ephemeral port: the flow hash picks one.
const TX_SOCKETS: usize = 8;
/// Remote stations one network learns at most; more are flooded, not learned.
const MAX_REMOTE_MACS: usize = 4096;
const SOCKET: Token = Token(0);
const WAKER: Token = Token(1);
/// Where a datagram is received in `rx`: its VXLAN header (8 bytes) ends where a virtio-net
/// header (12) would, so the inner frame needs no move.
const AT: usize = VNET_HDR_LEN - HEADER_LEN;
/// Network slots start here.
const FIRST_NET: usize = 2;

/// Counters of one VTEP, relaxed atomics read by `network inspect`.
#[derive(Default, Debug)]
pub struct VtepStats {
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
    /// Runts and frames `frame::parse` refuses.
    pub rx_malformed: AtomicU64,
    /// Flags other than the I flag alone.
    pub rx_bad_flags: AtomicU64,
    /// A VNI no network of this VTEP has.
    pub rx_foreign_vni: AtomicU64,
    /// From an address that is no peer of the network.
    pub rx_unknown_peer: AtomicU64,
    /// Super-frames the segmenter refused, and sends the kernel refused.
    pub tx_dropped: AtomicU64,
    /// Received frames the switch port had no room for.
    pub rx_dropped: AtomicU64,
    /// ARP requests for remote addresses the cluster store knows, answered locally.
    pub arp_answered: AtomicU64,
    /// Neighbour Solicitations for remote IPv6 addresses the cluster store knows, answered
    /// locally.
    pub nd_answered: AtomicU64,
}

/// One remote station as `network inspect` shows it.
#[derive(Clone, Debug)]
pub struct RemoteRow {
    pub mac: MacAddr,
    pub vtep: SocketAddr,
    pub age_s: u64,
}

/// What the cluster store knows of a network's other hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    /// VTEPs of the other hosts' endpoints: peers beside the static ones.
    pub peers: Vec<SocketAddr>,
    /// The other hosts' endpoints' MACs against their VTEPs.
    pub stations: HashMap<MacAddr, SocketAddr>,
    /// Their addresses' MACs: ARP for these is answered locally.
    pub addresses: HashMap<std::net::Ipv4Addr, MacAddr>,
    /// Their IPv6 addresses' MACs: Neighbour Solicitations for these are answered locally.
    pub addresses6: HashMap<Ipv6Addr, MacAddr>,
}

/// The ARP reply for `frame` (an Ethernet frame) when it is an ARP request for an address of
/// `table`; None for anything else (gratuitous ARP included).
pub fn proxy_arp(frame: &[u8], table: &HashMap<std::net::Ipv4Addr, MacAddr>) -> Option<[u8; 42]> {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::ARP {
        return None;
    }
    let req = ArpPacket::new_checked(eth.payload()).ok()?;
    if !req.is_request() || req.sender_ip() == req.target_ip() {
        return None;
    }
    let mac = *table.get(&req.target_ip())?;
    let mut r = [0u8; ETH_HDR_LEN + arp::PACKET_LEN];
    r[0..6].copy_from_slice(&req.sender_mac().0);
    r[6..12].copy_from_slice(&mac.0);
    r[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    r[ETH_HDR_LEN..].copy_from_slice(&arp::packet(
        arp::OP_REPLY,
        (mac, req.target_ip()),
        (req.sender_mac(), req.sender_ip()),
    ));
    Some(r)
}

/// Length of a Neighbour Advertisement with the target link-layer address option, framed.
pub const NA_FRAME_LEN: usize = ETH_HDR_LEN + IPV6_HDR_LEN + NA_LEN;
const IPV6_HDR_LEN: usize = 40;
/// ICMPv6 type, code, checksum, flags, target, and the 8-byte option.
const NA_LEN: usize = 4 + 4 + 16 + 8;
const PROTO_ICMPV6: u8 = 58;
const NEIGHBOR_SOLICIT: u8 = 135;
const NEIGHBOR_ADVERT: u8 = 136;
/// Solicited and Override (RFC 4861 section 4.4); never Router: the answer is for a host.
const NA_SOLICITED_OVERRIDE: u8 = 0x60;
const OPT_TARGET_LL: u8 = 2;

/// The Neighbour Advertisement for `frame` (an Ethernet frame) when it is a Neighbour
/// Solicitation for an address of `table`, as the remote station would send it; None for
/// anything else. Checked as RFC 4861 section 7.1.1 asks (hop limit 255, code 0, a target
/// that is no multicast address) but the checksum: a bad one gets an answer the asker drops.
/// Duplicate address detection (from the unspecified address) is not answered: it is flooded
/// to the host that holds the address, which answers for itself.
pub fn proxy_ndp(frame: &[u8], table: &HashMap<Ipv6Addr, MacAddr>) -> Option<[u8; NA_FRAME_LEN]> {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::IPV6 {
        return None;
    }
    let ip = eth.payload();
    let icmp = ip.get(IPV6_HDR_LEN..)?;
    let payload_len = usize::from(u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]));
    if ip[0] >> 4 != 6
        || ip[6] != PROTO_ICMPV6
        || ip[7] != 255
        || payload_len < 24
        || payload_len > icmp.len()
        || icmp[0] != NEIGHBOR_SOLICIT
        || icmp[1] != 0
    {
        return None;
    }
    let octets = |b: &[u8]| -> Option<[u8; 16]> { b.try_into().ok() };
    let asker = Ipv6Addr::from(octets(&ip[8..24])?);
    let target = Ipv6Addr::from(octets(&icmp[8..24])?);
    if asker.is_unspecified() || target.is_multicast() {
        return None;
    }
    let mac = *table.get(&target)?;
    let mut r = [0u8; NA_FRAME_LEN];
    r[0..6].copy_from_slice(&eth.src().0);
    r[6..12].copy_from_slice(&mac.0);
    r[12..14].copy_from_slice(&ethertype::IPV6.to_be_bytes());
    let v6 = &mut r[ETH_HDR_LEN..];
    v6[0] = 0x60;
    v6[4..6].copy_from_slice(&(NA_LEN as u16).to_be_bytes());
    v6[6] = PROTO_ICMPV6;
    v6[7] = 255;
    v6[8..24].copy_from_slice(&target.octets());
    v6[24..40].copy_from_slice(&asker.octets());
    let na = &mut v6[IPV6_HDR_LEN..];
    na[0] = NEIGHBOR_ADVERT;
    na[4] = NA_SOLICITED_OVERRIDE;
    na[8..24].copy_from_slice(&target.octets());
    na[24] = OPT_TARGET_LL;
    na[25] = 1;
    na[26..32].copy_from_slice(&mac.0);
    let pseudo = pseudo_header_v6(
        &target.octets(),
        &asker.octets(),
        PROTO_ICMPV6,
        NA_LEN as u32,
    );
    let sum = !fold(checksum_sum(pseudo, na));
    na[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(r)
}

/// The body of the `vtep_proxy` fuzz target, here so unit tests run it too: any frame a
/// sandbox may send is answered or not by the proxies, never a panic, and an answer goes to
/// the asker from the station asked for. The tables hold whatever address the frame asks for.
pub fn check_arbitrary_frame(frame: &[u8]) {
    let station = MacAddr([2, 0, 0, 0, 0, 0x99]);
    let mut v4 = HashMap::new();
    if let Some(t) = frame.get(38..42).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        v4.insert(std::net::Ipv4Addr::from(t), station);
    }
    if let Some(r) = proxy_arp(frame, &v4) {
        assert_eq!(&r[0..6], &frame[6..12]);
        assert_eq!(&r[6..12], &station.0);
    }
    let mut v6 = HashMap::new();
    if let Some(t) = frame.get(62..78).and_then(|b| <[u8; 16]>::try_from(b).ok()) {
        v6.insert(Ipv6Addr::from(t), station);
    }
    if let Some(r) = proxy_ndp(frame, &v6) {
        assert_eq!(&r[0..6], &frame[6..12]);
        assert_eq!(&r[6..12], &station.0);
        // The checksum holds: summed with it, the message folds to all ones.
        let pseudo = pseudo_header_v6(
            &octets16(&r[22..38]),
            &octets16(&r[38..54]),
            PROTO_ICMPV6,
            NA_LEN as u32,
        );
        assert_eq!(fold(checksum_sum(pseudo, &r[54..])), 0xffff);
    }
}

fn octets16(b: &[u8]) -> [u8; 16] {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[..16]);
    o
}

pub struct NetworkSpec {
    pub vni: u32,
    /// The VTEP's end of the network's switch port.
    pub fd: OwnedFd,
    pub peers: Vec<SocketAddr>,
    pub mtu: usize,
    pub aging: Duration,
    /// The network's anycast gateway: never carried between hosts.
    pub gateway_mac: Option<MacAddr>,
    /// Coalesce received TCP segments into super-frames (the network's TAPs take offloads).
    pub coalesce: bool,
}

enum Command {
    Add(Box<NetworkSpec>),
    Remove(u32, Sender<()>),
    Remotes(u32, Sender<Vec<RemoteRow>>),
    Cluster(u32, Box<ClusterView>),
    Stop,
}

/// The control plane's handle of a VTEP thread. Dropping it stops the thread.
pub struct Vtep {
    pub stats: Arc<VtepStats>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    vnis: Vec<u32>,
}

impl Vtep {
    /// Bind `addr` and start the VTEP's thread.
    pub fn start(addr: SocketAddr) -> Result<Vtep> {
        let socket = UdpSocket::bind(addr).context(|| format!("bind VTEP {addr}"))?;
        let tx = (0..TX_SOCKETS)
            .map(|_| {
                let s = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
                    .context(|| format!("bind VTEP send socket on {}", addr.ip()))?;
                s.set_nonblocking(true)
                    .context(|| "VTEP send socket".into())?;
                Ok(s)
            })
            .collect::<Result<Vec<_>>>()?;
        socket
            .set_nonblocking(true)
            .context(|| format!("VTEP {addr}"))?;
        // Let the kernel hand over bursts of datagrams in one receive where it can (UDP_GRO);
        // without it each datagram comes alone, which works the same.
        let _ =
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::UdpGroSegment, &true);
        // Bursts of a whole super-frame's segments arrive at once: room for many of them.
        // FORCE passes rmem_max where the daemon may (root); the plain call is capped by it.
        {
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUF).is_err() {
                let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUF);
            }
            for s in &tx {
                if setsockopt(s, sockopt::SndBufForce, &SOCKET_BUF).is_err() {
                    let _ = setsockopt(s, sockopt::SndBuf, &SOCKET_BUF);
                }
            }
        }
        let mut socket = mio::net::UdpSocket::from_std(socket);
        let poll = Poll::new().context(|| "create VTEP poll".into())?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).context(|| "create VTEP waker".into())?);
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .context(|| format!("poll VTEP {addr}"))?;
        let (commands, rx) = crossbeam_channel::unbounded();
        let stats = Arc::new(VtepStats::default());
        let mut engine = Engine {
            poll,
            socket,
            tx,
            commands: rx,
            nets: Vec::new(),
            by_vni: HashMap::new(),
            stats: stats.clone(),
            seg: Segmenter::new(),
            rx: vec![0u8; MAX_FRAME_LEN + HEADER_LEN].into_boxed_slice(),
            out: vec![0u8; MAX_FRAME_LEN + HEADER_LEN].into_boxed_slice(),
            gso: true,
            cmsg: nix::cmsg_space!(i32),
        };
        let name = format!("vtep-{}", addr.port());
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                crate::guard::guarded(&name, || engine.run());
            })
            .context(|| "start VTEP thread".into())?;
        Ok(Vtep {
            stats,
            commands,
            waker,
            thread: Some(thread),
            vnis: Vec::new(),
        })
    }

    fn send(&self, c: Command) {
        let _ = self.commands.send(c);
        let _ = self.waker.wake();
    }

    pub fn add_network(&mut self, spec: NetworkSpec) {
        self.vnis.push(spec.vni);
        self.send(Command::Add(Box::new(spec)));
    }

    /// Remove a network; returns once the thread has closed its end of the switch port.
    pub fn remove_network(&mut self, vni: u32) {
        self.vnis.retain(|v| *v != vni);
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(Command::Remove(vni, done));
        let _ = wait.recv_timeout(Duration::from_secs(2));
    }

    /// Does any network still use this VTEP?
    pub fn is_empty(&self) -> bool {
        self.vnis.is_empty()
    }

    /// Replace what the cluster store says of network `vni`'s other hosts.
    pub fn set_cluster(&self, vni: u32, view: ClusterView) {
        self.send(Command::Cluster(vni, Box::new(view)));
    }

    /// The remote stations the network has learned.
    pub fn remotes(&self, vni: u32) -> Vec<RemoteRow> {
        let (reply, wait) = crossbeam_channel::bounded(1);
        self.send(Command::Remotes(vni, reply));
        wait.recv_timeout(Duration::from_secs(2))
            .unwrap_or_default()
    }
}

impl Drop for Vtep {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Net {
    spec: NetworkSpec,
    /// Remote MAC -> (its VTEP, last seen).
    remote: HashMap<MacAddr, (SocketAddr, Instant)>,
    /// The static peers (`spec.peers` is these and the cluster's).
    static_peers: Vec<SocketAddr>,
    /// Remote MACs from the cluster store: never aged, looked up first.
    stations: HashMap<MacAddr, SocketAddr>,
    /// Remote addresses from the cluster store: ARP for them is answered here.
    addresses: HashMap<std::net::Ipv4Addr, MacAddr>,
    /// Remote IPv6 addresses from the cluster store: Neighbour Solicitations for them are
    /// answered here.
    addresses6: HashMap<Ipv6Addr, MacAddr>,
    /// Received TCP segments waiting to become one super-frame.
    gro: Coalescer,
}

struct Engine {
    poll: Poll,
    socket: mio::net::UdpSocket,
    tx: Vec<UdpSocket>,
    commands: Receiver<Command>,
    /// Slot i serves token FIRST_NET + i.
    nets: Vec<Option<Net>>,
    by_vni: HashMap<u32, usize>,
    stats: Arc<VtepStats>,
    seg: Segmenter,
    rx: Box<[u8]>,
    out: Box<[u8]>,
    /// Send with UDP GSO (until the kernel refuses it).
    gso: bool,
    /// Control messages of `recvmsg` (the UDP_GRO segment size), allocated once.
    cmsg: Vec<u8>,
}

impl Engine {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        let mut last_aging = Instant::now();
        loop {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tapnet: VTEP poll: {e}");
                return;
            }
            for ev in &events {
                match ev.token() {
                    SOCKET => self.decap_from_wire(),
                    WAKER => {}
                    Token(t) => self.encap_from_switch(t - FIRST_NET),
                }
            }
            if !self.commands() {
                return;
            }
            if last_aging.elapsed() >= Duration::from_millis(500) {
                last_aging = Instant::now();
                self.age();
            }
        }
    }

    /// Apply queued commands; false on Stop.
    fn commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Add(spec) => {
                    let slot = match self.nets.iter().position(Option::is_none) {
                        Some(i) => i,
                        None => {
                            self.nets.push(None);
                            self.nets.len() - 1
                        }
                    };
                    let raw = spec.fd.as_raw_fd();
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&raw),
                        Token(FIRST_NET + slot),
                        Interest::READABLE,
                    ) {
                        eprintln!("tapnet: VTEP: cannot poll network VNI {}: {e}", spec.vni);
                        continue;
                    }
                    self.by_vni.insert(spec.vni, slot);
                    let static_peers = spec.peers.clone();
                    self.nets[slot] = Some(Net {
                        spec: *spec,
                        static_peers,
                        stations: HashMap::new(),
                        addresses: HashMap::new(),
                        addresses6: HashMap::new(),
                        remote: HashMap::with_capacity(MAX_REMOTE_MACS),
                        gro: Coalescer::new(),
                    });
                    // Frames may have queued before registration (edge-triggered poll).
                    self.encap_from_switch(slot);
                }
                Command::Remove(vni, done) => {
                    if let Some(slot) = self.by_vni.remove(&vni)
                        && let Some(net) = self.nets[slot].take()
                    {
                        let raw = net.spec.fd.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                    }
                    let _ = done.send(());
                }
                Command::Remotes(vni, reply) => {
                    let now = Instant::now();
                    let rows = self
                        .by_vni
                        .get(&vni)
                        .and_then(|s| self.nets[*s].as_ref())
                        .map(|n| {
                            let mut rows: Vec<RemoteRow> = n
                                .remote
                                .iter()
                                .map(|(mac, (vtep, seen))| RemoteRow {
                                    mac: *mac,
                                    vtep: *vtep,
                                    age_s: now.duration_since(*seen).as_secs(),
                                })
                                .collect();
                            rows.sort_by_key(|r| r.mac.to_u64());
                            rows
                        })
                        .unwrap_or_default();
                    let _ = reply.send(rows);
                }
                Command::Cluster(vni, view) => {
                    if let Some(net) = self.by_vni.get(&vni).and_then(|s| self.nets[*s].as_mut()) {
                        let mut peers = net.static_peers.clone();
                        for p in view.peers {
                            if !peers.contains(&p) {
                                peers.push(p);
                            }
                        }
                        net.spec.peers = peers;
                        net.stations = view.stations;
                        net.addresses = view.addresses;
                        net.addresses6 = view.addresses6;
                    }
                }
                Command::Stop => return false,
            }
        }
        true
    }

    fn age(&mut self) {
        let now = Instant::now();
        for net in self.nets.iter_mut().flatten() {
            let aging = net.spec.aging;
            net.remote
                .retain(|_, (_, seen)| now.duration_since(*seen) < aging);
        }
    }

    /// Packets from the underlay: check, learn, hand to the switch.
    fn decap_from_wire(&mut self) {
        loop {
            let Some((n, from, seg)) = self.receive() else {
                self.flush_coalesced();
                return;
            };
            // With UDP_GRO the kernel hands over several datagrams of `seg` bytes back to back
            // (the last may be shorter). Each is taken where it lies: its virtio-net header
            // overwrites the 4 last bytes of the one before, which is done with by then.
            let seg = if seg == 0 { n } else { seg };
            let mut start = 0;
            while start < n {
                let len = seg.min(n - start);
                self.take(start, len, from);
                start += len;
            }
        }
    }

    /// One `recvmsg` into `rx` at [`AT`]: bytes, sender, and the datagram size when the kernel
    /// coalesced several (UDP_GRO), else 0. `None` when nothing is waiting.
    fn receive(&mut self) -> Option<(usize, SocketAddr, usize)> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg};
        let mut iov = [std::io::IoSliceMut::new(&mut self.rx[AT..])];
        let msg = recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        // Address and port only: peers are compared with it, and an IPv6 sender's flow label
        // and scope must not make it a stranger (nor a v4-mapped one on a socket bound to ::).
        let from = msg.address.and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::new(v4.ip().into(), v4.port()))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::new(v6.ip().to_canonical(), v6.port()))
                })
        })?;
        let mut seg = 0;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::UdpGroSegments(size) = c {
                    seg = usize::try_from(size).unwrap_or(0);
                }
            }
        }
        Some((msg.bytes, from, seg))
    }

    /// Check, learn and pass on the datagram at `rx[base + AT..base + AT + n]`; its frame goes
    /// to the switch from `rx[base..]`, behind a zero virtio-net header.
    fn take(&mut self, base: usize, n: usize, from: SocketAddr) {
        let (vni, inner_len) = match vxlan::decap(&self.rx[base + AT..base + AT + n]) {
            Ok((vni, inner)) => (vni, inner.len()),
            Err(DecapError::Runt) => {
                self.stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(DecapError::BadFlags) => {
                self.stats.rx_bad_flags.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let Some(net) = self.by_vni.get(&vni).and_then(|s| self.nets[*s].as_mut()) else {
            self.stats.rx_foreign_vni.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // Learn against the peer's VXLAN port, not the packet's (flow-hashed) source port.
        let Some(peer) = net
            .spec
            .peers
            .iter()
            .find(|p| **p == from)
            .or_else(|| net.spec.peers.iter().find(|p| p.ip() == from.ip()))
            .copied()
        else {
            self.stats.rx_unknown_peer.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.rx[base..base + VNET_HDR_LEN].fill(0);
        let buf = &self.rx[base..base + VNET_HDR_LEN + inner_len];
        let Ok(info) = frame::parse(buf, net.spec.mtu) else {
            self.stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if Some(info.src) == net.spec.gateway_mac {
            return;
        }
        let now = Instant::now();
        if net.stations.contains_key(&info.src) {
            // Known from the store: nothing to learn.
        } else if let Some(e) = net.remote.get_mut(&info.src) {
            *e = (peer, now);
        } else if net.remote.len() < MAX_REMOTE_MACS {
            net.remote.insert(info.src, (peer, now));
        }
        self.stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        let fd = net.spec.fd.as_raw_fd();
        if net.spec.coalesce {
            net.gro.push(buf, &mut |b| to_switch(fd, b, &self.stats));
        } else {
            to_switch(fd, buf, &self.stats);
        }
    }

    /// Hand every pending super-frame to its switch: the burst is over.
    fn flush_coalesced(&mut self) {
        for net in self.nets.iter_mut().flatten() {
            let fd = net.spec.fd.as_raw_fd();
            net.gro.flush(&mut |b| to_switch(fd, b, &self.stats));
        }
    }

    /// Frames from the switch: segment, encapsulate, send to one VTEP or every peer. The
    /// segments of one super-frame leave in one `sendmsg` per destination with UDP GSO.
    fn encap_from_switch(&mut self, slot: usize) {
        let Some(Some(net)) = self.nets.get(slot) else {
            return;
        };
        let fd = net.spec.fd.as_raw_fd();
        loop {
            // SAFETY: rx is valid for writes of its length; fd is owned by the net.
            let n = unsafe { libc::read(fd, self.rx.as_mut_ptr().cast(), self.rx.len()) };
            if n <= 0 {
                return;
            }
            let n = n as usize;
            let Some(Some(net)) = self.nets.get(slot) else {
                return;
            };
            if !net.addresses.is_empty()
                && let Some(reply) = self
                    .rx
                    .get(VNET_HDR_LEN..n)
                    .and_then(|f| proxy_arp(f, &net.addresses))
            {
                let mut out = [0u8; VNET_HDR_LEN + 42];
                out[VNET_HDR_LEN..].copy_from_slice(&reply);
                to_switch(fd, &out, &self.stats);
                self.stats.arp_answered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if !net.addresses6.is_empty()
                && let Some(reply) = self
                    .rx
                    .get(VNET_HDR_LEN..n)
                    .and_then(|f| proxy_ndp(f, &net.addresses6))
            {
                let mut out = [0u8; VNET_HDR_LEN + NA_FRAME_LEN];
                out[VNET_HDR_LEN..].copy_from_slice(&reply);
                to_switch(fd, &out, &self.stats);
                self.stats.nd_answered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut batch = Batch {
                net,
                out: &mut self.out,
                tx: &self.tx,
                stats: &self.stats,
                gso: &mut self.gso,
                len: 0,
                seg: 0,
                count: 0,
                closed: false,
            };
            let result = self.seg.segment(&self.rx[..n], &mut |seg: &[u8]| {
                batch.push(&seg[VNET_HDR_LEN..]);
            });
            batch.flush();
            if result.is_err() {
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Write one frame (virtio-net header included) to a network's switch port; a full socket drops
/// it, counted.
fn to_switch(fd: std::os::fd::RawFd, frame: &[u8], stats: &VtepStats) {
    // SAFETY: frame is valid for reads of its length; fd is a network's open socketpair end.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The largest UDP payload one GSO send may carry, and the kernel's segment limit.
const GSO_MAX_BYTES: usize = 65507;
const GSO_MAX_SEGMENTS: usize = 64;

/// Encapsulated packets of one destination, back to back in `out`, all `seg` bytes long but
/// the last: what one `sendmsg` with `UDP_SEGMENT` sends as that many datagrams.
struct Batch<'a> {
    net: &'a Net,
    out: &'a mut [u8],
    tx: &'a [UdpSocket],
    stats: &'a VtepStats,
    /// Does the kernel take UDP_SEGMENT? Cleared for good at the first refusal.
    gso: &'a mut bool,
    len: usize,
    seg: usize,
    count: usize,
    /// A shorter packet ended the batch.
    closed: bool,
}

impl Batch<'_> {
    fn push(&mut self, frame: &[u8]) {
        let eth = match Ethernet::new_checked(frame) {
            Ok(eth) if frame.len() + HEADER_LEN <= self.out.len() => eth,
            _ => {
                self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // The anycast gateway stays home.
        if self.net.spec.gateway_mac == Some(eth.src()) {
            return;
        }
        let size = HEADER_LEN + frame.len();
        if self.count > 0
            && (!*self.gso
                || self.closed
                || size > self.seg
                || self.len + size > GSO_MAX_BYTES
                || self.count == GSO_MAX_SEGMENTS
                || eth.dst().0 != self.out[HEADER_LEN..HEADER_LEN + 6])
        {
            self.flush();
        }
        if self.count == 0 {
            self.seg = size;
        } else if size < self.seg {
            self.closed = true;
        }
        let at = self.len;
        self.out[at..at + HEADER_LEN].copy_from_slice(&vxlan::header(self.net.spec.vni));
        self.out[at + HEADER_LEN..at + size].copy_from_slice(frame);
        self.len += size;
        self.count += 1;
    }

    fn flush(&mut self) {
        if self.count == 0 {
            return;
        }
        let first = &self.out[HEADER_LEN..self.seg];
        let socket = &self.tx[usize::from(vxlan::source_port(first)) % self.tx.len()];
        // `push` took only frames with an Ethernet header: the fallback (flood) is never used.
        let dst = Ethernet::new_checked(first).map_or(MacAddr::BROADCAST, |e| e.dst());
        let known = (!dst.is_multicast())
            .then(|| {
                self.net
                    .stations
                    .get(&dst)
                    .or_else(|| self.net.remote.get(&dst).map(|(vtep, _)| vtep))
            })
            .flatten();
        match known {
            Some(vtep) => self.send(socket, vtep),
            None => {
                for peer in &self.net.spec.peers {
                    self.send(socket, peer);
                }
            }
        }
        self.len = 0;
        self.count = 0;
        self.closed = false;
    }

    fn send(&mut self, socket: &UdpSocket, to: &SocketAddr) {
        let count = self.count as u64;
        if self.count > 1 && *self.gso {
            match send_segments(socket, &self.out[..self.len], self.seg as u16, to) {
                Ok(_) => {
                    self.stats.tx_packets.fetch_add(count, Ordering::Relaxed);
                    return;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT)
                    ) =>
                {
                    // No UDP GSO here: one datagram each from now on.
                    *self.gso = false;
                }
                Err(_) => {
                    self.stats.tx_dropped.fetch_add(count, Ordering::Relaxed);
                    return;
                }
            }
        }
        for packet in self.out[..self.len].chunks(self.seg) {
            match socket.send_to(packet, to) {
                Ok(_) => self.stats.tx_packets.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.tx_dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

/// One `sendmsg` of `buf` to `to`, cut by the kernel into datagrams of `seg` bytes (the last
/// may be shorter): UDP GSO, a control message of type `UDP_SEGMENT`.
fn send_segments(
    socket: &UdpSocket,
    buf: &[u8],
    seg: u16,
    to: &SocketAddr,
) -> std::io::Result<usize> {
    use nix::sys::socket::{SockaddrLike, SockaddrStorage};
    let addr = SockaddrStorage::from(*to);
    let mut iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsghdr and a u16, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = addr.as_ptr() as *mut libc::c_void;
    msg.msg_namelen = addr.len();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: the CMSG_ macros compute sizes and walk the control buffer set up above, which
    // holds one header and a u16 (CMSG_SPACE(2) is at most 32 bytes).
    let n = unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(2) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let sha = [2, 0, 0, 0, 0, 1];
        let mut f = vec![0xff; 6];
        f.extend(sha);
        f.extend([0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend(sha);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend(tpa);
        f
    }

    #[test]
    fn arp_for_a_known_remote_address_is_answered_and_nothing_else() {
        let remote = MacAddr([2, 0, 0, 0, 0, 9]);
        let table = HashMap::from([(std::net::Ipv4Addr::new(10, 0, 0, 9), remote)]);
        let r = proxy_arp(&arp_request([10, 0, 0, 1], [10, 0, 0, 9]), &table).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1], "to the asker");
        assert_eq!(&r[6..12], &remote.0);
        assert_eq!(&r[20..22], &[0, 2], "a reply");
        assert_eq!(&r[22..28], &remote.0, "sender is the remote station");
        assert_eq!(&r[28..32], &[10, 0, 0, 9]);
        assert_eq!(&r[38..42], &[10, 0, 0, 1]);
        // Unknown address, gratuitous ARP, a reply, a runt: not answered.
        assert!(proxy_arp(&arp_request([10, 0, 0, 1], [10, 0, 0, 8]), &table).is_none());
        assert!(proxy_arp(&arp_request([10, 0, 0, 9], [10, 0, 0, 9]), &table).is_none());
        let mut reply = arp_request([10, 0, 0, 1], [10, 0, 0, 9]);
        reply[21] = 2;
        assert!(proxy_arp(&reply, &table).is_none());
        assert!(proxy_arp(&reply[..30], &table).is_none());
    }

    /// A Neighbour Solicitation from fd00::1 (02:..:01) for `target`, to its solicited-node
    /// multicast address, with the source link-layer option.
    fn solicitation(asker: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let sha = [2, 0, 0, 0, 0, 1];
        let t = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
        f.extend(sha);
        f.extend([0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend(asker.octets());
        f.extend(group.octets());
        f.extend([NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0]);
        f.extend(t);
        f.extend([1, 1]);
        f.extend(sha);
        f
    }

    #[test]
    fn a_solicitation_for_a_known_remote_address_is_answered_and_nothing_else() {
        let remote = MacAddr([2, 0, 0, 0, 0, 9]);
        let (asker, target) = ("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let table = HashMap::from([(target, remote)]);
        let ns = solicitation(asker, target);
        let r = proxy_ndp(&ns, &table).unwrap();
        assert_eq!(&r[0..6], &[2, 0, 0, 0, 0, 1], "to the asker");
        assert_eq!(&r[6..12], &remote.0, "from the remote station");
        assert_eq!(&r[22..38], &target.octets(), "from the target address");
        assert_eq!(&r[38..54], &asker.octets(), "to the asker's address");
        assert_eq!(r[21], 255, "hop limit");
        assert_eq!(
            (r[54], r[58]),
            (NEIGHBOR_ADVERT, 0x60),
            "solicited, override"
        );
        assert_eq!(&r[62..78], &target.octets());
        assert_eq!(&r[78..80], &[OPT_TARGET_LL, 1]);
        assert_eq!(&r[80..86], &remote.0);
        check_arbitrary_frame(&ns);
        // Unknown target, duplicate address detection, a forwarded one (hop limit), a runt, an
        // advertisement: not answered.
        let other = solicitation(asker, "fd00::8".parse().unwrap());
        assert!(proxy_ndp(&other, &table).is_none());
        assert!(proxy_ndp(&solicitation(Ipv6Addr::UNSPECIFIED, target), &table).is_none());
        let mut hop = ns.clone();
        hop[21] = 254;
        assert!(proxy_ndp(&hop, &table).is_none());
        assert!(proxy_ndp(&ns[..70], &table).is_none());
        let mut na = ns.clone();
        na[54] = NEIGHBOR_ADVERT;
        assert!(proxy_ndp(&na, &table).is_none());
        // Nor an ARP request, nor by the ARP proxy.
        assert!(proxy_ndp(&arp_request([10, 0, 0, 1], [10, 0, 0, 9]), &table).is_none());
        assert!(proxy_arp(&ns, &HashMap::new()).is_none());
    }

    #[test]
    fn arbitrary_frames_never_panic_the_proxies() {
        let mut rng = crate::test_rng::XorShift(0x2545_f491_4f6c_dd1d);
        let seed = solicitation("fd00::1".parse().unwrap(), "fd00::9".parse().unwrap());
        let mut buf = [0u8; 120];
        for i in 0..20_000 {
            let len = i % buf.len();
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            // Half of them start as a valid solicitation with some bytes changed.
            if i % 2 == 0 {
                let n = len.min(seed.len());
                buf[..n].copy_from_slice(&seed[..n]);
                let at = (rng.next() as usize) % len.max(1);
                if at < len {
                    buf[at] = rng.next() as u8;
                }
            }
            check_arbitrary_frame(&buf[..len]);
        }
    }
}
