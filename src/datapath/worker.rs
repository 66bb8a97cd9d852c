//! One datapath thread: a mio poll loop over the TAP ports it owns. It forwards to any port of the
//! switch by writing to that port's fd directly, so no frame ever crosses a thread boundary.
//!
//! Every worker keeps its own copy of the port table and of each network's member list, updated
//! by commands from the control plane: the hot path reads them without any lock.

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
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
use super::frame::{self, MAX_FRAME_LEN, VNET_HDR_LEN};
use super::network::NetworkDp;
use super::port::{NetId, Port};
use super::security;
use super::switch::{Egress, learn_and_decide};
use super::timer::Timer;
use crate::offload::Segmenter;

pub const WAKER: Token = Token(usize::MAX);
/// The timer of delayed frames.
const TIMER: Token = Token(usize::MAX - 1);
/// Frames read from one port before the worker turns to the next ready port.
const BATCH: usize = 64;

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
    Stop,
}

struct NetView {
    net: Arc<NetworkDp>,
    members: Vec<Arc<Port>>,
    captures: Vec<Arc<CaptureSink>>,
}

pub struct Worker {
    index: usize,
    poll: Poll,
    commands: Receiver<Command>,
    clock: Arc<Clock>,
    ports: Vec<Option<Arc<Port>>>,
    networks: Vec<Option<NetView>>,
    ready: VecDeque<PortId>,
    queued: Vec<bool>,
    buf: Box<[u8]>,
    /// Cuts super-frames into wire-size frames for captures.
    segmenter: Segmenter,
    /// Frames held by link impairments until their deadline.
    delayed: DelayQueue,
    /// Wakes the poll at the next deadline; without it, the poll timeout does (1 ms steps).
    timer: Option<Timer>,
}

fn slot<T: Default>(v: &mut Vec<T>, i: usize) -> &mut T {
    if v.len() <= i {
        v.resize_with(i + 1, T::default);
    }
    &mut v[i]
}

impl Worker {
    pub fn new(index: usize, poll: Poll, commands: Receiver<Command>, clock: Arc<Clock>) -> Self {
        let timer = Timer::new().ok().filter(|t| {
            poll.registry()
                .register(&mut SourceFd(&t.raw_fd()), TIMER, Interest::READABLE)
                .is_ok()
        });
        Worker {
            index,
            poll,
            commands,
            clock,
            ports: Vec::new(),
            networks: Vec::new(),
            ready: VecDeque::with_capacity(256),
            queued: Vec::new(),
            buf: vec![0u8; MAX_FRAME_LEN].into_boxed_slice(),
            segmenter: Segmenter::new(),
            delayed: DelayQueue::default(),
            timer,
        }
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let next = self.delayed.next_deadline();
            let timeout = if !self.ready.is_empty() {
                Some(Duration::ZERO)
            } else if let Some(timer) = self.timer.as_mut() {
                if let Some(at) = next {
                    timer.arm(at);
                }
                None
            } else {
                next.map(|at| at.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tapnet: datapath worker {}: poll failed: {e}", self.index);
                return;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    if !self.handle_commands() {
                        return;
                    }
                } else if event.token() == TIMER {
                    if let Some(timer) = self.timer.as_mut() {
                        timer.fired();
                    }
                } else {
                    self.mark_ready(event.token().0 as PortId);
                }
            }
            self.service_ready_ports();
            if !self.delayed.is_empty() {
                self.release_delayed();
            }
        }
    }

    /// Send (or switch) the held frames whose time has come.
    fn release_delayed(&mut self) {
        let now = Instant::now();
        let clock_now = self.clock.now_secs();
        while let Some(d) = self.delayed.pop_due(now) {
            match d.due {
                Due::Send => {
                    d.port.send(&d.frame);
                }
                Due::Forward => {
                    if let Some(Some(view)) = self.networks.get(d.port.network as usize) {
                        forward(
                            &self.ports,
                            view,
                            &d.port,
                            &d.frame,
                            clock_now,
                            &mut self.segmenter,
                            &mut self.delayed,
                            false,
                        );
                    }
                }
            }
            self.delayed.recycle(d.frame);
        }
    }

    fn mark_ready(&mut self, id: PortId) {
        let queued = slot(&mut self.queued, id as usize);
        if !*queued {
            *queued = true;
            self.ready.push_back(id);
        }
    }

    /// One round: at most BATCH frames from each port that was ready when the round began.
    /// A port with more waiting goes to the back of the queue, so a busy port cannot starve
    /// the others.
    fn service_ready_ports(&mut self) {
        let now = self.clock.now_secs();
        for _ in 0..self.ready.len() {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(port) = self.ports.get(id as usize).cloned().flatten() else {
                *slot(&mut self.queued, id as usize) = false;
                continue;
            };
            if self.drain(&port, now) {
                self.ready.push_back(id);
            } else {
                *slot(&mut self.queued, id as usize) = false;
            }
        }
    }

    /// Forward up to BATCH frames from `port`; true if it may have more.
    fn drain(&mut self, port: &Arc<Port>, now: u32) -> bool {
        let Some(view) = self
            .networks
            .get(port.network as usize)
            .and_then(Option::as_ref)
        else {
            return false;
        };
        for _ in 0..BATCH {
            let len = match port.recv(&mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("tapnet: read from port {} failed: {e}", port.label);
                    return false;
                }
            };
            forward(
                &self.ports,
                view,
                port,
                &self.buf[..len],
                now,
                &mut self.segmenter,
                &mut self.delayed,
                true,
            );
        }
        true
    }

    fn handle_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match cmd {
                Command::AddNetwork(net) => {
                    let id = net.id as usize;
                    *slot(&mut self.networks, id) = Some(NetView {
                        net,
                        members: Vec::new(),
                        captures: Vec::new(),
                    });
                }
                Command::RemoveNetwork(id) => {
                    *slot(&mut self.networks, id as usize) = None;
                }
                Command::AddPort { port, owner } => self.add_port(port, owner),
                Command::RemovePort { id, done } => {
                    self.remove_port(id);
                    let _ = done.send(());
                }
                Command::AddCapture { sink, done } => {
                    if let Some(Some(view)) = self.networks.get_mut(sink.network as usize) {
                        view.captures.push(sink);
                    }
                    let _ = done.send(());
                }
                Command::RemoveCapture { network, id, done } => {
                    if let Some(Some(view)) = self.networks.get_mut(network as usize) {
                        view.captures.retain(|c| c.id != id);
                    }
                    let _ = done.send(());
                }
                Command::Stop => return false,
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
        if owner == self.index {
            let fd: RawFd = port.raw_fd();
            if let Err(e) = self.poll.registry().register(
                &mut SourceFd(&fd),
                Token(id as usize),
                Interest::READABLE,
            ) {
                eprintln!("tapnet: cannot poll port {}: {e}", port.label);
            }
            // Frames may have queued before registration: look once without waiting for an edge.
            self.mark_ready(id);
        }
    }

    fn remove_port(&mut self, id: PortId) {
        let Some(port) = slot(&mut self.ports, id as usize).take() else {
            return;
        };
        self.delayed.purge(id);
        let fd = port.raw_fd();
        // Only the owner registered it; for the others this fails harmlessly.
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if let Some(Some(view)) = self.networks.get_mut(port.network as usize) {
            view.members.retain(|p| p.id != id);
        }
    }
}

/// Switch one frame (virtio-net header included) that arrived on `ingress`. `shape_ingress`
/// is false for a frame the ingress link already held (`--both`).
#[allow(clippy::too_many_arguments)]
fn forward(
    ports: &[Option<Arc<Port>>],
    view: &NetView,
    ingress: &Arc<Port>,
    frame: &[u8],
    now: u32,
    segmenter: &mut Segmenter,
    delayed: &mut DelayQueue,
    shape_ingress: bool,
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
        && security::check(policy, frame, &info).is_err()
    {
        ingress.counters.rx_spoofed();
        return;
    }
    ingress.counters.rx(frame.len() - VNET_HDR_LEN);
    let (egress, learned) = learn_and_decide(&view.net.fdb, &info, ingress.id, now);
    if matches!(learned, Learned::PortLimit | Learned::Full) {
        ingress.counters.learn_refused();
    }
    if !view.captures.is_empty() {
        capture(view, ingress.id, egress, frame, segmenter);
    }
    match egress {
        Egress::Unicast(out) => match ports.get(out as usize).and_then(Option::as_ref) {
            Some(port) if port.network == ingress.network => {
                egress::send(port, ingress.id, frame, delayed);
            }
            // The station's port went away between learning and now: fall back to flooding.
            _ => flood(view, ingress, frame, delayed),
        },
        Egress::Flood => flood(view, ingress, frame, delayed),
        Egress::Filter => ingress.counters.rx_filtered(),
    }
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

fn flood(view: &NetView, ingress: &Port, frame: &[u8], delayed: &mut DelayQueue) {
    for port in &view.members {
        if port.id != ingress.id {
            egress::send(port, ingress.id, frame, delayed);
        }
    }
}
