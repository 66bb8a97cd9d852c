//! TCP segmentation offload between the gateway and the sandboxes. smoltcp is told the sandbox
//! accepts 64 KiB segments (the MSS option of SYNs it receives is raised), so it builds large
//! segments; those leave for the switch as GSO super-frames (virtio-net header: TCPV4, the
//! network's segment size, partial checksum), and the receiving kernel cuts them up, as it does
//! for a VM's TSO. On the wire the MSS announced to a sandbox still follows the network MTU.
//! The same holds over IPv6 (TCPV6, a 40-byte IP header, no extension headers: smoltcp writes
//! none, and a sandbox's SYN with some keeps its MSS).

use crate::offload::checksum::{fold, pseudo_header_v4, pseudo_header_v6, sum};
use crate::wire::ipv4::PROTO_TCP;
use crate::wire::tcp::CHECKSUM_OFFSET;
use crate::wire::vnet::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use crate::wire::{
    ETH_HDR_LEN, Ethernet, Ipv4Packet, TcpSegment, VNET_HDR_LEN, VirtioNetHdr, ethertype,
};

/// What smoltcp is told a sandbox accepts: a segment that fills an IPv4 packet.
const LARGE_MSS: u16 = 65495;
/// The same for IPv6, whose header is 20 bytes longer.
const LARGE_MSS6: u16 = 65475;
const IPV6_HDR_LEN: usize = 40;

/// The addresses of the IP header, for the TCP pseudo-header.
#[derive(Clone, Copy)]
enum Addrs {
    V4([u8; 4], [u8; 4]),
    V6([u8; 16], [u8; 16]),
}

/// Where the IP and TCP headers of an Ethernet frame carrying TCP are, once the IP lengths and
/// the TCP data offset have been checked.
struct TcpFrame {
    ip: usize,
    tcp: usize,
    tcp_len: usize,
    end: usize,
    addrs: Addrs,
}

fn tcp_frame(frame: &[u8]) -> Option<TcpFrame> {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() == ethertype::IPV6 {
        return tcp6_frame(eth.payload());
    }
    if eth.ethertype() != ethertype::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != PROTO_TCP {
        return None;
    }
    let (start, end) = ip.payload_range().ok()?;
    let tcp_len = TcpSegment::new_checked(ip.payload().ok()?)
        .ok()?
        .checked_header_len()
        .ok()?;
    Some(TcpFrame {
        ip: ETH_HDR_LEN,
        tcp: ETH_HDR_LEN + start,
        tcp_len,
        end: ETH_HDR_LEN + end,
        addrs: Addrs::V4(ip.src_bytes(), ip.dst_bytes()),
    })
}

/// [`tcp_frame`] for `packet`, the IPv6 packet of an Ethernet frame.
fn tcp6_frame(packet: &[u8]) -> Option<TcpFrame> {
    let ip = smoltcp::wire::Ipv6Packet::new_checked(packet).ok()?;
    if ip.next_header() != smoltcp::wire::IpProtocol::Tcp {
        return None;
    }
    let payload = ip.payload();
    let tcp_len = TcpSegment::new_checked(payload)
        .ok()?
        .checked_header_len()
        .ok()?;
    let tcp = ETH_HDR_LEN + IPV6_HDR_LEN;
    Some(TcpFrame {
        ip: ETH_HDR_LEN,
        tcp,
        tcp_len,
        end: tcp + payload.len(),
        addrs: Addrs::V6(ip.src_addr().octets(), ip.dst_addr().octets()),
    })
}

/// Rewrite the MSS option of a SYN segment in place; returns whether there was one.
fn set_mss(frame: &mut [u8], t: &TcpFrame, mss: u16) -> bool {
    TcpSegment::new_checked(&mut frame[t.tcp..t.end]).is_ok_and(|mut tcp| tcp.set_syn_mss(mss))
}

fn l4_pseudo_sum(t: &TcpFrame) -> u64 {
    match &t.addrs {
        Addrs::V4(src, dst) => pseudo_header_v4(*src, *dst, PROTO_TCP, (t.end - t.tcp) as u16),
        Addrs::V6(src, dst) => pseudo_header_v6(src, dst, PROTO_TCP, (t.end - t.tcp) as u32),
    }
}

/// A SYN from a sandbox, before smoltcp sees it: claim the sandbox takes 64 KiB segments.
/// smoltcp verifies no incoming checksum, so the stale one does not matter.
pub fn raise_syn_mss(frame: &mut [u8]) {
    if let Some(t) = tcp_frame(frame) {
        let mss = match t.addrs {
            Addrs::V4(..) => LARGE_MSS,
            Addrs::V6(..) => LARGE_MSS6,
        };
        set_mss(frame, &t, mss);
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
    let csum_at = t.tcp + CHECKSUM_OFFSET;
    let ihl = t.tcp - t.ip;
    // The MSS that fills the MTU: less the IP header (20 or 40 bytes) and TCP's 20.
    set_mss(frame, &t, mtu.saturating_sub(ihl + 20) as u16);
    let gso_type = match t.addrs {
        Addrs::V4(..) => VIRTIO_NET_HDR_GSO_TCPV4,
        Addrs::V6(..) => VIRTIO_NET_HDR_GSO_TCPV6,
    };
    if t.end - t.ip <= mtu {
        frame[csum_at..csum_at + 2].fill(0);
        let c = !fold(sum(l4_pseudo_sum(&t), &frame[t.tcp..t.end]));
        frame[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        return;
    }
    // The receiving kernel computes the checksum of each segment from the pseudo-header sum.
    let partial = fold(l4_pseudo_sum(&t));
    frame[csum_at..csum_at + 2].copy_from_slice(&partial.to_be_bytes());
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: (t.tcp + t.tcp_len) as u16,
        gso_size: mtu.saturating_sub(ihl + t.tcp_len) as u16,
        csum_start: t.tcp as u16,
        csum_offset: CHECKSUM_OFFSET as u16,
    }
    .write(hdr);
}

/// The body of the `syn_mss` fuzz target, here so the unit tests run it too: on any bytes
/// `raise_syn_mss` does not panic, keeps the frame's length, and changes nothing but the two
/// bytes of one MSS option's value inside the TCP header.
#[doc(hidden)]
pub fn check_arbitrary_syn(data: &[u8]) {
    let mut frame = data.to_vec();
    raise_syn_mss(&mut frame);
    assert_eq!(frame.len(), data.len());
    let changed: Vec<usize> = (0..data.len()).filter(|&i| frame[i] != data[i]).collect();
    if let (Some(&first), Some(&last)) = (changed.first(), changed.last()) {
        assert!(last - first < 2, "more than one MSS value changed");
        let t = tcp_frame(data);
        assert!(t.is_some(), "a frame that was edited is TCP");
        if let Some(t) = t {
            assert!(
                first >= t.tcp + 20 && last < t.tcp + t.tcp_len,
                "edit outside the options"
            );
            assert_ne!(
                data[t.tcp + 13] & crate::wire::tcp::FLAG_SYN,
                0,
                "not a SYN"
            );
        }
    }
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
            fold(l4_pseudo_sum(&t))
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

    fn tcp6_frame_bytes(syn: bool, payload: usize) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(80, 40000, 1000, 65535);
        if syn {
            b = b
                .syn()
                .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1440)])
                .unwrap();
        }
        let mut out = vec![0u8; VNET_HDR_LEN];
        b.write(&mut out, &vec![7u8; payload]).unwrap();
        out
    }

    #[test]
    fn ipv6_syns_are_clamped_to_mtu_less_60_and_large_segments_leave_as_tcpv6_gso() {
        let mut buf = tcp6_frame_bytes(true, 0);
        raise_syn_mss(&mut buf[VNET_HDR_LEN..]);
        {
            let p = SlicedPacket::from_ethernet(&buf[VNET_HDR_LEN..]).unwrap();
            let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                panic!()
            };
            let mss: Vec<_> = tcp.options_iterator().flatten().collect();
            assert_eq!(
                mss,
                [etherparse::TcpOptionElement::MaximumSegmentSize(LARGE_MSS6)]
            );
        }
        prepare_tx(&mut buf, 1500);
        let p = SlicedPacket::from_ethernet(&buf[VNET_HDR_LEN..]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = p.transport else {
            panic!()
        };
        let mss: Vec<_> = tcp.options_iterator().flatten().collect();
        assert_eq!(
            mss,
            [etherparse::TcpOptionElement::MaximumSegmentSize(1440)]
        );
        let Some(etherparse::NetSlice::Ipv6(ip)) = p.net else {
            panic!()
        };
        let want = tcp
            .to_header()
            .calc_checksum_ipv6(&ip.header().to_header(), tcp.payload())
            .unwrap();
        assert_eq!(tcp.checksum(), want);
        // A segment that fits gets its full checksum; a larger one is a TCPV6 GSO frame.
        let mut small = tcp6_frame_bytes(false, 1000);
        let before = small.clone();
        let csum_at = VNET_HDR_LEN + 14 + 40 + 16;
        small[csum_at..csum_at + 2].fill(0);
        prepare_tx(&mut small, 1500);
        assert_eq!(small, before);
        let mut large = tcp6_frame_bytes(false, 30_000);
        prepare_tx(&mut large, 1500);
        let hdr = VirtioNetHdr::parse(&large).unwrap();
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV6);
        assert_eq!((hdr.csum_start, hdr.csum_offset, hdr.hdr_len), (54, 16, 74));
        assert_eq!(hdr.gso_size, 1440);
        let t = tcp_frame(&large[VNET_HDR_LEN..]).unwrap();
        assert_eq!(
            u16::from_be_bytes([large[csum_at], large[csum_at + 1]]),
            fold(l4_pseudo_sum(&t))
        );
    }

    #[test]
    fn raise_syn_mss_on_arbitrary_bytes() {
        let mut base = tcp_frame_bytes(true, 0)[VNET_HDR_LEN..].to_vec();
        let mss_at = base.len() - 2; // the only option: MSS
        base[mss_at..].copy_from_slice(&1460u16.to_be_bytes());
        let mut syn = base.clone();
        raise_syn_mss(&mut syn);
        assert_ne!(syn, base, "the MSS of a SYN is raised");
        check_arbitrary_syn(&base);
        let mut base6 = tcp6_frame_bytes(true, 0)[VNET_HDR_LEN..].to_vec();
        check_arbitrary_syn(&base6);
        base6.truncate(base6.len() - 1);
        check_arbitrary_syn(&base6);
        let mut rng = crate::test_rng::XorShift(0x5e_ed55);
        for round in 0..20_000 {
            let base = if round % 2 == 0 { &base } else { &base6 };
            let mut f = base.clone();
            f.truncate(rng.below(base.len() + 1));
            for _ in 0..rng.below(4) {
                if !f.is_empty() {
                    let i = rng.below(f.len());
                    f[i] = rng.next() as u8;
                }
            }
            check_arbitrary_syn(&f);
        }
    }
}
