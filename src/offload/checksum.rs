//! The internet checksum (RFC 1071) and the completion of a `NEEDS_CSUM` frame, the way Linux's
//! `skb_checksum_help` does it.

use super::OffloadError;
use crate::wire::{VIRTIO_NET_HDR_F_NEEDS_CSUM, VirtioNetHdr};

/// Bytes summed between two folds of the native-endian accumulator: 2^18 u32 words stay far below
/// 2^64, so the inner loop needs no carry handling and the compiler can vectorise it.
const BLOCK: usize = 1 << 20;

/// Ones-complement sum of `data` read as big-endian 16-bit words (an odd last byte is padded with
/// zero), added to `acc`. The result is not folded: add the sums of several pieces and call
/// [`fold`] once. Every piece but the last must have an even length and start on an even offset
/// of the checksummed region, or the words would straddle pieces.
pub fn sum(acc: u64, data: &[u8]) -> u64 {
    // Keep the running total small so that any number of calls cannot overflow it.
    let mut total = u64::from(fold(acc));
    for block in data.chunks(BLOCK) {
        total += block_sum(block);
    }
    total
}

/// One block: native-endian u32 words into a u64 (RFC 1071's byte-order independence lets us
/// skip the per-word byte swap and swap the folded result once), then the 0-3 trailing bytes.
fn block_sum(block: &[u8]) -> u64 {
    let mut words = block.chunks_exact(4);
    let mut ne: u64 = 0;
    for w in &mut words {
        ne += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let folded = fold(ne);
    let mut total = u64::from(if cfg!(target_endian = "little") {
        folded.swap_bytes()
    } else {
        folded
    });
    let tail = words.remainder();
    let mut pairs = tail.chunks_exact(2);
    for p in &mut pairs {
        total += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        total += u64::from(*last) << 8;
    }
    total
}

/// Fold an unfolded ones-complement sum to 16 bits (end-around carry). Not complemented.
pub fn fold(sum: u64) -> u16 {
    let mut s = (sum & 0xffff_ffff) + (sum >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The checksum to store in a header whose checksum field is zero while `data` is summed.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Unfolded sum of the IPv4 pseudo-header (RFC 793/768) for an L4 segment of `l4_len` bytes.
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u64 {
    let word = |b: [u8; 4]| u64::from(u32::from_be_bytes(b));
    word(src) + word(dst) + u64::from(protocol) + u64::from(l4_len)
}

/// Unfolded sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], protocol: u8, l4_len: u32) -> u64 {
    sum(sum(0, src), dst) + u64::from(protocol) + u64::from(l4_len)
}

/// Complete a `NEEDS_CSUM` checksum in `frame` (an Ethernet frame, no virtio-net header): sum
/// everything from `csum_start` to the end of the frame, the checksum field included (it holds
/// the pseudo-header sum the kernel left there), and store the complement at
/// `csum_start + csum_offset`. A result of zero is stored as 0xffff, as `skb_checksum_help` does,
/// because zero means "no checksum" in UDP. Without `NEEDS_CSUM` the frame is left alone. The
/// caller clears `NEEDS_CSUM` in whatever header it sends the frame on with.
pub fn complete_checksum(frame: &mut [u8], hdr: &VirtioNetHdr) -> Result<(), OffloadError> {
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    let bad = OffloadError::BadChecksumOffsets {
        start: hdr.csum_start,
        offset: hdr.csum_offset,
        len: frame.len(),
    };
    if field + 2 > frame.len() {
        return Err(bad);
    }
    let covered = frame.get(start..).ok_or(bad)?;
    let mut csum = !fold(sum(0, covered));
    if csum == 0 {
        csum = 0xffff;
    }
    frame[field..field + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::VIRTIO_NET_HDR_F_DATA_VALID;

    /// The textbook definition, one big-endian word at a time, to check the fast path against.
    fn reference_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sum_matches_reference_for_all_alignments_and_lengths() {
        let data = pattern(5000, 7);
        for start in 0..8 {
            for len in (0..200).chain([1447, 1448, 1449, 4000, 4991]) {
                let piece = &data[start..start + len];
                let ours = fold(sum(0, piece));
                let reference = reference_sum(piece);
                // 0 and 0xffff are both zero in ones-complement.
                assert_eq!(ours % 0xffff, reference % 0xffff, "start {start} len {len}");
            }
        }
    }

    #[test]
    fn sum_of_even_pieces_equals_sum_of_whole() {
        let data = pattern(3001, 3);
        let whole = fold(sum(0, &data));
        let pieces = sum(sum(sum(0, &data[..1000]), &data[1000..2002]), &data[2002..]);
        assert_eq!(fold(pieces), whole);
        // A huge initial accumulator must not overflow.
        assert_eq!(fold(sum(u64::MAX, &data)) % 0xffff, {
            let s = u64::from(fold(u64::MAX)) + u64::from(whole);
            fold(s) % 0xffff
        });
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&hdr);
        assert_eq!(c, 0xb861);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&hdr), 0);
    }

    /// A UDP/IPv4 frame with the pseudo-header sum in the checksum field, as the kernel hands it.
    fn partial_udp_frame(payload: &[u8]) -> (Vec<u8>, VirtioNetHdr) {
        let builder = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1234, 5678);
        let mut f = Vec::new();
        builder.write(&mut f, payload).unwrap();
        let l4_len = (8 + payload.len()) as u16;
        let pseudo = fold(pseudo_header_v4([10, 0, 0, 1], [10, 0, 0, 2], 17, l4_len));
        f[34 + 6..34 + 8].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        (f, hdr)
    }

    fn udp_checksum_ok(frame: &[u8]) -> bool {
        let p = etherparse::PacketHeaders::from_ethernet_slice(frame).unwrap();
        let (Some(etherparse::NetHeaders::Ipv4(ip, _)), Some(etherparse::TransportHeader::Udp(u))) =
            (p.net, p.transport)
        else {
            panic!("not UDP/IPv4");
        };
        u.checksum == u.calc_checksum_ipv4(&ip, p.payload.slice()).unwrap()
    }

    #[test]
    fn completes_a_partial_udp_checksum() {
        for len in [0, 1, 2, 3, 17, 1000, 1001, 1472] {
            let payload = pattern(len, len as u32 + 1);
            let (mut f, hdr) = partial_udp_frame(&payload);
            complete_checksum(&mut f, &hdr).unwrap();
            assert!(udp_checksum_ok(&f), "payload {len}");
            assert_ne!(&f[40..42], &[0, 0], "zero must be sent as 0xffff");
        }
    }

    #[test]
    fn leaves_frames_without_needs_csum_alone() {
        let (mut f, mut hdr) = partial_udp_frame(b"hello");
        let before = f.clone();
        hdr.flags = VIRTIO_NET_HDR_F_DATA_VALID;
        complete_checksum(&mut f, &hdr).unwrap();
        assert_eq!(f, before);
    }

    #[test]
    fn rejects_offsets_outside_the_frame() {
        let (mut f, hdr) = partial_udp_frame(b"hello");
        let len = f.len();
        let before = f.clone();
        for (start, offset) in [
            (len as u16, 0),
            (len as u16 - 1, 0),
            (34, (len - 34 - 1) as u16),
            (u16::MAX, u16::MAX),
        ] {
            let h = VirtioNetHdr {
                csum_start: start,
                csum_offset: offset,
                ..hdr
            };
            assert_eq!(
                complete_checksum(&mut f, &h),
                Err(OffloadError::BadChecksumOffsets { start, offset, len })
            );
        }
        assert_eq!(f, before, "nothing written on error");
        // The last two bytes of the frame are a valid place for the field.
        let h = VirtioNetHdr {
            csum_start: (len - 2) as u16,
            csum_offset: 0,
            ..hdr
        };
        assert!(complete_checksum(&mut f, &h).is_ok());
        assert!(complete_checksum(&mut [], &hdr).is_err());
    }
}
