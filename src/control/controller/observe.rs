//! Observation: views of networks and sandboxes, the MAC table and port counters.

use super::*;

impl Inner {
    /// `info`, `fdb`, `stats` and `trace`.
    pub(super) fn observe_request(&self, request: Request) -> Result<Value> {
        match request {
            Request::Info => value(&self.info()),
            Request::SystemExport => value(self.store.saved()),
            Request::Fdb { network } => value(&self.fdb(&network)?),
            Request::Stats { network } => value(&self.stats(network.as_deref())?),
            Request::Trace(req) => value(&self.trace(&req)?),
            _ => Err(misrouted("observe")),
        }
    }
}

impl Inner {
    pub(super) fn network_view(&self, name: &str) -> Result<crate::api::types::NetworkView> {
        let mut view = network_view(&self.state, self.network(name)?);
        if let Some((_, gw)) = self.gateways.get(name) {
            let dns = gw.dns_stats();
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            view.nat = Some(crate::api::types::NatView {
                tcp_flows: gw.stats.tcp_flows.load(Ordering::Relaxed),
                udp_flows: gw.stats.udp_flows.load(Ordering::Relaxed),
                tcp_refused: gw.stats.tcp_refused.load(Ordering::Relaxed),
                udp_evicted: gw.stats.udp_evicted.load(Ordering::Relaxed),
                dns_shed: gw.dns_shed(),
                dns_queries: get(&dns.queries_udp) + get(&dns.queries_tcp),
                dns_local_answers: dns.local.iter().map(get).sum(),
                published_udp_peers: gw.stats.published_udp_peers.load(Ordering::Relaxed),
                host_loopback_refused: gw.stats.host_loopback_refused.load(Ordering::Relaxed),
                dhcp: self.network(name)?.subnet.map(|_| gw.dhcp_view()),
            });
        }
        if let Some(r) = self.overlay.report(name) {
            let peers = drivers::overlay::options_of(self.network(name)?)
                .map(|o| o.peers.clone())
                .unwrap_or_default();
            let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            view.overlay = Some(crate::api::types::OverlayView {
                vtep: r.vtep.to_string(),
                peers: peers.iter().map(|p| p.to_string()).collect(),
                remote: r
                    .remotes
                    .iter()
                    .map(|e| crate::api::types::RemoteView {
                        mac: e.mac.to_string(),
                        vtep: e.vtep.to_string(),
                        age_s: e.age_s,
                    })
                    .collect(),
                rx_packets: get(&r.stats.rx_packets),
                tx_packets: get(&r.stats.tx_packets),
                rx_malformed: get(&r.stats.rx_malformed),
                rx_bad_flags: get(&r.stats.rx_bad_flags),
                rx_foreign_vni: get(&r.stats.rx_foreign_vni),
                rx_unknown_peer: get(&r.stats.rx_unknown_peer),
                tx_dropped: get(&r.stats.tx_dropped),
                rx_dropped: get(&r.stats.rx_dropped),
                arp_answered: get(&r.stats.arp_answered),
                nd_answered: get(&r.stats.nd_answered),
                remote_endpoints: self
                    .remote_eps
                    .values()
                    .filter(|e| e.network == name)
                    .map(|e| crate::api::types::RemoteEndpointView {
                        sandbox: e.sandbox.clone(),
                        host: e.host.clone(),
                        ipv4: e.ipv4().map(|ip| ip.to_string()),
                        ipv6: e.ipv6_addr().map(|ip| ip.to_string()),
                        mac: e.mac.to_string(),
                        vtep: e.vtep.to_string(),
                    })
                    .collect(),
            });
        }
        Ok(view)
    }

    pub(super) fn sandbox_view(&self, name: &str) -> Result<crate::api::types::SandboxView> {
        Ok(self.view_of(self.sandbox(name)?))
    }

    pub(super) fn view_of(&self, sb: &Sandbox) -> crate::api::types::SandboxView {
        let netns = self.dirs.netns_path(&sb.name).display().to_string();
        let utsns = (!drivers::shares_host(&self.state, sb))
            .then(|| self.dirs.utsns_path(&sb.name).display().to_string());
        let enter = self.mode.enter_hint(&netns, utsns.as_deref());
        sandbox_view(&self.state, sb, &self.dirs, enter)
    }

    pub(super) fn info(&self) -> crate::api::types::InfoView {
        crate::api::types::InfoView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id() as i32,
            mode: self.mode.name().to_string(),
            holder_pid: self.mode.holder(),
            state_dir: self.dirs.root().display().to_string(),
            uid_map: std::fs::read_to_string("/proc/self/uid_map")
                .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
            datapath_threads: self.dp.threads(),
            tap_queues: self.dp.tap_queues(),
            datapath_io: self.dp.io().to_string(),
            frames_read: self.dp.frames_read(),
            networks: self.state.networks.len(),
            sandboxes: self.state.sandboxes.len(),
            features: crate::rootless::checks::features(),
        }
    }

    pub(super) fn bridge_net_id(&self, network: &str) -> Result<NetId> {
        let net = self.network(network)?;
        self.nets.get(&net.name).copied().ok_or_else(|| {
            Error::invalid(format!(
                "network {network} (driver {}) has no switch",
                net.driver.name()
            ))
        })
    }

    pub(super) fn fdb(&self, network: &str) -> Result<Vec<FdbRow>> {
        let id = self.bridge_net_id(network)?;
        Ok(self
            .dp
            .fdb_entries(id)
            .into_iter()
            .map(|e| {
                let port = self
                    .dp
                    .port_label(e.port)
                    .unwrap_or_else(|| format!("port {}", e.port));
                let kind = if port == GATEWAY_PORT {
                    "gateway"
                } else {
                    "learned"
                };
                FdbRow {
                    mac: e.mac.to_string(),
                    port,
                    age_s: e.age_secs,
                    kind: kind.to_string(),
                }
            })
            .collect())
    }

    /// The gateway's refusals of the host's loopback, on the row of its port (0 on others).
    fn host_loopback_refused(&self, network: Option<&&String>, label: &str) -> u64 {
        if label != drivers::bridge::GATEWAY_PORT {
            return 0;
        }
        network
            .and_then(|n| self.gateways.get(n.as_str()))
            .map_or(0, |(_, gw)| {
                gw.stats.host_loopback_refused.load(Ordering::Relaxed) as u64
            })
    }

    /// The DHCP counters of `network`'s gateway, if `port` is its port and it has IPv4.
    fn gateway_dhcp(
        &self,
        network: Option<&str>,
        port: PortId,
    ) -> Option<crate::api::types::DhcpView> {
        let network = network?;
        let (id, gateway) = self.gateways.get(network)?;
        let ipv4 = self.state.network(network)?.subnet.is_some();
        (*id == port && ipv4).then(|| gateway.dhcp_view())
    }

    pub(super) fn stats(&self, network: Option<&str>) -> Result<Vec<StatsRow>> {
        let filter = network.map(|n| self.bridge_net_id(n)).transpose()?;
        let names: HashMap<NetId, &String> = self.nets.iter().map(|(n, id)| (*id, n)).collect();
        Ok(self
            .dp
            .port_reports()
            .into_iter()
            .filter(|r| filter.is_none_or(|id| id == r.network))
            .map(|r| StatsRow {
                host_loopback_refused: self.host_loopback_refused(names.get(&r.network), &r.label),
                network: names
                    .get(&r.network)
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                port: r.label,
                drops: r.stats.drops(),
                rx_packets: r.stats.rx_packets,
                rx_bytes: r.stats.rx_bytes,
                tx_packets: r.stats.tx_packets,
                tx_bytes: r.stats.tx_bytes,
                rx_malformed: r.stats.rx_malformed,
                rx_oversize: r.stats.rx_oversize,
                rx_filtered: r.stats.rx_filtered,
                tx_dropped: r.stats.tx_dropped,
                rx_spoofed: r.stats.rx_spoofed,
                spoofed_by: crate::datapath::security::Violation::ALL
                    .iter()
                    .map(|v| (v.name().to_string(), r.stats.spoofed(*v)))
                    .collect(),
                learn_refused: r.stats.learn_refused,
                rx_policy: r.stats.rx_policy,
                rx_queue_full: r.stats.rx_queue_full,
                dhcp: self.gateway_dhcp(names.get(&r.network).map(|n| n.as_str()), r.id),
            })
            .collect())
    }
}
