//! How each object prints: `--format table` shows every field that `--format json` has, so
//! nobody needs JSON just to see a value.

use crate::api::types::{FdbRow, InfoView, NetworkView, PortView, SandboxView, StatsRow};

use super::output::{Format, json, opt, table};

/// `-` for an empty list, else its items joined by `, `.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// A remote plugin's EndpointOperInfo as `KEY=VALUE, ...` (strings unquoted, the rest as
/// JSON); `-` when there is none.
fn plugin_info(info: &Option<std::collections::BTreeMap<String, serde_json::Value>>) -> String {
    let items: Vec<String> = info
        .iter()
        .flatten()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    list(&items)
}

/// An address-family pair in one cell: `v4`, `v4, v6` or `v6` (`-` for neither), so that an
/// IPv4-only object prints as it always has.
fn both<A: ToString, B: ToString>(v4: &Option<A>, v6: &Option<B>) -> String {
    match (v4, v6) {
        (_, None) => opt(v4),
        (None, Some(b)) => b.to_string(),
        (Some(a), Some(b)) => format!("{}, {}", a.to_string(), b.to_string()),
    }
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

pub fn network_list(views: &[NetworkView], format: Format) -> String {
    if format == Format::Json {
        return json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|n| {
            vec![
                short_id(&n.id),
                n.name.clone(),
                n.driver.clone(),
                both(&n.subnet, &n.subnet6),
                both(&n.gateway, &n.gateway6),
                n.endpoints.len().to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NETWORK ID",
            "NAME",
            "DRIVER",
            "SUBNET",
            "GATEWAY",
            "ENDPOINTS",
        ],
        &rows,
    )
}

pub fn network(n: &NetworkView, format: Format) -> String {
    if format == Format::Json {
        return json(n);
    }
    let options: Vec<String> = n.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let nat = n.nat.as_ref().map_or_else(
        || "- (no gateway)".to_string(),
        |nat| {
            format!(
                "{} TCP, {} UDP, {} published-UDP peers (refused at a cap: {} TCP; evicted: {} \
                 UDP; refused to the host's loopback: {})",
                nat.tcp_flows,
                nat.udp_flows,
                nat.published_udp_peers,
                nat.tcp_refused,
                nat.udp_evicted,
                nat.host_loopback_refused,
            )
        },
    );
    let dns = n.nat.as_ref().map_or_else(
        || "- (no gateway)".to_string(),
        |nat| {
            format!(
                "{} queries ({} answered from the network's names; shed while the forwarders were \
                 busy: {})",
                nat.dns_queries, nat.dns_local_answers, nat.dns_shed
            )
        },
    );
    let fields = [
        ("Name", n.name.clone()),
        ("ID", n.id.clone()),
        ("Driver", n.driver.clone()),
        ("Subnet", both(&n.subnet, &n.subnet6)),
        ("Gateway", both(&n.gateway, &n.gateway6)),
        ("IP range", opt(&n.ip_range)),
        ("Internal", n.internal.to_string()),
        ("MTU", n.mtu.to_string()),
        ("VNI", opt(&n.vni)),
        ("MAC aging", format!("{} s", n.mac_aging_s)),
        ("Offloads", if n.offload { "on" } else { "off" }.to_string()),
        ("Options", list(&options)),
        ("NAT flows", nat),
        ("DNS", dns),
    ];
    let mut fields = fields.to_vec();
    if let Some(h) = &n.host {
        let addresses: Vec<String> = h.ipv4.iter().chain(&h.ipv6).cloned().collect();
        fields.push(("Host", format!("{} ({})", h.interface, list(&addresses))));
    }
    if let Some(d) = n.nat.as_ref().and_then(|nat| nat.dhcp.as_ref()) {
        fields.push((
            "DHCP",
            format!(
                "{} offers, {} acks, {} naks (not answered: {} unknown clients, {} ignored; {} \
                 releases, {} declines)",
                d.offers, d.acks, d.naks, d.unknown_clients, d.ignored, d.releases, d.declines
            ),
        ));
    }
    if let Some(o) = &n.overlay {
        fields.push((
            "VTEP",
            format!(
                "{} (rx {}, tx {}; dropped: {} malformed, {} bad flags, {} foreign VNI, {} not from \
                 a peer, {} on send, {} switch port full)",
                o.vtep,
                o.rx_packets,
                o.tx_packets,
                o.rx_malformed,
                o.rx_bad_flags,
                o.rx_foreign_vni,
                o.rx_unknown_peer,
                o.tx_dropped,
                o.rx_dropped
            ),
        ));
        fields.push(("Peers", list(&o.peers)));
        let remote: Vec<String> = o
            .remote
            .iter()
            .map(|r| format!("{} via {} ({} s)", r.mac, r.vtep, r.age_s))
            .collect();
        fields.push(("Remote", list(&remote)));
        if !o.remote_endpoints.is_empty() {
            let eps: Vec<String> = o
                .remote_endpoints
                .iter()
                .map(|e| {
                    let ips: Vec<&str> = e.ipv4.iter().chain(&e.ipv6).map(String::as_str).collect();
                    let ips = ips.join(" ");
                    format!("{} {ips} ({}) on host {}", e.sandbox, e.mac, e.host)
                })
                .collect();
            fields.push(("Remote endpoints", list(&eps)));
            fields.push(("ARP answered", o.arp_answered.to_string()));
            fields.push(("ND answered", o.nd_answered.to_string()));
        }
    }
    // CNI attachments' namespaces, in a column of their own when there are any.
    let with_netns = n.endpoints.iter().any(|e| e.netns.is_some());
    let rows: Vec<Vec<String>> = n
        .endpoints
        .iter()
        .map(|e| {
            let mut row = vec![
                e.sandbox.clone(),
                // A VM's port has no interface: its kind instead.
                opt(&e.interface.clone().or_else(|| e.kind.clone())),
                opt(&e.mac),
                both(&e.ipv4, &e.ipv6),
                list(&e.aliases),
                plugin_info(&e.plugin_info),
            ];
            if with_netns {
                row.push(opt(&e.netns));
            }
            row
        })
        .collect();
    let mut header = vec![
        "SANDBOX",
        "INTERFACE",
        "MAC",
        "IPV4",
        "ALIASES",
        "PLUGIN INFO",
    ];
    if with_netns {
        header.push("NETNS");
    }
    let mut out = key_values(&fields);
    out.push('\n');
    out.push_str(&table(&header, &rows));
    out
}

/// `tapnet port ls`.
pub fn port_list(views: &[PortView], format: Format) -> String {
    if format == Format::Json {
        return json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.network.clone(),
                match &p.io {
                    Some(io) => format!("{} ({io})", p.kind),
                    None => p.kind.clone(),
                },
                p.mac.clone(),
                both(&p.ipv4, &p.ipv6),
                if p.connected { "connected" } else { "waiting" }.to_string(),
                p.path.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "NETWORK", "KIND", "MAC", "IPV4", "VM", "PATH"],
        &rows,
    )
}

pub fn sandbox_list(views: &[SandboxView], format: Format) -> String {
    if format == Format::Json {
        return json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|s| {
            let addrs: Vec<String> = s
                .interfaces
                .iter()
                .map(|i| match (&i.ipv4, &i.ipv6) {
                    (Some(ip), Some(ip6)) => format!("{}={ip},{}={ip6}", i.network, i.network),
                    (Some(ip), None) | (None, Some(ip)) => format!("{}={ip}", i.network),
                    (None, None) => i.network.clone(),
                })
                .collect();
            vec![
                s.name.clone(),
                short_id(&s.id),
                s.hostname.clone(),
                addrs.join(","),
                list(&s.ports),
            ]
        })
        .collect();
    table(
        &["NAME", "SANDBOX ID", "HOSTNAME", "NETWORKS", "PORTS"],
        &rows,
    )
}

pub fn sandbox(s: &SandboxView, format: Format) -> String {
    if format == Format::Json {
        return json(s);
    }
    let fields = [
        ("Name", s.name.clone()),
        ("ID", s.id.clone()),
        ("Hostname", s.hostname.clone()),
        ("Netns", s.netns.clone()),
        ("UTS ns", opt(&s.utsns)),
        ("/etc files", opt(&s.etc)),
        ("Enter", s.enter.clone()),
        ("Ports", list(&s.ports)),
    ];
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.network.clone(),
                opt(&i.interface),
                opt(&i.mac),
                both(&i.ipv4, &i.ipv6),
                list(&i.aliases),
                i.impairment
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |imp| imp.describe()),
                list(&i.blocked),
                plugin_info(&i.plugin_info),
            ]
        })
        .collect();
    let mut out = key_values(&fields);
    out.push('\n');
    out.push_str(&table(
        &[
            "NETWORK",
            "INTERFACE",
            "MAC",
            "IPV4",
            "ALIASES",
            "LINK",
            "BLOCKED",
            "PLUGIN INFO",
        ],
        &rows,
    ));
    out
}

pub fn info(i: &InfoView, format: Format) -> String {
    if format == Format::Json {
        return json(i);
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mode = match i.holder_pid {
        Some(holder) => format!("rootless (namespace holder {holder})"),
        None => i.mode.clone(),
    };
    let f = &i.features;
    key_values(&[
        ("Version", i.version.clone()),
        ("Daemon PID", i.pid.to_string()),
        ("Mode", mode),
        ("State dir", i.state_dir.clone()),
        ("UID map", i.uid_map.clone()),
        ("Datapath threads", i.datapath_threads.to_string()),
        ("Queues per TAP", i.tap_queues.to_string()),
        ("Datapath I/O", i.datapath_io.clone()),
        (
            "Frames read per thread",
            i.frames_read
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("Networks", i.networks.to_string()),
        ("Sandboxes", i.sandboxes.to_string()),
        ("/dev/net/tun", yes(f.tun)),
        ("vnet headers", yes(f.vnet_hdr)),
        ("Multi-queue TAPs", yes(f.multi_queue_tap)),
        ("io_uring", yes(f.io_uring)),
        ("vhost-net", yes(f.vhost_net)),
        ("Max user namespaces", opt(&f.max_user_namespaces)),
        ("Ping sockets", yes(f.ping_sockets)),
        ("Unprivileged ports from", opt(&f.unprivileged_port_start)),
    ])
}

/// `Key:` lines with the values aligned.
fn key_values(fields: &[(&str, String)]) -> String {
    let width = fields.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    fields
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:")))
        .collect()
}

/// Seconds as `AGE` shows them: the unit is part of the cell.
pub fn age(seconds: u32) -> String {
    format!("{seconds}s")
}

pub fn fdb(rows: &[FdbRow], format: Format) -> String {
    if format == Format::Json {
        return json(&rows);
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| vec![r.mac.clone(), r.port.clone(), age(r.age_s), r.kind.clone()])
        .collect();
    table(&["MAC", "PORT", "AGE", "KIND"], &rows)
}

/// By network, then port, so that repeated runs line up (the daemon reports in port order,
/// which changes as ports come and go).
pub fn sort_stats(rows: &mut [StatsRow]) {
    rows.sort_by(|a, b| (&a.network, &a.port).cmp(&(&b.network, &b.port)));
}

/// DROPS is the sum of MALFORMED, OVERSIZE, TX DROPPED and SPOOFED; FILTERED frames (for a station
/// behind the port they came from) are not losses and are counted apart. SPOOFED is broken down
/// by reason in a second table, of the reasons that counted any.
pub fn stats(rows: &[StatsRow], format: Format) -> String {
    if format == Format::Json {
        return json(&rows);
    }
    let mut out = stats_table(rows);
    let reasons: Vec<Vec<String>> = rows
        .iter()
        .flat_map(|r| {
            r.spoofed_by
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(reason, n)| {
                    vec![
                        r.network.clone(),
                        r.port.clone(),
                        reason.clone(),
                        n.to_string(),
                    ]
                })
        })
        .collect();
    if !reasons.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["NETWORK", "PORT", "SPOOFED BY REASON", "FRAMES"],
            &reasons,
        ));
    }
    let loopback: Vec<Vec<String>> = rows
        .iter()
        .filter(|r| r.host_loopback_refused > 0)
        .map(|r| {
            vec![
                r.network.clone(),
                r.port.clone(),
                r.host_loopback_refused.to_string(),
            ]
        })
        .collect();
    if !loopback.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["NETWORK", "PORT", "HOST LOOPBACK REFUSED"],
            &loopback,
        ));
    }
    let dhcp: Vec<Vec<String>> = rows
        .iter()
        .filter_map(|r| {
            let d = r.dhcp.as_ref()?;
            let counts = [
                d.offers,
                d.acks,
                d.naks,
                d.unknown_clients,
                d.ignored,
                d.releases,
                d.declines,
            ];
            // As the drop reasons: only once the server has had something to do.
            if counts.iter().all(|n| *n == 0) {
                return None;
            }
            let mut row = vec![r.network.clone(), r.port.clone()];
            row.extend(counts.iter().map(u64::to_string));
            Some(row)
        })
        .collect();
    if !dhcp.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "NETWORK",
                "PORT",
                "DHCP OFFERS",
                "ACKS",
                "NAKS",
                "UNKNOWN CLIENTS",
                "IGNORED",
                "RELEASES",
                "DECLINES",
            ],
            &dhcp,
        ));
    }
    out
}

fn stats_table(rows: &[StatsRow]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.network.clone(),
                r.port.clone(),
                r.rx_packets.to_string(),
                r.rx_bytes.to_string(),
                r.tx_packets.to_string(),
                r.tx_bytes.to_string(),
                r.drops.to_string(),
                r.rx_malformed.to_string(),
                r.rx_oversize.to_string(),
                r.tx_dropped.to_string(),
                r.rx_spoofed.to_string(),
                r.rx_filtered.to_string(),
                r.learn_refused.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NETWORK",
            "PORT",
            "RX PKTS",
            "RX BYTES",
            "TX PKTS",
            "TX BYTES",
            "DROPS",
            "MALFORMED",
            "OVERSIZE",
            "TX DROPPED",
            "SPOOFED",
            "FILTERED",
            "LEARN REFUSED",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::{
        EndpointView, HostAccessView, InterfaceView, NatView, OverlayView, RemoteView,
    };
    use std::collections::BTreeMap;

    /// Every scalar leaf of a JSON document, as text (strings unquoted), except those `skip`
    /// names by key.
    fn leaves(value: &serde_json::Value, skip: &[&str], out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if skip.contains(&k.as_str()) {
                        continue;
                    }
                    match v {
                        serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                            leaves(v, skip, out)
                        }
                        serde_json::Value::String(s) => out.push((k.clone(), s.clone())),
                        other => out.push((k.clone(), other.to_string())),
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    leaves(v, skip, out);
                }
            }
            _ => {}
        }
    }

    /// Every value of the JSON form shows up in the table form. Values are distinct numbers
    /// and words, so a missing field cannot hide behind another field's value.
    fn assert_table_has_every_field<T: serde::Serialize>(value: &T, table: &str, skip: &[&str]) {
        let json = serde_json::to_value(value).expect("serializable view");
        let mut found = Vec::new();
        leaves(&json, skip, &mut found);
        assert!(found.len() > 5, "{json}");
        for (key, text) in found {
            assert!(
                table.contains(&text),
                "field {key} = {text} missing from the table:\n{table}"
            );
        }
    }

    fn network_view() -> NetworkView {
        NetworkView {
            name: "backend".into(),
            id: "0123456789abcdef".into(),
            driver: "bridge".into(),
            subnet: Some("172.18.0.0/16".into()),
            gateway: Some("172.18.0.1".parse().expect("address")),
            subnet6: Some("fd00:a::/64".into()),
            gateway6: Some("fd00:a::1".parse().expect("address")),
            ip_range: Some("172.18.5.0/24".into()),
            internal: true,
            mtu: 9000,
            vni: Some(4242),
            mac_aging_s: 61,
            offload: false,
            options: BTreeMap::from([
                ("mac_aging".to_string(), "61".to_string()),
                ("nat_udp_timeout".to_string(), "7".to_string()),
            ]),
            endpoints: vec![EndpointView {
                kind: None,
                container_id: None,
                netns: None,
                sandbox: "alpha".into(),
                interface: Some("eth3".into()),
                mac: Some("02:42:ac:12:05:02".into()),
                ipv4: Some("172.18.5.2/16".into()),
                ipv6: Some("fd00:a::2/64".into()),
                aliases: vec!["db".into(), "primary".into()],
                plugin_info: Some(BTreeMap::from([
                    ("vlan".to_string(), serde_json::json!(83)),
                    (
                        "uplink".to_string(),
                        serde_json::json!({"name": "veth-up7"}),
                    ),
                ])),
            }],
            nat: Some(NatView {
                tcp_flows: 11,
                udp_flows: 13,
                tcp_refused: 17,
                udp_evicted: 19,
                dns_shed: 23,
                dns_queries: 73,
                dns_local_answers: 79,
                published_udp_peers: 29,
                host_loopback_refused: 83,
                dhcp: Some(crate::api::types::DhcpView {
                    offers: 3,
                    naks: 1,
                    ..Default::default()
                }),
            }),
            overlay: Some(OverlayView {
                vtep: "127.0.0.2:4789".into(),
                peers: vec!["127.0.0.3:4789".into()],
                remote: vec![RemoteView {
                    mac: "02:42:ac:12:05:09".into(),
                    vtep: "127.0.0.3:4789".into(),
                    age_s: 31,
                }],
                rx_packets: 37,
                tx_packets: 41,
                rx_malformed: 43,
                rx_bad_flags: 47,
                rx_foreign_vni: 53,
                rx_unknown_peer: 59,
                tx_dropped: 67,
                rx_dropped: 71,
                arp_answered: 0,
                nd_answered: 0,
                remote_endpoints: Vec::new(),
            }),
            host: Some(HostAccessView {
                interface: "tn-backend".into(),
                ipv4: Some("172.18.5.2/16".into()),
                ipv6: Some("fd00:a::2/64".into()),
            }),
        }
    }

    #[test]
    fn network_table_shows_every_json_field() {
        let view = network_view();
        let text = network(&view, Format::Table);
        // `offload: false` prints as "off", `internal` as true/false, option keys beside values.
        assert_table_has_every_field(&view, &text, &["offload"]);
        assert!(text.contains("Offloads:   off"), "{text}");
        assert!(text.contains("nat_udp_timeout=7"), "{text}");
        assert!(text.contains("11 TCP, 13 UDP"), "{text}");
        assert!(text.contains("db, primary"), "{text}");
    }

    #[test]
    fn network_table_without_gateway_says_so() {
        let mut view = network_view();
        view.nat = None;
        view.options.clear();
        let text = network(&view, Format::Table);
        assert!(text.contains("NAT flows:  - (no gateway)"), "{text}");
        assert!(text.contains("Options:    -\n"), "{text}");
    }

    fn sandbox_view() -> SandboxView {
        SandboxView {
            name: "alpha".into(),
            id: "fedcba9876543210".into(),
            hostname: "alpha.example".into(),
            netns: "/run/tapnet/netns/alpha".into(),
            utsns: Some("/run/tapnet/utsns/alpha".into()),
            etc: Some("/run/tapnet/etc/alpha".into()),
            enter: "nsenter --net=/run/tapnet/netns/alpha --uts=/run/tapnet/utsns/alpha CMD".into(),
            interfaces: vec![
                InterfaceView {
                    network: "backend".into(),
                    interface: Some("eth0".into()),
                    mac: Some("02:42:ac:12:00:02".into()),
                    ipv4: Some("172.18.0.2/16".into()),
                    ipv6: Some("fd00:a::2/64".into()),
                    aliases: vec!["api".into()],
                    impairment: Some(crate::datapath::impair::Impairment {
                        delay_us: 20_000,
                        ..Default::default()
                    }),
                    blocked: vec!["gamma".into()],
                    plugin_info: None,
                },
                InterfaceView {
                    network: "frontend".into(),
                    interface: Some("eth1".into()),
                    mac: Some("02:42:ac:13:00:03".into()),
                    ipv4: Some("172.19.0.3/16".into()),
                    ipv6: None,
                    aliases: Vec::new(),
                    impairment: None,
                    blocked: Vec::new(),
                    plugin_info: Some(BTreeMap::from([(
                        "peer".to_string(),
                        serde_json::json!("veth-peer5"),
                    )])),
                },
            ],
            ports: vec!["0.0.0.0:8080->80/tcp".into(), "127.0.0.1:53->53/udp".into()],
        }
    }

    #[test]
    fn sandbox_table_shows_every_json_field() {
        let view = sandbox_view();
        let text = sandbox(&view, Format::Table);
        // An impairment shows as one phrase ("delay 20ms"), not field by field.
        assert_table_has_every_field(&view, &text, &["impairment"]);
        assert!(text.contains("delay 20ms"), "{text}");
        assert!(
            text.contains("0.0.0.0:8080->80/tcp, 127.0.0.1:53->53/udp"),
            "{text}"
        );
    }

    #[test]
    fn sandbox_list_shows_ports() {
        let text = sandbox_list(&[sandbox_view()], Format::Table);
        assert!(text.lines().next().is_some_and(|h| h.ends_with("PORTS")));
        assert!(text.contains("0.0.0.0:8080->80/tcp"), "{text}");
    }

    fn stats_row(network: &str, port: &str, seed: u64) -> StatsRow {
        StatsRow {
            network: network.into(),
            port: port.into(),
            rx_packets: seed + 1,
            rx_bytes: seed + 2,
            tx_packets: seed + 3,
            tx_bytes: seed + 4,
            drops: seed + 5,
            rx_malformed: seed + 6,
            rx_oversize: seed + 7,
            rx_filtered: seed + 8,
            tx_dropped: seed + 9,
            rx_spoofed: seed + 10,
            spoofed_by: [
                ("router_advertisement".to_string(), seed + 12),
                ("neighbor_advertisement".to_string(), seed + 13),
                ("redirect".to_string(), 0),
            ]
            .into(),
            learn_refused: seed + 11,
            host_loopback_refused: seed + 14,
            rx_policy: 0,
            rx_queue_full: 0,
            dhcp: None,
        }
    }

    #[test]
    fn stats_show_the_gateways_dhcp_counters() {
        let mut row = stats_row("backend", "gateway", 0);
        row.dhcp = Some(crate::api::types::DhcpView {
            offers: 41,
            acks: 43,
            unknown_clients: 47,
            ..Default::default()
        });
        let text = stats(&[row, stats_row("backend", "a/eth0", 1)], Format::Table);
        let line = text
            .lines()
            .find(|l| l.contains("41"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(text.contains("DHCP OFFERS"), "{text}");
        assert!(
            line.starts_with("backend") && line.contains("gateway") && line.contains("43"),
            "{text}"
        );
        assert!(line.contains("47"), "{text}");
        let mut idle = stats_row("backend", "gateway", 0);
        idle.dhcp = Some(Default::default());
        assert!(!stats(&[idle], Format::Table).contains("DHCP"));
    }

    #[test]
    fn stats_table_has_a_column_per_drop_reason() {
        let row = stats_row("backend", "alpha/eth0", 100);
        let text = stats(std::slice::from_ref(&row), Format::Table);
        assert_table_has_every_field(&row, &text, &[]);
        let (header, line) = (lines_of(&text, 0), lines_of(&text, 1));
        // Each counter sits under its own header: same start column.
        for (name, value) in [
            ("DROPS", "105"),
            ("MALFORMED", "106"),
            ("OVERSIZE", "107"),
            ("FILTERED", "108"),
            ("TX DROPPED", "109"),
            ("SPOOFED", "110"),
            ("LEARN REFUSED", "111"),
        ] {
            let column = header
                .find(&format!("   {name}"))
                .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
                + 3;
            let cell = line
                .get(column..)
                .and_then(|rest| rest.split_whitespace().next());
            assert_eq!(cell, Some(value), "{name}:\n{text}");
        }
    }

    #[test]
    fn stats_break_spoofed_down_by_the_reasons_that_counted() {
        let row = stats_row("backend", "alpha/eth0", 100);
        let text = stats(std::slice::from_ref(&row), Format::Table);
        assert!(text.contains("SPOOFED BY REASON"), "{text}");
        let line = |reason: &str| {
            text.lines()
                .find(|l| l.contains(reason))
                .map(str::to_string)
        };
        assert!(
            line("router_advertisement").is_some_and(|l| l.ends_with("112")),
            "{text}"
        );
        assert!(line("neighbor_advertisement").is_some_and(|l| l.ends_with("113")));
        assert_eq!(
            line("redirect"),
            None,
            "reasons that counted nothing are left out"
        );
        let mut quiet = row.clone();
        quiet.spoofed_by.clear();
        assert!(!stats(&[quiet], Format::Table).contains("BY REASON"));
    }

    fn lines_of(text: &str, n: usize) -> &str {
        text.lines().nth(n).unwrap_or_default()
    }

    #[test]
    fn stats_sort_by_network_then_port() {
        let mut rows = vec![
            stats_row("frontend", "gateway", 0),
            stats_row("backend", "gateway", 0),
            stats_row("backend", "alpha/eth0", 0),
            stats_row("frontend", "alpha/eth1", 0),
        ];
        sort_stats(&mut rows);
        let order: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.network.as_str(), r.port.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("backend", "alpha/eth0"),
                ("backend", "gateway"),
                ("frontend", "alpha/eth1"),
                ("frontend", "gateway"),
            ]
        );
    }

    #[test]
    fn fdb_age_has_a_unit() {
        let rows = [FdbRow {
            mac: "02:42:ac:12:00:02".into(),
            port: "alpha/eth0".into(),
            age_s: 42,
            kind: "learned".into(),
        }];
        let text = fdb(&rows, Format::Table);
        assert!(text.contains("   42s   learned"), "{text}");
    }
}
