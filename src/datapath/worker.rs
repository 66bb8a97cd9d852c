//! One datapath thread: a poll loop over its queue of every multi-queue TAP port, and over the
//! single-queue ports it owns. It forwards to any port of the switch by writing to that port
//! through its own queue, so no frame ever crosses a thread boundary, and the kernel puts the
//! reply on the same queue (tun's flow table): a request and its reply stay on one worker.
//!
//! Ports are polled level-triggered: `epoll_wait` says which queues hold frames, so a port that
//! receives lone frames (a ping, a request) is read once per frame, with no read that returns
//! `EAGAIN`; a port reported in consecutive rounds is busy and is read in batches.
//!
//! Every worker keeps its own copy of the port table and of each network's member list, updated
//! by commands from the control plane: the hot path reads them without any lock.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::capture::CaptureSink;
use super::clock::Clock;
use super::delay::{DelayQueue, Due};
use super::egress;
use super::fdb::{Learned, PortId};
use super::frame;
use super::network::NetworkDp;
use super::overlay_rx::{SwitchCtx, VtepSockets};
use super::policy::{self, PolicyTable};
use super::port::{NetId, Port};
use super::security;
use super::spin::Spin;
use super::switch::{Egress, learn_and_decide};
use super::timer::Timer;
use crate::offload::Segmenter;
use crate::wire::{MAX_FRAME_LEN, VNET_HDR_LEN};

pub const WAKER: Token = Token(usize::MAX);
/// The timer of delayed frames.
pub(super) const TIMER: Token = Token(usize::MAX - 1);
/// Frames read from a busy port before the worker turns to the next ready port.
pub(super) const BATCH: usize = 64;

pub enum Command {
    AddNetwork(Arc<NetworkDp>),
    RemoveNetwork(NetId),
    AddPort {
        port: Arc<Port>,
        owner: usize,
    },
    RemovePort {
        id: PortId,
        done: Sender<()>,
    },
    AddCapture {
        sink: Arc<CaptureSink>,
        done: Sender<()>,
    },
    RemoveCapture {
        network: NetId,
        id: u64,
        done: Sender<()>,
    },
    /// Poll `socket`, this worker's of a VTEP's receiving group.
    AddVtep {
        vtep: Arc<super::overlay_rx::VtepRxShared>,
        socket: std::net::UdpSocket,
    },
    /// Close VTEP `id`'s socket.
    RemoveVtep {
        id: u64,
        done: Sender<()>,
    },
    /// Swap in a network's policy (`None`: no policy).
    SetPolicy {
        network: NetId,
        table: Option<Arc<PolicyTable>>,
        done: Sender<()>,
    },
    Stop,
}

pub(super) struct NetView {
    pub(super) net: Arc<NetworkDp>,
    pub(super) members: Vec<Arc<Port>>,
    pub(super) captures: Vec<Arc<CaptureSink>>,
    pub(super) policy: Option<Arc<PolicyTable>>,
}

/// Frames one worker has read, for `tapnet info`: on a cache line of its own, so the workers'
/// relaxed increments never contend.
#[derive(Default)]
#[repr(align(64))]
pub struct FramesRead(pub std::sync::atomic::AtomicU64);

pub struct Worker {
    index: usize,
    frames_read: Arc<FramesRead>,
    poll: Poll,
    commands: Receiver<Command>,
    clock: Arc<Clock>,
    ports: Vec<Option<Arc<Port>>>,
    networks: Vec<Option<NetView>>,
    /// The ports that queue what this worker sends them (TX rings of `--iface` ports, VTEP
    /// ports): sent at the end of each poll round, one system call per port and batch.
    rings: Vec<Arc<Port>>,
    /// Poll round in which each port was last ready: ready in consecutive rounds means busy.
    last_ready: Vec<u64>,
    round: u64,
    spin: Spin,
    buf: Box<[u8]>,
    /// Cuts super-frames into wire-size frames for captures.
    segmenter: Segmenter,
    /// Frames held by link impairments until their deadline.
    delayed: DelayQueue,
    /// Wakes the poll at the next deadline; without it, the poll timeout does (1 ms steps).
    timer: Option<Timer>,
    /// This worker's sockets of the VTEPs' receiving groups.
    vteps: VtepSockets,
}

pub(super) fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

impl Worker {
    /// `spin` bounds the busy poll before sleeping (see `spin.rs`); zero disables it.
    pub fn new(
        index: usize,
        poll: Poll,
        commands: Receiver<Command>,
        clock: Arc<Clock>,
        spin: Duration,
        frames_read: Arc<FramesRead>,
    ) -> Self {
        let timer = delay_timer(&poll);
        Worker {
            index,
            frames_read,
            poll,
            commands,
            clock,
            ports: Vec::new(),
            networks: Vec::new(),
            rings: Vec::new(),
            last_ready: Vec::new(),
            round: 0,
            spin: Spin::new(spin),
            buf: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            segmenter: Segmenter::new(),
            delayed: DelayQueue::default(),
            timer,
            vteps: VtepSockets::default(),
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut forwarded = false;
        loop {
            let timeout = sleep_timeout(&mut self.timer, &self.delayed);
            events.clear();
            if forwarded && timeout != Some(Duration::ZERO) {
                self.spin.spin_poll(&mut self.poll, &mut events);
            }
            if events.is_empty() {
                let slept_at = Instant::now();
                if let Err(e) = self.poll.poll(&mut events, timeout) {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    eprintln!("tapnet: datapath worker {}: poll failed: {e}", self.index);
                    return;
                }
                if forwarded && !events.is_empty() {
                    self.spin.slept(slept_at.elapsed());
                }
            }
            self.round += 1;
            let now = self.clock.now_secs();
            forwarded = false;
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.handle_commands() {
                        return;
                    }
                } else if event.token() == TIMER {
                    if let Some(timer) = self.timer.as_mut() {
                        timer.fired();
                    }
                } else if let Some(slot) = VtepSockets::slot_of(event.token().0) {
                    forwarded |= self.receive_overlay(slot, now);
                } else {
                    forwarded |= self.service(event.token().0 as PortId, now);
                }
            }
            if !self.delayed.is_empty() {
                self.release_delayed();
            }
            for port in &self.rings {
                port.flush(self.index);
            }
        }
    }

    /// Send (or switch) the held frames whose time has come.
    fn release_delayed(&mut self) {
        release_due(
            self.index,
            self.clock.now_secs(),
            &self.ports,
            &self.networks,
            &mut self.segmenter,
            &mut self.delayed,
        );
    }

    /// Forward frames from port `id`, which the poll reported ready: one frame if it was not
    /// ready in the previous round too (a lone frame: the poll reports it again if more
    /// wait), else up to BATCH. True if anything was forwarded.
    fn service(&mut self, id: PortId, now: u32) -> bool {
        let Some(port) = self.ports.get(id as usize).cloned().flatten() else {
            return false;
        };
        let last = slot(&mut self.last_ready, id as usize);
        let budget = if *last + 1 == self.round { BATCH } else { 1 };
        *last = self.round;
        let Some(view) = self
            .networks
            .get(port.network as usize)
            .and_then(Option::as_ref)
        else {
            // Not switchable (its network is being removed): drop a frame, or the level-
            // triggered poll would report the port again at once, for ever.
            if let Err(e) = port.recv(self.index, &mut self.buf) {
                self.read_failed(&port, &e);
            }
            return false;
        };
        let mut read = 0;
        for _ in 0..budget {
            let len = match port.recv(self.index, &mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.read_failed(&port, &e);
                    break;
                }
            };
            forward(
                &self.ports,
                view,
                &port,
                &self.buf[..len],
                now,
                &mut self.segmenter,
                &mut self.delayed,
                true,
                &mut Direct(self.index),
            );
            read += 1;
        }
        self.frames_read
            .0
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        read > 0
    }

    /// Switch what VTEP socket `slot` received. True if anything was forwarded.
    fn receive_overlay(&mut self, slot: usize, now: u32) -> bool {
        let read = self.vteps.receive(
            slot,
            &mut SwitchCtx {
                ports: &self.ports,
                networks: &self.networks,
                now,
                segmenter: &mut self.segmenter,
                delayed: &mut self.delayed,
                out: &mut Direct(self.index),
            },
        );
        self.frames_read
            .0
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        read > 0
    }

    /// A read from `port` failed. An empty queue is the normal end of a batch; anything else
    /// (the TAP's device was deleted in its sandbox: EBADFD) will fail again, and the
    /// level-triggered poll would report the fd at once, for ever: stop polling it here. The
    /// port stays in the tables until the control plane removes it.
    fn read_failed(&self, port: &Port, e: &io::Error) {
        read_failed(&self.poll, self.index, port, e);
    }

    fn handle_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match apply_to_views(&mut self.networks, cmd) {
                None => {}
                Some(Command::AddPort { port, owner }) => self.add_port(port, owner),
                Some(Command::RemovePort { id, done }) => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                Some(Command::AddVtep { vtep, socket }) => self.vteps.add(&self.poll, vtep, socket),
                Some(Command::RemoveVtep { id, done }) => {
                    self.vteps.remove(&self.poll, id);
                    let _ = done.send(());
                }
                Some(Command::Stop) => return false,
                Some(_) => {}
            }
        }
        true
    }

    fn add_port(&mut self, port: Arc<Port>, owner: usize) {
        let id = port.id;
        if let Some(Some(view)) = self.networks.get_mut(port.network as usize) {
            view.members.push(port.clone());
        }
        *slot(&mut self.ports, id as usize) = Some(port.clone());
        *slot(&mut self.last_ready, id as usize) = 0;
        if port.queues_sends() {
            self.rings.push(port.clone());
        }
        if port.polled_by(self.index, owner)
            && let Err(e) = watch(&self.poll, port.poll_fd(self.index), id)
        {
            eprintln!("tapnet: cannot poll port {}: {e}", port.label);
        }
    }

    fn remove_port(&mut self, id: PortId) {
        let Some(port) = slot(&mut self.ports, id as usize).take() else {
            return;
        };
        self.delayed.purge(id);
        self.rings.retain(|p| p.id != id);
        // A worker that does not poll the port fails this harmlessly.
        unwatch(&self.poll, port.poll_fd(self.index));
        if let Some(Some(view)) = self.networks.get_mut(port.network as usize) {
            view.members.retain(|p| p.id != id);
        }
    }
}

/// The timerfd that wakes a worker's `poll` when a held frame is due; without one (no timerfd),
/// the poll's timeout does, in 1 ms steps.
pub(super) fn delay_timer(poll: &Poll) -> Option<Timer> {
    Timer::new().ok().filter(|t| {
        poll.registry()
            .register(&mut SourceFd(&t.raw_fd()), TIMER, Interest::READABLE)
            .is_ok()
    })
}

/// How long a worker's next wait may sleep: until the next held frame is due (armed on the
/// timer when there is one), or for ever.
pub(super) fn sleep_timeout(timer: &mut Option<Timer>, delayed: &DelayQueue) -> Option<Duration> {
    let next = delayed.next_deadline();
    match timer {
        Some(timer) => {
            if let Some(at) = next {
                timer.arm(at);
            }
            None
        }
        None => next.map(|at| at.saturating_duration_since(Instant::now())),
    }
}

/// Apply a command that changes only a worker's network views (networks, captures); give any
/// other back.
pub(super) fn apply_to_views(networks: &mut Vec<Option<NetView>>, cmd: Command) -> Option<Command> {
    match cmd {
        Command::AddNetwork(net) => {
            let id = net.id as usize;
            // A network re-added under a reused id starts with the policy last pushed to it.
            let policy = net.policy();
            *slot(networks, id) = Some(NetView {
                net,
                members: Vec::new(),
                captures: Vec::new(),
                policy,
            });
        }
        Command::RemoveNetwork(id) => *slot(networks, id as usize) = None,
        Command::AddCapture { sink, done } => {
            if let Some(Some(view)) = networks.get_mut(sink.network as usize) {
                view.captures.push(sink);
            }
            let _ = done.send(());
        }
        Command::RemoveCapture { network, id, done } => {
            if let Some(Some(view)) = networks.get_mut(network as usize) {
                view.captures.retain(|c| c.id != id);
            }
            let _ = done.send(());
        }
        Command::SetPolicy {
            network,
            table,
            done,
        } => {
            if let Some(Some(view)) = networks.get_mut(network as usize) {
                view.policy = table;
            }
            let _ = done.send(());
        }
        other => return Some(other),
    }
    None
}

/// Send (or switch, `--both`) the held frames whose time has come, through worker `index`'s
/// queues.
pub(super) fn release_due(
    index: usize,
    clock_now: u32,
    ports: &[Option<Arc<Port>>],
    networks: &[Option<NetView>],
    segmenter: &mut Segmenter,
    delayed: &mut DelayQueue,
) {
    let now = Instant::now();
    while let Some(d) = delayed.pop_due(now) {
        match d.due {
            Due::Send => {
                d.port.send(index, &d.frame);
            }
            Due::Forward => {
                if let Some(Some(view)) = networks.get(d.port.network as usize) {
                    forward(
                        ports,
                        view,
                        &d.port,
                        &d.frame,
                        clock_now,
                        segmenter,
                        delayed,
                        false,
                        &mut Direct(index),
                    );
                }
            }
        }
        delayed.recycle(d.frame);
    }
}

/// Poll `fd` level-triggered under `id`'s token. mio registers edge-triggered only, so this
/// talks to its epoll instance directly; mio reads the token back from the event as usual.
pub(super) fn watch(poll: &Poll, fd: RawFd, id: PortId) -> io::Result<()> {
    watch_token(poll, fd, id as usize)
}

/// `watch` under any token.
pub(super) fn watch_token(poll: &Poll, fd: RawFd, token: usize) -> io::Result<()> {
    let mut event = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token as u64,
    };
    // SAFETY: both fds are open; event is a valid epoll_event for the call's duration.
    let r = unsafe { libc::epoll_ctl(poll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A read from `port`, polled by worker `index` in `poll`, failed: see `Worker::read_failed`.
pub(super) fn read_failed(poll: &Poll, index: usize, port: &Port, e: &io::Error) {
    if e.kind() == io::ErrorKind::WouldBlock {
        return;
    }
    eprintln!(
        "tapnet: read from port {} failed: {e}; datapath worker {index} stops polling it",
        port.label
    );
    unwatch(poll, port.poll_fd(index));
}

pub(super) fn unwatch(poll: &Poll, fd: RawFd) {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL; an unwatched fd gives ENOENT.
    unsafe {
        libc::epoll_ctl(
            poll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

/// Where `forward` hands a switched frame for one output port: the epoll worker writes it at
/// once (`Direct`); the io_uring worker queues it on its ring.
pub(super) trait Output {
    fn send(&mut self, port: &Arc<Port>, from: PortId, frame: &[u8], delayed: &mut DelayQueue);
}

/// One `write` per output port, through worker `.0`'s queue of it (and its link).
pub(super) struct Direct(pub usize);

impl Output for Direct {
    #[inline]
    fn send(&mut self, port: &Arc<Port>, from: PortId, frame: &[u8], delayed: &mut DelayQueue) {
        egress::send(port, self.0, from, frame, delayed);
    }
}

/// Switch one frame (virtio-net header included) that arrived on `ingress`. `shape_ingress`
/// is false for a frame the ingress link already held (`--both`).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    ports: &[Option<Arc<Port>>],
    view: &NetView,
    ingress: &Arc<Port>,
    frame: &[u8],
    now: u32,
    segmenter: &mut Segmenter,
    delayed: &mut DelayQueue,
    shape_ingress: bool,
    out: &mut impl Output,
) {
    if shape_ingress
        && ingress.link.ingress_active()
        && egress::hold_ingress(ingress, frame, delayed)
    {
        return;
    }
    let info = match frame::parse(frame, view.net.mtu()) {
        Ok(info) => info,
        Err(reason) => {
            ingress.counters.rx_drop(reason);
            return;
        }
    };
    if let Some(policy) = &ingress.policy
        && let Err(why) = security::check(policy, frame, &info)
    {
        ingress.counters.rx_spoofed(why);
        return;
    }
    ingress.counters.rx(frame.len() - VNET_HDR_LEN);
    let (egress, learned) = learn_and_decide(&view.net.fdb, &info, ingress.id, now);
    if matches!(learned, Learned::PortLimit | Learned::Full) {
        ingress.counters.learn_refused();
    }
    let mut isolate = false;
    if let Some(table) = view.policy.as_deref()
        && !admit(
            table,
            view,
            ports,
            ingress,
            egress,
            frame,
            now,
            &mut isolate,
        )
    {
        ingress.counters.rx_policy();
        return;
    }
    if !view.captures.is_empty() {
        capture(view, ingress.id, egress, frame, segmenter);
    }
    match egress {
        Egress::Unicast(to) => match ports.get(to as usize).and_then(Option::as_ref) {
            Some(port) if port.network == ingress.network => {
                out.send(port, ingress.id, frame, delayed);
            }
            // The station's port went away between learning and now: fall back to flooding.
            _ => flood(view, ingress, frame, delayed, out, isolate),
        },
        Egress::Flood => flood(view, ingress, frame, delayed, out, isolate),
        Egress::Filter => ingress.counters.rx_filtered(),
    }
}

/// The network's policy on a switched frame: false to drop it (counted). `isolate` is set when
/// a flood from this port may reach service ports only (`icc=false`).
#[allow(clippy::too_many_arguments)]
#[inline]
fn admit(
    table: &PolicyTable,
    view: &NetView,
    ports: &[Option<Arc<Port>>],
    ingress: &Port,
    egress: Egress,
    frame: &[u8],
    now: u32,
    isolate: &mut bool,
) -> bool {
    let net = &view.net;
    let eth = &frame[VNET_HDR_LEN..];
    let Some(conns) = net.conns.get() else {
        // No table: icc only.
        if ingress.service || !table.isolates() {
            return true;
        }
        *isolate = true;
        return !to_station(ports, egress, net);
    };
    if ingress.service {
        policy::track_service(table, conns, eth, now);
        return true;
    }
    if table.isolates() {
        *isolate = true;
        if to_station(ports, egress, net) {
            return false;
        }
    }
    policy::check_station(table, conns, &net.policy_drops, eth, now).passes()
}

/// Is `egress` a unicast to a station's port? Counts the `icc` drop when it is.
#[inline]
fn to_station(ports: &[Option<Arc<Port>>], egress: Egress, net: &NetworkDp) -> bool {
    let Egress::Unicast(to) = egress else {
        return false;
    };
    let station = ports
        .get(to as usize)
        .and_then(Option::as_ref)
        .is_some_and(|p| !p.service);
    if station {
        net.policy_drops
            .icc
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    station
}

/// Hand the frame to every interested capture as it would look on a wire: segmented, with
/// complete checksums. A frame the segmenter refuses is captured as it came.
fn capture(
    view: &NetView,
    ingress: PortId,
    egress: Egress,
    frame: &[u8],
    segmenter: &mut Segmenter,
) {
    for sink in view.captures.iter().filter(|s| s.wants(ingress, egress)) {
        let mut emit = |segment: &[u8]| sink.push(&segment[VNET_HDR_LEN..], ingress, egress);
        if segmenter.segment(frame, &mut emit).is_err() {
            sink.push(&frame[VNET_HDR_LEN..], ingress, egress);
        }
    }
}

/// Send to every other member; with `isolate` (`icc=false`, from a station) to service ports
/// only.
fn flood(
    view: &NetView,
    ingress: &Port,
    frame: &[u8],
    delayed: &mut DelayQueue,
    out: &mut impl Output,
    isolate: bool,
) {
    for port in &view.members {
        if port.id != ingress.id && (!isolate || port.service) {
            out.send(port, ingress.id, frame, delayed);
        }
    }
}
