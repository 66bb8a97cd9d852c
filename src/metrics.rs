//! `tapnet daemon --metrics ADDR:PORT`: a small HTTP/1 server thread (hyper on a current-thread
//! tokio runtime) answering `GET /metrics` in the Prometheus text format 0.0.4. It reads counters the datapath and gateways keep anyway
//! (relaxed atomics), so scraping costs the switch nothing.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::datapath::impair::LinkStats;
use crate::datapath::port::PortStats;
use crate::datapath::security::Violation;
use crate::error::{Context, Result};
use crate::gateway::dns::{DnsStats, RCODES};

/// A request head longer than this is refused (hyper's smallest read buffer).
const MAX_HEAD: usize = 8192;
/// Connections served at once. Past it, the one waiting longest for its request head is closed.
const MAX_CONNECTIONS: usize = 16;
/// A client has this long from connecting to send its whole request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// And this long for the whole exchange, so a client that never reads the reply lets go too.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Control requests by kind and result, counted by the API server.
static REQUESTS: Mutex<BTreeMap<(String, bool), u64>> = Mutex::new(BTreeMap::new());
// The capture counter lives with the captures, below this module.
pub use crate::datapath::capture::CAPTURE_DROPPED;

/// Count one control request of `kind` (`network_create`, ...) that succeeded or failed.
pub fn count_request(kind: &str, ok: bool) {
    let mut map = crate::guard::lock_or_stop(&REQUESTS, "the request counters");
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
    /// Its endpoints by kind: `sandbox`, `cni`, `docker`, `vm` (kinds with none left out).
    pub endpoints: Vec<(&'static str, u64)>,
    pub fdb_entries: usize,
    pub nat_tcp_flows: Option<usize>,
    pub nat_udp_flows: Option<usize>,
    /// The gateway's refusals of the host's loopback (`host_loopback=off`).
    pub host_loopback_refused: Option<u64>,
    pub dns: Option<std::sync::Arc<DnsStats>>,
    /// Its policy (`icc`, rules), once it has one.
    pub policy: Option<PolicySample>,
    /// The gateway's DHCPv4 server (none on a network without IPv4 or a gateway).
    pub dhcp: Option<std::sync::Arc<crate::gateway::dhcp::DhcpStats>>,
}

/// A network's policy: drops by reason, the connection table, each rule's counters.
pub struct PolicySample {
    pub drops: crate::datapath::policy::PolicyDrops,
    pub flows: u64,
    pub max_flows: u64,
    /// (rule, packets, bytes), in order.
    pub rules: Vec<(String, u64, u64)>,
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
/// The networks' policies: drops by reason, connection tables, rule counters.
fn render_policy(f: &mut Family<'_>, snap: &Snapshot) {
    let policies = || {
        snap.networks
            .iter()
            .filter_map(|n| n.policy.as_ref().map(|p| (n.name.as_str(), p)))
    };
    let name = "tapnet_policy_drops_total";
    f.head(
        name,
        "counter",
        "Frames the network's policy dropped: icc (sandbox to sandbox under icc=false), rule, default (policy_default=deny), table_full (a new flow past the connection table's bound).",
    );
    for (net, p) in policies() {
        let d = p.drops;
        for (reason, v) in [
            ("icc", d.icc),
            ("rule", d.rule),
            ("default", d.default),
            ("table_full", d.table_full),
        ] {
            f.sample(name, &[("network", net), ("reason", reason)], v);
        }
    }
    let name = "tapnet_policy_flows";
    f.head(
        name,
        "gauge",
        "Flows in the network's policy connection table.",
    );
    for (net, p) in policies() {
        f.sample(name, &[("network", net)], p.flows);
    }
    let name = "tapnet_policy_flows_max";
    f.head(
        name,
        "gauge",
        "The bound of the network's policy connection table.",
    );
    for (net, p) in policies() {
        f.sample(name, &[("network", net)], p.max_flows);
    }
    for (what, help) in [
        (
            "packets",
            "Frames a policy rule decided (a flow's first when admitted, every one when refused).",
        ),
        ("bytes", "Bytes of the frames a policy rule decided."),
    ] {
        let name = format!("tapnet_policy_rule_{what}_total");
        f.head(&name, "counter", help);
        for (net, p) in policies() {
            for (rule, packets, bytes) in &p.rules {
                let v = if what == "packets" { *packets } else { *bytes };
                f.sample(&name, &[("network", net), ("rule", rule)], v);
            }
        }
    }
}

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
    let name = "tapnet_port_security_drops_total";
    f.head(
        name,
        "counter",
        "Frames port security dropped, by violation (their sum is the spoofed drops).",
    );
    for p in &snap.ports {
        for v in Violation::ALL {
            f.sample(
                name,
                &[
                    ("network", &p.network),
                    ("sandbox", &p.sandbox),
                    ("interface", &p.interface),
                    ("violation", v.name()),
                ],
                p.stats.spoofed(v),
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
    let name = "tapnet_port_policy_drops_total";
    f.head(
        name,
        "counter",
        "Frames from the port the network's policy dropped (icc=false, rules, the default, a full connection table).",
    );
    for p in &snap.ports {
        f.sample(
            name,
            &[
                ("network", &p.network),
                ("sandbox", &p.sandbox),
                ("interface", &p.interface),
            ],
            p.stats.rx_policy,
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
    let name = "tapnet_network_endpoints";
    f.head(
        name,
        "gauge",
        "The network's endpoints by kind: sandbox, cni (tapnet-cni attachments), docker (the Docker plugin's), vm (tapnet port add).",
    );
    for n in &snap.networks {
        for (kind, count) in &n.endpoints {
            f.sample(name, &[("network", &n.name), ("kind", kind)], *count);
        }
    }
    let name = "tapnet_fdb_entries";
    f.head(name, "gauge", "Stations in the network's MAC table.");
    for n in &snap.networks {
        f.sample(name, &[("network", &n.name)], n.fdb_entries as u64);
    }
    render_policy(&mut f, snap);
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
    let name = "tapnet_host_loopback_refused_total";
    f.head(
        name,
        "counter",
        "Connections and datagrams to the gateway address refused: the network keeps the host's loopback closed.",
    );
    for n in &snap.networks {
        if let Some(v) = n.host_loopback_refused {
            f.sample(name, &[("network", &n.name)], v);
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
    let name = "tapnet_dhcp_messages_total";
    f.head(
        name,
        "counter",
        "Messages of the gateway's DHCPv4 server by kind (offer, ack, nak sent; unknown_client, ignored not answered; release, decline received).",
    );
    for n in &snap.networks {
        if let Some(d) = &n.dhcp {
            for (kind, v) in d.values() {
                f.sample(name, &[("network", &n.name), ("kind", kind)], v);
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
    let requests = crate::guard::lock_or_stop(&REQUESTS, "the request counters").clone();
    for ((kind, ok), v) in &requests {
        let result = if *ok { "ok" } else { "error" };
        f.sample(name, &[("kind", kind), ("result", result)], *v);
    }
    out
}

/// The answer to a request hyper has parsed: status and body, by method and path.
fn respond(method: &Method, path: &str, source: &dyn Source) -> (StatusCode, String) {
    if method != Method::GET && method != Method::HEAD {
        (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string())
    } else if path != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".to_string(),
        )
    } else {
        (StatusCode::OK, render(&source.snapshot()))
    }
}

/// Bind `addr` and serve scrapes on a thread; fails at once if the address is taken.
pub fn start(addr: SocketAddr, source: Arc<dyn Source>) -> Result<()> {
    let listener = TcpListener::bind(addr).context(|| format!("listen for metrics on {addr}"))?;
    listener
        .set_nonblocking(true)
        .context(|| format!("make the metrics listener on {addr} non-blocking"))?;
    // One thread, no worker pool: connections are tasks, so holding many costs no threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context(|| "build the metrics server's runtime".into())?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, source).await,
                    Err(e) => eprintln!("tapnet: metrics: register the listener on {addr}: {e}"),
                }
            })
        })
        .context(|| "spawn metrics thread".into())?;
    Ok(())
}

/// Accept forever, at most `MAX_CONNECTIONS` served at once.
async fn serve(listener: tokio::net::TcpListener, source: Arc<dyn Source>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let waiting = Arc::new(HeadWaiters::default());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of fds, say: wait rather than spin, the connections we hold will end.
                eprintln!("tapnet: metrics: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Full: the client that has waited longest for its request head gives up its
                // slot, so idle connections cannot keep a scrape out.
                waiting.evict_oldest();
                match slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                }
            }
        };
        // Registered here, not in the task: the task may not have run yet when the next accept
        // finds the slots full, and it must be there to be evicted.
        let (id, evicted) = waiting.add();
        let waiter = (waiting.clone(), id, evicted);
        tokio::spawn(connection(stream, source.clone(), waiter, permit));
    }
}

/// One connection, one request; it holds its slot (`_permit`) until it ends.
async fn connection(
    stream: tokio::net::TcpStream,
    source: Arc<dyn Source>,
    (waiting, id, evicted): (Arc<HeadWaiters>, u64, Arc<Notify>),
    _permit: OwnedSemaphorePermit,
) {
    let parsed = waiting.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        // The head is in: this connection answers now, it is not idle any more.
        parsed.remove(id);
        let (status, body) = respond(req.method(), req.uri().path(), source.as_ref());
        let mut reply = Response::new(body);
        *reply.status_mut() = status;
        reply.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        std::future::ready(Ok::<_, Infallible>(reply))
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    // Errors are the client's (a malformed or late head, a reset): hyper has answered or closed,
    // and logging them would let any client fill the log.
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => {}
        _ = evicted.notified() => {}
    }
    waiting.remove(id);
}

/// Connections still waiting for their request head, oldest first.
#[derive(Default)]
struct HeadWaiters {
    inner: Mutex<(u64, BTreeMap<u64, Arc<Notify>>)>,
}

impl HeadWaiters {
    fn add(&self) -> (u64, Arc<Notify>) {
        let mut inner = crate::guard::lock_or_stop(&self.inner, "the metrics connection list");
        let id = inner.0;
        inner.0 += 1;
        let notify = Arc::new(Notify::new());
        inner.1.insert(id, notify.clone());
        (id, notify)
    }

    fn remove(&self, id: u64) {
        let mut inner = crate::guard::lock_or_stop(&self.inner, "the metrics connection list");
        inner.1.remove(&id);
    }

    /// Close the oldest waiter (`notify_one` keeps the wakeup if it is not polling yet).
    fn evict_oldest(&self) {
        let mut inner = crate::guard::lock_or_stop(&self.inner, "the metrics connection list");
        if let Some((_, notify)) = inner.1.pop_first() {
            notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Empty;
    impl Source for Empty {
        fn snapshot(&self) -> Snapshot {
            Snapshot::default()
        }
    }

    #[test]
    fn responds_by_method_and_path() {
        let status = |m: Method, p: &str| respond(&m, p, &Empty).0;
        assert_eq!(status(Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::HEAD, "/metrics"), StatusCode::OK);
        assert_eq!(status(Method::GET, "/"), StatusCode::NOT_FOUND);
        assert_eq!(status(Method::GET, "/metrics/x"), StatusCode::NOT_FOUND);
        assert_eq!(
            status(Method::POST, "/metrics"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        let (_, body) = respond(&Method::GET, "/metrics", &Empty);
        assert!(body.contains("# TYPE tapnet_capture_dropped_total counter\n"));
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
                    rx_spoofed: 2,
                    spoofed_by: {
                        let mut by = [0; Violation::COUNT];
                        by[Violation::RouterAdvertisement.index()] = 2;
                        by
                    },
                    ..Default::default()
                },
                link: LinkStats::default(),
            }],
            networks: vec![NetworkSample {
                name: "n\"1".into(),
                endpoints: vec![("sandbox", 2), ("cni", 1)],
                fdb_entries: 2,
                nat_tcp_flows: Some(1),
                nat_udp_flows: Some(0),
                host_loopback_refused: Some(3),
                dns: Some(std::sync::Arc::new(DnsStats::default())),
                policy: Some(PolicySample {
                    drops: crate::datapath::policy::PolicyDrops {
                        icc: 4,
                        ..Default::default()
                    },
                    flows: 1,
                    max_flows: 16,
                    rules: vec![("web".into(), 5, 300)],
                }),
                dhcp: Some(std::sync::Arc::new(Default::default())),
            }],
        };
        let text = render(&snap);
        assert!(text.contains(
            "tapnet_port_rx_packets_total{network=\"n\\\"1\",sandbox=\"a\",interface=\"eth0\"} 3\n"
        ));
        assert!(text.contains("# TYPE tapnet_fdb_entries gauge\n"));
        assert!(text.contains("tapnet_network_endpoints{network=\"n\\\"1\",kind=\"cni\"} 1\n"));
        assert!(text.contains("tapnet_policy_drops_total{network=\"n\\\"1\",reason=\"icc\"} 4\n"));
        assert!(
            text.contains("tapnet_policy_rule_bytes_total{network=\"n\\\"1\",rule=\"web\"} 300\n")
        );
        assert!(text.contains(
            "tapnet_port_security_drops_total{network=\"n\\\"1\",sandbox=\"a\",interface=\"eth0\",violation=\"router_advertisement\"} 2\n"
        ));
        assert!(text.contains("violation=\"redirect\"} 0\n"));
        assert!(text.contains("tapnet_network_rx_packets_total{network=\"n\\\"1\"} 3\n"));
        assert!(text.contains("tapnet_host_loopback_refused_total{network=\"n\\\"1\"} 3\n"));
        assert!(text.contains("tapnet_control_requests_total{kind=\"ping\",result=\"ok\"}"));
        assert!(text.contains("tapnet_dhcp_messages_total{network=\"n\\\"1\",kind=\"offer\"} 0\n"));
        assert!(text.ends_with('\n'));
    }
}
