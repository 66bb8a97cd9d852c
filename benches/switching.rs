//! Per-frame cost of the switching decision: parse the virtio-net and Ethernet headers, learn the
//! source, look up the destination, pick the output ports. No I/O: the TAP syscalls are measured
//! end to end by scripts/bench.sh.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::datapath::fdb::Fdb;
use tapnet::datapath::frame::parse;
use tapnet::datapath::security::{PortPolicy, check};
use tapnet::datapath::switch::{Egress, decide};
use tapnet::wire::{MacAddr, VNET_HDR_LEN};

fn frame(dst: MacAddr, src: MacAddr, payload: usize) -> Vec<u8> {
    let mut v = vec![0u8; VNET_HDR_LEN];
    v.extend_from_slice(&dst.0);
    v.extend_from_slice(&src.0);
    v.extend_from_slice(&[0x08, 0x00]);
    v.resize(v.len() + payload, 0x5a);
    v
}

fn station(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

/// Parse + learn + lookup + choose outputs among `members` ports, as the worker does.
fn switch_one(fdb: &Fdb, buf: &[u8], ingress: u32, members: &[u32]) -> usize {
    let Ok(info) = parse(buf, 1500) else { return 0 };
    match decide(fdb, &info, ingress, 0) {
        Egress::Unicast(p) => p as usize,
        Egress::Flood => members.iter().filter(|&&p| p != ingress).count(),
        Egress::Filter => 0,
    }
}

/// `switch_one` behind port security, as the worker runs it for a sandbox's port.
fn switch_one_secured(
    fdb: &Fdb,
    policy: &PortPolicy,
    buf: &[u8],
    ingress: u32,
    members: &[u32],
) -> usize {
    let Ok(info) = parse(buf, 1500) else { return 0 };
    if check(policy, buf, &info).is_err() {
        return 0;
    }
    match decide(fdb, &info, ingress, 0) {
        Egress::Unicast(p) => p as usize,
        Egress::Flood => members.iter().filter(|&&p| p != ingress).count(),
        Egress::Filter => 0,
    }
}

/// An IPv4 frame from `src` (its MAC and address), as a sandbox sends it.
fn ipv4_frame(dst: MacAddr, src: MacAddr, src_ip: [u8; 4], payload: usize) -> Vec<u8> {
    let mut v = frame(dst, src, 0);
    v.extend_from_slice(&[0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0]);
    v.extend_from_slice(&src_ip);
    v.extend_from_slice(&[10, 0, 0, 1]);
    v.resize(v.len() + payload, 0x5a);
    v
}

fn bench_switching(c: &mut Criterion) {
    let mut group = c.benchmark_group("switch_decision");
    group.throughput(Throughput::Elements(1));
    let members: Vec<u32> = (0..8).collect();

    // Known unicast between two of 1000 learned stations (the steady state of a busy network).
    let fdb = Fdb::new(300);
    for n in 0..1000 {
        fdb.learn(station(n), n % 8, 0);
    }
    let known = frame(station(7), station(12), 46);
    group.bench_function("known_unicast_64B", |b| {
        b.iter(|| switch_one(&fdb, black_box(&known), 12 % 8, &members))
    });
    let big = frame(station(7), station(12), 1486);
    group.bench_function("known_unicast_1500B", |b| {
        b.iter(|| switch_one(&fdb, black_box(&big), 12 % 8, &members))
    });
    let unknown = frame(station(5000), station(12), 46);
    group.bench_function("unknown_unicast_flood", |b| {
        b.iter(|| switch_one(&fdb, black_box(&unknown), 12 % 8, &members))
    });
    let broadcast = frame(MacAddr::BROADCAST, station(12), 46);
    group.bench_function("broadcast_flood", |b| {
        b.iter(|| switch_one(&fdb, black_box(&broadcast), 12 % 8, &members))
    });
    // Port security: the same known unicast, checked against the port's MAC and address
    // (compare with known_unicast_64B), and a spoofed one dropped.
    let own = station(12);
    let policy = PortPolicy {
        mac: own,
        ipv4: std::net::Ipv4Addr::new(10, 0, 0, 12),
        ipv6: None,
        slaac: None,
    };
    let honest = ipv4_frame(station(7), own, [10, 0, 0, 12], 26);
    group.bench_function("known_unicast_64B_port_security", |b| {
        b.iter(|| switch_one_secured(&fdb, &policy, black_box(&honest), 12 % 8, &members))
    });
    group.bench_function("known_unicast_64B_no_port_security", |b| {
        b.iter(|| switch_one(&fdb, black_box(&honest), 12 % 8, &members))
    });
    let spoofed = ipv4_frame(station(7), own, [10, 0, 0, 13], 26);
    group.bench_function("spoofed_ipv4_drop", |b| {
        b.iter(|| switch_one_secured(&fdb, &policy, black_box(&spoofed), 12 % 8, &members))
    });
    // A port at its MAC limit sending from new sources: each frame is refused learning.
    let flood_fdb = Fdb::new(300);
    let mut next = 1_000_000u32;
    group.bench_function("new_source_refused_at_port_limit", |b| {
        for n in 0..64 {
            flood_fdb.learn(station(n), 3, 0);
        }
        b.iter(|| {
            next = next.wrapping_add(1);
            flood_fdb.learn(black_box(station(next)), 3, 0)
        })
    });
    let runt = vec![0u8; 20];
    group.bench_function("malformed_drop", |b| {
        b.iter(|| switch_one(&fdb, black_box(&runt), 0, &members))
    });
    group.finish();

    let mut group = c.benchmark_group("fdb");
    group.bench_function("lookup_hit_1000", |b| {
        b.iter(|| fdb.lookup(black_box(station(777)), 0))
    });
    group.bench_function("lookup_miss_1000", |b| {
        b.iter(|| fdb.lookup(black_box(station(123_456)), 0))
    });
    group.finish();
}

criterion_group!(benches, bench_switching);
criterion_main!(benches);
