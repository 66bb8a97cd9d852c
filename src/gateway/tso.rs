//! TCP segmentation offload between the gateway and the sandboxes. smoltcp is told the sandbox
//! accepts 64 KiB segments (the MSS option of SYNs it receives is raised), so it builds large
//! segments; those leave for the switch as GSO super-frames (virtio-net header: TCPV4, the
//! network's segment size, partial checksum), and the receiving kernel cuts them up, as it does
//! for a VM's TSO. On the wire the MSS announced to a sandbox still follows the network MTU.

use crate::datapath::frame::{
    ETH_HDR_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VNET_HDR_LEN, VirtioNetHdr,
};
use crate::offload::checksum::{fold, pseudo_header_v4, sum};

/// What smoltcp is told a sandbox accepts: a segment that fills an IPv4 packet.
const LARGE_MSS: u16 = 65495;
const TCP_SYN: u8 = 0x02;
const OPTION_END: u8 = 0;
const OPTION_NOP: u8 = 1;
const OPTION_MSS: u8 = 2;

/// Offsets of the IPv4 and TCP headers of an Ethernet frame carrying TCP over IPv4.
struct TcpFrame {
    ip: usize,
    tcp: usize,
    tcp_len: usize,
    end: usize,
}

fn tcp_frame(frame: &[u8]) -> Option<TcpFrame> {
    if frame.len() < ETH_HDR_LEN + 40 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = ETH_HDR_LEN;
    let ihl = usize::from(frame[ip] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]));
    if frame[ip] >> 4 != 4 || frame[ip + 9] != 6 || ihl < 20 || ip + total > frame.len() {
        return None;
    }
    let tcp = ip + ihl;
    let tcp_len = usize::from(frame.get(tcp + 12)? >> 4) * 4;
    if tcp_len < 20 || tcp + tcp_len > ip + total {
        return None;
    }
    Some(TcpFrame {
        ip,
        tcp,
        tcp_len,
        end: ip + total,
    })
}

/// Rewrite the MSS option of a SYN segment; returns whether there was one.
fn set_mss(frame: &mut [u8], t: &TcpFrame, mss: u16) -> bool {
    if frame[t.tcp + 13] & TCP_SYN == 0 {
        return false;
    }
    let mut at = t.tcp + 20;
    let options_end = t.tcp + t.tcp_len;
    while at < options_end {
        match frame[at] {
            OPTION_END => return false,
            OPTION_NOP => at += 1,
            kind => {
                let Some(&len) = frame.get(at + 1) else {
                    return false;
                };
                let len = usize::from(len);
                if len < 2 || at + len > options_end {
                    return false;
                }
                if kind == OPTION_MSS && len == 4 {
                    frame[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
                    return true;
                }
                at += len;
            }
        }
    }
    false
}

fn l4_pseudo_sum(frame: &[u8], t: &TcpFrame) -> u64 {
    let src = [
        frame[t.ip + 12],
        frame[t.ip + 13],
        frame[t.ip + 14],
        frame[t.ip + 15],
    ];
    let dst = [
        frame[t.ip + 16],
        frame[t.ip + 17],
        frame[t.ip + 18],
        frame[t.ip + 19],
    ];
    pseudo_header_v4(src, dst, 6, (t.end - t.tcp) as u16)
}

/// A SYN from a sandbox, before smoltcp sees it: claim the sandbox takes 64 KiB segments.
/// smoltcp verifies no incoming checksum, so the stale one does not matter.
pub fn raise_syn_mss(frame: &mut [u8]) {
    if let Some(t) = tcp_frame(frame) {
        set_mss(frame, &t, LARGE_MSS);
    }
}

/// Fix up a frame smoltcp built (`buf` = virtio-net header + Ethernet frame) for a network of
/// `mtu`: announce the real MSS in SYNs, and turn segments larger than the MTU into GSO frames.
/// smoltcp computes no TCP checksum (the device says so): a frame that fits the MTU gets its
/// full checksum here, a GSO frame only the pseudo-header sum, which saves summing 64 KiB that
/// the receiving kernel would sum again per segment anyway.
pub fn prepare_tx(buf: &mut [u8], mtu: usize) {
    let (hdr, frame) = buf.split_at_mut(VNET_HDR_LEN);
    let Some(t) = tcp_frame(frame) else {
        return;
    };
    let csum_at = t.tcp + 16;
    set_mss(frame, &t, (mtu - 40) as u16);
    let ihl = t.tcp - t.ip;
    if t.end - t.ip <= mtu {
        frame[csum_at..csum_at + 2].fill(0);
        let c = !fold(sum(l4_pseudo_sum(frame, &t), &frame[t.tcp..t.end]));
        frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        return;
    }
    // The receiving kernel computes the checksum of each segment from the pseudo-header sum.
    let partial = fold(l4_pseudo_sum(frame, &t));
    frame[csum_at..csum_at + 2].copy_from_slice(&partial.to_be_bytes());
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: (t.tcp + t.tcp_len) as u16,
        gso_size: (mtu - ihl - t.tcp_len) as u16,
        csum_start: t.tcp as u16,
        csum_offset: 16,
    }
    .write(hdr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn tcp_frame_bytes(syn: bool, payload: usize) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([172, 18, 0, 1], [172, 18, 0, 2], 64)
            .tcp(80, 40000, 1000, 65535);
        if syn {
            b = b
                .syn()
                .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(65495)])
                .unwrap();
        }
        let mut out = vec![0u8; VNET_HDR_LEN];
        b.write(&mut out, &vec![7u8; payload]).unwrap();
        out
    }

    #[test]
    fn syns_announce_the_network_mss_with_a_valid_checksum() {
        let mut buf = tcp_frame_bytes(true, 0);
        prepare_tx(&mut buf, 1400);
        let p = SlicedPacket::from_ethernet(&buf[VNET_HDR_LEN..]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!()
        };
        let mss: Vec<_> = tcp.options_iterator().flatten().collect();
        assert_eq!(
            mss,
            [etherparse::TcpOptionElement::MaximumSegmentSize(1360)]
        );
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!()
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), want);
        assert_eq!(
            VirtioNetHdr::parse(&buf).unwrap(),
            VirtioNetHdr::default(),
            "not GSO"
        );
    }

    #[test]
    fn large_segments_leave_as_gso_frames() {
        let mut buf = tcp_frame_bytes(false, 30_000);
        prepare_tx(&mut buf, 1500);
        let hdr = VirtioNetHdr::parse(&buf).unwrap();
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (34, 16, 54));
        assert_eq!(hdr.gso_size, 1460);
        // The checksum field holds the pseudo-header sum the kernel will finish per segment.
        let frame = &buf[VNET_HDR_LEN..];
        let t = tcp_frame(frame).unwrap();
        assert_eq!(
            u16::from_be_bytes([frame[50], frame[51]]),
            fold(l4_pseudo_sum(frame, &t))
        );
        // Small segments are not GSO frames, and get the full checksum smoltcp left out.
        let mut small = tcp_frame_bytes(false, 1000);
        let before = small.clone();
        let csum_at = VNET_HDR_LEN + 50;
        small[csum_at..csum_at + 2].fill(0);
        prepare_tx(&mut small, 1500);
        assert_eq!(small, before);
        // Anything else is left alone too.
        let mut junk = vec![0u8; 100];
        prepare_tx(&mut junk, 1500);
        raise_syn_mss(&mut junk[VNET_HDR_LEN..]);
        assert!(junk.iter().all(|b| *b == 0));
    }
}
