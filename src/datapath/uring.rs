//! An io_uring TAP I/O engine (`daemon --datapath-io uring`, the default): one ring per worker.
//!
//! Reads: one multishot read (`IORING_OP_READ_MULTISHOT`, Linux 6.7) per polled TAP, taking its
//! buffers from a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, 5.19) shared by every TAP of
//! the worker; where the kernel has no multishot read, a single read with buffer selection,
//! armed again after each frame. Writes: queued as SQEs that point into the received buffer and
//! submitted together; a buffer goes back to the ring once the worker and every write of it are
//! done with it (`BufRefs`). The ring also polls one more fd, the worker's mio poll (waker,
//! timer), so the control plane reaches the worker as before.
//!
//! Memory: `BUFFERS` (16) buffers of `BUF_SIZE` bytes (1 MiB), mapped anonymous and touched
//! lazily: small frames touch the first page of each buffer only. More buffers do not switch
//! more (16 frames per system call already), and cost cache: the kernel takes them in ring order,
//! so 64 of them rotate 4 MiB through the cache under TCP.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, Probe, cqueue, opcode, squeue};

use crate::wire::MAX_FRAME_LEN;

/// Buffers in a worker's provided-buffer ring (a power of two, at most 32768), unless
/// `TAPNET_URING_BUFFERS` (a knob for the bench) says otherwise.
pub const BUFFERS: u16 = 16;

/// The buffer count in force: `TAPNET_URING_BUFFERS` if it is a power of two in 2..=4096.
pub fn buffers() -> u16 {
    static N: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("TAPNET_URING_BUFFERS")
            .ok()
            .and_then(|v| v.parse::<u16>().ok())
            .filter(|n| n.is_power_of_two() && (2..=4096).contains(n))
            .unwrap_or(BUFFERS)
    })
}
/// One buffer: the largest frame a TAP hands us (a 64 KiB super-frame and its headers).
pub const BUF_SIZE: usize = (MAX_FRAME_LEN + 63) & !63;
/// Submission queue entries of a worker's ring; the completion queue has four times as many.
pub const RING_ENTRIES: u32 = 256;
const _: () = assert!(BUF_SIZE >= MAX_FRAME_LEN && BUFFERS.is_power_of_two());
/// The buffer group of the provided-buffer ring.
const BGID: u16 = 0;

// user_data: the kind in the top byte; reads carry the source's generation and token, writes
// the buffer id, polls the caller's token.
const KIND_READ: u64 = 1;
const KIND_WRITE: u64 = 2;
const KIND_POLL: u64 = 3;
const KIND_CANCEL: u64 = 4;

fn read_data(gen_: u32, token: u32) -> u64 {
    (KIND_READ << 56) | ((gen_ as u64 & 0xff_ffff) << 32) | token as u64
}

/// A write's user data: the kind, the output port (for its counters), the buffer.
fn write_data(port: u32, bid: u16) -> u64 {
    (KIND_WRITE << 56) | ((port as u64) << 16) | bid as u64
}

fn kind(data: u64) -> u64 {
    data >> 56
}

/// Why the kernel cannot run the io_uring datapath.
#[derive(Debug)]
pub enum Unsupported {
    /// io_uring_setup failed (disabled by `kernel.io_uring_disabled`, seccomp, an old kernel).
    Setup(io::Error),
    /// The kernel lacks an operation the engine needs.
    Opcode(&'static str),
    /// Provided-buffer rings (Linux 5.19).
    BufRing(io::Error),
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Setup(e) => write!(f, "io_uring setup failed: {e}"),
            Unsupported::Opcode(op) => write!(f, "the kernel's io_uring has no {op}"),
            Unsupported::BufRing(e) => write!(f, "provided-buffer rings refused: {e}"),
        }
    }
}

/// What `probe` found: the engine runs; `multishot` says whether reads are multishot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Support {
    pub multishot: bool,
}

/// Who holds each buffer: the worker while it switches the frame (one reference) and each
/// queued write of it (one more each). Free buffers (no holder) belong to the kernel's ring.
#[derive(Debug)]
pub struct BufRefs {
    refs: Vec<u16>,
}

impl BufRefs {
    pub fn new(buffers: u16) -> Self {
        BufRefs {
            refs: vec![0; buffers as usize],
        }
    }

    /// The kernel filled `bid`: the worker holds it now.
    pub fn received(&mut self, bid: u16) {
        debug_assert_eq!(self.refs[bid as usize], 0, "buffer {bid} received twice");
        self.refs[bid as usize] = 1;
    }

    /// A write of `bid` was queued.
    pub fn hold(&mut self, bid: u16) {
        debug_assert!(self.refs[bid as usize] > 0, "write of a free buffer {bid}");
        self.refs[bid as usize] = self.refs[bid as usize].saturating_add(1);
    }

    /// A holder let go of `bid`; true when it was the last, and the buffer goes back to the ring.
    pub fn release(&mut self, bid: u16) -> bool {
        let r = &mut self.refs[bid as usize];
        debug_assert!(*r > 0, "release of a free buffer {bid}");
        *r = r.saturating_sub(1);
        *r == 0
    }
    /// Buffers out of the ring.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.refs.iter().filter(|&&r| r > 0).count()
    }
}

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous mapping of our own; checked for failure below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

// SAFETY: the mapping is plain memory owned by one `UringIo`, moved to its worker thread once.
unsafe impl Send for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len come from our mmap.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The provided-buffer ring's entries (shared with the kernel) and our tail.
struct BufRing {
    entries: Mapping,
    mem: Mapping,
    count: u16,
    tail: u16,
    published: u16,
}

impl BufRing {
    fn new(count: u16) -> io::Result<Self> {
        let entries =
            Mapping::new((count as usize * std::mem::size_of::<BufRingEntry>()).max(4096))?;
        let mem = Mapping::new(count as usize * BUF_SIZE)?;
        Ok(BufRing {
            entries,
            mem,
            count,
            tail: 0,
            published: 0,
        })
    }

    fn base(&self) -> *mut BufRingEntry {
        self.entries.ptr.as_ptr().cast()
    }

    /// Put `bid` at the tail; the kernel sees it after `publish`.
    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: slot < count entries inside the mapping; the kernel reads entries only up to
        // the published tail, and this one is past it.
        let entry = unsafe { &mut *self.base().add(slot) };
        // SAFETY: bid < count, so the buffer lies inside `mem`.
        let addr = unsafe { self.mem.ptr.as_ptr().add(bid as usize * BUF_SIZE) };
        entry.set_addr(addr as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        // SAFETY: the tail field overlays the first entry's reserved field, inside the mapping;
        // the kernel reads it with acquire ordering.
        let tail = unsafe { &*(BufRingEntry::tail(self.base()) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    /// The first `len` bytes of buffer `bid`.
    fn slice(&self, bid: u16, len: usize) -> &[u8] {
        let len = len.min(BUF_SIZE);
        let bid = (bid % self.count) as usize;
        // SAFETY: inside `mem`; the kernel does not write a buffer it has handed us until we
        // push it back, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.mem.ptr.as_ptr().add(bid * BUF_SIZE), len) }
    }
}

/// A frame the kernel read: which source, where.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub token: u32,
    bid: u16,
    len: u32,
}

struct Source {
    fd: RawFd,
    gen_: u32,
    armed: bool,
}

/// The buffers' memory, apart from the parts that change, so a frame can be switched (and its
/// writes queued through `Tx`) while the worker reads it.
pub struct Frames<'a> {
    bufs: &'a BufRing,
}

impl Frames<'_> {
    pub fn get(&self, f: &Frame) -> &[u8] {
        self.bufs.slice(f.bid, f.len as usize)
    }
}

/// Queues writes of received frames.
pub struct Tx<'a> {
    ring: &'a mut IoUring,
    refs: &'a mut BufRefs,
    stats: &'a mut Stats,
    /// Writes in the submission queue, not yet submitted.
    queued: &'a mut usize,
}

impl Tx<'_> {
    /// Queue a write of `frame` (inside the buffer of `of`) to `fd`, port `port`'s. Submitted
    /// by `UringIo::flush` at the latest; its outcome comes back from `UringIo::written`.
    /// False when it could not be queued.
    pub fn write(&mut self, fd: RawFd, port: u32, of: &Frame, frame: &[u8]) -> bool {
        let sqe = opcode::Write::new(Fd(fd), frame.as_ptr(), frame.len() as u32)
            .build()
            .user_data(write_data(port, of.bid));
        // SAFETY: the buffer stays out of the kernel's buffer ring (and unmapped never) until
        // this write's completion releases it.
        if unsafe { self.ring.submission().push(&sqe) }.is_err() {
            // Full: hand the queue to the kernel (writes to TAPs complete inline) and retry.
            self.stats.submits += 1;
            if self.ring.submit().is_err() {
                self.stats.write_errors += 1;
                return false;
            }
            *self.queued = 0;
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.stats.write_errors += 1;
                return false;
            }
        }
        *self.queued += 1;
        self.refs.hold(of.bid);
        self.stats.writes += 1;
        true
    }
}

/// Counters, for the log and the bench.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub frames: u64,
    pub writes: u64,
    pub write_errors: u64,
    pub submits: u64,
    pub rearms: u64,
    pub nobufs: u64,
}

pub struct UringIo {
    ring: IoUring,
    bufs: BufRing,
    refs: BufRefs,
    sources: Vec<Option<Source>>,
    /// Tokens whose read ended and must be armed again.
    rearm: Vec<u32>,
    ready: VecDeque<Frame>,
    multishot: bool,
    woken: bool,
    poll: Option<(RawFd, u32)>,
    poll_armed: bool,
    next_gen: u32,
    /// Writes in the submission queue, not yet submitted.
    queued: usize,
    /// Completed writes not yet counted: output port, result (bytes, or -errno).
    written: Vec<(u32, i32)>,
    pub stats: Stats,
}

impl UringIo {
    /// Whether this kernel can run the engine, and with multishot reads or not.
    pub fn probe() -> Result<Support, Unsupported> {
        let ring = IoUring::new(8).map_err(Unsupported::Setup)?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|_| Unsupported::Opcode("probe (Linux 5.6)"))?;
        for (code, name) in [
            (opcode::Read::CODE, "READ"),
            (opcode::Write::CODE, "WRITE"),
            (opcode::PollAdd::CODE, "POLL_ADD"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(Unsupported::Opcode(name));
            }
        }
        let bufs = BufRing::new(1).map_err(Unsupported::BufRing)?;
        // SAFETY: the entries mapping outlives the registration (unregistered just below).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.base() as u64, 1, BGID, 0)
        }
        .map_err(Unsupported::BufRing)?;
        let _ = ring.submitter().unregister_buf_ring(BGID);
        Ok(Support {
            multishot: probe.is_supported(opcode::ReadMulti::CODE),
        })
    }

    /// A ring for one worker. It is created disabled: the thread that will use it calls
    /// `enable` first (a single-issuer ring belongs to the thread that enables it).
    pub fn new(support: Support) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            // The kernel marks the SQ ring when reads' deferred work waits for the worker, so a
            // spin can see from userspace when entering the kernel would collect something.
            .setup_taskrun_flag()
            .setup_r_disabled()
            .build(RING_ENTRIES)
            .or_else(|_| {
                IoUring::builder()
                    .setup_cqsize(RING_ENTRIES * 4)
                    .setup_r_disabled()
                    .build(RING_ENTRIES)
            })?;
        let count = buffers();
        let mut bufs = BufRing::new(count)?;
        // SAFETY: `bufs` lives in the same struct as the ring and is dropped after it (field
        // order), so the kernel never reads unmapped entries.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(bufs.base() as u64, count, BGID, 0)?;
        }
        for bid in 0..count {
            bufs.push(bid);
        }
        bufs.publish();
        Ok(UringIo {
            ring,
            bufs,
            refs: BufRefs::new(count),
            sources: Vec::new(),
            rearm: Vec::new(),
            ready: VecDeque::with_capacity(count as usize),
            written: Vec::with_capacity(RING_ENTRIES as usize * 4),
            multishot: support.multishot,
            woken: false,
            poll: None,
            poll_armed: false,
            next_gen: 0,
            queued: 0,
            stats: Stats::default(),
        })
    }

    /// Call once, on the thread that uses the ring.
    pub fn enable(&self) -> io::Result<()> {
        self.ring.submitter().register_enable_rings()
    }

    /// Read frames from `fd` and report them under `token`.
    pub fn add_fd(&mut self, token: u32, fd: RawFd) {
        self.next_gen = self.next_gen.wrapping_add(1) & 0xff_ffff;
        let i = token as usize;
        if self.sources.len() <= i {
            self.sources.resize_with(i + 1, || None);
        }
        self.sources[i] = Some(Source {
            fd,
            gen_: self.next_gen,
            armed: false,
        });
        self.rearm.push(token);
    }

    /// Stop reading `token`'s fd. Frames of it already read are dropped (their buffers
    /// recycled); the cancellation is submitted at once.
    pub fn remove_fd(&mut self, token: u32) {
        let Some(src) = self.sources.get_mut(token as usize).and_then(Option::take) else {
            return;
        };
        self.ready.retain(|f| {
            if f.token == token {
                if self.refs.release(f.bid) {
                    self.bufs.push(f.bid);
                }
                false
            } else {
                true
            }
        });
        if src.armed {
            let sqe = opcode::AsyncCancel::new(read_data(src.gen_, token))
                .build()
                .user_data(KIND_CANCEL << 56);
            // SAFETY: a cancel refers to no memory.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                let _ = self.ring.submit();
                // SAFETY: as above, a cancel refers to no memory.
                let _ = unsafe { self.ring.submission().push(&sqe) };
            }
        }
        let _ = self.ring.submit();
    }

    /// Watch `fd` for readability (one-shot, armed again after each `take_woken`).
    pub fn poll_fd(&mut self, token: u32, fd: RawFd) {
        self.poll = Some((fd, token));
        self.poll_armed = false;
    }

    /// Whether the polled fd became readable since the last call (and arm it again).
    pub fn take_woken(&mut self) -> bool {
        std::mem::take(&mut self.woken)
    }

    fn arm(&mut self) {
        if let Some((fd, token)) = self.poll
            && !self.poll_armed
        {
            let sqe = opcode::PollAdd::new(Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data((KIND_POLL << 56) | token as u64);
            // SAFETY: a poll refers to no memory of ours.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                self.poll_armed = true;
            }
        }
        while let Some(token) = self.rearm.pop() {
            let Some(Some(src)) = self.sources.get_mut(token as usize) else {
                continue;
            };
            if src.armed {
                continue;
            }
            let data = read_data(src.gen_, token);
            let sqe = if self.multishot {
                opcode::ReadMulti::new(Fd(src.fd), 0, BGID).build()
            } else {
                opcode::Read::new(Fd(src.fd), std::ptr::null_mut(), BUF_SIZE as u32)
                    .buf_group(BGID)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
            }
            .user_data(data);
            // SAFETY: the read's buffers come from the registered ring, which outlives it.
            if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                self.rearm.push(token);
                break;
            }
            src.armed = true;
            self.stats.rearms += 1;
        }
    }

    /// Whether something came since the last `wait`: a frame read, the poll fired, or a
    /// completion not collected yet. (Reads complete only when the worker enters the kernel:
    /// the ring defers their task work to it.)
    pub fn has_completions(&mut self) -> bool {
        !self.ready.is_empty()
            || self.woken
            || !self.ring.completion().is_empty()
            || self.ring.submission().taskrun()
    }

    /// One look without sleeping, for a spin: submit what is queued, and only where the kernel
    /// has marked deferred work (or something is to be submitted) enter it, asking for no
    /// completion, so it runs that work and returns. (A wait with a zero timeout would arm a
    /// timer and schedule each time: a third of a core spent spinning in `io_cqring_wait`.)
    pub fn peek(&mut self) -> io::Result<()> {
        self.bufs.publish();
        self.arm();
        if !self.ring.submission().is_empty() || self.ring.submission().taskrun() {
            self.submit_now()?;
        }
        self.reap();
        Ok(())
    }

    /// Whether the next `wait` would sleep with writes of this round queued: their completions
    /// (and so the output ports' counters) would then wait for the next frame.
    pub fn would_sleep_with_writes(&mut self) -> bool {
        self.queued > 0 && self.ready.is_empty() && self.ring.completion().is_empty()
    }

    /// Submit what is queued (the writes of the last round too) and, unless something came
    /// already (frames ready, the poll fired: a spin may have collected them), wait for one
    /// completion more than those of the queued writes, which complete inline (at most
    /// `timeout`, `None`: no limit). Then collect every completion.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.bufs.publish();
        self.arm();
        let want = std::mem::take(&mut self.queued) + 1;
        let came = self.has_completions();
        if came && self.ring.submission().is_empty() && !self.ring.submission().taskrun() {
            // Nothing to submit, no deferred work, nothing to wait for: no system call.
            self.reap();
            return Ok(());
        }
        self.stats.submits += 1;
        let res = if came {
            self.submit_and_collect()
        } else if let Some(t) = timeout {
            let ts = Timespec::from(t);
            let args = SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(want, &args)
        } else {
            self.ring.submit_and_wait(want)
        };
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        self.reap();
        Ok(())
    }

    /// Submit the queued writes (they complete inline for TAPs) and collect completions, so
    /// their buffers go back to the ring.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        self.submit_now()?;
        self.reap();
        Ok(())
    }

    /// `submit_and_collect`, counted, with the queued writes no longer waited for; an
    /// interrupted or busy ring is tried again by the next call.
    fn submit_now(&mut self) -> io::Result<()> {
        self.stats.submits += 1;
        self.queued = 0;
        match self.submit_and_collect() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submit what is queued and run the reads' deferred work in the same call, without
    /// waiting: a frame written to a TAP often has its answer queued before the write returns
    /// (the receiver's stack runs inline), and this reads it without another system call.
    fn submit_and_collect(&mut self) -> io::Result<usize> {
        let queued = self.ring.submission().len() as u32;
        let getevents = io_uring::EnterFlags::GETEVENTS.bits();
        // SAFETY: `enter` is unsafe for its argument's pointer, and none is passed (the entries
        // were pushed under their own safety contracts).
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(queued, 0, getevents, None)
        }
    }

    fn reap(&mut self) {
        let UringIo {
            ring,
            bufs,
            refs,
            sources,
            rearm,
            ready,
            woken,
            poll_armed,
            written,
            stats,
            ..
        } = self;
        for cqe in ring.completion() {
            let data = cqe.user_data();
            let res = cqe.result();
            let flags = cqe.flags();
            match kind(data) {
                KIND_READ => {
                    let token = data as u32;
                    let gen_ = ((data >> 32) & 0xff_ffff) as u32;
                    let live = match sources.get_mut(token as usize) {
                        Some(Some(src)) if src.gen_ == gen_ => Some(src),
                        _ => None,
                    };
                    let bid = cqueue::buffer_select(flags);
                    match (live, bid) {
                        (Some(src), Some(bid)) if res > 0 => {
                            refs.received(bid);
                            stats.frames += 1;
                            ready.push_back(Frame {
                                token,
                                bid,
                                len: res as u32,
                            });
                            if !cqueue::more(flags) {
                                src.armed = false;
                                rearm.push(token);
                            }
                        }
                        (live, bid) => {
                            if let Some(bid) = bid {
                                bufs.push(bid);
                            }
                            if let Some(src) = live
                                && !cqueue::more(flags)
                            {
                                src.armed = false;
                                if res == -libc::ENOBUFS {
                                    stats.nobufs += 1;
                                }
                                // A fd that fails for good (closed under us) is not re-armed.
                                if res >= 0 || res == -libc::ENOBUFS || res == -libc::EAGAIN {
                                    rearm.push(token);
                                } else if res != -libc::ECANCELED {
                                    eprintln!(
                                        "tapnet: io_uring read of token {token} failed: {}",
                                        io::Error::from_raw_os_error(-res)
                                    );
                                }
                            }
                        }
                    }
                }
                KIND_WRITE => {
                    let bid = data as u16;
                    if res < 0 {
                        stats.write_errors += 1;
                    }
                    written.push(((data >> 16) as u32, res));
                    if refs.release(bid) {
                        bufs.push(bid);
                    }
                }
                KIND_POLL => {
                    *poll_armed = false;
                    *woken = true;
                }
                _ => {}
            }
        }
    }

    /// The frames read so far, in arrival order, to switch with `parts` and give back with
    /// `release`.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.ready.pop_front()
    }

    /// The buffers' memory and the write queue, borrowed together.
    pub fn parts(&mut self) -> (Frames<'_>, Tx<'_>) {
        (
            Frames { bufs: &self.bufs },
            Tx {
                ring: &mut self.ring,
                refs: &mut self.refs,
                stats: &mut self.stats,
                queued: &mut self.queued,
            },
        )
    }

    /// The worker is done with `f` (its writes, if any, still hold the buffer).
    pub fn release(&mut self, f: Frame) {
        if self.refs.release(f.bid) {
            self.bufs.push(f.bid);
        }
    }

    /// The writes completed since the last call: output port and result (bytes or -errno),
    /// for the ports' counters.
    pub fn written(&mut self) -> std::vec::Drain<'_, (u32, i32)> {
        self.written.drain(..)
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        // Cancel the reads, so no request refers to the buffers when they are unmapped (the ring
        // is dropped before them, field order).
        for (token, src) in self.sources.iter().enumerate() {
            if let Some(src) = src
                && src.armed
            {
                let sqe = opcode::AsyncCancel::new(read_data(src.gen_, token as u32))
                    .build()
                    .user_data(KIND_CANCEL << 56);
                // SAFETY: a cancel refers to no memory.
                if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                    let _ = self.ring.submit();
                }
            }
        }
        let _ = self.ring.submit();
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_returns_after_its_last_holder() {
        let mut r = BufRefs::new(4);
        r.received(2);
        r.hold(2);
        r.hold(2);
        assert_eq!(r.held(), 1);
        assert!(!r.release(2), "the worker let go, two writes still hold it");
        assert!(!r.release(2));
        assert!(r.release(2), "the last write completed");
        assert_eq!(r.held(), 0);
    }

    #[test]
    fn a_frame_without_writes_returns_at_once() {
        let mut r = BufRefs::new(2);
        r.received(0);
        r.received(1);
        assert_eq!(r.held(), 2);
        assert!(r.release(1));
        assert_eq!(r.held(), 1);
    }

    #[test]
    fn user_data_keeps_kind_generation_and_token() {
        let d = read_data(0x12_3456, 0xdead_beef);
        assert_eq!(kind(d), KIND_READ);
        assert_eq!(d as u32, 0xdead_beef);
        assert_eq!((d >> 32) & 0xff_ffff, 0x12_3456);
        // A generation past 24 bits wraps instead of spilling into the kind.
        assert_eq!(kind(read_data(u32::MAX, 1)), KIND_READ);
    }

    #[test]
    fn the_buffer_ring_wraps() {
        let Ok(mut ring) = BufRing::new(4) else {
            return;
        };
        for bid in 0..10u16 {
            ring.push(bid % 4);
        }
        ring.publish();
        assert_eq!(ring.tail, 10);
        assert_eq!(ring.slice(3, 100).len(), 100);
        assert_eq!(ring.slice(3, usize::MAX).len(), BUF_SIZE);
    }
}
