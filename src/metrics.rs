//! `tapnet daemon --metrics ADDR:PORT`: a small HTTP/1.0 server thread answering `GET /metrics`
//! in the Prometheus text format 0.0.4. It reads counters the datapath and gateways keep anyway
//! (relaxed atomics), so scraping costs the switch nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::datapath::impair::LinkStats;
use crate::datapath::port::PortStats;
use crate::error::{Context, Result};
use crate::gateway::dns_server::{DnsStats, RCODES};

/// A request head longer than this is refused.
const MAX_HEAD: usize = 8192;

/// Control requests by kind and result, counted by the API server.
static REQUESTS: Mutex<BTreeMap<(String, bool), u64>> = Mutex::new(BTreeMap::new());
/// Frames captures dropped because their reader fell behind.
pub static CAPTURE_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Count one control request of `kind` (`network_create`, ...) that succeeded or failed.
pub fn count_request(kind: &str, ok: bool) {
    let mut map = REQUESTS.lock().unwrap_or_else(|e| e.into_inner());
    *map.entry((kind.to_string(), ok)).or_insert(0) += 1;
}

/// One switch port as the metrics show it.
pub struct PortSample {
    pub network: String,
    pub sandbox: String,
    pub interface: String,
    pub stats: PortStats,
    pub link: LinkStats,
}

/// One network: its MAC table, NAT flows and DNS server.
pub struct NetworkSample {
    pub name: String,
    pub fdb_entries: usize,
    pub nat_tcp_flows: Option<usize>,
    pub nat_udp_flows: Option<usize>,
    pub dns: Option<std::sync::Arc<DnsStats>>,
}

#[derive(Default)]
pub struct Snapshot {
    pub ports: Vec<PortSample>,
    pub networks: Vec<NetworkSample>,
}

/// What the metrics server asks for on each scrape: the controller.
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self) -> Snapshot;
}

/// Split a port label (`sandbox/eth0`, or `gateway`) into sandbox and interface.
pub fn split_label(label: &str) -> (String, String) {
    match label.split_once('/') {
        Some((s, i)) => (s.to_string(), i.to_string()),
        None => (String::new(), label.to_string()),
    }
}

/// A label value with `\`, `"` and newlines escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let body: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if body.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", body.join(","));
        }
    }
}

/// The whole exposition, in text format 0.0.4.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    type Get = fn(&PortSample) -> u64;
    let port_counters: [(&str, &str, Get); 4] = [
        (
            "rx_packets",
            "Frames received from the port's endpoint.",
            |p| p.stats.rx_packets,
        ),
        (
            "rx_bytes",
            "Bytes received from the port's endpoint.",
            |p| p.stats.rx_bytes,
        ),
        (
            "tx_packets",
            "Frames written to the port's endpoint.",
            |p| p.stats.tx_packets,
        ),
        ("tx_bytes", "Bytes written to the port's endpoint.", |p| {
            p.stats.tx_bytes
        }),
    ];
    for (what, help, get) in port_counters {
        let name = format!("tapnet_port_{what}_total");
        f.head(&name, "counter", help);
        for p in &snap.ports {
            f.sample(
                &name,
                &[
                    ("network", &p.network),
                    ("sandbox", &p.sandbox),
                    ("interface", &p.interface),
                ],
                get(p),
            );
        }
    }
    let drops: [(&str, Get); 10] = [
        ("malformed", |p| p.stats.rx_malformed),
        ("spoofed", |p| p.stats.rx_spoofed),
        ("oversize", |p| p.stats.rx_oversize),
        ("filtered", |p| p.stats.rx_filtered),
        ("tx_error", |p| p.stats.tx_dropped),
        ("link_down", |p| p.link.dropped_down),
        ("impairment_loss", |p| p.link.dropped_loss),
        ("rate_queue", |p| p.link.dropped_queue),
        ("blocked", |p| p.link.dropped_blocked),
        ("delay_overflow", |p| p.link.dropped_overflow),
    ];
    let name = "tapnet_port_drops_total";
    f.head(name, "counter", "Frames dropped at the port, by reason.");
    for p in &snap.ports {
        for (reason, get) in drops {
            f.sample(
                name,
                &[
                    ("network", &p.network),
                    ("sandbox", &p.sandbox),
                    ("interface", &p.interface),
                    ("reason", reason),
                ],
                get(p),
            );
        }
    }
    let name = "tapnet_port_learn_refused_total";
    f.head(
        name,
        "counter",
        "Source MACs not learned: the port owns its limit of stations, or the table is full.",
    );
    for p in &snap.ports {
        f.sample(
            name,
            &[
                ("network", &p.network),
                ("sandbox", &p.sandbox),
                ("interface", &p.interface),
            ],
            p.stats.learn_refused,
        );
    }
    let name = "tapnet_link_frames_total";
    f.head(
        name,
        "counter",
        "Frames an impaired link delayed, duplicated or corrupted.",
    );
    for p in &snap.ports {
        for (action, v) in [
            ("delayed", p.link.delayed),
            ("duplicated", p.link.duplicated),
            ("corrupted", p.link.corrupted),
        ] {
            f.sample(
                name,
                &[
                    ("network", &p.network),
                    ("sandbox", &p.sandbox),
                    ("interface", &p.interface),
                    ("action", action),
                ],
                v,
            );
        }
    }
    let mut per_net: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for n in &snap.networks {
        per_net.insert(&n.name, [0; 4]);
    }
    for p in &snap.ports {
        let e = per_net.entry(&p.network).or_insert([0; 4]);
        e[0] += p.stats.rx_packets;
        e[1] += p.stats.rx_bytes;
        e[2] += p.stats.tx_packets;
        e[3] += p.stats.tx_bytes;
    }
    for (i, what) in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"]
        .iter()
        .enumerate()
    {
        let name = format!("tapnet_network_{what}_total");
        f.head(&name, "counter", "Sum over the network's ports.");
        for (net, v) in &per_net {
            f.sample(&name, &[("network", net)], v[i]);
        }
    }
    let name = "tapnet_fdb_entries";
    f.head(name, "gauge", "Stations in the network's MAC table.");
    for n in &snap.networks {
        f.sample(name, &[("network", &n.name)], n.fdb_entries as u64);
    }
    let name = "tapnet_nat_flows";
    f.head(
        name,
        "gauge",
        "Live outbound NAT flows through the gateway.",
    );
    for n in &snap.networks {
        for (proto, v) in [("tcp", n.nat_tcp_flows), ("udp", n.nat_udp_flows)] {
            if let Some(v) = v {
                f.sample(name, &[("network", &n.name), ("proto", proto)], v as u64);
            }
        }
    }
    let name = "tapnet_dns_queries_total";
    f.head(name, "counter", "Queries to the network's DNS server.");
    for n in &snap.networks {
        if let Some(d) = &n.dns {
            for (transport, c) in [("udp", &d.queries_udp), ("tcp", &d.queries_tcp)] {
                f.sample(
                    name,
                    &[("network", &n.name), ("transport", transport)],
                    c.load(Ordering::Relaxed),
                );
            }
        }
    }
    let name = "tapnet_dns_answers_total";
    f.head(
        name,
        "counter",
        "Answers of the network's DNS server by source (local names, or an upstream) and response code.",
    );
    for n in &snap.networks {
        if let Some(d) = &n.dns {
            for (source, row) in [("local", &d.local), ("upstream", &d.upstream)] {
                for (rcode, c) in RCODES.iter().zip(row.iter()) {
                    f.sample(
                        name,
                        &[("network", &n.name), ("source", source), ("rcode", rcode)],
                        c.load(Ordering::Relaxed),
                    );
                }
            }
        }
    }
    let name = "tapnet_dns_dropped_total";
    f.head(
        name,
        "counter",
        "Queries the DNS server left unanswered (malformed).",
    );
    for n in &snap.networks {
        if let Some(d) = &n.dns {
            f.sample(
                name,
                &[("network", &n.name)],
                d.dropped.load(Ordering::Relaxed),
            );
        }
    }
    let name = "tapnet_capture_dropped_total";
    f.head(
        name,
        "counter",
        "Frames captures dropped because their reader fell behind.",
    );
    f.sample(name, &[], CAPTURE_DROPPED.load(Ordering::Relaxed));
    let name = "tapnet_control_requests_total";
    f.head(name, "counter", "Control API requests by kind and result.");
    let requests = REQUESTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for ((kind, ok), v) in &requests {
        let result = if *ok { "ok" } else { "error" };
        f.sample(name, &[("kind", kind), ("result", result)], *v);
    }
    out
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Metrics,
    NotFound,
    /// Not a request line we understand: 400.
    Bad,
    /// Not GET/HEAD: 405.
    Method,
}

/// Parse the first line of an HTTP request head (untrusted bytes; fuzzed).
pub fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") || target.is_empty() {
        return Route::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Route::Method;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

/// Bind `addr` and serve scrapes on a thread; fails at once if the address is taken.
pub fn start(addr: SocketAddr, source: Arc<dyn Source>) -> Result<()> {
    let listener = TcpListener::bind(addr).context(|| format!("listen for metrics on {addr}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if let Err(e) = answer(conn, source.as_ref()) {
                    eprintln!("tapnet: metrics: {e}");
                }
            }
        })
        .context(|| "spawn metrics thread".into())?;
    Ok(())
}

/// One scrape, answered on the server's thread (scrapes are rare and quick).
fn answer(mut conn: TcpStream, source: &dyn Source) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            break;
        }
    }
    let (status, body) = match route(&head) {
        Route::Metrics => ("200 OK", render(&source.snapshot())),
        Route::NotFound => ("404 Not Found", "not found: try /metrics\n".to_string()),
        Route::Method => ("405 Method Not Allowed", "GET only\n".to_string()),
        Route::Bad => ("400 Bad Request", "bad request\n".to_string()),
    };
    let head_only = head.starts_with(b"HEAD ");
    let mut reply = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        reply.push_str(&body);
    }
    conn.write_all(reply.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_request_lines() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.0\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.0\r\n\r\n"), Route::Method);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::Bad);
        assert_eq!(route(b"\xff\xfe"), Route::Bad);
        assert_eq!(route(b""), Route::Bad);
    }

    #[test]
    fn renders_families_with_escaped_labels() {
        count_request("ping", true);
        let snap = Snapshot {
            ports: vec![PortSample {
                network: "n\"1".into(),
                sandbox: "a".into(),
                interface: "eth0".into(),
                stats: PortStats {
                    rx_packets: 3,
                    ..Default::default()
                },
                link: LinkStats::default(),
            }],
            networks: vec![NetworkSample {
                name: "n\"1".into(),
                fdb_entries: 2,
                nat_tcp_flows: Some(1),
                nat_udp_flows: Some(0),
                dns: Some(std::sync::Arc::new(DnsStats::default())),
            }],
        };
        let text = render(&snap);
        assert!(text.contains(
            "tapnet_port_rx_packets_total{network=\"n\\\"1\",sandbox=\"a\",interface=\"eth0\"} 3\n"
        ));
        assert!(text.contains("# TYPE tapnet_fdb_entries gauge\n"));
        assert!(text.contains("tapnet_network_rx_packets_total{network=\"n\\\"1\"} 3\n"));
        assert!(text.contains("tapnet_control_requests_total{kind=\"ping\",result=\"ok\"}"));
        assert!(text.ends_with('\n'));
    }
}
