//! The body of the `wire_views` fuzz target, here so the unit tests run it too: every view over
//! any bytes, every accessor called, every range checked against the bytes.

use super::icmpv6::{Icmpv6, Ndp};
use super::ipv6::Ipv6Packet;
use super::{ArpPacket, Ethernet, Icmpv4, Ipv4Packet, TcpSegment, UdpDatagram, VxlanPacket};

fn within(range: (usize, usize), len: usize) {
    assert!(
        range.0 <= range.1 && range.1 <= len,
        "{range:?} outside {len} bytes"
    );
}

/// An ICMPv6 message and, when it is one, its NDP fields and every option.
fn check_icmpv6(icmp: &Icmpv6<'_>) {
    let _ = (icmp.msg_type(), icmp.code(), icmp.checksum(), icmp.is_ndp());
    if let Ok(Some(ndp)) = Ndp::parse(icmp) {
        let mut total = 0;
        for opt in ndp.options().iter() {
            let _ = opt.link_layer();
            total += opt.data.len() + 2;
        }
        assert!(total <= icmp.body().len());
    }
}

/// Read `data` as an Ethernet frame and, from each offset a header could start at, as every
/// protocol: nothing may panic, and accepted lengths must fit.
#[doc(hidden)]
pub fn check_arbitrary_bytes(data: &[u8]) {
    if let Ok(eth) = Ethernet::new_checked(data) {
        let _ = (eth.dst(), eth.src(), eth.ethertype());
        if let Ok(Some(tag)) = eth.tag() {
            let _ = (tag.vid(), tag.pcp(), tag.ethertype(), tag.payload());
        }
        if let Ok((_, at)) = eth.inner() {
            assert!(at <= data.len());
        }
    }
    for start in [0, 14, 18, 22, 34] {
        let Some(b) = data.get(start..) else {
            continue;
        };
        if let Ok(ip) = Ipv4Packet::new_checked(b) {
            let _ = (ip.version(), ip.header_len(), ip.total_len(), ip.ident());
            let _ = (ip.is_fragment(), ip.ttl(), ip.protocol(), ip.checksum());
            let _ = (ip.src(), ip.dst(), ip.addr_bytes());
            if let Ok(ihl) = ip.checked_header_len() {
                assert!((20..=b.len()).contains(&ihl));
            }
            if let Ok(range) = ip.payload_range() {
                within(range, b.len());
            }
            if let Ok(rest) = ip.rest() {
                assert!(rest.len() + 20 <= b.len());
            }
        }
        if let Ok(ip) = Ipv6Packet::new_checked(b) {
            let _ = (
                ip.version(),
                ip.traffic_class(),
                ip.flow_label(),
                ip.hop_limit(),
            );
            let _ = (ip.src(), ip.dst(), ip.addr_bytes(), ip.next_header());
            if let Ok(range) = ip.payload_range() {
                within(range, b.len());
            }
            if let Ok(up) = ip.upper_layer() {
                assert!((40..=b.len()).contains(&up.offset));
                if up.protocol == super::ipv6::NEXT_ICMPV6
                    && let Ok(icmp) = Icmpv6::new_checked(&b[up.offset..])
                {
                    check_icmpv6(&icmp);
                }
            }
        }
        if let Ok(icmp) = Icmpv6::new_checked(b) {
            check_icmpv6(&icmp);
        }
        if let Ok(tcp) = TcpSegment::new_checked(b) {
            let _ = (tcp.src_port(), tcp.dst_port(), tcp.seq(), tcp.ack());
            let _ = (tcp.flags(), tcp.checksum(), tcp.is_syn_only());
            if let Ok(doff) = tcp.checked_header_len() {
                assert!((20..=b.len()).contains(&doff));
                assert_eq!(tcp.options().map(<[u8]>::len), Ok(doff - 20));
            }
            let mut copy = b.to_vec();
            if let Ok(mut t) = TcpSegment::new_checked(&mut copy[..]) {
                t.set_syn_mss(1460);
            }
            assert_eq!(copy.len(), b.len());
        }
        if let Ok(udp) = UdpDatagram::new_checked(b) {
            let _ = (
                udp.src_port(),
                udp.dst_port(),
                udp.len_field(),
                udp.checksum(),
            );
            if let Ok(range) = udp.payload_range() {
                within(range, b.len());
            }
        }
        if let Ok(icmp) = Icmpv4::new_checked(b) {
            let _ = (
                icmp.msg_type(),
                icmp.code(),
                icmp.checksum(),
                icmp.payload(),
            );
            let _ = (icmp.echo_request(), icmp.echo_reply());
        }
        if let Ok(arp) = ArpPacket::new_checked(b) {
            let _ = (arp.is_request(), arp.sender_mac(), arp.sender_ip());
            let _ = (arp.target_mac(), arp.target_ip());
        }
        if let Ok(vx) = VxlanPacket::new_checked(b) {
            assert!(vx.vni() <= super::vxlan::MAX_VNI);
            assert_eq!(vx.payload().len() + super::vxlan::HEADER_LEN, b.len());
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut base = vec![0xffu8; 6];
        base.extend_from_slice(&[2, 0x42, 10, 0, 0, 2, 0x81, 0, 0, 5, 0x08, 0x00]);
        base.extend_from_slice(&[0x46, 0, 0, 60, 0, 1, 0x40, 0, 64, 6, 0, 0]);
        base.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 3, 1, 1, 1, 1]);
        base.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02]);
        base.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0, 2, 4, 5, 0xb4, 0, 0]);
        // IPv6 with a destination-options header and a Neighbor Advertisement behind it.
        let mut v6 = vec![0x33, 0x33, 0, 0, 0, 1, 2, 0x42, 10, 0, 0, 2, 0x86, 0xdd];
        v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8 + 32, 60, 255]);
        v6.extend_from_slice(&[
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 10, 0xff, 0xfe, 0, 0, 2,
        ]);
        v6.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
        v6.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
        v6.extend_from_slice(&[
            0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 10, 0xff, 0xfe, 0, 0, 2,
        ]);
        v6.extend_from_slice(&[2, 1, 2, 0x42, 10, 0, 0, 2]);
        for i in 0..40_000 {
            let base = if i % 2 == 0 { &base } else { &v6 };
            let seed = next();
            let mut f = base.clone();
            f.truncate((seed as usize) % (base.len() + 1));
            for k in 0..(seed >> 60) as usize {
                if !f.is_empty() {
                    let i = (next() as usize) % f.len();
                    f[i] = (seed >> (8 * (k % 7))) as u8;
                }
            }
            super::check_arbitrary_bytes(&f);
        }
    }
}
