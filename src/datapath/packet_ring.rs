//! The mmap'd rings of an `--iface` port's packet socket (`packet_port.rs`): a TPACKET_V2
//! `PACKET_RX_RING` the kernel fills with the interface's frames, and a `PACKET_TX_RING` the
//! workers fill with the switch's, flushed with one `send` per poll round.
//!
//! Why V2, not V3: a V3 ring wakes its reader only when a block retires, full or at its
//! timeout (`tp_retire_blk_tov`, whole milliseconds, at least 1), so a lone frame (a ping, a
//! request) waits up to that long; a V2 slot is the reader's, and the socket readable, as soon
//! as the kernel has written it (`tpacket_rcv`'s `sk_data_ready` per frame). Measured on 6.18
//! (`scripts/ring-wake-latency.py`, BENCHMARKS.md): a lone frame's wake-up p50 0.05 ms with
//! V2, 0.75-0.82 ms with V3 at the least timeout. Both carry the
//! virtio-net header: `tpacket_rcv` writes a 10-byte `virtio_net_hdr` just before the frame
//! (whatever `PACKET_VNET_HDR_SZ` says, so the socket keeps the 10-byte header and the port
//! adds `num_buffers`), and `tpacket_snd` reads one at the start of a slot's data.
//!
//! Slots are small (`SLOT` bytes) and fixed: a frame that does not fit one (a super-frame, a
//! jumbo frame) takes the socket's other path. In, the kernel writes a truncated copy to the
//! slot, flags it `TP_STATUS_COPY` and queues the whole frame on the socket
//! (`PACKET_COPY_THRESH`), which `recv` reads. Out, it is written with a plain `send` to a
//! second packet socket on the interface that receives nothing, after the ring's pending
//! frames so that the order holds.
//!
//! The slots' headers come from the kernel, but a frame's bytes come from whatever is behind
//! the interface: `rx_slot` checks every offset against the slot before a byte is copied
//! (unit-tested and fuzzed: `check_arbitrary_ring`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::wire::VNET_HDR_LEN;

const TPACKET_V2: i32 = 1;

/// Slot status bits (`linux/if_packet.h`).
pub const TP_STATUS_KERNEL: u32 = 0;
pub const TP_STATUS_USER: u32 = 1;
pub const TP_STATUS_COPY: u32 = 2;
pub const TP_STATUS_VLAN_VALID: u32 = 0x10;
pub const TP_STATUS_AVAILABLE: u32 = 0;
pub const TP_STATUS_SEND_REQUEST: u32 = 1;
pub const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// The virtio-net header the kernel puts in a slot (`struct virtio_net_hdr`, without
/// `num_buffers`).
pub const RING_VNET_LEN: usize = 10;
/// `sizeof(struct tpacket2_hdr)`, already aligned to 16.
pub const HDR_LEN: usize = 32;
/// Where a TX slot's data starts: `tpacket_snd` reads at `tp_hdrlen - sizeof(sockaddr_ll)`.
pub const TX_DATA: usize = HDR_LEN;
/// One slot: an MTU-1500 frame with its headers fits, with room to spare.
pub const SLOT: usize = 2048;
/// Slots per block (a block is what the kernel allocates at once: 64 KiB).
const SLOTS_PER_BLOCK: usize = 32;
/// Slots of each ring: 1024 (2 MiB each way).
const BLOCKS: usize = 32;
pub const SLOTS: usize = SLOTS_PER_BLOCK * BLOCKS;
/// Pending TX frames after which `send` flushes at once instead of at the end of the round.
const FLUSH_EVERY: u32 = 64;

/// What an RX slot holds, read from its `tpacket2_hdr` (and checked against the slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxSlot {
    /// Still the kernel's: nothing to read.
    Kernel,
    /// A whole frame: `mac..mac + len` of the slot, its virtio-net header the
    /// `RING_VNET_LEN` bytes before.
    Frame { mac: usize, len: usize },
    /// Too big for a slot: the whole frame waits on the socket's queue.
    Copied,
    /// Unusable (truncated without a copy, a stripped VLAN tag, offsets outside the slot):
    /// give the slot back and count the frame as malformed.
    Bad,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Read an RX slot: `tp_status` (offset 0), `tp_len` (4), `tp_snaplen` (8), `tp_mac` (12).
/// Never panics, whatever the bytes; a `Frame`'s range and its header lie inside `slot`.
pub fn rx_slot(slot: &[u8]) -> RxSlot {
    let (Some(status), Some(len), Some(snap), Some(mac)) = (
        u32_at(slot, 0),
        u32_at(slot, 4),
        u32_at(slot, 8),
        u16_at(slot, 12),
    ) else {
        return RxSlot::Bad;
    };
    if status & TP_STATUS_USER == 0 {
        return RxSlot::Kernel;
    }
    if status & TP_STATUS_COPY != 0 {
        return RxSlot::Copied;
    }
    let (mac, snap) = (mac as usize, snap as usize);
    if status & TP_STATUS_VLAN_VALID != 0
        || snap != len as usize
        || snap == 0
        || mac < HDR_LEN + RING_VNET_LEN
        || mac.checked_add(snap).is_none_or(|end| end > slot.len())
    {
        return RxSlot::Bad;
    }
    RxSlot::Frame { mac, len: snap }
}

/// Copy a `Frame` of `slot` into `buf` as the switch takes it: the 10-byte header, a zero
/// `num_buffers`, the frame. `None` if `buf` is too small or the slot not a frame.
pub fn copy_frame(slot: &[u8], what: RxSlot, buf: &mut [u8]) -> Option<usize> {
    let RxSlot::Frame { mac, len } = what else {
        return None;
    };
    let total = VNET_HDR_LEN + len;
    let out = buf.get_mut(..total)?;
    out[..RING_VNET_LEN].copy_from_slice(slot.get(mac - RING_VNET_LEN..mac)?);
    out[RING_VNET_LEN..VNET_HDR_LEN].fill(0);
    out[VNET_HDR_LEN..].copy_from_slice(slot.get(mac..mac + len)?);
    Some(total)
}

/// Fill a TX slot's data (not its status) with `frame` (12-byte header first): `tp_len` at
/// offset 4, the 10-byte header and the Ethernet frame at `TX_DATA`. False if it does not fit.
pub fn fill_tx(slot: &mut [u8], frame: &[u8]) -> bool {
    let Some(eth) = frame.get(VNET_HDR_LEN..) else {
        return false;
    };
    let data = RING_VNET_LEN + eth.len();
    let Some(out) = slot.get_mut(TX_DATA..TX_DATA + data) else {
        return false;
    };
    out[..RING_VNET_LEN].copy_from_slice(&frame[..RING_VNET_LEN]);
    out[RING_VNET_LEN..].copy_from_slice(eth);
    slot[4..8].copy_from_slice(&(data as u32).to_ne_bytes());
    true
}

/// Fuzzing entry: read arbitrary bytes as a ring of `SLOT`-byte slots (the last one short),
/// copying every frame out; never panics, never reads past a slot.
pub fn check_arbitrary_ring(data: &[u8]) -> usize {
    let mut buf = vec![0u8; VNET_HDR_LEN + SLOT];
    let mut frames = 0;
    for slot in data.chunks(SLOT.min(data.len().max(1))) {
        let what = rx_slot(slot);
        if let RxSlot::Frame { mac, len } = what {
            assert!(mac >= RING_VNET_LEN && mac + len <= slot.len());
            let n = copy_frame(slot, what, &mut buf).expect("a frame fits a slot's buffer");
            assert_eq!(n, VNET_HDR_LEN + len);
            frames += 1;
        }
    }
    frames
}

/// `struct tpacket_req`.
#[repr(C)]
struct TpacketReq {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
}

/// The mapping of both rings: RX's `SLOTS` slots, then TX's.
struct Map {
    base: *mut u8,
    len: usize,
}

impl Map {
    /// Slot `i` of ring `ring` (0: RX, 1: TX).
    fn slot(&self, ring: usize, i: usize) -> *mut u8 {
        debug_assert!(ring < 2 && i < SLOTS);
        // SAFETY: the mapping holds 2 * SLOTS slots of SLOT bytes; ring < 2 and i < SLOTS.
        unsafe { self.base.add((ring * SLOTS + i % SLOTS) * SLOT) }
    }

    /// The status word of a slot, shared with the kernel.
    fn status(&self, ring: usize, i: usize) -> &AtomicU32 {
        // SAFETY: a slot starts page- or SLOT-aligned (4-aligned), lives as long as the
        // mapping, and its first word is only ever accessed atomically on this side.
        unsafe { AtomicU32::from_ptr(self.slot(ring, i).cast()) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping mmap returned; nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// The rings of one port. The RX side is read by the one worker that polls the port; the TX
/// side is written by any worker that forwards to it (under `tx`'s lock).
pub struct PacketRing {
    map: Map,
    fd: RawFd,
    /// Sends what does not fit a slot; bound with protocol 0, so it receives nothing.
    big_tx: OwnedFd,
    rx: Mutex<usize>,
    tx: Mutex<TxState>,
    pending: AtomicBool,
}

struct TxState {
    head: usize,
    queued: u32,
}

// SAFETY: the mapping is shared memory whose slots are handed between this process and the
// kernel by their status words; the RX cursor and the TX cursor and slots are behind mutexes.
unsafe impl Send for PacketRing {}
// SAFETY: as for Send: all access from `&self` goes through the mutexes and atomic statuses.
unsafe impl Sync for PacketRing {}

/// What `PacketRing::recv` got.
pub enum Received {
    /// A frame of this many bytes (its 12-byte header included) in the buffer.
    Frame(usize),
    /// A frame was dropped as malformed (see `RxSlot::Bad`).
    Bad,
}

/// `setsockopt(SOL_PACKET)` of a plain value.
fn sockopt<T>(fd: RawFd, opt: i32, value: &T) -> io::Result<()> {
    super::packet_port::setsockopt(fd, libc::SOL_PACKET, opt, value)
}

impl PacketRing {
    /// Give `fd` (a packet socket not yet bound) a 10-byte virtio-net header, V2 RX and TX
    /// rings and the copy of frames too big for a slot, and map them; open the socket for big
    /// frames, bound to interface `index`. Errors say which step failed (an old kernel).
    pub fn setup(fd: &OwnedFd, name: &str, index: u32) -> Result<PacketRing> {
        let raw = fd.as_raw_fd();
        let what =
            |step: &str, e: io::Error| Error::invalid(format!("interface {name}: {step}: {e}"));
        sockopt(raw, libc::PACKET_VNET_HDR, &1i32).map_err(|e| what("libc::PACKET_VNET_HDR", e))?;
        sockopt(raw, libc::PACKET_VERSION, &TPACKET_V2).map_err(|e| what("TPACKET_V2", e))?;
        sockopt(raw, libc::PACKET_COPY_THRESH, &1i32)
            .map_err(|e| what("libc::PACKET_COPY_THRESH", e))?;
        // A frame the kernel cannot send is skipped, not left blocking the ring.
        sockopt(raw, libc::PACKET_LOSS, &1i32).map_err(|e| what("libc::PACKET_LOSS", e))?;
        let req = TpacketReq {
            block_size: (SLOT * SLOTS_PER_BLOCK) as u32,
            block_nr: BLOCKS as u32,
            frame_size: SLOT as u32,
            frame_nr: SLOTS as u32,
        };
        sockopt(raw, libc::PACKET_RX_RING, &req).map_err(|e| what("libc::PACKET_RX_RING", e))?;
        sockopt(raw, libc::PACKET_TX_RING, &req).map_err(|e| what("libc::PACKET_TX_RING", e))?;
        let len = 2 * SLOTS * SLOT;
        // SAFETY: a shared mapping of the socket's rings, of their total size, at no fixed
        // address; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(what("mmap the rings", io::Error::last_os_error()));
        }
        let map = Map {
            base: base.cast(),
            len,
        };
        let big_tx = big_tx_socket(index).map_err(|e| what("socket for large frames", e))?;
        Ok(PacketRing {
            map,
            fd: raw,
            big_tx,
            rx: Mutex::new(0),
            tx: Mutex::new(TxState { head: 0, queued: 0 }),
            pending: AtomicBool::new(false),
        })
    }

    /// The next frame of the RX ring into `buf` (`MAX_FRAME_LEN` bytes), or `WouldBlock`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut head = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        let status = self.map.status(0, *head);
        if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // SAFETY: the slot is ours (TP_STATUS_USER): the kernel does not write it until its
        // status is TP_STATUS_KERNEL again; it is SLOT bytes inside the mapping.
        let slot = unsafe { std::slice::from_raw_parts(self.map.slot(0, *head), SLOT) };
        let what = rx_slot(slot);
        let got = match what {
            RxSlot::Kernel => return Err(io::ErrorKind::WouldBlock.into()),
            RxSlot::Frame { .. } => match copy_frame(slot, what, buf) {
                Some(n) => Ok(Received::Frame(n)),
                None => Ok(Received::Bad),
            },
            RxSlot::Bad => Ok(Received::Bad),
            // The whole frame was queued with the slot's status set: it is there to read.
            RxSlot::Copied => self.recv_copy(buf),
        };
        status.store(TP_STATUS_KERNEL, Ordering::Release);
        *head = (*head + 1) % SLOTS;
        got
    }

    /// A frame too big for a slot, from the socket's queue: read behind two bytes, the
    /// 10-byte header moved to the front and `num_buffers` zeroed.
    fn recv_copy(&self, buf: &mut [u8]) -> io::Result<Received> {
        let skip = VNET_HDR_LEN - RING_VNET_LEN;
        let Some(room) = buf.get_mut(skip..) else {
            return Ok(Received::Bad);
        };
        // SAFETY: room is valid for writes of room.len() bytes; fd is the port's socket.
        let n = unsafe {
            libc::recv(
                self.fd,
                room.as_mut_ptr().cast(),
                room.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            // The copy was not there (the queue was full): the frame is lost, not the port.
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(Received::Bad)
            } else {
                Err(e)
            };
        }
        let n = n as usize;
        if n < RING_VNET_LEN || n > room.len() {
            return Ok(Received::Bad);
        }
        buf.copy_within(skip..skip + RING_VNET_LEN, 0);
        buf[RING_VNET_LEN..VNET_HDR_LEN].fill(0);
        Ok(Received::Frame(n + skip))
    }

    /// Queue `frame` (12-byte header first) for the interface: into the TX ring, sent at the
    /// next `flush` (at the latest after `FLUSH_EVERY` frames); a frame too big for a slot is
    /// sent at once, after what is queued. False if it was dropped (the ring is full).
    pub fn send(&self, frame: &[u8]) -> bool {
        if frame.len() < VNET_HDR_LEN || TX_DATA + frame.len() - 2 > SLOT {
            return self.send_big(frame);
        }
        let mut tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let status = self.map.status(1, tx.head);
        let s = status.load(Ordering::Acquire);
        if s != TP_STATUS_AVAILABLE && s != TP_STATUS_WRONG_FORMAT {
            // Every slot waits for the kernel (or for a receiver still holding its data).
            drop(tx);
            self.flush();
            return false;
        }
        // SAFETY: the slot is ours (available): the kernel reads it only once its status is
        // TP_STATUS_SEND_REQUEST; it is SLOT bytes inside the mapping; the lock keeps other
        // workers off it.
        let slot = unsafe { std::slice::from_raw_parts_mut(self.map.slot(1, tx.head), SLOT) };
        if !fill_tx(slot, frame) {
            return false;
        }
        status.store(TP_STATUS_SEND_REQUEST, Ordering::Release);
        tx.head = (tx.head + 1) % SLOTS;
        tx.queued += 1;
        let now = tx.queued >= FLUSH_EVERY;
        if now {
            tx.queued = 0;
        }
        drop(tx);
        self.pending.store(true, Ordering::Release);
        if now {
            self.flush();
        }
        true
    }

    fn send_big(&self, frame: &[u8]) -> bool {
        self.flush();
        // SAFETY: frame is valid for reads of frame.len() bytes; big_tx is owned by self.
        let n = unsafe {
            libc::send(
                self.big_tx.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        n >= 0
    }

    /// Have the kernel send what the TX ring holds, if anything: one system call for the
    /// frames of a poll round.
    pub fn flush(&self) {
        if !self.pending.load(Ordering::Relaxed) || !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.queued = 0;
        }
        // SAFETY: a zero-length send on the port's socket: tpacket_snd sends the ring's
        // requested slots; no buffer is passed.
        unsafe { libc::send(self.fd, std::ptr::null(), 0, libc::MSG_DONTWAIT) };
    }
}

/// A packet socket that sends frames with a 12-byte virtio-net header on interface `index`
/// and receives none (protocol 0).
fn big_tx_socket(index: u32) -> io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh fd nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    sockopt(
        raw,
        super::packet_port::PACKET_VNET_HDR_SZ,
        &(VNET_HDR_LEN as i32),
    )?;
    // SAFETY: sockaddr_ll is plain old data; all zeroes is valid before the fields are set.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot with the given header fields and the frame `payload` at `mac`, its header the
    /// ten bytes 1..=10 before it.
    fn slot(status: u32, len: u32, snap: u32, mac: u16, payload: &[u8]) -> Vec<u8> {
        let mut s = vec![0u8; SLOT];
        s[0..4].copy_from_slice(&status.to_ne_bytes());
        s[4..8].copy_from_slice(&len.to_ne_bytes());
        s[8..12].copy_from_slice(&snap.to_ne_bytes());
        s[12..14].copy_from_slice(&mac.to_ne_bytes());
        let mac = mac as usize;
        if mac + payload.len() <= SLOT && mac >= RING_VNET_LEN {
            for (i, b) in s[mac - RING_VNET_LEN..mac].iter_mut().enumerate() {
                *b = i as u8 + 1;
            }
            s[mac..mac + payload.len()].copy_from_slice(payload);
        }
        s
    }

    #[test]
    fn a_frame_is_copied_behind_a_twelve_byte_header() {
        let payload: Vec<u8> = (0..60).map(|i| i as u8).collect();
        let s = slot(TP_STATUS_USER, 60, 60, 58, &payload);
        let what = rx_slot(&s);
        assert_eq!(what, RxSlot::Frame { mac: 58, len: 60 });
        let mut buf = vec![0xffu8; 200];
        assert_eq!(copy_frame(&s, what, &mut buf), Some(72));
        assert_eq!(&buf[..10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(&buf[10..12], &[0, 0]);
        assert_eq!(&buf[12..72], &payload[..]);
        // A buffer too small is refused, not overrun.
        assert_eq!(copy_frame(&s, what, &mut buf[..71]), None);
    }

    #[test]
    fn slot_status_decides_before_offsets() {
        assert_eq!(
            rx_slot(&slot(TP_STATUS_KERNEL, 60, 60, 58, &[0; 60])),
            RxSlot::Kernel
        );
        assert_eq!(
            rx_slot(&slot(TP_STATUS_USER | TP_STATUS_COPY, 9000, 1990, 58, &[])),
            RxSlot::Copied
        );
        assert_eq!(
            rx_slot(&slot(
                TP_STATUS_USER | TP_STATUS_VLAN_VALID,
                60,
                60,
                58,
                &[0; 60]
            )),
            RxSlot::Bad
        );
    }

    #[test]
    fn odd_descriptors_are_bad_never_a_panic() {
        // Truncated without a copy; empty; the header before the slot's; past the slot's end;
        // offsets near the integer limits.
        for (len, snap, mac) in [
            (9000, 1990, 58u16),
            (0, 0, 58),
            (60, 60, 20),
            (60, 60, 0),
            (60, 60, (SLOT - 59) as u16),
            (u32::MAX, u32::MAX, u16::MAX),
            (100, 100, u16::MAX),
        ] {
            assert_eq!(
                rx_slot(&slot(TP_STATUS_USER, len, snap, mac, &[])),
                RxSlot::Bad
            );
        }
        // The last byte of the slot is still inside it.
        assert!(matches!(
            rx_slot(&slot(TP_STATUS_USER, 60, 60, (SLOT - 60) as u16, &[0; 60])),
            RxSlot::Frame { .. }
        ));
        // A short slot (fewer bytes than a header) is bad.
        for n in 0..14 {
            assert_eq!(rx_slot(&[1u8; 14][..n]), RxSlot::Bad);
        }
        assert_eq!(copy_frame(&[0; 4], RxSlot::Bad, &mut [0; 100]), None);
    }

    #[test]
    fn tx_slots_take_the_ten_byte_header_and_refuse_what_does_not_fit() {
        let mut frame = vec![0u8; VNET_HDR_LEN + 60];
        frame[..VNET_HDR_LEN].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        frame[VNET_HDR_LEN..].fill(0xab);
        let mut s = vec![0u8; SLOT];
        assert!(fill_tx(&mut s, &frame));
        assert_eq!(u32_at(&s, 4), Some(70));
        assert_eq!(&s[TX_DATA..TX_DATA + 10], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(s[TX_DATA + 10..TX_DATA + 70].iter().all(|&b| b == 0xab));
        assert_eq!(u32_at(&s, 0), Some(0), "the status is the caller's to set");
        assert!(!fill_tx(&mut s, &vec![0u8; SLOT]));
        assert!(!fill_tx(&mut s, &[0u8; 5]));
    }

    #[test]
    fn arbitrary_rings_never_panic() {
        assert_eq!(check_arbitrary_ring(&[]), 0);
        let mut ring = slot(TP_STATUS_USER, 60, 60, 58, &[7; 60]);
        ring.extend(slot(TP_STATUS_USER, 60, 60, 2000, &[]));
        ring.extend_from_slice(&[0xff; 37]);
        assert_eq!(check_arbitrary_ring(&ring), 1);
        let noise: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        check_arbitrary_ring(&noise);
    }
}
