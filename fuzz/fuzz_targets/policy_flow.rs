//! Any bytes a sandbox might send, as the policy reads their flow and decides on them: never
//! panics, and a flow read is decided the same both ways of its connection.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tapnet::datapath::conntrack::ConnTable;
use tapnet::datapath::policy::{
    Cidr, PolicyCounters, PolicySpec, PolicyTable, Proto, RuleSpec, check_station, flow_of,
};

fuzz_target!(|data: &[u8]| {
    let spec = PolicySpec {
        icc: true,
        default_allow: false,
        rules: vec![RuleSpec {
            name: "r".into(),
            from: None,
            to: Some(vec![Cidr::v4([10, 0, 0, 0].into(), 8)]),
            proto: Proto::Tcp,
            ports: Some((1, 1024)),
            allow: true,
        }],
        gateways: Vec::new(),
        max_flows: 64,
    };
    let table = PolicyTable::build(&spec, None);
    let conns = ConnTable::new(spec.max_flows);
    let drops = PolicyCounters::default();
    let _ = check_station(&table, &conns, &drops, data, 1);
    if let Some(f) = flow_of(data) {
        let back = tapnet::datapath::conntrack::FlowKey::new(f.dst, f.dport, f.src, f.sport, f.proto);
        assert_eq!(f.key(), back);
    }
});
