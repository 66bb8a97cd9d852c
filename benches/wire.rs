//! What reading a frame's headers costs through the wire views, against the same reads through
//! etherparse's slices and smoltcp's wire types: Ethernet, then IPv4 (lengths checked), then
//! the TCP ports, flags and data offset of one 1500-byte TCPv4 frame, as the gateway's
//! classifier and the TSO fix-up read it. Decides whether the views may wrap those crates.
//! Also IPv6: Ethernet, the IPv6 header, a destination-options header and a Neighbor
//! Advertisement's target and link-layer option, as port security reads them.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::wire::icmpv6::{Icmpv6, Ndp, OPT_TARGET_LL};
use tapnet::wire::{Ethernet, Ipv4Packet, Ipv6Packet, TcpSegment, ethertype};

fn tcp_frame() -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0x42, 10, 0, 0, 2], [2, 0x42, 10, 0, 0, 1])
        .ipv4([10, 0, 0, 2], [192, 0, 2, 9], 64)
        .tcp(40000, 80, 1, 65535)
        .ack(7)
        .write(&mut out, &[0xab; 1446])
        .unwrap_or_default();
    out
}

/// (source port, destination port, flags, data offset), or None when a check fails.
type Read = Option<(u16, u16, u8, usize)>;

fn views(frame: &[u8]) -> Read {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::IPV4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let tcp = TcpSegment::new_checked(ip.payload().ok()?).ok()?;
    let doff = tcp.checked_header_len().ok()?;
    Some((tcp.src_port(), tcp.dst_port(), tcp.flags(), doff))
}

fn etherparse_slices(frame: &[u8]) -> Read {
    let eth = etherparse::Ethernet2HeaderSlice::from_slice(frame).ok()?;
    if eth.ether_type() != etherparse::EtherType::IPV4 {
        return None;
    }
    let ip = etherparse::Ipv4Slice::from_slice(&frame[14..]).ok()?;
    let tcp = etherparse::TcpHeaderSlice::from_slice(ip.payload().payload).ok()?;
    let flags = u8::from(tcp.fin())
        | u8::from(tcp.syn()) << 1
        | u8::from(tcp.rst()) << 2
        | u8::from(tcp.psh()) << 3
        | u8::from(tcp.ack()) << 4;
    Some((
        tcp.source_port(),
        tcp.destination_port(),
        flags,
        usize::from(tcp.data_offset()) * 4,
    ))
}

fn smoltcp_wire(frame: &[u8]) -> Read {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, Ipv4Packet, TcpPacket};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.version() != 4 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let flags = u8::from(tcp.fin())
        | u8::from(tcp.syn()) << 1
        | u8::from(tcp.rst()) << 2
        | u8::from(tcp.psh()) << 3
        | u8::from(tcp.ack()) << 4;
    Some((
        tcp.src_port(),
        tcp.dst_port(),
        flags,
        usize::from(tcp.header_len()),
    ))
}

fn wire(c: &mut Criterion) {
    let frame = tcp_frame();
    let want = views(&frame);
    assert!(want.is_some());
    assert_eq!(etherparse_slices(&frame), want);
    assert_eq!(smoltcp_wire(&frame), want);
    let mut g = c.benchmark_group("wire_tcpv4_headers");
    g.throughput(Throughput::Elements(1));
    g.bench_function("views", |b| b.iter(|| views(black_box(&frame))));
    g.bench_function("etherparse", |b| {
        b.iter(|| etherparse_slices(black_box(&frame)))
    });
    g.bench_function("smoltcp", |b| b.iter(|| smoltcp_wire(black_box(&frame))));
    g.finish();
}

const MAC: [u8; 6] = [2, 0x42, 10, 0, 0, 2];
const LL: [u8; 16] = [
    0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x42, 10, 0xff, 0xfe, 0, 0, 2,
];

/// An unsolicited NA for the sender's link-local behind a destination-options header.
fn na_frame() -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 40, 60, 255]);
    f.extend_from_slice(&LL);
    f.extend_from_slice(&[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[58, 0, 1, 4, 0, 0, 0, 0]);
    f.extend_from_slice(&[136, 0, 0, 0, 0x20, 0, 0, 0]);
    f.extend_from_slice(&LL);
    f.extend_from_slice(&[2, 1]);
    f.extend_from_slice(&MAC);
    // smoltcp checks the checksum: make it right.
    let sum = tapnet::wire::ipv6::checksum(
        LL.into(),
        "ff02::1".parse().unwrap_or(LL.into()),
        58,
        &f[62..],
    );
    f[64..66].copy_from_slice(&sum.to_be_bytes());
    f
}

/// (target, target link-layer address), or None when a check fails.
type Na = Option<([u8; 16], [u8; 6])>;

fn views_na(frame: &[u8]) -> Na {
    let eth = Ethernet::new_checked(frame).ok()?;
    if eth.ethertype() != ethertype::IPV6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    let up = ip.upper_layer().ok()?;
    let (_, end) = ip.payload_range().ok()?;
    let icmp = Icmpv6::new_checked(&eth.payload()[up.offset..end]).ok()?;
    let Ndp::NeighborAdvertisement {
        target, options, ..
    } = Ndp::parse(&icmp).ok()??
    else {
        return None;
    };
    let ll = options.link_layers(OPT_TARGET_LL).next()??;
    Some((target.octets(), ll.0))
}

fn etherparse_na(frame: &[u8]) -> Na {
    use etherparse::{Icmpv6Type, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
        return None;
    };
    let Icmpv6Type::NeighborAdvertisement(_) = icmp.icmp_type() else {
        return None;
    };
    // etherparse stops at the fixed part: target and options are read by hand.
    let body = icmp.payload();
    let target: [u8; 16] = body.get(..16)?.try_into().ok()?;
    let opt = body.get(16..24)?;
    (opt[0] == 2 && opt[1] == 1).then(|| (target, opt[2..8].try_into().unwrap_or_default()))
}

fn smoltcp_na(frame: &[u8]) -> Na {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet,
        NdiscRepr,
    };
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv6 {
        return None;
    }
    let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
    // smoltcp has no extension walk over a packet: one destination-options header by hand.
    let payload = ip.payload();
    if ip.next_header() != IpProtocol::Ipv6Opts || payload.first() != Some(&58) {
        return None;
    }
    let len = (usize::from(*payload.get(1)?) + 1) * 8;
    let icmp = Icmpv6Packet::new_checked(payload.get(len..)?).ok()?;
    let repr = Icmpv6Repr::parse(
        &ip.src_addr(),
        &ip.dst_addr(),
        &icmp,
        &ChecksumCapabilities::ignored(),
    )
    .ok()?;
    let Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        target_addr,
        lladdr: Some(ll),
        ..
    }) = repr
    else {
        return None;
    };
    Some((target_addr.octets(), ll.as_bytes().try_into().ok()?))
}

fn wire_ipv6(c: &mut Criterion) {
    let frame = na_frame();
    let want = views_na(&frame);
    assert_eq!(want, Some((LL, MAC)));
    assert_eq!(etherparse_na(&frame), want);
    assert_eq!(smoltcp_na(&frame), want);
    let mut g = c.benchmark_group("wire_ipv6_na");
    g.throughput(Throughput::Elements(1));
    g.bench_function("views", |b| b.iter(|| views_na(black_box(&frame))));
    g.bench_function("etherparse", |b| {
        b.iter(|| etherparse_na(black_box(&frame)))
    });
    g.bench_function("smoltcp", |b| b.iter(|| smoltcp_na(black_box(&frame))));
    g.finish();
}

criterion_group!(benches, wire, wire_ipv6);
criterion_main!(benches);
