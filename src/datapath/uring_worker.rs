//! The datapath worker on io_uring (`daemon --datapath-io uring`, the default): the same port
//! tables, commands and switching as `worker.rs`, with TAP I/O through `uring::UringIo`. Frames
//! are read by multishot reads into the ring's provided buffers, and the writes of one round go
//! to the kernel together, in one `io_uring_enter` with the wait for the next frames.
//!
//! The worker's mio `Poll` still carries the waker and the delay timer; the ring polls its fd,
//! so the control plane drives this worker exactly as an epoll one.
//!
//! The switching is `worker::forward`'s; only its `Output` differs (`Ring`): a write queued on
//! the ring, counted in the output port's counters when it completes. Like the epoll worker, it
//! reads and writes its own queue of multi-queue TAPs. Frames to a port with active link
//! impairments and delayed frames take the plain path (`egress::send`).
//!
//! Ports with mmap'd packet rings (`--iface`) are read and written through their rings, not
//! the io_uring: their fds are in the mio poll (level-triggered, as in the epoll worker), which
//! the ring watches, and what was queued on their TX rings is sent at the end of each round.

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Poll};

use super::clock::Clock;
use super::delay::DelayQueue;
use super::egress;
use super::fdb::PortId;
use super::overlay_rx::{SwitchCtx, VtepSockets};
use super::port::Port;
use super::spin::Spin;
use super::timer::Timer;
use super::uring::{self, Frame, Support, Tx, UringIo};
use super::worker::{
    BATCH, Command, Direct, FramesRead, NetView, Output, TIMER, WAKER, apply_to_views, delay_timer,
    forward, read_failed, release_due, sleep_timeout, slot, unwatch, watch,
};
use crate::offload::Segmenter;
use crate::wire::MAX_FRAME_LEN;

/// How the datapath workers do TAP I/O (`daemon --datapath-io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// One `read` and one `write` per frame, woken by epoll.
    #[default]
    Epoll,
    /// io_uring: multishot reads into provided buffers, writes submitted in batches.
    Uring(Support),
}

impl IoMode {
    /// io_uring if the kernel has what it needs, else why not.
    pub fn uring() -> Result<IoMode, uring::Unsupported> {
        UringIo::probe().map(IoMode::Uring)
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoMode::Epoll => write!(f, "epoll"),
            IoMode::Uring(s) => write!(
                f,
                "uring ({} reads, {} buffers)",
                if s.multishot { "multishot" } else { "single" },
                uring::buffers()
            ),
        }
    }
}

/// The ring's token for the mio poll's fd (ports use their id).
const POLL: u32 = u32::MAX;

pub struct UringWorker {
    index: usize,
    frames_read: Arc<FramesRead>,
    poll: Poll,
    io: UringIo,
    commands: Receiver<Command>,
    clock: Arc<Clock>,
    ports: Vec<Option<Arc<Port>>>,
    networks: Vec<Option<NetView>>,
    segmenter: Segmenter,
    delayed: DelayQueue,
    timer: Option<Timer>,
    /// The ports that queue what this worker sends them until the end of its round (packet
    /// rings of `--iface` ports, which are also read through the mio poll; VTEP ports).
    rings: Vec<Arc<Port>>,
    /// Where a frame from a ring port is copied to be switched.
    buf: Vec<u8>,
    /// This worker's sockets of the VTEPs' receiving groups, read through the mio poll.
    vteps: VtepSockets,
    /// The busy-poll window before sleeping (`--poll-spin`).
    spin: Spin,
    /// Inbox ports whose eventfd the ring read this round: their frames are switched after
    /// the ring's.
    inboxes_ready: Vec<PortId>,
}

impl UringWorker {
    pub fn new(
        index: usize,
        poll: Poll,
        commands: Receiver<Command>,
        clock: Arc<Clock>,
        support: Support,
        frames_read: Arc<FramesRead>,
        spin: Duration,
    ) -> io::Result<Self> {
        let io = UringIo::new(support)?;
        let timer = delay_timer(&poll);
        Ok(UringWorker {
            index,
            frames_read,
            poll,
            io,
            commands,
            clock,
            ports: Vec::new(),
            networks: Vec::new(),
            segmenter: Segmenter::new(),
            delayed: DelayQueue::default(),
            timer,
            rings: Vec::new(),
            buf: vec![0; MAX_FRAME_LEN],
            vteps: VtepSockets::default(),
            spin: Spin::new(spin),
            inboxes_ready: Vec::new(),
        })
    }

    pub fn run(mut self) {
        if let Err(e) = self.io.enable() {
            eprintln!(
                "tapnet: datapath worker {}: cannot enable its io_uring: {e}",
                self.index
            );
            return;
        }
        self.io.poll_fd(POLL, self.poll.as_raw_fd());
        let mut events = Events::with_capacity(64);
        let mut forwarded = false;
        loop {
            let timeout = sleep_timeout(&mut self.timer, &self.delayed);
            // After a busy round, as the epoll worker does (`spin.rs`): the worker looks for
            // completions without sleeping (entering the kernel only when it has marked the
            // reads' deferred work, or to submit), again and again for the spin window, so a
            // frame arriving within it costs no wake-up.
            if forwarded && timeout != Some(Duration::ZERO) {
                let io = &mut self.io;
                if let Err(e) = self.spin.spin(|| {
                    io.peek()?;
                    Ok::<_, io::Error>(io.has_completions())
                }) {
                    eprintln!(
                        "tapnet: datapath worker {}: io_uring failed: {e}",
                        self.index
                    );
                    return;
                }
                self.count_written();
            }
            // Before sleeping, the round's writes go out on their own, so that their ports'
            // counters are current while the worker sleeps (`port stats` during a quiet
            // spell); under load the next frames are ready and one call does both.
            if self.io.would_sleep_with_writes() {
                if let Err(e) = self.io.flush() {
                    eprintln!(
                        "tapnet: datapath worker {}: io_uring failed: {e}",
                        self.index
                    );
                    return;
                }
                self.count_written();
            }
            let slept_at = Instant::now();
            if let Err(e) = self.io.wait(timeout) {
                eprintln!(
                    "tapnet: datapath worker {}: io_uring failed: {e}",
                    self.index
                );
                return;
            }
            let read = self.switch_ready();
            if forwarded && read > 0 {
                self.spin.slept(slept_at.elapsed());
            }
            forwarded = read > 0;
            self.count_written();
            if !self.delayed.is_empty() {
                self.release_delayed();
            }
            // The writes of this round go out with the next wait, in the same system call;
            // before a command can close a port's fd, though, now.
            if self.io.take_woken() {
                if let Err(e) = self.io.flush() {
                    eprintln!(
                        "tapnet: datapath worker {}: io_uring failed: {e}",
                        self.index
                    );
                    return;
                }
                if let Err(e) = self.poll.poll(&mut events, Some(Duration::ZERO))
                    && e.kind() != io::ErrorKind::Interrupted
                {
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
                    } else if let Some(slot) = VtepSockets::slot_of(event.token().0) {
                        self.receive_overlay(slot);
                    } else {
                        let _ = self.switch_from_ring_port(event.token().0 as PortId);
                    }
                }
            }
            for port in &self.rings {
                port.flush(self.index);
            }
        }
    }

    /// Switch up to `BATCH` frames from a ring port the poll reported: the poll is level-
    /// triggered, so one with more waiting is reported again in the next round.
    /// An inbox is read the same way; its eventfd's count was taken by the ring's read, so
    /// one left with frames after a full batch is signalled again. Returns the frames read.
    fn switch_from_ring_port(&mut self, id: PortId) -> u64 {
        let Some(port) = self.ports.get(id as usize).cloned().flatten() else {
            return 0;
        };
        let now = self.clock.now_secs();
        let mut read = 0;
        for _ in 0..BATCH {
            let len = match port.recv(self.index, &mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_failed(&self.poll, self.index, &port, &e);
                    break;
                }
            };
            match self.networks.get(port.network as usize) {
                Some(Some(view)) => forward(
                    &self.ports,
                    view,
                    &port,
                    &self.buf[..len],
                    now,
                    &mut self.segmenter,
                    &mut self.delayed,
                    true,
                    &mut Direct(self.index),
                ),
                // Its network is being removed: the frame is dropped.
                _ => continue,
            }
            read += 1;
        }
        if read == BATCH as u64
            && let Some(inbox) = port.inbox()
        {
            inbox.signal_again();
        }
        self.frames_read
            .0
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        read
    }

    /// Switch what VTEP socket `slot` received (plain writes: its frames are in no ring
    /// buffer).
    fn receive_overlay(&mut self, slot: usize) {
        let read = self.vteps.receive(
            slot,
            &mut SwitchCtx {
                ports: &self.ports,
                networks: &self.networks,
                now: self.clock.now_secs(),
                segmenter: &mut self.segmenter,
                delayed: &mut self.delayed,
                out: &mut Direct(self.index),
            },
        );
        self.frames_read
            .0
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
    }

    /// Switch every frame read so far; returns how many.
    fn switch_ready(&mut self) -> u64 {
        let now = self.clock.now_secs();
        let mut read = 0;
        while let Some(f) = self.io.next_frame() {
            let ingress = self.ports.get(f.token as usize).and_then(Option::as_ref);
            if let Some(port) = ingress
                && port.inbox().is_some()
            {
                // The eventfd's count, not a frame: the frames wait in the inbox.
                if !self.inboxes_ready.contains(&port.id) {
                    self.inboxes_ready.push(port.id);
                }
            } else if let Some(port) = ingress
                && let Some(Some(view)) = self.networks.get(port.network as usize)
            {
                read += 1;
                let (frames, mut tx) = self.io.parts();
                forward(
                    &self.ports,
                    view,
                    port,
                    frames.get(&f),
                    now,
                    &mut self.segmenter,
                    &mut self.delayed,
                    true,
                    &mut Ring {
                        tx: &mut tx,
                        of: &f,
                        worker: self.index,
                    },
                );
            }
            self.io.release(f);
        }
        self.frames_read
            .0
            .fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        for i in 0..self.inboxes_ready.len() {
            read += self.switch_from_ring_port(self.inboxes_ready[i]);
        }
        self.inboxes_ready.clear();
        read
    }

    /// Count the ring's completed writes in their output ports' counters.
    fn count_written(&mut self) {
        let ports = &self.ports;
        for (id, result) in self.io.written() {
            if let Some(Some(port)) = ports.get(id as usize) {
                port.count_write(result);
            }
        }
    }

    /// As `Worker::release_delayed`: held frames take the plain path.
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

    /// As `Worker::handle_commands`, with the ring in place of the poll registry.
    fn handle_commands(&mut self) -> bool {
        while let Ok(cmd) = self.commands.try_recv() {
            match apply_to_views(&mut self.networks, cmd) {
                None => {}
                Some(Command::AddPort { port, owner }) => {
                    let id = port.id;
                    if let Some(Some(view)) = self.networks.get_mut(port.network as usize) {
                        view.members.push(port.clone());
                    }
                    if port.queues_sends() {
                        self.rings.push(port.clone());
                    }
                    if port.has_ring() {
                        if port.polled_by(self.index, owner)
                            && let Err(e) = watch(&self.poll, port.queue_fd(self.index), id)
                        {
                            eprintln!("tapnet: cannot poll port {}: {e}", port.label);
                        }
                    } else if port.polled_by(self.index, owner) {
                        // An inbox port's eventfd is read like a TAP: each read says frames
                        // wait in memory (`switch_ready` then reads them).
                        self.io.add_fd(id, port.poll_fd(self.index));
                    }
                    *slot(&mut self.ports, id as usize) = Some(port);
                }
                Some(Command::RemovePort { id, done }) => {
                    if let Some(port) = slot(&mut self.ports, id as usize).take() {
                        self.delayed.purge(id);
                        // For a worker that does not read it, these do nothing.
                        self.rings.retain(|p| p.id != id);
                        if port.has_ring() {
                            unwatch(&self.poll, port.queue_fd(self.index));
                        }
                        self.io.remove_fd(id);
                        if let Some(Some(view)) = self.networks.get_mut(port.network as usize) {
                            view.members.retain(|p| p.id != id);
                        }
                    }
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
}

/// `forward`'s output on the ring: a write queued for the next submission, or the plain path
/// for an impaired port or a full ring.
struct Ring<'a, 'b> {
    tx: &'a mut Tx<'b>,
    of: &'a Frame,
    worker: usize,
}

impl Output for Ring<'_, '_> {
    fn send(&mut self, port: &Arc<Port>, from: PortId, frame: &[u8], delayed: &mut DelayQueue) {
        // A ring port's frames go on its TX ring, sent at the end of the round; a VTEP
        // port's are encapsulated and sent at once.
        if port.link.is_active() || !port.written_to_fd() {
            egress::send(port, self.worker, from, frame, delayed);
        } else if !self
            .tx
            .write(port.queue_fd(self.worker), port.id, self.of, frame)
        {
            port.send(self.worker, frame);
        }
    }
}
