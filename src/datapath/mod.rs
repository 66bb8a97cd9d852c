//! The datapath: worker threads that move frames between TAP ports, and the handle the control
//! plane drives them with. See docs/ARCHITECTURE.md for the threads and the life of a frame.

pub(crate) mod capture;
pub(crate) mod clock;
pub mod coalesce;
pub mod conntrack;
pub mod delay;
pub mod egress;
pub mod fdb;
pub mod frame;
pub mod impair;
pub mod inbox;
pub(crate) mod network;
pub mod overlay_net;
pub(crate) mod overlay_rx;
pub mod overlay_tx;
pub mod packet_port;
pub mod packet_ring;
pub(crate) mod pcap;
pub mod policy;
pub mod port;
pub mod security;
pub(crate) mod socket_thread;
pub(crate) mod spin;
pub mod stream_port;
pub mod switch;
pub(crate) mod timer;
pub mod trace;
pub(crate) mod uring;
pub(crate) mod uring_worker;
pub mod vhost_user_port;
pub mod vhost_user_relay;
pub mod vtep;
pub mod vxlan;
pub(crate) mod worker;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Sender;
use mio::{Poll, Waker};

use crate::error::{Context, Error, Result};
use capture::CaptureSink;
use clock::Clock;
use fdb::{FdbEntry, PortId};
use network::NetworkDp;
use port::{NetId, Port, PortStats};
use security::PortPolicy;
pub use uring_worker::IoMode;
use uring_worker::UringWorker;
use worker::{Command, WAKER, Worker};

/// How the datapath runs (`tapnet daemon` flags).
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (`--datapath-threads`).
    pub threads: usize,
    /// Sandbox TAPs get one queue per worker, and every worker polls its own queue of each
    /// (`--tap-queues per-thread`).
    pub multiqueue: bool,
    /// The longest busy poll of a worker before it sleeps (`--poll-spin`; zero: never).
    pub spin: Duration,
    /// How the workers do TAP I/O (`--datapath-io`), resolved against the kernel.
    pub io: IoMode,
}

struct WorkerHandle {
    commands: Sender<Command>,
    frames_read: Arc<worker::FramesRead>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
    owned_ports: usize,
}

#[derive(Default)]
struct Registry {
    networks: HashMap<NetId, Arc<NetworkDp>>,
    ports: HashMap<PortId, (Arc<Port>, usize)>,
    free_port_ids: Vec<PortId>,
    next_port_id: PortId,
    free_net_ids: Vec<NetId>,
    next_net_id: NetId,
}

/// A row of `tapnet stats`.
#[derive(Clone, Debug)]
pub struct PortReport {
    pub id: PortId,
    pub network: NetId,
    pub label: String,
    pub stats: PortStats,
    /// What the port may send as (`None`: anything).
    pub policy: Option<security::PortPolicy>,
}

/// A network's policy as the datapath holds it, for `policy ls`, stats and metrics.
pub struct PolicyReport {
    pub table: Option<Arc<policy::PolicyTable>>,
    pub drops: policy::PolicyDrops,
    /// Live flows in the connection table, and its bound (0: no table yet).
    pub flows: usize,
    pub max_flows: usize,
}

pub struct Datapath {
    workers: Mutex<Vec<WorkerHandle>>,
    /// Queues asked of every sandbox TAP: one per worker, or 1 (`--tap-queues single`).
    tap_queues: usize,
    io: IoMode,
    /// `--poll-spin`, for the service threads beside the workers (the gateways) too.
    spin: Duration,
    /// Set once a TAP came with fewer queues than asked (the kernel refused multi-queue).
    warned_single_queue: AtomicBool,
    registry: Mutex<Registry>,
    clock: Arc<Clock>,
    stopping: Arc<AtomicBool>,
    housekeeper: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    crate::guard::lock_or_stop(m, "the datapath's port table")
}

impl Datapath {
    /// Start the poll loops and the aging thread.
    pub fn start(options: &Options) -> Result<Arc<Datapath>> {
        let clock = Arc::new(Clock::new());
        let mut workers = Vec::new();
        for index in 0..options.threads.max(1) {
            let poll = Poll::new().context(|| "create datapath poll".into())?;
            let waker =
                Waker::new(poll.registry(), WAKER).context(|| "create datapath waker".into())?;
            let (tx, rx) = crossbeam_channel::unbounded();
            let frames_read = Arc::new(worker::FramesRead::default());
            let run: Box<dyn FnOnce() + Send> = match options.io {
                IoMode::Epoll => {
                    let worker = Worker::new(
                        index,
                        poll,
                        rx,
                        clock.clone(),
                        options.spin,
                        frames_read.clone(),
                    );
                    Box::new(move || worker.run())
                }
                IoMode::Uring(support) => {
                    let worker = UringWorker::new(
                        index,
                        poll,
                        rx,
                        clock.clone(),
                        support,
                        frames_read.clone(),
                        options.spin,
                    )
                    .context(|| {
                        format!("create datapath worker {index}'s io_uring (`--datapath-io epoll` does without)")
                    })?;
                    Box::new(move || worker.run())
                }
            };
            let thread = std::thread::Builder::new()
                .name(format!("datapath-{index}"))
                .spawn(move || {
                    crate::guard::guarded(&format!("datapath-{index}"), run);
                })
                .context(|| "spawn datapath thread".into())?;
            workers.push(WorkerHandle {
                commands: tx,
                frames_read,
                waker,
                thread: Some(thread),
                owned_ports: 0,
            });
        }
        // A worker beyond the TAP's queues polls none of them (`Port::polled_by`).
        let tap_queues = if options.multiqueue {
            workers.len().min(crate::wire::vnet::MAX_TAP_QUEUES)
        } else {
            1
        };
        let dp = Arc::new(Datapath {
            workers: Mutex::new(workers),
            tap_queues,
            io: options.io,
            spin: options.spin,
            warned_single_queue: AtomicBool::new(false),
            registry: Mutex::new(Registry::default()),
            clock,
            stopping: Arc::new(AtomicBool::new(false)),
            housekeeper: Mutex::new(None),
        });
        let weak = Arc::downgrade(&dp);
        let stopping = dp.stopping.clone();
        let housekeeper = std::thread::Builder::new()
            .name("fdb-aging".into())
            .spawn(move || {
                crate::guard::guarded("fdb-aging", || {
                    while !stopping.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(500));
                        match weak.upgrade() {
                            Some(dp) => dp.expire_fdbs(),
                            None => return,
                        }
                    }
                });
            })
            .context(|| "spawn aging thread".into())?;
        *lock(&dp.housekeeper) = Some(housekeeper);
        Ok(dp)
    }

    pub fn threads(&self) -> usize {
        lock(&self.workers).len()
    }

    /// Frames each worker has read since the start, in worker order.
    pub fn frames_read(&self) -> Vec<u64> {
        lock(&self.workers)
            .iter()
            .map(|w| w.frames_read.0.load(Ordering::Relaxed))
            .collect()
    }

    /// How the workers do TAP I/O.
    pub fn io(&self) -> IoMode {
        self.io
    }

    /// The longest busy poll before a thread of the datapath sleeps (`--poll-spin`).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// How many queues a sandbox's TAP should have (see `netns::tap::open_tap_queues`).
    pub fn tap_queues(&self) -> usize {
        self.tap_queues
    }

    pub fn now_secs(&self) -> u32 {
        self.clock.now_secs()
    }

    fn broadcast(&self, make: impl Fn() -> Command) {
        for w in lock(&self.workers).iter() {
            if w.commands.send(make()).is_ok() {
                let _ = w.waker.wake();
            }
        }
    }

    fn expire_fdbs(&self) {
        let now = self.now_secs();
        let nets: Vec<_> = lock(&self.registry).networks.values().cloned().collect();
        for net in nets {
            net.fdb.expire(now);
        }
    }

    pub fn add_network(&self, name: &str, mtu: u32, aging_secs: u32) -> NetId {
        let net = {
            let mut reg = lock(&self.registry);
            let id = reg.free_net_ids.pop().unwrap_or_else(|| {
                reg.next_net_id += 1;
                reg.next_net_id - 1
            });
            let net = Arc::new(NetworkDp::new(id, name.to_string(), mtu, aging_secs));
            reg.networks.insert(id, net.clone());
            net
        };
        self.broadcast(|| Command::AddNetwork(net.clone()));
        net.id
    }

    /// Remove a network; its ports must be gone already.
    pub fn remove_network(&self, id: NetId) {
        {
            let mut reg = lock(&self.registry);
            if reg.networks.remove(&id).is_none() {
                return;
            }
            reg.free_net_ids.push(id);
        }
        self.broadcast(|| Command::RemoveNetwork(id));
    }

    pub fn network(&self, id: NetId) -> Option<Arc<NetworkDp>> {
        lock(&self.registry).networks.get(&id).cloned()
    }

    /// Wire a single-fd port (a TAP, a socketpair end) into network `net`. The least loaded
    /// worker polls it. With a `policy`, the port may only send as that station (port security).
    pub fn add_port(
        &self,
        net: NetId,
        label: String,
        fd: OwnedFd,
        policy: Option<PortPolicy>,
    ) -> Result<PortId> {
        self.insert_port(net, label, vec![fd], policy, false, |p| p)
    }

    /// Wire an `--iface` port into network `net`: `fd` its packet socket, polled as any port's,
    /// `ring` that socket's rings, through which the workers read and write its frames.
    pub fn add_ring_port(
        &self,
        net: NetId,
        label: String,
        fd: OwnedFd,
        ring: packet_ring::PacketRing,
        policy: Option<PortPolicy>,
    ) -> Result<PortId> {
        self.insert_port(net, label, vec![fd], policy, false, |p| p.with_ring(ring))
    }

    /// Wire a service port (the gateway's, the VTEP's socketpair end) into network `net`: it
    /// speaks for many stations (no port security), sandboxes reach it under `icc=false`, and
    /// the policy does not check its frames.
    pub fn add_service_port(&self, net: NetId, label: String, fd: OwnedFd) -> Result<PortId> {
        self.insert_port(net, label, vec![fd], None, true, |p| p)
    }

    /// A service port whose frames come in through `inbox` (a gateway's), while what the
    /// switch sends it is written to `fd`.
    pub fn add_inbox_port(
        &self,
        net: NetId,
        label: String,
        fd: OwnedFd,
        inbox: Arc<inbox::Inbox>,
    ) -> Result<PortId> {
        self.insert_port(net, label, vec![fd], None, true, |p| p.with_inbox(inbox))
    }

    /// Wire an overlay network's VTEP port into network `net`: a service port whose frames
    /// `overlay` encapsulates and sends, in the worker that switched them; `fd`, the switch end
    /// of a socketpair, brings the VTEP's own answers (proxy ARP and NDP) in.
    pub fn add_overlay_port(
        &self,
        net: NetId,
        label: String,
        fd: OwnedFd,
        overlay: Arc<overlay_net::OverlayNet>,
    ) -> Result<PortId> {
        self.insert_port(net, label, vec![fd], None, true, |p| {
            p.with_overlay(overlay)
        })
    }

    /// Hand each worker its socket of a VTEP's receiving group (`sockets`, one per worker, in
    /// worker order): each polls its own and switches what it receives.
    pub fn add_vtep(&self, vtep: Arc<overlay_rx::VtepRxShared>, sockets: Vec<std::net::UdpSocket>) {
        for (w, socket) in lock(&self.workers).iter().zip(sockets) {
            if w.commands
                .send(Command::AddVtep {
                    vtep: vtep.clone(),
                    socket,
                })
                .is_ok()
            {
                let _ = w.waker.wake();
            }
        }
    }

    /// Close VTEP `id`'s sockets; returns once no worker polls them.
    pub fn remove_vtep(&self, id: u64) {
        if !self.ask_all(|done| Command::RemoveVtep { id, done }) {
            eprintln!("tapnet: a datapath worker did not close VTEP {id}'s socket");
        }
    }

    /// Wire the host's interface (`host_access`, its TAP's queues) into network `net`: a service
    /// port as docker0's host side is (`icc=false` and rules leave the host and the sandboxes
    /// to each other), its frames checked by port security (`policy`) as a station's.
    pub fn add_host_port(
        &self,
        net: NetId,
        label: String,
        queues: Vec<OwnedFd>,
        policy: Option<PortPolicy>,
    ) -> Result<PortId> {
        self.insert_port(net, label, queues, policy, true, |p| p)
    }

    /// Wire a sandbox's TAP, opened with `tap_queues()` queues (one fd each), into network
    /// `net`. With as many queues as workers, each worker polls its own; otherwise the least
    /// loaded worker polls the first.
    pub fn add_port_queues(
        &self,
        net: NetId,
        label: String,
        queues: Vec<OwnedFd>,
        policy: Option<PortPolicy>,
    ) -> Result<PortId> {
        if queues.len() < self.tap_queues && !self.warned_single_queue.swap(true, Ordering::Relaxed)
        {
            eprintln!(
                "tapnet: TAP {label} has {} queue(s), not {}: the kernel refused multi-queue \
                 TAPs, so one worker polls each port",
                queues.len(),
                self.tap_queues
            );
        }
        self.insert_port(net, label, queues, policy, false, |p| p)
    }

    fn insert_port(
        &self,
        net: NetId,
        label: String,
        queues: Vec<OwnedFd>,
        policy: Option<PortPolicy>,
        service: bool,
        kind: impl FnOnce(Port) -> Port,
    ) -> Result<PortId> {
        if queues.is_empty() {
            return Err(Error::invalid(format!(
                "port {label} has no file descriptor"
            )));
        }
        let mut workers = lock(&self.workers);
        let mut reg = lock(&self.registry);
        if !reg.networks.contains_key(&net) {
            return Err(Error::invalid(format!("datapath has no network {net}")));
        }
        let id = reg.free_port_ids.pop().unwrap_or_else(|| {
            reg.next_port_id += 1;
            reg.next_port_id - 1
        });
        let owner = (0..workers.len())
            .min_by_key(|&i| workers[i].owned_ports)
            .unwrap_or(0);
        workers[owner].owned_ports += 1;
        let mut port = Port::new(id, net, label, queues, policy);
        port.service = service;
        let port = Arc::new(kind(port));
        reg.ports.insert(id, (port.clone(), owner));
        drop(reg);
        for w in workers.iter() {
            if w.commands
                .send(Command::AddPort {
                    port: port.clone(),
                    owner,
                })
                .is_ok()
            {
                let _ = w.waker.wake();
            }
        }
        Ok(id)
    }

    /// Unwire a port. Returns once no worker holds it any more, so the TAP closes on return
    /// (unless the caller kept the fd elsewhere).
    pub fn remove_port(&self, id: PortId) {
        let Some((port, owner)) = lock(&self.registry).ports.remove(&id) else {
            return;
        };
        if let Some(w) = lock(&self.workers).get_mut(owner) {
            w.owned_ports = w.owned_ports.saturating_sub(1);
        }
        // A test hook: `TAPNET_TEST_SLOW_RELEASE_MS` (read once) makes every release this
        // slow, as workers slow to ack would, so that a test can show the controller's lock is
        // not held meanwhile.
        static SLOW: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let slow = *SLOW.get_or_init(|| {
            std::env::var("TAPNET_TEST_SLOW_RELEASE_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map_or(0, |ms| ms.min(10_000))
        });
        if slow > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow));
        }
        if !self.ask_all(|done| Command::RemovePort { id, done }) {
            eprintln!(
                "tapnet: a datapath worker did not release port {}",
                port.label
            );
        }
        if let Some(net) = self.network(port.network) {
            net.fdb.flush_port(id);
        }
        let mut reg = lock(&self.registry);
        reg.free_port_ids.push(id);
    }

    /// Start copying a network's frames into `sink`; returns once every worker does, so a
    /// frame sent after the return is captured (the pcap header reaches the client after it).
    pub fn add_capture(&self, sink: Arc<CaptureSink>) {
        if !self.ask_all(|done| Command::AddCapture {
            sink: sink.clone(),
            done,
        }) {
            eprintln!("tapnet: a datapath worker did not take capture {}", sink.id);
        }
    }

    /// Stop a capture; returns once no worker writes into it any more.
    pub fn remove_capture(&self, network: NetId, id: u64) {
        self.ask_all(|done| Command::RemoveCapture { network, id, done });
    }

    /// Send every worker the command `make` builds and wait (5 s at most) until each has
    /// carried it out. False if one did not answer.
    fn ask_all(&self, make: impl Fn(Sender<()>) -> Command) -> bool {
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for w in lock(&self.workers).iter() {
            if w.commands.send(make(done_tx.clone())).is_ok() {
                let _ = w.waker.wake();
                asked += 1;
            }
        }
        (0..asked).all(|_| done_rx.recv_timeout(Duration::from_secs(5)).is_ok())
    }

    pub fn port_reports(&self) -> Vec<PortReport> {
        let reg = lock(&self.registry);
        let mut out: Vec<_> = reg
            .ports
            .values()
            .map(|(p, _)| PortReport {
                id: p.id,
                network: p.network,
                label: p.label.clone(),
                stats: p.stats(),
                policy: p.policy,
            })
            .collect();
        out.sort_by(|a, b| a.label.cmp(&b.label));
        out
    }

    pub fn port(&self, id: PortId) -> Option<Arc<Port>> {
        lock(&self.registry).ports.get(&id).map(|(p, _)| p.clone())
    }

    pub fn port_label(&self, id: PortId) -> Option<String> {
        lock(&self.registry)
            .ports
            .get(&id)
            .map(|(p, _)| p.label.clone())
    }

    pub fn fdb_entries(&self, net: NetId) -> Vec<FdbEntry> {
        match self.network(net) {
            Some(n) => n.fdb.entries(self.now_secs()),
            None => Vec::new(),
        }
    }

    /// Give network `net` the policy `spec` (rules resolved to prefixes): every worker takes
    /// the new table between two batches; rules of the same name keep their counters. Flows
    /// already admitted keep flowing unless `reset_flows`, which empties the connection table.
    pub fn set_policy(&self, net: NetId, spec: &policy::PolicySpec, reset_flows: bool) {
        let Some(network) = self.network(net) else {
            return;
        };
        let table = {
            let mut current = crate::guard::lock_or_stop(&network.policy, "a network's policy");
            let unchanged = match current.as_deref() {
                None => spec.is_open(),
                Some(t) => t.spec == *spec,
            };
            if unchanged {
                if reset_flows && let Some(conns) = network.conns.get() {
                    conns.flush();
                }
                return;
            }
            if spec.tracks() {
                network
                    .conns
                    .get_or_init(|| conntrack::ConnTable::new(spec.max_flows));
            }
            let table = (!spec.is_open())
                .then(|| Arc::new(policy::PolicyTable::build(spec, current.as_deref())));
            *current = table.clone();
            table
        };
        if reset_flows && let Some(conns) = network.conns.get() {
            conns.flush();
        }
        self.ask_all(|done| Command::SetPolicy {
            network: net,
            table: table.clone(),
            done,
        });
        // Flush again: a worker may have admitted a flow under the old rules meanwhile.
        if reset_flows && let Some(conns) = network.conns.get() {
            conns.flush();
        }
    }

    /// Network `net`'s policy state: its table, drops and live flows.
    pub fn policy_report(&self, net: NetId) -> Option<PolicyReport> {
        let network = self.network(net)?;
        Some(PolicyReport {
            table: network.policy(),
            drops: network.policy_drops.snapshot(),
            flows: network.conns.get().map_or(0, |c| c.live(self.now_secs())),
            max_flows: network.conns.get().map_or(0, |c| c.capacity()),
        })
    }

    /// Stop every worker and wait for them. Ports close as the workers drop them.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut workers = lock(&self.workers);
        for w in workers.iter() {
            let _ = w.commands.send(Command::Stop);
            let _ = w.waker.wake();
        }
        for w in workers.iter_mut() {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
        drop(workers);
        if let Some(t) = lock(&self.housekeeper).take() {
            let _ = t.join();
        }
        lock(&self.registry).ports.clear();
    }
}
