//! What reading a frame's headers costs through the wire views, against the same reads through
//! etherparse's slices and smoltcp's wire types: Ethernet, then IPv4 (lengths checked), then
//! the TCP ports, flags and data offset of one 1500-byte TCPv4 frame, as the gateway's
//! classifier and the TSO fix-up read it. Decides whether the views may wrap those crates.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::wire::{Ethernet, Ipv4Packet, TcpSegment, ethertype};

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

criterion_group!(benches, wire);
criterion_main!(benches);
