//! An in-process port's way into the switch: frames another thread of the daemon (a network's
//! gateway) hands the switch through memory instead of a socketpair. Through the socketpair a
//! frame was copied twice in the kernel (the sender's write, the worker's read) and cost two
//! system calls; here it is written once into a buffer of the inbox and copied once by the
//! worker that switches it. An eventfd, level-triggered in the worker's poll, says that frames
//! wait. The other way (the switch to the gateway) stays the socketpair.
//!
//! Buffers circulate between two bounded channels, `free` and `full`, so a frame allocates
//! nothing once its buffer has grown to the size of the largest frame so far; when all
//! `capacity` buffers are full the frame is dropped, as a congested link would.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, bounded};

/// A buffer and the length of the frame in it (the buffer only grows, so that refilling it
/// zeroes nothing).
type Slot = (Vec<u8>, usize);

pub struct Inbox {
    full_tx: Sender<Slot>,
    full_rx: Receiver<Slot>,
    free_tx: Sender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    /// Set when the eventfd has been written since the worker last found the inbox empty, so
    /// that a burst costs one write.
    signaled: AtomicBool,
    event: OwnedFd,
    /// Frames dropped because every buffer was full.
    pub dropped: AtomicU64,
}

impl Inbox {
    /// An inbox of at most `capacity` frames waiting.
    pub fn new(capacity: usize) -> io::Result<Inbox> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nothing else.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        let (full_tx, full_rx) = bounded(capacity);
        let (free_tx, free_rx) = bounded(capacity);
        for _ in 0..capacity {
            // Empty vectors: memory comes with the first frame each carries.
            let _ = free_tx.try_send(Vec::new());
        }
        Ok(Inbox {
            full_tx,
            full_rx,
            free_tx,
            free_rx,
            signaled: AtomicBool::new(false),
            event,
            dropped: AtomicU64::new(0),
        })
    }

    /// The fd a worker polls (readable while frames may wait).
    pub fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// Queue a frame of `len` bytes (virtio-net header included) that `fill` writes; with
    /// every buffer full, `fill` writes into `spare` and the frame is dropped and counted.
    pub fn push_with<R>(
        &self,
        len: usize,
        spare: &mut [u8],
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> R {
        let Ok(mut buf) = self.free_rx.try_recv() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if spare.len() < len {
                return fill(&mut vec![0u8; len]);
            }
            return fill(&mut spare[..len]);
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let result = fill(&mut buf[..len]);
        // Never full: a frame in `full` took its buffer from `free`, of the same capacity.
        let _ = self.full_tx.try_send((buf, len));
        self.signal();
        result
    }

    /// Write the eventfd even though it was written for this burst: a reader whose io_uring
    /// consumed the count, and that stopped before the inbox was empty, is told again.
    pub fn signal_again(&self) {
        self.signaled.store(true, Ordering::SeqCst);
        self.write_event();
    }

    fn signal(&self) {
        if !self.signaled.swap(true, Ordering::SeqCst) {
            self.write_event();
        }
    }

    fn write_event(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. It cannot fail short of the
        // counter's overflow, which 2^64 - 1 signals never reach.
        unsafe { libc::write(self.event.as_raw_fd(), (&raw const one).cast(), 8) };
    }

    /// Copy the next frame into `out` (cut to its length): its length, or `WouldBlock` when
    /// none waits (the eventfd is then reset, so the poll reports the inbox again only when a
    /// frame comes).
    pub fn recv(&self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(n) = self.pop_into(out) {
            return Ok(n);
        }
        self.signaled.store(false, Ordering::SeqCst);
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64 from our eventfd; EAGAIN when zero.
        unsafe { libc::read(self.event.as_raw_fd(), (&raw mut count).cast(), 8) };
        // A frame queued after the first look but before `signaled` was cleared found it set
        // and wrote nothing: look again, and keep the poll reporting what may follow it.
        match self.pop_into(out) {
            Some(n) => {
                self.signal();
                Ok(n)
            }
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn pop_into(&self, out: &mut [u8]) -> Option<usize> {
        let (buf, len) = self.full_rx.try_recv().ok()?;
        let n = len.min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        let _ = self.free_tx.try_send(buf);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(inbox: &Inbox) -> bool {
        let mut p = libc::pollfd {
            fd: inbox.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn frames_come_out_in_order_and_the_fd_says_when_they_wait() {
        let inbox = Inbox::new(4).expect("eventfd");
        let mut out = [0u8; 16];
        assert!(!readable(&inbox));
        assert_eq!(
            inbox.recv(&mut out).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        inbox.push_with(3, &mut [], |b| b.copy_from_slice(b"abc"));
        inbox.push_with(2, &mut [], |b| b.copy_from_slice(b"de"));
        assert!(readable(&inbox));
        assert_eq!(inbox.recv(&mut out).unwrap(), 3);
        assert_eq!(&out[..3], b"abc");
        assert_eq!(inbox.recv(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"de");
        // Still readable until a receive finds it empty: then it is reset.
        assert!(readable(&inbox));
        assert!(inbox.recv(&mut out).is_err());
        assert!(!readable(&inbox));
        inbox.push_with(1, &mut [], |b| b[0] = b'f');
        assert!(readable(&inbox));
    }

    #[test]
    fn a_full_inbox_drops_and_counts_and_buffers_come_back() {
        let inbox = Inbox::new(2).expect("eventfd");
        let mut spare = [0u8; 8];
        for _ in 0..3 {
            inbox.push_with(4, &mut spare, |b| b.fill(7));
        }
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(
            spare[..4],
            [7; 4],
            "the dropped frame was written to the spare buffer"
        );
        let mut out = [0u8; 8];
        assert_eq!(inbox.recv(&mut out).unwrap(), 4);
        // One buffer is free again: the next frame is queued, not dropped.
        inbox.push_with(5, &mut spare, |b| b.fill(9));
        assert_eq!(inbox.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(inbox.recv(&mut out).unwrap(), 4);
        assert_eq!(inbox.recv(&mut out).unwrap(), 5);
        assert_eq!(out[..5], [9; 5]);
    }

    #[test]
    fn a_frame_longer_than_the_reader_s_buffer_is_cut() {
        let inbox = Inbox::new(1).expect("eventfd");
        inbox.push_with(10, &mut [], |b| b.fill(1));
        let mut out = [0u8; 4];
        assert_eq!(inbox.recv(&mut out).unwrap(), 4);
    }
}
