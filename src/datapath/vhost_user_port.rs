//! A VM's port as a vhost-user-net backend (the device side): QEMU's `-netdev vhost-user`
//! connects to the socket, shares the guest's memory and hands over the virtqueues; frames move
//! between the guest's rings and the switch without QEMU in the way.
//!
//! As with a stream port, the switch sees a SOCK_SEQPACKET socketpair port whose frames carry
//! the 12-byte virtio-net header, and a thread of its own (`vhu-NAME`) owns the other end. It
//! listens on the socket path; while no VM is connected it reads and drops what the switch sends
//! (counted), so the switch never blocks. A connection gets a fresh `VhostUserDaemon` (the
//! crate's handler cannot be claimed twice): its vring worker thread serves the two queues (RX 0,
//! TX 1) and the switch end, registered as an extra event, while this thread relays the control
//! messages between the VM and the daemon (see `vhost_user_relay::Reorder` for why). When the
//! VM goes away the daemon is dropped and the thread listens again, so a restarted VM finds its
//! port.
//!
//! TX (guest to switch): each descriptor chain is the header and the frame; gathered into one
//! buffer and sent as one datagram, header unchanged (offloads go through). RX (switch to guest):
//! a datagram is copied into the guest's buffers (several with MRG_RXBUF, `num_buffers` set);
//! when the guest has none, one frame waits for its next RX kick and later ones are dropped.
//! A guest that did not take the GUEST_* offloads gets super-frames cut to wire size with full
//! checksums (`offload::Segmenter`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_bindings::virtio_config::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::datapath::socket_thread::{Listening, SocketThread, listen};
use crate::datapath::stream_port::StreamStats;
use crate::datapath::vhost_user_relay::{
    Header, MSG_HDR, MessageReader, Reorder, TooLarge, Verdict,
};
use crate::error::Result;
use crate::offload::Segmenter;
use crate::wire::VNET_HDR_LEN;

const RX_QUEUE: u16 = 0;
const TX_QUEUE: u16 = 1;
pub(crate) const NUM_QUEUES: usize = 2;
/// The switch end's event on the vring worker's epoll: above the queues and the worker's own
/// event (`NUM_QUEUES`), as `register_listener` requires.
const SWITCH_EVENT: u16 = NUM_QUEUES as u16 + 1;
const QUEUE_SIZE: usize = 256;
/// A datagram from either side: a 64 KiB super-frame, its Ethernet header and the virtio-net
/// header, with room to spare.
const FRAME_BUF: usize = 65_536 + 64;
/// Frames the guest queued that go to the switch in one sendmmsg: the guest's TX path costs
/// a system call per batch, not per frame.
const TX_BATCH: usize = 16;
/// `num_buffers` in `struct virtio_net_hdr_v1`.
const NUM_BUFFERS_AT: usize = 10;
/// virtio-net header gso_type values the guest may receive with GUEST_TSO4/6.
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

const MAX_MSG_FDS: usize = 32;

const LISTENER: Token = Token(0);
const SWITCH: Token = Token(1);
const WAKER: Token = Token(2);

/// What `--vhost-user` offers the guest: virtio 1.0 rings, mergeable RX buffers and both
/// directions' TCP segmentation offload with partial checksums, and
/// VHOST_USER_F_PROTOCOL_FEATURES.
/// With it QEMU (7.2) sends SET_VRING_ENABLE when the device is realized, before
/// SET_FEATURES, which the vhost crate refuses: the relay (`vhost_user_relay`) holds those
/// back and replays them after SET_FEATURES.
fn offered_features() -> u64 {
    [
        VIRTIO_F_VERSION_1,
        VIRTIO_F_NOTIFY_ON_EMPTY,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
    ]
    .iter()
    .fold(
        VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
        |f, bit| f | 1u64 << bit,
    )
}

/// The port's own counters (the switch port has the usual ones).
#[derive(Default)]
pub struct VhostCounters {
    connections: AtomicU64,
    connected: AtomicBool,
    /// Frames for the VM dropped: no RX buffer for them, or not writable into guest memory.
    to_vm_dropped: AtomicU64,
    /// Frames for the VM while none was connected (or its RX queue not started).
    to_vm_absent: AtomicU64,
    /// Frames from the VM the switch's socket had no room for, or malformed chains.
    from_vm_dropped: AtomicU64,
    /// Super-frames that could not be segmented for a guest without offloads.
    segment_errors: AtomicU64,
}

impl VhostCounters {
    pub fn snapshot(&self) -> StreamStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StreamStats {
            connected: self.connected.load(Ordering::Relaxed),
            connections: get(&self.connections),
            to_vm_dropped: get(&self.to_vm_dropped),
            to_vm_absent: get(&self.to_vm_absent),
            from_vm_dropped: get(&self.from_vm_dropped),
            bad_stream: 0,
            segment_errors: get(&self.segment_errors),
        }
    }
}

/// A running vhost-user port: its thread and socket file, both gone on drop.
pub struct VhostUserPort {
    pub counters: Arc<VhostCounters>,
    thread: SocketThread,
}

impl VhostUserPort {
    /// Listen at `path` as a vhost-user-net backend and move frames between the VM there and
    /// `switch_end` (the socketpair end the switch does not poll). `name` names the thread;
    /// `replace_socket` as in `StreamPort::start`.
    pub fn start(
        name: &str,
        path: &Path,
        replace_socket: bool,
        switch_end: OwnedFd,
    ) -> Result<VhostUserPort> {
        let Listening {
            listener,
            poll,
            waker,
        } = listen(name, path, replace_socket, &switch_end, (LISTENER, WAKER))?;
        let counters = Arc::new(VhostCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut owner = Owner {
            name: name.to_string(),
            poll,
            listener,
            msg: MessageReader::default(),
            switch: Arc::new(switch_end),
            counters: counters.clone(),
            stop: stop.clone(),
            drain: vec![0u8; FRAME_BUF].into_boxed_slice(),
        };
        let thread =
            SocketThread::spawn(name, format!("vhu-{name}"), path, stop, waker, move || {
                owner.run()
            })?;
        Ok(VhostUserPort { counters, thread })
    }

    pub fn path(&self) -> &Path {
        self.thread.path()
    }
}

/// The `vhu-NAME` thread: waits for a VM, serves it, waits again.
struct Owner {
    name: String,
    poll: Poll,
    listener: std::os::unix::net::UnixListener,
    switch: Arc<OwnedFd>,
    counters: Arc<VhostCounters>,
    stop: Arc<AtomicBool>,
    /// Frames read from the switch while no VM is connected.
    drain: Box<[u8]>,
    /// A vhost-user message being relayed.
    msg: MessageReader,
}

impl Owner {
    fn run(&mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            if !self.wait_for_vm() {
                return;
            }
            if let Err(e) = self.serve() {
                eprintln!("tapnet: port {}: vhost-user session: {e}", self.name);
                // Do not spin on a listener that keeps failing.
                std::thread::sleep(Duration::from_millis(100));
            }
            self.counters.connected.store(false, Ordering::Relaxed);
        }
    }

    /// Poll the listener and the switch end (dropping its frames) until a VM connects; false
    /// when stopped.
    fn wait_for_vm(&mut self) -> bool {
        let fd = self.switch.as_raw_fd();
        let mut src = SourceFd(&fd);
        if self
            .poll
            .registry()
            .register(&mut src, SWITCH, Interest::READABLE)
            .is_err()
        {
            return false;
        }
        let mut events = Events::with_capacity(8);
        let mut connecting = false;
        while !connecting && !self.stop.load(Ordering::SeqCst) {
            // Frames that came while the previous session ended.
            self.drop_switch_frames();
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tapnet: port {}: poll: {e}", self.name);
                break;
            }
            connecting = events.iter().any(|ev| ev.token() == LISTENER);
        }
        let _ = self.poll.registry().deregister(&mut src);
        connecting && !self.stop.load(Ordering::SeqCst)
    }

    fn drop_switch_frames(&mut self) {
        loop {
            // SAFETY: drain is valid for writes of its length; the fd is our socketpair end.
            let n = unsafe {
                libc::read(
                    self.switch.as_raw_fd(),
                    self.drain.as_mut_ptr().cast(),
                    self.drain.len(),
                )
            };
            if n <= 0 {
                return;
            }
            self.counters.to_vm_absent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One VM's session: a fresh daemon, its messages relayed from the VM's connection (see
    /// `relay`), until either side ends it or the port is stopped.
    fn serve(&mut self) -> std::result::Result<(), String> {
        let vm = match self.listener.accept() {
            Ok((vm, _)) => vm,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("accept: {e}")),
        };
        vm.set_nonblocking(false)
            .map_err(|e| format!("connection: {e}"))?;
        let backend = Arc::new(RwLock::new(
            NetBackend::new(self.switch.clone(), self.counters.clone())
                .map_err(|e| format!("create the backend: {e}"))?,
        ));
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new(format!("vhu-{}-req", self.name), backend, mem)
            .map_err(|e| format!("create the daemon: {e}"))?;
        let ours = self.start_daemon(&mut daemon)?;
        let handlers = daemon.get_epoll_handlers();
        let registered = handlers.first().map(|h| {
            h.register_listener(
                self.switch.as_raw_fd(),
                EventSet::IN,
                u64::from(SWITCH_EVENT),
            )
        });
        drop(handlers);
        if matches!(registered, Some(Ok(()))) {
            self.counters.connections.fetch_add(1, Ordering::Relaxed);
            self.counters.connected.store(true, Ordering::Relaxed);
            self.relay(&vm, &ours);
        }
        let _ = ours.shutdown(std::net::Shutdown::Both);
        let _ = vm.shutdown(std::net::Shutdown::Both);
        let result = daemon.wait();
        // Dropping the daemon stops its vring worker (exit event) and joins it.
        drop(daemon);
        if !matches!(registered, Some(Ok(()))) {
            return Err("poll the switch end in the vring worker".into());
        }
        result.map_err(|e| format!("{e}"))
    }

    /// Start the daemon on a connection of our own: the crate takes connections only from a
    /// listener, so one is bound in a directory only this user can enter and removed at once.
    fn start_daemon(
        &self,
        daemon: &mut VhostUserDaemon<Arc<RwLock<NetBackend>>>,
    ) -> std::result::Result<std::os::unix::net::UnixStream, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir =
            std::env::temp_dir().join(format!("tapnet-vhu-{}-{}", std::process::id(), self.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("create {}: {e}", dir.display()))?;
        let sock = dir.join("daemon.sock");
        let started = (|| {
            let inner = std::os::unix::net::UnixListener::bind(&sock)
                .map_err(|e| format!("listen on {}: {e}", sock.display()))?;
            let ours = std::os::unix::net::UnixStream::connect(&sock)
                .map_err(|e| format!("connect to {}: {e}", sock.display()))?;
            daemon
                .start(&mut vhost::vhost_user::Listener::from(inner))
                .map_err(|e| format!("start the daemon: {e}"))?;
            Ok(ours)
        })();
        let _ = std::fs::remove_dir_all(&dir);
        started
    }

    /// Pass vhost-user messages (and their fds) between the VM's connection and the daemon's,
    /// whole; the VM's early SET_VRING_ENABLEs are held back and replayed (see `Reorder`).
    fn relay(&mut self, vm: &UnixStream, daemon: &UnixStream) {
        let mut reorder = Reorder::default();
        while !self.stop.load(Ordering::SeqCst) {
            let mut fds = [
                libc::pollfd {
                    fd: vm.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: daemon.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: fds is a live array of two pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 500) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if fds[0].revents != 0 && self.pass_from_vm(vm, daemon, &mut reorder).is_err() {
                return;
            }
            if fds[1].revents != 0 && self.pass_message(daemon, vm, |_, _| true).is_err() {
                return;
            }
        }
    }

    /// One message from the VM to the daemon, or held back as `reorder` says.
    fn pass_from_vm(
        &mut self,
        vm: &UnixStream,
        daemon: &UnixStream,
        reorder: &mut Reorder,
    ) -> io::Result<()> {
        let mut reply = None;
        let mut replay = Vec::new();
        self.pass_message(vm, daemon, |header, body| {
            match reorder.from_vm(header, body) {
                Verdict::Pass { replay: r } => {
                    replay = r;
                    true
                }
                Verdict::Hold { ack } => {
                    reply = ack;
                    false
                }
            }
        })?;
        if let Some(ack) = reply {
            let mut w = vm;
            std::io::Write::write_all(&mut w, &ack)?;
        }
        for m in replay {
            let mut w = daemon;
            std::io::Write::write_all(&mut w, &m)?;
        }
        Ok(())
    }

    /// One message from `from` to `to` with the fds that came with it, unless `keep` says no.
    fn pass_message(
        &mut self,
        from: &UnixStream,
        to: &UnixStream,
        keep: impl FnOnce(Header, &[u8]) -> bool,
    ) -> io::Result<()> {
        use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
        use std::io::{IoSlice, IoSliceMut, Read};
        use std::os::fd::{FromRawFd, RawFd};
        let too_large = |e: TooLarge| io::Error::other(e.to_string());
        let mut hdr = [0u8; MSG_HDR];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_MSG_FDS]);
        let (got, fds) = {
            let mut iov = [IoSliceMut::new(&mut hdr)];
            let msg = recvmsg::<()>(
                from.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(raw) = c {
                    // SAFETY: the kernel just gave us these fds; nothing else owns them.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            (msg.bytes, fds)
        };
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.msg.clear();
        self.msg.feed(&hdr[..got]).map_err(too_large)?;
        // The rest of the header and the body, never beyond: the next message's fds come
        // with its first bytes.
        let mut chunk = [0u8; 4096];
        let mut from_r = from;
        while self.msg.missing() > 0 {
            let want = self.msg.missing().min(chunk.len());
            let n = match from_r.read(&mut chunk[..want]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.msg.feed(&chunk[..n]).map_err(too_large)?;
        }
        let Some((header, body)) = self.msg.message() else {
            return Err(io::Error::other("incomplete vhost-user message"));
        };
        if !keep(header, body) {
            return Ok(());
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let bytes = self.msg.bytes();
        let mut sent = 0;
        while sent < bytes.len() {
            let iov = [IoSlice::new(&bytes[sent..])];
            let n = sendmsg::<()>(
                to.as_raw_fd(),
                &iov,
                if sent == 0 { cmsgs } else { &[] },
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(io::Error::from)?;
            sent += n;
        }
        // Our copies of the fds close here; the receiver has its own.
        drop(fds);
        Ok(())
    }
}

/// The device model of one session: its rings are the daemon's, the rest is here.
struct NetBackend {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    switch: Arc<OwnedFd>,
    counters: Arc<VhostCounters>,
    event_idx: bool,
    /// The guest took GUEST_CSUM and GUEST_TSO4/6: TCP super-frames go to it as they are.
    guest_offloads: bool,
    mrg_rxbuf: bool,
    exit: (EventConsumer, EventNotifier),
    /// Chains from the guest, gathered: TX_BATCH slots of FRAME_BUF bytes.
    tx: Box<[u8]>,
    /// A datagram from the switch.
    rx: Box<[u8]>,
    rx_len: usize,
    /// Frames for the guest not delivered yet, each a 4-byte length and header + frame: one
    /// datagram, or its segments for a guest without offloads.
    pending: Vec<u8>,
    pending_at: usize,
    seg: Segmenter,
    /// The chains one frame took (head, bytes written).
    used: Vec<(u16, u32)>,
}

impl NetBackend {
    fn new(switch: Arc<OwnedFd>, counters: Arc<VhostCounters>) -> io::Result<Self> {
        Ok(NetBackend {
            mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
            switch,
            counters,
            event_idx: false,
            guest_offloads: false,
            mrg_rxbuf: false,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK)?,
            tx: vec![0u8; FRAME_BUF * TX_BATCH].into_boxed_slice(),
            rx: vec![0u8; FRAME_BUF].into_boxed_slice(),
            rx_len: 0,
            pending: Vec::with_capacity(FRAME_BUF * 2),
            pending_at: 0,
            seg: Segmenter::new(),
            used: Vec::with_capacity(64),
        })
    }

    /// Run `work` on the queue with notifications off, until the guest added nothing meanwhile
    /// (EVENT_IDX); then tell it about used buffers if it wants to hear.
    fn with_queue(
        &mut self,
        vring: &VringRwLock,
        work: fn(&mut Self, &VringRwLock) -> io::Result<bool>,
    ) -> io::Result<()> {
        let mut any = false;
        loop {
            if self.event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            let progress = work(self, vring)?;
            any |= progress;
            // No progress means an empty or unusable ring: do not spin on it.
            if !progress
                || !self.event_idx
                || !vring.enable_notification().map_err(io::Error::other)?
            {
                if self.event_idx && !progress {
                    vring.enable_notification().map_err(io::Error::other)?;
                }
                break;
            }
        }
        if any && vring.needs_notification().map_err(io::Error::other)? {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// Every chain the guest queued for sending, to the switch; true if any was used.
    fn process_tx(&mut self, vring: &VringRwLock) -> io::Result<bool> {
        let mem = self.mem.memory();
        let mut any = false;
        loop {
            let mut heads = [0u16; TX_BATCH];
            let mut taken = 0;
            let mut lens = [0usize; TX_BATCH];
            let mut frames = 0;
            while taken < TX_BATCH {
                let chain = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone());
                let Some(chain) = chain else {
                    break;
                };
                heads[taken] = chain.head_index();
                taken += 1;
                let slot = &mut self.tx[frames * FRAME_BUF..(frames + 1) * FRAME_BUF];
                let mut len = 0usize;
                let mut ok = true;
                for desc in chain {
                    let n = desc.len() as usize;
                    if desc.is_write_only()
                        || len + n > slot.len()
                        || mem
                            .read_slice(&mut slot[len..len + n], desc.addr())
                            .is_err()
                    {
                        ok = false;
                        break;
                    }
                    len += n;
                }
                if ok && len > VNET_HDR_LEN {
                    lens[frames] = len;
                    frames += 1;
                } else {
                    self.counters
                        .from_vm_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            if taken == 0 {
                break;
            }
            self.send_to_switch(&lens[..frames]);
            for head in &heads[..taken] {
                vring.add_used(*head, 0).map_err(io::Error::other)?;
            }
            any = true;
            if taken < TX_BATCH {
                break;
            }
        }
        Ok(any)
    }

    /// The first `lens.len()` frames of `tx` to the switch, in as few sendmmsg calls as it
    /// takes; those the switch's socket refuses are counted as dropped.
    fn send_to_switch(&mut self, lens: &[usize]) {
        // SAFETY: iovec is a plain C struct; all-zero is a valid value.
        let mut iov: [libc::iovec; TX_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: mmsghdr is a plain C struct; all-zero is a valid value (no name, no control).
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, len) in lens.iter().enumerate() {
            iov[i].iov_base = self.tx[i * FRAME_BUF..].as_mut_ptr().cast();
            iov[i].iov_len = *len;
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < lens.len() {
            // SAFETY: msgs[sent..len] point at live iovecs over initialized bytes of tx; the
            // fd is our socketpair end.
            let n = unsafe {
                libc::sendmmsg(
                    self.switch.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (lens.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if n <= 0 {
                self.counters
                    .from_vm_dropped
                    .fetch_add((lens.len() - sent) as u64, Ordering::Relaxed);
                return;
            }
            sent += n as usize;
        }
    }

    /// Deliver what waits, then read the switch while the guest has room; frames beyond the one
    /// waiting are dropped so the switch end never stays readable with nowhere to go.
    fn process_rx(&mut self, vring: &VringRwLock) -> io::Result<bool> {
        let ready = {
            let state = vring.get_ref();
            state.is_enabled() && state.get_queue().ready()
        };
        let mut any = false;
        loop {
            if ready && self.pending_at < self.pending.len() {
                if self.deliver_pending(vring)? {
                    any = true;
                    continue;
                }
                // No room in the guest: drain the switch, dropping.
                while self.read_switch() {
                    self.counters.to_vm_dropped.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(any);
            }
            if !self.read_switch() {
                return Ok(any);
            }
            if !ready {
                self.counters.to_vm_absent.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.queue_datagram();
        }
    }

    /// One datagram from the switch into `rx[..rx_len]`; false when there is none.
    fn read_switch(&mut self) -> bool {
        loop {
            // SAFETY: rx is valid for writes of its length; the fd is our socketpair end.
            let n = unsafe {
                libc::read(
                    self.switch.as_raw_fd(),
                    self.rx.as_mut_ptr().cast(),
                    self.rx.len(),
                )
            };
            if n <= 0 {
                return false;
            }
            let n = n as usize;
            if n > VNET_HDR_LEN {
                self.rx_len = n;
                return true;
            }
            // A runt: nothing for the guest.
            self.counters.to_vm_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `rx[..rx_len]` into `pending`, as it is or cut to wire-size frames for a guest that
    /// cannot take it (no GUEST_* offloads, or a GSO type it did not negotiate).
    fn queue_datagram(&mut self) {
        self.pending.clear();
        self.pending_at = 0;
        let buf = &self.rx[..self.rx_len];
        let gso = buf[1]; // gso_type, after flags
        let passes = match gso {
            GSO_NONE => self.guest_offloads || buf[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0,
            GSO_TCPV4 | GSO_TCPV6 => self.guest_offloads,
            _ => false,
        };
        if passes {
            self.pending
                .extend_from_slice(&(buf.len() as u32).to_le_bytes());
            self.pending.extend_from_slice(buf);
            return;
        }
        let pending = &mut self.pending;
        let result = self.seg.segment(buf, &mut |seg: &[u8]| {
            pending.extend_from_slice(&(seg.len() as u32).to_le_bytes());
            pending.extend_from_slice(seg);
        });
        if result.is_err() {
            self.counters.segment_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames of `pending` into the guest's RX buffers while it has them; false when it has
    /// none for the next one (it stays pending).
    fn deliver_pending(&mut self, vring: &VringRwLock) -> io::Result<bool> {
        while self.pending_at < self.pending.len() {
            let at = self.pending_at;
            let mut len = [0u8; 4];
            len.copy_from_slice(&self.pending[at..at + 4]);
            let len = u32::from_le_bytes(len) as usize;
            let start = at + 4;
            match self.deliver(vring, start, start + len)? {
                Delivery::Done => {}
                Delivery::NoRoom => return Ok(false),
                Delivery::Dropped => {
                    self.counters.to_vm_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.pending_at = start + len;
        }
        self.pending.clear();
        self.pending_at = 0;
        Ok(true)
    }

    /// One frame (`pending[start..end]`, header included) into as many RX chains as it takes.
    fn deliver(&mut self, vring: &VringRwLock, start: usize, end: usize) -> io::Result<Delivery> {
        let mem = self.mem.memory();
        let mut state = vring.get_mut();
        let queue = state.get_queue_mut();
        let first_avail = queue.next_avail();
        let total = end - start;
        let mut written = 0usize;
        let mut num_buffers_addr: Option<GuestAddress> = None;
        self.used.clear();
        while written < total {
            let Some(chain) = queue.pop_descriptor_chain(mem.clone()) else {
                // Not enough buffers: give back what was taken, wait for a kick.
                queue.set_next_avail(first_avail);
                return Ok(Delivery::NoRoom);
            };
            let head = chain.head_index();
            let mut in_chain = 0usize;
            for desc in chain {
                if !desc.is_write_only() {
                    break;
                }
                let n = (desc.len() as usize).min(total - written);
                let from = start + written;
                if mem
                    .write_slice(&self.pending[from..from + n], desc.addr())
                    .is_err()
                {
                    break;
                }
                if num_buffers_addr.is_none()
                    && written <= NUM_BUFFERS_AT
                    && NUM_BUFFERS_AT + 2 <= written + n
                {
                    num_buffers_addr = desc.addr().checked_add((NUM_BUFFERS_AT - written) as u64);
                }
                written += n;
                in_chain += n;
                if written == total {
                    break;
                }
            }
            self.used.push((head, in_chain as u32));
            if in_chain == 0 || (!self.mrg_rxbuf && written < total) {
                // A chain that cannot hold the frame: hand the chains back empty.
                for &(head, _) in &self.used {
                    queue.add_used(&*mem, head, 0).map_err(io::Error::other)?;
                }
                return Ok(Delivery::Dropped);
            }
        }
        let count = self.used.len() as u16;
        match num_buffers_addr {
            Some(addr) if mem.write_slice(&count.to_le_bytes(), addr).is_ok() => {}
            _ => {
                for &(head, _) in &self.used {
                    queue.add_used(&*mem, head, 0).map_err(io::Error::other)?;
                }
                return Ok(Delivery::Dropped);
            }
        }
        for &(head, len) in &self.used {
            queue.add_used(&*mem, head, len).map_err(io::Error::other)?;
        }
        Ok(Delivery::Done)
    }
}

enum Delivery {
    Done,
    NoRoom,
    Dropped,
}

impl VhostUserBackendMut for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn acked_features(&mut self, features: u64) {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        self.mrg_rxbuf = has(VIRTIO_NET_F_MRG_RXBUF);
        self.guest_offloads = has(VIRTIO_NET_F_GUEST_CSUM)
            && has(VIRTIO_NET_F_GUEST_TSO4)
            && has(VIRTIO_NET_F_GUEST_TSO6);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // Only asked for when PROTOCOL_FEATURES is offered (see `offered_features`).
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = mem;
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected event set {evset:?}")));
        }
        let [rx, tx] = vrings else {
            return Err(io::Error::other("expected two vrings"));
        };
        match device_event {
            RX_QUEUE | SWITCH_EVENT => self.with_queue(rx, Self::process_rx),
            TX_QUEUE => self.with_queue(tx, Self::process_tx),
            other => Err(io::Error::other(format!("unknown event {other}"))),
        }
    }
}
