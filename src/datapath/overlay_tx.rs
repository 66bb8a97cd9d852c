//! The way out of an overlay network, run by the datapath worker that switched the frame: a
//! frame for the network's VTEP port is segmented to wire size (`offload::Segmenter`,
//! checksums completed), its destination looked up in the network's table (a known MAC goes
//! to its VTEP, anything else to every peer: head-end replication), encapsulated, and sent.
//! Packets of one flow to one destination, the segments of a super-frame or the small frames
//! a worker switches in one round, are queued back to back and leave in one `sendmsg` with UDP
//! GSO, at the latest when the worker's round ends (`Port::flush` -> `OverlayNet::flush`).
//!
//! The UDP source port is chosen by a hash of the inner flow among a few sockets bound to
//! ephemeral ports, so underlay ECMP spreads flows and keeps each in order, and the receiving
//! VTEP's `SO_REUSEPORT` group hands each flow to one of its workers.
//!
//! ARP requests and Neighbour Solicitations for remote addresses the cluster store knows are
//! answered here and never cross the underlay (as libnetwork's overlay does for ARP).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::overlay_net::{OverlayNet, Table};
use super::vtep::{NA_FRAME_LEN, VtepStats, proxy_arp, proxy_ndp};
use super::vxlan::{self, HEADER_LEN};
use crate::offload::Segmenter;
use crate::wire::{Ethernet, MAX_FRAME_LEN, VNET_HDR_LEN};

/// The largest UDP payload one GSO send may carry, and the kernel's segment limit.
const GSO_MAX_BYTES: usize = 65507;
const GSO_MAX_SEGMENTS: usize = 64;

/// What the workers send a VTEP's packets with.
pub struct VtepTx {
    sockets: Vec<UdpSocket>,
    /// Does the kernel take UDP_SEGMENT? Cleared for good at the first refusal.
    gso: AtomicBool,
    /// Datapath workers: each network has a `Scratch` slot per worker.
    pub(super) workers: usize,
    pub stats: Arc<VtepStats>,
}

/// One worker's segmenter and the packets it has queued for one network in this round.
pub(super) struct Scratch {
    seg: Segmenter,
    pending: Pending,
}

impl VtepTx {
    pub fn new(sockets: Vec<UdpSocket>, workers: usize, stats: Arc<VtepStats>) -> VtepTx {
        VtepTx {
            sockets,
            gso: AtomicBool::new(true),
            workers: workers.max(1),
            stats,
        }
    }

    #[cfg(test)]
    pub fn for_tests() -> VtepTx {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        VtepTx::new(vec![socket], 1, Arc::new(VtepStats::default()))
    }
}

impl OverlayNet {
    /// A frame (virtio-net header included) the switch sends to the network's VTEP port,
    /// through worker `worker`. Its packets join what the worker queued in this round when
    /// they go to the same place (one UDP GSO send), else the queue goes first; `flush` sends
    /// the rest at the end of the round.
    pub fn send(&self, worker: usize, frame: &[u8]) {
        let tx = &*self.tx;
        let table = self.read();
        if self.answer(&table, frame) {
            return;
        }
        let mut guard = self.scratch(worker);
        let scratch = guard.get_or_insert_with(|| {
            Box::new(Scratch {
                seg: Segmenter::new(),
                pending: Pending::new(),
            })
        });
        let Scratch { seg, pending } = &mut **scratch;
        // Segments keep their super-frame's MACs, addresses and ports: one flow, hashed once.
        let sport = vxlan::source_port(frame.get(VNET_HDR_LEN..).unwrap_or_default());
        let result = seg.segment(frame, &mut |s: &[u8]| {
            pending.push(self, &table, &s[VNET_HDR_LEN..], sport);
        });
        if result.is_err() {
            tx.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Send what worker `worker` queued: its round is over. Called at the end of every round
    /// of every worker for every overlay network: with nothing queued it takes only the
    /// worker's own lock, not the shared table's. (Only worker `worker` takes its scratch
    /// lock, so holding it while waiting for the table cannot deadlock with `send`, which
    /// takes them the other way round.)
    pub fn flush(&self, worker: usize) {
        let mut guard = self.scratch(worker);
        let Some(scratch) = guard.as_mut().filter(|s| s.pending.count > 0) else {
            return;
        };
        let table = self.read();
        scratch.pending.flush(self, &table);
    }

    /// Answer an ARP request or Neighbour Solicitation for a remote address the cluster store
    /// knows, back into the switch; true if it was one.
    fn answer(&self, table: &Table, frame: &[u8]) -> bool {
        let Some(eth) = frame.get(VNET_HDR_LEN..) else {
            return false;
        };
        let stats = &self.tx.stats;
        if !table.addresses.is_empty()
            && let Some(reply) = proxy_arp(eth, &table.addresses)
        {
            let mut out = [0u8; VNET_HDR_LEN + 42];
            out[VNET_HDR_LEN..].copy_from_slice(&reply);
            to_switch(self.answers.as_raw_fd(), &out, stats);
            stats.arp_answered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if !table.addresses6.is_empty()
            && let Some(reply) = proxy_ndp(eth, &table.addresses6)
        {
            let mut out = [0u8; VNET_HDR_LEN + NA_FRAME_LEN];
            out[VNET_HDR_LEN..].copy_from_slice(&reply);
            to_switch(self.answers.as_raw_fd(), &out, stats);
            stats.nd_answered.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }
}

/// Write one frame (virtio-net header included) into a network's switch port from the VTEP's
/// end; a full socket drops it, counted.
pub(super) fn to_switch(fd: RawFd, frame: &[u8], stats: &VtepStats) {
    // SAFETY: frame is valid for reads of its length; fd is a network's open socketpair end.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Encapsulated packets of one destination, back to back in `out`, all `seg` bytes long but
/// the last: what one `sendmsg` with `UDP_SEGMENT` sends as that many datagrams.
struct Pending {
    out: Box<[u8]>,
    len: usize,
    seg: usize,
    count: usize,
    /// A shorter packet ended the batch.
    closed: bool,
    /// The inner flow's UDP source port (`vxlan::source_port`): a flow keeps one, so it
    /// keeps one socket here and one worker at the receiving VTEP.
    sport: u16,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            out: vec![0u8; MAX_FRAME_LEN + HEADER_LEN].into_boxed_slice(),
            len: 0,
            seg: 0,
            count: 0,
            closed: false,
            sport: 0,
        }
    }

    /// Queue `frame` of the flow whose source port is `sport`.
    fn push(&mut self, net: &OverlayNet, table: &Table, frame: &[u8], sport: u16) {
        let tx = &*net.tx;
        let eth = match Ethernet::new_checked(frame) {
            Ok(eth) if frame.len() + HEADER_LEN <= self.out.len() => eth,
            _ => {
                tx.stats.tx_dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        // The anycast gateway stays home.
        if net.gateway_mac == Some(eth.src()) {
            return;
        }
        let size = HEADER_LEN + frame.len();
        if self.count > 0
            && (!tx.gso.load(Ordering::Relaxed)
                || self.closed
                || size > self.seg
                || self.len + size > GSO_MAX_BYTES
                || self.count == GSO_MAX_SEGMENTS
                || sport != self.sport
                || eth.dst().0 != self.out[HEADER_LEN..HEADER_LEN + 6])
        {
            self.flush(net, table);
        }
        if self.count == 0 {
            self.seg = size;
            self.sport = sport;
        } else if size < self.seg {
            self.closed = true;
        }
        let at = self.len;
        self.out[at..at + HEADER_LEN].copy_from_slice(&vxlan::header(net.vni));
        self.out[at + HEADER_LEN..at + size].copy_from_slice(frame);
        self.len += size;
        self.count += 1;
    }

    fn flush(&mut self, net: &OverlayNet, table: &Table) {
        if self.count == 0 {
            return;
        }
        let first = &self.out[HEADER_LEN..self.seg];
        let sockets = &net.tx.sockets;
        let socket = &sockets[usize::from(self.sport) % sockets.len()];
        // `push` took only frames with an Ethernet header: the fallback (flood) is never used.
        let known = Ethernet::new_checked(first)
            .ok()
            .and_then(|e| table.destination(e.dst(), net.aging()));
        match known {
            Some(vtep) => self.send(&net.tx, socket, &vtep),
            None => {
                for peer in &table.peers {
                    self.send(&net.tx, socket, peer);
                }
            }
        }
        self.len = 0;
        self.count = 0;
        self.closed = false;
    }

    fn send(&self, tx: &VtepTx, socket: &UdpSocket, to: &SocketAddr) {
        let stats = &tx.stats;
        let count = self.count as u64;
        if self.count > 1 && tx.gso.load(Ordering::Relaxed) {
            match send_segments(socket, &self.out[..self.len], self.seg as u16, to) {
                Ok(_) => {
                    stats.tx_packets.fetch_add(count, Ordering::Relaxed);
                    return;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT)
                    ) =>
                {
                    // No UDP GSO here: one datagram each from now on.
                    tx.gso.store(false, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.tx_dropped.fetch_add(count, Ordering::Relaxed);
                    return;
                }
            }
        }
        for packet in self.out[..self.len].chunks(self.seg) {
            count_send(stats, socket.send_to(packet, to).is_ok());
        }
    }
}

fn count_send(stats: &VtepStats, sent: bool) {
    let counter: &AtomicU64 = if sent {
        &stats.tx_packets
    } else {
        &stats.tx_dropped
    };
    counter.fetch_add(1, Ordering::Relaxed);
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
