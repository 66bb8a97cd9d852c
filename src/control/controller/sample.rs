//! The controller as the metrics' source: ports, MAC tables and NAT flows, gathered under the
//! controller's lock from counters the datapath and gateways keep anyway.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::Controller;
use crate::datapath::Datapath;
use crate::datapath::port::NetId;
use crate::metrics::{NetworkSample, PolicySample, PortSample, Snapshot, Source, split_label};

impl Source for Controller {
    fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        let names: HashMap<_, &String> = inner.nets.iter().map(|(n, id)| (*id, n)).collect();
        let ports = inner
            .dp
            .port_reports()
            .into_iter()
            .map(|r| {
                let (sandbox, interface) = split_label(&r.label);
                PortSample {
                    network: names
                        .get(&r.network)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    sandbox,
                    interface,
                    stats: r.stats,
                    link: inner
                        .dp
                        .port(r.id)
                        .map(|p| p.link.counters.snapshot())
                        .unwrap_or_default(),
                }
            })
            .collect();
        let mut networks: Vec<NetworkSample> = inner
            .nets
            .iter()
            .map(|(name, id)| {
                let gateway = inner.gateways.get(name).map(|(_, g)| g);
                let gw = gateway.map(|g| &g.stats);
                NetworkSample {
                    name: name.clone(),
                    endpoints: endpoint_kinds(&inner.state, name),
                    fdb_entries: inner.dp.network(*id).map_or(0, |n| n.fdb.len()),
                    nat_tcp_flows: gw.map(|s| s.tcp_flows.load(Ordering::Relaxed)),
                    nat_udp_flows: gw.map(|s| s.udp_flows.load(Ordering::Relaxed)),
                    host_loopback_refused: gw
                        .map(|s| s.host_loopback_refused.load(Ordering::Relaxed) as u64),
                    dns: gateway.map(|g| g.dns_stats()),
                    policy: policy_sample(&inner.dp, *id),
                    dhcp: inner
                        .state
                        .network(name)
                        .and_then(|n| n.subnet)
                        .and(gw.map(|s| s.dhcp.clone())),
                }
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot { ports, networks }
    }
}

/// A network's policy counters, once it has had a policy.
fn policy_sample(dp: &Datapath, id: NetId) -> Option<PolicySample> {
    let r = dp.policy_report(id)?;
    let table = r.table?;
    Some(PolicySample {
        drops: r.drops,
        flows: r.flows as u64,
        max_flows: r.max_flows as u64,
        rules: table
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.spec.name.clone(),
                    rule.counters.packets.load(Ordering::Relaxed),
                    rule.counters.bytes.load(Ordering::Relaxed),
                )
            })
            .collect(),
    })
}

/// A network's endpoints counted by kind, for `tapnet_network_endpoints`.
fn endpoint_kinds(state: &crate::control::model::State, network: &str) -> Vec<(&'static str, u64)> {
    let count = |n: usize| n as u64;
    let kinds = [
        ("sandbox", count(state.endpoints_on(network).count())),
        (
            "cni",
            count(state.cni.iter().filter(|a| a.network == network).count()),
        ),
        (
            "docker",
            count(
                state
                    .docker_plugins
                    .iter()
                    .flat_map(|p| p.endpoints.values())
                    .filter(|ep| ep.network == network)
                    .count(),
            ),
        ),
        (
            "vm",
            count(
                state
                    .vm_ports
                    .iter()
                    .filter(|p| p.network == network)
                    .count(),
            ),
        ),
    ];
    kinds.into_iter().filter(|(_, n)| *n > 0).collect()
}
