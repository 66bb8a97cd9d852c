//! A switch port: its file descriptors (one per queue of a multi-queue TAP, else one) plus its
//! counters. Shared (`Arc`) between the threads that poll it and every thread that forwards to
//! it; the fds close when the last holder lets go.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::fdb::PortId;
use super::frame::DropReason;
use super::impair::Link;
use super::inbox::Inbox;
use super::overlay_net::OverlayNet;
use super::packet_ring::{PacketRing, Received};
use super::security::{PortPolicy, Violation};
use crate::wire::VNET_HDR_LEN;

pub type NetId = u32;

#[derive(Default)]
pub struct PortCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    rx_malformed: AtomicU64,
    rx_oversize: AtomicU64,
    rx_filtered: AtomicU64,
    tx_dropped: AtomicU64,
    rx_spoofed: AtomicU64,
    /// `rx_spoofed` by reason, indexed by `Violation::index`.
    spoofed_by: [AtomicU64; Violation::COUNT],
    learn_refused: AtomicU64,
    rx_policy: AtomicU64,
}

/// A copy of a port's counters, as `tapnet stats` shows them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Runts, bad virtio-net headers, impossible source MACs.
    pub rx_malformed: u64,
    /// Frames larger than the network's MTU.
    pub rx_oversize: u64,
    /// Frames addressed to a station behind the port they came from.
    pub rx_filtered: u64,
    /// Frames the kernel refused when written to this port.
    pub tx_dropped: u64,
    /// Frames dropped by port security: a source MAC, ARP sender, IPv4 or IPv6 source that is
    /// not the port's own, a VLAN tag, neighbour discovery for another's address or MAC, a
    /// router's or DHCPv6 server's message, malformed IPv6.
    #[serde(default)]
    pub rx_spoofed: u64,
    /// `rx_spoofed` by reason, indexed by `Violation::index` (names: `Violation::name`).
    #[serde(default)]
    pub spoofed_by: [u64; Violation::COUNT],
    /// Source MACs not learned because the port owns its limit of stations, or the table is
    /// full (the frames still went out, and frames to those MACs flood).
    #[serde(default)]
    pub learn_refused: u64,
    /// Frames the network's policy dropped (`icc=false`, a deny rule or default, a full
    /// connection table).
    #[serde(default)]
    pub rx_policy: u64,
    /// Frames lost before the switch because the port's inbox was full (the gateway sent
    /// faster than the switch took them).
    #[serde(default)]
    pub rx_queue_full: u64,
}

impl PortStats {
    pub fn drops(&self) -> u64 {
        self.rx_malformed
            + self.rx_oversize
            + self.tx_dropped
            + self.rx_spoofed
            + self.rx_policy
            + self.rx_queue_full
    }

    /// The port security drops of one reason.
    pub fn spoofed(&self, why: Violation) -> u64 {
        self.spoofed_by[why.index()]
    }
}

impl PortCounters {
    pub fn rx(&self, bytes: usize) {
        self.rx_packets.fetch_add(1, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn rx_drop(&self, reason: DropReason) {
        let counter = match reason {
            DropReason::Oversize => &self.rx_oversize,
            DropReason::Runt | DropReason::BadVnetHeader | DropReason::BadSourceMac => {
                &self.rx_malformed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rx_filtered(&self) {
        self.rx_filtered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rx_spoofed(&self, why: Violation) {
        self.rx_spoofed.fetch_add(1, Ordering::Relaxed);
        self.spoofed_by[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rx_policy(&self) {
        self.rx_policy.fetch_add(1, Ordering::Relaxed);
    }

    pub fn learn_refused(&self) {
        self.learn_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> PortStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PortStats {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            rx_malformed: get(&self.rx_malformed),
            rx_oversize: get(&self.rx_oversize),
            rx_filtered: get(&self.rx_filtered),
            tx_dropped: get(&self.tx_dropped),
            rx_spoofed: get(&self.rx_spoofed),
            spoofed_by: std::array::from_fn(|i| get(&self.spoofed_by[i])),
            learn_refused: get(&self.learn_refused),
            rx_policy: get(&self.rx_policy),
            rx_queue_full: 0,
        }
    }
}

pub struct Port {
    pub id: PortId,
    pub network: NetId,
    /// `sandbox/interface`, for logs and tables.
    pub label: String,
    /// One fd per queue; worker `i` reads and writes queue `i % len`.
    queues: Vec<OwnedFd>,
    pub counters: PortCounters,
    /// What the port may send as; `None`: anything (the gateway, `port_security=off`).
    pub policy: Option<PortPolicy>,
    /// Impairments and blocks (`tapnet link`); inactive unless configured.
    pub link: Link,
    /// A service port (the gateway's, the VTEP's), not a station's: `icc=false` lets
    /// sandboxes reach it, and the policy does not check what it sends.
    pub service: bool,
    /// An `--iface` port's mmap'd rings (`packet_ring.rs`): read and written through them
    /// rather than its fd, which is polled all the same.
    ring: Option<Box<PacketRing>>,
    /// An overlay network's VTEP port: what the switch sends it is encapsulated and sent by
    /// the sending worker (`overlay_tx.rs`), not written to its fd.
    overlay: Option<Arc<OverlayNet>>,
    /// An in-process port's inbox (`inbox.rs`): frames from the gateway's thread come through
    /// memory, and its eventfd is polled instead of the port's fd (which still takes what the
    /// switch sends the port).
    inbox: Option<Arc<Inbox>>,
}

impl Port {
    /// `queues` must be non-blocking fds of one TAP opened with a 12-byte virtio-net header
    /// (or one end of a socketpair carrying such frames), at least one.
    pub fn new(
        id: PortId,
        network: NetId,
        label: String,
        queues: Vec<OwnedFd>,
        policy: Option<PortPolicy>,
    ) -> Self {
        debug_assert!(!queues.is_empty());
        Port {
            id,
            network,
            label,
            queues,
            counters: PortCounters::default(),
            policy,
            link: Link::default(),
            service: false,
            ring: None,
            overlay: None,
            inbox: None,
        }
    }

    /// The port's counters, with what its inbox dropped.
    pub fn stats(&self) -> PortStats {
        let mut stats = self.counters.snapshot();
        if let Some(inbox) = &self.inbox {
            stats.rx_queue_full = inbox.dropped.load(Ordering::Relaxed);
        }
        stats
    }

    /// Receive through `inbox` rather than the fd.
    pub fn with_inbox(mut self, inbox: Arc<Inbox>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    /// Send through `net`'s VTEP rather than the fd (an overlay network's VTEP port).
    pub fn with_overlay(mut self, net: Arc<OverlayNet>) -> Self {
        self.overlay = Some(net);
        self
    }

    /// Are frames to this port written to its fd (so a ring of the worker's may queue them)?
    /// Not for ports with packet rings or a VTEP behind them, which `send` serves.
    pub fn written_to_fd(&self) -> bool {
        self.ring.is_none() && self.overlay.is_none()
    }

    /// Read and write through `ring`, the rings of the port's one fd.
    pub fn with_ring(mut self, ring: PacketRing) -> Self {
        self.ring = Some(Box::new(ring));
        self
    }

    /// Whether the port has packet rings: read through them (the fd polled all the same).
    pub fn has_ring(&self) -> bool {
        self.ring.is_some()
    }

    /// The port's inbox, if frames come to it through memory.
    pub fn inbox(&self) -> Option<&Inbox> {
        self.inbox.as_deref()
    }

    /// The fd worker `worker` polls for frames to read: the inbox's eventfd, or its queue.
    pub fn poll_fd(&self, worker: usize) -> RawFd {
        match &self.inbox {
            Some(inbox) => inbox.fd(),
            None => self.queue_fd(worker),
        }
    }

    /// Whether the port queues what a worker sends it until the end of the worker's round
    /// (`flush`): a TX ring, or a VTEP's send queue.
    pub fn queues_sends(&self) -> bool {
        self.ring.is_some() || self.overlay.is_some()
    }

    /// Send what worker `worker` queued on the port in its round (the frames on its TX ring,
    /// the packets for its VTEP), if it queues at all.
    #[inline]
    pub fn flush(&self, worker: usize) {
        if let Some(ring) = &self.ring {
            ring.flush();
        }
        if let Some(net) = &self.overlay {
            net.flush(worker);
        }
    }

    /// How many queues the port has: more than one means every worker polls its own.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Does worker `worker` poll this port: its own queue of a multi-queue TAP, or the one fd
    /// of a single-queue port when it is the `owner`. Workers beyond the queue count (more
    /// threads than `netns::tap::MAX_QUEUES`) poll none and write through a shared queue.
    pub fn polled_by(&self, worker: usize, owner: usize) -> bool {
        match self.queues.len() {
            1 => worker == owner,
            n => worker < n,
        }
    }

    /// The fd worker `worker` reads and writes.
    #[inline]
    pub fn queue_fd(&self, worker: usize) -> RawFd {
        self.queues[worker % self.queues.len()].as_raw_fd()
    }

    /// Read one frame (virtio-net header included) from worker `worker`'s queue into `buf`.
    pub fn recv(&self, worker: usize, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(inbox) = &self.inbox {
            return inbox.recv(buf);
        }
        if let Some(ring) = &self.ring {
            loop {
                match ring.recv(buf)? {
                    Received::Frame(n) => return Ok(n),
                    Received::Bad => self.counters.rx_drop(DropReason::BadVnetHeader),
                }
            }
        }
        // SAFETY: buf is valid for writes of buf.len() bytes; the fd is owned by self.
        let n = unsafe { libc::read(self.queue_fd(worker), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Count the outcome of a write to this port, made by `send` or by the io_uring worker's
    /// ring: `result` is the bytes written, virtio-net header included, or negative (failed).
    pub fn count_write(&self, result: i32) {
        if result < 0 {
            self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
        self.counters.tx_bytes.fetch_add(
            (result as usize).saturating_sub(VNET_HDR_LEN) as u64,
            Ordering::Relaxed,
        );
    }

    /// Write one frame (virtio-net header included) through worker `worker`'s queue: the
    /// kernel then puts the replies of its flow on that queue. A TAP write never blocks: when
    /// the receiving stack cannot take the frame the kernel drops it, and so do we, counting it.
    pub fn send(&self, worker: usize, frame: &[u8]) -> bool {
        if let Some(net) = &self.overlay {
            // The VTEP counts what the underlay refused; the port, what the switch handed it.
            net.send(worker, frame);
            self.count_write(frame.len() as i32);
            return true;
        }
        if let Some(ring) = &self.ring {
            let sent = ring.send(frame);
            // A frame is at most 64 KiB plus its header: its length fits an i32.
            self.count_write(if sent { frame.len() as i32 } else { -1 });
            return sent;
        }
        // SAFETY: frame is valid for reads of frame.len() bytes; the fd is owned by self.
        let n = unsafe { libc::write(self.queue_fd(worker), frame.as_ptr().cast(), frame.len()) };
        // A frame is at most 64 KiB plus its header: its length fits an i32.
        self.count_write(if n < 0 { -1 } else { n as i32 });
        n >= 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(queues: usize) -> Port {
        let fds = (0..queues)
            .map(|_| {
                std::fs::File::open("/dev/null")
                    .expect("open /dev/null")
                    .into()
            })
            .collect();
        Port::new(1, 0, "p".into(), fds, None)
    }

    #[test]
    fn each_worker_polls_its_own_queue_and_a_single_fd_only_its_owner() {
        let single = port(1);
        assert!(single.polled_by(1, 1));
        assert!(!single.polled_by(0, 1));
        assert_eq!(single.queue_fd(0), single.queue_fd(5));
        let multi = port(2);
        assert!(multi.polled_by(0, 1) && multi.polled_by(1, 1));
        assert_ne!(multi.queue_fd(0), multi.queue_fd(1));
        // More workers than queues: the extra ones poll nothing and write through a queue.
        assert!(!multi.polled_by(2, 0));
        assert_eq!(multi.queue_fd(2), multi.queue_fd(0));
    }

    #[test]
    fn an_inbox_port_reads_from_memory_and_counts_what_its_full_inbox_dropped() {
        let inbox = Arc::new(Inbox::new(1).expect("eventfd"));
        let p = port(1).with_inbox(inbox.clone());
        assert!(p.inbox().is_some() && !p.has_ring());
        assert_eq!(p.poll_fd(0), inbox.fd());
        inbox.push_with(3, &mut [0u8; 8], |b| b.copy_from_slice(b"abc"));
        inbox.push_with(3, &mut [0u8; 8], |b| b.copy_from_slice(b"xyz"));
        let mut buf = [0u8; 8];
        assert_eq!(p.recv(0, &mut buf).expect("a frame"), 3);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(p.stats().rx_queue_full, 1);
        assert_eq!(p.stats().drops(), 1);
    }

    #[test]
    fn writes_count_bytes_without_the_header_and_failures_as_drops() {
        let p = port(1);
        p.count_write((VNET_HDR_LEN + 100) as i32);
        p.count_write(-1);
        let s = p.counters.snapshot();
        assert_eq!((s.tx_packets, s.tx_bytes, s.tx_dropped), (1, 100, 1));
    }
}
