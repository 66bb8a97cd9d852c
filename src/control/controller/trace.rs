//! `tapnet trace`: explain, without sending anything, what the switch would do with a frame
//! from a sandbox (or a VM port). It asks the same pieces the datapath uses: the MAC table
//! (read only, through `switch::peek`), the port counters, the links' impairments and blocks, and the gateway's
//! classifier on a probe frame.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{GATEWAY_PORT, Inner};
use crate::api::lab::{TraceOutput, TraceReport, TraceRequest};
use crate::control::model::{Endpoint, Network};
use crate::datapath::PortReport;
use crate::datapath::fdb::PortId;
use crate::datapath::network::NetworkDp;
use crate::datapath::policy::{Decision, PolicyTable, decide, flow_of};
use crate::datapath::security::Violation;
use crate::datapath::switch::{Egress, peek};
use crate::datapath::trace::{Proto, probe_frame, probe_frame6};
use crate::drivers::bridge;
use crate::error::{Error, Result};
use crate::gateway::GatewayConfig;
use crate::gateway::classify::{Inbound, classify};
use crate::gateway::ndp::{multicast_mac, solicited_node};
use crate::gateway::{GatewayV4, GatewayV6};
use crate::wire::MacAddr;
use crate::wire::ipv6::link_local_eui64;

/// Where the frame's destination MAC comes from, as the sandbox's stack would pick it.
enum Resolved {
    Mac(MacAddr, String),
    /// The sandbox would not put such a frame on this network at all.
    NotSent(String),
}

/// The gateway's MAC as the bridge driver makes it: of its IPv4 address, or on an IPv6-only
/// network of its IPv6 address's last 32 bits.
fn gateway_mac((v4, v6): (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Option<MacAddr> {
    match (v4, v6) {
        (Some(v4), _) => Some(MacAddr::from_ipv4(v4)),
        (None, Some(v6)) => Some(MacAddr::from_ipv4(Ipv4Addr::from(u128::from(v6) as u32))),
        (None, None) => None,
    }
}

/// `fe80::/10`: on the link only, derived from the MAC (EUI-64) for tapnet's endpoints.
fn is_link_local(ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// What port security lets the ingress port send, and what it has dropped from it, by reason.
fn port_security_steps(r: &PortReport, steps: &mut Vec<String>) {
    let Some(policy) = r.policy else {
        return;
    };
    let ipv6 = policy
        .ipv6
        .map(|ip| format!(" and {ip}"))
        .unwrap_or_default();
    steps.push(format!(
        "port security: {} may send as {} with IPv4 {} and IPv6 {} (link-local, EUI-64 of the \
         MAC){ipv6}; never router advertisements, redirects, DHCP or DHCPv6 server messages or \
         neighbour discovery for another's address or MAC",
        r.label,
        policy.mac,
        policy.ipv4,
        policy.link_local()
    ));
    for v in Violation::ALL {
        let n = r.stats.spoofed(v);
        if n > 0 {
            steps.push(format!(
                "port security dropped {n} frame(s) from {} as {}: {}",
                r.label,
                v.name(),
                v.explain()
            ));
        }
    }
}

impl Inner {
    /// Port ids of a network's ports and their labels (for `trace --live`).
    pub(super) fn port_labels(&self, network: &str) -> Result<HashMap<PortId, String>> {
        let id = self.bridge_net_id(network)?;
        Ok(self
            .dp
            .port_reports()
            .into_iter()
            .filter(|r| r.network == id)
            .map(|r| (r.id, r.label))
            .collect())
    }

    /// The traced frame's sender: a sandbox's endpoint on the network, or a VM port (`tapnet
    /// port add`) as an endpoint of its MAC, addresses and impairments; and its switch port.
    fn trace_ingress(&self, req: &TraceRequest) -> Result<(Endpoint, PortId)> {
        if self.state.sandbox(&req.sandbox).is_none()
            && let Some(p) = self.state.vm_ports.iter().find(|p| p.name == req.sandbox)
        {
            if p.network != req.network {
                return Err(Error::conflict(format!(
                    "port {} is not on network {}",
                    req.sandbox, req.network
                )));
            }
            let port = self.served_port(&p.name).ok_or_else(|| {
                Error::conflict(format!("port {} is not being served", req.sandbox))
            })?;
            let ep = Endpoint {
                id: String::new(),
                network: p.network.clone(),
                interface: Some(format!("port:{}", p.name)),
                mac: Some(p.mac),
                ipv4: p.ipv4,
                ipv6: p.ipv6,
                aliases: Vec::new(),
                impairment: p.impairment.clone(),
                blocked: Vec::new(),
            };
            return Ok((ep, port));
        }
        let sb = self.sandbox(&req.sandbox)?;
        let ep = sb.endpoint(&req.network).ok_or_else(|| {
            Error::conflict(format!(
                "sandbox {} is not connected to network {}",
                req.sandbox, req.network
            ))
        })?;
        let interface = ep.interface.clone().unwrap_or_default();
        let in_port = *self
            .ports
            .get(&(sb.name.clone(), interface))
            .ok_or_else(|| {
                Error::conflict(format!(
                    "sandbox {} has no port on network {}",
                    req.sandbox, req.network
                ))
            })?;
        Ok((ep.clone(), in_port))
    }

    pub(super) fn trace(&self, req: &TraceRequest) -> Result<TraceReport> {
        let net = self.network(&req.network)?.clone();
        let net_id = self.bridge_net_id(&req.network)?;
        let (ep, in_port) = self.trace_ingress(req)?;
        let ep = &ep;
        let proto = match &req.proto {
            Some(p) => Proto::parse(p).map_err(Error::Invalid)?,
            None if req.dport.is_some() => Proto::Tcp,
            None => Proto::Icmp,
        };
        if req.dport.is_some() && proto == Proto::Icmp {
            return Err(Error::invalid("--dport needs --proto tcp or udp"));
        }
        let src_mac = match &req.src {
            Some(s) => s
                .parse::<MacAddr>()
                .map_err(|e| Error::invalid(format!("--src: {e}")))?,
            None => ep.mac.unwrap_or_default(),
        };
        let dst_ip: Option<IpAddr> = req.dst.parse().ok();
        if dst_ip.is_none() && req.dst.parse::<MacAddr>().is_err() {
            return Err(Error::invalid(format!(
                "--dst {:?}: expected a MAC, an IPv4 or an IPv6 address",
                req.dst
            )));
        }
        // The probe's source address, of the destination's family.
        let src_ip: Option<IpAddr> = match dst_ip {
            Some(IpAddr::V6(_)) => Some(IpAddr::V6(ep.ipv6.ok_or_else(|| {
                Error::conflict(format!(
                    "sandbox {} has no IPv6 address on network {}",
                    req.sandbox, req.network
                ))
            })?)),
            _ => ep.ipv4.map(IpAddr::V4),
        };
        let reports: Vec<_> = self
            .dp
            .port_reports()
            .into_iter()
            .filter(|r| r.network == net_id)
            .collect();
        let label = |id: PortId| {
            reports
                .iter()
                .find(|r| r.id == id)
                .map_or_else(|| format!("port {id}"), |r| r.label.clone())
        };
        let in_label = label(in_port);
        let mut steps = Vec::new();
        let mut report = TraceReport {
            network: net.name.clone(),
            ingress: in_label.clone(),
            src_mac: src_mac.to_string(),
            dst_mac: String::new(),
            dst_ip: dst_ip.map(|ip| ip.to_string()),
            decision: "drop".into(),
            outputs: Vec::new(),
            gateway: None,
            steps: Vec::new(),
        };
        if let Some(r) = reports.iter().find(|r| r.id == in_port) {
            steps.push(format!(
                "ingress: port {in_label} of network {} (rx {} frames {} bytes, tx {} frames, drops {})",
                net.name,
                r.stats.rx_packets,
                r.stats.rx_bytes,
                r.stats.tx_packets,
                r.stats.drops()
            ));
        }
        if let Some(imp) = ep.impairment.as_ref().filter(|i| i.both) {
            steps.push(format!(
                "ingress link: {} (--both) judges the frame first",
                imp.describe()
            ));
        }
        if src_mac.is_multicast() || src_mac.is_zero() {
            steps.push(format!(
                "parse: source {src_mac} is not a station address: dropped as malformed"
            ));
            report.steps = steps;
            return Ok(report);
        }
        if Some(src_mac) != ep.mac {
            let own = ep.mac.unwrap_or_default();
            if bridge::options_of(&net)?.port_security {
                steps.push(format!(
                    "port security: source {src_mac} is not the endpoint's MAC {own}: dropped \
                     (counted as rx_spoofed)"
                ));
                report.steps = steps;
                return Ok(report);
            }
            steps.push(format!(
                "source {src_mac} is not the endpoint's MAC {own}: port security is off on this \
                 network, the switch takes it"
            ));
        }
        if let Some(r) = reports.iter().find(|r| r.id == in_port) {
            port_security_steps(r, &mut steps);
        }
        let dst_mac = match dst_ip {
            None => req.dst.parse::<MacAddr>().unwrap_or_default(),
            Some(ip) => match match ip {
                IpAddr::V4(ip) => self.resolve(&net, &req.sandbox, ip),
                IpAddr::V6(ip) => self.resolve6(&net, &req.sandbox, ip),
            } {
                Resolved::Mac(mac, why) => {
                    steps.push(why);
                    mac
                }
                Resolved::NotSent(why) => {
                    steps.push(why);
                    report.steps = steps;
                    return Ok(report);
                }
            },
        };
        report.dst_mac = dst_mac.to_string();
        let now = self.dp.now_secs();
        let entries = self.dp.fdb_entries(net_id);
        match entries.iter().find(|e| e.mac == src_mac) {
            Some(e) if e.port == in_port => steps.push(format!(
                "learning: {src_mac} is known on {in_label} (age {} s): refreshed",
                e.age_secs
            )),
            Some(e) => steps.push(format!(
                "learning: {src_mac} moves from {} to {in_label}",
                label(e.port)
            )),
            None => steps.push(format!("learning: {src_mac} is new: learned on {in_label}")),
        }
        let Some(dp_net) = self.dp.network(net_id) else {
            return Err(Error::invalid(format!(
                "network {} has no switch",
                net.name
            )));
        };
        let egress = peek(&dp_net.fdb, dst_mac, in_port, now);
        let hit = entries.iter().find(|e| e.mac == dst_mac);
        steps.push(match (dst_mac.is_multicast(), hit) {
            (true, _) => format!("lookup: {dst_mac} is broadcast or multicast: flood"),
            (false, Some(e)) => format!(
                "lookup: {dst_mac} hit on {} (age {} s)",
                label(e.port),
                e.age_secs
            ),
            (false, None) => format!("lookup: {dst_mac} miss: flood as unknown unicast"),
        });
        let mut outputs: Vec<PortId> = match egress {
            Egress::Unicast(p) => vec![p],
            Egress::Flood => reports
                .iter()
                .map(|r| r.id)
                .filter(|id| *id != in_port)
                .collect(),
            Egress::Filter => Vec::new(),
        };
        if let Some(table) = dp_net.policy()
            && egress != Egress::Filter
        {
            let probe = match (src_ip, dst_ip) {
                (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) => probe_frame(
                    (src_mac, dst_mac),
                    Some((s, d)),
                    proto,
                    req.dport.unwrap_or(0),
                ),
                (Some(IpAddr::V6(s)), Some(IpAddr::V6(d))) => {
                    probe_frame6((src_mac, dst_mac), (s, d), proto, req.dport.unwrap_or(0))
                }
                _ => Vec::new(),
            };
            let service = |id: PortId| self.dp.port(id).is_some_and(|p| p.service);
            let passes = policy_steps(
                &table,
                &dp_net,
                &probe,
                now,
                &mut steps,
                || matches!(egress, Egress::Unicast(p) if !service(p)),
            );
            if !passes {
                report.steps = steps;
                return Ok(report);
            }
            if table.isolates() {
                outputs.retain(|id| service(*id));
            }
        }
        report.decision = match egress {
            Egress::Unicast(_) => "unicast",
            Egress::Flood => "flood",
            Egress::Filter => "filter",
        }
        .into();
        if egress == Egress::Filter {
            steps.push(format!(
                "filter: {dst_mac} sits behind the ingress port itself: nothing is sent"
            ));
        }
        for id in outputs {
            let port = label(id);
            let (link, dropped) = self.link_verdict(&port, &req.network, &req.sandbox);
            steps.push(format!("output: {port}: {link}"));
            report.outputs.push(TraceOutput {
                port: port.clone(),
                link,
                dropped,
            });
            if port == GATEWAY_PORT
                && let (Some(src_ip), Some(dst_ip)) = (src_ip, dst_ip)
            {
                let macs = (src_mac, dst_mac);
                let dport = req.dport.unwrap_or(0);
                let frame = match (src_ip, dst_ip) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => probe_frame(macs, Some((s, d)), proto, dport),
                    (IpAddr::V6(s), IpAddr::V6(d)) => probe_frame6(macs, (s, d), proto, dport),
                    _ => Vec::new(),
                };
                let verdict = self.gateway_verdict(&net, &frame, dst_ip, proto);
                steps.push(format!("gateway: {verdict}"));
                report.gateway = Some(verdict);
            }
        }
        report.steps = steps;
        Ok(report)
    }

    /// The destination MAC the sandbox's stack would use for `ip` on `net`.
    fn resolve(&self, net: &Network, sandbox: &str, ip: Ipv4Addr) -> Resolved {
        let gw = net.gateway.zip(gateway_mac((net.gateway, net.gateway6)));
        if let Some((g, mac)) = gw
            && g == ip
        {
            return Resolved::Mac(mac, format!("{ip} is the gateway of {}: {mac}", net.name));
        }
        if net.subnet.is_some_and(|s| s.contains(ip)) {
            return match self
                .state
                .endpoints_on(&net.name)
                .find(|(_, e)| e.ipv4 == Some(ip))
            {
                Some((s, e)) => {
                    let mac = e.mac.unwrap_or_default();
                    Resolved::Mac(
                        mac,
                        format!(
                            "ARP resolves {ip} to {mac} ({}/{})",
                            s.name,
                            e.interface.as_deref().unwrap_or("-")
                        ),
                    )
                }
                None => Resolved::Mac(
                    MacAddr::BROADCAST,
                    format!(
                        "no endpoint has {ip}: the sandbox's ARP request is broadcast and gets no answer"
                    ),
                ),
            };
        }
        // Off-link: the sandbox's default route decides which network carries it.
        let route = self.state.sandbox(sandbox).and_then(|sb| {
            sb.endpoints.iter().find_map(|e| {
                let n = self.state.network(&e.network)?;
                (crate::drivers::of(n.driver).has_gateway() && !n.internal).then(|| n.name.clone())
            })
        });
        match (route, gw) {
            (Some(r), Some((g, mac))) if r == net.name => Resolved::Mac(
                mac,
                format!(
                    "{ip} is outside {}: sent to the default gateway {g} ({mac})",
                    net.subnet.map(|s| s.to_string()).unwrap_or_default()
                ),
            ),
            (Some(r), _) => Resolved::NotSent(format!(
                "{ip} is off-link and the sandbox's default route is via network {r}: nothing goes out on {}",
                net.name
            )),
            (None, _) => Resolved::NotSent(format!(
                "{ip} is off-link and the sandbox has no default route (internal networks only): not sent"
            )),
        }
    }

    /// The destination MAC the sandbox's stack would use for the IPv6 address `ip` on `net`:
    /// neighbour discovery on the link (the gateway, an endpoint's address on the prefix, or an
    /// endpoint's link-local address, derived from its MAC), else the default router.
    fn resolve6(&self, net: &Network, sandbox: &str, ip: Ipv6Addr) -> Resolved {
        let gw = net.gateway6.zip(gateway_mac((net.gateway, net.gateway6)));
        if let Some((g, mac)) = gw
            && (g == ip || link_local_eui64(mac) == ip)
        {
            return Resolved::Mac(
                mac,
                format!("{ip} is the IPv6 gateway of {}: {mac}", net.name),
            );
        }
        if ip.is_multicast() {
            let mac = multicast_mac(ip);
            return Resolved::Mac(mac, format!("{ip} is multicast: sent to {mac}"));
        }
        let on_link = is_link_local(ip) || net.subnet6.is_some_and(|s| s.contains(ip));
        if on_link {
            let found = self.state.endpoints_on(&net.name).find(|(_, e)| {
                e.ipv6 == Some(ip) || (is_link_local(ip) && e.mac.map(link_local_eui64) == Some(ip))
            });
            return match found {
                Some((s, e)) => {
                    let mac = e.mac.unwrap_or_default();
                    Resolved::Mac(
                        mac,
                        format!(
                            "neighbour discovery resolves {ip} to {mac} ({}/{})",
                            s.name,
                            e.interface.as_deref().unwrap_or("-")
                        ),
                    )
                }
                None => {
                    let mac = multicast_mac(solicited_node(ip));
                    Resolved::Mac(
                        mac,
                        format!(
                            "no endpoint has {ip}: the sandbox's neighbour solicitation goes to \
                             {mac} and gets no answer"
                        ),
                    )
                }
            };
        }
        // Off-link: the IPv6 default route is via the first network that has an IPv6 gateway.
        let route = self.state.sandbox(sandbox).and_then(|sb| {
            sb.endpoints.iter().find_map(|e| {
                let n = self.state.network(&e.network)?;
                (crate::drivers::of(n.driver).has_gateway() && !n.internal && n.gateway6.is_some())
                    .then(|| n.name.clone())
            })
        });
        match (route, gw) {
            (Some(r), Some((g, mac))) if r == net.name => Resolved::Mac(
                mac,
                format!(
                    "{ip} is outside {}: sent to the default gateway {g} ({mac})",
                    net.subnet6.map(|s| s.to_string()).unwrap_or_default()
                ),
            ),
            (Some(r), _) => Resolved::NotSent(format!(
                "{ip} is off-link and the sandbox's IPv6 default route is via network {r}: nothing goes out on {}",
                net.name
            )),
            (None, _) => Resolved::NotSent(format!(
                "{ip} is off-link and the sandbox has no IPv6 default route: not sent"
            )),
        }
    }

    /// What the link towards `port` (a `sandbox/interface` label) does to a frame from `from`,
    /// and whether it drops it for sure.
    fn link_verdict(&self, port: &str, network: &str, from: &str) -> (String, bool) {
        let send = ("send".to_string(), false);
        let Some((sandbox, _)) = port.split_once('/') else {
            return send;
        };
        let Some(ep) = self
            .state
            .sandbox(sandbox)
            .and_then(|s| s.endpoint(network))
        else {
            return send;
        };
        if ep.blocked.iter().any(|b| b == from) {
            return (
                format!("blocked (link block {from} {sandbox}): dropped"),
                true,
            );
        }
        match &ep.impairment {
            Some(i) if i.down => ("link down: dropped".into(), true),
            Some(i) => (format!("send through impairments: {}", i.describe()), false),
            None => send,
        }
    }

    /// The gateway's classifier on the probe frame, in words.
    fn gateway_verdict(&self, net: &Network, frame: &[u8], dst: IpAddr, proto: Proto) -> String {
        let ipv4 = net
            .subnet
            .zip(net.gateway)
            .map(|(subnet, ip)| GatewayV4 { subnet, ip });
        let ipv6 = net
            .subnet6
            .zip(net.gateway6)
            .map(|(subnet, ip)| GatewayV6 { subnet, ip });
        let Some(mac) =
            gateway_mac((net.gateway, net.gateway6)).filter(|_| ipv4.is_some() || ipv6.is_some())
        else {
            return "the network has no gateway".into();
        };
        let host_loopback = crate::drivers::bridge::options_of(net).is_ok_and(|o| o.host_loopback);
        let config = GatewayConfig {
            network: net.name.clone(),
            ipv4,
            mac,
            mtu: net.mtu,
            nat: !net.internal,
            policy: self.nat_policy.clone(),
            host_loopback,
            udp_idle: std::time::Duration::from_secs(30),
            limits: crate::gateway::NatLimits::default(),
            // Every bridge gateway runs a DNS server; only its presence matters here.
            dns: Some((
                std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53),
                std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 53),
            )),
            ipv6,
            spin: std::time::Duration::ZERO,
        };
        // Connections to the gateway address are carried to the host's loopback.
        let own = match dst {
            IpAddr::V4(d) => net.gateway == Some(d),
            IpAddr::V6(d) => net.gateway6 == Some(d) || link_local_eui64(mac) == d,
        };
        let target = match (own, dst) {
            (false, _) => dst,
            (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            (true, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        let allowed = |what: String| {
            if own && !host_loopback {
                return "refused (TCP RST, UDP port unreachable): the network keeps the host's \
                        loopback closed (host_loopback=off)"
                    .to_string();
            }
            let admitted = match target {
                IpAddr::V4(t) => self.nat_policy.allows(t),
                IpAddr::V6(t) => self.nat_policy.allows_v6(t),
            };
            if admitted {
                what
            } else {
                format!("refused: the NAT policy (--nat-allow) does not admit {target}")
            }
        };
        let loopback = if own {
            " (the gateway address is the host's loopback)"
        } else {
            ""
        };
        // `[::1]:80` for IPv6, `127.0.0.1:80` for IPv4.
        let sock = |port: u16| std::net::SocketAddr::new(target, port);
        match classify(frame, &config) {
            Inbound::Stack if own && proto == Proto::Icmp => {
                "the gateway answers the ping itself".into()
            }
            Inbound::Stack if proto == Proto::Tcp => format!(
                "refused with a TCP RST: {dst} is not reachable through the gateway{}",
                self.isolation_note(dst)
            ),
            Inbound::Stack => "handled by the gateway's own stack".into(),
            Inbound::TcpSyn((_, _, _, port))
            | Inbound::TcpSyn6 {
                tuple: (_, _, _, port),
                ..
            } => allowed(format!(
                "NAT: a TCP flow to {} through a host socket (new unless one exists for this \
                     4-tuple){loopback}",
                sock(port)
            )),
            Inbound::Udp { tuple, .. } if config.is_dns(tuple.2, tuple.3) => {
                "DNS: the query goes to the network's DNS server".into()
            }
            Inbound::Dns6 { .. } => "DNS: the query goes to the network's DNS server".into(),
            Inbound::Udp {
                tuple: (_, _, _, port),
                ..
            }
            | Inbound::Udp6 {
                tuple: (_, _, _, port),
                ..
            } => allowed(format!(
                "NAT: a UDP flow to {} through a host socket{loopback}",
                sock(port)
            )),
            Inbound::Echo { .. } | Inbound::EchoOut6 { .. } => allowed(format!(
                "NAT: the echo request goes to {target} through a host ping socket"
            )),
            Inbound::Echo6 { .. } => "the gateway answers the ping itself".into(),
            // Neighbour discovery: not what a probe is, but say what would happen.
            Inbound::NeighborSolicit { .. } => {
                "the gateway answers the neighbour solicitation".into()
            }
            Inbound::RouterSolicit { .. } => {
                "the gateway answers with a router advertisement".into()
            }
            Inbound::Refuse6 { .. } => format!(
                "refused with ICMPv6 destination unreachable: the gateway does not carry it{}",
                self.isolation_note(dst)
            ),
            Inbound::Dhcp { .. } => "DHCP: the gateway's DHCP server answers a port whose MAC \
                                     tapnet knows, with that port's own address"
                .into(),
            Inbound::Ignore => format!(
                "dropped: the gateway does not carry it{}",
                self.isolation_note(dst)
            ),
        }
    }

    /// `: 10.1.0.2 is on network m (isolation between networks)`, or why else it is stuck.
    fn isolation_note(&self, dst: IpAddr) -> String {
        if let Some(other) = self.state.networks.iter().find(|n| match dst {
            IpAddr::V4(d) => n.subnet.is_some_and(|s| s.contains(d)),
            IpAddr::V6(d) => n.subnet6.is_some_and(|s| s.contains(d)),
        }) {
            return format!(
                ": {dst} is on network {} (tapnet networks are isolated from each other)",
                other.name
            );
        }
        String::new()
    }
}

/// Explain network policy on a probe `frame` (an Ethernet frame, or empty without IP
/// addresses) a sandbox sends: `icc=false` to another station (`to_station`), then the rules.
/// False if the policy drops it.
fn policy_steps(
    table: &PolicyTable,
    net: &NetworkDp,
    frame: &[u8],
    now: u32,
    steps: &mut Vec<String>,
    to_station: impl FnOnce() -> bool,
) -> bool {
    if table.isolates() {
        if to_station() {
            steps.push(
                "policy: icc=false on this network: a sandbox reaches only the gateway, not \
                 another sandbox: dropped (counted as policy_drops{reason=\"icc\"})"
                    .into(),
            );
            return false;
        }
        steps.push("policy: icc=false: floods reach only the gateway".into());
    }
    if !table.tracks {
        return true;
    }
    let (Some(flow), Some(conns)) = (flow_of(frame), net.conns.get()) else {
        steps.push("policy: not an IP frame: rules do not apply".into());
        return true;
    };
    let d = decide(table, conns, &flow, now, false);
    let verdict = if d.passes() { "passes" } else { "dropped" };
    steps.push(match d {
        Decision::Unchecked => {
            "policy: neighbour discovery or DNS to the gateway: never checked".into()
        }
        Decision::Established => {
            "policy: the flow is in the connection table (admitted before): passes".into()
        }
        Decision::Rule(i, allow) => {
            let name = table.rules.get(i).map_or("?", |r| r.spec.name.as_str());
            format!(
                "policy: rule {name} ({}) is the first that matches: {verdict}{}",
                if allow { "allow" } else { "deny" },
                if allow {
                    ", and the flow's replies pass"
                } else {
                    " (counted as policy_drops{reason=\"rule\"})"
                }
            )
        }
        Decision::Default(allow) => format!(
            "policy: no rule matches: the network's policy_default={}: {verdict}",
            if allow { "allow" } else { "deny" }
        ),
        Decision::TableFull => {
            "policy: admitted, but the connection table is full: dropped (table_full)".into()
        }
    });
    d.passes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_mac_is_the_bridge_drivers() {
        let v4 = Ipv4Addr::new(10, 63, 0, 1);
        let v6: Ipv6Addr = "fd00:63::a3f:1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            gateway_mac((Some(v4), Some(v6))),
            Some(MacAddr::from_ipv4(v4))
        );
        // IPv6-only: the last 32 bits of the address (0a3f:0001 is 10.63.0.1).
        assert_eq!(gateway_mac((None, Some(v6))), Some(MacAddr::from_ipv4(v4)));
        assert_eq!(gateway_mac((None, None)), None);
    }

    #[test]
    fn link_local_is_fe80_slash_10() {
        for (ip, want) in [
            ("fe80::1", true),
            ("febf::1", true),
            ("fec0::1", false),
            ("fd00::1", false),
            ("::1", false),
        ] {
            let ip: Ipv6Addr = ip.parse().unwrap_or(Ipv6Addr::UNSPECIFIED);
            assert_eq!(is_link_local(ip), want, "{ip}");
        }
        let mac = MacAddr([2, 0x42, 10, 63, 0, 3]);
        assert!(is_link_local(link_local_eui64(mac)));
        assert_eq!(link_local_eui64(mac).to_string(), "fe80::42:aff:fe3f:3");
    }
}
