//! What link impairments cost the forwarding path: a port without impairments (the plain path,
//! one relaxed load more than a bare write) against a bare write, an impaired port that lets
//! the frame through, and the delay queue's push and release. Writes go to /dev/null, so each
//! case includes one real `write` syscall, as forwarding does.

use std::hint::black_box;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tapnet::datapath::delay::{DelayQueue, Due};
use tapnet::datapath::egress;
use tapnet::datapath::impair::Impairment;
use tapnet::datapath::port::Port;

fn devnull_port(id: u32) -> Arc<Port> {
    let fd: OwnedFd = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null")
        .into();
    Arc::new(Port::new(id, 0, format!("bench/{id}"), vec![fd], None))
}

fn bench_egress(c: &mut Criterion) {
    let frame = vec![0x5au8; 12 + 64];
    let mut group = c.benchmark_group("egress");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));

    let plain = devnull_port(1);
    group.bench_function("bare_write_64B", |b| {
        b.iter(|| plain.send(0, black_box(&frame)))
    });
    let mut queue = DelayQueue::default();
    group.bench_function("unimpaired_port_64B", |b| {
        b.iter(|| egress::send(&plain, 0, 0, black_box(&frame), &mut queue))
    });
    // The same bare write again: how far the machine drifts between cases.
    group.bench_function("bare_write_64B_again", |b| {
        b.iter(|| plain.send(0, black_box(&frame)))
    });

    // Impaired, but the frame passes at once: the link's lock, clock and draws.
    let impaired = devnull_port(2);
    impaired.link.configure(
        Some(&Impairment {
            loss_ppm: 1,
            seed: Some(1),
            ..Default::default()
        }),
        Vec::new(),
        0,
        true,
    );
    group.bench_function("impaired_port_pass_64B", |b| {
        b.iter(|| egress::send(&impaired, 0, 0, black_box(&frame), &mut queue))
    });
    group.finish();

    let mut group = c.benchmark_group("delay_queue");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let now = Instant::now();
    let mut q = DelayQueue::default();
    group.bench_function("push_release_64B", |b| {
        b.iter(|| {
            q.push(now, &plain, 0, Due::Send, black_box(&frame));
            if let Some(d) = q.pop_due(now) {
                q.recycle(d.frame);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench_egress);
criterion_main!(benches);
