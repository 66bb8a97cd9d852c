//! The DNS server of a network's gateway. It listens on the host's loopback (UDP and TCP, an
//! ephemeral port each); the gateway's NAT sends a sandbox's queries to the gateway address,
//! port 53, there. Names of the network's sandboxes and aliases are answered from a table the
//! controller keeps current; other names are forwarded to the upstream servers, with SERVFAIL
//! when none answers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::dns::{self, Decision};
use crate::error::{Context, Result};

/// Per-upstream wait before trying the next one.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the server threads look at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Lowercased names (sandbox names and aliases) and their addresses on the network.
pub type NameTable = HashMap<String, Vec<Ipv4Addr>>;

/// Response codes the metrics tell apart; anything else counts as `other`.
pub const RCODES: [&str; 4] = ["noerror", "nxdomain", "servfail", "other"];

/// Queries and answers, for the metrics.
#[derive(Default)]
pub struct DnsStats {
    pub queries_udp: AtomicU64,
    pub queries_tcp: AtomicU64,
    /// Answered from the network's names (or SERVFAIL when no upstream answered), by RCODES.
    pub local: [AtomicU64; 4],
    /// Answers relayed from an upstream server, by RCODES.
    pub upstream: [AtomicU64; 4],
    /// Queries left unanswered (malformed, or not even a SERVFAIL could be built).
    pub dropped: AtomicU64,
}

impl DnsStats {
    fn answered(&self, upstream: bool, reply: &[u8]) {
        let index = match reply.get(3).map(|b| b & 0x0f) {
            Some(0) => 0,
            Some(3) => 1,
            Some(2) => 2,
            _ => 3,
        };
        let row = if upstream {
            &self.upstream
        } else {
            &self.local
        };
        row[index].fetch_add(1, Ordering::Relaxed);
    }
}

pub struct DnsServer {
    pub udp: SocketAddrV4,
    pub tcp: SocketAddrV4,
    names: Arc<RwLock<NameTable>>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<DnsStats>,
}

struct Shared {
    stats: Arc<DnsStats>,
    names: Arc<RwLock<NameTable>>,
    /// Empty: names that are not local get SERVFAIL (internal networks, no upstream allowed).
    upstreams: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
}

impl Shared {
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The reply to `query`, or nothing for what must not be answered; counted.
    fn resolve(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let queries = if tcp {
            &self.stats.queries_tcp
        } else {
            &self.stats.queries_udp
        };
        queries.fetch_add(1, Ordering::Relaxed);
        let (reply, upstream) = self.resolve_uncounted(query, tcp);
        match &reply {
            Some(r) => self.stats.answered(upstream, r),
            None => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        reply
    }

    /// The reply, and whether an upstream server gave it.
    fn resolve_uncounted(&self, query: &[u8], tcp: bool) -> (Option<Vec<u8>>, bool) {
        let mut out = Vec::with_capacity(512);
        let lookup = |name: &str| self.lookup(name);
        let decision = if tcp {
            dns::answer_tcp(query, &lookup, &mut out)
        } else {
            dns::answer(query, &lookup, &mut out)
        };
        match decision {
            Decision::Answered => (Some(out), false),
            Decision::Drop => (None, false),
            Decision::Forward => {
                let forwarded = if tcp {
                    dns::forward_tcp(query, &self.upstreams, UPSTREAM_TIMEOUT, &mut out)
                } else {
                    dns::forward_udp(query, &self.upstreams, UPSTREAM_TIMEOUT, &mut out)
                };
                if forwarded.is_ok() {
                    (Some(out), true)
                } else if dns::servfail_for(query, &mut out) {
                    (Some(out), false)
                } else {
                    (None, false)
                }
            }
        }
    }
}

impl DnsServer {
    pub fn start(network: &str, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        let udp_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .context(|| format!("bind the DNS server of network {network}"))?;
        let tcp_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context(|| format!("bind the DNS server of network {network}"))?;
        let (udp, tcp) = match (udp_socket.local_addr(), tcp_listener.local_addr()) {
            (Ok(SocketAddr::V4(u)), Ok(SocketAddr::V4(t))) => (u, t),
            _ => {
                return Err(crate::error::Error::invalid(
                    "DNS server has no IPv4 address",
                ));
            }
        };
        let _ = udp_socket.set_read_timeout(Some(STOP_POLL));
        let _ = tcp_listener.set_nonblocking(true);
        let names = Arc::new(RwLock::new(NameTable::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DnsStats::default());
        let shared = Arc::new(Shared {
            stats: stats.clone(),
            names: names.clone(),
            upstreams,
            stop: stop.clone(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("dns-udp-{network}"))
            .spawn(move || serve_udp(udp_socket, s))
            .context(|| "spawn DNS server".into())?;
        std::thread::Builder::new()
            .name(format!("dns-tcp-{network}"))
            .spawn(move || serve_tcp(tcp_listener, shared))
            .context(|| "spawn DNS server".into())?;
        Ok(DnsServer {
            udp,
            tcp,
            names,
            stop,
            stats,
        })
    }

    pub fn set_names(&self, table: NameTable) {
        *self.names.write().unwrap_or_else(|e| e.into_inner()) = table;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (socket, shared) = (socket.clone(), shared.clone());
        // Forwarding can wait seconds on a silent upstream: never hold up other queries.
        let _ = std::thread::Builder::new()
            .name("dns-query".into())
            .spawn(move || {
                if let Some(reply) = shared.resolve(&query, false) {
                    let _ = socket.send_to(&reply, peer);
                }
            });
    }
}

fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                let _ = std::thread::Builder::new()
                    .name("dns-tcp-conn".into())
                    .spawn(move || serve_tcp_connection(stream, &shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn serve_tcp_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut query = Vec::new();
    while let Ok(true) = dns::read_tcp_message(&mut stream, &mut query) {
        match shared.resolve(&query, true) {
            Some(reply) => {
                if dns::write_tcp_message(&mut stream, &reply).is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}
