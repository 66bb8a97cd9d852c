//! The way into an overlay network, run by every datapath worker: each has its own UDP socket
//! on each VTEP address, the sockets of one address an `SO_REUSEPORT` group, so the kernel
//! hands each flow (the sender's flow-hashed source port) to one worker and a burst is
//! decapsulated where it will be switched, without a hop through another thread.
//!
//! Only packets from a peer are taken; the header is checked (flags, a known VNI), the inner
//! frame parsed as a TAP frame would be, the source MAC learned against the sending peer,
//! TCP segments coalesced into super-frames where the network's TAPs take them, and the frame
//! switched as one from the network's VTEP port. Everything dropped is counted.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use mio::Poll;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};

use super::coalesce::Coalescer;
use super::delay::DelayQueue;
use super::fdb::PortId;
use super::frame;
use super::overlay_net::OverlayNet;
use super::port::Port;
use super::vtep::VtepStats;
use super::vxlan::{self, DecapError, HEADER_LEN};
use super::worker::{BATCH, NetView, Output, forward, unwatch, watch_token};
use crate::offload::Segmenter;
use crate::wire::{MAX_FRAME_LEN, MacAddr, VNET_HDR_LEN};

/// Tokens of VTEP sockets in a worker's poll start here, above every port id (a u32).
pub(super) const FIRST_VTEP_TOKEN: usize = 1 << 32;
/// Where a datagram is received in its slot: its VXLAN header (8 bytes) ends where a
/// virtio-net header (12) would, so the inner frame needs no move.
const AT: usize = VNET_HDR_LEN - HEADER_LEN;
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
/// Messages one `recvmmsg` takes; each may be a UDP_GRO burst of up to 64 KiB.
const SLOTS: usize = 8;
/// Bytes of one message's slot in the receive buffer (touched only as far as messages reach).
const SLOT: usize = MAX_FRAME_LEN + HEADER_LEN;

/// What the workers share of one VTEP address: its networks by VNI, with their switch ports.
pub struct VtepRxShared {
    pub id: u64,
    pub stats: Arc<VtepStats>,
    nets: RwLock<HashMap<u32, (PortId, Arc<OverlayNet>)>>,
}

impl VtepRxShared {
    pub fn new(id: u64, stats: Arc<VtepStats>) -> VtepRxShared {
        VtepRxShared {
            id,
            stats,
            nets: RwLock::new(HashMap::new()),
        }
    }

    /// Frames of `net` arriving from now on enter the switch through port `port`.
    pub fn insert(&self, port: PortId, net: Arc<OverlayNet>) {
        self.nets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(net.vni, (port, net));
    }

    /// Stop taking frames of `vni`; gives its network back.
    pub fn remove(&self, vni: u32) -> Option<Arc<OverlayNet>> {
        self.nets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vni)
            .map(|(_, net)| net)
    }

    pub fn get(&self, vni: u32) -> Option<(PortId, Arc<OverlayNet>)> {
        self.nets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&vni)
            .cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.nets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

/// One worker's socket of one VTEP, with its receive buffers and pending super-frames.
struct VtepRx {
    shared: Arc<VtepRxShared>,
    socket: UdpSocket,
    /// `SLOTS` slots of `SLOT` bytes, one per message of a `recvmmsg`.
    buf: Box<[u8]>,
    /// Received TCP segments waiting to become one super-frame, per VNI.
    gro: Vec<(u32, Coalescer)>,
    /// The last datagram's sender, network and source station, for the next: the datagrams
    /// of one UDP_GRO burst share them, so the shared tables are read once per burst.
    /// Cleared at each readiness, so a table change applies from the next at the latest.
    memo: Option<Memo>,
}

struct Memo {
    vni: u32,
    from: SocketAddr,
    port: PortId,
    net: Arc<OverlayNet>,
    peer: SocketAddr,
    /// The source MAC last learned (refreshed) from this sender.
    learned: MacAddr,
}

/// A worker's VTEP sockets, polled in its `Poll` under `FIRST_VTEP_TOKEN + slot`.
#[derive(Default)]
pub(super) struct VtepSockets {
    slots: Vec<Option<VtepRx>>,
}

/// What switching a received frame needs from the worker.
pub(super) struct SwitchCtx<'a, O: Output> {
    pub ports: &'a [Option<Arc<Port>>],
    pub networks: &'a [Option<NetView>],
    pub now: u32,
    pub segmenter: &'a mut Segmenter,
    pub delayed: &'a mut DelayQueue,
    pub out: &'a mut O,
}

impl<'a, O: Output> SwitchCtx<'a, O> {
    /// A network's VTEP port `id` and the network's view in this worker: absent while it is
    /// being added or removed.
    fn vtep_port(&self, id: PortId) -> Option<(&'a Arc<Port>, &'a NetView)> {
        let (ports, networks) = (self.ports, self.networks);
        let port = ports.get(id as usize)?.as_ref()?;
        let view = networks.get(port.network as usize)?.as_ref()?;
        Some((port, view))
    }

    /// Switch `frame` as one that came in on `port`.
    fn switch(&mut self, port: &Arc<Port>, view: &NetView, frame: &[u8]) {
        forward(
            self.ports,
            view,
            port,
            frame,
            self.now,
            self.segmenter,
            self.delayed,
            true,
            self.out,
        );
    }
}

impl VtepSockets {
    /// Poll `socket`, this worker's of VTEP `shared`.
    pub(super) fn add(&mut self, poll: &Poll, shared: Arc<VtepRxShared>, socket: UdpSocket) {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        if let Err(e) = watch_token(poll, socket.as_raw_fd(), FIRST_VTEP_TOKEN + slot) {
            eprintln!("tapnet: cannot poll VTEP socket: {e}");
            return;
        }
        self.slots[slot] = Some(VtepRx {
            shared,
            socket,
            buf: vec![0u8; SLOTS * SLOT].into_boxed_slice(),
            gro: Vec::new(),
            memo: None,
        });
    }

    /// Stop polling VTEP `id`'s socket and close it.
    pub(super) fn remove(&mut self, poll: &Poll, id: u64) {
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|rx| rx.shared.id == id)
                && let Some(rx) = slot.take()
            {
                unwatch(poll, rx.socket.as_raw_fd());
            }
        }
    }

    /// The slot of a poll token, if it is a VTEP socket's.
    pub(super) fn slot_of(token: usize) -> Option<usize> {
        token.checked_sub(FIRST_VTEP_TOKEN)
    }

    /// Receive, check and switch up to `BATCH` receives of slot `slot`'s socket (each may
    /// hold many datagrams, UDP_GRO); the poll is level-triggered and reports it again if more
    /// wait. Returns the frames switched.
    pub(super) fn receive<O: Output>(&mut self, slot: usize, cx: &mut SwitchCtx<'_, O>) -> u64 {
        let Some(Some(rx)) = self.slots.get_mut(slot) else {
            return 0;
        };
        let mut frames = 0;
        rx.memo = None;
        let mut got = [(0, UNSPECIFIED, 0); SLOTS];
        for _ in 0..BATCH / SLOTS {
            let n = rx.recv_many(&mut got);
            for (slot, &(bytes, from, seg)) in got.iter().enumerate().take(n) {
                // With UDP_GRO the kernel hands over several datagrams of `seg` bytes back
                // to back (the last may be shorter). Each is taken where it lies: its
                // virtio-net header overwrites the 4 last bytes of the one before, done with
                // by then.
                let seg = if seg == 0 { bytes } else { seg };
                let mut start = 0;
                while start < bytes {
                    let len = seg.min(bytes - start);
                    frames += u64::from(rx.take(slot * SLOT + start, len, from, cx));
                    start += len;
                }
            }
            if n < SLOTS {
                break;
            }
        }
        rx.flush(cx);
        frames
    }
}

impl VtepRx {
    /// One `recvmmsg` of up to [`SLOTS`] messages, message i into `buf` at `i * SLOT + AT`:
    /// for each, its bytes, sender, and its datagram size when the kernel coalesced several
    /// (UDP_GRO), else 0. Returns how many came (0: nothing waiting).
    fn recv_many(&mut self, got: &mut [(usize, SocketAddr, usize); SLOTS]) -> usize {
        // SAFETY: an all-zero sockaddr_storage is a valid value.
        let mut names: [libc::sockaddr_storage; SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: an all-zero iovec (null, 0) is a valid value.
        let mut iovs: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: an all-zero mmsghdr (null pointers, zero lengths) is a valid value.
        let mut msgs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        // Room for one cmsghdr and an int (UDP_GRO's segment size), 8-byte aligned.
        let mut control = [[0u64; 4]; SLOTS];
        let base = self.buf.as_mut_ptr();
        for i in 0..SLOTS {
            // SAFETY: `buf` holds SLOTS slots of SLOT bytes: the pointer stays inside it, and
            // the iovec covers its slot from AT to its end.
            let slot = unsafe { base.add(i * SLOT + AT) };
            iovs[i] = libc::iovec {
                iov_base: slot.cast(),
                iov_len: SLOT - AT,
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = control[i].as_mut_ptr().cast();
            hdr.msg_controllen = std::mem::size_of_val(&control[i]);
        }
        // SAFETY: every pointer in `msgs` points into this frame's arrays or `buf`, which
        // outlive the call; the kernel writes within the lengths given.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                SLOTS as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for (i, msg) in msgs.iter().enumerate().take(n) {
            // SAFETY: the kernel wrote a socket address of msg_namelen bytes into names[i].
            let name = unsafe {
                SockaddrStorage::from_raw(
                    (&names[i] as *const libc::sockaddr_storage).cast(),
                    Some(msg.msg_hdr.msg_namelen),
                )
            };
            // Address and port only: peers are compared with it, and an IPv6 sender's flow
            // label and scope must not make it a stranger (nor a v4-mapped one on a socket
            // bound to ::). A message without one is skipped (0 bytes).
            got[i] = match name.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::new(v4.ip().into(), v4.port()))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::new(v6.ip().to_canonical(), v6.port()))
                    })
            }) {
                Some(from) => (msg.msg_len as usize, from, gro_segment(&msg.msg_hdr)),
                None => (0, UNSPECIFIED, 0),
            };
        }
        n
    }

    /// Check, learn and switch the datagram at `buf[base + AT..base + AT + n]`; its frame
    /// enters the switch from `buf[base..]`, behind a zero virtio-net header. True if it did.
    fn take<O: Output>(
        &mut self,
        base: usize,
        n: usize,
        from: SocketAddr,
        cx: &mut SwitchCtx<'_, O>,
    ) -> bool {
        let stats = &self.shared.stats;
        let (vni, inner_len) = match vxlan::decap(&self.buf[base + AT..base + AT + n]) {
            Ok((vni, inner)) => (vni, inner.len()),
            Err(DecapError::Runt) => {
                stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            Err(DecapError::BadFlags) => {
                stats.rx_bad_flags.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        };
        let memo = match self.memo.take() {
            Some(m) if m.vni == vni && m.from == from => m,
            _ => {
                let Some((port, net)) = self.shared.get(vni) else {
                    stats.rx_foreign_vni.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                let Some(peer) = net.read().peer(from) else {
                    stats.rx_unknown_peer.fetch_add(1, Ordering::Relaxed);
                    return false;
                };
                Memo {
                    vni,
                    from,
                    port,
                    net,
                    peer,
                    learned: MacAddr::BROADCAST,
                }
            }
        };
        let memo = self.memo.insert(memo);
        self.buf[base..base + VNET_HDR_LEN].fill(0);
        let frame = &self.buf[base..base + VNET_HDR_LEN + inner_len];
        let Ok(info) = frame::parse(frame, memo.net.mtu) else {
            stats.rx_malformed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        if Some(info.src) == memo.net.gateway_mac {
            return false;
        }
        if memo.learned != info.src {
            memo.net.learn(info.src, memo.peer);
            memo.learned = info.src;
        }
        let (port_id, net) = (memo.port, &*memo.net);
        stats.rx_packets.fetch_add(1, Ordering::Relaxed);
        let Some((port, view)) = cx.vtep_port(port_id) else {
            stats.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let mut switch = |b: &[u8]| cx.switch(port, view, b);
        if net.coalesce {
            let i = match self.gro.iter().position(|(v, _)| *v == vni) {
                Some(i) => i,
                None => {
                    self.gro.push((vni, Coalescer::new()));
                    self.gro.len() - 1
                }
            };
            self.gro[i].1.push(frame, &mut switch);
        } else {
            switch(frame);
        }
        true
    }

    /// Switch every pending super-frame: the burst is over.
    fn flush<O: Output>(&mut self, cx: &mut SwitchCtx<'_, O>) {
        for (vni, gro) in &mut self.gro {
            match self.shared.get(*vni).and_then(|(id, _)| cx.vtep_port(id)) {
                Some((port, view)) => gro.flush(&mut |b| cx.switch(port, view, b)),
                // Its network went: what was pending goes with it.
                None => gro.flush(&mut |_| {}),
            }
        }
    }
}

/// The datagram size of a UDP_GRO receive, from its control message; 0 if there is none.
fn gro_segment(hdr: &libc::msghdr) -> usize {
    // SAFETY: the CMSG_ macros walk the control buffer the kernel filled, within
    // msg_controllen bytes; a UDP_GRO message carries an int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    0
}
