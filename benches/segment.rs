//! Cost of the software offloads on the path out of the offload world: splitting a 64 KiB TCPv4
//! super-frame into 1448-byte segments with full checksums, and completing the checksum of a
//! 64 KiB NEEDS_CSUM frame. Throughput is reported in bytes of the input frame, so criterion's
//! GiB/s converts to Gbit/s of TCP traffic (x 8.59).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::offload::checksum::{fold, pseudo_header_v4};
use tapnet::offload::{Segmenter, complete_checksum};
use tapnet::wire::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VNET_HDR_LEN,
    VirtioNetHdr,
};

const SRC: [u8; 4] = [172, 18, 0, 2];
const DST: [u8; 4] = [172, 18, 0, 3];
/// Ethernet + IPv4 + TCP with timestamps, as Linux sends bulk TCP.
const HDRS: usize = 14 + 20 + 32;
/// The largest payload that keeps the IPv4 total length within 64 KiB.
const PAYLOAD: usize = 65535 - 20 - 32;

/// A TCPv4 super-frame as a TAP hands it over: vnet header + Ethernet frame, pseudo-header sum
/// in the TCP checksum field.
fn super_frame(gso_type: u8) -> Vec<u8> {
    let mut b = vec![0u8; VNET_HDR_LEN + HDRS + PAYLOAD];
    let f = &mut b[VNET_HDR_LEN..];
    f[0..6].copy_from_slice(&[2, 0x42, 172, 18, 0, 3]);
    f[6..12].copy_from_slice(&[2, 0x42, 172, 18, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 32 + PAYLOAD) as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&SRC);
    ip[16..20].copy_from_slice(&DST);
    let tcp = &mut f[34..66];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[12] = 8 << 4;
    tcp[13] = 0x18; // ACK | PSH
    tcp[14..16].copy_from_slice(&502u16.to_be_bytes());
    tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    let pseudo = fold(pseudo_header_v4(SRC, DST, 6, (32 + PAYLOAD) as u16));
    tcp[16..18].copy_from_slice(&pseudo.to_be_bytes());
    for (i, byte) in f[HDRS..].iter_mut().enumerate() {
        *byte = (i * 7) as u8;
    }
    VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: HDRS as u16,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    }
    .write(&mut b);
    b
}

fn bench_offload(c: &mut Criterion) {
    let mut group = c.benchmark_group("offload");
    group.throughput(Throughput::Bytes((HDRS + PAYLOAD) as u64));

    let gso = super_frame(VIRTIO_NET_HDR_GSO_TCPV4);
    let mut seg = Segmenter::new();
    group.bench_function("segment_tcpv4_64k_mss1448", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            let n = seg
                .segment(black_box(&gso), &mut |s| bytes += black_box(s).len())
                .unwrap_or(0);
            (n, bytes)
        })
    });

    let hdr = VirtioNetHdr::parse(&gso).unwrap_or_default();
    let mut frame = gso[VNET_HDR_LEN..].to_vec();
    group.bench_function("complete_checksum_64k", |b| {
        b.iter(|| {
            // Restore the pseudo-header sum so every iteration does the same work.
            frame[34 + 16..34 + 18].copy_from_slice(&gso[VNET_HDR_LEN + 50..VNET_HDR_LEN + 52]);
            complete_checksum(black_box(&mut frame), &hdr).is_ok()
        })
    });

    // The same frame as a non-GSO NEEDS_CSUM frame through the segmenter: copy + checksum.
    let plain = super_frame(VIRTIO_NET_HDR_GSO_NONE);
    group.bench_function("pass_through_64k_needs_csum", |b| {
        b.iter(|| seg.segment(black_box(&plain), &mut |s| _ = black_box(s)))
    });
    group.finish();
}

criterion_group!(benches, bench_offload);
criterion_main!(benches);
