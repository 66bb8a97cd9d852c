//! The DNS server of a network's gateway. The gateway hands it a sandbox's UDP queries to the
//! gateway address, port 53, directly ([`DnsPort`]): no host socket and no NAT flow per query.
//! TCP queries reach its TCP end on the host's loopback through the gateway's TCP NAT; its UDP
//! end there answers clients on the host (the gateway no longer sends through it). Names of the network's sandboxes and
//! aliases are answered from a table the controller keeps current; other names are forwarded to
//! the upstream servers, with SERVFAIL when none answers.
//!
//! No thread per query: local names are answered on the receiving thread (the gateway's, for
//! its sandboxes); forwarded UDP queries go to a fixed pool of forwarders through a bounded
//! queue (full: SERVFAIL at once), TCP clients to a fixed pool of connection threads (full:
//! closed). Threads per network: one UDP receiver, `FORWARDERS`, one TCP acceptor and
//! `TCP_WORKERS`, whatever the sandboxes send.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

use crate::error::{Context, Result};
use crate::gateway::dns::{self, Decision, NameTable};
use crate::wire::MacAddr;

/// Per-upstream wait before trying the next one.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Threads that forward UDP queries upstream: at most this many forwarded queries are in
/// flight per network, whatever the sandboxes send.
const FORWARDERS: usize = 4;
/// Forwarded UDP queries waiting for a forwarder; beyond that, SERVFAIL at once.
const FORWARD_QUEUE: usize = 64;
/// Threads that serve TCP clients, and clients that may wait for one (others are closed).
const TCP_WORKERS: usize = 2;
const TCP_QUEUE: usize = 16;
/// A TCP client quiet this long is closed; one client asks this many queries at most.
const TCP_IDLE: Duration = Duration::from_secs(5);
const TCP_MAX_QUERIES: usize = 100;

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
    shed: Arc<AtomicU64>,
    pub stats: Arc<DnsStats>,
    shared: Arc<Shared>,
    forward: Sender<Job>,
}

/// A forwarded UDP query and where its answer goes.
struct Job {
    query: Vec<u8>,
    reply: ReplyTo,
}

enum ReplyTo {
    /// A client of the UDP end on the host's loopback.
    Peer(SocketAddr),
    /// A sandbox, through its gateway's thread.
    Gateway {
        sandbox: SocketAddr,
        mac: MacAddr,
        back: Arc<Back>,
    },
}

/// The way back into a gateway's thread for answers that come from a forwarder.
struct Back {
    answers: Sender<DnsAnswer>,
    waker: Arc<mio::Waker>,
}

/// An answer to a forwarded query, for the gateway to frame and send to `sandbox`.
pub struct DnsAnswer {
    /// The sandbox's address and port, IPv4 or IPv6 (as the query came).
    pub sandbox: SocketAddr,
    pub mac: MacAddr,
    pub message: Vec<u8>,
}

/// A gateway's direct way into its DNS server: local names are answered on the gateway's
/// thread, in the frame's time, holding nothing; other names take a place in the forwarders'
/// queue and come back through `answers`. A sandbox that floods queries thus holds no fd and no
/// flow: at most the forwarders and their queue, as any client of the server.
pub struct DnsPort {
    shared: Arc<Shared>,
    forward: Sender<Job>,
    back: Arc<Back>,
}

impl DnsPort {
    /// Take a sandbox's UDP query. True when `out` holds the reply to send now (a local name,
    /// or SERVFAIL when the forwarders are busy); false when there is none yet (forwarded: the
    /// answer comes through `answers`) or none at all (not a query). Counts the query and
    /// what it got, as the server's UDP end does.
    pub fn query(
        &self,
        query: &[u8],
        sandbox: SocketAddr,
        mac: MacAddr,
        out: &mut Vec<u8>,
    ) -> bool {
        out.clear();
        self.shared.count_query(false);
        match self.shared.answer(query, false, out) {
            Decision::Answered => self.shared.local_reply(true, out),
            Decision::Drop => self.shared.local_reply(false, out),
            Decision::Forward => {
                let job = Job {
                    query: query.to_vec(),
                    reply: ReplyTo::Gateway {
                        sandbox,
                        mac,
                        back: self.back.clone(),
                    },
                };
                self.shared.enqueue(&self.forward, job, out)
            }
        }
    }
}

struct Shared {
    stats: Arc<DnsStats>,
    names: Arc<RwLock<NameTable>>,
    /// The host's addresses, for its names (`host.tapnet.internal`).
    host: dns::HostAddresses,
    /// Empty: names that are not local get SERVFAIL (internal networks, no upstream allowed).
    upstreams: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    /// Queries and TCP clients turned away because the pools were busy.
    shed: Arc<AtomicU64>,
}

impl Shared {
    /// Answer `query` from the network's names (a read lock for the microseconds the codec
    /// takes; forwarding, which can take seconds, happens after it is released).
    fn answer(&self, query: &[u8], tcp: bool, out: &mut Vec<u8>) -> Decision {
        let table = crate::guard::read_or_stop(&self.names, "a DNS name table");
        let names = dns::WithHost {
            names: &*table,
            host: &self.host,
        };
        if tcp {
            dns::answer_tcp(query, &names, out)
        } else {
            dns::answer(query, &names, out)
        }
    }

    /// Forward `query` upstream into `out` (SERVFAIL when none answers); false when nothing
    /// may be answered. Counts the answer.
    fn forward(&self, query: &[u8], tcp: bool, out: &mut Vec<u8>) -> bool {
        let forwarded = if tcp {
            dns::forward_tcp(query, &self.upstreams, UPSTREAM_TIMEOUT, out)
        } else {
            dns::forward_udp(query, &self.upstreams, UPSTREAM_TIMEOUT, out)
        };
        if forwarded.is_ok() {
            self.stats.answered(true, out);
            return true;
        }
        self.local_reply(dns::servfail_for(query, out), out)
    }

    /// Count a query as it arrives.
    fn count_query(&self, tcp: bool) {
        let counter = if tcp {
            &self.stats.queries_tcp
        } else {
            &self.stats.queries_udp
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a reply made here (`made`: one is in `out`) or a query left unanswered.
    fn local_reply(&self, made: bool, out: &[u8]) -> bool {
        if made {
            self.stats.answered(false, out);
        } else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        made
    }

    /// Queue `job` for the forwarders. When the queue is full (or no forwarder thread could
    /// start), SERVFAIL now rather than never: true when `out` holds it, to send at once.
    fn enqueue(&self, queue: &Sender<Job>, job: Job, out: &mut Vec<u8>) -> bool {
        match queue.try_send(job) {
            Ok(()) => false,
            Err(e) => {
                let job = e.into_inner();
                self.shed.fetch_add(1, Ordering::Relaxed);
                out.clear();
                self.local_reply(dns::servfail_for(&job.query, out), out)
            }
        }
    }
}

impl DnsServer {
    pub fn start(network: &str, upstreams: Vec<SocketAddr>) -> Result<DnsServer> {
        Self::start_with(network, upstreams, None)
    }

    /// `start`, with the NAT policy that knows tapnet's own networks, whose addresses the
    /// host's names never answer with.
    pub fn start_with(
        network: &str,
        upstreams: Vec<SocketAddr>,
        policy: Option<crate::gateway::policy::NatPolicy>,
    ) -> Result<DnsServer> {
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
        let names = Arc::new(RwLock::new(NameTable::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let shed = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(DnsStats::default());
        let shared = Arc::new(Shared {
            stats: stats.clone(),
            names: names.clone(),
            host: dns::HostAddresses::new(policy),
            upstreams,
            stop: stop.clone(),
            shed: shed.clone(),
        });
        let udp_socket = Arc::new(udp_socket);
        let (forward, jobs) = crossbeam_channel::bounded::<Job>(FORWARD_QUEUE);
        start_forwarders(network, &udp_socket, &shared, &jobs);
        let (s, queue) = (shared.clone(), forward.clone());
        std::thread::Builder::new()
            .name(format!("dns-udp-{network}"))
            .spawn(move || {
                crate::guard::guarded("dns-udp", || serve_udp(&udp_socket, &s, &queue));
            })
            .context(|| "spawn DNS server".into())?;
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("dns-tcp-{network}"))
            .spawn(move || {
                crate::guard::guarded("dns-tcp", || serve_tcp(tcp_listener, s));
            })
            .context(|| "spawn DNS server".into())?;
        Ok(DnsServer {
            udp,
            tcp,
            names,
            stop,
            shed,
            stats,
            shared,
            forward,
        })
    }

    /// The gateway's direct way in; `waker` wakes the gateway's thread when a forwarded answer
    /// is waiting in the receiver.
    pub fn port(&self, waker: Arc<mio::Waker>) -> (DnsPort, Receiver<DnsAnswer>) {
        // Unbounded, yet never long: each answer is one of the forwarders' bounded jobs.
        let (answers, receiver) = crossbeam_channel::unbounded();
        let port = DnsPort {
            shared: self.shared.clone(),
            forward: self.forward.clone(),
            back: Arc::new(Back { answers, waker }),
        };
        (port, receiver)
    }

    /// Queries and TCP clients turned away so far because the pools were busy.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    pub fn set_names(&self, table: NameTable) {
        *crate::guard::write_or_stop(&self.names, "a DNS name table") = table;
    }

    /// Change the table in place (a sandbox's names added or removed).
    pub fn edit_names(&self, edit: impl FnOnce(&mut NameTable)) {
        edit(&mut crate::guard::write_or_stop(
            &self.names,
            "a DNS name table",
        ));
    }
}

impl Drop for DnsServer {
    /// The server threads block in `recv_from` and `accept` (an idle server costs no CPU):
    /// set the flag, then wake each with a datagram and a connection of its own.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(waker) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) {
            let _ = waker.send_to(&[], self.udp);
        }
        let _ = TcpStream::connect_timeout(&self.tcp.into(), Duration::from_secs(1));
    }
}

/// The forwarders: each takes a job from the queue, asks the upstreams and sends the answer
/// where the job says. They end once every sender of the queue is gone (the UDP end's thread,
/// the server and the gateway's port), after the job in hand.
fn start_forwarders(
    network: &str,
    socket: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    jobs: &Receiver<Job>,
) {
    for i in 0..FORWARDERS {
        let (socket, shared, jobs) = (socket.clone(), shared.clone(), jobs.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dns-fwd-{i}"))
            .spawn(move || {
                crate::guard::guarded("dns-fwd", || {
                    let mut out = Vec::with_capacity(512);
                    while let Ok(job) = jobs.recv() {
                        out.clear();
                        if !shared.forward(&job.query, false, &mut out) {
                            continue;
                        }
                        match job.reply {
                            ReplyTo::Peer(peer) => {
                                let _ = socket.send_to(&out, peer);
                            }
                            ReplyTo::Gateway { sandbox, mac, back } => {
                                let message = std::mem::replace(&mut out, Vec::with_capacity(512));
                                let answer = DnsAnswer {
                                    sandbox,
                                    mac,
                                    message,
                                };
                                if back.answers.send(answer).is_ok() {
                                    let _ = back.waker.wake();
                                }
                            }
                        }
                    }
                });
            });
        if let Err(e) = spawned {
            eprintln!("tapnet: DNS forwarder thread of network {network}: {e}");
        }
    }
}

/// Answer UDP queries from host-side clients: local names at once on this thread, forwarded
/// ones through the forwarders' queue (a query that finds it full gets SERVFAIL at once).
fn serve_udp(socket: &UdpSocket, shared: &Shared, queue: &Sender<Job>) {
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(512);
    loop {
        let received = socket.recv_from(&mut buf);
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok((n, peer)) = received else {
            continue;
        };
        let query = &buf[..n];
        out.clear();
        shared.count_query(false);
        let now = match shared.answer(query, false, &mut out) {
            Decision::Answered => shared.local_reply(true, &out),
            Decision::Drop => shared.local_reply(false, &out),
            Decision::Forward => {
                let job = Job {
                    query: query.to_vec(),
                    reply: ReplyTo::Peer(peer),
                };
                shared.enqueue(queue, job, &mut out)
            }
        };
        if now {
            let _ = socket.send_to(&out, peer);
        }
    }
}

/// Accept TCP clients into the connection pool's queue; a client that finds the queue full is
/// closed at once.
fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let (queue, clients) = crossbeam_channel::bounded::<TcpStream>(TCP_QUEUE);
    let mut pool = Vec::new();
    for i in 0..TCP_WORKERS {
        let (shared, clients) = (shared.clone(), clients.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("dns-tcp-{i}"))
            .spawn(move || {
                crate::guard::guarded("dns-tcp-conn", || {
                    while let Ok(stream) = clients.recv() {
                        serve_tcp_connection(stream, &shared);
                    }
                });
            });
        match spawned {
            Ok(t) => pool.push(t),
            Err(e) => eprintln!("tapnet: DNS TCP thread: {e}"),
        }
    }
    loop {
        let accepted = listener.accept();
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        match accepted {
            Ok((stream, _)) => {
                if queue.try_send(stream).is_err() {
                    shared.shed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Out of file descriptors, say: try again a little later.
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    drop(queue);
    for t in pool {
        let _ = t.join();
    }
}

/// Serve one TCP client: queries one after another until it closes, goes quiet for
/// `TCP_IDLE`, or has asked `TCP_MAX_QUERIES` (a pool thread is not anyone's for long).
fn serve_tcp_connection(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(TCP_IDLE));
    let _ = stream.set_write_timeout(Some(TCP_IDLE));
    let mut query = Vec::new();
    let mut out = Vec::with_capacity(512);
    for _ in 0..TCP_MAX_QUERIES {
        if !matches!(dns::read_tcp_message(&mut stream, &mut query), Ok(true)) {
            return;
        }
        out.clear();
        shared.count_query(true);
        let answered = match shared.answer(&query, true, &mut out) {
            Decision::Answered => shared.local_reply(true, &out),
            Decision::Drop => shared.local_reply(false, &out),
            Decision::Forward => shared.forward(&query, true, &mut out),
        };
        if !answered || dns::write_tcp_message(&mut stream, &out).is_err() {
            return;
        }
    }
}
