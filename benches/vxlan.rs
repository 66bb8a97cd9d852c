//! Cost of VXLAN per frame, without I/O: writing the header and flow hash of a 1450-byte
//! frame (encapsulation) and checking and splitting a received packet (decapsulation), which
//! is what the VTEP adds to each frame beside its syscalls.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::datapath::vxlan::{HEADER_LEN, decap, header, source_port};

/// A TCPv4 frame of a full 1450-byte overlay MTU.
fn inner_frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 1450];
    f[0..6].copy_from_slice(&[2, 0x42, 10, 0, 0, 3]);
    f[6..12].copy_from_slice(&[2, 0x42, 10, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[30..34].copy_from_slice(&[10, 0, 0, 3]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f
}

fn vxlan(c: &mut Criterion) {
    let frame = inner_frame();
    let mut packet = vec![0u8; HEADER_LEN + frame.len()];
    packet[HEADER_LEN..].copy_from_slice(&frame);
    let mut g = c.benchmark_group("vxlan");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encap_1450", |b| {
        b.iter(|| {
            let port = source_port(black_box(&packet[HEADER_LEN..]));
            packet[..HEADER_LEN].copy_from_slice(&header(black_box(4242)));
            black_box(port)
        })
    });
    g.bench_function("decap_1450", |b| {
        b.iter(|| black_box(decap(black_box(&packet))).map(|(vni, f)| vni as usize + f.len()))
    });
    g.finish();
}

criterion_group!(benches, vxlan);
criterion_main!(benches);
