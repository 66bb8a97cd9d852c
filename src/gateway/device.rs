//! The gateway's side of its switch port, as a smoltcp `Device`: one frame in, frames out.
//! The port is a SOCK_SEQPACKET socketpair whose other end the datapath polls like a TAP, so
//! every message carries the same 12-byte virtio-net header as a TAP frame. In the daemon,
//! frames out go through the port's inbox (`datapath/inbox.rs`), in memory, instead.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use crate::datapath::inbox::Inbox;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::wire::{MAX_FRAME_LEN, VNET_HDR_LEN};

pub struct SwitchDevice {
    fd: OwnedFd,
    /// The frame waiting to be handed to smoltcp (Ethernet, no virtio-net header).
    rx: Box<[u8]>,
    rx_len: Option<usize>,
    tx: Box<[u8]>,
    mtu: usize,
    /// Where frames out go when the switch polls an inbox for this port; else the fd.
    inbox: Option<Arc<Inbox>>,
}

impl SwitchDevice {
    pub fn new(fd: OwnedFd, mtu: usize, inbox: Option<Arc<Inbox>>) -> Self {
        SwitchDevice {
            fd,
            rx: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            rx_len: None,
            tx: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            mtu,
            inbox,
        }
    }

    /// The gateway's end of the socketpair, to poll.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    fn tx_token(&mut self) -> TxToken<'_> {
        TxToken {
            fd: self.fd.as_raw_fd(),
            tx: &mut self.tx,
            mtu: self.mtu,
            inbox: self.inbox.as_deref(),
        }
    }

    /// Read the next message from the switch into the receive slot: `Some(len)` of the
    /// Ethernet frame, `None` when nothing is waiting.
    pub fn read_frame(&mut self) -> Option<usize> {
        // The header goes to a buffer of its own, so the frame lands where smoltcp reads it
        // (moving a 64 KiB super-frame down by 12 bytes cost a copy of it).
        let mut hdr = [0u8; VNET_HDR_LEN];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: VNET_HDR_LEN,
            },
            libc::iovec {
                iov_base: self.rx.as_mut_ptr().cast(),
                iov_len: self.rx.len(),
            },
        ];
        // SAFETY: both buffers are valid for writes of their lengths; fd is owned.
        let n = unsafe { libc::readv(self.fd.as_raw_fd(), iov.as_ptr(), iov.len() as i32) };
        if n < VNET_HDR_LEN as isize {
            return None;
        }
        Some(n as usize - VNET_HDR_LEN)
    }

    /// The frame read last.
    pub fn frame(&self, len: usize) -> &[u8] {
        &self.rx[..len]
    }

    /// Put `frame` (Ethernet) into the receive slot, as if just read.
    pub fn load(&mut self, frame: &[u8]) {
        if frame.len() <= self.rx.len() {
            self.rx[..frame.len()].copy_from_slice(frame);
        }
    }

    /// Offer the frame read last to smoltcp on the next poll.
    pub fn queue_for_stack(&mut self, len: usize) {
        super::tso::raise_syn_mss(&mut self.rx[..len]);
        self.rx_len = Some(len);
    }

    /// Send an Ethernet frame to the switch, with an all-zero virtio-net header.
    /// A full inbox (or socket) drops the frame, as a congested link would.
    pub fn send(&mut self, frame: &[u8]) {
        let token = self.tx_token();
        phy::TxToken::consume(token, frame.len(), |b| b.copy_from_slice(frame));
    }
}

pub struct RxToken<'a> {
    frame: &'a [u8],
}

pub struct TxToken<'a> {
    fd: i32,
    tx: &'a mut [u8],
    mtu: usize,
    inbox: Option<&'a Inbox>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if VNET_HDR_LEN + len > self.tx.len() {
            // Longer than any frame: smoltcp never builds one, but do not panic if it did.
            return f(&mut vec![0u8; len]);
        }
        let total = VNET_HDR_LEN + len;
        let mtu = self.mtu;
        // The header is all zero but what `prepare_tx` sets for a TCP frame.
        let build = |b: &mut [u8]| {
            b[..VNET_HDR_LEN].fill(0);
            let result = f(&mut b[VNET_HDR_LEN..]);
            super::tso::prepare_tx(b, mtu);
            result
        };
        if let Some(inbox) = self.inbox {
            return inbox.push_with(total, self.tx, build);
        }
        let result = build(&mut self.tx[..total]);
        // SAFETY: tx is valid for reads of `total` bytes.
        unsafe { libc::write(self.fd, self.tx.as_ptr().cast(), total) };
        result
    }
}

impl phy::Device for SwitchDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.rx_len.take()?;
        Some((
            RxToken {
                frame: &self.rx[..len],
            },
            TxToken {
                fd: self.fd.as_raw_fd(),
                tx: &mut self.tx,
                mtu: self.mtu,
                inbox: self.inbox.as_deref(),
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(self.tx_token())
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        // smoltcp may build segments that fill an IPv4 packet: they leave as GSO frames.
        caps.max_transmission_unit = 65535 + 14;
        // Frames from sandboxes come from their kernels, which leave TCP and UDP checksums
        // partial (offloads): verifying them would reject good frames. Outgoing ones are full;
        // TCP's are filled in by `tso::prepare_tx` (partial for GSO frames).
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::None;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Both;
        caps.checksum = checksum;
        caps
    }
}
