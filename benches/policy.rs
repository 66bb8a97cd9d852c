//! Per-frame cost of the network policy (datapath/policy.rs): read the frame's flow, then
//! either find it in the connection table (a flow already admitted: the common case) or walk
//! the rules to the last, which matches (a new flow). With 0, 10 and 100 rules. The new-flow
//! case uses a denying last rule, so the table is not filled as it runs.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tapnet::datapath::conntrack::ConnTable;
use tapnet::datapath::policy::{
    Cidr, PolicyCounters, PolicySpec, PolicyTable, Proto, RuleSpec, check_station,
};

/// An Ethernet frame (no virtio-net header): IPv4 TCP ACK 10.0.0.2:40000 -> 10.0.0.3:5201.
fn frame() -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&40u16.to_be_bytes());
    f[23] = 6;
    f[26..30].copy_from_slice(&[10, 0, 0, 2]);
    f[30..34].copy_from_slice(&[10, 0, 0, 3]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&5201u16.to_be_bytes());
    f[34 + 13] = 0x10;
    f
}

/// `n` rules; none but the last matches the frame, which allows or denies it.
fn spec(n: usize, last_allows: bool) -> PolicySpec {
    let mut rules: Vec<RuleSpec> = (0..n.saturating_sub(1))
        .map(|i| RuleSpec {
            name: format!("r{i}"),
            from: Some(vec![Cidr::v4(
                [192, 168, (i / 250) as u8, (i % 250) as u8].into(),
                32,
            )]),
            to: None,
            proto: Proto::Tcp,
            ports: Some((1000 + i as u16, 1000 + i as u16)),
            allow: true,
        })
        .collect();
    if n > 0 {
        rules.push(RuleSpec {
            name: "last".into(),
            from: Some(vec![Cidr::v4([10, 0, 0, 2].into(), 32)]),
            to: Some(vec![Cidr::v4([10, 0, 0, 0].into(), 24)]),
            proto: Proto::Tcp,
            ports: Some((5201, 5201)),
            allow: last_allows,
        });
    }
    PolicySpec {
        icc: true,
        // With no rules, the default decides: deny for the new-flow case.
        default_allow: n > 0 || last_allows,
        rules,
        gateways: Vec::new(),
        max_flows: 16384,
    }
}

fn bench(c: &mut Criterion) {
    let f = frame();
    let drops = PolicyCounters::default();
    let mut g = c.benchmark_group("policy");
    for n in [0usize, 10, 100] {
        // A flow already in the table.
        let s = spec(n, true);
        let mut table = PolicyTable::build(&s, None);
        table.tracks = true;
        let conns = ConnTable::new(s.max_flows);
        assert!(check_station(&table, &conns, &drops, &f, 1).passes());
        g.bench_function(BenchmarkId::new("established", n), |b| {
            b.iter(|| check_station(&table, &conns, &drops, black_box(&f), 1))
        });
        // A new flow: the rules walked to the last (denying, so nothing is added).
        let s = spec(n, false);
        let table = PolicyTable::build(&s, None);
        let conns = ConnTable::new(s.max_flows);
        assert!(!check_station(&table, &conns, &drops, &f, 1).passes());
        g.bench_function(BenchmarkId::new("new_flow", n), |b| {
            b.iter(|| check_station(&table, &conns, &drops, black_box(&f), 1))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
