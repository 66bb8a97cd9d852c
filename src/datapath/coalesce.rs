//! Receive-side coalescing of TCP segments (GRO in userspace): consecutive in-order segments of
//! one IPv4 TCP flow, as they come out of VXLAN one wire-size frame each, become one super-frame
//! with a `GSO_TCPV4` virtio-net header, which the switch and the receiving TAP take whole. So a
//! burst costs one switch pass and one TAP write instead of one per 1.4 KB.
//!
//! Linux's GRO rules, simplified: a segment joins only if it has the same Ethernet header, IP
//! addresses, TOS, TTL, DF, ports, ACK, window and TCP options as the first, carries data, only
//! ACK (and PSH) flags, continues the sequence, and is no longer than the first; a shorter one or
//! PSH ends the super-frame. Its TCP checksum is verified first (the super-frame's checksum is
//! left partial, so nobody would verify it later); a segment that fails is passed on as it is,
//! for the receiver to drop.

use crate::offload::checksum::{checksum, fold, pseudo_header_v4, sum};
use crate::wire::tcp::{self, FLAG_ACK, FLAG_PSH};
use crate::wire::vnet::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4};
use crate::wire::{
    ETH_HDR_LEN, Ethernet, Ipv4Packet, MAX_FRAME_LEN, TcpSegment, VNET_HDR_LEN, VirtioNetHdr,
    ethertype, ipv4,
};

const IP: usize = ETH_HDR_LEN;
const TCP: usize = IP + 20;
/// IPv4's total length is 16 bits.
const MAX_IP_LEN: usize = 65535;

/// What a mergeable segment is, read once.
#[derive(Clone, Copy)]
struct Seg {
    /// TCP header length.
    doff: usize,
    seq: u32,
    flags: u8,
    payload: usize,
}

/// One pending super-frame, built in its own buffer.
pub struct Coalescer {
    buf: Box<[u8]>,
    /// Bytes in `buf`, virtio-net header included; 0 when nothing is pending.
    len: usize,
    segs: usize,
    mss: usize,
    doff: usize,
    next_seq: u32,
    /// A shorter segment arrived: nothing may follow it.
    closed: bool,
}

impl Default for Coalescer {
    fn default() -> Self {
        Self::new()
    }
}

impl Coalescer {
    pub fn new() -> Self {
        Coalescer {
            buf: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            len: 0,
            segs: 0,
            mss: 0,
            doff: 0,
            next_seq: 0,
            closed: false,
        }
    }

    /// Offer `frame` (a zero virtio-net header and an Ethernet frame, as checked by
    /// `frame::parse`). `out` receives finished buffers, in order: the pending super-frame when
    /// `frame` cannot join it, and `frame` itself when it cannot be merged at all.
    pub fn push(&mut self, frame: &[u8], out: &mut dyn FnMut(&[u8])) {
        let Some(seg) = mergeable(frame) else {
            self.flush(out);
            out(frame);
            return;
        };
        if self.len > 0 && !self.joins(frame, &seg) {
            self.flush(out);
        }
        let eth = &frame[VNET_HDR_LEN..];
        if self.len == 0 {
            self.buf[..frame.len()].copy_from_slice(frame);
            self.len = VNET_HDR_LEN + TCP + seg.doff + seg.payload;
            self.segs = 1;
            self.mss = seg.payload;
            self.doff = seg.doff;
        } else {
            let data = &eth[TCP + seg.doff..TCP + seg.doff + seg.payload];
            self.buf[self.len..self.len + seg.payload].copy_from_slice(data);
            self.len += seg.payload;
            self.segs += 1;
            self.closed = seg.payload < self.mss;
            // The super-frame carries the last segment's flags (PSH).
            let first = &mut self.buf[VNET_HDR_LEN + TCP..self.len];
            if let Ok(mut tcp) = TcpSegment::new_checked(first) {
                tcp.set_flags(seg.flags);
            }
        }
        self.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        if seg.flags & FLAG_PSH != 0 {
            self.flush(out);
        }
    }

    fn joins(&self, frame: &[u8], seg: &Seg) -> bool {
        let (a, b) = (&self.buf[VNET_HDR_LEN..], &frame[VNET_HDR_LEN..]);
        !self.closed
            && seg.seq == self.next_seq
            && seg.payload <= self.mss
            && seg.doff == self.doff
            && self.len - VNET_HDR_LEN - IP + seg.payload <= MAX_IP_LEN
            && a[..ETH_HDR_LEN] == b[..ETH_HDR_LEN]
            && a[IP + 1] == b[IP + 1]
            && a[IP + 6] & 0x40 == b[IP + 6] & 0x40
            && a[IP + 8..IP + 10] == b[IP + 8..IP + 10]
            && a[IP + 12..IP + 20] == b[IP + 12..IP + 20]
            && a[TCP..TCP + 4] == b[TCP..TCP + 4]
            && a[TCP + 8..TCP + 12] == b[TCP + 8..TCP + 12]
            && a[TCP + 14..TCP + 16] == b[TCP + 14..TCP + 16]
            && a[TCP + 20..TCP + seg.doff] == b[TCP + 20..TCP + seg.doff]
    }

    /// Hand on what is pending: one segment as it came, more as a GSO super-frame.
    pub fn flush(&mut self, out: &mut dyn FnMut(&[u8])) {
        if self.len == 0 {
            return;
        }
        if self.segs > 1 {
            let len = self.len;
            let ip_len = (len - VNET_HDR_LEN - IP) as u16;
            // `mergeable` checked both headers of the first segment, which heads the buffer.
            let (ip_hdr, segment) = self.buf[VNET_HDR_LEN + IP..len].split_at_mut(TCP - IP);
            if let (Ok(mut ip), Ok(mut tcp)) = (
                Ipv4Packet::new_checked(ip_hdr),
                TcpSegment::new_checked(segment),
            ) {
                ip.set_total_len(ip_len);
                ip.set_checksum(0);
                let ip_sum = checksum(ip.as_bytes());
                ip.set_checksum(ip_sum);
                // A partial checksum: the pseudo-header's sum, for the receiver to complete.
                let pseudo =
                    pseudo_header_v4(ip.src_bytes(), ip.dst_bytes(), ipv4::PROTO_TCP, ip_len - 20);
                tcp.set_checksum(fold(pseudo));
            }
            VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
                hdr_len: (TCP + self.doff) as u16,
                gso_size: self.mss as u16,
                csum_start: TCP as u16,
                csum_offset: tcp::CHECKSUM_OFFSET as u16,
            }
            .write(&mut self.buf[..VNET_HDR_LEN]);
        }
        out(&self.buf[..self.len]);
        self.buf[..VNET_HDR_LEN].fill(0);
        self.len = 0;
        self.segs = 0;
        self.closed = false;
    }
}

/// The segment's fields if it may take part in coalescing: IPv4 without options or fragments,
/// TCP with data, only ACK and PSH set, a correct checksum, no trailing bytes.
fn mergeable(frame: &[u8]) -> Option<Seg> {
    let vnet = VirtioNetHdr::parse(frame)?;
    if vnet.flags != 0 || vnet.is_gso() {
        return None;
    }
    let eth = Ethernet::new_checked(frame.get(VNET_HDR_LEN..)?).ok()?;
    if eth.ethertype() != ethertype::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    // Plain IPv4 only: no options, no fragment, nothing after the packet.
    if ip.version() != 4
        || ip.header_len() != ipv4::MIN_HEADER_LEN
        || ip.protocol() != ipv4::PROTO_TCP
        || ip.is_fragment()
        || ip.total_len() != eth.payload().len()
    {
        return None;
    }
    let tcp = TcpSegment::new_checked(ip.payload().ok()?).ok()?;
    let doff = tcp.checked_header_len().ok()?;
    let flags = tcp.flags();
    if doff == tcp.as_bytes().len() || flags & !(FLAG_ACK | FLAG_PSH) != 0 || flags & FLAG_ACK == 0
    {
        return None;
    }
    let l4 = tcp.as_bytes().len();
    let pseudo = pseudo_header_v4(ip.src_bytes(), ip.dst_bytes(), ipv4::PROTO_TCP, l4 as u16);
    if fold(sum(pseudo, tcp.as_bytes())) != 0xffff {
        return None;
    }
    Some(Seg {
        doff,
        seq: tcp.seq(),
        flags,
        payload: l4 - doff,
    })
}

/// The fuzz target's second half: any inner frame a VTEP might pass on (after `frame::parse`),
/// behind a zero virtio-net header, goes through the coalescer without a panic, and everything
/// it hands on is a buffer the switch can take.
pub fn check_arbitrary_frame(c: &mut Coalescer, frame: &[u8]) {
    let mut check = |b: &[u8]| {
        assert!(b.len() >= VNET_HDR_LEN && b.len() <= MAX_FRAME_LEN);
        assert!(super::frame::parse(b, 65535).is_ok() || b == frame);
    };
    c.push(frame, &mut check);
    c.flush(&mut check);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::Segmenter;

    /// A TCPv4 frame (zero vnet header) with `payload` bytes at `seq`, checksums complete.
    fn segment(seq: u32, payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN + TCP + 32 + payload.len()];
        let e = &mut f[VNET_HDR_LEN..];
        e[0..6].copy_from_slice(&[2, 0x42, 10, 0, 0, 3]);
        e[6..12].copy_from_slice(&[2, 0x42, 10, 0, 0, 2]);
        e[12..14].copy_from_slice(&[0x08, 0x00]);
        e[IP] = 0x45;
        let total = (20 + 32 + payload.len()) as u16;
        e[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        e[IP + 6] = 0x40;
        e[IP + 8] = 64;
        e[IP + 9] = 6;
        e[IP + 12..IP + 16].copy_from_slice(&[10, 0, 0, 2]);
        e[IP + 16..IP + 20].copy_from_slice(&[10, 0, 0, 3]);
        let s = checksum(&e[IP..TCP]);
        e[IP + 10..IP + 12].copy_from_slice(&s.to_be_bytes());
        e[TCP..TCP + 2].copy_from_slice(&40000u16.to_be_bytes());
        e[TCP + 2..TCP + 4].copy_from_slice(&5201u16.to_be_bytes());
        e[TCP + 4..TCP + 8].copy_from_slice(&seq.to_be_bytes());
        e[TCP + 8..TCP + 12].copy_from_slice(&7u32.to_be_bytes());
        e[TCP + 12] = 8 << 4;
        e[TCP + 13] = flags;
        e[TCP + 14..TCP + 16].copy_from_slice(&500u16.to_be_bytes());
        e[TCP + 20..TCP + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        e[TCP + 32..].copy_from_slice(payload);
        let p = pseudo_header_v4([10, 0, 0, 2], [10, 0, 0, 3], 6, total - 20);
        let c = !fold(sum(p, &e[TCP..]));
        e[TCP + 16..TCP + 18].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn run(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut c = Coalescer::new();
        let mut out = Vec::new();
        for f in frames {
            c.push(f, &mut |b| out.push(b.to_vec()));
        }
        c.flush(&mut |b| out.push(b.to_vec()));
        out
    }

    #[test]
    fn in_order_segments_become_one_super_frame_that_segments_back_to_them() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut frames = Vec::new();
        let mut seq = 1000u32;
        for chunk in data.chunks(1400) {
            let last = chunk.len() < 1400;
            frames.push(segment(seq, chunk, if last { 0x18 } else { 0x10 }));
            seq += chunk.len() as u32;
        }
        let out = run(&frames);
        assert_eq!(out.len(), 1, "one super-frame");
        let hdr = VirtioNetHdr::parse(&out[0]).unwrap();
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr.gso_size, 1400);
        // The software segmenter (what the kernel would do) gives back the very segments.
        let mut again = Vec::new();
        Segmenter::new()
            .segment(&out[0], &mut |s| again.push(s.to_vec()))
            .unwrap();
        assert_eq!(again.len(), frames.len());
        for (a, f) in again.iter().zip(&frames) {
            assert_eq!(a[VNET_HDR_LEN + TCP + 32..], f[VNET_HDR_LEN + TCP + 32..]);
            assert!(mergeable(a).is_some(), "segment checksums are right");
        }
    }

    #[test]
    fn gaps_bad_checksums_and_other_frames_are_not_merged() {
        let p = [9u8; 100];
        // A gap in the sequence: two outputs.
        assert_eq!(
            run(&[segment(1, &p, 0x10), segment(500, &p, 0x10)]).len(),
            2
        );
        // A corrupted segment passes unmerged, unchanged.
        let mut bad = segment(101, &p, 0x10);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let out = run(&[segment(1, &p, 0x10), bad.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1], bad);
        // SYN, pure ACK and ARP pass as they are.
        let syn = segment(1, &p, 0x02);
        let ack = segment(1, &[], 0x10);
        let mut arp = segment(1, &p, 0x10);
        arp[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(
            run(&[syn.clone(), ack.clone(), arp.clone()]),
            vec![syn, ack, arp]
        );
        // A single mergeable segment leaves as it came.
        let one = segment(1, &p, 0x10);
        assert_eq!(run(std::slice::from_ref(&one)), vec![one]);
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let mut rng = crate::test_rng::XorShift(0x5eed_1234_5678_9abc);
        let base = segment(1, &[3u8; 200], 0x10);
        let mut c = Coalescer::new();
        for _ in 0..20_000 {
            let mut f = base.clone();
            let len = rng.below(f.len() + 1);
            f.truncate(len.max(VNET_HDR_LEN));
            for _ in 0..rng.below(4) {
                let i = rng.below(f.len());
                f[i] = rng.next() as u8;
            }
            check_arbitrary_frame(&mut c, &f);
        }
    }
}
